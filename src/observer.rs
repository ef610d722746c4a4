//! The [`Observer`]: follows who leads a group without campaigning — for dashboards, routing
//! to the leader, and the command-line tool's `watch`. One background thread reads the leader
//! with [`Provider::leader`] every poll interval, and at once when the backend pushes a change
//! through [`Provider::watch`]; each change of leader (participant or fencing token) reaches
//! subscribers as a [`LeadershipChange::LeaderChanged`]. It reuses the elector's [`Shared`]
//! state (the observed leader and the subscribers), with no term of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::Mutex;

use crate::changes::Changes;
use crate::error::{Error, Result};
use crate::lease::LeaderInfo;
use crate::provider::{Provider, Wakeup, Watch};
use crate::shared::Shared;
use crate::validate;

/// Default poll interval of an [`Observer`]: 2 s.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Default bound of one leader read of an [`Observer`]: 5 s.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Configures and starts an [`Observer`]; made by [`Observer::builder`].
#[must_use = "call .start()"]
pub struct ObserverBuilder<P> {
    provider: P,
    group: Option<String>,
    poll_interval: Duration,
    call_timeout: Duration,
}

impl<P: Provider> ObserverBuilder<P> {
    /// The election group to follow (required; same syntax as [`crate::ElectorBuilder::group`]).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// How often the leader is read (default 2 s; 1 ms – 24 h). Backends that push changes
    /// wake the observer sooner — above all on a release — but a lease that expires, or an
    /// acquisition, may only show at the next poll, so this bounds how stale the observer is.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long one read of the leader may take (default 5 s; 1 ms – 24 h).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Checks the options, starts the backend's watch (where it can push), reads the leader
    /// once — so [`Observer::leader`] is accurate when this returns, and an unreachable
    /// backend is an error here — and starts the observer's thread.
    pub fn start(self) -> Result<Observer> {
        let group = self
            .group
            .ok_or_else(|| Error::config("group", "must be set with .group(..)"))?;
        validate::group(&group)?;
        validate::duration("poll_interval", self.poll_interval)?;
        validate::duration("call_timeout", self.call_timeout)?;
        let provider: Arc<dyn Provider> = Arc::new(self.provider);
        let shared = Arc::new(Shared::default());
        let (wakeup, wakeups) = Wakeup::channel();
        let mut poller = Poller {
            provider,
            group: group.clone(),
            shared: shared.clone(),
            wakeup,
            watch: None,
            poll_interval: self.poll_interval,
            call_timeout: self.call_timeout,
            failures: 0,
        };
        poller.ensure_watch();
        let first = poller.read();
        first?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let short: String = group.chars().take(8).collect();
        std::thread::Builder::new()
            .name(format!("le-obs-{short}"))
            .spawn(move || poller.run(&stopped, &wakeups))
            .map_err(|e| Error::io("spawning the observer's thread", e))?;
        Ok(Observer {
            group,
            shared,
            stop: Mutex::new(Some(stop)),
        })
    }
}

/// Follows the leader of one group without campaigning.
///
/// Its thread reads the leader every poll interval and whenever the backend pushes a change;
/// [`Observer::subscribe`] streams each change as [`LeadershipChange::LeaderChanged`]
/// (`leader: None` when nobody leads). Read errors are logged and retried; the last leader
/// read stays in place meanwhile. Shutting the observer down (or dropping it) ends its streams
/// at once and never blocks: the thread exits after the read it may be in.
///
/// [`LeadershipChange::LeaderChanged`]: crate::LeadershipChange::LeaderChanged
///
/// ```
/// use leader_election::{ChangesExt, Elector, LeadershipChange, MemoryProvider, Observer};
/// use std::time::Duration;
///
/// let provider = MemoryProvider::new();
/// let observer = Observer::builder(provider.clone())
///     .group("doc-observer")
///     .poll_interval(Duration::from_millis(100))
///     .start()?;
/// let mut changes = observer.subscribe();
/// // The first change is the current state: nobody leads.
/// assert_eq!(changes.next(), Some(LeadershipChange::LeaderChanged { leader: None }));
///
/// let elector = Elector::builder(provider).group("doc-observer").participant_id("a").start()?;
/// let leader = changes.find_map(|c| match c {
///     LeadershipChange::LeaderChanged { leader } => leader,
///     _ => None,
/// });
/// assert_eq!(leader.unwrap().participant_id, "a");
/// assert_eq!(observer.leader().unwrap().participant_id, "a");
/// # drop(elector);
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct Observer {
    group: String,
    shared: Arc<Shared>,
    /// Dropped to stop the thread.
    stop: Mutex<Option<Sender<()>>>,
}

