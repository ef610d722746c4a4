//! How the state machine takes each answer from the I/O pool: a campaign's result (adopt
//! the lease, or release it, or note the leader), a renew's (extend the deadline, or step
//! down), a failed release (retry it later, or report it on shutdown), a watch's. Every
//! answer first ends a term whose deadline has passed, so a late one cannot revive it.

use super::{Campaign, Machine, Phase, WatchState};
use crate::change::LostReason;
use crate::clock::Moment;
use crate::error::{Error, Result};
use crate::heartbeat::io::{Call, Outcome};
use crate::lease::{Acquisition, Lease, Renewal};
use crate::{telemetry, util};

impl Machine {
    /// The campaign with this id, taken out of the phase (it is answered).
    fn take_campaign(&mut self, id: u64) -> Option<Campaign> {
        match &mut self.phase {
            Phase::Following { campaign } | Phase::Stopping { campaign, .. }
                if campaign.as_ref().is_some_and(|c| c.id == id) =>
            {
                campaign.take()
            }
            _ => None,
        }
    }

    /// The send time of the renew with this id, taken out of the phase (it is answered).
    fn take_renew(&mut self, id: u64) -> Option<Moment> {
        match &mut self.phase {
            Phase::Leading { renew, .. } if renew.is_some_and(|(r, _)| r == id) => {
                renew.take().map(|(_, sent)| sent)
            }
            _ => None,
        }
    }

    /// An answer from the I/O pool, which it gave at `answered`.
    pub(in crate::heartbeat) fn on_outcome(&mut self, id: u64, outcome: Outcome, answered: Moment) {
        self.io.answered(id);
        let now = self.now();
        // A result arriving after the deadline must not revive the term.
        self.check_deadline(now);
        match outcome {
            Outcome::Acquire(result) => {
                let Some(c) = self.take_campaign(id) else {
                    return;
                };
                self.on_acquire(c, result, now);
            }
            Outcome::Renew(result) => {
                // None if stepped down meanwhile; the release queued then follows this call.
                let Some(sent) = self.take_renew(id) else {
                    return;
                };
                self.on_renew(sent, result, now, answered);
            }
            Outcome::Release(Ok(()), _) => {}
            Outcome::Release(Err(e), lease) => self.on_release_failed(e, lease, now),
            Outcome::Watch(Ok(guard)) => {
                let established = guard.is_some();
                self.shared.health().watch = established;
                self._watch_guard = guard;
                self.watch = WatchState::Done;
                // A change made before the watch started was not pushed: campaign soon, as
                // after a wake-up (a no-op at start, when the first campaign is due anyway).
                if established {
                    self.on_wakeup();
                }
            }
            Outcome::Watch(Err(e)) => {
                self.shared.health().watch = false;
                log::warn!(
                    "leader election {:?}: watching for changes failed (polling meanwhile): {}",
                    self.config.group,
                    e.report()
                );
                self.watch = WatchState::Retry(now + self.config.retry_interval * 4);
            }
        }
    }

    fn on_acquire(&mut self, c: Campaign, result: Result<Acquisition>, now: Moment) {
        let following = matches!(self.phase, Phase::Following { .. });
        let outcome = match &result {
            Ok(Acquisition::Acquired(_)) => "acquired",
            Ok(Acquisition::Held(_)) => "held",
            Err(_) => "error",
        };
        let took = now.saturating_duration_since(c.sent);
        telemetry::call_answered(&self.config.group, self.backend, false, outcome, took);
        match &result {
            Ok(_) => self.shared.health().succeeded(now),
            Err(e) => self.shared.health().failed(e),
        }
        match result {
            Ok(Acquisition::Acquired(lease)) => {
                self.failures = 0;
                let deadline = c.sent + self.config.validity();
                // Not discarded, not stopping, still a follower, before the deadline, and no
                // resign since it was sent.
                let adopted = !c.discard
                    && following
                    && now < deadline
                    && self.shared.acquired(lease.info.clone(), deadline, c.epoch);
                if !adopted {
                    log::debug!(
                        "leader election {:?}: releasing a lease acquired too late to use",
                        self.config.group
                    );
                    self.io
                        .send(Call::Release(lease), now + self.config.heartbeat_interval);
                    self.next_action = self.next_poll(now);
                    return;
                }
                log::info!(
                    "leader election {:?}: {} is leader (token {})",
                    self.config.group,
                    self.config.participant_id,
                    lease.fencing_token()
                );
                telemetry::term_won(&self.config.group, self.backend);
                self.phase = Phase::Leading {
                    lease,
                    deadline,
                    renew: None,
                };
                // The first renew comes after a random part of the interval: electors started
                // together (thousands, for sharded work) then renew spread out over it rather
                // than all at once, every interval, queueing on the backend.
                self.next_action = c.sent + util::jitter(self.config.heartbeat_interval, 0.5, 1.0);
            }
            Ok(Acquisition::Held(leader)) => {
                self.failures = 0;
                let expires_in = leader.as_ref().map(|l| l.expires_in);
                if following {
                    self.shared.observe(leader);
                }
                self.next_action = if c.woken {
                    now.max(self.wake_floor())
                } else {
                    self.idle_poll(now, expires_in)
                };
            }
            Err(e) => {
                telemetry::backend_error(&self.config.group, self.backend, "campaign", &e);
                self.log_error("campaign", &e);
                self.next_action = now + self.backoff();
            }
        }
    }

    /// A renew's answer, sent at `sent`, answered at `answered`, read `now`.
    fn on_renew(&mut self, sent: Moment, result: Result<Renewal>, now: Moment, answered: Moment) {
        let outcome = match &result {
            Ok(Renewal::Renewed) => "renewed",
            Ok(Renewal::Lost(_)) => "lost",
            Err(_) => "error",
        };
        let took = answered.saturating_duration_since(sent);
        telemetry::call_answered(&self.config.group, self.backend, true, outcome, took);
        match &result {
            Ok(_) => self.shared.health().succeeded(answered),
            Err(e) => {
                self.shared.health().failed(e);
                telemetry::backend_error(&self.config.group, self.backend, "renew", e);
            }
        }
        let Phase::Leading {
            lease, deadline, ..
        } = &mut self.phase
        else {
            return;
        };
        match result {
            Ok(Renewal::Renewed) => {
                self.failures = 0;
                let new_deadline = sent + self.config.validity();
                if new_deadline > *deadline {
                    *deadline = new_deadline;
                    self.shared.extend(lease.fencing_token(), new_deadline);
                }
                self.next_action = sent + self.config.heartbeat_interval;
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

    fn on_release_failed(&mut self, e: Error, lease: Option<Lease>, now: Moment) {
        if let Phase::Stopping { release_error, .. } = &mut self.phase {
            log::warn!(
                "leader election {:?}: releasing on shutdown failed (the lease will expire): {}",
                self.config.group,
                e.report()
            );
            *release_error = Some(e);
        } else if let (Some(lease), true) = (lease, e.is_transient()) {
            // Retry before the next campaign: until released, a backend that keeps a place
            // per participant (ZooKeeper) holds the group for this term.
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
}
