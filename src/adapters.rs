//! Iterator adapters over leadership changes.

use crate::change::{LeadershipChange, LostReason};
use crate::lease::LeaderInfo;

/// Adapters for any iterator of [`LeadershipChange`]s, such as [`crate::Changes`].
///
/// They compose with std's `filter`, `take`, `by_ref` and friends.
///
/// ```
/// use leader_election::{ChangesExt, Elector, MemoryProvider};
///
/// let elector = Elector::builder(MemoryProvider::new()).group("doc-ext").start().unwrap();
/// let mut changes = elector.subscribe();
/// // Wait to lead, then do leader work until leadership ends.
/// let acquired = changes.by_ref().take_until_leader().last();
/// assert!(acquired.unwrap().is_acquired());
/// elector.resign();
/// let ended: Vec<_> = changes.while_leader().collect();
/// assert!(ended.last().unwrap().is_lost());
/// ```
pub trait ChangesExt: Iterator<Item = LeadershipChange> + Sized {
    /// Yields changes up to and including the first [`LeadershipChange::Acquired`], then ends.
    /// On an elector that already leads it yields that one item at once.
    fn take_until_leader(self) -> TakeUntilLeader<Self> {
        TakeUntilLeader {
            inner: self,
            done: false,
        }
    }

    /// Yields changes while this participant leads: up to and including the first
    /// [`LeadershipChange::Lost`]. If the first change says another participant leads (or
    /// nobody does), it ends at once without yielding it.
    fn while_leader(self) -> WhileLeader<Self> {
        WhileLeader {
            inner: self,
            done: false,
            seen_acquired: false,
        }
    }

    /// Drops a change that says the same as the one before it (same kind, same leader, same
    /// fencing token; for `Lost`, the same reason).
    ///
    /// ```
    /// use leader_election::{ChangesExt, LeadershipChange};
    ///
    /// let none = || LeadershipChange::LeaderChanged { leader: None };
    /// let out: Vec<_> = vec![none(), none(), none()].into_iter().distinct_until_changed().collect();
    /// assert_eq!(out.len(), 1);
    /// ```
    fn distinct_until_changed(self) -> DistinctUntilChanged<Self> {
        DistinctUntilChanged {
            inner: self,
            last: None,
        }
    }

    /// Calls `on_acquired` with the leader record for every `Acquired` and `on_lost` with the
    /// reason for every `Lost`, passing every change through unchanged.
    ///
    /// ```
    /// use leader_election::{ChangesExt, Elector, MemoryProvider};
    ///
    /// let elector = Elector::builder(MemoryProvider::new()).group("doc-on").start().unwrap();
    /// let mut tokens = Vec::new();
    /// elector
    ///     .subscribe()
    ///     .on_transition(|leader| tokens.push(leader.fencing_token), |_reason| {})
    ///     .take_until_leader()
    ///     .for_each(drop);
    /// assert_eq!(tokens.len(), 1);
    /// ```
    fn on_transition<A, L>(self, on_acquired: A, on_lost: L) -> OnTransition<Self, A, L>
    where
        A: FnMut(&LeaderInfo),
        L: FnMut(LostReason),
    {
        OnTransition {
            inner: self,
            on_acquired,
            on_lost,
        }
    }
}

impl<I: Iterator<Item = LeadershipChange>> ChangesExt for I {}

/// See [`ChangesExt::take_until_leader`].
#[derive(Debug)]
pub struct TakeUntilLeader<I> {
    inner: I,
    done: bool,
}

impl<I: Iterator<Item = LeadershipChange>> Iterator for TakeUntilLeader<I> {
    type Item = LeadershipChange;

    fn next(&mut self) -> Option<LeadershipChange> {
        if self.done {
            return None;
        }
        let change = self.inner.next()?;
        if change.is_acquired() {
            self.done = true;
        }
        Some(change)
    }
}

/// See [`ChangesExt::while_leader`].
#[derive(Debug)]
pub struct WhileLeader<I> {
    inner: I,
    done: bool,
    seen_acquired: bool,
}

impl<I: Iterator<Item = LeadershipChange>> Iterator for WhileLeader<I> {
    type Item = LeadershipChange;

    fn next(&mut self) -> Option<LeadershipChange> {
        if self.done {
            return None;
        }
        let change = self.inner.next()?;
        match &change {
            LeadershipChange::Acquired { .. } => self.seen_acquired = true,
            LeadershipChange::Lost { .. } => self.done = true,
            LeadershipChange::LeaderChanged { .. } if !self.seen_acquired => {
                self.done = true;
                return None;
            }
            LeadershipChange::LeaderChanged { .. } => {}
        }
        Some(change)
    }
}

