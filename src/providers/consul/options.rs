//! Options of the Consul provider: the builder ([`ConsulOptions`]), the `consul://` connection
//! URL [`crate::connect`] reads (the ACL token comes from `CONSUL_HTTP_TOKEN`, never from the
//! URL), and the checks on every value that reaches a URL or a header: key prefix, datacenter,
//! durations within what Consul accepts.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::providers::support::params::Params;
use crate::providers::support::safe_url::SafeUrl;
use crate::providers::support::tls::Tls;
use crate::validate;

/// Consul's own bounds on a session TTL (`session_ttl_min` default, `SessionTTLMax`).
pub(crate) const CONSUL_MIN_SESSION_TTL: Duration = Duration::from_secs(10);
pub(crate) const CONSUL_MAX_SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
/// Consul caps a session's lock-delay at 60 s (`structs.MaxLockDelay`).
pub(crate) const CONSUL_MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
/// Consul caps a blocking query's `wait` at 10 minutes.
const CONSUL_MAX_WAIT: Duration = Duration::from_secs(600);

/// Options of a [`crate::ConsulProvider`].
///
/// ```
/// use leader_election::{ConsulOptions, Tls};
/// use std::time::Duration;
///
/// let options = ConsulOptions::new("https://consul.internal:8501")
///     .token("3f1c-secret-token")
///     .datacenter("eu-west")
///     .key_prefix("myapp/election/")
///     .tls(Tls::VerifyWithCa("/etc/consul/ca.pem".into()))
///     .request_timeout(Duration::from_secs(2));
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct ConsulOptions {
    pub(crate) address: String,
    pub(crate) token: Option<String>,
    pub(crate) datacenter: Option<String>,
    pub(crate) key_prefix: String,
    pub(crate) session_ttl_min: Duration,
    pub(crate) lock_delay: Option<Duration>,
    pub(crate) watch_wait: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) fail_fast: bool,
    pub(crate) tls: Tls,
}

impl ConsulOptions {
    /// Options for the agent at `address` — `http://host:8500`, or `https://host:8501` for TLS
    /// (see [`ConsulOptions::tls`]) — with defaults: no ACL token, the agent's datacenter, key
    /// prefix `leader-election/`, 10 s minimum session TTL, lock-delay equal to the lease TTL,
    /// 60 s blocking-query wait, 5 s connect and request timeouts, fail fast.
    pub fn new(address: impl Into<String>) -> Self {
        ConsulOptions {
            address: address.into(),
            token: None,
            datacenter: None,
            key_prefix: "leader-election/".into(),
            session_ttl_min: CONSUL_MIN_SESSION_TTL,
            lock_delay: None,
            watch_wait: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            fail_fast: true,
            tls: Tls::Verify,
        }
    }

    /// The ACL token, sent as the `X-Consul-Token` header on every request (never in a URL),
    /// and never shown by `Debug`, logs or errors. It needs `key:write` on the key prefix and
    /// `session:write` on the agent's node.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The datacenter (`?dc=`) every request goes to (default: the agent's own): up to 64
    /// characters from `[A-Za-z0-9_.-]`.
    pub fn datacenter(mut self, datacenter: impl Into<String>) -> Self {
        self.datacenter = Some(datacenter.into());
        self
    }

    /// The prefix of every key (default `leader-election/`): 1–128 characters from
    /// `[A-Za-z0-9/._-]`, ending with `/`, without empty, `.` or `..` segments. Group `G` is
    /// the key `<prefix>G`; the watch thread runs one blocking query on the whole prefix.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The shortest session TTL the Consul servers accept: their `session_ttl_min`, 10 s by
    /// default (range 1 s – 24 h). A lease TTL shorter than this gets a session of this TTL —
    /// more than asked, never less — which lengthens crash failover (see the provider docs).
    pub fn session_ttl_min(mut self, ttl: Duration) -> Self {
        self.session_ttl_min = ttl;
        self
    }

