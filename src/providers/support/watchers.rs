//! A registry of electors waiting for changes, by group, for providers whose background
//! listener (LISTEN/NOTIFY, pub/sub) receives the changes of every group. It also knows
//! whether that listener is subscribed right now, so a watch can be reported established only
//! once changes really arrive ([`Watchers::add_when_listening`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::provider::{Wakeup, Watch};

#[derive(Default)]
struct Inner {
    groups: HashMap<String, Vec<(u64, Wakeup)>>,
    next: u64,
    /// The listener is subscribed now (see [`Watchers::subscribed`]).
    listening: bool,
}

#[derive(Default)]
struct State {
    inner: Mutex<Inner>,
    /// Signalled when the listener subscribes.
    subscribed: Condvar,
    /// Mirrors `Inner::listening` for the watches handed out ([`Watch::is_live`]).
    live: Arc<AtomicBool>,
}

/// See the module docs. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Watchers {
    state: Arc<State>,
}

impl Watchers {
    /// Registers `wakeup` for `group`; the returned watch unregisters it when dropped.
    pub(crate) fn add(&self, group: &str, wakeup: Wakeup) -> Watch {
        let mut inner = self.state.inner.lock();
        self.register(&mut inner, group, wakeup)
    }

    /// Like [`Watchers::add`], but only once the listener is subscribed (waiting up to
    /// `within` for it): `None` if it is not by then. A watch added this way is not woken by
    /// the subscription it waited for — it starts after it, and the elector campaigns once its
    /// watch is established — so the wake-ups it gets come from changes (or a reconnect).
    #[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
    pub(crate) fn add_when_listening(
        &self,
        group: &str,
        wakeup: Wakeup,
        within: Duration,
    ) -> Option<Watch> {
        let end = Instant::now() + within;
        let mut inner = self.state.inner.lock();
        while !inner.listening {
            if self
                .state
                .subscribed
                .wait_until(&mut inner, end)
                .timed_out()
            {
                break;
            }
        }
        if !inner.listening {
            return None;
        }
        Some(self.register(&mut inner, group, wakeup))
    }

    fn register(&self, inner: &mut Inner, group: &str, wakeup: Wakeup) -> Watch {
        inner.next += 1;
        let id = inner.next;
        inner
            .groups
            .entry(group.to_owned())
            .or_default()
            .push((id, wakeup));
        let weak: Weak<State> = Arc::downgrade(&self.state);
        let group = group.to_owned();
        let live = self.state.live.clone();
        let watch = Watch::on_drop(move || {
            if let Some(state) = weak.upgrade() {
                let mut inner = state.inner.lock();
                if let Some(list) = inner.groups.get_mut(&group) {
                    list.retain(|(i, _)| *i != id);
                    if list.is_empty() {
                        inner.groups.remove(&group);
                    }
                }
            }
        });
        watch.with_liveness(live)
    }

    /// Wakes every elector watching `group`, forgetting those that are gone.
    pub(crate) fn wake(&self, group: &str) {
        let mut inner = self.state.inner.lock();
        if let Some(list) = inner.groups.get_mut(group) {
            list.retain(|(_, w)| w.wake());
        }
    }

    /// Wakes every watcher of every group (after a listener reconnects and may have missed
    /// notifications).
    #[cfg_attr(not(feature = "zookeeper"), allow(dead_code))]
    pub(crate) fn wake_all(&self) {
        let mut inner = self.state.inner.lock();
        wake_all(&mut inner);
    }

    /// The listener (re)subscribed: wakes every watcher, since changes may have been missed
    /// while it was not, and lets [`Watchers::add_when_listening`] go on — atomically, so a
    /// watch added after it is not woken by it.
    #[cfg_attr(
        not(any(feature = "postgres", feature = "redis", feature = "http")),
        allow(dead_code)
    )]
    pub(crate) fn subscribed(&self) {
        let mut inner = self.state.inner.lock();
        inner.listening = true;
        self.state.live.store(true, Ordering::SeqCst);
        wake_all(&mut inner);
        self.state.subscribed.notify_all();
    }

    /// The listener lost its subscription (its connection failed or it stopped): the watches
    /// are no longer live, and every watcher is woken so idle followers go back to polling
    /// every retry interval at once.
    #[cfg_attr(
        not(any(feature = "postgres", feature = "redis", feature = "http")),
        allow(dead_code)
    )]
    pub(crate) fn unsubscribed(&self) {
        let mut inner = self.state.inner.lock();
        let was = std::mem::replace(&mut inner.listening, false);
        self.state.live.store(false, Ordering::SeqCst);
        if was {
            wake_all(&mut inner);
        }
    }
}

#[cfg_attr(
    not(any(
        feature = "postgres",
        feature = "redis",
        feature = "http",
        feature = "zookeeper"
    )),
    allow(dead_code)
)]
fn wake_all(inner: &mut Inner) {
    for list in inner.groups.values_mut() {
        list.retain(|(_, w)| w.wake());
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

    #[test]
    fn a_watch_added_when_listening_waits_for_the_subscription_and_is_not_woken_by_it() {
        let w = Watchers::default();
        let (early, early_rx) = Wakeup::channel();
        let _early = w.add("g", early);
        let (a, ra) = Wakeup::channel();
        assert!(
            w.add_when_listening("g", a.clone(), Duration::from_millis(10))
                .is_none()
        );
        let listener = w.clone();
        let subscribe = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            listener.subscribed();
        });
        let watch = w.add_when_listening("g", a, Duration::from_secs(10));
        subscribe.join().unwrap();
        assert!(watch.is_some(), "added once the listener subscribed");
        assert!(
            early_rx.try_recv().is_ok(),
            "the subscription wakes earlier watchers"
        );
        assert!(
            ra.try_recv().is_err(),
            "but not the watch that waited for it"
        );
        w.wake("g");
        assert!(ra.try_recv().is_ok());
        w.unsubscribed();
        let (b, _rb) = Wakeup::channel();
        assert!(w.add_when_listening("g", b, Duration::ZERO).is_none());
    }
}
