//! Options of the etcd provider: the builder, its checks (endpoint URLs, key prefix, when a
//! password may travel without TLS) and the `etcd://` / `etcds://` connection URL form read by
//! [`crate::connect`]. Credentials never appear in `Debug` output or error text, and a URL that
//! carries them in its query is refused: they belong in the user-info part.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::providers::support::params::Params;
use crate::providers::support::safe_url::SafeUrl;
use crate::providers::support::tls::Tls;
use crate::validate;

/// The client port etcd listens on by default.
const DEFAULT_PORT: u16 = 2379;

/// Options of a [`crate::EtcdProvider`].
///
/// ```
/// use leader_election::{EtcdOptions, Tls};
/// use std::time::Duration;
///
/// let options = EtcdOptions::new("https://etcd1:2379,https://etcd2:2379")
///     .key_prefix("myapp/election/")
///     .auth("app", "s3cret")
///     .tls(Tls::VerifyWithCa("/etc/etcd/ca.pem".into()))
///     .request_timeout(Duration::from_secs(2));
/// assert!(!format!("{options:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct EtcdOptions {
    pub(crate) endpoints: String,
    pub(crate) key_prefix: String,
    pub(crate) auth: Option<(String, String)>,
    pub(crate) tls: Tls,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) fail_fast: bool,
    pub(crate) allow_plaintext_password: bool,
}

impl EtcdOptions {
    /// Options for one endpoint or several separated by commas (`http://10.0.0.1:2379,
    /// http://10.0.0.2:2379`; all `http` or all `https`, no path, query or credentials), with
    /// defaults: key prefix `leader-election/`, no authentication, 5 s connect and request
    /// timeouts, fail fast. A call that cannot reach one endpoint tries the next.
    pub fn new(endpoints: impl Into<String>) -> Self {
        EtcdOptions {
            endpoints: endpoints.into(),
            key_prefix: "leader-election/".into(),
            auth: None,
            tls: Tls::Verify,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            fail_fast: true,
            allow_plaintext_password: false,
        }
    }

    /// The prefix of every key (default `leader-election/`): 1–64 characters from
    /// `[A-Za-z0-9/:._-]`. Group `G` is the key `<prefix>G`, and the provider's one watch
    /// covers every key under the prefix.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Authenticates as `user` (etcd's `/v3/auth/authenticate`); the token it gets is
    /// renewed whenever etcd reports it expired. Over `http://` to a host other than this
    /// machine the password would cross the network in cleartext: refused unless
    /// [`EtcdOptions::allow_plaintext_password`].
    pub fn auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// How `https` endpoints' certificates are checked (default [`Tls::Verify`]); anything
    /// else with `http` endpoints is refused, since it would suggest TLS where there is none.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// The longest a connection attempt may take (default 5 s; the call's deadline may
    /// shorten it).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest a request may take in all (default 5 s; the call's deadline may shorten
    /// it).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Whether [`crate::EtcdProvider::new`] reaches etcd at once (authenticating, if asked,
    /// and reading under the key prefix) and fails if it cannot (default `true`). With
    /// `false` the elector's calls fail with transient errors until etcd answers.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// Allows [`EtcdOptions::auth`] over `http://` to hosts other than this machine, where
    /// the password and token cross the network in cleartext (default `false`).
    pub fn allow_plaintext_password(mut self, allow: bool) -> Self {
        self.allow_plaintext_password = allow;
        self
    }

    /// The endpoint URLs, checked.
    pub(crate) fn endpoint_urls(&self) -> Result<Vec<url::Url>> {
        let mut urls = Vec::new();
        for text in self.endpoints.split(',').map(str::trim) {
            let url = url::Url::parse(text).map_err(|_| {
                Error::config(
                    "endpoints",
                    "expected http://host:port or https://host:port URLs separated by commas",
                )
            })?;
            let shown = SafeUrl::from_url(&url);
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(Error::config(
                    "endpoints",
                    format!("{shown} is not an http:// or https:// URL with a host"),
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(Error::config(
                    "endpoints",
                    format!("{shown} carries credentials: give them to EtcdOptions::auth"),
                ));
            }
            if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
                return Err(Error::config(
                    "endpoints",
                    format!("{shown} must have no path, query or fragment"),
                ));
            }
            urls.push(url);
        }
        if urls.windows(2).any(|w| w[0].scheme() != w[1].scheme()) {
            return Err(Error::config(
                "endpoints",
                "mixes http and https: a password must not reach some endpoints in cleartext",
            ));
        }
        Ok(urls)
    }

