//! Options of the ZooKeeper provider.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::providers::support::params::Params;

/// Who may read and change the election nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZooKeeperAcl {
    /// Anyone may do anything (ZooKeeper's `OPEN_ACL_UNSAFE`); for trusted networks.
    #[default]
    Open,
    /// Only the authenticated identity that created a node may do anything with it
    /// (`CREATOR_ALL_ACL`); needs [`ZooKeeperOptions::digest`]. All participants must use the
    /// same credentials.
    CreatorAll,
    /// As `CreatorAll`, and anyone may read (so monitoring tools can see who leads).
    CreatorAllWorldRead,
}

/// Options of a [`crate::ZooKeeperProvider`].
///
/// ```
/// use leader_election::{ZooKeeperAcl, ZooKeeperOptions};
/// use std::time::Duration;
///
/// let options = ZooKeeperOptions::new("zk1:2181,zk2:2181,zk3:2181/apps")
///     .root_path("/leader-election")
///     .session_timeout(Duration::from_secs(10))
///     .digest("app", "s3cret")
///     .acl(ZooKeeperAcl::CreatorAll);
/// assert!(!format!("{options:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct ZooKeeperOptions {
    pub(crate) connect: String,
    pub(crate) root: String,
    pub(crate) session_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retries: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) create_root: bool,
    pub(crate) digest: Option<(String, String)>,
    pub(crate) acl: ZooKeeperAcl,
}

impl ZooKeeperOptions {
    /// Options for a connection string — `host:port[,host:port…][/chroot]` — with defaults:
    /// root path `/leader-election` (created if missing), 15 s session timeout, 5 s connect
    /// timeout, 2 retries 200 ms apart after a connection loss, open ACL, no authentication.
    pub fn new(connect: impl Into<String>) -> Self {
        ZooKeeperOptions {
            connect: connect.into(),
            root: "/leader-election".into(),
            session_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            retries: 2,
            retry_delay: Duration::from_millis(200),
            create_root: true,
            digest: None,
            acl: ZooKeeperAcl::Open,
        }
    }

