//! From options to an account the provider can talk to: the account endpoint, the account
//! name and the credential, taken from a connection string, an endpoint with a Shared Key, or a
//! container URL with a SAS token — plus the checks on container and blob names that Azure would
//! otherwise make after a round trip. Errors name what is wrong (a key of the connection string,
//! a rule), never a value that may be secret: connection strings, keys and SAS tokens are not
//! echoed.

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::providers::azure_blob::options::{AzureBlobOptions, Source};

/// The emulator's well-known development account (`UseDevelopmentStorage=true`).
pub(crate) const DEV_ACCOUNT: &str = "devstoreaccount1";
/// The emulator's published key for [`DEV_ACCOUNT`]; not a secret.
pub(crate) const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The emulator's blob endpoint, path-style.
pub(crate) const DEV_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// How requests are authorized.
pub(crate) enum Credential {
    /// Shared Key: every request signed with the decoded account key.
    SharedKey { key: Vec<u8> },
    /// A SAS token, carried by the endpoint URL's query; `sp` and `se` kept to explain refusals.
    Sas {
        permissions: Option<String>,
        expiry: Option<String>,
    },
}

/// A resolved account: its endpoint (with the SAS token as query, if any), name, credential and
/// the container.
pub(crate) struct Account {
    pub(crate) endpoint: url::Url,
    pub(crate) name: String,
    pub(crate) credential: Credential,
    pub(crate) container: String,
}

impl Account {
    pub(crate) fn resolve(options: &AzureBlobOptions) -> Result<Account> {
        // Checked first: a bad name is the likelier mistake, and needs no other checks.
        if !matches!(options.source, Source::SasUrl(_)) {
            validate_container(&options.container)?;
        }
        let account = match &options.source {
            Source::SharedKey {
                endpoint,
                account,
                key,
            } => shared_key(endpoint, account, &key.0, &options.container)?,
            Source::ConnectionString(s) => connection_string(&s.0, &options.container)?,
            Source::SasUrl(url) => sas_url(&url.0)?,
        };
        validate_container(&account.container)?;
        Ok(account)
    }
}

fn shared_key(endpoint: &str, account: &str, key: &str, container: &str) -> Result<Account> {
    validate_account(account)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| Error::config("account_key", "is not valid base64"))?;
    if key.is_empty() {
        return Err(Error::config("account_key", "is empty"));
    }
    Ok(Account {
        endpoint: endpoint_url(endpoint)?,
        name: account.to_owned(),
        credential: Credential::SharedKey { key },
        container: container.to_owned(),
    })
}

/// An account endpoint: `http` or `https`, a host, no query or fragment, and a path that is
/// empty or one segment (path-style: the account name).
fn endpoint_url(endpoint: &str) -> Result<url::Url> {
    let bad = |why: &str| Error::config("endpoint", why.to_owned());
    let url = url::Url::parse(endpoint.trim_end_matches('/'))
        .map_err(|_| bad("is not a URL such as https://myaccount.blob.core.windows.net"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be an http:// or https:// URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() || url.password().is_some() {
        return Err(bad(
            "must have no query, fragment or password (give a SAS token with \
             AzureBlobOptions::sas_url)",
        ));
    }
    if url.path().trim_matches('/').contains('/') {
        return Err(bad(
            "takes at most one path segment (the account, for path-style endpoints)",
        ));
    }
    Ok(url)
}

/// Parses `Key=Value;…`. Keys are matched without regard to case; values may contain `=`.
fn connection_string(s: &str, container: &str) -> Result<Account> {
    let mut protocol = None;
    let mut name = None;
    let mut key = None;
    let mut blob_endpoint = None;
    let mut suffix = None;
    let mut sas = None;
    let mut dev = false;
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(Error::config(
                "connection_string",
                "is not a list of Key=Value pairs separated by ';'",
            ));
        };
        let v = v.trim().to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "usedevelopmentstorage" => dev = v.eq_ignore_ascii_case("true"),
            "defaultendpointsprotocol" => protocol = Some(v),
            "accountname" => name = Some(v),
            "accountkey" => key = Some(v),
            "blobendpoint" => blob_endpoint = Some(v),
            "endpointsuffix" => suffix = Some(v),
            "sharedaccesssignature" => sas = Some(v),
            // Other services' endpoints do not concern blobs.
            "queueendpoint" | "tableendpoint" | "fileendpoint" => {}
            other => {
                // Name it only if it looks like a key name: a pasted account key without
                // `AccountKey=` would otherwise be echoed.
                let shown = if other.len() <= 32 && other.chars().all(|c| c.is_ascii_alphabetic()) {
                    format!(" {other:?}")
                } else {
                    String::new()
                };
                return Err(Error::config(
                    "connection_string",
                    format!("has an unknown key{shown} (expected AccountName=…;AccountKey=…;…)"),
                ));
            }
        }
    }
    if dev {
        return shared_key(DEV_ENDPOINT, DEV_ACCOUNT, DEV_KEY, container);
    }
    let endpoint = match (blob_endpoint, &name) {
        (Some(e), _) => e,
        (None, Some(name)) => {
            validate_account(name)?;
            let protocol = protocol.unwrap_or_else(|| "https".to_owned());
            if protocol != "https" && protocol != "http" {
                return Err(Error::config(
                    "connection_string",
                    "DefaultEndpointsProtocol must be https or http",
                ));
            }
            let suffix = suffix.unwrap_or_else(|| "core.windows.net".to_owned());
            format!("{protocol}://{name}.blob.{suffix}")
        }
        (None, None) => {
            return Err(Error::config(
                "connection_string",
                "needs AccountName or BlobEndpoint",
            ));
        }
    };
    match (key, sas) {
        (Some(key), None) => {
            let name = name.ok_or_else(|| {
                Error::config("connection_string", "an AccountKey needs its AccountName")
            })?;
            shared_key(&endpoint, &name, &key, container)
        }
        (None, Some(sas)) => {
            let url = format!(
                "{}/{container}?{}",
                endpoint.trim_end_matches('/'),
                sas.trim_start_matches('?')
            );
            let mut account = sas_url(&url)?;
            if let Some(name) = name {
                account.name = name;
            }
            Ok(account)
        }
        (Some(_), Some(_)) => Err(Error::config(
            "connection_string",
            "has both AccountKey and SharedAccessSignature; give one",
        )),
        (None, None) => Err(Error::config(
            "connection_string",
            "needs AccountKey or SharedAccessSignature",
        )),
    }
}

