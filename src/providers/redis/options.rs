//! Options of the Redis provider.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::providers::support::params::Params;
use crate::providers::support::safe_url::SafeUrl;
use crate::providers::support::tls::Tls;

/// Options of a [`crate::RedisProvider`].
///
/// ```
/// use leader_election::RedisOptions;
/// use std::time::Duration;
///
/// let options = RedisOptions::new("rediss://app:secret@redis.internal:6380/0")
///     .key_prefix("myapp:election:")
///     .command_timeout(Duration::from_secs(2));
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct RedisOptions {
    pub(crate) url: String,
    pub(crate) key_prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) fail_fast: bool,
    pub(crate) tls: Tls,
}

impl RedisOptions {
    /// Options for a URL — `redis://[user][:password@]host[:port][/db]`, or `rediss://` for
    /// TLS (see [`RedisOptions::tls`]) — with defaults: key prefix
    /// `leader-election:`, 5 s connect and command timeouts, fail fast.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            key_prefix: "leader-election:".into(),
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(5),
            fail_fast: true,
            tls: Tls::Verify,
        }
    }

    /// How a `rediss://` server's certificate is checked (default [`Tls::Verify`]). With
    /// [`Tls::VerifyWithCa`] the redis client trusts that file's CA certificates *instead of*
    /// the system's roots (the client takes one root set). The redis crate's own `#insecure`
    /// URL fragment is refused: say [`Tls::DangerAcceptInvalidCerts`] here instead. The redis
    /// client takes rustls's process-wide default crypto provider; if the application has not
    /// installed one, a `rediss://` provider installs `ring` as the default (never replacing
    /// the application's choice).
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// The prefix of every key (default `leader-election:`): up to 64 characters from
    /// `[A-Za-z0-9:._-]`. Group `G` uses keys `<prefix>{G}` and `<prefix>{G}:token`, which share
    /// a cluster hash slot, and the channel `<prefix>events`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The longest a connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest a command may wait for its reply (default 5 s; the call's deadline may
    /// shorten it).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Whether [`crate::RedisProvider::new`] connects at once and fails if it cannot (default
    /// `true`). With `false` the elector's calls fail with transient errors until Redis is up.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }
}

/// The URL parameters [`RedisOptions::from_url`] takes.
pub(crate) const URL_PARAMS: &[&str] = &[
    "key_prefix",
    "connect_timeout",
    "command_timeout",
    "fail_fast",
    "tls",
    "ca_file",
];

impl RedisOptions {
    /// Options from a `redis://` or `rediss://` URL whose query holds this type's options by
    /// their builder names (see [`crate::connect`]).
    pub(crate) fn from_url(url: &str) -> Result<RedisOptions> {
        let mut parsed = url::Url::parse(url).map_err(|_| {
            Error::config(
                "url",
                "is not a valid redis://[user][:password@]host[:port][/db] URL",
            )
        })?;
        let mut params = Params::parse("redis", parsed.query().unwrap_or(""))?;
        parsed.set_query(None);
        let mut o = RedisOptions::new(String::from(parsed));
        if let Some(v) = params.take("key_prefix") {
            o = o.key_prefix(v);
        }
        if let Some(v) = params.duration("connect_timeout")? {
            o = o.connect_timeout(v);
        }
        if let Some(v) = params.duration("command_timeout")? {
            o = o.command_timeout(v);
        }
        if let Some(v) = params.bool("fail_fast")? {
            o = o.fail_fast(v);
        }
        o = o.tls(params.tls()?);
        params.finish(URL_PARAMS)?;
        Ok(o)
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("server", &describe(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("fail_fast", &self.fail_fast)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `scheme://user@host:port/db` of a URL, without password, query or fragment.
pub(crate) fn describe(url: &str) -> String {
    SafeUrl::describe(url)
}

pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.len() > 64 {
        return Err(Error::config("key_prefix", "must be at most 64 characters"));
    }
    if let Some(bad) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-')))
    {
        return Err(Error::config(
            "key_prefix",
            format!("contains the character {bad:?}; allowed are letters, digits and :._-"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters() {
        let o = RedisOptions::from_url(
            "rediss://u:pw@h:6380/2?key_prefix=app:&command_timeout=250ms\
             &tls=danger-accept-invalid-certs&fail_fast=0",
        )
        .unwrap();
        assert_eq!(o.url, "rediss://u:pw@h:6380/2");
        assert_eq!(o.key_prefix, "app:");
        assert_eq!(o.command_timeout, Duration::from_millis(250));
        assert_eq!(o.tls, Tls::DangerAcceptInvalidCerts);
        assert!(!o.fail_fast);
        let e = RedisOptions::from_url("redis://h/?keyprefix=x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keyprefix") && e.contains("key_prefix"), "{e}");
    }
}
