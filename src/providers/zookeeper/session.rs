//! ZooKeeper session management for the provider: one client of the `zookeeper` crate per
//! session, built only once a plain TCP probe finds a server (the crate spins while none
//! answers), with credentials re-sent after every reconnection, every call run on the session's
//! own call thread so that the caller waits no longer than its deadline, and sessions retired
//! when they end, overrun a call or lose every call for longer than their timeout.

use std::net::{TcpStream, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use zookeeper::{WatchedEvent, ZkError, ZkState, ZooKeeper};

use super::{BACKEND, ZooKeeperProvider};
use crate::error::{Error, Result};
use crate::providers::support::deadline;

const STATE_CONNECTING: u8 = 0;
const STATE_CONNECTED: u8 = 1;
const STATE_CLOSED: u8 = 2;

type Job = Box<dyn FnOnce() + Send>;

/// One ZooKeeper session: one client of the crate, with its own call thread.
pub(super) struct Session {
    pub(super) zk: Arc<ZooKeeper>,
    pub(super) state: Arc<AtomicU8>,
    /// Bumped on every (re)connection: the crate does not resend credentials then.
    pub(super) connects: Arc<AtomicU64>,
    /// `connects` when the credentials were last sent.
    pub(super) authed: AtomicU64,
    pub(super) generation: u64,
    pub(super) jobs: Sender<Job>,
    /// A call overran its deadline (a frozen server, a silent network): replace the session.
    pub(super) wedged: AtomicBool,
    /// Since when every call failed with a connection loss (none: the last call got through).
    pub(super) losing_since: Mutex<Option<Instant>>,
    /// The latest `sent + ttl` of a lease confirmed on this session. Closing the session deletes
    /// its nodes at once, so until then it is never closed on this provider's own suspicion
    /// (a wedged call): an elector sharing the provider may lead on one of its nodes.
    pub(super) protected_until: Mutex<Option<Instant>>,
}

impl Session {
    /// Keeps the session open until at least `until` (a confirmed lease's `sent + ttl`).
    pub(super) fn protect(&self, until: Instant) {
        let mut p = self.protected_until.lock();
        *p = Some(p.map_or(until, |t| t.max(until)));
    }

    /// Whether a lease confirmed on this session may still be in force.
    pub(super) fn protected(&self) -> bool {
        self.protected_until
            .lock()
            .is_some_and(|t| Instant::now() < t)
    }

    /// Whether the crate itself reports the session over (closed or refused).
    pub(super) fn closed(&self) -> bool {
        self.state.load(Ordering::SeqCst) == STATE_CLOSED
    }

    pub(super) fn usable(&self) -> bool {
        !self.wedged.load(Ordering::SeqCst)
            && matches!(
                self.state.load(Ordering::SeqCst),
                STATE_CONNECTING | STATE_CONNECTED
            )
    }
}

impl ZooKeeperProvider {
    pub(super) fn unavailable(&self, why: &'static str) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            source: why.into(),
        }
    }

    /// A usable session — the current one, or a new one if it ended — with credentials sent
    /// on its current connection.
    pub(super) fn session(&self, deadline: Instant) -> Result<Arc<Session>> {
        let session = {
            let mut slot = self
                .session
                .try_lock_until(deadline)
                .ok_or_else(|| self.timeout("connect"))?;
            match slot.as_ref() {
                Some(s) if s.usable() => s.clone(),
                // Wedged by our own suspicion, but a lease of an elector sharing this provider
                // may rest on it: closing it would delete that leader's node while it still
                // believes it leads. Keep using it until no such lease can be in force.
                Some(s) if !s.closed() && s.protected() => s.clone(),
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

    pub(super) fn timeout(&self, operation: &'static str) -> Error {
        Error::Timeout {
            backend: BACKEND,
            operation,
            timeout: self.options.session_timeout,
        }
    }

    /// Builds a new client, once a server accepts TCP connections.
    pub(super) fn connect(&self, deadline: Instant) -> Result<Session> {
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
            protected_until: Mutex::new(None),
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
    pub(super) fn run<T: Send + 'static>(
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
                    if other.is_ok() {
                        // It answers: whatever made a call overrun has passed.
                        session.wedged.store(false, Ordering::SeqCst);
                    }
                    return other.map_err(|e| map_err(operation, e));
                }
            }
        }
    }
}

/// Closes a session's client on a short-lived thread: closing a disconnected client blocks
/// until the crate gives up on its session. Its call thread ends with its job channel.
pub(super) fn drop_detached(session: Arc<Session>) {
    let _ = std::thread::Builder::new()
        .name("le-zk-close".into())
        .spawn(move || drop(session));
}

pub(super) fn map_err(operation: &'static str, e: ZkError) -> Error {
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
