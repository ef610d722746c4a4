//! A wrapper that injects faults into any provider, for testing electors under backend trouble:
//! failures, hangs, and latency either before a call reaches the backend (the backend acts
//! late) or after it returns (the backend acted at once, the answer comes late).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};

/// A provider call, for aiming faults with [`Faults::only`] and counting with [`Faults::calls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`Provider::try_acquire`].
    Acquire,
    /// [`Provider::renew`].
    Renew,
    /// [`Provider::release`] and [`Provider::withdraw`].
    Release,
    /// [`Provider::leader`].
    Leader,
    /// [`Provider::watch`].
    Watch,
}

impl Operation {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Operation::Acquire => "acquire",
            Operation::Renew => "renew",
            Operation::Release => "release",
            Operation::Leader => "leader",
            Operation::Watch => "watch",
        }
    }
}

#[derive(Default)]
struct Plan {
    fail_next: u32,
    fail_permanent: bool,
    /// Slept before the backend call.
    latency: Duration,
    /// Slept after the backend call returned.
    latency_after: Duration,
    hang: bool,
    only: Option<Vec<Operation>>,
    calls: [u64; 5],
    hung_now: u32,
}

#[derive(Default)]
struct State {
    plan: Mutex<Plan>,
    unhang: Condvar,
}

/// Controls the faults of a [`FaultyProvider`]; cheap to clone.
///
/// ```
/// use leader_election::{AcquireRequest, FaultyProvider, MemoryProvider, Operation, Provider};
/// use std::time::{Duration, Instant};
///
/// let provider = FaultyProvider::new(MemoryProvider::new());
/// let faults = provider.faults();
/// faults.fail_next(1);
/// let req = AcquireRequest::new("g", "a", Duration::from_secs(5));
/// let deadline = Instant::now() + Duration::from_secs(1);
/// assert!(provider.try_acquire(&req, deadline).unwrap_err().is_transient());
/// assert!(provider.try_acquire(&req, deadline).is_ok());
/// assert_eq!(faults.calls(Operation::Acquire), 2);
/// ```
#[derive(Clone, Default)]
pub struct Faults {
    state: Arc<State>,
}

impl Faults {
    /// Makes the next `n` affected calls fail with a transient error.
    pub fn fail_next(&self, n: u32) {
        let mut p = self.state.plan.lock();
        p.fail_next = n;
        p.fail_permanent = false;
    }

    /// Makes the next `n` affected calls fail with a permanent error.
    pub fn fail_next_permanent(&self, n: u32) {
        let mut p = self.state.plan.lock();
        p.fail_next = n;
        p.fail_permanent = true;
    }

    /// Delays every affected call by `latency` before it reaches the backend: the same as
    /// [`Faults::set_latency_before`] (the backend acts late; nothing changes meanwhile).
    pub fn set_latency(&self, latency: Duration) {
        self.set_latency_before(latency);
    }

    /// Delays every affected call by `latency` *before* it reaches the backend, so the backend
    /// acts `latency` after the call was made.
    pub fn set_latency_before(&self, latency: Duration) {
        self.state.plan.lock().latency = latency;
    }

    /// Delays the answer of every affected call by `latency` *after* the backend call returned,
    /// so the backend has already acted (a lease acquired or extended) when the caller hears
    /// of it `latency` later. Failed calls ([`Faults::fail_next`]) are not delayed.
    ///
    /// ```
    /// use leader_election::{AcquireRequest, Acquisition, FaultyProvider, MemoryProvider, Provider};
    /// use std::time::{Duration, Instant};
    ///
    /// let memory = MemoryProvider::new();
    /// let provider = FaultyProvider::new(memory.clone());
    /// provider.faults().set_latency_after(Duration::from_millis(50));
    /// let req = AcquireRequest::new("g", "a", Duration::from_secs(5));
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// let start = Instant::now();
    /// assert!(matches!(provider.try_acquire(&req, deadline)?, Acquisition::Acquired(_)));
    /// assert!(start.elapsed() >= Duration::from_millis(50));
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn set_latency_after(&self, latency: Duration) {
        self.state.plan.lock().latency_after = latency;
    }

    /// Makes affected calls block — ignoring their deadlines, like a client stuck in I/O —
    /// until [`Faults::unhang`].
    ///
    /// ```
    /// use leader_election::{ChangesExt, Elector, FaultyProvider, LeadershipChange, LostReason, MemoryProvider, Operation};
    /// use std::time::Duration;
    ///
    /// let provider = FaultyProvider::new(MemoryProvider::new());
    /// let faults = provider.faults();
    /// let elector = Elector::builder(provider)
    ///     .group("doc-hang")
    ///     .lease_ttl(Duration::from_millis(600))
    ///     .heartbeat_interval(Duration::from_millis(200))
    ///     .start()?;
    /// let mut changes = elector.subscribe();
    /// changes.by_ref().take_until_leader().for_each(drop);
    /// faults.only(&[Operation::Renew]);
    /// faults.hang(); // the next renew never returns…
    /// match changes.next() {
    ///     // …yet the leader steps down on its own deadline.
    ///     Some(LeadershipChange::Lost { reason, .. }) => assert_eq!(reason, LostReason::DeadlinePassed),
    ///     other => panic!("{other:?}"),
    /// }
    /// faults.unhang();
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn hang(&self) {
        self.state.plan.lock().hang = true;
    }

