//! The contract every backend implements.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::capabilities::Capabilities;
use crate::error::Result;
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};

/// A backend that can hold one lease per election group.
///
/// The elector calls a provider from the threads of the process's I/O pool: one elector's
/// calls one at a time and in order, different electors' calls at the same time. A provider
/// shared by several electors must therefore take concurrent calls (`Sync`), and a call that
/// hangs holds one pool thread until its deadline (the pool adds threads so others go on).
/// Backends differ widely — TTL leases with compare-and-swap (Redis, SQL rows), server-held
/// sessions (ZooKeeper, Consul, file locks), fixed-length leases (Azure blobs) — and this
/// contract asks only for what all of them can promise.
///
/// **Deadlines.** Every blocking method receives a `deadline` on the monotonic clock. It must
/// return (with [`crate::Error::Timeout`] if need be) soon after it, by configuring the client's
/// connect, read and write timeouts from it. The elector does not rely on this for safety — a
/// leader steps down on its own clock even while a call hangs — but a call that outlives its
/// deadline delays the next campaign.
///
/// **Errors.** Return [`crate::Error::Unavailable`], [`crate::Error::Timeout`] or a transient
/// [`crate::Error::Backend`] when a retry may succeed. Never panic, and never put a password,
/// key or token in an error's text.
///
/// **Fencing tokens.** Every successful [`Provider::try_acquire`] of a group yields a token
/// strictly greater than every token earlier issued for that group by this backend, including
/// tokens issued to other processes and before restarts of the client. Document what could
/// break this (a deleted table row, a Redis without persistence, a recreated ZooKeeper path)
/// and how the provider guards against it.
///
/// **Lease length.** A lease must never end — by expiry, session timeout, health check or
/// administrative break the provider can prevent — before `sent + ttl`, where `sent` is when
/// the acquire or renew call was sent. A backend that cannot grant exactly `ttl` (Azure's fixed
/// 15–60 s leases, ZooKeeper's negotiated session timeout) must grant more, or refuse with
/// [`crate::Error::InvalidConfig`]; it must never grant less. Holding longer only delays
/// failover; holding shorter lets two participants lead at once.
///
/// **Clocks.** Expiry decided on one server's clock (PostgreSQL `clock_timestamp()`, Redis key
/// expiry) is safe while that clock runs at a rate within the elector's safety margin; a step of
/// the server's wall clock can shorten a lease. Say so where it applies.
pub trait Provider: Send + Sync + 'static {
    /// A short name for logs and errors, such as `"redis"`.
    fn name(&self) -> &'static str;

    /// What this backend can do: whether it pushes changes, whether a lease ends with its
    /// client, and the lease TTLs it can honour (the elector refuses others when it is built:
    /// a ZooKeeper lease cannot outlive its session). The default: no push, leases end at
    /// their TTL, any TTL. Must not block, and must not change over the provider's life.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Tries once to make `request.participant_id` the leader of `request.group`.
    ///
    /// Returns [`Acquisition::Acquired`] only if, from the moment this call was sent until
    /// `request.ttl` later, no other participant can acquire the group unless this lease is
    /// released first. A lease still held by the same participant id from an earlier term is
    /// *not* re-acquired: the caller gets [`Acquisition::Held`] and waits for it to expire, so
    /// two electors misconfigured with one id can never both lead. Otherwise returns `Held` with
    /// the current leader when the backend knows it. Must not block past `deadline`.
    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition>;

    /// Extends `lease` by its TTL, counted from the moment this call was sent.
    ///
    /// Returns [`Renewal::Renewed`] only if the lease was still this term's when the backend
    /// processed the call (same holder and same fencing token, or same session); returns
    /// [`Renewal::Lost`] if another term began or the lease expired. One round trip where the
    /// backend allows. Must not block past `deadline`.
    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal>;

    /// Gives `lease` up so another participant can acquire the group at once.
    ///
    /// Must release only this term (never a later term of the same group), must succeed when
    /// the lease is already gone, and should wake other participants' [`Provider::watch`]es.
    /// Must not block past `deadline`.
    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()>;

    /// Takes `participant_id` out of the running for `group`: the elector calls it when it
    /// stops (after releasing any lease). Backends that keep a place in a queue for a
    /// campaigning participant (ZooKeeper's sequential nodes) must drop it, so a participant
    /// that no longer runs can never end up holding the group. The default does nothing.
    /// Must not block past `deadline`.
    fn withdraw(&self, group: &str, participant_id: &str, deadline: Instant) -> Result<()> {
        let _ = (group, participant_id, deadline);
        Ok(())
    }

    /// Reads who leads `group` now, without campaigning. `None` when nobody does (or the
    /// record expired). Must not block past `deadline`.
    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>>;

    /// Starts pushing changes of `group` to `wakeup`, for backends that can (watches, blocking
    /// queries, LISTEN/NOTIFY, pub/sub).
    ///
    /// The provider calls [`Wakeup::wake`] whenever the group's leader may have changed —
    /// above all when a lease is released — so waiting followers campaign at once instead of at
    /// their next poll. Spurious wake-ups are allowed. Returns `None` (the default) if the
    /// backend cannot push, in which case followers poll every retry interval. Dropping the
    /// returned [`Watch`] must stop the pushing and free its resources without blocking (signal
    /// a background thread; never join it). Must not block for longer than one round trip to
    /// the backend — or, for a provider whose background listener must first connect, its
    /// connect timeout: a watch should be returned once changes really arrive, since the
    /// elector reports it established ([`crate::Status::watch_established`]).
    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        let _ = (group, wakeup);
        Ok(None)
    }
}

