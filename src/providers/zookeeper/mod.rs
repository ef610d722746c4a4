//! The ZooKeeper provider: ephemeral sequential nodes, the lowest leads, each follower watches
//! only its predecessor.

use std::collections::{HashMap, HashSet};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};
use crate::providers::support::watchers::Watchers;
use crate::providers::zookeeper::options::{ZooKeeperAcl, ZooKeeperOptions, validate_root};
use crate::validate;

pub(crate) mod options;
mod queue;
mod runtime;
mod session;

use runtime::Runtime;
use session::{ConnectConfig, Sessions};

const BACKEND: &str = "zookeeper";

/// Our election node in a group.
#[derive(Clone)]
struct Node {
    path: String,
    /// The node's data version when created (nobody writes it): the renew checks it.
    version: i32,
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
/// most the session timeout the server *negotiated* (it clamps the requested one to its
/// `minSessionTimeout..maxSessionTimeout`): a longer TTL is refused with
/// [`Error::InvalidConfig`] when the elector is built, and by any later call if a new session
/// negotiates less. A crashed leader's session — and so its lease — ends between the
/// negotiated timeout and that plus the server's `tickTime` after its last message (the server
/// expires sessions on tick boundaries); its successor leads about one round trip later.
///
/// Acquiring and renewing confirm the lease in **one round trip**: a multi-operation that
/// checks our node's version and writes the group node; only the ensemble's leader commits it,
/// only for a live session (a read could be answered by a server cut off from the quorum).
///
/// **Client**: `zookeeper-client`, an async client, on a runtime private to this provider (one
/// thread); every call runs on the caller's thread and returns by the caller's deadline even if
/// the server is frozen. The client reconnects a session with jittered exponential back-off and
/// detects a silent connection itself; when a session expires this provider establishes a new
/// one (bounded, jittered back-off: 0.2–7.5 s), the participant campaigns again with a new node
/// and a new token, and its old node is deleted. State changes are logged, not attempts. A
/// session is never closed on this provider's own suspicion while a lease confirmed on it may
/// be in force: only once it expired, or lost every call for twice its timeout.
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
    runtime: Runtime,
    sessions: Arc<Sessions>,
    nodes: Mutex<HashMap<(String, String), Node>>,
    /// Creates whose outcome is unknown: the name prefix to look for, by session generation.
    pending: Mutex<HashMap<(String, String), (String, u64)>>,
    /// Group paths known to exist, with the session generation that saw them.
    ensured: Mutex<HashMap<String, u64>>,
    /// Predecessor watches set and not yet fired, by (generation, path).
    watched: Arc<Mutex<HashSet<(u64, String)>>>,
    /// Our nodes, by (generation, path), whose predecessor was the head of the queue when
    /// we listed it and has since been deleted: the node is now the lowest (sequence numbers
    /// only grow), so its campaign confirms at once without listing the queue again.
    head_gone: Arc<Mutex<HashSet<(u64, String)>>>,
    watchers: Watchers,
    /// Where the groups live: the connection string's chroot, then the root path.
    base: String,
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
        if options.session_timeout > Duration::from_secs(24 * 3600) {
            return Err(Error::config("session_timeout", "must be at most 24 hours"));
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
        let chroot = if chroot == "/" { "" } else { chroot };
        // The chroot is not handed to the client but put in front of every path: then the
        // provider creates it like the rest of the root path (a client chroot that does not
        // exist fails every request with "no node").
        let base = format!("{chroot}{}", options.root);
        let watchers = Watchers::default();
        let sessions = Arc::new(Sessions::new(watchers.clone()));
        let runtime = Runtime::start()?;
        let config = ConnectConfig {
            connect: hosts.join(","),
            session_timeout: options.session_timeout,
            connect_timeout: options.connect_timeout,
            digest: options.digest.clone(),
        };
        runtime.spawn("session manager", session::manage(sessions.clone(), config));
        let provider = ZooKeeperProvider {
            runtime,
            sessions,
            nodes: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            ensured: Mutex::new(HashMap::new()),
            watched: Arc::new(Mutex::new(HashSet::new())),
            head_gone: Arc::new(Mutex::new(HashSet::new())),
            watchers,
            base,
            options,
        };
        // Dropping the provider on failure stops its runtime.
        provider
            .sessions
            .first_session(Instant::now() + provider.options.connect_timeout)?;
        Ok(provider)
    }

