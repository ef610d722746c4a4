//! ZooKeeper sessions for the provider: a manager task on the provider's runtime keeps one
//! `zookeeper-client` session (the client reconnects it within its timeout, with jittered
//! back-off, and reports expiry); when a session ends it builds a new one, with its own
//! bounded, jittered back-off, logging state changes only. Callers get the current session,
//! waiting for one being established no longer than their deadline, and run each call on their
//! own thread bounded by their deadline (`call`). The negotiated session timeout of every
//! session is recorded: it bounds the lease TTL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::FutureExt;
use parking_lot::{Condvar, Mutex};
use zookeeper_client::{Client, SessionState};

use super::BACKEND;
use super::runtime::{Signal, block_on_until};
use crate::error::{Error, Result};
use crate::providers::support::watchers::Watchers;

/// First and largest pause between two failed attempts to establish a session (jittered).
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One ZooKeeper session (one `zookeeper-client` client).
pub(super) struct Session {
    pub(super) client: Client,
    pub(super) generation: u64,
    /// Since when every call failed with a connection loss (none: the last call got through).
    losing_since: Mutex<Option<Instant>>,
    /// Every call lost for longer than twice the session timeout: replace it.
    retired: AtomicBool,
}

impl Session {
    /// Whether the session can still serve calls (possibly after the client reconnects it).
    pub(super) fn live(&self) -> bool {
        !self.client.state().is_terminated() && !self.retired.load(Ordering::SeqCst)
    }
}

/// What the provider and its session manager share.
pub(super) struct Sessions {
    pub(super) current: Mutex<Option<Arc<Session>>>,
    /// Notified when a session is established, or an attempt fails.
    established: Condvar,
    /// An attempt to establish a session is under way (callers may wait for it).
    connecting: AtomicBool,
    /// The negotiated timeout of the latest session, in milliseconds (0: none yet).
    negotiated_ms: AtomicU64,
    /// Why the latest attempt failed, when it is permanent (authentication refused).
    refused: Mutex<Option<&'static str>>,
    /// Why the latest attempt failed (the client's error text: no secrets in it).
    last_failure: Mutex<Option<String>>,
    generation: AtomicU64,
    pub(super) stop: Signal,
    watchers: Watchers,
}

/// How to build a client.
pub(super) struct ConnectConfig {
    pub(super) connect: String,
    pub(super) session_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) digest: Option<(String, String)>,
}

impl Sessions {
    pub(super) fn new(watchers: Watchers) -> Sessions {
        Sessions {
            current: Mutex::new(None),
            established: Condvar::new(),
            connecting: AtomicBool::new(true),
            negotiated_ms: AtomicU64::new(0),
            refused: Mutex::new(None),
            last_failure: Mutex::new(None),
            generation: AtomicU64::new(0),
            stop: Signal::default(),
            watchers,
        }
    }