    /// The path under which each group gets a node (default `/leader-election`): absolute,
    /// segments from `[A-Za-z0-9._-]`, no trailing slash.
    pub fn root_path(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// The session timeout (default 15 s). A lease can last no longer than the session that
    /// holds it, so the elector's `lease_ttl` must be at most this; a crashed leader is
    /// replaced about this long after it died. The server clamps it to its
    /// `minSessionTimeout..maxSessionTimeout` (by default 2–20 ticks, 4–40 s): keep it inside.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// How long to wait for a session to be established (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How often an operation is retried after a connection loss within its deadline
    /// (default 2), and the pause between tries (default 200 ms).
    pub fn retries(mut self, retries: u32, delay: Duration) -> Self {
        self.retries = retries;
        self.retry_delay = delay;
        self
    }

    /// Whether to create the root path and group nodes if missing (default `true`).
    pub fn create_root(mut self, create: bool) -> Self {
        self.create_root = create;
        self
    }

    /// Authenticates every session with the `digest` scheme as `user:password`.
    pub fn digest(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.digest = Some((user.into(), password.into()));
        self
    }

    /// The ACL of the nodes this provider creates (default [`ZooKeeperAcl::Open`]).
    pub fn acl(mut self, acl: ZooKeeperAcl) -> Self {
        self.acl = acl;
        self
    }
}

/// The URL parameters [`ZooKeeperOptions::from_url`] takes.
pub(crate) const URL_PARAMS: &[&str] = &[
    "root_path",
    "session_timeout",
    "connect_timeout",
    "retries",
    "retry_delay",
    "create_root",
    "acl",
];

impl ZooKeeperOptions {
    /// Options from `zookeeper://[user:password@]host:port[,host:port…][/chroot][?…]`: the
    /// user and password authenticate with the `digest` scheme, and the query holds this
    /// type's options by their builder names (see [`crate::connect`]).
    pub(crate) fn from_url(url: &str) -> Result<ZooKeeperOptions> {
        let bad = || {
            Error::config(
                "url",
                "is not a valid zookeeper://[user:password@]host:port[,host:port…][/chroot] URL",
            )
        };
        let rest = url.strip_prefix("zookeeper://").ok_or_else(bad)?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        if rest.contains('#') {
            return Err(bad());
        }
        let (auth, connect) = match rest.rsplit_once('@') {
            Some((auth, connect)) => (Some(auth), connect),
            None => (None, rest),
        };
        let host_part = connect.split('/').next().unwrap_or("");
        if host_part.is_empty() || host_part.split(',').any(|h| h.is_empty()) {
            return Err(bad());
        }
        let mut o = ZooKeeperOptions::new(connect);
        if let Some(auth) = auth {
            let (user, password) = auth.split_once(':').ok_or_else(bad)?;
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            o = o.digest(decode(user), decode(password));
        }
        let mut params = Params::parse("zookeeper", query)?;
        if let Some(v) = params.take("root_path") {
            o = o.root_path(v);
        }
        if let Some(v) = params.duration("session_timeout")? {
            o = o.session_timeout(v);
        }
        if let Some(v) = params.duration("connect_timeout")? {
            o = o.connect_timeout(v);
        }
        let retries = params.u32("retries")?.unwrap_or(o.retries);
        let delay = params.duration("retry_delay")?.unwrap_or(o.retry_delay);
        o = o.retries(retries, delay);
        if let Some(v) = params.bool("create_root")? {
            o = o.create_root(v);
        }
        if let Some(v) = params.take("acl") {
            o = o.acl(match v.as_str() {
                "open" => ZooKeeperAcl::Open,
                "creator-all" => ZooKeeperAcl::CreatorAll,
                "creator-all-world-read" => ZooKeeperAcl::CreatorAllWorldRead,
                _ => {
                    return Err(Error::config(
                        "acl",
                        format!("{v:?}: expected open, creator-all or creator-all-world-read"),
                    ));
                }
            });
        }
        params.finish(URL_PARAMS)?;
        Ok(o)
    }
}

impl std::fmt::Debug for ZooKeeperOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZooKeeperOptions")
            .field("connect", &self.connect)
            .field("root", &self.root)
            .field("session_timeout", &self.session_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retries", &self.retries)
            .field("create_root", &self.create_root)
            .field("digest_user", &self.digest.as_ref().map(|(u, _)| u))
            .field("acl", &self.acl)
            .finish()
    }
}

pub(crate) fn validate_root(root: &str) -> Result<()> {
    let ok = root.starts_with('/')
        && root.len() <= 200
        && root[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            "root_path",
            "must be an absolute path like /leader-election: segments of [A-Za-z0-9._-], \
             no trailing slash, at most 200 characters",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters() {
        let o = ZooKeeperOptions::from_url(
            "zookeeper://app:p%40ss@zk1:2181,zk2:2181/chroot?root_path=/le&session_timeout=6s\
             &retries=4&retry_delay=50ms&acl=creator-all&create_root=false",
        )
        .unwrap();
        assert_eq!(o.connect, "zk1:2181,zk2:2181/chroot");
        assert_eq!(o.digest, Some(("app".into(), "p@ss".into())));
        assert_eq!(o.root, "/le");
        assert_eq!(o.session_timeout, Duration::from_secs(6));
        assert_eq!((o.retries, o.retry_delay), (4, Duration::from_millis(50)));
        assert_eq!(o.acl, ZooKeeperAcl::CreatorAll);
        assert!(!o.create_root);
        assert!(!format!("{o:?}").contains("p@ss"));
        for bad in [
            "zookeeper://",
            "zookeeper://a,,b",
            "zk://h:2181",
            "zookeeper://u@h:1",
        ] {
            assert!(ZooKeeperOptions::from_url(bad).is_err(), "{bad}");
        }
        let e = ZooKeeperOptions::from_url("zookeeper://h:1?acl=all")
            .unwrap_err()
            .to_string();
        assert!(e.contains("acl"), "{e}");
    }
}
