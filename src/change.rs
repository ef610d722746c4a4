//! Leadership change events and the kinds used to filter them.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use crate::lease::LeaderInfo;

/// Why a participant stopped being leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// [`crate::Elector::resign`] was called.
    Resigned,
    /// The local deadline (last confirmed renew + TTL − safety margin) passed without a newer
    /// confirmed renew: the backend was slow, unreachable or hung.
    DeadlinePassed,
    /// The backend reported that the lease is no longer ours (another participant leads, or
    /// the lease expired or was deleted).
    Superseded,
    /// The elector shut down.
    ShutDown,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::Resigned => "resigned",
            LostReason::DeadlinePassed => "deadline passed without a confirmed renew",
            LostReason::Superseded => "superseded",
            LostReason::ShutDown => "shut down",
        })
    }
}

/// One change of leadership, as seen by one elector.
///
/// ```
/// use leader_election::{Elector, LeadershipChange, MemoryProvider};
///
/// let elector = Elector::builder(MemoryProvider::new()).group("doc-change").start().unwrap();
/// match elector.subscribe().recv().unwrap() {
///     LeadershipChange::Acquired { fencing_token, .. } => assert!(fencing_token > 0),
///     other => panic!("unexpected {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeadershipChange {
    /// This participant became leader.
    Acquired {
        /// The term's fencing token: pass it along with every write the leader makes.
        fencing_token: u64,
        /// The full leader record.
        leader: LeaderInfo,
    },
    /// This participant stopped being leader.
    Lost {
        /// The fencing token of the term that ended.
        fencing_token: u64,
        /// Why it ended.
        reason: LostReason,
    },
    /// Another participant became leader (`Some`), or nobody is known to lead (`None`).
    LeaderChanged {
        /// The new leader, if any.
        leader: Option<LeaderInfo>,
    },
}

impl LeadershipChange {
    /// The kind of this change, for filtering.
    pub fn kind(&self) -> EventKinds {
        match self {
            LeadershipChange::Acquired { .. } => EventKinds::ACQUIRED,
            LeadershipChange::Lost { .. } => EventKinds::LOST,
            LeadershipChange::LeaderChanged { .. } => EventKinds::LEADER_CHANGED,
        }
    }

    /// Whether this is [`LeadershipChange::Acquired`].
    pub fn is_acquired(&self) -> bool {
        matches!(self, LeadershipChange::Acquired { .. })
    }

    /// Whether this is [`LeadershipChange::Lost`].
    pub fn is_lost(&self) -> bool {
        matches!(self, LeadershipChange::Lost { .. })
    }
}

/// A set of [`LeadershipChange`] kinds, for [`crate::Elector::subscribe_filtered`].
///
/// ```
/// use leader_election::EventKinds;
///
/// let kinds = EventKinds::ACQUIRED | EventKinds::LOST;
/// assert!(kinds.contains(EventKinds::LOST));
/// assert!(!kinds.contains(EventKinds::LEADER_CHANGED));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKinds(u8);

impl EventKinds {
    /// [`LeadershipChange::Acquired`].
    pub const ACQUIRED: EventKinds = EventKinds(1);
    /// [`LeadershipChange::Lost`].
    pub const LOST: EventKinds = EventKinds(2);
    /// [`LeadershipChange::LeaderChanged`].
    pub const LEADER_CHANGED: EventKinds = EventKinds(4);
    /// Every kind.
    pub const ALL: EventKinds = EventKinds(7);

    /// Whether every kind in `other` is in `self`.
    pub fn contains(self, other: EventKinds) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for EventKinds {
    type Output = EventKinds;
    fn bitor(self, rhs: EventKinds) -> EventKinds {
        EventKinds(self.0 | rhs.0)
    }
}

impl BitOrAssign for EventKinds {
    fn bitor_assign(&mut self, rhs: EventKinds) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for EventKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (EventKinds::ACQUIRED, "ACQUIRED"),
            (EventKinds::LOST, "LOST"),
            (EventKinds::LEADER_CHANGED, "LEADER_CHANGED"),
        ]
        .iter()
        .filter(|(k, _)| self.contains(*k))
        .map(|(_, n)| *n)
        .collect();
        write!(f, "EventKinds({})", names.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let k = EventKinds::ACQUIRED | EventKinds::LEADER_CHANGED;
        assert!(k.contains(EventKinds::ACQUIRED));
        assert!(!k.contains(EventKinds::LOST));
        assert!(EventKinds::ALL.contains(k));
        assert_eq!(format!("{k:?}"), "EventKinds(ACQUIRED | LEADER_CHANGED)");
    }
}
