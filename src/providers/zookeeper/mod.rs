//! The ZooKeeper provider: ephemeral sequential nodes, the lowest leads, each follower watches
//! only its predecessor.

use std::collections::{HashMap, HashSet};
use std::net::{TcpStream, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use zookeeper::{Acl, CreateMode, WatchedEvent, ZkError, ZkState, ZooKeeper};

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};
use crate::providers::support::deadline;
use crate::providers::support::watchers::Watchers;
use crate::providers::zookeeper::options::{ZooKeeperAcl, ZooKeeperOptions, validate_root};
use crate::validate;

pub(crate) mod options;

const BACKEND: &str = "zookeeper";

const STATE_CONNECTING: u8 = 0;
const STATE_CONNECTED: u8 = 1;
const STATE_CLOSED: u8 = 2;

type Job = Box<dyn FnOnce() + Send>;

/// One ZooKeeper session: one client of the crate, with its own call thread.
struct Session {
    zk: Arc<ZooKeeper>,
    state: Arc<AtomicU8>,
    /// Bumped on every (re)connection: the crate does not resend credentials then.
    connects: Arc<AtomicU64>,
    /// `connects` when the credentials were last sent.
    authed: AtomicU64,
    generation: u64,
    jobs: Sender<Job>,
    /// A call overran its deadline (a frozen server, a silent network): replace the session.
    wedged: AtomicBool,
    /// Since when every call failed with a connection loss (none: the last call got through).
    losing_since: Mutex<Option<Instant>>,
}