/// Wakes an elector's heartbeat thread: given to [`Provider::watch`].
///
/// Cheap to clone and to call; wake-ups coalesce, and waking an elector that has stopped does
/// nothing.
///
/// ```
/// use leader_election::Wakeup;
///
/// let (wakeup, rx) = Wakeup::channel();
/// wakeup.wake();
/// wakeup.wake();
/// assert_eq!(rx.try_iter().count(), 1); // coalesced
/// ```
#[derive(Debug, Clone)]
pub struct Wakeup(Sender<()>);

impl Wakeup {
    /// A wake-up handle and the receiver it signals (capacity one, so wake-ups coalesce).
    pub fn channel() -> (Wakeup, crossbeam_channel::Receiver<()>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        (Wakeup(tx), rx)
    }

    /// Signals that the group may have changed. Returns `false` once the elector is gone, so
    /// a watcher can drop this handle.
    pub fn wake(&self) -> bool {
        !matches!(
            self.0.try_send(()),
            Err(crossbeam_channel::TrySendError::Disconnected(()))
        )
    }
}

/// A running watch returned by [`Provider::watch`]; dropping it stops the watch.
///
/// ```
/// use leader_election::Watch;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
///
/// let stopped = Arc::new(AtomicBool::new(false));
/// let flag = stopped.clone();
/// let watch = Watch::on_drop(move || flag.store(true, Ordering::SeqCst));
/// drop(watch);
/// assert!(stopped.load(Ordering::SeqCst));
/// ```
pub struct Watch {
    on_drop: Option<Box<dyn FnOnce() + Send>>,
    live: Option<Arc<AtomicBool>>,
}

impl Watch {
    /// A watch that runs `stop` when dropped.
    pub fn on_drop(stop: impl FnOnce() + Send + 'static) -> Watch {
        Watch {
            on_drop: Some(Box::new(stop)),
            live: None,
        }
    }

    /// Reports whether the push is up through `live`, which the provider keeps up to date
    /// (`false` while its push connection is down). Idle followers poll slowly only while
    /// it is `true` (see [`crate::ElectorBuilder::idle_poll_interval`]); when it turns
    /// `false` the provider should also wake the watchers, so they go back to polling every
    /// retry interval at once. Without it a watch counts as always up.
    ///
    /// ```
    /// use leader_election::Watch;
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    ///
    /// let live = Arc::new(AtomicBool::new(true));
    /// let watch = Watch::on_drop(|| {}).with_liveness(live.clone());
    /// assert!(watch.is_live());
    /// live.store(false, Ordering::SeqCst);
    /// assert!(!watch.is_live());
    /// ```
    pub fn with_liveness(mut self, live: Arc<AtomicBool>) -> Watch {
        self.live = Some(live);
        self
    }

    /// Whether the push behind this watch is up (see [`Watch::with_liveness`]).
    pub fn is_live(&self) -> bool {
        self.live.as_ref().is_none_or(|l| l.load(Ordering::SeqCst))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(stop) = self.on_drop.take() {
            stop();
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

macro_rules! forward_provider {
    ($ty:ty) => {
        impl<P: Provider + ?Sized> Provider for $ty {
            fn name(&self) -> &'static str {
                (**self).name()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            fn try_acquire(
                &self,
                request: &AcquireRequest,
                deadline: Instant,
            ) -> Result<Acquisition> {
                (**self).try_acquire(request, deadline)
            }
            fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
                (**self).renew(lease, deadline)
            }
            fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
                (**self).release(lease, deadline)
            }
            fn withdraw(&self, group: &str, participant_id: &str, deadline: Instant) -> Result<()> {
                (**self).withdraw(group, participant_id, deadline)
            }
            fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
                (**self).leader(group, deadline)
            }
            fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
                (**self).watch(group, wakeup)
            }
        }
    };
}

forward_provider!(Arc<P>);
forward_provider!(Box<P>);
