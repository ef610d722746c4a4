//! The ZooKeeper provider: ephemeral sequential nodes, the lowest leads, each follower watches
//! only its predecessor.

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use zookeeper::{Acl, CreateMode, WatchedEvent, ZkError, ZkState, ZooKeeper};

use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};
use crate::providers::watchers::Watchers;
use crate::validate;

const BACKEND: &str = "zookeeper";

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

/// Options of a [`ZooKeeperProvider`].
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
    connect: String,
    root: String,
    session_timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    retry_delay: Duration,
    create_root: bool,
    digest: Option<(String, String)>,
    acl: ZooKeeperAcl,
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

fn validate_root(root: &str) -> Result<()> {
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

const STATE_CONNECTING: u8 = 0;
const STATE_CONNECTED: u8 = 1;
const STATE_CLOSED: u8 = 2;
const STATE_AUTH_FAILED: u8 = 3;

/// One ZooKeeper session (one client of the crate).
struct Session {
    zk: Arc<ZooKeeper>,
    state: Arc<AtomicU8>,
    generation: u64,
}

impl Session {
    fn usable(&self) -> bool {
        matches!(
            self.state.load(Ordering::SeqCst),
            STATE_CONNECTING | STATE_CONNECTED
        )
    }
}

/// Our election node in a group.
#[derive(Clone)]
struct Node {
    path: String,
    owner: i64,
    czxid: i64,
    generation: u64,
}

/// Elects with ZooKeeper's leader recipe: each participant creates an ephemeral sequential
/// node under `<root>/<group>`; the lowest node leads; each follower watches only the node just
/// before its own (no herd effect), so when the leader releases, its successor campaigns
/// within about one round trip.
///
/// **Fencing token**: the leader node's `czxid`, the zxid of the transaction that created it.
/// Zxids rise across the whole ensemble's history, and a later leader's node was always created
/// later, so tokens strictly rise — even if the group node is deleted and recreated (which
/// resets sequence numbers). Only wiping the ensemble's data resets them.
///
/// **Sessions**: a lease is as long as the session holding the node, so `lease_ttl` must be at
/// most the session timeout (else [`Error::InvalidConfig`]). Renew is one `exists` round trip
/// that checks the node still exists with the same `czxid` *and* is owned by this session
/// (`ephemeralOwner`) — the check whose absence let Curator keep two leaders after a session
/// expiry (CURATOR-696). The `zookeeper` crate never recovers a lost session, so this provider
/// builds a new client then, after checking with a plain TCP connect that a server answers
/// (so no client spins while the ensemble is down) and with back-off; the participant then
/// campaigns with a new node and gets a new token. While the old client is still inside its
/// session timeout the crate's own reconnect loop runs and costs CPU; that loop cannot be
/// stopped early from outside the crate.
///
/// **Time bounds**: the crate has no request timeouts (a frozen server hangs a request), so
/// every operation runs on this provider's worker thread and the caller waits only until its
/// deadline; the elector's own deadline makes a leader step down on time regardless.
///
/// Creating a sequential node is retried safely after a connection loss: node names carry a
/// random prefix, so a node created by a try whose reply was lost is found and adopted.
///
/// ```no_run
/// use leader_election::{Elector, ZooKeeperOptions, ZooKeeperProvider};
/// use std::time::Duration;
///
/// let provider = ZooKeeperProvider::new(
///     ZooKeeperOptions::new("127.0.0.1:2181").session_timeout(Duration::from_secs(10)),
/// )?;
/// let elector = Elector::builder(provider)
///     .group("billing")
///     .lease_ttl(Duration::from_secs(10))
///     .heartbeat_interval(Duration::from_secs(3))
///     .start()?;
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct ZooKeeperProvider {
    options: ZooKeeperOptions,
    hosts: Vec<String>,
    session: Mutex<Option<Session>>,
    next_connect: Mutex<(Instant, Duration)>,
    generation: Mutex<u64>,
    nodes: Mutex<HashMap<(String, String), Node>>,
    /// Group paths known to exist, with the session generation that saw them.
    ensured: Mutex<HashMap<String, u64>>,
    jobs: Sender<Box<dyn FnOnce() + Send>>,
    watchers: Watchers,
    stop: Arc<AtomicBool>,
}

impl ZooKeeperProvider {
    /// Checks the options and connects, failing with a clear error if no session can be
    /// established within the connect timeout.
    pub fn new(options: ZooKeeperOptions) -> Result<Self> {
        validate_root(&options.root)?;
        for (field, d) in [
            ("session_timeout", options.session_timeout),
            ("connect_timeout", options.connect_timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(Error::config(field, "must be at least 1 ms"));
            }
        }
        let hosts_part = options
            .connect
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if let Some(chroot) = options.connect.find('/').map(|i| &options.connect[i..])
            && chroot != "/"
        {
            validate_root(chroot).map_err(|_| {
                Error::config("connect", "the chroot suffix must be a path like /apps/x")
            })?;
        }
        let hosts: Vec<String> = hosts_part
            .split(',')
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect();
        if hosts.is_empty() || hosts.iter().any(|h| h.to_socket_addrs().is_err()) {
            return Err(Error::config(
                "connect",
                "must list host:port pairs separated by commas, optionally followed by a \
                 chroot path (e.g. zk1:2181,zk2:2181/apps)",
            ));
        }
        if options.digest.is_none() && options.acl != ZooKeeperAcl::Open {
            return Err(Error::config(
                "acl",
                "creator ACLs need an authenticated identity: set .digest(user, password)",
            ));
        }
        let (jobs, rx) = crossbeam_channel::unbounded::<Box<dyn FnOnce() + Send>>();
        std::thread::Builder::new()
            .name("le-zk-calls".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(|e| Error::io("spawning the ZooKeeper call thread", e))?;
        let provider = ZooKeeperProvider {
            hosts,
            session: Mutex::new(None),
            next_connect: Mutex::new((Instant::now(), Duration::from_millis(250))),
            generation: Mutex::new(0),
            nodes: Mutex::new(HashMap::new()),
            ensured: Mutex::new(HashMap::new()),
            jobs,
            watchers: Watchers::default(),
            stop: Arc::new(AtomicBool::new(false)),
            options,
        };
        provider.session(Instant::now() + provider.options.connect_timeout)?;
        Ok(provider)
    }

    fn acl(&self) -> Vec<Acl> {
        match self.options.acl {
            ZooKeeperAcl::Open => Acl::open_unsafe().clone(),
            ZooKeeperAcl::CreatorAll => Acl::creator_all().clone(),
            ZooKeeperAcl::CreatorAllWorldRead => {
                let mut acl = Acl::creator_all().clone();
                acl.extend(Acl::read_unsafe().iter().cloned());
                acl
            }
        }
    }

    fn group_path(&self, group: &str) -> String {
        format!("{}/{group}", self.options.root)
    }

    /// The current session, or a new one if there is none or it ended.
    fn session(&self, deadline: Instant) -> Result<(Arc<ZooKeeper>, u64)> {
        let mut slot = self.session.lock();
        if let Some(s) = slot.as_ref() {
            if s.usable() {
                return Ok((s.zk.clone(), s.generation));
            }
            if s.state.load(Ordering::SeqCst) == STATE_AUTH_FAILED {
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation: "authenticate",
                    transient: false,
                    source: Box::new(ZkError::AuthFailed),
                });
            }
        }
        // The old session is over: close its client off this thread (closing can block).
        if let Some(old) = slot.take() {
            log::info!("zookeeper: session ended; building a new client");
            drop_detached(old.zk);
        }
        let mut next = self.next_connect.lock();
        let now = Instant::now();
        if now < next.0 {
            return Err(self.unavailable("waiting before reconnecting"));
        }
        let fail = |next: &mut (Instant, Duration), e: Error| {
            next.0 = Instant::now() + next.1;
            next.1 = (next.1 * 2).min(Duration::from_secs(5));
            e
        };
        // A client of the crate spins while no server answers: probe first, cheaply.
        let probe = self
            .options
            .connect_timeout
            .min(deadline.saturating_duration_since(now))
            .max(Duration::from_millis(10));
        let reachable = self.hosts.iter().any(|h| {
            h.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .is_some_and(|a| TcpStream::connect_timeout(&a, probe).is_ok())
        });
        if !reachable {
            return Err(fail(
                &mut next,
                self.unavailable("no server accepts connections"),
            ));
        }
        let state = Arc::new(AtomicU8::new(STATE_CONNECTING));
        let zk = ZooKeeper::connect(
            &self.options.connect,
            self.options.session_timeout,
            |_: WatchedEvent| {},
        )
        .map_err(|e| fail(&mut next, map_err("connect", e)))?;
        let listener_state = state.clone();
        zk.add_listener(move |s: ZkState| {
            let v = match s {
                ZkState::Connected | ZkState::ConnectedReadOnly => STATE_CONNECTED,
                ZkState::Closed => STATE_CLOSED,
                ZkState::AuthFailed => STATE_AUTH_FAILED,
                _ => STATE_CONNECTING,
            };
            listener_state.store(v, Ordering::SeqCst);
        });
        let zk = Arc::new(zk);
        let wait_until = (Instant::now() + self.options.connect_timeout).min(deadline);
        while state.load(Ordering::SeqCst) != STATE_CONNECTED {
            if Instant::now() >= wait_until || state.load(Ordering::SeqCst) >= STATE_CLOSED {
                drop_detached(zk);
                return Err(fail(
                    &mut next,
                    Error::Timeout {
                        backend: BACKEND,
                        operation: "connect",
                        timeout: self.options.connect_timeout,
                    },
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        *next = (Instant::now(), Duration::from_millis(250));
        drop(next);
        let generation = {
            let mut g = self.generation.lock();
            *g += 1;
            *g
        };
        *slot = Some(Session {
            zk: zk.clone(),
            state,
            generation,
        });
        drop(slot);
        if let Some((user, password)) = &self.options.digest {
            let auth = format!("{user}:{password}").into_bytes();
            self.run(&zk, "authenticate", deadline, move |zk| {
                zk.add_auth("digest", auth.clone())
            })?;
        }
        // Nodes of earlier sessions are gone with them.
        self.nodes.lock().retain(|_, n| n.generation == generation);
        // A new session may have missed releases.
        self.watchers.wake_all();
        log::debug!("zookeeper: session {generation} established");
        Ok((zk, generation))
    }

    fn unavailable(&self, why: &'static str) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            source: why.into(),
        }
    }

    /// Runs `op` on the call thread, retrying after connection losses, and waits no longer
    /// than `deadline` for it.
    fn run<T: Send + 'static>(
        &self,
        zk: &Arc<ZooKeeper>,
        operation: &'static str,
        deadline: Instant,
        op: impl Fn(&ZooKeeper) -> zookeeper::ZkResult<T> + Send + Sync + 'static,
    ) -> Result<T> {
        let mut tries = self.options.retries + 1;
        let op = Arc::new(op);
        loop {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let (zk2, op2) = (zk.clone(), op.clone());
            let job = Box::new(move || {
                if Instant::now() < deadline {
                    let _ = tx.send(op2(&zk2));
                }
            });
            self.jobs
                .send(job)
                .map_err(|_| self.unavailable("the call thread is gone"))?;
            let result = match rx.recv_deadline(deadline) {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::Timeout {
                        backend: BACKEND,
                        operation,
                        timeout: self.options.session_timeout,
                    });
                }
            };
            match result {
                Err(ZkError::ConnectionLoss | ZkError::OperationTimeout)
                    if tries > 1 && Instant::now() + self.options.retry_delay < deadline =>
                {
                    tries -= 1;
                    std::thread::sleep(self.options.retry_delay);
                }
                other => return other.map_err(|e| map_err(operation, e)),
            }
        }
    }

    /// Creates `path` and its parents as persistent nodes, ignoring those that exist.
    fn ensure_path(&self, zk: &Arc<ZooKeeper>, path: &str, deadline: Instant) -> Result<()> {
        let mut at = String::new();
        for seg in path[1..].split('/') {
            at.push('/');
            at.push_str(seg);
            let p = at.clone();
            let acl = self.acl();
            let r = self.run(zk, "create path", deadline, move |zk| {
                match zk.create(&p, Vec::new(), acl.clone(), CreateMode::Persistent) {
                    Ok(_) | Err(ZkError::NodeExists) => Ok(()),
                    Err(e) => Err(e),
                }
            });
            r?;
        }
        Ok(())
    }

    /// Our node for (group, participant), creating it (and the group path) if needed.
    fn own_node(
        &self,
        zk: &Arc<ZooKeeper>,
        generation: u64,
        request: &AcquireRequest,
        deadline: Instant,
    ) -> Result<Node> {
        let key = (request.group.clone(), request.participant_id.clone());
        if let Some(n) = self.nodes.lock().get(&key)
            && n.generation == generation
        {
            return Ok(n.clone());
        }
        let group_path = self.group_path(&request.group);
        let known = self.ensured.lock().get(&group_path) == Some(&generation);
        if self.options.create_root && !known {
            self.ensure_path(zk, &group_path, deadline)?;
            self.ensured.lock().insert(group_path.clone(), generation);
        }
        let record = LeaderInfo::new(
            &request.group,
            &request.participant_id,
            0,
            request.metadata.clone(),
        )
        .to_json()
        .into_bytes();
        let guid = format!("{:016x}", crate::util::random_u64());
        let prefix = format!("{group_path}/{guid}-n_");
        let acl = self.acl();
        let (gp, g2) = (group_path.clone(), guid.clone());
        // Safe to retry: after a lost reply, adopt the node this guid already created.
        let path = self.run(zk, "create node", deadline, move |zk| {
            if let Ok(children) = zk.get_children(&gp, false)
                && let Some(c) = children.iter().find(|c| c.starts_with(&g2))
            {
                return Ok(format!("{gp}/{c}"));
            }
            zk.create(
                &prefix,
                record.clone(),
                acl.clone(),
                CreateMode::EphemeralSequential,
            )
        });
        let path = match path {
            Err(Error::Backend { source, .. })
                if source.downcast_ref::<ZkError>() == Some(&ZkError::NoNode)
                    && self.options.create_root =>
            {
                // The group node was deleted since we created it: recreate it next time.
                self.ensured.lock().remove(&group_path);
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation: "create node",
                    transient: true,
                    source,
                });
            }
            Err(Error::Backend { source, .. })
                if source.downcast_ref::<ZkError>() == Some(&ZkError::NoNode) =>
            {
                return Err(Error::config(
                    "root_path",
                    format!("{group_path} does not exist and create_root is off; create it first"),
                ));
            }
            other => other?,
        };
        let p = path.clone();
        let stat = self
            .run(zk, "create node", deadline, move |zk| zk.exists(&p, false))?
            .ok_or_else(|| self.unavailable("our new election node vanished at once"))?;
        let node = Node {
            path,
            owner: stat.ephemeral_owner,
            czxid: stat.czxid,
            generation,
        };
        self.nodes.lock().insert(key, node.clone());
        Ok(node)
    }

    /// Reads a node's record, with its czxid as the token; `None` if it is gone.
    fn read_info(
        &self,
        zk: &Arc<ZooKeeper>,
        group: &str,
        path: String,
        deadline: Instant,
    ) -> Result<Option<LeaderInfo>> {
        let data = self.run(zk, "read node", deadline, move |zk| {
            match zk.get_data(&path, false) {
                Ok(d) => Ok(Some(d)),
                Err(ZkError::NoNode) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        let Some((bytes, stat)) = data else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|_| Error::Corrupt {
            backend: BACKEND,
            group: group.to_owned(),
            detail: "node data is not UTF-8".into(),
        })?;
        let mut info = LeaderInfo::from_json(BACKEND, group, &text)?;
        info.fencing_token = u64::try_from(stat.czxid).unwrap_or(0);
        Ok(Some(info))
    }

    /// The group's election nodes, sorted by sequence number.
    fn queue(&self, zk: &Arc<ZooKeeper>, group: &str, deadline: Instant) -> Result<Vec<String>> {
        let gp = self.group_path(group);
        let mut children = self.run(zk, "list nodes", deadline, move |zk| {
            match zk.get_children(&gp, false) {
                Ok(c) => Ok(c),
                Err(ZkError::NoNode) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        })?;
        children.retain(|c| c.contains("-n_"));
        children.sort_by_key(|c| seq(c));
        Ok(children)
    }
}

/// The sequence number at the end of a node name (10 digits).
fn seq(name: &str) -> u64 {
    name.rsplit("-n_")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Drops (and so closes) a client on a short-lived thread: closing a disconnected client
/// blocks until the crate gives up on its session.
fn drop_detached(zk: Arc<ZooKeeper>) {
    let _ = std::thread::Builder::new()
        .name("le-zk-close".into())
        .spawn(move || drop(zk));
}

fn map_err(operation: &'static str, e: ZkError) -> Error {
    match e {
        ZkError::ConnectionLoss | ZkError::SessionExpired | ZkError::SessionMoved => {
            Error::Unavailable {
                backend: BACKEND,
                source: Box::new(e),
            }
        }
        ZkError::OperationTimeout => Error::Timeout {
            backend: BACKEND,
            operation,
            timeout: Duration::ZERO,
        },
        _ => Error::Backend {
            backend: BACKEND,
            operation,
            transient: matches!(e, ZkError::SystemError),
            source: Box::new(e),
        },
    }
}

impl Drop for ZooKeeperProvider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self.session.lock().take() {
            drop_detached(s.zk);
        }
    }
}

impl std::fmt::Debug for ZooKeeperProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZooKeeperProvider")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Provider for ZooKeeperProvider {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        validate::group(&request.group)?;
        if request.ttl > self.options.session_timeout {
            return Err(Error::config(
                "lease_ttl",
                format!(
                    "must be at most the ZooKeeper session timeout ({:?}), got {:?}: a lease \
                     cannot outlive the session holding it",
                    self.options.session_timeout, request.ttl
                ),
            ));
        }
        let (zk, generation) = self.session(deadline)?;
        let key = (request.group.clone(), request.participant_id.clone());
        let mine = self.own_node(&zk, generation, request, deadline)?;
        let queue = self.queue(&zk, &request.group, deadline)?;
        let name = mine.path.rsplit('/').next().unwrap_or_default().to_owned();
        let Some(pos) = queue.iter().position(|c| *c == name) else {
            // Our node is gone (the session expired under us): start over next time.
            self.nodes.lock().remove(&key);
            return Ok(Acquisition::Held(None));
        };
        let group_path = self.group_path(&request.group);
        if pos == 0 {
            // Lowest: ours, if it still belongs to this session (CURATOR-696).
            let p = mine.path.clone();
            let stat = self.run(&zk, "check node", deadline, move |zk| zk.exists(&p, false))?;
            match stat {
                Some(s) if s.ephemeral_owner == mine.owner && s.czxid == mine.czxid => {
                    let mut info = LeaderInfo::new(
                        &request.group,
                        &request.participant_id,
                        u64::try_from(mine.czxid).unwrap_or(0),
                        request.metadata.clone(),
                    );
                    info.fencing_token = u64::try_from(mine.czxid).unwrap_or(0);
                    return Ok(Acquisition::Acquired(Lease::new(
                        info,
                        request.ttl,
                        mine.path,
                    )));
                }
                _ => {
                    self.nodes.lock().remove(&key);
                    return Ok(Acquisition::Held(None));
                }
            }
        }
        // Watch only our predecessor: when it goes, we are woken (no herd effect).
        let predecessor = format!("{group_path}/{}", queue[pos - 1]);
        let watchers = self.watchers.clone();
        let group = request.group.clone();
        let exists = self.run(&zk, "watch predecessor", deadline, move |zk| {
            let (w, g) = (watchers.clone(), group.clone());
            zk.exists_w(&predecessor, move |_: WatchedEvent| w.wake(&g))
        })?;
        if exists.is_none() {
            self.watchers.wake(&request.group);
        }
        let leader_path = format!("{group_path}/{}", queue[0]);
        let leader = self.read_info(&zk, &request.group, leader_path, deadline)?;
        Ok(Acquisition::Held(leader))
    }

    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        let key = (lease.info.group.clone(), lease.info.participant_id.clone());
        let node = self.nodes.lock().get(&key).cloned();
        let Some(node) = node.filter(|n| {
            n.path == lease.handle && u64::try_from(n.czxid).ok() == Some(lease.fencing_token())
        }) else {
            return Ok(Renewal::Lost(None));
        };
        let (zk, generation) = self.session(deadline)?;
        if generation != node.generation {
            self.nodes.lock().remove(&key);
            return Ok(Renewal::Lost(None));
        }
        let p = node.path.clone();
        let stat = self.run(&zk, "renew", deadline, move |zk| zk.exists(&p, false))?;
        match stat {
            Some(s) if s.ephemeral_owner == node.owner && s.czxid == node.czxid => {
                Ok(Renewal::Renewed)
            }
            _ => {
                self.nodes.lock().remove(&key);
                Ok(Renewal::Lost(None))
            }
        }
    }

    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        let key = (lease.info.group.clone(), lease.info.participant_id.clone());
        let node = self.nodes.lock().get(&key).cloned();
        match node {
            Some(n)
                if n.path == lease.handle
                    && u64::try_from(n.czxid).ok() == Some(lease.fencing_token()) =>
            {
                self.delete_node(&key, n, deadline)
            }
            _ => Ok(()),
        }
    }

    fn withdraw(&self, group: &str, participant_id: &str, deadline: Instant) -> Result<()> {
        let key = (group.to_owned(), participant_id.to_owned());
        let node = self.nodes.lock().get(&key).cloned();
        match node {
            Some(n) => self.delete_node(&key, n, deadline),
            None => Ok(()),
        }
    }

    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        validate::group(group)?;
        let (zk, _) = self.session(deadline)?;
        for name in self.queue(&zk, group, deadline)? {
            // The lowest node may vanish between listing and reading: try the next.
            let path = format!("{}/{name}", self.group_path(group));
            if let Some(info) = self.read_info(&zk, group, path, deadline)? {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        Ok(Some(self.watchers.add(group, wakeup)))
    }
}

impl ZooKeeperProvider {
    fn delete_node(&self, key: &(String, String), node: Node, deadline: Instant) -> Result<()> {
        let (zk, generation) = self.session(deadline)?;
        if generation == node.generation {
            let p = node.path.clone();
            self.run(&zk, "delete node", deadline, move |zk| {
                match zk.delete(&p, None) {
                    Ok(()) | Err(ZkError::NoNode) => Ok(()),
                    Err(e) => Err(e),
                }
            })?;
        }
        self.nodes.lock().remove(key);
        Ok(())
    }
}
