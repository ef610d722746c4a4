//! The I/O thread: the one thread of an elector that calls the provider, so the heartbeat
//! thread never blocks on the backend. The heartbeat thread sends it [`Call`]s (each a [`Job`]
//! with an id and a deadline) through an [`IoLink`]; it runs them one at a time, in order, and
//! answers each with an [`Outcome`] under the same id. A panicking provider reads as a
//! transient error. Once the heartbeat thread is gone ("orphaned": it closed the answers, or
//! its end of the channel is gone), it still runs the queued releases and withdrawals, and
//! releases a lease that an acquire won too late, so nothing stays held on the backend. The
//! answers are closed under a lock the I/O thread sends under, so every answer is either
//! delivered before the close (and read by the heartbeat thread's last drain) or not at all.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{Clock, Moment};
use crate::shared::Shared;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};

/// A provider call the heartbeat thread asks for.
pub(super) enum Call {
    Acquire(AcquireRequest),
    Renew(Lease),
    Release(Lease),
    /// Leave the group's queue: group, participant id.
    Withdraw(String, String),
    Watch(String, Wakeup),
}

impl Call {
    /// The call's name, for the elector's status and logs.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Call::Acquire(_) => "campaign",
            Call::Renew(_) => "renew",
            Call::Release(_) => "release",
            Call::Withdraw(..) => "withdraw",
            Call::Watch(..) => "watch",
        }
    }
}

/// The answer to a [`Call`].
pub(super) enum Outcome {
    Acquire(Result<Acquisition>),
    Renew(Result<Renewal>),
    /// A release or withdrawal; the lease, for a release, so a failed one can be retried.
    Release(Result<()>, Option<Lease>),
    Watch(Result<Option<Watch>>),
}

/// One queued call: its id (repeated in the answer) and the deadline it is given.
struct Job {
    id: u64,
    call: Call,
    deadline: Instant,
}

/// Answers from the I/O thread: the id of the call, and its outcome.
pub(super) type Outcomes = Receiver<(u64, Outcome)>;

/// The heartbeat thread's end of the job queue: numbers the calls and counts those not yet
/// answered. Dropping it lets the I/O thread finish the queue and end.
pub(super) struct IoLink {
    jobs: Sender<Job>,
    group: String,
    next_id: u64,
    /// Calls sent to the I/O thread and not yet answered.
    outstanding: usize,
    /// The I/O thread is gone.
    dead: bool,
    /// Turns the machine's deadlines into the `Instant`s providers take.
    clock: Clock,
    /// `true` once the heartbeat thread reads no more answers (see [`IoLink::close_answers`]).
    closed: Arc<Mutex<bool>>,
}

impl IoLink {
    /// Queues `call` and returns its id (an id even if the queue is closed, which marks the
    /// link dead).
    pub(super) fn send(&mut self, call: Call, deadline: Moment) -> u64 {
        let deadline = self.clock.instant_at(deadline);
        self.next_id += 1;
        let id = self.next_id;
        if self.jobs.send(Job { id, call, deadline }).is_ok() {
            self.outstanding += 1;
        } else {
            // The I/O thread is gone (it cannot be, short of a bug): stop rather than spin.
            log::error!(
                "leader election {:?}: the I/O thread is gone; stopping",
                self.group
            );
            self.dead = true;
        }
        id
    }