/// See [`ChangesExt::distinct_until_changed`].
#[derive(Debug)]
pub struct DistinctUntilChanged<I> {
    inner: I,
    last: Option<Key>,
}

#[derive(Debug, PartialEq, Eq)]
enum Key {
    Acquired(u64),
    Lost(u64, LostReason),
    Changed(Option<(String, u64)>),
}

fn key(change: &LeadershipChange) -> Key {
    match change {
        LeadershipChange::Acquired { fencing_token, .. } => Key::Acquired(*fencing_token),
        LeadershipChange::Lost {
            fencing_token,
            reason,
        } => Key::Lost(*fencing_token, *reason),
        LeadershipChange::LeaderChanged { leader } => Key::Changed(
            leader
                .as_ref()
                .map(|l| (l.participant_id.clone(), l.fencing_token)),
        ),
    }
}

impl<I: Iterator<Item = LeadershipChange>> Iterator for DistinctUntilChanged<I> {
    type Item = LeadershipChange;

    fn next(&mut self) -> Option<LeadershipChange> {
        loop {
            let change = self.inner.next()?;
            let k = key(&change);
            if self.last.as_ref() != Some(&k) {
                self.last = Some(k);
                return Some(change);
            }
        }
    }
}

/// See [`ChangesExt::on_transition`].
#[derive(Debug)]
pub struct OnTransition<I, A, L> {
    inner: I,
    on_acquired: A,
    on_lost: L,
}

impl<I, A, L> Iterator for OnTransition<I, A, L>
where
    I: Iterator<Item = LeadershipChange>,
    A: FnMut(&LeaderInfo),
    L: FnMut(LostReason),
{
    type Item = LeadershipChange;

    fn next(&mut self) -> Option<LeadershipChange> {
        let change = self.inner.next()?;
        match &change {
            LeadershipChange::Acquired { leader, .. } => (self.on_acquired)(leader),
            LeadershipChange::Lost { reason, .. } => (self.on_lost)(*reason),
            LeadershipChange::LeaderChanged { .. } => {}
        }
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn info(who: &str, t: u64) -> LeaderInfo {
        let mut i = LeaderInfo::new("g", who, t, BTreeMap::new());
        i.since = std::time::UNIX_EPOCH;
        i
    }
    fn acquired(t: u64) -> LeadershipChange {
        LeadershipChange::Acquired {
            fencing_token: t,
            leader: info("me", t),
        }
    }
    fn lost(t: u64) -> LeadershipChange {
        LeadershipChange::Lost {
            fencing_token: t,
            reason: LostReason::Resigned,
        }
    }
    fn other(t: u64) -> LeadershipChange {
        LeadershipChange::LeaderChanged {
            leader: Some(info("other", t)),
        }
    }

    #[test]
    fn take_until_leader_stops_after_acquired() {
        let v = vec![other(1), other(2), acquired(3), lost(3)];
        let out: Vec<_> = v.into_iter().take_until_leader().collect();
        assert_eq!(out, vec![other(1), other(2), acquired(3)]);
    }

    #[test]
    fn while_leader_stops_after_lost() {
        let v = vec![acquired(3), lost(3), acquired(5)];
        let out: Vec<_> = v.into_iter().while_leader().collect();
        assert_eq!(out, vec![acquired(3), lost(3)]);
        let v = vec![other(1), acquired(3)];
        assert_eq!(v.into_iter().while_leader().count(), 0);
    }

    #[test]
    fn distinct_drops_repeats_only() {
        let v = vec![
            other(1),
            other(1),
            other(2),
            other(1),
            acquired(3),
            acquired(3),
        ];
        let out: Vec<_> = v.into_iter().distinct_until_changed().collect();
        assert_eq!(out, vec![other(1), other(2), other(1), acquired(3)]);
    }

    #[test]
    fn on_transition_sees_both_and_composes_with_filter() {
        let (mut a, mut l) = (Vec::new(), Vec::new());
        let v = vec![other(1), acquired(2), lost(2), acquired(4)];
        let n = v
            .into_iter()
            .on_transition(|i| a.push(i.fencing_token), |r| l.push(r))
            .filter(|c| c.is_acquired())
            .take(1)
            .count();
        assert_eq!(n, 1);
        assert_eq!(a, vec![2]);
        assert!(l.is_empty()); // take(1) stopped before the Lost
    }
}
