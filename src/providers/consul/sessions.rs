//! The Consul provider's sessions: making one for a campaign (TTL, lock-delay, no health
//! checks), and keeping the one a participant made for a campaign it lost, for its next
//! campaign — used only while it is sure to live a lease TTL more, renewed first otherwise,
//! never shared by two campaigns at once, destroyed by `withdraw`.

use std::time::{Duration, Instant};

use super::ConsulProvider;
use super::api::{self, NewSession};
use super::options::{CONSUL_MAX_LOCK_DELAY, CONSUL_MAX_SESSION_TTL};
use crate::error::Result;
use crate::lease::AcquireRequest;

/// A session of ours and what we know of its life.
#[derive(Clone)]
pub(super) struct Session {
    pub(super) id: String,
    /// The lease TTL it was made for.
    pub(super) lease_ttl: Duration,
    /// Its TTL: it lives at least this long after `confirmed`.
    pub(super) ttl: Duration,
    /// When the last create or renew that Consul answered was sent.
    pub(super) confirmed: Instant,
}

impl ConsulProvider {
    /// A session that lives at least `request.ttl` from now: this participant's spare if it
    /// does (renewed if need be), else a new one.
    pub(super) fn session(&self, request: &AcquireRequest, deadline: Instant) -> Result<Session> {
        let slot = (request.group.clone(), request.participant_id.clone());
        // Taken out while in use: two campaigns never share a session.
        let spare = self.spares.lock().remove(&slot);
        if let Some(mut s) = spare {
            if s.lease_ttl == request.ttl {
                if s.confirmed + s.ttl >= Instant::now() + request.ttl {
                    return Ok(s);
                }
                let sent = Instant::now();
                match self.api.renew_session(&s.id, "acquire", deadline) {
                    Ok(true) => {
                        s.confirmed = sent;
                        return Ok(s);
                    }
                    Ok(false) => {} // gone: a new one below
                    Err(e) => {
                        self.keep_spare(request, s);
                        return Err(e);
                    }
                }
            } else {
                self.destroy_quietly(&s.id, deadline);
            }
        }
        let ttl = api::session_ttl(request.ttl, self.session_ttl_min).min(CONSUL_MAX_SESSION_TTL);
        let lock_delay = self
            .lock_delay
            .unwrap_or(request.ttl)
            .min(CONSUL_MAX_LOCK_DELAY);
        let name = format!("leader-election {}{}", self.prefix, request.group);
        let body = NewSession {
            name: &name,
            ttl: format!("{}s", ttl.as_secs()),
            lock_delay: api::go_duration(lock_delay),
            behavior: "release",
            node_checks: [],
            checks: [],
        };
        let sent = Instant::now();
        let id = self.api.create_session(&body, deadline)?;
        Ok(Session {
            id,
            lease_ttl: request.ttl,
            ttl,
            confirmed: sent,
        })
    }

    /// Whether `session` is this participant's spare.
    pub(super) fn is_spare(&self, request: &AcquireRequest, session: &str) -> bool {
        let slot = (request.group.clone(), request.participant_id.clone());
        self.spares
            .lock()
            .get(&slot)
            .is_some_and(|s| s.id == session)
    }

    pub(super) fn keep_spare(&self, request: &AcquireRequest, session: Session) {
        let slot = (request.group.clone(), request.participant_id.clone());
        if let Some(old) = self.spares.lock().insert(slot, session) {
            // Another campaign of the same participant left one too: it expires on its own.
            drop(old);
        }
    }

    pub(super) fn destroy_quietly(&self, id: &str, deadline: Instant) {
        if let Err(e) = self.api.destroy_session(id, deadline) {
            log::debug!(
                "consul: destroying an unused session failed (it expires on its own): {}",
                e.report()
            );
        }
    }
}