    /// The session timeout the server negotiated for the latest session (the requested one
    /// until a session was established): the longest lease TTL this provider grants, and how
    /// long a crashed leader keeps its lease (plus up to one server tick).
    pub fn session_timeout(&self) -> Duration {
        self.sessions
            .negotiated()
            .unwrap_or(self.options.session_timeout)
    }

    fn group_path(&self, group: &str) -> String {
        format!("{}/{group}", self.base)
    }
}

impl Drop for ZooKeeperProvider {
    fn drop(&mut self) {
        // The manager ends, the session is closed (its nodes go at once), the runtime thread
        // ends after a short grace; nothing here blocks.
        self.sessions.stop.set();
        self.sessions.current.lock().take();
        self.runtime.stop();
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
    /// be at most the session timeout, as requested and as the server negotiated it.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_pushes_changes(true)
            .with_pushes_expiry(true)
            .with_lease_ends_with_client(true)
            .with_lease_ttl_range(
                Duration::from_millis(1),
                self.session_timeout().min(self.options.session_timeout),
            )
    }

    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        validate::group(&request.group)?;
        self.capabilities().check_lease_ttl(BACKEND, request.ttl)?;
        let session = self.sessions.session(deadline)?;
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
        // Woken because the head before us was deleted: we are the head now (the confirm
        // below still checks that our node lives in this session).
        let head_gone = mine.generation == session.generation
            && self
                .head_gone
                .lock()
                .remove(&(session.generation, mine.path.clone()));
        let queue = if head_gone {
            Vec::new()
        } else {
            self.queue(&session, &request.group, deadline)?
        };
        let name = mine.path.rsplit('/').next().unwrap_or_default().to_owned();
        // Another node with our name prefix is an orphan of ours (a create whose lost reply
        // was retried against a server that had not seen it yet): it would queue ahead of us
        // and, reaching the head, stall the group. Nobody holds it (a participant's one node
        // is the one in `nodes`): delete it.
        let queue = if head_gone {
            queue
        } else {
            self.drop_orphans(&session, &request.group, &name, queue, deadline)?
        };
        let pos = if head_gone {
            0
        } else if let Some(pos) = queue.iter().position(|c| *c == name) {
            pos
        } else {
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
        let successor_of_head = (pos == 1).then(|| mine.path.clone());
        if !self.watch_predecessor(
            &session,
            &request.group,
            predecessor,
            successor_of_head,
            deadline,
        )? {
            self.watchers.wake(&request.group);
        }
        let leader_path = format!("{group_path}/{}", queue[0]);
        let leader = self.read_info(&session, &request.group, &leader_path, deadline)?;
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
        let session = self.sessions.session(deadline)?;
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
        let key = (group.to_owned(), participant_id.to_owned());
        // A node handed out as a lease is only a release's to delete: a twin elector with the
        // same id that withdraws must not end the other's term (its successor would lead
        // while the other still believes it does).
        if self.nodes.lock().get(&key).is_some_and(|n| n.leased) {
            return Ok(());
        }
        self.forget(&key, deadline)
    }

    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        validate::group(group)?;
        let session = self.sessions.session(deadline)?;
        for name in self.queue(&session, group, deadline)? {
            // The lowest node may vanish between listing and reading: try the next.
            let path = format!("{}/{name}", self.group_path(group));
            if let Some(info) = self.read_info(&session, group, &path, deadline)? {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        Ok(Some(self.watchers.add(group, wakeup)))
    }
}