impl Session {
    fn usable(&self) -> bool {
        !self.wedged.load(Ordering::SeqCst)
            && matches!(
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
    /// Handed out as a lease (until released): never handed out again.
    leased: bool,
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
/// most the session timeout (else [`Error::InvalidConfig`]), and the server's
/// `maxSessionTimeout` must not be below the session timeout (the server would silently
/// shorten it, and the `zookeeper` crate does not report the negotiated value). Acquiring and
/// renewing confirm the lease with a *write* (an empty `setData` on the group node), which
/// only the ensemble's leader can commit and only for a live session — a read could be
/// answered by a server cut off from the quorum — followed by an `exists` of our node at least
/// as fresh, checking its `czxid` and that its `ephemeralOwner` is the session that created it:
/// the check whose absence let Curator keep two leaders after a session expiry (CURATOR-696).
/// That is two round trips per renew (this client has no `multi`); the write goes to the group
/// node so that our successor's watch on our node fires only when the node goes.
///
/// The crate never recovers a lost session, so this provider then builds a new client, only
/// after a plain TCP connect shows a server answers (so no client spins while the ensemble is
/// down) and with back-off; the participant campaigns again with a new node and a new token,
/// and its old node is deleted. While the old client is inside its session timeout the crate's
/// own reconnect loop runs and costs CPU; that loop cannot be stopped from outside the crate.
/// Credentials are re-sent after every reconnection (the crate does not).
///
/// **Time bounds**: the crate has no request timeouts (a frozen server hangs a request), so
/// every operation runs on the session's call thread and the caller waits only until its
/// deadline; a call that overruns retires the session. The elector's own deadline makes a
/// leader step down on time regardless.
///
/// Creating a sequential node is safe to retry: node names carry a random prefix kept until
/// the outcome is known, so a node created by a try whose reply was lost is found and adopted.
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
    chroot: String,
    session: Mutex<Option<Arc<Session>>>,
    next_connect: Mutex<(Instant, Duration)>,
    generation: AtomicU64,
    nodes: Mutex<HashMap<(String, String), Node>>,
    /// Creates whose outcome is unknown: the name prefix to look for, by session generation.
    pending: Mutex<HashMap<(String, String), (String, u64)>>,
    /// Group paths known to exist, with the session generation that saw them.
    ensured: Mutex<HashMap<String, u64>>,
    /// Predecessor watches set and not yet fired, by (generation, path).
    watched: Arc<Mutex<HashSet<(u64, String)>>>,
    watchers: Watchers,
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
            validate::duration(field, d)?;
        }
        if options.retry_delay > Duration::from_secs(3600) {
            return Err(Error::config("retry_delay", "must be at most 1 hour"));
        }
        let (hosts_part, chroot) = match options.connect.find('/') {
            Some(i) => (&options.connect[..i], &options.connect[i..]),
            None => (options.connect.as_str(), ""),
        };
        if !chroot.is_empty() && chroot != "/" {
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
        let provider = ZooKeeperProvider {
            hosts,
            chroot: if chroot == "/" { "" } else { chroot }.to_owned(),
            session: Mutex::new(None),
            next_connect: Mutex::new((Instant::now(), Duration::from_millis(250))),
            generation: AtomicU64::new(0),
            nodes: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            ensured: Mutex::new(HashMap::new()),
            watched: Arc::new(Mutex::new(HashSet::new())),
            watchers: Watchers::default(),
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

    fn unavailable(&self, why: &'static str) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            source: why.into(),
        }
    }

    /// A usable session — the current one, or a new one if it ended — with credentials sent
    /// on its current connection.
    fn session(&self, deadline: Instant) -> Result<Arc<Session>> {
        let session = {
            let mut slot = self
                .session
                .try_lock_until(deadline)
                .ok_or_else(|| self.timeout("connect"))?;
            match slot.as_ref() {
                Some(s) if s.usable() => s.clone(),
                _ => {
                    // The old session is over: close its client off this thread (closing a
                    // disconnected client blocks until the crate gives up on it).
                    if let Some(old) = slot.take() {
                        log::info!("zookeeper: session {} ended; reconnecting", old.generation);
                        drop_detached(old);
                    }
                    let s = Arc::new(self.connect(deadline)?);
                    *slot = Some(s.clone());
                    self.watchers.wake_all(); // releases may have been missed
                    s
                }
            }
        };
        if let Some((user, password)) = &self.options.digest {
            let connects = session.connects.load(Ordering::SeqCst);
            if session.authed.load(Ordering::SeqCst) != connects {
                let auth = format!("{user}:{password}").into_bytes();
                self.run(&session, "authenticate", deadline, move |zk| {
                    zk.add_auth("digest", auth.clone())
                })?;
                session.authed.store(connects, Ordering::SeqCst);
            }
        }
        Ok(session)
    }

    fn timeout(&self, operation: &'static str) -> Error {
        Error::Timeout {
            backend: BACKEND,
            operation,
            timeout: self.options.session_timeout,
        }
    }

    /// Builds a new client, once a server accepts TCP connections.
    fn connect(&self, deadline: Instant) -> Result<Session> {
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
        // A client of the crate spins while no server answers, and panics if the first host
        // cannot be reached: probe, and list the hosts that answer first.
        let budget = deadline::clamp(self.options.connect_timeout, deadline);
        let per_host = (budget / self.hosts.len() as u32).max(Duration::from_millis(10));
        let (up, down): (Vec<&String>, Vec<&String>) = self.hosts.iter().partition(|h| {
            h.to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .is_some_and(|a| TcpStream::connect_timeout(&a, per_host).is_ok())
        });
        if up.is_empty() {
            return Err(fail(
                &mut next,
                self.unavailable("no server accepts connections"),
            ));
        }
        let hosts: Vec<&str> = up.iter().chain(&down).map(|h| h.as_str()).collect();
        let connect_string = format!("{}{}", hosts.join(","), self.chroot);
        let state = Arc::new(AtomicU8::new(STATE_CONNECTING));
        let connects = Arc::new(AtomicU64::new(0));
        let zk = catch_unwind(AssertUnwindSafe(|| {
            ZooKeeper::connect(
                &connect_string,
                self.options.session_timeout,
                |_: WatchedEvent| {},
            )
        }))
        .map_err(|_| {
            fail(
                &mut next,
                Error::Backend {
                    backend: BACKEND,
                    operation: "connect",
                    transient: true,
                    source: "the zookeeper client panicked while connecting".into(),
                },
            )
        })?
        .map_err(|e| fail(&mut next, map_err("connect", e)))?;
        let (listener_state, listener_connects) = (state.clone(), connects.clone());
        zk.add_listener(move |s: ZkState| {
            let v = match s {
                ZkState::Connected | ZkState::ConnectedReadOnly => {
                    listener_connects.fetch_add(1, Ordering::SeqCst);
                    STATE_CONNECTED
                }
                ZkState::Closed | ZkState::AuthFailed => STATE_CLOSED,
                _ => STATE_CONNECTING,
            };
            listener_state.store(v, Ordering::SeqCst);
        });
        let zk = Arc::new(zk);
        let (jobs, rx) = crossbeam_channel::unbounded::<Job>();
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        std::thread::Builder::new()
            .name(format!("le-zk-calls-{generation}"))
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .map_err(|e| Error::io("spawning the ZooKeeper call thread", e))?;
        let session = Session {
            zk,
            state,
            connects,
            authed: AtomicU64::new(0),
            generation,
            jobs,
            wedged: AtomicBool::new(false),
            losing_since: Mutex::new(None),
        };
        let wait_until = (Instant::now() + self.options.connect_timeout).min(deadline);
        while session.state.load(Ordering::SeqCst) != STATE_CONNECTED {
            if Instant::now() >= wait_until || session.state.load(Ordering::SeqCst) == STATE_CLOSED
            {
                drop_detached(Arc::new(session));
                return Err(fail(&mut next, self.timeout("connect")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        *next = (Instant::now(), Duration::from_millis(250));
        log::debug!("zookeeper: session {generation} established");
        Ok(session)
    }

    /// Runs `op` on the session's call thread, retrying after connection losses, and waits no
    /// longer than `deadline`; a call still running then retires the session.
    fn run<T: Send + 'static>(
        &self,
        session: &Session,
        operation: &'static str,
        deadline: Instant,
        op: impl Fn(&ZooKeeper) -> zookeeper::ZkResult<T> + Send + Sync + 'static,
    ) -> Result<T> {
        let mut tries = self.options.retries.saturating_add(1);
        let op = Arc::new(op);
        loop {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let (zk, op2) = (session.zk.clone(), op.clone());
            let job: Job = Box::new(move || {
                if Instant::now() < deadline {
                    let _ = tx.send(op2(&zk));
                }
            });
            session
                .jobs
                .send(job)
                .map_err(|_| self.unavailable("the call thread is gone"))?;
            let result = match rx.recv_deadline(deadline) {
                Ok(r) => r,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    log::warn!(
                        "zookeeper: {operation} overran its deadline; retiring session {}",
                        session.generation
                    );
                    session.wedged.store(true, Ordering::SeqCst);
                    return Err(self.timeout(operation));
                }
                // The job was skipped: its deadline had passed before it could start.
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(self.timeout(operation));
                }
            };
            match result {
                Err(ZkError::ConnectionLoss | ZkError::OperationTimeout)
                    if tries > 1 && Instant::now() + self.options.retry_delay < deadline =>
                {
                    tries -= 1;
                    std::thread::sleep(self.options.retry_delay);
                }
                Err(ZkError::NoAuth) => {
                    // Maybe credentials lost in a reconnection: send them again next time.
                    session.authed.store(u64::MAX, Ordering::SeqCst);
                    return Err(map_err(operation, ZkError::NoAuth));
                }
                Err(ZkError::ConnectionLoss) => {
                    // The crate's I/O thread can die (it has panicking paths) without telling
                    // its listeners: a session that loses every call for longer than its
                    // timeout is over whatever its state says.
                    let mut since = session.losing_since.lock();
                    let first = *since.get_or_insert_with(Instant::now);
                    if first.elapsed() > self.options.session_timeout {
                        log::warn!(
                            "zookeeper: session {} lost every call for {:?}; retiring it",
                            session.generation,
                            first.elapsed()
                        );
                        session.wedged.store(true, Ordering::SeqCst);
                    }
                    return Err(map_err(operation, ZkError::ConnectionLoss));
                }
                other => {
                    *session.losing_since.lock() = None;
                    return other.map_err(|e| map_err(operation, e));
                }
            }
        }
    }

    /// Creates `path` and its parents as persistent nodes, ignoring those that exist.
    fn ensure_path(&self, session: &Session, path: &str, deadline: Instant) -> Result<()> {
        let mut at = String::new();
        for seg in path[1..].split('/') {
            at.push('/');
            at.push_str(seg);
            let (p, acl) = (at.clone(), self.acl());
            self.run(session, "create path", deadline, move |zk| {
                match zk.create(&p, Vec::new(), acl.clone(), CreateMode::Persistent) {
                    Ok(_) | Err(ZkError::NodeExists) => Ok(()),
                    Err(e) => Err(e),
                }
            })?;
        }
        Ok(())
    }

    /// Deletes a node by path with the current session (whatever session created it).
    fn delete(&self, session: &Session, path: String, deadline: Instant) -> Result<()> {
        self.run(session, "delete node", deadline, move |zk| {
            match zk.delete(&path, None) {
                Ok(()) | Err(ZkError::NoNode) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    /// Our node for (group, participant) in this session, creating it (and the group path)
    /// if needed. A node of an earlier session is deleted first: it would queue ahead of us.
    fn own_node(
        &self,
        session: &Session,
        request: &AcquireRequest,
        deadline: Instant,
    ) -> Result<Node> {
        let key = (request.group.clone(), request.participant_id.clone());
        let existing = self.nodes.lock().get(&key).cloned();
        if let Some(n) = existing {
            if n.generation == session.generation {
                return Ok(n);
            }
            self.delete(session, n.path, deadline)?;
            self.nodes.lock().remove(&key);
        }
        let group_path = self.group_path(&request.group);
        let known = self.ensured.lock().get(&group_path) == Some(&session.generation);
        if self.options.create_root && !known {
            self.ensure_path(session, &group_path, deadline)?;
            self.ensured
                .lock()
                .insert(group_path.clone(), session.generation);
        }
        let record = LeaderInfo::new(
            &request.group,
            &request.participant_id,
            0,
            request.metadata.clone(),
        )
        .to_json()
        .into_bytes();
        // Keep the name prefix until the outcome is known, so a retry adopts the node a lost
        // reply created instead of queueing a second one.
        let guid = {
            let mut pending = self.pending.lock();
            match pending.get(&key) {
                Some((g, generation)) if *generation == session.generation => g.clone(),
                _ => {
                    let g = format!("{:016x}", crate::util::random_u64());
                    pending.insert(key.clone(), (g.clone(), session.generation));
                    g
                }
            }
        };
        let prefix = format!("{group_path}/{guid}-n_");
        let (acl, gp, data) = (self.acl(), group_path.clone(), record.clone());
        let path = self.run(session, "create node", deadline, move |zk| {
            let children = match zk.get_children(&gp, false) {
                Ok(c) => c,
                Err(ZkError::NoNode) => Vec::new(),
                Err(e) => return Err(e),
            };
            if let Some(c) = children.iter().find(|c| c.starts_with(&guid)) {
                return Ok(format!("{gp}/{c}"));
            }
            zk.create(
                &prefix,
                data.clone(),
                acl.clone(),
                CreateMode::EphemeralSequential,
            )
        });
        let path = match path {
            Err(Error::Backend { source, .. })
                if source.downcast_ref::<ZkError>() == Some(&ZkError::NoNode) =>
            {
                self.pending.lock().remove(&key);
                if self.options.create_root {
                    // The group node was deleted since we created it: recreate it next time.
                    self.ensured.lock().remove(&group_path);
                    return Err(Error::Backend {
                        backend: BACKEND,
                        operation: "create node",
                        transient: true,
                        source,
                    });
                }
                return Err(Error::config(
                    "root_path",
                    format!("{group_path} does not exist and create_root is off; create it first"),
                ));
            }
            other => other?,
        };
        let p = path.clone();
        let stat = self
            .run(session, "create node", deadline, move |zk| {
                zk.exists(&p, false)
            })?
            .ok_or_else(|| self.unavailable("our new election node vanished at once"))?;
        self.pending.lock().remove(&key);
        let node = Node {
            path,
            owner: stat.ephemeral_owner,
            czxid: stat.czxid,
            generation: session.generation,
            leased: false,
        };
        self.nodes.lock().insert(key, node.clone());
        Ok(node)
    }

    /// Confirms that `node` exists as created, owned by this session, and that the session is
    /// alive at the ensemble's leader.
    ///
    /// First a write (an empty `setData` on the group node): only the leader commits it, and
    /// only for a live session — a server cut off from the quorum could still answer reads.
    /// Then, on the same connection and so at least as fresh as that write, an `exists` of our
    /// node. (The write goes to the group node, not to ours: our successor watches our node,
    /// and a write to it would wake that follower at every renew.)
    fn confirm(
        &self,
        session: &Session,
        group: &str,
        node: &Node,
        deadline: Instant,
    ) -> Result<bool> {
        let (gp, p) = (self.group_path(group), node.path.clone());
        let stat = self.run(session, "confirm node", deadline, move |zk| {
            match zk.set_data(&gp, Vec::new(), None) {
                Ok(_) | Err(ZkError::NoNode) => {}
                Err(e) => return Err(e),
            }
            zk.exists(&p, false)
        })?;
        Ok(stat.is_some_and(|s| s.ephemeral_owner == node.owner && s.czxid == node.czxid))
    }

    /// Reads a node's record, with its czxid as the token; `None` if it is gone.
    fn read_info(
        &self,
        session: &Session,
        group: &str,
        path: String,
        deadline: Instant,
    ) -> Result<Option<LeaderInfo>> {
        let data = self.run(session, "read node", deadline, move |zk| {
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
    fn queue(&self, session: &Session, group: &str, deadline: Instant) -> Result<Vec<String>> {
        let gp = self.group_path(group);
        let mut children = self.run(session, "list nodes", deadline, move |zk| {
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

    /// Watches `path` (our predecessor) once per session: waking `group`'s electors when it
    /// changes. Returns whether it still exists.
    fn watch_predecessor(
        &self,
        session: &Session,
        group: &str,
        path: String,
        deadline: Instant,
    ) -> Result<bool> {
        let key = (session.generation, path.clone());
        if self.watched.lock().contains(&key) {
            return Ok(true);
        }
        let (watchers, watched, g, k) = (
            self.watchers.clone(),
            self.watched.clone(),
            group.to_owned(),
            key.clone(),
        );
        let exists = self.run(session, "watch predecessor", deadline, move |zk| {
            let (w, wd, g, k) = (watchers.clone(), watched.clone(), g.clone(), k.clone());
            zk.exists_w(&path, move |_: WatchedEvent| {
                wd.lock().remove(&k);
                w.wake(&g);
            })
        })?;
        if exists.is_some() {
            self.watched.lock().insert(key);
        }
        Ok(exists.is_some())
    }

    /// Deletes our node for (group, participant), whatever session created it, and forgets it.
    fn forget(&self, key: &(String, String), deadline: Instant) -> Result<()> {
        let node = self.nodes.lock().get(key).cloned();
        let pending = self.pending.lock().get(key).cloned();
        if node.is_none() && pending.is_none() {
            return Ok(());
        }
        let session = self.session(deadline)?;
        if let Some(n) = node {
            self.delete(&session, n.path, deadline)?;
        }
        if let Some((guid, generation)) = pending
            && generation == session.generation
        {
            for name in self.queue(&session, &key.0, deadline)? {
                if name.starts_with(&guid) {
                    let path = format!("{}/{name}", self.group_path(&key.0));
                    self.delete(&session, path, deadline)?;
                }
            }
        }
        self.nodes.lock().remove(key);
        self.pending.lock().remove(key);
        Ok(())
    }
}

/// The sequence number at the end of a node name (10 digits).
fn seq(name: &str) -> u64 {
    name.rsplit("-n_")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Closes a session's client on a short-lived thread: closing a disconnected client blocks
/// until the crate gives up on its session. Its call thread ends with its job channel.
fn drop_detached(session: Arc<Session>) {
    let _ = std::thread::Builder::new()
        .name("le-zk-close".into())
        .spawn(move || drop(session));
}

fn map_err(operation: &'static str, e: ZkError) -> Error {
    match e {
        ZkError::ConnectionLoss
        | ZkError::SessionExpired
        | ZkError::SessionMoved
        | ZkError::OperationTimeout => Error::Unavailable {
            backend: BACKEND,
            source: Box::new(e),
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
        if let Some(s) = self.session.lock().take() {
            drop_detached(s);
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

    /// Pushes changes (predecessor watches); a lease ends with its session, so its TTL may
    /// be at most the session timeout.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_pushes_changes(true)
            .with_lease_ends_with_client(true)
            .with_lease_ttl_range(Duration::from_millis(1), self.options.session_timeout)
    }

    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        validate::group(&request.group)?;
        self.capabilities().check_lease_ttl(BACKEND, request.ttl)?;
        let session = self.session(deadline)?;
        let key = (request.group.clone(), request.participant_id.clone());
        let mine = self.own_node(&session, request, deadline)?;
        let self_info = || {
            LeaderInfo::new(
                &request.group,
                &request.participant_id,
                u64::try_from(mine.czxid).unwrap_or(0),
                request.metadata.clone(),
            )
        };
        if mine.leased {
            // This participant id holds a lease already (a twin elector, or a release that
            // failed): never hand the same term out twice.
            return Ok(Acquisition::Held(Some(self_info())));
        }
        let queue = self.queue(&session, &request.group, deadline)?;
        let name = mine.path.rsplit('/').next().unwrap_or_default().to_owned();
        let Some(pos) = queue.iter().position(|c| *c == name) else {
            // Our node is gone (the session expired under us): start over next time.
            self.nodes.lock().remove(&key);
            return Ok(Acquisition::Held(None));
        };
        let group_path = self.group_path(&request.group);
        if pos == 0 {
            // Lowest: ours, if the leader confirms it belongs to this live session.
            if !self.confirm(&session, &request.group, &mine, deadline)? {
                self.nodes.lock().remove(&key);
                return Ok(Acquisition::Held(None));
            }
            let mut nodes = self.nodes.lock();
            match nodes.get_mut(&key) {
                Some(n) if n.path == mine.path && !n.leased => n.leased = true,
                _ => return Ok(Acquisition::Held(None)),
            }
            drop(nodes);
            return Ok(Acquisition::Acquired(Lease::new(
                self_info(),
                request.ttl,
                mine.path.clone(),
            )));
        }
        // Watch only our predecessor: when it goes, we are woken (no herd effect).
        let predecessor = format!("{group_path}/{}", queue[pos - 1]);
        if !self.watch_predecessor(&session, &request.group, predecessor, deadline)? {
            self.watchers.wake(&request.group);
        }
        let leader_path = format!("{group_path}/{}", queue[0]);
        let leader = self.read_info(&session, &request.group, leader_path, deadline)?;
        Ok(Acquisition::Held(leader))
    }

    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        let key = (lease.info.group.clone(), lease.info.participant_id.clone());
        let node = self.nodes.lock().get(&key).cloned();
        let Some(node) = node.filter(|n| {
            n.leased
                && n.path == lease.handle
                && u64::try_from(n.czxid).ok() == Some(lease.fencing_token())
        }) else {
            return Ok(Renewal::Lost(None));
        };
        let session = self.session(deadline)?;
        // A node of an earlier session is not ours to keep (release deletes it).
        if node.generation == session.generation
            && self.confirm(&session, &lease.info.group, &node, deadline)?
        {
            Ok(Renewal::Renewed)
        } else {
            Ok(Renewal::Lost(None))
        }
    }

    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        let key = (lease.info.group.clone(), lease.info.participant_id.clone());
        let ours = self.nodes.lock().get(&key).is_some_and(|n| {
            n.path == lease.handle && u64::try_from(n.czxid).ok() == Some(lease.fencing_token())
        });
        if ours {
            self.forget(&key, deadline)?;
        }
        Ok(())
    }

    fn withdraw(&self, group: &str, participant_id: &str, deadline: Instant) -> Result<()> {
        self.forget(&(group.to_owned(), participant_id.to_owned()), deadline)
    }

    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        validate::group(group)?;
        let session = self.session(deadline)?;
        for name in self.queue(&session, group, deadline)? {
            // The lowest node may vanish between listing and reading: try the next.
            let path = format!("{}/{name}", self.group_path(group));
            if let Some(info) = self.read_info(&session, group, path, deadline)? {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        Ok(Some(self.watchers.add(group, wakeup)))
    }
}
