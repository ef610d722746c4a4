//! A registry of electors waiting for changes, by group, for providers whose background
//! listener (LISTEN/NOTIFY, pub/sub) receives the changes of every group.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::provider::{Wakeup, Watch};

#[derive(Default)]
struct Inner {
    groups: HashMap<String, Vec<(u64, Wakeup)>>,
    next: u64,
}

/// See the module docs. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Watchers {
    inner: Arc<Mutex<Inner>>,
}

impl Watchers {
    /// Registers `wakeup` for `group`; the returned watch unregisters it when dropped.
    pub(crate) fn add(&self, group: &str, wakeup: Wakeup) -> Watch {
        let id = {
            let mut inner = self.inner.lock();
            inner.next += 1;
            let id = inner.next;
            inner
                .groups
                .entry(group.to_owned())
                .or_default()
                .push((id, wakeup));
            id
        };
        let weak: Weak<Mutex<Inner>> = Arc::downgrade(&self.inner);
        let group = group.to_owned();
        Watch::on_drop(move || {
            if let Some(inner) = weak.upgrade() {
                let mut inner = inner.lock();
                if let Some(list) = inner.groups.get_mut(&group) {
                    list.retain(|(i, _)| *i != id);
                    if list.is_empty() {
                        inner.groups.remove(&group);
                    }
                }
            }
        })
    }

    /// Wakes every elector watching `group`, forgetting those that are gone.
    pub(crate) fn wake(&self, group: &str) {
        let mut inner = self.inner.lock();
        if let Some(list) = inner.groups.get_mut(group) {
            list.retain(|(_, w)| w.wake());
        }
    }

    /// Wakes every watcher of every group (after a listener reconnects and may have missed
    /// notifications).
    #[cfg_attr(
        not(any(feature = "postgres", feature = "redis", feature = "zookeeper")),
        allow(dead_code)
    )]
    pub(crate) fn wake_all(&self) {
        let mut inner = self.inner.lock();
        for list in inner.groups.values_mut() {
            list.retain(|(_, w)| w.wake());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_only_its_group_and_unregisters_on_drop() {
        let w = Watchers::default();
        let (a, ra) = Wakeup::channel();
        let (b, rb) = Wakeup::channel();
        let wa = w.add("a", a);
        let _wb = w.add("b", b);
        w.wake("a");
        assert!(ra.try_recv().is_ok());
        assert!(rb.try_recv().is_err());
        drop(wa);
        w.wake("a");
        assert!(ra.try_recv().is_err());
    }
}