/// A container URL with a SAS token: the last path segment is the container, the rest the
/// account endpoint; the query (kept as written) is the token.
fn sas_url(s: &str) -> Result<Account> {
    let bad = |why: &str| Error::config("sas_url", why.to_owned());
    let mut url = url::Url::parse(s).map_err(|_| {
        bad("is not a URL such as https://myaccount.blob.core.windows.net/container?sv=…&sig=…")
    })?;
    let query = url.query().unwrap_or_default().to_owned();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if !pairs.iter().any(|(k, _)| k == "sig") {
        return Err(bad("has no SAS token (no sig parameter in its query)"));
    }
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let path = url.path().trim_matches('/').to_owned();
    let (account_path, container) = match path.rsplit_once('/') {
        Some((a, c)) => (a.to_owned(), c.to_owned()),
        None => (String::new(), path),
    };
    if container.is_empty() {
        return Err(bad("names no container (…/container?sv=…)"));
    }
    if account_path.contains('/') {
        return Err(bad("has too many path segments"));
    }
    url.set_path(&account_path);
    url.set_fragment(None);
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be an http:// or https:// URL with a host"));
    }
    let name = if account_path.is_empty() {
        url.host_str()
            .and_then(|h| h.split('.').next())
            .unwrap_or_default()
            .to_owned()
    } else {
        account_path
    };
    Ok(Account {
        endpoint: url,
        name,
        credential: Credential::Sas {
            permissions: get("sp"),
            expiry: get("se"),
        },
        container,
    })
}

/// Azure's rule for account names: 3–24 lowercase letters and digits.
fn validate_account(name: &str) -> Result<()> {
    if !(3..=24).contains(&name.len())
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(Error::config(
            "account",
            "must be 3 to 24 lowercase letters and digits",
        ));
    }
    Ok(())
}

/// Azure's rule for container names: 3–63 characters of lowercase letters, digits and single
/// hyphens, starting and ending with a letter or digit.
pub(crate) fn validate_container(name: &str) -> Result<()> {
    let rule = "must be 3 to 63 lowercase letters, digits and single hyphens, starting and \
                ending with a letter or digit";
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(Error::config("container", rule))
    }
}

