//! The [`Elector`] handle: start, leadership queries, subscriptions, resign and shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::builder::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEASE_TTL, DEFAULT_RETRY_INTERVAL,
    DEFAULT_SHUTDOWN_TIMEOUT, ElectorBuilder,
};
use crate::change::EventKinds;
use crate::changes::Changes;
use crate::config::{Config, Options};
use crate::error::{Error, Result};
use crate::heartbeat::HeartbeatHandle;
use crate::lease::LeaderInfo;
use crate::provider::Provider;
use crate::shared::Shared;
use crate::status::{Role, Status, Term};

/// One participant in one election group.
///
/// Starting it spawns a heartbeat thread that campaigns every retry interval, renews every
/// heartbeat interval while leading and reports each change to subscribers; the provider's
/// blocking calls run on the process's small I/O pool, so that a hung backend can never delay
/// a step-down. Near a process limit (threads, memory mappings, address space) starting is
/// refused with [`Error::ResourceLimit`] and the electors already running go on.
/// Dropping the elector shuts it down (releasing leadership) on a best-effort basis, waiting
/// at most the shutdown timeout (default 5 s) for the release; call
/// [`Elector::shutdown`] to see errors.
///
/// ```
/// use leader_election::{ChangesExt, Elector, MemoryProvider};
///
/// let provider = MemoryProvider::new();
/// let a = Elector::builder(provider.clone()).group("doc-elector").participant_id("a").start()?;
/// a.subscribe().take_until_leader().for_each(drop);
/// assert!(a.is_leader());
/// let b = Elector::builder(provider).group("doc-elector").participant_id("b").start()?;
/// assert!(!b.is_leader());
/// a.shutdown()?;
/// b.subscribe().take_until_leader().for_each(drop); // b takes over at once
/// assert!(b.fencing_token().unwrap() > 1);
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct Elector {
    config: Arc<Config>,
    provider: Mutex<Option<Arc<dyn Provider>>>,
    shared: Arc<Shared>,
    running: Mutex<Option<HeartbeatHandle>>,
}

impl Elector {
    /// A stopped elector with a checked `config` (see [`ElectorBuilder::build`]).
    pub(crate) fn new(config: Config, provider: impl Provider) -> Elector {
        Elector {
            config: Arc::new(config),
            provider: Mutex::new(Some(Arc::new(provider))),
            shared: Arc::new(Shared::default()),
            running: Mutex::new(None),
        }
    }

    /// A builder for an elector using `provider`.
    pub fn builder<P: Provider>(provider: P) -> ElectorBuilder<P> {
        ElectorBuilder {
            provider,
            options: Options {
                group: None,
                participant_id: None,
                lease_ttl: DEFAULT_LEASE_TTL,
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
                retry_interval: DEFAULT_RETRY_INTERVAL,
                safety_margin: None,
                shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
                idle_poll_interval: None,
                metadata: BTreeMap::new(),
            },
        }
    }