    /// Checks everything but the endpoints' reachability.
    pub(crate) fn check(&self) -> Result<Vec<url::Url>> {
        validate_prefix(&self.key_prefix)?;
        validate::duration("connect_timeout", self.connect_timeout)?;
        validate::duration("request_timeout", self.request_timeout)?;
        let urls = self.endpoint_urls()?;
        let https = urls.iter().all(|u| u.scheme() == "https");
        if !https && self.tls != Tls::Verify {
            return Err(Error::config(
                "tls",
                "TLS options need https:// endpoints (etcds:// URLs); these are http://",
            ));
        }
        if let Some((user, password)) = &self.auth {
            if user.is_empty() || password.is_empty() {
                return Err(Error::config("auth", "user and password must not be empty"));
            }
            let local = urls.iter().all(|u| match u.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            });
            if !https && !local && !self.allow_plaintext_password {
                return Err(Error::config(
                    "auth",
                    "over http:// to another host the password and token travel in \
                     cleartext; use https:// endpoints, or opt in with \
                     allow_plaintext_password(true)",
                ));
            }
        }
        Ok(urls)
    }
}

/// The URL parameters [`EtcdOptions::from_url`] takes.
pub(crate) const URL_PARAMS: &[&str] = &[
    "key_prefix",
    "connect_timeout",
    "request_timeout",
    "fail_fast",
    "allow_plaintext_password",
    "tls",
    "ca_file",
];

impl EtcdOptions {
    /// Options from `etcd://[user:password@]host[:port][,host[:port]…][/key/prefix/][?…]`
    /// (`etcds://` for https; port 2379 by default). The path, if any, is the key prefix; the
    /// query holds this type's options by their builder names (see [`crate::connect`]).
    pub(crate) fn from_url(url: &str) -> Result<EtcdOptions> {
        let bad = || {
            Error::config(
                "url",
                "is not a valid etcd://[user:password@]host[:port][,host[:port]…][/prefix] URL",
            )
        };
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
            ("http", rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            ("https", rest)
        } else {
            return Err(bad());
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        // An `@` after the `?` means a password with an unescaped `?` was split: refuse it
        // without naming any part of it (it would echo part of the password).
        if rest.contains('#') || query.contains('@') {
            return Err(bad());
        }
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        if hosts.is_empty() || hosts.split(',').any(str::is_empty) {
            return Err(bad());
        }
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(|h| {
                let has_port = h.rsplit_once(']').map_or(h, |(_, p)| p).contains(':');
                if has_port {
                    format!("{scheme}://{h}")
                } else {
                    format!("{scheme}://{h}:{DEFAULT_PORT}")
                }
            })
            .collect();
        let mut o = EtcdOptions::new(endpoints.join(","));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        if let Some(auth) = auth {
            let (user, password) = auth.split_once(':').ok_or_else(bad)?;
            o = o.auth(decode(user), decode(password));
        }
        let mut params = Params::parse("etcd", query)?;
        for secret in ["user", "username", "password", "token"] {
            if params.take(secret).is_some() {
                return Err(Error::config(
                    "url",
                    format!(
                        "the etcd URL parameter {secret:?} would put a credential in the query; \
                         write etcd://user:password@host instead"
                    ),
                ));
            }
        }
        match (params.take("key_prefix"), path) {
            (Some(_), p) if !p.is_empty() => {
                return Err(Error::config(
                    "key_prefix",
                    "given both as the URL's path and as a parameter",
                ));
            }
            (Some(v), _) => o = o.key_prefix(v),
            (None, "") => {}
            (None, p) => o = o.key_prefix(decode(p)),
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
        if let Some(v) = params.bool("allow_plaintext_password")? {
            o = o.allow_plaintext_password(v);
        }
        o = o.tls(params.tls()?);
        params.finish(URL_PARAMS)?;
        Ok(o)
    }

    /// The endpoints without credentials, for `Debug` and errors.
    pub(crate) fn describe(&self) -> String {
        match self.endpoint_urls() {
            Ok(urls) => urls
                .iter()
                .map(|u| SafeUrl::from_url(u).to_string())
                .collect::<Vec<_>>()
                .join(","),
            Err(_) => "<invalid endpoints>".to_owned(),
        }
    }
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.describe())
            .field("key_prefix", &self.key_prefix)
            .field("user", &self.auth.as_ref().map(|(user, _)| user))
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("fail_fast", &self.fail_fast)
            .field("allow_plaintext_password", &self.allow_plaintext_password)
            .finish()
    }
}

pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > 64 {
        return Err(Error::config(
            "key_prefix",
            "must be 1 to 64 characters (an empty prefix would watch every key of the cluster)",
        ));
    }
    if let Some(bad) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | ':' | '.' | '_' | '-')))
    {
        return Err(Error::config(
            "key_prefix",
            format!("contains the character {bad:?}; allowed are letters, digits and /:._-"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters() {
        let o = EtcdOptions::from_url(
            "etcds://app:p%40ss@e1:2379,e2,[::1]:2400/myapp/le/?request_timeout=250ms\
             &tls=danger-accept-invalid-certs&fail_fast=0",
        )
        .unwrap();
        assert_eq!(
            o.endpoints,
            "https://e1:2379,https://e2:2379,https://[::1]:2400"
        );
        assert_eq!(o.key_prefix, "myapp/le/");
        assert_eq!(o.auth, Some(("app".into(), "p@ss".into())));
        assert_eq!(o.request_timeout, Duration::from_millis(250));
        assert_eq!(o.tls, Tls::DangerAcceptInvalidCerts);
        assert!(!o.fail_fast);
        assert!(!format!("{o:?}").contains("p@ss"));
        assert_eq!(o.check().unwrap().len(), 3);

        let o = EtcdOptions::from_url("etcd://h?key_prefix=a/b:").unwrap();
        assert_eq!(
            (o.endpoints.as_str(), o.key_prefix.as_str()),
            ("http://h:2379", "a/b:")
        );
        for bad in ["etcd://", "etcd://a,,b", "http://h:2379", "etcd://u@h"] {
            assert!(EtcdOptions::from_url(bad).is_err(), "{bad}");
        }
        let e = EtcdOptions::from_url("etcd://h/p/?key_prefix=x").unwrap_err();
        assert!(e.to_string().contains("key_prefix"), "{e}");
        let e = EtcdOptions::from_url("etcd://h?keyprefix=x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("keyprefix") && e.contains("key_prefix"), "{e}");
    }

    #[test]
    fn credentials_never_go_in_the_query_nor_in_errors() {
        for q in ["password=Hunter-22", "token=Hunter-22", "user=Hunter-22"] {
            let e = EtcdOptions::from_url(&format!("etcd://h:2379?{q}")).unwrap_err();
            let text = e.report();
            assert!(text.contains("etcd://user:password@host"), "{text}");
            assert!(!text.contains("Hunter-22"), "{text}");
        }
        let e = EtcdOptions::new("http://u:Hunter-22@h:2379")
            .check()
            .unwrap_err()
            .report();
        assert!(e.contains("credentials") && !e.contains("Hunter-22"), "{e}");
        let e = EtcdOptions::new("http://h:2379/?sig=Hunter-22")
            .check()
            .unwrap_err()
            .report();
        assert!(!e.contains("Hunter-22"), "{e}");
    }

    #[test]
    fn endpoints_prefixes_and_cleartext_passwords_are_checked() {
        let ok = |o: EtcdOptions| o.check().map(|_| ()).map_err(|e| e.report());
        assert!(ok(EtcdOptions::new("http://127.0.0.1:2379").auth("u", "p")).is_ok());
        assert!(
            ok(EtcdOptions::new("http://localhost:2379,http://[::1]:2379").auth("u", "p")).is_ok()
        );
        let remote = EtcdOptions::new("http://10.1.2.3:2379").auth("u", "p");
        assert!(
            ok(remote.clone())
                .unwrap_err()
                .contains("allow_plaintext_password")
        );
        assert!(ok(remote.allow_plaintext_password(true)).is_ok());
        assert!(ok(EtcdOptions::new("https://10.1.2.3:2379").auth("u", "p")).is_ok());
        assert!(ok(EtcdOptions::new("http://a:2379,https://b:2379")).is_err());
        assert!(ok(EtcdOptions::new("http://a:2379/v3")).is_err());
        let e = ok(EtcdOptions::new("http://a:2379").tls(Tls::DangerAcceptInvalidCerts));
        assert!(e.unwrap_err().contains("https"));
        assert!(ok(EtcdOptions::new("a:2379")).is_err());
        for prefix in ["", "has space/", "brace{", "x\n", &"p".repeat(65)] {
            let e = EtcdOptions::new("http://a:2379").key_prefix(prefix).check();
            assert!(
                matches!(
                    e,
                    Err(Error::InvalidConfig {
                        field: "key_prefix",
                        ..
                    })
                ),
                "{prefix:?}"
            );
        }
        assert!(ok(EtcdOptions::new("http://a:2379").key_prefix("/apps/le:1.x_y-z/")).is_ok());
    }
}