    /// The negotiated timeout of the latest session, if one was ever established.
    pub(super) fn negotiated(&self) -> Option<Duration> {
        match self.negotiated_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Whether the session of `generation` is over (expired, closed or replaced): its
    /// ephemeral nodes are gone, or go when the server expires it, without our help.
    pub(super) fn over(&self, generation: u64) -> bool {
        match self.current.lock().as_ref() {
            Some(s) if s.generation == generation => !s.live(),
            _ => generation <= self.generation.load(Ordering::SeqCst),
        }
    }

    /// The current session; while one is being established, waits for it until `deadline`.
    pub(super) fn session(&self, deadline: Instant) -> Result<Arc<Session>> {
        self.wait_for_session(deadline, false)
    }

    /// The first session: waits for it until `deadline`, through failed attempts and back-off,
    /// and reports why the latest attempt failed.
    pub(super) fn first_session(&self, deadline: Instant) -> Result<Arc<Session>> {
        self.wait_for_session(deadline, true).map_err(|e| match e {
            Error::Timeout { .. } => match self.last_failure.lock().clone() {
                Some(why) => Error::Unavailable {
                    backend: BACKEND,
                    source: format!("no session within the connect timeout: {why}").into(),
                },
                None => e,
            },
            e => e,
        })
    }

    fn wait_for_session(&self, deadline: Instant, through_backoff: bool) -> Result<Arc<Session>> {
        let start = Instant::now();
        let mut current = self.current.lock();
        loop {
            if let Some(s) = current.as_ref().filter(|s| s.live()) {
                return Ok(s.clone());
            }
            if let Some(why) = *self.refused.lock() {
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation: "connect",
                    transient: false,
                    source: why.into(),
                });
            }
            if !through_backoff && !self.connecting.load(Ordering::SeqCst) {
                return Err(unavailable(
                    "no ZooKeeper session: reconnecting after back-off",
                ));
            }
            if self
                .established
                .wait_until(&mut current, deadline)
                .timed_out()
            {
                return Err(Error::Timeout {
                    backend: BACKEND,
                    operation: "connect",
                    timeout: deadline.saturating_duration_since(start),
                });
            }
        }
    }

    /// Runs one client call on this thread, giving up at `deadline`; records connection
    /// losses so that a session that loses every call for too long is replaced.
    pub(super) fn call<T, F>(
        &self,
        session: &Session,
        operation: &'static str,
        deadline: Instant,
        f: F,
    ) -> Result<std::result::Result<T, zookeeper_client::Error>>
    where
        F: std::future::Future<Output = std::result::Result<T, zookeeper_client::Error>>,
    {
        let start = Instant::now();
        let Some(result) = block_on_until(f, deadline) else {
            return Err(Error::Timeout {
                backend: BACKEND,
                operation,
                timeout: deadline.saturating_duration_since(start),
            });
        };
        match &result {
            Err(
                zookeeper_client::Error::ConnectionLoss | zookeeper_client::Error::ClientClosed,
            ) => {
                let mut since = session.losing_since.lock();
                let first = *since.get_or_insert_with(Instant::now);
                // A lease confirmed on this session before the first loss has ended by now
                // (its TTL is at most the session timeout): replacing it ends no lease.
                let limit = 2 * self.negotiated().unwrap_or(Duration::from_secs(60));
                if first.elapsed() > limit && !session.retired.swap(true, Ordering::SeqCst) {
                    log::warn!(
                        "zookeeper: session {} lost every call for {:?}; replacing it",
                        session.generation,
                        first.elapsed()
                    );
                    self.watchers.wake_all();
                }
            }
            _ => *session.losing_since.lock() = None,
        }
        Ok(result)
    }

    fn publish(&self, session: Option<Arc<Session>>, connecting: bool) {
        let mut current = self.current.lock();
        *current = session;
        self.connecting.store(connecting, Ordering::SeqCst);
        self.established.notify_all();
    }
}

