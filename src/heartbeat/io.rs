//! An elector's provider calls, made on the process's I/O pool ([`super::pool`]) so the
//! heartbeat thread never blocks on the backend. The heartbeat thread queues [`Call`]s (each a
//! [`Job`] with an id and a deadline) on its [`Lane`] through an [`IoLink`]; pool workers run
//! them one at a time, in order, and answer each with an [`Outcome`] under the same id. A
//! panicking provider reads as a transient error. Once the heartbeat thread is gone
//! ("orphaned": it closed the answers, or its end of the channel is gone), the lane still runs
//! the queued releases and withdrawals, and releases a lease that an acquire won too late, so
//! nothing stays held on the backend. The answers are closed under a lock the lane sends
//! under, so every answer is either delivered before the close (and read by the heartbeat
//! thread's last drain) or not at all.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::pool::{Pool, Work};
use crate::clock::{Clock, Moment};
use crate::shared::Shared;

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

/// The heartbeat thread's end of the answers: a mailbox of `(id, outcome, answered at)` and
/// a channel that wakes the thread when an answer needs it at once.
///
/// Every answer wakes the heartbeat thread except a successful renew that arrives while the
/// thread is *quiet* ([`Outcomes::arm`]): it will wake before the lease needs that answer
/// anyway (to send the next renew), and reads it then. That saves one thread wake-up per
/// renew, a third of the CPU a leader costs. A renew that fails, loses the lease, or answers
/// after the thread stopped being quiet wakes it as before.
pub(super) struct Outcomes {
    lane: Arc<Lane>,
    wake: Receiver<()>,
}

impl Outcomes {
    /// The channel to wait on (a token means: read the mailbox).
    pub(super) fn wake(&self) -> &Receiver<()> {
        &self.wake
    }

    /// Takes the answers in the mailbox, in the order they came.
    pub(super) fn take(&self) -> VecDeque<(u64, Outcome, Moment)> {
        std::mem::take(&mut self.lane.answers.mailbox.lock().answers)
    }

    /// Whether the mailbox is empty.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.lane.answers.mailbox.lock().answers.is_empty()
    }

    /// Before the heartbeat thread sleeps: whether a successful renew may arrive without
    /// waking it (`quiet`). Returns `false`, changing nothing, if answers wait in the mailbox
    /// (read them first).
    pub(super) fn arm(&self, quiet: bool) -> bool {
        let mut mailbox = self.lane.answers.mailbox.lock();
        if !mailbox.answers.is_empty() {
            return false;
        }
        mailbox.quiet = quiet;
        true
    }
}

/// The heartbeat thread's end of its calls: numbers them, queues them on the elector's
/// [`Lane`], and counts those not yet answered. Dropping it lets the lane finish its queue.
pub(super) struct IoLink {
    lane: Arc<Lane>,
    pool: Arc<Pool>,
    next_id: u64,
    /// Calls queued and not yet answered: id, name and when each was queued.
    outstanding: VecDeque<(u64, &'static str, Moment)>,
    /// Turns the machine's deadlines into the `Instant`s providers take.
    clock: Clock,
}

impl IoLink {
    /// Queues `call` and returns its id.
    pub(super) fn send(&mut self, call: Call, deadline: Moment) -> u64 {
        let deadline = self.clock.instant_at(deadline);
        self.next_id += 1;
        let id = self.next_id;
        self.outstanding
            .push_back((id, call.name(), self.clock.now()));
        let schedule = {
            let mut queue = self.lane.queue.lock();
            queue.jobs.push_back(Job { id, call, deadline });
            !std::mem::replace(&mut queue.scheduled, true)
        };
        if schedule {
            self.pool.schedule(self.lane.clone());
        }
        id
    }

    /// Counts the answer to call `id`.
    pub(super) fn answered(&mut self, id: u64) {
        self.outstanding.retain(|(i, _, _)| *i != id);
    }

    /// Calls sent and not yet answered.
    pub(super) fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The oldest call not yet answered: its name and when it was queued.
    pub(super) fn oldest_call(&self) -> Option<(&'static str, Moment)> {
        self.outstanding.front().map(|(_, name, at)| (*name, *at))
    }

