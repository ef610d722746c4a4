//! The heartbeat thread: campaigns, renews, steps down on its own deadline, publishes changes.
//!
//! Provider calls run on a separate I/O thread, one at a time, so this thread never blocks on
//! the backend: it always wakes at the leader's deadline, whatever the backend is doing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::change::{LeadershipChange, LostReason};
use crate::elector::Config;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};
use crate::shared::Shared;
use crate::util;

/// Commands from the [`crate::Elector`] handle.
pub(crate) enum Command {
    Resign,
    Shutdown(Sender<Result<()>>),
}

enum Call {
    Acquire(AcquireRequest),
    Renew(Lease),
    Release(Lease),
    Withdraw(String, String),
    Watch(String, Wakeup),
}

enum Outcome {
    Acquire(Result<Acquisition>),
    Renew(Result<Renewal>),
    /// A release or withdrawal; the lease, for a release, so a failed one can be retried.
    Release(Result<()>, Option<Lease>),
    Watch(Result<Option<Watch>>),
}

struct Job {
    id: u64,
    call: Call,
    deadline: Instant,
}

/// Spawns the heartbeat and I/O threads of one elector.
pub(crate) fn spawn(
    config: Arc<Config>,
    provider: Arc<dyn Provider>,
    shared: Arc<Shared>,
) -> Result<(Sender<Command>, JoinHandle<()>)> {
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let (out_tx, out_rx) = crossbeam_channel::unbounded();
    let short: String = config.group.chars().take(8).collect();
    let io_provider = provider.clone();
    std::thread::Builder::new()
        .name(format!("le-io-{short}"))
        .spawn(move || io_loop(&*io_provider, job_rx, out_tx))
        .map_err(|e| Error::io("spawning the elector's I/O thread", e))?;
    let (wakeup, wake_rx) = Wakeup::channel();
    let heartbeat = Heartbeat {
        backend: provider.name(),
        config,
        shared,
        jobs: job_tx,
        next_id: 0,
        outstanding: 0,
        in_flight: None,
        role: Role::Follower,
        next_action: Instant::now(),
        no_campaign_before: Instant::now(),
        failures: 0,
        woken: false,
        watch: WatchState::Pending,
        wakeup,
        _watch_guard: None,
        stopping: None,
        release_error: None,
        last_campaign: Instant::now(),
        io_dead: false,
        unreleased: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name(format!("le-hb-{short}"))
        .spawn(move || heartbeat.run(cmd_rx, out_rx, wake_rx))
        .map_err(|e| Error::io("spawning the elector's heartbeat thread", e))?;
    Ok((cmd_tx, thread))
}

/// Runs provider calls one at a time until the heartbeat thread hangs up.
///
/// If the heartbeat thread is gone (a shutdown that gave up waiting for a hung call), the
/// remaining queued releases still run, and a lease acquired too late is released, so nothing
/// stays held on the backend.
fn io_loop(provider: &dyn Provider, jobs: Receiver<Job>, out: Sender<(u64, Outcome)>) {
    let mut orphaned = false;
    for job in jobs {
        if orphaned && !matches!(job.call, Call::Release(_) | Call::Withdraw(..)) {
            continue;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| match &job.call {
            Call::Acquire(req) => Outcome::Acquire(provider.try_acquire(req, job.deadline)),
            Call::Renew(lease) => Outcome::Renew(provider.renew(lease, job.deadline)),
            Call::Release(lease) => {
                Outcome::Release(provider.release(lease, job.deadline), Some(lease.clone()))
            }
            Call::Withdraw(group, id) => {
                Outcome::Release(provider.withdraw(group, id, job.deadline), None)
            }
            Call::Watch(group, wakeup) => Outcome::Watch(provider.watch(group, wakeup.clone())),
        }))
        .unwrap_or_else(|_| {
            let err = || Error::Backend {
                backend: provider.name(),
                operation: "provider call",
                transient: true,
                source: "the provider panicked".into(),
            };
            match job.call {
                Call::Acquire(_) => Outcome::Acquire(Err(err())),
                Call::Renew(_) => Outcome::Renew(Err(err())),
                Call::Release(lease) => Outcome::Release(Err(err()), Some(lease)),
                Call::Withdraw(..) => Outcome::Release(Err(err()), None),
                Call::Watch(..) => Outcome::Watch(Err(err())),
            }
        });
        if orphaned {
            continue;
        }
        if let Err(crossbeam_channel::SendError((_, outcome))) = out.send((job.id, outcome)) {
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

enum Role {
    Follower,
    Leader {
        lease: Lease,
        /// Local deadline: send time of the last confirmed renew + TTL − margin.
        deadline: Instant,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Acquire,
    Renew,
}

struct InFlight {
    id: u64,
    op: Op,
    sent: Instant,
    /// `Shared::resign_epoch` when sent: an acquire that a resign overtook is not adopted.
    epoch: u64,
    /// An acquire sent before a resign or shutdown: its lease is released, not used.
    discard: bool,
}

enum WatchState {
    Pending,
    Requested,
    Retry(Instant),
    Done,
}

struct Stopping {
    reply: Sender<Result<()>>,
    give_up_at: Instant,
}

struct Heartbeat {
    backend: &'static str,
    config: Arc<Config>,
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    next_id: u64,
    /// Calls sent to the I/O thread and not yet answered.
    outstanding: usize,
    in_flight: Option<InFlight>,
    role: Role,
    /// When to campaign (follower) or renew (leader) next.
    next_action: Instant,
    /// After a resign, no campaign before this.
    no_campaign_before: Instant,
    /// Consecutive failed calls, for back-off.
    failures: u32,
    /// A wake-up arrived while a campaign was in flight.
    woken: bool,
    watch: WatchState,
    /// Kept so the wake-up channel never disconnects (which would make `select!` spin).
    wakeup: Wakeup,
    _watch_guard: Option<Watch>,
    stopping: Option<Stopping>,
    release_error: Option<Error>,
    /// When the last campaign was sent (for the wake-up rate limit).
    last_campaign: Instant,
    /// The I/O thread is gone.
    io_dead: bool,
    /// Leases whose release failed with a transient error, to retry.
    unreleased: Vec<Lease>,
}

impl Heartbeat {
    fn run(
        mut self,
        mut commands: Receiver<Command>,
        mut outcomes: Receiver<(u64, Outcome)>,
        wakeups: Receiver<()>,
    ) {
        log::debug!(
            "leader election {:?}: {} starts on {}",
            self.config.group,
            self.config.participant_id,
            self.backend
        );
        loop {
            let now = Instant::now();
            self.check_deadline(now);
            if self.io_dead {
                self.step_down(LostReason::ShutDown, false);
                break;
            }
            if let Some(stopping) = &self.stopping {
                if self.outstanding == 0 || now >= stopping.give_up_at {
                    break;
                }
            } else {
                self.start_calls(now);
            }
            let wake_at = self.wake_at();
            let timeout = wake_at.saturating_duration_since(Instant::now());
            select! {
                recv(commands) -> cmd => match cmd {
                    Ok(Command::Resign) => self.resign(),
                    Ok(Command::Shutdown(reply)) => self.begin_stop(reply),
                    // The handle is gone without a shutdown: stop anyway.
                    Err(_) => {
                        commands = crossbeam_channel::never();
                        if self.stopping.is_none() {
                            let (tx, _) = crossbeam_channel::bounded(1);
                            self.begin_stop(tx);
                        }
                    }
                },
                recv(outcomes) -> out => match out {
                    Ok((id, outcome)) => {
                        self.outstanding = self.outstanding.saturating_sub(1);
                        self.on_outcome(id, outcome);
                    }
                    Err(_) => {
                        outcomes = crossbeam_channel::never();
                        self.io_dead = true;
                    }
                },
                recv(wakeups) -> _ => self.on_wakeup(),
                default(timeout) => {}
            }
        }
        self.finish();
    }

    /// When the loop must wake up even if nothing arrives.
    fn wake_at(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut at = far;
        if let Role::Leader { deadline, .. } = &self.role {
            at = at.min(*deadline);
        }
        if let Some(stopping) = &self.stopping {
            at = at.min(stopping.give_up_at);
        } else if self.outstanding == 0 {
            at = at.min(self.next_action);
            if let (WatchState::Retry(t), Role::Follower) = (&self.watch, &self.role) {
                at = at.min(*t);
            }
        }
        at
    }

    fn send(&mut self, call: Call, deadline: Instant) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        if self.jobs.send(Job { id, call, deadline }).is_ok() {
            self.outstanding += 1;
        } else {
            // The I/O thread is gone (it cannot be, short of a bug): stop rather than spin.
            log::error!(
                "leader election {:?}: the I/O thread is gone; stopping",
                self.config.group
            );
            self.io_dead = true;
        }
        id
    }

    fn start_calls(&mut self, now: Instant) {
        if self.outstanding > 0 {
            return;
        }
        // Establish the watch first, once (retried after failures).
        // Never ahead of a leader's renew: only followers (re)establish the watch.
        let due = matches!(self.role, Role::Follower)
            && match self.watch {
                WatchState::Pending => true,
                WatchState::Retry(t) => now >= t,
                WatchState::Requested | WatchState::Done => false,
            };
        if due {
            let call = Call::Watch(self.config.group.clone(), self.wakeup.clone());
            self.send(call, now + self.config.heartbeat_interval);
            self.watch = WatchState::Requested;
        }
        if self.outstanding > 0 || now < self.next_action {
            return;
        }
        // Leases whose release failed go first (only a follower has any).
        if matches!(self.role, Role::Follower)
            && let Some(lease) = self.unreleased.pop()
        {
            self.send(Call::Release(lease), now + self.config.heartbeat_interval);
            // As after a resign: let the others campaign first.
            self.no_campaign_before = now + self.config.retry_interval;
            return;
        }
        match &self.role {
            Role::Follower => {
                if now < self.no_campaign_before {
                    self.next_action = self.no_campaign_before;
                    return;
                }
                let mut req = AcquireRequest::new(
                    self.config.group.clone(),
                    self.config.participant_id.clone(),
                    self.config.lease_ttl,
                );
                req.metadata = self.config.metadata.clone();
                let deadline = now + self.config.heartbeat_interval;
                let id = self.send(Call::Acquire(req), deadline);
                self.in_flight = Some(InFlight {
                    id,
                    op: Op::Acquire,
                    sent: now,
                    epoch: self.shared.resign_epoch(),
                    discard: false,
                });
                self.last_campaign = now;
                self.woken = false;
            }
            Role::Leader { lease, deadline } => {
                let (lease, deadline) = (lease.clone(), *deadline);
                let id = self.send(Call::Renew(lease), deadline);
                self.in_flight = Some(InFlight {
                    id,
                    op: Op::Renew,
                    sent: now,
                    epoch: self.shared.resign_epoch(),
                    discard: false,
                });
            }
        }
    }

    fn check_deadline(&mut self, now: Instant) {
        let expired = matches!(&self.role, Role::Leader { deadline, .. } if now >= *deadline);
        if expired {
            self.step_down(LostReason::DeadlinePassed, true);
            self.next_action = now;
        }
    }

    /// Leaves the leader role, tells subscribers and (if `release`) releases the lease.
    fn step_down(&mut self, reason: LostReason, release: bool) {
        let Role::Leader { lease, .. } = std::mem::replace(&mut self.role, Role::Follower) else {
            return;
        };
        self.shared.lost(LeadershipChange::Lost {
            fencing_token: lease.fencing_token(),
            reason,
        });
        log::log!(
            if reason == LostReason::DeadlinePassed {
                log::Level::Warn
            } else {
                log::Level::Info
            },
            "leader election {:?}: {} lost leadership (token {}): {reason}",
            self.config.group,
            self.config.participant_id,
            lease.fencing_token()
        );
        if release {
            let deadline = Instant::now() + self.config.heartbeat_interval;
            self.send(Call::Release(lease), deadline);
        }
    }

    fn resign(&mut self) {
        let now = Instant::now();
        self.no_campaign_before = now + self.config.retry_interval;
        // Not the old renew schedule: campaign again once the cool-down is over.
        self.next_action = self.no_campaign_before;
        if let Some(f) = &mut self.in_flight
            && f.op == Op::Acquire
        {
            f.discard = true;
        }
        self.step_down(LostReason::Resigned, true);
    }

    fn begin_stop(&mut self, reply: Sender<Result<()>>) {
        if self.stopping.is_some() {
            let _ = reply.send(Ok(()));
            return;
        }
        if let Some(f) = &mut self.in_flight
            && f.op == Op::Acquire
        {
            f.discard = true;
        }
        self.step_down(LostReason::ShutDown, true);
        for lease in std::mem::take(&mut self.unreleased) {
            self.send(
                Call::Release(lease),
                Instant::now() + self.config.heartbeat_interval,
            );
        }
        let withdraw = Call::Withdraw(
            self.config.group.clone(),
            self.config.participant_id.clone(),
        );
        self.send(withdraw, Instant::now() + self.config.heartbeat_interval);
        let give_up_at = Instant::now() + self.config.shutdown_wait();
        self.stopping = Some(Stopping { reply, give_up_at });
    }

    /// The soonest a wake-up may trigger a campaign after the previous one, so followers whose
    /// campaigns wake each other cannot hammer the backend.
    fn wake_floor(&self) -> Instant {
        let gap = (self.config.retry_interval / 4).min(Duration::from_millis(50));
        (self.last_campaign + gap).max(self.no_campaign_before)
    }

    fn on_wakeup(&mut self) {
        if matches!(self.role, Role::Follower) {
            let now = Instant::now();
            self.next_action = self.next_action.min(now.max(self.wake_floor()));
            if self.in_flight.is_some() {
                self.woken = true;
            }
        }
    }

    fn backoff(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let factor = 1u32 << self.failures.min(3);
        util::jitter(self.config.retry_interval * factor / 2, 0.5, 1.0)
    }

    fn on_outcome(&mut self, id: u64, outcome: Outcome) {
        let in_flight = match &self.in_flight {
            Some(f) if f.id == id => self.in_flight.take(),
            _ => None,
        };
        let now = Instant::now();
        // A result arriving after the deadline must not revive the term.
        self.check_deadline(now);
        match outcome {
            Outcome::Acquire(result) => {
                let Some(f) = in_flight else { return };
                self.on_acquire(f, result, now);
            }
            Outcome::Renew(result) => {
                let Some(f) = in_flight else { return };
                self.on_renew(f, result, now);
            }
            Outcome::Release(Ok(()), _) => {}
            Outcome::Release(Err(e), lease) => {
                if self.stopping.is_some() {
                    log::warn!(
                        "leader election {:?}: releasing on shutdown failed (the lease will \
                         expire): {}",
                        self.config.group,
                        e.report()
                    );
                    self.release_error = Some(e);
                } else if let (Some(lease), true) = (lease, e.is_transient()) {
                    // Retry before the next campaign: until released, a backend that keeps a
                    // place per participant (ZooKeeper) holds the group for this term.
                    log::warn!(
                        "leader election {:?}: releasing the lease failed, will retry: {}",
                        self.config.group,
                        e.report()
                    );
                    if self.unreleased.len() >= 8 {
                        self.unreleased.remove(0);
                    }
                    self.unreleased.push(lease);
                    self.next_action = self.next_action.max(now + self.backoff());
                } else {
                    log::warn!(
                        "leader election {:?}: releasing the lease failed (it will expire): {}",
                        self.config.group,
                        e.report()
                    );
                }
            }
            Outcome::Watch(Ok(guard)) => {
                self._watch_guard = guard;
                self.watch = WatchState::Done;
            }
            Outcome::Watch(Err(e)) => {
                log::warn!(
                    "leader election {:?}: watching for changes failed (polling meanwhile): {}",
                    self.config.group,
                    e.report()
                );
                self.watch = WatchState::Retry(now + self.config.retry_interval * 4);
            }
        }
    }

    fn on_acquire(&mut self, f: InFlight, result: Result<Acquisition>, now: Instant) {
        match result {
            Ok(Acquisition::Acquired(lease)) => {
                self.failures = 0;
                let deadline = f.sent + self.config.validity();
                let adopted = !f.discard
                    && self.stopping.is_none()
                    && matches!(self.role, Role::Follower)
                    && now < deadline
                    && self.shared.acquired(lease.info.clone(), deadline, f.epoch);
                if !adopted {
                    log::debug!(
                        "leader election {:?}: releasing a lease acquired too late to use",
                        self.config.group
                    );
                    self.send(Call::Release(lease), now + self.config.heartbeat_interval);
                    self.next_action = self.next_poll(now);
                    return;
                }
                log::info!(
                    "leader election {:?}: {} is leader (token {})",
                    self.config.group,
                    self.config.participant_id,
                    lease.fencing_token()
                );
                self.role = Role::Leader { lease, deadline };
                self.next_action = f.sent + self.config.heartbeat_interval;
            }
            Ok(Acquisition::Held(leader)) => {
                self.failures = 0;
                if self.stopping.is_none() {
                    self.shared.observe(leader);
                }
                self.next_action = if self.woken {
                    now.max(self.wake_floor())
                } else {
                    self.next_poll(now)
                };
            }
            Err(e) => {
                self.log_error("campaign", &e);
                self.next_action = now + self.backoff();
            }
        }
        self.woken = false;
    }

    fn on_renew(&mut self, f: InFlight, result: Result<Renewal>, now: Instant) {
        let Role::Leader { lease, deadline } = &mut self.role else {
            // Stepped down meanwhile; the release queued then follows this call.
            return;
        };
        match result {
            Ok(Renewal::Renewed) => {
                self.failures = 0;
                let new_deadline = f.sent + self.config.validity();
                if new_deadline > *deadline {
                    *deadline = new_deadline;
                    self.shared.extend(lease.fencing_token(), new_deadline);
                }
                self.next_action = f.sent + self.config.heartbeat_interval;
                log::trace!("leader election {:?}: renewed", self.config.group);
            }
            Ok(Renewal::Lost(leader)) => {
                // Release anyway: it frees whatever the provider still keeps for this term.
                self.step_down(LostReason::Superseded, true);
                self.shared.observe(leader);
                self.next_action = self.next_poll(now);
            }
            Err(e) => {
                self.log_error("renew", &e);
                self.failures = self.failures.saturating_add(1);
                self.next_action = now
                    + self
                        .config
                        .retry_interval
                        .min(self.config.heartbeat_interval)
                        / 2;
            }
        }
    }

    fn log_error(&self, what: &str, e: &Error) {
        let level = if e.is_transient() {
            log::Level::Warn
        } else {
            log::Level::Error
        };
        log::log!(
            level,
            "leader election {:?}: {what} failed, will retry: {}",
            self.config.group,
            e.report()
        );
    }

    /// The next poll of a follower: one retry interval, jittered down to half.
    fn next_poll(&self, now: Instant) -> Instant {
        now + util::jitter(self.config.retry_interval, 0.5, 1.0)
    }

    fn finish(self) {
        let gave_up = self.outstanding > 0
            && self
                .stopping
                .as_ref()
                .is_some_and(|s| Instant::now() >= s.give_up_at);
        let result = if gave_up {
            Err(Error::Timeout {
                backend: self.backend,
                operation: "release on shutdown",
                timeout: self.config.shutdown_wait(),
            })
        } else {
            self.release_error.map_or(Ok(()), Err)
        };
        self.shared.close();
        log::debug!(
            "leader election {:?}: {} stopped",
            self.config.group,
            self.config.participant_id
        );
        if let Some(stopping) = self.stopping {
            let _ = stopping.reply.send(result);
        }
    }
}