impl Observer {
    /// A builder for an observer reading through `provider`.
    pub fn builder<P: Provider>(provider: P) -> ObserverBuilder<P> {
        ObserverBuilder {
            provider,
            group: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// The group followed.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The leader as last read (stale by at most a poll interval, or longer while the backend
    /// fails to answer), or `None` if nobody led then.
    pub fn leader(&self) -> Option<LeaderInfo> {
        self.shared.leader()
    }

    /// Whether the backend pushes this group's changes to the observer now (its watch is
    /// established); `false` for backends that can only be polled.
    pub fn is_pushed(&self) -> bool {
        self.shared.health().watch
    }

    /// The last read's error, with its causes (never a secret), until a read succeeds.
    pub fn last_error(&self) -> Option<String> {
        self.shared.health().last_error.clone()
    }

    /// A stream of the leader's changes, starting with the leader as last read
    /// (`LeaderChanged { leader: None }` if nobody leads). It ends when the observer shuts
    /// down.
    pub fn subscribe(&self) -> Changes {
        self.shared.subscribe_observed()
    }

    /// Stops following: the streams end, the thread exits after the read it may be in (this
    /// never waits for it). Calling it again does nothing.
    ///
    /// ```
    /// use leader_election::{MemoryProvider, Observer};
    ///
    /// let observer = Observer::builder(MemoryProvider::new()).group("doc-obs-stop").start()?;
    /// let changes = observer.subscribe();
    /// observer.shutdown();
    /// assert_eq!(changes.count(), 1); // the first state, then the end
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn shutdown(&self) {
        self.stop.lock().take();
        self.shared.close();
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("group", &self.group)
            .field("leader", &self.leader().map(|l| l.participant_id))
            .finish_non_exhaustive()
    }
}

/// The observer thread's state.
struct Poller {
    provider: Arc<dyn Provider>,
    group: String,
    shared: Arc<Shared>,
    wakeup: Wakeup,
    watch: Option<Watch>,
    poll_interval: Duration,
    call_timeout: Duration,
    failures: u32,
}

impl Poller {
    /// Starts the backend's watch if it can push and none runs (a failed start is retried at
    /// the next poll).
    fn ensure_watch(&mut self) {
        if self.watch.is_some() || !self.provider.capabilities().pushes_changes {
            return;
        }
        match self.provider.watch(&self.group, self.wakeup.clone()) {
            Ok(watch) => self.watch = watch,
            Err(e) => log::debug!(
                "leader election {:?}: observer: {} watch not established ({}); polling",
                self.group,
                self.provider.name(),
                e.report()
            ),
        }
        self.shared.health().watch = self.watch.is_some();
    }

    /// Reads the leader once and publishes a change.
    fn read(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.call_timeout;
        match self.provider.leader(&self.group, deadline) {
            Ok(leader) => {
                if self.failures > 0 {
                    log::info!(
                        "leader election {:?}: observer: {} answers again",
                        self.group,
                        self.provider.name()
                    );
                }
                self.failures = 0;
                self.shared.health().succeeded(self.shared.clock().now());
                self.shared.observe(leader);
                Ok(())
            }
            Err(e) => {
                if self.failures == 0 {
                    log::warn!(
                        "leader election {:?}: observer: reading the leader failed: {}",
                        self.group,
                        e.report()
                    );
                }
                self.failures = self.failures.saturating_add(1);
                self.shared.health().failed(&e);
                Err(e)
            }
        }
    }

    fn run(mut self, stopped: &Receiver<()>, wakeups: &Receiver<()>) {
        loop {
            // After failures, back off: twice the poll interval at most.
            let wait = if self.failures > 1 {
                self.poll_interval.saturating_mul(2)
            } else {
                self.poll_interval
            };
            select! {
                recv(stopped) -> _ => return,
                recv(wakeups) -> _ => {},
                default(wait) => {},
            }
            self.ensure_watch();
            let _ = self.read();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChangesExt, Elector, LeadershipChange, MemoryProvider};

    fn leader_of(c: LeadershipChange) -> Option<String> {
        match c {
            LeadershipChange::LeaderChanged { leader } => leader.map(|l| l.participant_id),
            other => panic!("an observer saw {other:?}"),
        }
    }

    fn next(changes: &Changes) -> Option<String> {
        leader_of(
            changes
                .recv_timeout(Duration::from_secs(10))
                .expect("a change within 10 s"),
        )
    }

    fn elector(p: &MemoryProvider, group: &str, id: &str) -> Elector {
        Elector::builder(p.clone())
            .group(group)
            .participant_id(id)
            .retry_interval(Duration::from_millis(50))
            .start()
            .unwrap()
    }

    #[test]
    fn options_are_checked() {
        let p = MemoryProvider::new;
        let e = Observer::builder(p()).start().unwrap_err().to_string();
        assert!(e.contains("group"), "{e}");
        let e = Observer::builder(p()).group("a b").start().unwrap_err();
        assert!(e.to_string().contains("group"));
        let e = Observer::builder(p())
            .group("g")
            .poll_interval(Duration::ZERO)
            .start()
            .unwrap_err();
        assert!(e.to_string().contains("poll_interval"));
    }

    /// Memory, polled often: acquire, hand-off, release, in order.
    #[test]
    fn sees_acquire_hand_off_and_release() {
        let p = MemoryProvider::new();
        let observer = Observer::builder(p.clone())
            .group("obs-mem")
            .poll_interval(Duration::from_millis(20))
            .start()
            .unwrap();
        let changes = observer.subscribe();
        assert_eq!(next(&changes), None);
        let a = elector(&p, "obs-mem", "a");
        assert_eq!(next(&changes).as_deref(), Some("a"));
        let b = elector(&p, "obs-mem", "b");
        a.shutdown().unwrap();
        // The release may show (None) before b's term, if the observer read between them.
        let mut seen = next(&changes);
        if seen.is_none() {
            seen = next(&changes);
        }
        assert_eq!(seen.as_deref(), Some("b"));
        assert_eq!(observer.leader().unwrap().participant_id, "b");
        b.shutdown().unwrap();
        assert_eq!(next(&changes), None);
        assert!(observer.leader().is_none());
    }

    /// Memory pushes releases: with a one-minute poll interval only the watch can show one.
    #[test]
    fn a_release_is_pushed() {
        let p = MemoryProvider::new();
        let a = elector(&p, "obs-push", "a");
        a.subscribe().take_until_leader().for_each(drop);
        let observer = Observer::builder(p.clone())
            .group("obs-push")
            .poll_interval(Duration::from_secs(60))
            .start()
            .unwrap();
        assert!(observer.is_pushed());
        let changes = observer.subscribe();
        assert_eq!(next(&changes).as_deref(), Some("a"));
        let started = Instant::now();
        a.shutdown().unwrap();
        assert_eq!(next(&changes), None);
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[cfg(feature = "file")]
    #[test]
    fn sees_changes_on_a_polled_file_backend() {
        let dir = tempfile_dir("obs-file");
        let file = || crate::FileProvider::new(&dir).unwrap();
        let observer = Observer::builder(file())
            .group("obs-file")
            .poll_interval(Duration::from_millis(50))
            .start()
            .unwrap();
        assert!(!observer.is_pushed());
        let changes = observer.subscribe();
        assert_eq!(next(&changes), None);
        let a = Elector::builder(file())
            .group("obs-file")
            .participant_id("a")
            .start()
            .unwrap();
        assert_eq!(next(&changes).as_deref(), Some("a"));
        a.shutdown().unwrap();
        assert_eq!(next(&changes), None);
        observer.shutdown();
        assert!(changes.recv().is_none(), "the stream ends");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[cfg(feature = "file")]
    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("le-{name}-{}", std::process::id()))
    }

    #[test]
    fn read_errors_are_reported_and_the_last_leader_kept() {
        use crate::{Faults, FaultyProvider, Operation};
        let p = MemoryProvider::new();
        let faulty = FaultyProvider::new(p.clone());
        let faults: Faults = faulty.faults();
        faults.only(&[Operation::Leader]);
        let observer = Observer::builder(faulty)
            .group("obs-faulty")
            .poll_interval(Duration::from_millis(20))
            .start()
            .unwrap();
        let changes = observer.subscribe();
        assert_eq!(next(&changes), None);
        let a = elector(&p, "obs-faulty", "a");
        assert_eq!(next(&changes).as_deref(), Some("a"));
        faults.fail_next(u32::MAX);
        let end = Instant::now() + Duration::from_secs(10);
        while observer.last_error().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(observer.last_error().is_some());
        assert_eq!(observer.leader().unwrap().participant_id, "a");
        faults.clear();
        a.shutdown().unwrap();
        assert_eq!(next(&changes), None);
        assert!(observer.last_error().is_none());
    }
}
