//! State shared between an [`crate::Elector`] handle and its heartbeat thread: the current
//! term with its local deadline, the last observed leader, and the subscribers.

use crate::clock::{Clock, Moment};
use crate::status::Health;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::change::{EventKinds, LeadershipChange};
use crate::changes::Changes;
use crate::lease::LeaderInfo;

#[derive(Default)]
struct State {
    /// Our current term and the local deadline until which it is valid.
    term: Option<(LeaderInfo, Moment)>,
    /// The leader last observed while following.
    observed: Option<LeaderInfo>,
    subscribers: Vec<(EventKinds, Sender<LeadershipChange>)>,
    closed: bool,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Bumped by every `resign()`: an acquisition sent before it must not be adopted.
    resign_epoch: AtomicU64,
    /// The clock of the term's deadline (it counts time the machine was suspended).
    clock: Clock,
    /// What [`crate::Elector::status`] reports (its own lock: pool workers write it too).
    health: Mutex<Health>,
}

impl Shared {
    /// The elector's clock.
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The health record, to update or read.
    pub(crate) fn health(&self) -> parking_lot::MutexGuard<'_, Health> {
        self.health.lock()
    }

    /// Our term, if its deadline has not passed.
    pub(crate) fn term(&self) -> Option<(LeaderInfo, Moment)> {
        let state = self.state.lock();
        match &state.term {
            Some((info, deadline)) if self.clock.now() < *deadline => {
                Some((info.clone(), *deadline))
            }
            _ => None,
        }
    }

    /// The leader as far as this elector knows: our term while it lasts, else the leader last
    /// observed — but never our own term once its deadline passed (we no longer know who
    /// leads then, and must not claim it is us).
    pub(crate) fn leader(&self) -> Option<LeaderInfo> {
        let state = self.state.lock();
        known_leader(&state, self.clock.now())
    }

    /// Begins a term and tells subscribers — unless a `resign()` happened since `epoch`, in
    /// which case it returns `false` and changes nothing.
    pub(crate) fn acquired(&self, info: LeaderInfo, deadline: Moment, epoch: u64) -> bool {
        let mut state = self.state.lock();
        if self.resign_epoch.load(Ordering::SeqCst) != epoch {
            return false;
        }
        state.term = Some((info.clone(), deadline));
        state.observed = Some(info.clone());
        let change = LeadershipChange::Acquired {
            fencing_token: info.fencing_token,
            leader: info,
        };
        publish(&mut state, change);
        true
    }

    /// Moves the current term's deadline (after a confirmed renew).
    pub(crate) fn extend(&self, token: u64, deadline: Moment) {
        let mut state = self.state.lock();
        // A term whose deadline passed stays ended, whatever arrives late.
        if let Some((info, d)) = &mut state.term
            && info.fencing_token == token
            && self.clock.now() < *d
        {
            *d = deadline;
        }
    }

    /// Ends the current term at once, without telling subscribers yet (the heartbeat thread
    /// does, with the reason): used by `resign` so `is_leader()` is false when it returns.
    pub(crate) fn end_term_now(&self) {
        let mut state = self.state.lock();
        self.resign_epoch.fetch_add(1, Ordering::SeqCst);
        state.term = None;
        state.observed = None;
    }

    pub(crate) fn resign_epoch(&self) -> u64 {
        self.resign_epoch.load(Ordering::SeqCst)
    }

    /// Ends the current term and tells subscribers.
    pub(crate) fn lost(&self, change: LeadershipChange) {
        let mut state = self.state.lock();
        state.term = None;
        state.observed = None;
        publish(&mut state, change);
    }

    /// Records the leader seen while following; tells subscribers if it differs.
    pub(crate) fn observe(&self, leader: Option<LeaderInfo>) {
        let mut state = self.state.lock();
        let same = match (&state.observed, &leader) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.participant_id == b.participant_id && a.fencing_token == b.fencing_token
            }
            _ => false,
        };
        if !same {
            state.observed = leader.clone();
            publish(&mut state, LeadershipChange::LeaderChanged { leader });
        }
    }

    /// Subscribes; the stream starts with the current state.
    pub(crate) fn subscribe(&self, kinds: EventKinds) -> Changes {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut state = self.state.lock();
        if !state.closed {
            let now = self.clock.now();
            let first = match &state.term {
                Some((info, deadline)) if now < *deadline => Some(LeadershipChange::Acquired {
                    fencing_token: info.fencing_token,
                    leader: info.clone(),
                }),
                // Nothing known yet (or only our own ended term): the first change will follow.
                _ => known_leader(&state, now).map(|leader| LeadershipChange::LeaderChanged {
                    leader: Some(leader),
                }),
            };
            if let Some(first) = first.filter(|f| kinds.contains(f.kind())) {
                let _ = tx.send(first);
            }
            state.subscribers.push((kinds, tx));
        }
        Changes::new(rx)
    }

    /// Subscribes to what an [`crate::Observer`] reads: the stream starts with the leader last
    /// read (`None`: nobody leads), then carries each change of it.
    pub(crate) fn subscribe_observed(&self) -> Changes {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut state = self.state.lock();
        if !state.closed {
            let _ = tx.send(LeadershipChange::LeaderChanged {
                leader: state.observed.clone(),
            });
            state.subscribers.push((EventKinds::LEADER_CHANGED, tx));
        }
        Changes::new(rx)
    }

    /// Ends every subscription (the streams end once drained).
    pub(crate) fn close(&self) {
        self.health.lock().stopped = true;
        let mut state = self.state.lock();
        state.term = None;
        state.closed = true;
        state.subscribers.clear();
    }
}

/// See [`Shared::leader`].
fn known_leader(state: &State, now: Moment) -> Option<LeaderInfo> {
    match (&state.term, &state.observed) {
        (Some((info, deadline)), _) if now < *deadline => Some(info.clone()),
        (Some((info, _)), Some(seen))
            if seen.participant_id == info.participant_id
                && seen.fencing_token == info.fencing_token =>
        {
            None
        }
        (_, seen) => seen.clone(),
    }
}

fn publish(state: &mut State, change: LeadershipChange) {
    let kind = change.kind();
    // Unbounded channels: sending never blocks; a dropped subscriber is removed.
    state
        .subscribers
        .retain(|(kinds, tx)| !kinds.contains(kind) || tx.send(change.clone()).is_ok());
}