/// The session manager: keeps a session, replaces it when it ends, until the provider stops.
pub(super) async fn manage(sessions: Arc<Sessions>, config: ConnectConfig) {
    let mut delay = BACKOFF_MIN;
    let mut failures = 0u32;
    while !sessions.stop.is_set() {
        sessions.connecting.store(true, Ordering::SeqCst);
        let mut connector = Client::connector()
            .with_session_timeout(config.session_timeout)
            .with_fail_eagerly();
        if let Some((user, password)) = &config.digest {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let timeout = async {
            Timer::after(config.connect_timeout).await;
            Err(zookeeper_client::Error::Timeout)
        };
        let attempt = connector
            .connect(&config.connect)
            .or(timeout)
            .or(stopped(&sessions.stop))
            .await;
        let client = match attempt {
            Ok(client) => client,
            Err(e) => {
                if sessions.stop.is_set() {
                    return;
                }
                failures += 1;
                *sessions.last_failure.lock() = Some(e.to_string());
                if e == zookeeper_client::Error::AuthFailed {
                    *sessions.refused.lock() = Some("the server refused the credentials");
                }
                if failures == 1 {
                    log::warn!(
                        "zookeeper: cannot establish a session ({e}); retrying with back-off up \
                         to {BACKOFF_MAX:?}"
                    );
                } else {
                    log::debug!("zookeeper: attempt {failures} to establish a session: {e}");
                }
                sessions.publish(None, false);
                let pause = jitter(delay);
                delay = (delay * 2).min(BACKOFF_MAX);
                let _ = async {
                    Timer::after(pause).await;
                    Ok(())
                }
                .or(stopped(&sessions.stop))
                .await;
                continue;
            }
        };
        *sessions.refused.lock() = None;
        delay = BACKOFF_MIN;
        let generation = sessions.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let negotiated = client.session_timeout();
        sessions
            .negotiated_ms
            .store(negotiated.as_millis().max(1) as u64, Ordering::SeqCst);
        if negotiated != config.session_timeout {
            log::warn!(
                "zookeeper: the server set the session timeout to {negotiated:?} (asked for {:?}): \
                 leases longer than that are refused, and failover takes that long",
                config.session_timeout
            );
        }
        if failures > 0 {
            log::info!(
                "zookeeper: session {generation} established after {failures} failed attempts \
                 (timeout {negotiated:?})"
            );
        } else {
            log::debug!("zookeeper: session {generation} established (timeout {negotiated:?})");
        }
        failures = 0;
        let mut states = client.state_watcher();
        let session = Arc::new(Session {
            client,
            generation,
            losing_since: Mutex::new(None),
            retired: AtomicBool::new(false),
        });
        sessions.publish(Some(session.clone()), true);
        // Watches are live again; releases may have been missed while we had none.
        sessions.watchers.subscribed();
        // Follow the session's state until it ends; log changes, not attempts.
        let end = loop {
            let next = async { Some(states.changed().await) }
                .or(async {
                    // Re-check now and then: a session replaced after losing every call
                    // reports no state change.
                    Timer::after(negotiated.max(Duration::from_secs(1))).await;
                    None
                })
                .or(async {
                    sessions.stop.wait().await;
                    Some(SessionState::Closed)
                })
                .await;
            if sessions.stop.is_set() {
                return;
            }
            match next {
                None if !session.live() => break "lost every call for too long",
                None => {}
                Some(SessionState::Disconnected) => {
                    log::warn!(
                        "zookeeper: session {generation} disconnected; the client reconnects it \
                         (with back-off) until the session times out"
                    );
                    // No push meanwhile: idle followers poll every retry interval.
                    sessions.watchers.unsubscribed();
                }
                Some(SessionState::SyncConnected | SessionState::ConnectedReadOnly) => {
                    log::info!("zookeeper: session {generation} reconnected");
                    sessions.watchers.subscribed();
                }
                Some(SessionState::Expired) => break "expired",
                Some(SessionState::AuthFailed) => break "failed authentication",
                Some(_) => break "closed",
            }
        };
        log::warn!("zookeeper: session {generation} {end}; establishing a new one");
        sessions.publish(None, true);
        sessions.watchers.unsubscribed();
        sessions.watchers.wake_all();
        drop(session);
    }
}

/// Completes (with `ClientClosed`) once the provider stops.
async fn stopped<T>(stop: &Signal) -> std::result::Result<T, zookeeper_client::Error> {
    stop.wait().await;
    Err(zookeeper_client::Error::ClientClosed)
}

/// `d` plus up to half of it again, at random.
fn jitter(d: Duration) -> Duration {
    let half = d.as_millis() as u64 / 2;
    d + Duration::from_millis(crate::util::random_u64() % (half + 1))
}

pub(super) fn unavailable(why: &'static str) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        source: why.into(),
    }
}

/// Maps a client error; session losses are `Unavailable`, the rest `Backend`.
pub(super) fn map_err(operation: &'static str, e: zookeeper_client::Error) -> Error {
    use zookeeper_client::Error as Zk;
    match e {
        Zk::ConnectionLoss
        | Zk::SessionExpired
        | Zk::SessionMoved
        | Zk::Timeout
        | Zk::ClientClosed
        | Zk::NoHosts => Error::Unavailable {
            backend: BACKEND,
            source: Box::new(e),
        },
        _ => Error::Backend {
            backend: BACKEND,
            operation,
            transient: matches!(e, Zk::Throttled | Zk::UnexpectedError(_)),
            source: Box::new(e),
        },
    }
}
