//! The heartbeat's state machine: what one elector does next, and what it makes of each
//! answer from the I/O pool. It is in one [`Phase`] — following (campaigning now and then),
//! leading (renewing, until a local deadline), or stopping (waiting for the last releases) —
//! and the phase holds the call that can change it: a follower's campaign, a leader's renew.
//! It sends calls through the [`IoLink`] and never blocks; the heartbeat thread (`mod.rs`)
//! feeds it commands, answers, wake-ups and the passing of time. This file holds the phases
//! and what the machine starts; `state/outcomes.rs`, what it makes of the answers.
//!
//! The rules that keep two participants from both leading: a term ends at its local deadline
//! (the *send* time of the last confirmed renew or acquire + TTL − margin), checked before
//! any answer is used, so a late answer never revives a term; and a won lease is adopted only
//! if nothing — resign, shutdown, the deadline — overtook the campaign; else it is released.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::io::{Call, IoLink, Outcome, Outcomes};
use crate::change::{LeadershipChange, LostReason};
use crate::clock::Moment;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, Lease};
use crate::provider::{Wakeup, Watch};
use crate::shared::Shared;
use crate::{telemetry, util};

mod outcomes;

/// Where the elector stands.
enum Phase {
    /// Not leading: campaigns at `next_action`.
    Following {
        /// The campaign out at the I/O pool, if any.
        campaign: Option<Campaign>,
    },
    /// Leading until `deadline`; renews at `next_action`.
    Leading {
        lease: Lease,
        /// Local deadline: send time of the last confirmed renew (or acquire) + TTL − margin.
        deadline: Moment,
        /// The renew out at the I/O pool, if any: its id and send time.
        renew: Option<(u64, Moment)>,
    },
    /// Shut down: sends nothing new, waits for the calls out until `give_up_at`. Final.
    Stopping {
        reply: Sender<Result<()>>,
        give_up_at: Moment,
        /// The last failed release or withdrawal, for the reply.
        release_error: Option<Error>,
        /// A campaign sent before the shutdown (discarded: a lease it wins is released).
        campaign: Option<Campaign>,
    },
}

/// A campaign (acquire call) out at the I/O pool.
struct Campaign {
    id: u64,
    sent: Moment,
    /// `Shared::resign_epoch` when sent: an acquire that a resign overtook is not adopted.
    epoch: u64,
    /// Sent before a resign or shutdown: its lease is released, not used.
    discard: bool,
    /// A wake-up arrived meanwhile: if the group turns out held, campaign again at the
    /// wake-up floor rather than after a full retry interval.
    woken: bool,
}

/// Whether the group's watch (change notifications) is established.
enum WatchState {
    Pending,
    Requested,
    Retry(Moment),
    Done,
}

/// See the module docs.
pub(super) struct Machine {
    backend: &'static str,
    config: Arc<Config>,
    shared: Arc<Shared>,
    io: IoLink,
    phase: Phase,
    /// When to campaign (follower) or renew (leader) next.
    next_action: Moment,
    /// After a resign (or a retried release), no campaign before this.
    no_campaign_before: Moment,
    /// When the last campaign was sent (for the wake-up rate limit).
    last_campaign: Moment,
    /// Consecutive failed calls, for back-off.
    failures: u32,
    watch: WatchState,
    /// Kept so the wake-up channel never disconnects (which would make `select!` spin).
    wakeup: Wakeup,
    _watch_guard: Option<Watch>,
    /// Leases whose release failed with a transient error, to retry (only a follower has
    /// any; at most 8).
    unreleased: Vec<Lease>,
    /// The start of the backend call last warned about as long-running.
    warned_call: Option<Moment>,
    /// The backend's push reports leases that end without a release, too.
    pushes_expiry: bool,
}

impl Machine {
    pub(super) fn new(
        backend: &'static str,
        config: Arc<Config>,
        shared: Arc<Shared>,
        io: IoLink,
        wakeup: Wakeup,
    ) -> Self {
        let now = shared.clock().now();
        Machine {
            backend,
            config,
            shared,
            io,
            phase: Phase::Following { campaign: None },
            next_action: now,
            no_campaign_before: now,
            last_campaign: now,
            failures: 0,
            watch: WatchState::Pending,
            wakeup,
            _watch_guard: None,
            unreleased: Vec::new(),
            warned_call: None,
            pushes_expiry: false,
        }
    }