    /// The lock-delay of the sessions (default: the lease TTL, capped at Consul's 60 s): after
    /// a session is invalidated or destroyed while it holds a key, nobody can take that key for
    /// this long. A TTL expiry needs none (the old leader's own deadline has passed by then);
    /// it protects against an early end of the session — an operator's `consul session
    /// destroy`, or Consul destroying every session of a node whose agent restarts or is
    /// force-left, whatever the session's checks. So the elector's lease TTL may be at most this
    /// (a longer TTL is refused when the elector is built): a shorter lock-delay, or zero,
    /// buys faster crash failover only with shorter leases.
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = Some(delay);
        self
    }

    /// How long one blocking query of the watch thread may wait (default 60 s, at most
    /// Consul's 10 min; at least 1 s).
    pub fn watch_wait(mut self, wait: Duration) -> Self {
        self.watch_wait = wait;
        self
    }

    /// The longest a connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest a request may take in all (default 5 s; the call's deadline may shorten it).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Whether [`crate::ConsulProvider::new`] asks the agent for its cluster leader at once and
    /// fails if it cannot (default `true`).
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// How an `https://` agent's certificate is checked (default [`Tls::Verify`]).
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Checks every option; the parsed base URL.
    pub(crate) fn validate(&self) -> Result<url::Url> {
        validate_prefix(&self.key_prefix)?;
        if let Some(dc) = &self.datacenter {
            validate_datacenter(dc)?;
        }
        for (field, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            validate::duration(field, d)?;
        }
        if self.session_ttl_min < Duration::from_secs(1)
            || self.session_ttl_min > CONSUL_MAX_SESSION_TTL
        {
            return Err(Error::config("session_ttl_min", "must be 1 s to 24 h"));
        }
        if self.lock_delay.is_some_and(|d| d > CONSUL_MAX_LOCK_DELAY) {
            return Err(Error::config(
                "lock_delay",
                "must be at most 60 s (Consul caps it there)",
            ));
        }
        if self.watch_wait < Duration::from_secs(1) || self.watch_wait > CONSUL_MAX_WAIT {
            return Err(Error::config("watch_wait", "must be 1 s to 10 min"));
        }
        let url = url::Url::parse(&self.address).map_err(|_| {
            Error::config(
                "address",
                "is not a URL such as http://127.0.0.1:8500 or https://consul:8501",
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::config(
                "address",
                format!(
                    "expected http://host:port or https://host:port, got {}",
                    describe(&url)
                ),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(Error::config(
                "address",
                "must not carry credentials or a query: give the ACL token with \
                 ConsulOptions::token (it is sent as the X-Consul-Token header)",
            ));
        }
        Ok(url)
    }
}

/// The URL parameters [`ConsulOptions::from_url`] takes (the key prefix is the URL's path).
pub(crate) const URL_PARAMS: &[&str] = &[
    "datacenter",
    "session_ttl_min",
    "lock_delay",
    "watch_wait",
    "connect_timeout",
    "request_timeout",
    "fail_fast",
    "tls",
    "ca_file",
];

impl ConsulOptions {
    /// Options from `consul://host:8500/prefix/?…` (`consul+https://` for TLS), with the ACL
    /// token from the `CONSUL_HTTP_TOKEN` environment variable (see [`crate::connect`]).
    pub(crate) fn from_url(url: &str) -> Result<ConsulOptions> {
        ConsulOptions::from_url_and_token(url, std::env::var("CONSUL_HTTP_TOKEN").ok())
    }

    pub(crate) fn from_url_and_token(url: &str, token: Option<String>) -> Result<ConsulOptions> {
        let bad = || {
            Error::config(
                "url",
                "is not a valid consul://host[:port][/key/prefix/] or consul+https://… URL",
            )
        };
        let parsed = url::Url::parse(url).map_err(|_| bad())?;
        let http = match parsed.scheme() {
            "consul" => "http",
            "consul+https" => "https",
            _ => return Err(bad()),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Error::config(
                "url",
                "a consul URL carries no credentials: set the ACL token in the CONSUL_HTTP_TOKEN \
                 environment variable",
            ));
        }
        let host = parsed.host_str().ok_or_else(bad)?;
        let port = parsed
            .port()
            .unwrap_or(if http == "https" { 8501 } else { 8500 });
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let mut params = Params::parse("consul", parsed.query().unwrap_or(""))?;
        if params.take("token").is_some() {
            return Err(Error::config(
                "url",
                "the consul URL parameter \"token\" is refused: a URL ends up in logs, shell \
                 history and process listings; set the ACL token in the CONSUL_HTTP_TOKEN \
                 environment variable instead",
            ));
        }
        let mut o = ConsulOptions::new(format!("{http}://{host}:{port}"));
        let path = parsed.path().trim_start_matches('/');
        if !path.is_empty() {
            let prefix = percent_encoding::percent_decode_str(path)
                .decode_utf8()
                .map_err(|_| bad())?;
            o = o.key_prefix(prefix.into_owned());
        }
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            o = o.token(token);
        }
        if let Some(v) = params.take("datacenter") {
            o = o.datacenter(v);
        }
        if let Some(v) = params.duration("session_ttl_min")? {
            o = o.session_ttl_min(v);
        }
        if let Some(v) = params.duration("lock_delay")? {
            o = o.lock_delay(v);
        }
        if let Some(v) = params.duration("watch_wait")? {
            o = o.watch_wait(v);
        }
        if let Some(v) = params.duration("connect_timeout")? {
            o = o.connect_timeout(v);
        }
        if let Some(v) = params.duration("request_timeout")? {
            o = o.request_timeout(v);
        }
        if let Some(v) = params.bool("fail_fast")? {
            o = o.fail_fast(v);
        }
        o = o.tls(params.tls()?);
        params.finish(URL_PARAMS)?;
        Ok(o)
    }
}

