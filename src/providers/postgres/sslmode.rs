//! libpq's `sslmode` for the PostgreSQL provider, read by the crate itself because the client
//! library knows only `disable`, `prefer` and `require`: every libpq spelling is accepted and
//! mapped, the default is TLS for any server not on this machine, and a mode that may fall back
//! to cleartext is refused for a remote server when the connection string carries a password,
//! unless the user opts in — a machine in the middle could refuse TLS and ask for the password
//! in cleartext, and the client library cannot refuse cleartext authentication by itself.

use postgres::config::{Host, SslMode as ClientMode};

use crate::error::{Error, Result};
use crate::providers::support::tls::Tls;

/// libpq's modes, as written in a connection string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::config(
                    "sslmode",
                    format!(
                        "{other:?} is not one of disable, allow, prefer, require, verify-ca, \
                         verify-full"
                    ),
                ));
            }
        })
    }

    /// Whether the connection may go on without TLS.
    fn may_be_cleartext(self) -> bool {
        matches!(self, SslMode::Disable | SslMode::Allow | SslMode::Prefer)
    }
}

/// Removes `sslmode` from a connection string (URL or `key=value` form); returns the string
/// the client library may parse and the mode, if one was given.
pub(super) fn take_sslmode(conn: &str) -> Result<(String, Option<SslMode>)> {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        let Ok(mut url) = url::Url::parse(conn) else {
            return Ok((conn.to_owned(), None)); // the client reports it, without echoing it
        };
        let mut mode = None;
        let rest: Vec<(String, String)> = url
            .query_pairs()
            .filter_map(|(k, v)| {
                if k == "sslmode" {
                    mode = Some(v.into_owned());
                    None
                } else {
                    Some((k.into_owned(), v.into_owned()))
                }
            })
            .collect();
        set_query(&mut url, &rest);
        return Ok((url.into(), mode.as_deref().map(SslMode::parse).transpose()?));
    }
    // key=value pairs: `sslmode` values are bare words.
    let mut mode = None;
    let mut kept = Vec::new();
    let mut words = conn.split_whitespace().peekable();
    while let Some(word) = words.next() {
        let (key, value) = match word.split_once('=') {
            Some((k, "")) if k.trim() == "sslmode" => (k, words.next().unwrap_or("")),
            Some((k, v)) => (k, v),
            None if word == "sslmode" => {
                // `sslmode = require`
                let _eq = words.next();
                ("sslmode", words.next().unwrap_or(""))
            }
            None => ("", word),
        };
        if key.trim() == "sslmode" {
            mode = Some(SslMode::parse(value)?);
        } else {
            kept.push(word);
        }
    }
    Ok((kept.join(" "), mode))
}

/// Replaces `url`'s query with `pairs`, percent-encoded (never `+` for a space: the client's
/// URL parser does not read `+` as a space).
pub(super) fn set_query(url: &mut url::Url, pairs: &[(String, String)]) {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    const QUERY_VALUE: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'&')
        .add(b'+')
        .add(b'=')
        .add(b'<')
        .add(b'>');
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, QUERY_VALUE),
                utf8_percent_encode(v, QUERY_VALUE)
            )
        })
        .collect();
    url.set_query((!query.is_empty()).then(|| query.join("&")).as_deref());
}

/// Whether every host is this machine (a Unix socket, `localhost` or a loopback address),
/// where no one in the middle can downgrade the connection.
fn all_local(hosts: &[Host]) -> bool {
    hosts.iter().all(|h| match h {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        Host::Unix(_) => true,
    })
}

