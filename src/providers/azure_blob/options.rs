//! Options of the Azure Blob provider: where the storage account is and how to sign in (a
//! connection string, an endpoint with a Shared Key, or a container URL with a SAS token), the
//! container and blob names, timeouts and TLS. Nothing here is checked until
//! [`crate::AzureBlobProvider::new`]; secrets (account keys, SAS signatures, whole connection
//! strings) are kept in a type whose `Debug` shows nothing of them.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::providers::support::params::Params;
use crate::providers::support::safe_url::SafeUrl;
use crate::providers::support::tls::Tls;

/// A string that is never shown: `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the account is and how requests are authorized.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// An Azure Storage connection string (all of it secret: it holds the key or a SAS).
    ConnectionString(Secret),
    /// An account endpoint (`https://acct.blob.core.windows.net`, or a path-style
    /// `http://127.0.0.1:10000/devstoreaccount1`), the account name and its base64 key.
    SharedKey {
        endpoint: String,
        account: String,
        key: Secret,
    },
    /// A container URL whose query is a SAS token (container or account SAS).
    SasUrl(Secret),
}

/// Options of a [`crate::AzureBlobProvider`].
///
/// ```
/// use leader_election::AzureBlobOptions;
/// use std::time::Duration;
///
/// let options = AzureBlobOptions::shared_key(
///     "https://myaccount.blob.core.windows.net",
///     "myaccount",
///     "c2VjcmV0LWtleQ==",
///     "leases",
/// )
/// .blob_prefix("billing/")
/// .command_timeout(Duration::from_secs(2));
/// assert!(!format!("{options:?}").contains("c2VjcmV0"));
///
/// // The storage emulator (Azurite) with its well-known account:
/// let dev = AzureBlobOptions::connection_string("UseDevelopmentStorage=true", "leases");
/// # let _ = dev;
/// ```
#[derive(Clone)]
pub struct AzureBlobOptions {
    pub(crate) source: Source,
    /// Empty for a SAS URL, whose path names the container.
    pub(crate) container: String,
    pub(crate) blob_prefix: String,
    pub(crate) create_container: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) fail_fast: bool,
    pub(crate) tls: Tls,
}

impl AzureBlobOptions {
    fn with(source: Source, container: String) -> Self {
        AzureBlobOptions {
            source,
            container,
            blob_prefix: "leader-election/".into(),
            create_container: true,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            fail_fast: true,
            tls: Tls::Verify,
        }
    }

    /// Options from an Azure Storage connection string — `UseDevelopmentStorage=true` (the
    /// local emulator's well-known account), or
    /// `DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…[;EndpointSuffix=…]`,
    /// optionally with `BlobEndpoint=…`, and `SharedAccessSignature=…` in place of the key —
    /// and the container to use. Defaults: blob prefix `leader-election/`, container created
    /// if missing, 5 s connect and command timeouts, fail fast, [`Tls::Verify`].
    pub fn connection_string(
        connection_string: impl Into<String>,
        container: impl Into<String>,
    ) -> Self {
        Self::with(
            Source::ConnectionString(Secret(connection_string.into())),
            container.into(),
        )
    }

    /// Options for an account endpoint — `https://<account>.blob.core.windows.net`, or a
    /// path-style URL such as the emulator's `http://127.0.0.1:10000/devstoreaccount1` —
    /// with the account's name and base64 key (Shared Key authorization), and the container.
    pub fn shared_key(
        endpoint: impl Into<String>,
        account: impl Into<String>,
        account_key: impl Into<String>,
        container: impl Into<String>,
    ) -> Self {
        Self::with(
            Source::SharedKey {
                endpoint: endpoint.into(),
                account: account.into(),
                key: Secret(account_key.into()),
            },
            container.into(),
        )
    }

    /// Options for a container URL with a SAS token as its query —
    /// `https://<account>.blob.core.windows.net/<container>?sv=…&sp=rwc…&sig=…` — a container
    /// SAS or an account SAS. The token must allow read and write (`r`, `w`; `c` too to create
    /// the group's blob on first use). A container SAS cannot create a missing container.
    pub fn sas_url(container_url: impl Into<String>) -> Self {
        Self::with(Source::SasUrl(Secret(container_url.into())), String::new())
    }

    /// The prefix of every blob name (default `leader-election/`): up to 256 characters of
    /// `[A-Za-z0-9._/-]`, no empty, `.` or `..` segment, not starting with `/`. Group `G` uses
    /// the blob `<prefix>G`.
    pub fn blob_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.blob_prefix = prefix.into();
        self
    }

    /// Whether a missing container is created (default `true`). Creating needs the account
    /// key or an account SAS; with a container SAS, create it beforehand.
    pub fn create_container(mut self, create: bool) -> Self {
        self.create_container = create;
        self
    }

    /// The longest a connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest one request may take, response included (default 5 s; the call's deadline
    /// may shorten it).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Whether [`crate::AzureBlobProvider::new`] checks the account, credentials and container
    /// at once (one request, plus one to create a missing container) and fails if it cannot
    /// (default `true`). With `false` the elector's calls fail until the service answers.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// How an `https` endpoint's certificate is checked (default [`Tls::Verify`]).
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }
}