    /// Tells the machine that the backend's push reports expired leases too (see
    /// [`Machine::idle_poll`]).
    pub(super) fn with_pushes_expiry(mut self, pushes: bool) -> Self {
        self.pushes_expiry = pushes;
        self
    }

    /// Now, on the elector's suspend-counting clock.
    pub(super) fn now(&self) -> Moment {
        self.shared.clock().now()
    }

    pub(super) fn config(&self) -> &Config {
        &self.config
    }

    pub(super) fn backend(&self) -> &'static str {
        self.backend
    }

    pub(super) fn is_stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
    }

    /// One turn of the heartbeat loop: ends a term whose deadline passed, then starts the
    /// calls that are due. Returns `false` when the thread should stop: a shutdown has no
    /// call left out (or gave up waiting).
    pub(super) fn turn(&mut self, now: Moment) -> bool {
        self.check_deadline(now);
        self.warn_of_a_long_call(now);
        if let Phase::Stopping { give_up_at, .. } = &self.phase {
            return self.io.outstanding() > 0 && now < *give_up_at;
        }
        self.start_calls(now);
        true
    }

    /// Logs a warning, once per call, when the oldest call not yet answered was sent longer
    /// than the heartbeat interval ago (running, or waiting for an I/O pool thread): a hung
    /// backend would otherwise leave a silent, permanent follower.
    fn warn_of_a_long_call(&mut self, now: Moment) {
        let Some((name, began)) = self.io.oldest_call() else {
            return;
        };
        let running = now.saturating_duration_since(began);
        if running > self.config.heartbeat_interval && self.warned_call != Some(began) {
            self.warned_call = Some(began);
            log::warn!(
                "leader election {:?}: the {name} call to {} was sent {running:?} ago, longer than \
                 the heartbeat interval, and is not answered; the backend (or the I/O pool) may \
                 be hung",
                self.config.group,
                self.backend
            );
        }
    }

    /// When the loop must wake up even if nothing arrives.
    pub(super) fn wake_at(&self) -> Moment {
        let far = self.now() + Duration::from_secs(3600);
        let mut at = far;
        if let Some((_, began)) = self.io.oldest_call()
            && self.warned_call != Some(began)
        {
            at = at.min(began + self.config.heartbeat_interval + Duration::from_millis(1));
        }
        match &self.phase {
            Phase::Leading { deadline, .. } => {
                at = at.min(*deadline);
                // When the next renew would be due: a quiet answer is read then.
                if let Some(until) = self.quiet_until()
                    && until > self.now()
                {
                    at = at.min(until);
                }
            }
            Phase::Stopping { give_up_at, .. } => return at.min(*give_up_at),
            Phase::Following { .. } => {}
        }
        if self.io.outstanding() == 0 {
            at = at.min(self.next_action);
            if let (WatchState::Retry(t), Phase::Following { .. }) = (&self.watch, &self.phase) {
                at = at.min(*t);
            }
        }
        at
    }

    /// While a leader's renew is the only call out: when the next renew would be due, if
    /// that leaves half a heartbeat interval before the deadline. Until then its successful
    /// answer may arrive without waking the heartbeat thread, which wakes then anyway (see
    /// `io::Outcomes`).
    pub(super) fn quiet_until(&self) -> Option<Moment> {
        match &self.phase {
            Phase::Leading {
                renew: Some((_, sent)),
                deadline,
                ..
            } if self.io.outstanding() == 1 => {
                let until = *sent + self.config.heartbeat_interval;
                (until + self.config.heartbeat_interval / 2 <= *deadline).then_some(until)
            }
            _ => None,
        }
    }

    fn start_calls(&mut self, now: Moment) {
        if self.io.outstanding() > 0 {
            return;
        }
        let following = matches!(self.phase, Phase::Following { .. });
        // Establish the watch first, once (retried after failures).
        // Never ahead of a leader's renew: only followers (re)establish the watch.
        let due = following
            && match self.watch {
                WatchState::Pending => true,
                WatchState::Retry(t) => now >= t,
                WatchState::Requested | WatchState::Done => false,
            };
        if due {
            let call = Call::Watch(self.config.group.clone(), self.wakeup.clone());
            self.io.send(call, now + self.config.heartbeat_interval);
            self.watch = WatchState::Requested;
        }
        if self.io.outstanding() > 0 || now < self.next_action {
            return;
        }
        // Leases whose release failed go first (only a follower has any).
        if following && let Some(lease) = self.unreleased.pop() {
            self.io
                .send(Call::Release(lease), now + self.config.heartbeat_interval);
            // As after a resign: let the others campaign first.
            self.no_campaign_before = now + self.config.retry_interval;
            return;
        }
        match &mut self.phase {
            Phase::Following { campaign } => {
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
                let id = self.io.send(Call::Acquire(req), deadline);
                *campaign = Some(Campaign {
                    id,
                    sent: now,
                    epoch: self.shared.resign_epoch(),
                    discard: false,
                    woken: false,
                });
                self.last_campaign = now;
            }
            Phase::Leading {
                lease,
                deadline,
                renew,
            } => {
                let id = self.io.send(Call::Renew(lease.clone()), *deadline);
                *renew = Some((id, now));
            }
            // Not called while stopping.
            Phase::Stopping { .. } => {}
        }
    }

    fn check_deadline(&mut self, now: Moment) {
        if matches!(&self.phase, Phase::Leading { deadline, .. } if now >= *deadline) {
            self.step_down(LostReason::DeadlinePassed, true);
            self.next_action = now;
        }
    }

    /// Leaves the leader role, tells subscribers and (if `release`) releases the lease.
    /// A renew still out is forgotten: its answer is ignored.
    fn step_down(&mut self, reason: LostReason, release: bool) {
        let following = Phase::Following { campaign: None };
        let lease = match std::mem::replace(&mut self.phase, following) {
            Phase::Leading { lease, .. } => lease,
            other => {
                self.phase = other;
                return;
            }
        };
        self.shared.lost(LeadershipChange::Lost {
            fencing_token: lease.fencing_token(),
            reason,
        });
        telemetry::leadership_lost(&self.config.group, self.backend, reason);
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
            // On shutdown the release may take the whole shutdown timeout (a busy backend
            // must not turn a clean shutdown into an error after one heartbeat interval).
            let budget = if reason == LostReason::ShutDown {
                self.config.shutdown_wait()
            } else {
                self.config.heartbeat_interval
            };
            let deadline = self.now() + budget;
            self.io.send(Call::Release(lease), deadline);
        }
    }

    /// The handle's `resign()` (which already ended the term in [`Shared`]).
    pub(super) fn resign(&mut self) {
        let now = self.now();
        self.no_campaign_before = now + self.config.retry_interval;
        // Not the old renew schedule: campaign again once the cool-down is over.
        self.next_action = self.no_campaign_before;
        if let Phase::Following { campaign: Some(c) } = &mut self.phase {
            c.discard = true;
        }
        self.step_down(LostReason::Resigned, true);
    }

    /// Shuts down: steps down and releases, retries the unreleased, withdraws from the
    /// group's queue, and answers `reply` once those calls are answered or after
    /// [`Config::shutdown_wait`]. A second shutdown is answered `Ok(())` at once.
    pub(super) fn begin_stop(&mut self, reply: Sender<Result<()>>) {
        if self.is_stopping() {
            let _ = reply.send(Ok(()));
            return;
        }
        let give_up_at = self.now() + self.config.shutdown_wait();
        self.step_down(LostReason::ShutDown, true);
        // Every shutdown call may use the whole shutdown timeout.
        for lease in std::mem::take(&mut self.unreleased) {
            self.io.send(Call::Release(lease), give_up_at);
        }
        let withdraw = Call::Withdraw(
            self.config.group.clone(),
            self.config.participant_id.clone(),
        );
        self.io.send(withdraw, give_up_at);
        // After the step-down, a follower's phase: carry its campaign over, discarded.
        let campaign = match std::mem::replace(&mut self.phase, Phase::Following { campaign: None })
        {
            Phase::Following { campaign } => campaign.map(|c| Campaign { discard: true, ..c }),
            Phase::Leading { .. } | Phase::Stopping { .. } => None,
        };
        self.phase = Phase::Stopping {
            reply,
            give_up_at,
            release_error: None,
            campaign,
        };
    }

    /// The soonest a wake-up may trigger a campaign after the previous one, so followers whose
    /// campaigns wake each other cannot hammer the backend.
    fn wake_floor(&self) -> Moment {
        let gap = (self.config.retry_interval / 4).min(Duration::from_millis(50));
        (self.last_campaign + gap).max(self.no_campaign_before)
    }

    /// The backend reported a change (a release, a leader gone): a follower campaigns soon.
    pub(super) fn on_wakeup(&mut self) {
        let floor = self.wake_floor();
        let now = self.now();
        if let Phase::Following { campaign } = &mut self.phase {
            self.next_action = self.next_action.min(now.max(floor));
            if let Some(c) = campaign {
                c.woken = true;
            }
        }
    }

    fn backoff(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let factor = 1u32 << self.failures.min(3);
        util::jitter(self.config.retry_interval * factor / 2, 0.5, 1.0)
    }

    /// The next poll of a follower: one retry interval, jittered down to half.
    fn next_poll(&self, now: Moment) -> Moment {
        now + util::jitter(self.config.retry_interval, 0.5, 1.0)
    }

    /// The next poll of a follower that found the group held: `leader` is `None` if held
    /// without a known leader (a lock-delay, a queue place being re-made), which no push may
    /// announce the end of — then every retry interval — else the time the leader's lease had
    /// left, if the backend said. While the push is live, the follower
    /// relies on it for a hand-off and polls only as a safety net: at the idle poll interval
    /// if the push reports expired leases too, else just after the leader's lease would run
    /// out unless renewed (jittered over half a retry interval, so followers spread), and at
    /// the idle poll interval at the latest. Otherwise, every retry interval.
    fn idle_poll(&self, now: Moment, leader: Option<Option<Duration>>) -> Moment {
        let regular = self.next_poll(now);
        let live = self._watch_guard.as_ref().is_some_and(|w| w.is_live());
        let Some(expires_in) = leader else {
            return regular;
        };
        if !live || self.config.idle_poll_interval <= self.config.retry_interval {
            return regular;
        }
        let slow = util::jitter(self.config.idle_poll_interval, 0.75, 1.0);
        let wait = if self.pushes_expiry {
            slow
        } else if let Some(left) = expires_in {
            slow.min(left + util::jitter(self.config.retry_interval / 2, 0.1, 1.0))
        } else {
            return regular;
        };
        now + wait
    }

    /// Ends the elector: closes the subscriptions and answers the shutdown, if any, with
    /// [`Error::Timeout`] if it gave up with calls still out, else the last release error.
    /// Then closes its answers and releases any lease that a campaign won in an
    /// answer the loop did not read (it arrived after the shutdown gave up).
    pub(super) fn finish(mut self, outcomes: &Outcomes) {
        let now = self.now();
        let phase = std::mem::replace(&mut self.phase, Phase::Following { campaign: None });
        let (stopping, release_error) = match phase {
            Phase::Stopping {
                reply,
                give_up_at,
                release_error,
                ..
            } => (Some((reply, give_up_at)), release_error),
            Phase::Following { .. } | Phase::Leading { .. } => (None, None),
        };
        let gave_up = self.io.outstanding() > 0
            && stopping
                .as_ref()
                .is_some_and(|(_, give_up_at)| now >= *give_up_at);
        let result = if gave_up {
            Err(Error::Timeout {
                backend: self.backend,
                operation: "release on shutdown",
                timeout: self.config.shutdown_wait(),
            })
        } else {
            release_error.map_or(Ok(()), Err)
        };
        self.shared.close();
        log::debug!(
            "leader election {:?}: {} stopped",
            self.config.group,
            self.config.participant_id
        );
        if let Some((reply, _)) = stopping {
            let _ = reply.send(result);
        }
        self.io.close_answers();
        for (_, outcome, _) in outcomes.take() {
            if let Outcome::Acquire(Ok(Acquisition::Acquired(lease))) = outcome {
                log::debug!(
                    "leader election {:?}: releasing a lease acquired after the heartbeat stopped",
                    self.config.group
                );
                let deadline = self.now() + self.config.heartbeat_interval;
                self.io.send(Call::Release(lease), deadline);
            }
        }
    }
}