impl std::fmt::Debug for ConsulOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulOptions")
            .field("address", &SafeUrl::describe(&self.address))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("datacenter", &self.datacenter)
            .field("key_prefix", &self.key_prefix)
            .field("session_ttl_min", &self.session_ttl_min)
            .field("lock_delay", &self.lock_delay)
            .field("watch_wait", &self.watch_wait)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("fail_fast", &self.fail_fast)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `scheme://host:port/path` of a URL, without credentials or query.
pub(crate) fn describe(url: &url::Url) -> String {
    SafeUrl::from_url(url).to_string()
}

pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    let rule = |r: &str| Err(Error::config("key_prefix", r.to_owned()));
    if prefix.is_empty() || prefix.len() > 128 {
        return rule("must be 1 to 128 characters long");
    }
    if let Some(bad) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-')))
    {
        return Err(Error::config(
            "key_prefix",
            format!("contains the character {bad:?}; allowed are letters, digits and /._-"),
        ));
    }
    if !prefix.ends_with('/') {
        return rule("must end with '/' (group G is the key <prefix>G)");
    }
    let segments: Vec<&str> = prefix[..prefix.len() - 1].split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return rule("must not start with '/' nor have empty, '.' or '..' segments");
    }
    Ok(())
}

fn validate_datacenter(dc: &str) -> Result<()> {
    let ok = !dc.is_empty()
        && dc.len() <= 64
        && dc
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            "datacenter",
            "must be 1 to 64 characters from [A-Za-z0-9_.-]",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters() {
        let o = ConsulOptions::from_url_and_token(
            "consul://h:8600/app/election/?datacenter=dc2&lock_delay=0s&session_ttl_min=15s\
             &watch_wait=30s&request_timeout=250ms&fail_fast=false",
            Some("s3cret-token".into()),
        )
        .unwrap();
        assert_eq!(o.address, "http://h:8600");
        assert_eq!(o.key_prefix, "app/election/");
        assert_eq!(o.datacenter.as_deref(), Some("dc2"));
        assert_eq!(o.lock_delay, Some(Duration::ZERO));
        assert_eq!(o.session_ttl_min, Duration::from_secs(15));
        assert_eq!(o.watch_wait, Duration::from_secs(30));
        assert_eq!(o.request_timeout, Duration::from_millis(250));
        assert!(!o.fail_fast);
        assert_eq!(o.token.as_deref(), Some("s3cret-token"));
        o.validate().unwrap();
        assert!(!format!("{o:?}").contains("s3cret"));
        let o = ConsulOptions::from_url_and_token("consul+https://h", None).unwrap();
        assert_eq!(o.address, "https://h:8501");
        assert_eq!(o.key_prefix, "leader-election/");
        assert_eq!(o.token, None);
    }

    #[test]
    fn tokens_never_come_from_the_url() {
        let e = ConsulOptions::from_url_and_token("consul://h/?token=s3cret", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CONSUL_HTTP_TOKEN") && !e.contains("s3cret"),
            "{e}"
        );
        let e = ConsulOptions::from_url_and_token("consul://u:s3cret@h/", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("CONSUL_HTTP_TOKEN") && !e.contains("s3cret"),
            "{e}"
        );
        let e = ConsulOptions::from_url_and_token("consul://h/?colour=s3cret", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour") && !e.contains("s3cret"), "{e}");
        let e = ConsulOptions::new("http://u:s3cret@h:8500")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn values_are_checked() {
        let ok = || ConsulOptions::new("http://127.0.0.1:8500");
        ok().validate().unwrap();
        for prefix in ["", "no-slash", "/abs/", "a//b/", "a/../", "sp ace/", "x?y/"] {
            let e = ok().key_prefix(prefix).validate().unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidConfig {
                        field: "key_prefix",
                        ..
                    }
                ),
                "{prefix}"
            );
        }
        ok().key_prefix("a/b.c_d-e/").validate().unwrap();
        assert!(ok().datacenter("dc 1").validate().is_err());
        assert!(ok().lock_delay(Duration::from_secs(61)).validate().is_err());
        assert!(
            ok().watch_wait(Duration::from_secs(601))
                .validate()
                .is_err()
        );
        assert!(
            ok().session_ttl_min(Duration::from_millis(10))
                .validate()
                .is_err()
        );
        assert!(ConsulOptions::new("redis://h").validate().is_err());
        assert!(ConsulOptions::new("http://h:8500/?x=1").validate().is_err());
    }
}