impl std::fmt::Debug for AzureBlobOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, endpoint) = match &self.source {
            Source::ConnectionString(_) => ("connection string", String::new()),
            Source::SharedKey {
                endpoint, account, ..
            } => (
                "shared key",
                format!("{} ({account})", SafeUrl::describe(endpoint)),
            ),
            Source::SasUrl(url) => ("SAS", SafeUrl::describe(&url.0)),
        };
        f.debug_struct("AzureBlobOptions")
            .field("credential", &kind)
            .field("endpoint", &endpoint)
            .field("container", &self.container)
            .field("blob_prefix", &self.blob_prefix)
            .field("create_container", &self.create_container)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("fail_fast", &self.fail_fast)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The URL parameters [`AzureBlobOptions::from_url`] takes (besides a SAS token's own).
pub(crate) const URL_PARAMS: &[&str] = &[
    "connection_string",
    "container",
    "blob_prefix",
    "create_container",
    "connect_timeout",
    "command_timeout",
    "fail_fast",
    "tls",
    "ca_file",
];

/// The query parameters a SAS token may have (service, account and user-delegation SAS).
const SAS_PARAMS: &[&str] = &[
    "sv", "ss", "srt", "sp", "se", "st", "sip", "spr", "sig", "sr", "si", "sdd", "ses", "skoid",
    "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid", "rscc", "rscd", "rsce", "rscl",
    "rsct",
];

impl AzureBlobOptions {
    /// Options from a connection URL (see [`crate::connect`]):
    ///
    /// - `azure-blob+https://<account>:<key>@<account>.blob.core.windows.net/<container>?…` —
    ///   Shared Key, the key percent-encoded (`/` `+` `=` as `%2F` `%2B` `%3D`); a path of two
    ///   segments is path-style: `azure-blob+http://devstoreaccount1:<key>@127.0.0.1:10000/devstoreaccount1/<container>`;
    /// - `azure-blob+https://<account>.blob.core.windows.net/<container>?<SAS token>&…`;
    /// - `azure-blob:?connection_string=<percent-encoded>&container=<container>&…`.
    ///
    /// Other parameters are this type's options by their builder names.
    pub(crate) fn from_url(url: &str) -> Result<AzureBlobOptions> {
        let (scheme, rest) = url
            .split_once(':')
            .ok_or_else(|| Error::config("url", "has no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        // Split the query into our options and a SAS token, which is kept exactly as written
        // (its signature must reach the service byte for byte).
        let mut ours = Vec::new();
        let mut sas = Vec::new();
        for piece in query.split('&').filter(|p| !p.is_empty()) {
            let name = piece.split('=').next().unwrap_or_default();
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            if SAS_PARAMS.contains(&name.as_ref()) {
                sas.push(piece);
            } else {
                ours.push(piece);
            }
        }
        let mut params = Params::parse("azure-blob", &ours.join("&"))?;
        let conn = params.take("connection_string");
        let container = params.take("container");
        let blob_prefix = params.take("blob_prefix");
        let create_container = params.bool("create_container")?;
        let connect_timeout = params.duration("connect_timeout")?;
        let command_timeout = params.duration("command_timeout")?;
        let fail_fast = params.bool("fail_fast")?;
        let tls = params.tls()?;
        params.finish(URL_PARAMS)?;
        let mut o = match scheme.as_str() {
            "azure-blob" => {
                if !matches!(before_query, "" | "//") || !sas.is_empty() {
                    return Err(Error::config(
                        "url",
                        "an azure-blob: URL carries a connection string: \
                         azure-blob:?connection_string=…&container=…",
                    ));
                }
                let conn = conn.ok_or_else(|| {
                    Error::config("url", "azure-blob: needs a connection_string parameter")
                })?;
                let container = container.ok_or_else(|| {
                    Error::config("url", "azure-blob: needs a container parameter")
                })?;
                AzureBlobOptions::connection_string(conn, container)
            }
            "azure-blob+https" | "azure-blob+http" => {
                if conn.is_some() || container.is_some() {
                    return Err(Error::config(
                        "url",
                        "connection_string and container belong to azure-blob: URLs; \
                         here the path names the container",
                    ));
                }
                let http = format!("{}:{before_query}", &scheme["azure-blob+".len()..]);
                from_http_url(&http, &sas)?
            }
            other => {
                return Err(Error::config(
                    "url",
                    format!("{other:?} is not an Azure Blob scheme"),
                ));
            }
        };
        if let Some(v) = blob_prefix {
            o = o.blob_prefix(v);
        }
        if let Some(v) = create_container {
            o = o.create_container(v);
        }
        if let Some(v) = connect_timeout {
            o = o.connect_timeout(v);
        }
        if let Some(v) = command_timeout {
            o = o.command_timeout(v);
        }
        if let Some(v) = fail_fast {
            o = o.fail_fast(v);
        }
        Ok(o.tls(tls))
    }
}

/// The `azure-blob+http(s)://` forms, already turned into `http(s)://…` without the query;
/// `sas` holds the SAS token's parameters as written.
fn from_http_url(http: &str, sas: &[&str]) -> Result<AzureBlobOptions> {
    let bad = || {
        Error::config(
            "url",
            "expected azure-blob+https://[account:key@]host[:port]/[account/]container",
        )
    };
    let mut url = url::Url::parse(http).map_err(|_| bad())?;
    let segments: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let Some((container, account_path)) = segments.split_last() else {
        return Err(Error::config("url", "names no container (…/container)"));
    };
    if account_path.len() > 1 {
        return Err(bad());
    }
    let user = percent_encoding::percent_decode_str(url.username())
        .decode_utf8()
        .map_err(|_| bad())?
        .into_owned();
    let key = url.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    url.set_username("").map_err(|_| bad())?;
    url.set_password(None).map_err(|_| bad())?;
    url.set_query(None);
    url.set_fragment(None);
    url.set_path(&account_path.join("/"));
    let endpoint = url.as_str().trim_end_matches('/').to_owned();
    match (key, sas.is_empty()) {
        (Some(key), true) => {
            if user.is_empty() {
                return Err(Error::config(
                    "url",
                    "a key needs the account name: account:key@",
                ));
            }
            Ok(AzureBlobOptions::shared_key(endpoint, user, key, container))
        }
        (None, false) => Ok(AzureBlobOptions::sas_url(format!(
            "{endpoint}/{container}?{}",
            sas.join("&")
        ))),
        (Some(_), false) => Err(Error::config(
            "url",
            "give either an account key (account:key@) or a SAS token, not both",
        )),
        (None, true) => Err(Error::config(
            "url",
            "needs credentials: account:key@host, or a SAS token in the query",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn shared_key_urls_path_style_and_virtual_host() {
        let enc = KEY.replace('/', "%2F").replace('=', "%3D");
        let o = AzureBlobOptions::from_url(&format!(
            "azure-blob+http://devstoreaccount1:{enc}@127.0.0.1:10000/devstoreaccount1/leases\
             ?blob_prefix=app/&command_timeout=250ms&create_container=false"
        ))
        .unwrap();
        match &o.source {
            Source::SharedKey {
                endpoint,
                account,
                key,
            } => {
                assert_eq!(endpoint, "http://127.0.0.1:10000/devstoreaccount1");
                assert_eq!(account, "devstoreaccount1");
                assert_eq!(key.0, KEY);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(o.container, "leases");
        assert_eq!(o.blob_prefix, "app/");
        assert_eq!(o.command_timeout, Duration::from_millis(250));
        assert!(!o.create_container);
        let text = format!("{o:?}");
        assert!(
            !text.contains("Eby8") && text.contains("devstoreaccount1"),
            "{text}"
        );

        let o = AzureBlobOptions::from_url(&format!(
            "azure-blob+https://acct:{enc}@acct.blob.core.windows.net/cc1"
        ))
        .unwrap();
        assert!(
            matches!(&o.source, Source::SharedKey { endpoint, .. } if endpoint == "https://acct.blob.core.windows.net")
        );
    }

    #[test]
    fn sas_urls_keep_the_token_as_written() {
        let o = AzureBlobOptions::from_url(
            "azure-blob+https://acct.blob.core.windows.net/cc1?sv=2021-12-02&sp=rwc\
             &se=2030-01-01T00%3A00%3A00Z&sr=c&sig=AbC%2B%2F%3D&fail_fast=false",
        )
        .unwrap();
        match &o.source {
            Source::SasUrl(url) => assert_eq!(
                url.0,
                "https://acct.blob.core.windows.net/cc1?sv=2021-12-02&sp=rwc\
                 &se=2030-01-01T00%3A00%3A00Z&sr=c&sig=AbC%2B%2F%3D"
            ),
            other => panic!("{other:?}"),
        }
        assert!(!o.fail_fast);
        assert!(!format!("{o:?}").contains("AbC"));
    }

    #[test]
    fn connection_string_urls() {
        let o = AzureBlobOptions::from_url(
            "azure-blob:?connection_string=UseDevelopmentStorage%3Dtrue&container=cc1",
        )
        .unwrap();
        assert!(
            matches!(&o.source, Source::ConnectionString(s) if s.0 == "UseDevelopmentStorage=true")
        );
        assert_eq!(o.container, "cc1");
    }

    #[test]
    fn bad_urls_name_the_fault_and_never_the_secret() {
        for (url, expect) in [
            ("azure-blob+https://h.example/c?colour=blue", "colour"),
            ("azure-blob+https://h.example/c", "credentials"),
            ("azure-blob+https://a:Wr0ng-K3y@h.example/", "container"),
            ("azure-blob+https://a:Wr0ng-K3y@h.example/x/y/z", "expected"),
            ("azure-blob:?container=c", "connection_string"),
            (
                "azure-blob+https://a:Wr0ng-K3y@h.example/c?sig=Wr0ng-S1g",
                "not both",
            ),
        ] {
            let e = AzureBlobOptions::from_url(url).unwrap_err().to_string();
            assert!(e.contains(expect), "{url}: {e}");
            assert!(!e.contains("Wr0ng"), "{e}");
        }
    }
}