    /// Starts the heartbeat thread of an elector made with [`ElectorBuilder::build`].
    ///
    /// Fails with [`Error::AlreadyStarted`] if it runs, and with [`Error::ShutDown`] if it
    /// was shut down (an elector is started once).
    ///
    /// ```
    /// use leader_election::{Elector, Error, MemoryProvider};
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-start").build()?;
    /// assert!(!elector.is_leader());
    /// elector.start()?;
    /// assert!(matches!(elector.start(), Err(Error::AlreadyStarted)));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn start(&self) -> Result<()> {
        let mut running = self.running.lock();
        if running.is_some() {
            return Err(Error::AlreadyStarted);
        }
        let mut slot = self.provider.lock();
        let provider = slot.clone().ok_or(Error::ShutDown)?;
        // Refused near a process limit; the provider stays, so a later start may succeed.
        crate::limits::check_room()?;
        let heartbeat = HeartbeatHandle::spawn(self.config.clone(), provider, self.shared.clone())?;
        *slot = None;
        *running = Some(heartbeat);
        Ok(())
    }

    /// The election group.
    pub fn group(&self) -> &str {
        &self.config.group
    }

    /// This participant's id.
    pub fn participant_id(&self) -> &str {
        &self.config.participant_id
    }

    /// Whether this participant leads now. Checks the local deadline itself, so it turns
    /// `false` on time even while the backend hangs.
    ///
    /// ```
    /// use leader_election::{ChangesExt, Elector, MemoryProvider};
    /// use std::time::Instant;
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-is-leader").start()?;
    /// elector.subscribe().take_until_leader().for_each(drop);
    /// assert!(elector.is_leader());
    /// assert!(elector.fencing_token().is_some());
    /// assert!(elector.leader_deadline().unwrap() > Instant::now());
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn is_leader(&self) -> bool {
        self.shared.term().is_some()
    }

    /// The leader: this participant's record while it leads, otherwise the leader it last
    /// observed (which may be stale by up to a retry interval), or `None`.
    ///
    /// ```
    /// use leader_election::{ChangesExt, Elector, MemoryProvider};
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-leader").participant_id("me").start()?;
    /// elector.subscribe().take_until_leader().for_each(drop);
    /// assert_eq!(elector.leader().unwrap().participant_id, "me");
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn leader(&self) -> Option<LeaderInfo> {
        self.shared.leader()
    }

    /// The current term while this participant leads — its fencing token, deadline and leader
    /// record, read together (two separate reads, [`Elector::fencing_token`] then
    /// [`Elector::leader_deadline`], could straddle the end of one term and the start of the
    /// next). Leader work should take one `Term` per step, tag its writes with
    /// `term.fencing_token`, and stop before `term.deadline`.
    ///
    /// ```
    /// use leader_election::{ChangesExt, Elector, MemoryProvider};
    /// use std::time::Instant;
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-term").start()?;
    /// elector.subscribe().take_until_leader().for_each(drop);
    /// if let Some(term) = elector.term() {
    ///     assert!(term.deadline > Instant::now());
    ///     assert_eq!(term.leader.fencing_token, term.fencing_token);
    /// }
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn term(&self) -> Option<Term> {
        self.shared.term().map(|(leader, deadline)| Term {
            fencing_token: leader.fencing_token,
            deadline: self.shared.clock().instant_at(deadline),
            leader,
        })
    }

    /// A snapshot of how this elector is doing: role and term, time since the backend last
    /// answered a campaign or renew, consecutive failures and the last error, whether pushed
    /// changes arrive, and the backend call in flight with how long it has run (a call running
    /// longer than the heartbeat interval is also logged as a warning).
    ///
    /// ```
    /// use leader_election::{ChangesExt, Elector, MemoryProvider, Role};
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-status").build()?;
    /// assert_eq!(elector.status().role, Role::NotStarted);
    /// elector.start()?;
    /// elector.subscribe().take_until_leader().for_each(drop);
    /// let status = elector.status();
    /// assert_eq!(status.role, Role::Leader);
    /// assert_eq!(status.consecutive_failures, 0);
    /// assert!(status.since_last_success.is_some());
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn status(&self) -> Status {
        let started = self.running.lock().is_some();
        let never_started = !started && self.provider.lock().is_some();
        let term = self.term();
        let now = self.shared.clock().now();
        let health = self.shared.health();
        let role = if never_started {
            Role::NotStarted
        } else if health.stopped || !started {
            Role::Stopped
        } else if term.is_some() {
            Role::Leader
        } else {
            Role::Follower
        };
        Status {
            role,
            term,
            since_last_success: health
                .last_success
                .map(|t| now.saturating_duration_since(t)),
            consecutive_failures: health.failures,
            last_error: health.last_error.clone(),
            watch_established: health.watch && !health.stopped,
            call_in_flight: health
                .call
                .map(|(name, began)| (name, now.saturating_duration_since(began))),
        }
    }

    /// The fencing token of the current term while this participant leads.
    pub fn fencing_token(&self) -> Option<u64> {
        self.shared.term().map(|(info, _)| info.fencing_token)
    }

    /// The monotonic-clock instant until which this participant's leadership is valid, while
    /// it leads: the send time of its last confirmed renew + TTL − safety margin. Leader work
    /// that must not overlap another leader's should finish before it.
    pub fn leader_deadline(&self) -> Option<Instant> {
        self.shared
            .term()
            .map(|(_, deadline)| self.shared.clock().instant_at(deadline))
    }

    /// A stream of every change, starting with the current state.
    ///
    /// ```
    /// use leader_election::{Elector, LeadershipChange, MemoryProvider};
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-subscribe").start()?;
    /// for change in elector.subscribe() {
    ///     if let LeadershipChange::Acquired { fencing_token, .. } = change {
    ///         println!("leading with token {fencing_token}");
    ///         break;
    ///     }
    /// }
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn subscribe(&self) -> Changes {
        self.shared.subscribe(EventKinds::ALL)
    }

    /// A stream of the changes of the given kinds, starting with the current state if it is
    /// of one of them.
    ///
    /// ```
    /// use leader_election::{Elector, EventKinds, MemoryProvider};
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-filter").start()?;
    /// let changes = elector.subscribe_filtered(EventKinds::ACQUIRED | EventKinds::LOST);
    /// assert!(changes.recv().unwrap().is_acquired());
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn subscribe_filtered(&self, kinds: EventKinds) -> Changes {
        self.shared.subscribe(kinds)
    }

    /// Gives up leadership now (if held) and releases the lease so a waiting participant takes
    /// over without waiting for the TTL. This participant does not campaign again for one
    /// retry interval, then campaigns as usual.
    ///
    /// [`Elector::is_leader`] is `false` when this returns; the `Lost` event (reason
    /// [`crate::LostReason::Resigned`]) and the release follow on the heartbeat thread.
    ///
    /// ```
    /// use leader_election::{ChangesExt, Elector, MemoryProvider};
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-resign").start()?;
    /// elector.subscribe().take_until_leader().for_each(drop);
    /// elector.resign();
    /// assert!(!elector.is_leader());
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn resign(&self) {
        if let Some(running) = &*self.running.lock() {
            self.shared.end_term_now();
            running.resign();
        }
    }

    /// Stops the heartbeat thread, releasing leadership if held, and waits for it.
    ///
    /// Waits at most the shutdown timeout (default 5 s) for the release. Returns the
    /// error of the release (or of the withdrawal from the backend's queue), or
    /// [`Error::Timeout`] if a hung backend call kept it from finishing. Subscriptions end.
    /// Calling it again, or on an elector never started, returns `Ok(())`.
    ///
    /// ```
    /// use leader_election::{Elector, MemoryProvider};
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-shutdown").start()?;
    /// let changes = elector.subscribe();
    /// elector.shutdown()?;
    /// assert!(!elector.is_leader());
    /// assert!(changes.into_iter().filter(|c| c.is_lost()).count() <= 1); // the stream ended
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn shutdown(&self) -> Result<()> {
        let running = self.running.lock().take();
        // A never-started elector can no longer be started.
        self.provider.lock().take();
        let Some(running) = running else {
            self.shared.close();
            return Ok(());
        };
        let result = running.shutdown();
        self.shared.close();
        result
    }

    /// Like [`Elector::shutdown`], consuming the elector (the `close()` beside `Drop`).
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            log::warn!(
                "leader election {:?}: shutdown on drop: {e}",
                self.config.group
            );
        }
    }
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("group", &self.config.group)
            .field("participant_id", &self.config.participant_id)
            .field("is_leader", &self.is_leader())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryProvider;
    use std::time::Duration;

    fn builder() -> ElectorBuilder<MemoryProvider> {
        Elector::builder(MemoryProvider::new()).group("g")
    }

    fn rule(r: Result<Elector>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn options_are_checked() {
        assert!(rule(Elector::builder(MemoryProvider::new()).build()).contains("group"));
        assert!(rule(builder().group("a b").build()).contains("group"));
        assert!(rule(builder().participant_id("").build()).contains("participant_id"));
        assert!(rule(builder().lease_ttl(Duration::ZERO).build()).contains("lease_ttl"));
        assert!(rule(builder().retry_interval(Duration::ZERO).build()).contains("retry_interval"));
        let e = rule(
            builder()
                .lease_ttl(Duration::from_secs(10))
                .heartbeat_interval(Duration::from_secs(5))
                .build(),
        );
        assert!(
            e.contains("heartbeat_interval") && e.contains("half"),
            "{e}"
        );
        let e = rule(
            builder()
                .lease_ttl(Duration::from_secs(10))
                .safety_margin(Duration::from_secs(5))
                .build(),
        );
        assert!(e.contains("safety_margin"), "{e}");
        assert!(rule(builder().metadata("", "x").build()).contains("metadata key"));
        assert!(rule(builder().lease_ttl(Duration::MAX).build()).contains("24 hours"));
        // Overflow-prone and silent values are refused, never a panic.
        assert!(rule(builder().safety_margin(Duration::MAX).build()).contains("safety_margin"));
        assert!(rule(builder().safety_margin(Duration::ZERO).build()).contains("above zero"));
        assert!(rule(builder().shutdown_timeout(Duration::ZERO).build()).contains("shutdown"));
        assert!(builder().build().is_ok());
    }

    #[test]
    fn handles_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Elector>();
        send_sync::<crate::Changes>();
        send_sync::<crate::Error>();
        send_sync::<crate::FaultyProvider<MemoryProvider>>();
    }

    #[test]
    fn a_suspended_machine_is_not_leader_on_resume() {
        use crate::ChangesExt;
        let e = builder()
            .lease_ttl(Duration::from_secs(30))
            .heartbeat_interval(Duration::from_secs(10))
            .start()
            .unwrap();
        e.subscribe().take_until_leader().for_each(drop);
        assert!(e.is_leader());
        // The machine sleeps for a minute: the backend's lease ran out meanwhile. The monotonic
        // clock did not move, the suspend-counting clock did.
        e.shared.clock().skip(Duration::from_secs(60));
        assert!(!e.is_leader());
        assert_eq!(e.fencing_token(), None);
        assert_eq!(e.leader_deadline(), None);
        assert_eq!(e.term(), None);
        // Nor does it claim, anywhere, that it still leads.
        assert!(e.leader().is_none(), "{:?}", e.leader());
        let first = e.subscribe().try_iter().next();
        assert!(first.is_none(), "a new subscription starts with {first:?}");
    }

    #[test]
    fn a_panicking_heartbeat_ends_streams_and_leadership() {
        use crate::ChangesExt;
        let e = builder().start().unwrap();
        let changes = e.subscribe();
        e.subscribe().take_until_leader().for_each(drop);
        assert!(e.is_leader());
        if let Some(h) = &*e.running.lock() {
            h.inject_panic();
        }
        // The stream ends (after what it held) instead of blocking forever.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match changes.recv_timeout(Duration::from_millis(100)) {
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                _ if std::time::Instant::now() > end => panic!("the stream did not end"),
                _ => {}
            }
        }
        assert!(!e.is_leader());
        let _ = e.shutdown(); // an error (the release never happened), but no hang
    }

    #[test]
    fn shut_down_elector_cannot_start() {
        let e = builder().build().unwrap();
        e.shutdown().unwrap();
        assert!(matches!(e.start(), Err(Error::ShutDown)));
    }
}