    /// Tells the lane that no more answers will be read: from now on it keeps what it would
    /// have answered (releasing a lease an acquire won) and runs only the queued releases and
    /// withdrawals. Every answer sent before this returns is in the mailbox.
    pub(super) fn close_answers(&self) {
        self.lane.answers.mailbox.lock().closed = true;
    }
}

impl Drop for IoLink {
    /// The machine is gone (it finished, or the heartbeat thread panicked): nobody reads the
    /// answers any more.
    fn drop(&mut self) {
        self.close_answers();
    }
}

/// Makes the I/O link of one elector on the process's pool (started on first use).
pub(super) fn link(provider: Arc<dyn Provider>, shared: Arc<Shared>) -> Result<(IoLink, Outcomes)> {
    let pool = Pool::get()?;
    let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
    let lane = Arc::new(Lane {
        provider,
        shared: shared.clone(),
        answers: Answers {
            wake: wake_tx,
            mailbox: Mutex::new(Mailbox {
                answers: VecDeque::new(),
                quiet: false,
                closed: false,
            }),
        },
        queue: Mutex::new(Queue {
            jobs: VecDeque::new(),
            scheduled: false,
            orphaned: false,
        }),
    });
    let outcomes = Outcomes {
        lane: lane.clone(),
        wake: wake_rx,
    };
    let link = IoLink {
        clock: shared.clock().clone(),
        lane,
        pool,
        next_id: 0,
        outstanding: VecDeque::new(),
    };
    Ok((link, outcomes))
}

/// One elector's calls, waiting for the pool.
struct Lane {
    provider: Arc<dyn Provider>,
    shared: Arc<Shared>,
    answers: Answers,
    queue: Mutex<Queue>,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// The lane is in the pool's ready queue or a worker is running its call.
    scheduled: bool,
    /// Nobody reads the answers any more (see [`Lane::run_next`]).
    orphaned: bool,
}

/// The lane's end of the answers (see [`Outcomes`]).
struct Answers {
    wake: Sender<()>,
    mailbox: Mutex<Mailbox>,
}

struct Mailbox {
    answers: VecDeque<(u64, Outcome, Moment)>,
    /// A successful renew need not wake the heartbeat thread (see [`Outcomes::arm`]).
    quiet: bool,
    /// Set by [`IoLink::close_answers`]: nobody reads the answers any more.
    closed: bool,
}

impl Answers {
    /// Delivers an answer, waking the heartbeat thread unless it is quiet and the answer a
    /// successful renew; gives it back if nobody will read it.
    fn send(&self, id: u64, outcome: Outcome, at: Moment) -> Option<Outcome> {
        let mut mailbox = self.mailbox.lock();
        if mailbox.closed {
            return Some(outcome);
        }
        let quiet = mailbox.quiet && matches!(outcome, Outcome::Renew(Ok(Renewal::Renewed)));
        mailbox.answers.push_back((id, outcome, at));
        drop(mailbox);
        if !quiet {
            // A token may already wait: one is enough.
            let _ = self.wake.try_send(());
        }
        None
    }
}

/// How long a release or withdrawal gets once nobody waits for it (see [`Lane::run_next`]).
const ORPHANED_CALL_TIME: Duration = Duration::from_secs(5);

impl Work for Lane {
    /// Runs the lane's next call and answers it.
    ///
    /// Once the heartbeat thread is gone ("orphaned": a shutdown that gave up waiting for a
    /// hung call), only the queued releases and withdrawals still run, and a lease acquired too
    /// late is released, so nothing stays held on the backend.
    fn run_next(&self, started: &dyn Fn()) -> bool {
        // Nobody reads the answers (the machine is gone, e.g. after a panic): orphaned too.
        let closed = self.answers.mailbox.lock().closed;
        let (job, orphaned) = {
            let mut queue = self.queue.lock();
            queue.orphaned |= closed;
            loop {
                match queue.jobs.pop_front() {
                    None => {
                        queue.scheduled = false;
                        return false;
                    }
                    Some(job)
                        if queue.orphaned
                            && !matches!(job.call, Call::Release(_) | Call::Withdraw(..)) => {}
                    Some(job) => break (job, queue.orphaned),
                }
            }
        };
        // Nobody waits for an orphaned release any more, but it should still get a fair
        // chance: its own deadline may have passed while the call before it hung.
        let deadline = if orphaned {
            job.deadline.max(Instant::now() + ORPHANED_CALL_TIME)
        } else {
            job.deadline
        };
        let provider = &*self.provider;
        let outcome = if !orphaned && Instant::now() >= deadline {
            // It waited in the pool past its deadline: nobody can use its answer now.
            failed(
                provider,
                job.call,
                "waited for an I/O pool thread past its deadline",
            )
        } else {
            started();
            self.shared.health().call = Some((job.call.name(), self.shared.clock().now()));
            let outcome = run(provider, job.call, deadline);
            self.shared.health().call = None;
            outcome
        };
        let answered = self.shared.clock().now();
        if !orphaned && let Some(outcome) = self.answers.send(job.id, outcome, answered) {
            self.queue.lock().orphaned = true;
            if let Outcome::Acquire(Ok(Acquisition::Acquired(lease))) = outcome {
                let group = lease.info.group.clone();
                let deadline = Instant::now() + lease.ttl;
                if let Outcome::Release(Err(e), _) = run(provider, Call::Release(lease), deadline) {
                    log::warn!(
                        "leader election {group:?}: releasing a late lease failed (it will \
                         expire): {}",
                        e.report()
                    );
                }
            }
        }
        let mut queue = self.queue.lock();
        if queue.jobs.is_empty() {
            queue.scheduled = false;
            false
        } else {
            true
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
    .unwrap_or_else(|_| failed(provider, call, "the provider panicked"))
}

/// The outcome of `call` failing, transiently, for `reason`, without reaching the provider.
fn failed(provider: &dyn Provider, call: Call, reason: &'static str) -> Outcome {
    let operation = call.name();
    let err = || Error::Backend {
        backend: provider.name(),
        operation,
        transient: true,
        source: reason.into(),
    };
    match call {
        Call::Acquire(_) => Outcome::Acquire(Err(err())),
        Call::Renew(_) => Outcome::Renew(Err(err())),
        Call::Release(lease) => Outcome::Release(Err(err()), Some(lease)),
        Call::Withdraw(..) => Outcome::Release(Err(err()), None),
        Call::Watch(..) => Outcome::Watch(Err(err())),
    }
}