    /// Releases hung calls and stops hanging new ones.
    pub fn unhang(&self) {
        self.state.plan.lock().hang = false;
        self.state.unhang.notify_all();
    }

    /// Limits faults to the given operations (default: all).
    pub fn only(&self, ops: &[Operation]) {
        self.state.plan.lock().only = Some(ops.to_vec());
    }

    /// Clears every fault (and releases hung calls); call counts are kept.
    pub fn clear(&self) {
        {
            let mut p = self.state.plan.lock();
            p.fail_next = 0;
            p.latency = Duration::ZERO;
            p.latency_after = Duration::ZERO;
            p.hang = false;
            p.only = None;
        }
        self.state.unhang.notify_all();
    }

    /// How many calls of `op` were made so far (failed ones included).
    pub fn calls(&self, op: Operation) -> u64 {
        self.state.plan.lock().calls[op.index()]
    }

    /// How many calls are hung right now.
    pub fn hung_calls(&self) -> u32 {
        self.state.plan.lock().hung_now
    }

    /// Applies the plan to one call of `op` before it reaches the backend: counts it, hangs,
    /// fails, or sleeps the latency before. Returns the latency to sleep once the backend
    /// call returned (read after any hang, so a test may change it while the call hangs).
    fn apply(&self, op: Operation) -> Result<Duration> {
        let mut p = self.state.plan.lock();
        p.calls[op.index()] += 1;
        let affected = p.only.as_ref().is_none_or(|ops| ops.contains(&op));
        if !affected {
            return Ok(Duration::ZERO);
        }
        if p.hang {
            p.hung_now += 1;
            while p.hang {
                self.state.unhang.wait(&mut p);
            }
            p.hung_now -= 1;
        }
        let (latency, after) = (p.latency, p.latency_after);
        if p.fail_next > 0 {
            p.fail_next -= 1;
            return Err(Error::Injected {
                operation: op.name(),
                transient: !p.fail_permanent,
            });
        }
        drop(p);
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        Ok(after)
    }

    /// Runs `call` under the plan for `op`: faults and latency before, latency after.
    fn around<T>(&self, op: Operation, call: impl FnOnce() -> Result<T>) -> Result<T> {
        let after = self.apply(op)?;
        let result = call();
        if !after.is_zero() {
            std::thread::sleep(after);
        }
        result
    }
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.state.plan.lock();
        f.debug_struct("Faults")
            .field("fail_next", &p.fail_next)
            .field("latency", &p.latency)
            .field("latency_after", &p.latency_after)
            .field("hang", &p.hang)
            .finish_non_exhaustive()
    }
}

/// Wraps any provider and injects faults — failures, latency, hangs — controlled through
/// [`Faults`]. Used to test electors under backend trouble.
///
/// ```
/// use leader_election::{Elector, FaultyProvider, MemoryProvider, ChangesExt};
///
/// let provider = FaultyProvider::new(MemoryProvider::new());
/// provider.faults().fail_next(2); // the first two campaigns fail, the third wins
/// let elector = Elector::builder(provider)
///     .group("doc-faulty")
///     .retry_interval(std::time::Duration::from_millis(10))
///     .start()?;
/// elector.subscribe().take_until_leader().for_each(drop);
/// assert!(elector.is_leader());
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct FaultyProvider<P> {
    inner: P,
    faults: Faults,
}

impl<P: Provider> FaultyProvider<P> {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: P) -> Self {
        FaultyProvider {
            inner,
            faults: Faults::default(),
        }
    }

    /// The handle that controls this wrapper's faults.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P> std::fmt::Debug for FaultyProvider<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyProvider")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl<P: Provider> Provider for FaultyProvider<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        self.faults.around(Operation::Acquire, || {
            self.inner.try_acquire(request, deadline)
        })
    }

    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        self.faults
            .around(Operation::Renew, || self.inner.renew(lease, deadline))
    }

    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        self.faults
            .around(Operation::Release, || self.inner.release(lease, deadline))
    }

    fn withdraw(&self, group: &str, participant_id: &str, deadline: Instant) -> Result<()> {
        self.faults.around(Operation::Release, || {
            self.inner.withdraw(group, participant_id, deadline)
        })
    }

    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        self.faults
            .around(Operation::Leader, || self.inner.leader(group, deadline))
    }

    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        self.faults
            .around(Operation::Watch, || self.inner.watch(group, wakeup))
    }
}