    /// Counts one answer received.
    pub(super) fn answered(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// Calls sent and not yet answered.
    pub(super) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Records that the I/O thread hung up (its answer channel disconnected).
    pub(super) fn set_dead(&mut self) {
        self.dead = true;
    }

    /// Whether the I/O thread is gone.
    pub(super) fn is_dead(&self) -> bool {
        self.dead
    }

    /// Tells the I/O thread that no more answers will be read: from now on it keeps what it
    /// would have answered (releasing a lease an acquire won) and runs only the queued
    /// releases and withdrawals. Every answer sent before this returns is in the channel.
    pub(super) fn close_answers(&self) {
        *self.closed.lock() = true;
    }
}

/// Spawns the I/O thread (named `le-io-{short}`) for `provider`.
pub(super) fn spawn(
    provider: Arc<dyn Provider>,
    shared: Arc<Shared>,
    group: &str,
    short: &str,
) -> Result<(IoLink, Outcomes)> {
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let (out_tx, out_rx) = crossbeam_channel::unbounded();
    let io_shared = shared.clone();
    let closed = Arc::new(Mutex::new(false));
    let answers = Answers {
        out: out_tx,
        closed: closed.clone(),
    };
    std::thread::Builder::new()
        .name(format!("le-io-{short}"))
        .spawn(move || io_loop(&*provider, &io_shared, job_rx, &answers))
        .map_err(|e| Error::io("spawning the elector's I/O thread", e))?;
    let link = IoLink {
        clock: shared.clock().clone(),
        jobs: job_tx,
        group: group.to_owned(),
        next_id: 0,
        outstanding: 0,
        dead: false,
        closed,
    };
    Ok((link, out_rx))
}

/// The I/O thread's end of the answers.
struct Answers {
    out: Sender<(u64, Outcome)>,
    /// Set by [`IoLink::close_answers`]; answers are sent while holding it.
    closed: Arc<Mutex<bool>>,
}

impl Answers {
    /// Delivers an answer; gives it back if nobody will read it.
    fn send(&self, id: u64, outcome: Outcome) -> Option<Outcome> {
        let closed = self.closed.lock();
        if *closed {
            return Some(outcome);
        }
        self.out
            .send((id, outcome))
            .err()
            .map(|crossbeam_channel::SendError((_, outcome))| outcome)
    }
}

/// How long a release or withdrawal gets once nobody waits for it (see [`io_loop`]).
const ORPHANED_CALL_TIME: Duration = Duration::from_secs(5);

/// Runs provider calls one at a time until the heartbeat thread hangs up.
///
/// If the heartbeat thread is gone (a shutdown that gave up waiting for a hung call), the
/// remaining queued releases still run, and a lease acquired too late is released, so nothing
/// stays held on the backend.
fn io_loop(provider: &dyn Provider, shared: &Shared, jobs: Receiver<Job>, answers: &Answers) {
    let mut orphaned = false;
    for job in jobs {
        if orphaned && !matches!(job.call, Call::Release(_) | Call::Withdraw(..)) {
            continue;
        }
        // Nobody waits for an orphaned release any more, but it should still get a fair
        // chance: its own deadline may have passed while the call before it hung.
        let deadline = if orphaned {
            job.deadline.max(Instant::now() + ORPHANED_CALL_TIME)
        } else {
            job.deadline
        };
        shared.health().call = Some((job.call.name(), shared.clock().now()));
        let outcome = run(provider, job.call, deadline);
        shared.health().call = None;
        if orphaned {
            continue;
        }
        if let Some(outcome) = answers.send(job.id, outcome) {
            orphaned = true;
            if let Outcome::Acquire(Ok(Acquisition::Acquired(lease))) = outcome {
                let deadline = Instant::now() + lease.ttl;
                if let Err(e) = provider.release(&lease, deadline) {
                    log::warn!(
                        "leader election {:?}: releasing a late lease failed (it will expire): {}",
                        lease.info.group,
                        e.report()
                    );
                }
            }
        }
    }
}

/// Makes one call; a panic in the provider becomes a transient error.
fn run(provider: &dyn Provider, call: Call, deadline: Instant) -> Outcome {
    catch_unwind(AssertUnwindSafe(|| match &call {
        Call::Acquire(req) => Outcome::Acquire(provider.try_acquire(req, deadline)),
        Call::Renew(lease) => Outcome::Renew(provider.renew(lease, deadline)),
        Call::Release(lease) => {
            Outcome::Release(provider.release(lease, deadline), Some(lease.clone()))
        }
        Call::Withdraw(group, id) => Outcome::Release(provider.withdraw(group, id, deadline), None),
        Call::Watch(group, wakeup) => Outcome::Watch(provider.watch(group, wakeup.clone())),
    }))
    .unwrap_or_else(|_| {
        let err = || Error::Backend {
            backend: provider.name(),
            operation: "provider call",
            transient: true,
            source: "the provider panicked".into(),
        };
        match call {
            Call::Acquire(_) => Outcome::Acquire(Err(err())),
            Call::Renew(_) => Outcome::Renew(Err(err())),
            Call::Release(lease) => Outcome::Release(Err(err()), Some(lease)),
            Call::Withdraw(..) => Outcome::Release(Err(err()), None),
            Call::Watch(..) => Outcome::Watch(Err(err())),
        }
    })
}