/// The blob name prefix: up to 256 characters of `[A-Za-z0-9._/-]`, not starting with `/`,
/// without empty, `.` or `..` segments (which URLs would collapse).
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > 256 {
        return Err(Error::config(
            "blob_prefix",
            "must be at most 256 characters",
        ));
    }
    if let Some(bad) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return Err(Error::config(
            "blob_prefix",
            format!("contains the character {bad:?}; allowed are letters, digits and ._/-"),
        ));
    }
    let segments: Vec<&str> = prefix.split('/').collect();
    // The last piece is glued to the group name, so only the others are whole segments.
    let whole = &segments[..segments.len().saturating_sub(1)];
    if whole.iter().any(|s| matches!(*s, "" | "." | "..")) {
        return Err(Error::config(
            "blob_prefix",
            "must not start with '/' nor have empty, '.' or '..' segments",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(o: AzureBlobOptions) -> Result<Account> {
        Account::resolve(&o)
    }

    #[test]
    fn development_storage() {
        let a = resolve(AzureBlobOptions::connection_string(
            "UseDevelopmentStorage=true",
            "leases",
        ))
        .unwrap();
        assert_eq!(
            a.endpoint.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(a.name, DEV_ACCOUNT);
        assert!(matches!(a.credential, Credential::SharedKey { ref key } if key.len() == 64));
    }

    #[test]
    fn connection_strings() {
        let a = resolve(AzureBlobOptions::connection_string(
            format!("DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey={DEV_KEY};EndpointSuffix=core.chinacloudapi.cn"),
            "cc1",
        ))
        .unwrap();
        assert_eq!(
            a.endpoint.as_str(),
            "https://acct1.blob.core.chinacloudapi.cn/"
        );
        let a = resolve(AzureBlobOptions::connection_string(
            format!("AccountName=devstoreaccount1;AccountKey={DEV_KEY};BlobEndpoint=http://127.0.0.1:9999/devstoreaccount1;QueueEndpoint=http://x"),
            "cc1",
        ))
        .unwrap();
        assert_eq!(
            a.endpoint.as_str(),
            "http://127.0.0.1:9999/devstoreaccount1"
        );
        let a = resolve(AzureBlobOptions::connection_string(
            "BlobEndpoint=https://acct1.blob.core.windows.net;SharedAccessSignature=sv=2021-12-02&sp=rw&sig=S3cr3t",
            "cc1",
        ))
        .unwrap();
        assert_eq!(a.endpoint.query(), Some("sv=2021-12-02&sp=rw&sig=S3cr3t"));
        assert_eq!(a.name, "acct1");
        for (s, expect) in [
            ("AccountName=acct1;AccountKey=not*base64!S3cr3t", "base64"),
            ("AccountName=acct1;Passw0rd=S3cr3t", "unknown key"),
            ("AccountName=acct1;Password=S3cr3t", "\"password\""),
            (
                "AccountName=a;Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq=S3cr3t",
                "unknown key",
            ),
            ("AccountName=acct1", "AccountKey or SharedAccessSignature"),
            ("just S3cr3t", "Key=Value"),
            ("AccountName=Bad_Name;AccountKey=AAAA", "account"),
        ] {
            let e = resolve(AzureBlobOptions::connection_string(s, "cc1"))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(expect), "{s}: {e}");
            assert!(!e.contains("S3cr3t"), "{e}");
        }
    }

    #[test]
    fn sas_urls() {
        let a = resolve(AzureBlobOptions::sas_url(
            "http://127.0.0.1:10000/devstoreaccount1/cc1?sv=2018-11-09&sr=c&sp=rwc&se=2030-01-01&sig=x%2By",
        ))
        .unwrap();
        assert_eq!(a.container, "cc1");
        assert_eq!(a.name, "devstoreaccount1");
        assert_eq!(a.endpoint.path(), "/devstoreaccount1");
        assert_eq!(
            a.endpoint.query(),
            Some("sv=2018-11-09&sr=c&sp=rwc&se=2030-01-01&sig=x%2By")
        );
        assert!(
            matches!(a.credential, Credential::Sas { permissions: Some(ref p), .. } if p == "rwc")
        );
        let a = resolve(AzureBlobOptions::sas_url(
            "https://acct1.blob.core.windows.net/cc1?sp=r&sig=x",
        ))
        .unwrap();
        assert_eq!(a.name, "acct1");
        assert_eq!(a.endpoint.path(), "/");
        let e = resolve(AzureBlobOptions::sas_url(
            "https://acct1.blob.core.windows.net/cc1",
        ))
        .err()
        .unwrap();
        assert!(e.to_string().contains("sig"), "{e}");
    }

    #[test]
    fn container_names_follow_azure_rules() {
        for ok in ["abc", "a-b-c", "leases1", &"a".repeat(63)] {
            assert!(validate_container(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Leases",
            "a--b",
            "-ab",
            "ab-",
            "a_b",
            "a.b",
            &"a".repeat(64),
            "",
        ] {
            let e = validate_container(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidConfig {
                        field: "container",
                        ..
                    }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefixes() {
        for ok in ["", "leader-election/", "a/b/", "app.", "x_y-"] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/a",
            "a//b",
            "../x",
            "a/./",
            "sp ace",
            "a?b",
            "a%2F",
            &"a".repeat(257),
        ] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
