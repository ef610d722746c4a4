//! The one secret-safe rendering of a server address, used by every options type's `Debug`
//! and `Display` and in error text: scheme, user, hosts, ports and path — never a password, a
//! query (SAS signatures, tokens, `password=` parameters) or a fragment. Parsing uses the `url`
//! crate; connection strings that are not URLs (PostgreSQL's `key=value` form, ZooKeeper's host
//! lists) are rendered from their parts through the same type.

use std::fmt;

/// A server address with every secret-bearing part removed. Build it with
/// [`SafeUrl::parse`] or [`SafeUrl::from_parts`]; print it with `{}`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SafeUrl {
    scheme: String,
    user: String,
    /// `host` or `host:port`, one per server.
    hosts: Vec<String>,
    path: String,
}

impl SafeUrl {
    /// Parses `s` as a URL; `None` if it is not one (say so without echoing it: it may hold a
    /// password).
    #[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
    pub(crate) fn parse(s: &str) -> Option<SafeUrl> {
        let url = url::Url::parse(s).ok()?;
        Some(SafeUrl::from_url(&url))
    }

    /// The safe parts of a parsed URL.
    pub(crate) fn from_url(url: &url::Url) -> SafeUrl {
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => vec![format!("{h}:{p}")],
            (Some(h), None) => vec![h.to_owned()],
            (None, _) => Vec::new(),
        };
        SafeUrl {
            scheme: url.scheme().to_owned(),
            user: url.username().to_owned(),
            hosts: host,
            path: url.path().to_owned(),
        }
    }

    /// Builds one from parts the caller has already separated from any secret.
    #[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
    pub(crate) fn from_parts(
        scheme: &str,
        user: &str,
        hosts: impl IntoIterator<Item = String>,
        path: &str,
    ) -> SafeUrl {
        SafeUrl {
            scheme: scheme.to_owned(),
            user: user.to_owned(),
            hosts: hosts.into_iter().collect(),
            path: path.to_owned(),
        }
    }

    /// The rendering of `s`, or a fixed placeholder when `s` is no URL.
    #[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
    pub(crate) fn describe(s: &str) -> String {
        SafeUrl::parse(s).map_or_else(|| "<unparsable URL>".to_owned(), |u| u.to_string())
    }
}

impl fmt::Display for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if !self.user.is_empty() {
            write!(f, "{}@", self.user)?;
        }
        write!(f, "{}{}", self.hosts.join(","), self.path)
    }
}

impl fmt::Debug for SafeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_password_query_and_fragment() {
        let s = SafeUrl::describe("rediss://app:hunter2@db.example:6380/2?token=abc#insecure");
        assert_eq!(s, "rediss://app@db.example:6380/2");
        let s = SafeUrl::describe("https://acct.blob.core.windows.net/c?sv=1&sig=SECRET");
        assert_eq!(s, "https://acct.blob.core.windows.net/c");
        assert!(!format!("{:?}", SafeUrl::parse("http://u:pw@h/").unwrap()).contains("pw"));
    }

    #[test]
    fn unparsable_input_is_not_echoed() {
        assert_eq!(SafeUrl::describe("not a url pw=x"), "<unparsable URL>");
    }

    #[test]
    fn from_parts_lists_hosts() {
        let u = SafeUrl::from_parts(
            "zookeeper",
            "",
            ["a:2181".to_owned(), "b:2181".to_owned()],
            "/app",
        );
        assert_eq!(u.to_string(), "zookeeper://a:2181,b:2181/app");
    }
}
