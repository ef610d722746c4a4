//! An elector's state as its user reads it: the current [`Term`], and its health, as [`crate::Elector::status`] reports it: its role and term, how long
//! since the backend last answered, consecutive failures and the last error (its text never
//! holds a secret), whether the push watch is established, and how long the backend call in
//! flight has been running. The heartbeat thread and the I/O pool keep a [`Health`] record up to date;
//! a status is a snapshot of it.

use std::time::{Duration, Instant};

use crate::clock::Moment;
use crate::error::Error;
use crate::lease::LeaderInfo;

/// One term of this participant's leadership, as [`crate::Elector::term`] reads it at once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Term {
    /// The term's fencing token.
    pub fencing_token: u64,
    /// Until when the term is valid (monotonic clock): finish leader work before it.
    pub deadline: Instant,
    /// The leader record of the term (this participant's).
    pub leader: LeaderInfo,
}

/// What an elector is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Not started yet.
    NotStarted,
    /// Campaigning (or waiting for its turn).
    Follower,
    /// Leading: [`Status::term`] says until when.
    Leader,
    /// Shut down (or its heartbeat thread ended).
    Stopped,
}

/// A snapshot of an elector's health; see [`crate::Elector::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// What the elector is doing.
    pub role: Role,
    /// The current term, while leading.
    pub term: Option<Term>,
    /// How long ago the backend last answered a campaign or renew successfully (`None`: never).
    pub since_last_success: Option<Duration>,
    /// Campaigns and renews that failed in a row since the last success.
    pub consecutive_failures: u32,
    /// The last campaign or renew error, with its causes (never a secret), until a success.
    pub last_error: Option<String>,
    /// Whether the backend pushes this group's changes to the elector now (a watch is
    /// established); `false` also for backends that cannot push.
    pub watch_established: bool,
    /// The backend call in flight, and how long it has been running.
    pub call_in_flight: Option<(&'static str, Duration)>,
}

/// What the heartbeat thread and the I/O pool record for [`Status`].
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub(crate) last_success: Option<Moment>,
    pub(crate) failures: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) watch: bool,
    /// The call in flight: its name and when it began.
    pub(crate) call: Option<(&'static str, Moment)>,
    pub(crate) stopped: bool,
}

impl Health {
    pub(crate) fn succeeded(&mut self, now: Moment) {
        self.last_success = Some(now);
        self.failures = 0;
        self.last_error = None;
    }

    pub(crate) fn failed(&mut self, e: &Error) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(e.report());
    }
}
