//! Credentials that cannot work, and refusals explained. A SAS token without read and write
//! permission, or past its expiry by this machine's clock, is refused before any request
//! ([`check_sas`]). When the service refuses a request (401/403), [`explain`] puts what the
//! refusal most likely means — a wrong key, an expired SAS token, one without the needed
//! permissions — in front of the transport's error; neither the key nor any signature is ever
//! part of it (the token's permissions `sp` and expiry `se` are not secret and are named).

use std::time::SystemTime;

use crate::error::{BoxError, Error, Result};
use crate::providers::azure_blob::account::Credential;

/// Refuses a SAS token that cannot work: without read or write permission, or expired by this
/// machine's clock.
pub(crate) fn check_sas(credential: &Credential) -> Result<()> {
    let Credential::Sas {
        permissions,
        expiry,
    } = credential
    else {
        return Ok(());
    };
    if let Some(sp) = permissions
        && !(sp.contains('r') && sp.contains('w'))
    {
        return Err(Error::config(
            "sas_url",
            format!(
                "the SAS token grants {sp:?}; leases and token writes need read and write \
                 (sp=rw, and c to create blobs)"
            ),
        ));
    }
    if let Some(se) = expiry
        && sas_time(se).is_some_and(|t| t <= std::time::SystemTime::now())
    {
        return Err(Error::config(
            "sas_url",
            format!("the SAS token expired at {se} (by this machine's clock)"),
        ));
    }
    Ok(())
}

/// A refusal explained: `hint` in front of the transport's error.
#[derive(Debug)]
struct Refused {
    hint: String,
    source: BoxError,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hint)
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// `e`, with a hint in front when the service refused the credentials (HTTP 401/403, which
/// the transport reports as permanent errors whose text starts with the status and names the
/// service's error code, such as `HTTP 403 (AuthenticationFailed)`).
pub(crate) fn explain(e: Error, account: &str, credential: &Credential) -> Error {
    let Error::Backend {
        backend,
        operation,
        transient: false,
        source,
    } = e
    else {
        return e;
    };
    let text = source.to_string();
    if !(text.starts_with("HTTP 401") || text.starts_with("HTTP 403")) {
        return Error::Backend {
            backend,
            operation,
            transient: false,
            source,
        };
    }
    let code = text
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map_or("", |(code, _)| code);
    let hint = hint(code, account, credential, SystemTime::now());
    Error::Backend {
        backend,
        operation,
        transient: false,
        source: Box::new(Refused { hint, source }),
    }
}

fn hint(code: &str, account: &str, credential: &Credential, now: SystemTime) -> String {
    match credential {
        Credential::SharedKey { .. } => match code {
            // Azure's answer to a network rule; Azurite's to a wrong signature.
            "AuthorizationFailure" => format!(
                "the account key was refused: it is not {account:?}'s key, or this machine's \
                 clock is more than 15 minutes off — or a firewall or network rule of the \
                 account refuses this client"
            ),
            "AuthorizationPermissionMismatch" => format!(
                "the request was refused for account {account:?} although it was signed with \
                 the account key"
            ),
            _ => format!(
                "the account key was refused: it is not {account:?}'s key, or this machine's \
                 clock is more than 15 minutes off"
            ),
        },
        Credential::Sas {
            permissions,
            expiry,
        } => {
            if let Some(se) = expiry
                && sas_time(se).is_some_and(|t| t <= now)
            {
                return format!("the SAS token expired at {se}");
            }
            match code {
                "AuthorizationPermissionMismatch"
                | "AuthorizationResourceTypeMismatch"
                | "AuthorizationServiceMismatch" => format!(
                    "the SAS token does not allow this request (its permissions: {}; the \
                     provider needs read and write, create for a new blob, and an account \
                     SAS or the account key to create a missing container)",
                    permissions.as_deref().unwrap_or("none given")
                ),
                _ => "the SAS token was refused: its signature does not match, it has expired \
                      or is not yet valid, or it does not cover this container"
                    .to_owned(),
            }
        }
    }
}

/// A SAS time (`2030-01-01`, `2030-01-01T00:00Z`, `2030-01-01T00:00:00Z`, with or without
/// fractional seconds) as a system time; `None` if it does not parse.
pub(crate) fn sas_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let full = match (s.len(), s.get(..16)) {
        (10, _) => format!("{s}T00:00:00Z"),
        (17, Some(minutes)) if s.ends_with('Z') => format!("{minutes}:00Z"),
        _ => s.to_owned(),
    };
    humantime::parse_rfc3339_weak(&full).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refusals_are_explained_without_secrets() {
        let refused = |code: &str| Error::Backend {
            backend: "azure-blob",
            operation: "acquire",
            transient: false,
            source: format!("HTTP 403 ({code}) from PUT https://acct.blob.core.windows.net/c1/b")
                .into(),
        };
        let key = Credential::SharedKey { key: vec![1; 8] };
        let e = explain(refused("AuthenticationFailed"), "acct", &key).report();
        assert!(
            e.contains("account key was refused") && e.contains("HTTP 403"),
            "{e}"
        );
        let sas = |sp: &str, se: &str| Credential::Sas {
            permissions: Some(sp.to_owned()),
            expiry: Some(se.to_owned()),
        };
        let e = explain(
            refused("AuthorizationPermissionMismatch"),
            "acct",
            &sas("r", "2999-01-01"),
        )
        .report();
        assert!(e.contains("permissions: r;"), "{e}");
        let e = explain(
            refused("AuthorizationFailure"),
            "acct",
            &sas("rw", "2001-01-01T00:00Z"),
        )
        .report();
        assert!(e.contains("expired at 2001-01-01T00:00Z"), "{e}");
        // Other errors pass unchanged.
        let e = Error::Timeout {
            backend: "azure-blob",
            operation: "renew",
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(explain(e, "acct", &key), Error::Timeout { .. }));
    }

    #[test]
    fn sas_tokens_that_cannot_work_are_refused_before_any_request() {
        let sas = |sp: &str, se: &str| Credential::Sas {
            permissions: Some(sp.into()),
            expiry: Some(se.into()),
        };
        assert!(check_sas(&sas("racwdl", "2999-01-01")).is_ok());
        let e = check_sas(&sas("rl", "2999-01-01")).unwrap_err().to_string();
        assert!(e.contains("read and write"), "{e}");
        let e = check_sas(&sas("rw", "2001-01-01")).unwrap_err().to_string();
        assert!(e.contains("expired at 2001-01-01"), "{e}");
    }

    #[test]
    fn sas_times() {
        let t = |s: &str| {
            sas_time(s)
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        assert_eq!(t("2030-01-01"), 1_893_456_000);
        assert_eq!(t("2030-01-01T00:01Z"), 1_893_456_060);
        assert_eq!(t("2030-01-01T00:00:02Z"), 1_893_456_002);
        assert_eq!(t("2030-01-01T00:00:02.1234567Z"), 1_893_456_002);
        assert!(sas_time("soon").is_none());
    }
}
