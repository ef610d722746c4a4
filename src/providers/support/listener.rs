//! The reconnect loop shared by the providers' background listeners (PostgreSQL LISTEN,
//! Redis pub/sub, HTTP long polls and watch streams): connect, subscribe, listen until the
//! connection fails, back off, repeat, until the provider is dropped.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::provider::{Wakeup, Watch};
use crate::providers::support::watchers::Watchers;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Tells a listener thread to end; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Stop(Arc<StopState>);

#[derive(Default)]
struct StopState {
    stopped: AtomicBool,
    /// Run once by [`Stop::stop`]: they interrupt calls the thread is blocked in.
    hooks: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl Stop {
    pub(crate) fn stop(&self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        let hooks = std::mem::take(&mut *self.0.hooks.lock());
        for hook in hooks {
            hook();
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// Runs `hook` when stopped (now, if already stopped): for a listener blocked in a call
    /// that only closing its connection interrupts (an HTTP long poll or stream). Register
    /// once per thread, not per connection: hooks are kept until the stop.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn on_stop(&self, hook: impl FnOnce() + Send + 'static) {
        let mut hooks = self.0.hooks.lock();
        if self.is_stopped() {
            drop(hooks);
            hook();
        } else {
            hooks.push(Box::new(hook));
        }
    }

    /// Sleeps up to `d`, returning early once stopped.
    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.is_stopped() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
        }
    }
}

/// A provider's listener thread: started by the first watch, stopped when the provider (and so
/// this slot) is dropped.
#[derive(Default)]
#[cfg_attr(
    not(any(feature = "postgres", feature = "redis", feature = "etcd")),
    allow(dead_code)
)]
pub(crate) struct Listener(Mutex<Option<Stop>>);

#[cfg_attr(
    not(any(feature = "postgres", feature = "redis", feature = "etcd")),
    allow(dead_code)
)]
impl Listener {
    /// Starts the thread named `name` once; `body` builds its work from the stop flag.
    pub(crate) fn ensure<F>(&self, name: &str, body: impl FnOnce(Stop) -> F) -> Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let mut slot = self.0.lock();
        if slot.is_some() {
            return Ok(());
        }
        let stop = Stop::default();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(body(stop.clone()))
            .map_err(|e| Error::io(format!("spawning the {name} thread"), e))?;
        *slot = Some(stop);
        Ok(())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.0.lock().take() {
            stop.stop();
        }
    }
}

/// Runs `session` until `stop`. Each call connects, subscribes, then calls `subscribed()` —
/// which resets the back-off, marks the watchers' listener subscribed and wakes every watcher,
/// since changes may have been missed while disconnected — and listens until the connection
/// fails (`Err`) or `stop`; then the listener counts as unsubscribed until the next session's
/// `subscribed()`.
pub(crate) fn run<E: std::fmt::Display>(
    backend: &str,
    stop: &Stop,
    watchers: &Watchers,
    mut session: impl FnMut(&dyn Fn()) -> Result<(), E>,
) {
    let backoff = Cell::new(FIRST_BACKOFF);
    let subscribed = || {
        backoff.set(FIRST_BACKOFF);
        watchers.subscribed();
    };
    while !stop.is_stopped() {
        let result = session(&subscribed);
        watchers.unsubscribed();
        if let Err(e) = result {
            log::warn!("{backend}: change listener connection failed, retrying: {e}");
        }
        stop.pause(backoff.get());
        backoff.set((backoff.get() * 2).min(MAX_BACKOFF));
    }
    log::debug!("{backend}: change listener stopped");
}

/// A provider's `watch` on a listener: registers `wakeup` once the listener is subscribed
/// (waiting up to `within`, the provider's connect timeout), so a watch reported established
/// really receives changes; a transient error if it is not subscribed by then (the elector
/// polls meanwhile and tries again later).
#[cfg_attr(not(any(feature = "postgres", feature = "redis")), allow(dead_code))]
pub(crate) fn watch(
    backend: &'static str,
    watchers: &Watchers,
    group: &str,
    wakeup: Wakeup,
    within: Duration,
) -> Result<Option<Watch>> {
    match watchers.add_when_listening(group, wakeup, within) {
        Some(watch) => Ok(Some(watch)),
        None => Err(Error::Backend {
            backend,
            operation: "watch",
            transient: true,
            source: format!("the change listener is not subscribed after {within:?}").into(),
        }),
    }
}
