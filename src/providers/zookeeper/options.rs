//! Options of the ZooKeeper provider.

use std::time::Duration;

use crate::error::{Error, Result};

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