/// Decides the client's TLS mode. Without `sslmode`: TLS required for remote servers, preferred
/// for local ones. A mode that may fall back to cleartext, for a remote server, with a
/// password: refused unless `allow_plaintext_password`. `verify-ca`/`verify-full` with
/// [`Tls::DangerAcceptInvalidCerts`] contradict each other: refused.
pub(super) fn client_mode(
    mode: Option<SslMode>,
    config: &postgres::Config,
    tls: &Tls,
    allow_plaintext_password: bool,
) -> Result<ClientMode> {
    let local = all_local(config.get_hosts());
    let mode = mode.unwrap_or(if local {
        SslMode::Prefer
    } else {
        SslMode::Require
    });
    if mode.may_be_cleartext()
        && !local
        && config.get_password().is_some()
        && !allow_plaintext_password
    {
        return Err(Error::config(
            "sslmode",
            "disable, allow and prefer let a machine in the middle refuse TLS and ask for the \
             password in cleartext; use require or verify-full, or opt in with \
             allow_plaintext_password(true)",
        ));
    }
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull)
        && *tls == Tls::DangerAcceptInvalidCerts
    {
        return Err(Error::config(
            "sslmode",
            "verify-ca and verify-full verify the certificate, which Tls::DangerAcceptInvalidCerts \
             turns off: choose one",
        ));
    }
    Ok(match mode {
        SslMode::Disable => ClientMode::Disable,
        SslMode::Allow | SslMode::Prefer => ClientMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => ClientMode::Require,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn mode_of(conn: &str, allow: bool) -> Result<ClientMode> {
        let (rest, mode) = take_sslmode(conn)?;
        let config = postgres::Config::from_str(&rest).expect("the client parses the rest");
        client_mode(mode, &config, &Tls::Verify, allow)
    }

    #[test]
    fn every_libpq_spelling_is_read() {
        for (m, want) in [
            ("disable", ClientMode::Disable),
            ("allow", ClientMode::Prefer),
            ("prefer", ClientMode::Prefer),
            ("require", ClientMode::Require),
            ("verify-ca", ClientMode::Require),
            ("verify-full", ClientMode::Require),
        ] {
            let got = mode_of(
                &format!("postgres://u:pw@127.0.0.1/db?sslmode={m}&application_name=a"),
                false,
            );
            assert_eq!(got.unwrap(), want, "{m}");
            let got = mode_of(&format!("host=127.0.0.1 sslmode={m} user=u"), false);
            assert_eq!(got.unwrap(), want, "{m}");
        }
        let e = mode_of("postgres://h/db?sslmode=verify", false).unwrap_err();
        assert!(e.to_string().contains("sslmode"), "{e}");
        let (rest, _) =
            take_sslmode("postgres://u:pw@h/db?sslmode=require&application_name=a").unwrap();
        assert_eq!(rest, "postgres://u:pw@h/db?application_name=a");
        let (rest, _) = take_sslmode("postgres://h/db?options=-c%20a%3Db&sslmode=require").unwrap();
        assert_eq!(rest, "postgres://h/db?options=-c%20a%3Db");
    }

    #[test]
    fn remote_servers_get_tls_and_no_cleartext_fallback() {
        assert_eq!(
            mode_of("postgres://u:pw@db.internal/db", false).unwrap(),
            ClientMode::Require
        );
        assert_eq!(
            mode_of("postgres://u:pw@localhost/db", false).unwrap(),
            ClientMode::Prefer
        );
        for m in ["disable", "allow", "prefer"] {
            let url = format!("postgres://u:pw@db.internal/db?sslmode={m}");
            let e = mode_of(&url, false).unwrap_err().to_string();
            assert!(e.contains("allow_plaintext_password"), "{e}");
            assert!(mode_of(&url, true).is_ok());
            // Without a password there is nothing to steal at connect time.
            assert!(mode_of(&format!("postgres://u@db.internal/db?sslmode={m}"), false).is_ok());
        }
        let (rest, mode) = take_sslmode("postgres://h/db?sslmode=verify-full").unwrap();
        let config = postgres::Config::from_str(&rest).unwrap();
        assert!(client_mode(mode, &config, &Tls::DangerAcceptInvalidCerts, false).is_err());
    }
}
