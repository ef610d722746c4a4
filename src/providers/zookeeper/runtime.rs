//! The ZooKeeper provider's private async runtime: one thread per provider running a one-thread
//! `async-executor` that hosts the `zookeeper-client` session tasks, the provider's session
//! manager and its predecessor-watch tasks; the spawner through which that client spawns its
//! session task (`spawns-core`); a stop signal; and `block_on_until`, which runs one client
//! call on the caller's thread and gives up at the caller's deadline. No async type leaves
//! the provider: callers see plain blocking calls bounded by their deadlines.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_io::Timer;
use futures_lite::FutureExt;
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// How long the runtime keeps running its tasks after the provider is dropped, so that a
/// connected session is closed properly (its ephemeral nodes go at once, not at its timeout).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A one-shot signal that async tasks can wait for.
#[derive(Default)]
pub(super) struct Signal {
    set: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Signal {
    pub(super) fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        for w in self.wakers.lock().drain(..) {
            w.wake();
        }
    }

    pub(super) fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Completes once the signal is set.
    pub(super) fn wait(&self) -> impl Future<Output = ()> + '_ {
        futures_lite::future::poll_fn(move |cx: &mut Context<'_>| {
            if self.is_set() {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.lock();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            drop(wakers);
            if self.is_set() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// The provider's runtime: its executor, run by one thread until [`Runtime::stop`].
pub(super) struct Runtime {
    executor: Arc<Executor<'static>>,
    stop: Arc<Signal>,
}

/// Hands the tasks that `zookeeper-client` spawns (one per session) to our executor.
struct Spawner(Arc<Executor<'static>>);

impl spawns_core::Spawn for Spawner {
    fn spawn(&self, task: spawns_core::Task) {
        // spawns-core's task future catches a panic itself (it reaches the join handle).
        self.0.spawn(Pin::from(task.future)).detach();
    }
}

impl Runtime {
    pub(super) fn start() -> Result<Runtime> {
        let executor = Arc::new(Executor::new());
        let stop = Arc::new(Signal::default());
        let (ex, st) = (executor.clone(), stop.clone());
        std::thread::Builder::new()
            .name("le-zk-runtime".into())
            .spawn(move || {
                let spawner = Spawner(ex.clone());
                let _scope = spawns_core::enter(&spawner);
                async_io::block_on(ex.run(st.wait()));
                // Let closing sessions say goodbye, for a bounded time.
                let end = Instant::now() + CLOSE_GRACE;
                while !ex.is_empty() && Instant::now() < end {
                    async_io::block_on(ex.run(Timer::after(Duration::from_millis(20))));
                }
            })
            .map_err(|e| Error::io("spawning the ZooKeeper runtime thread", e))?;
        Ok(Runtime { executor, stop })
    }

    /// Runs `task` on the runtime; a panic in it is logged and ends only that task.
    pub(super) fn spawn(
        &self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let task = std::panic::AssertUnwindSafe(task).catch_unwind();
        self.executor
            .spawn(async move {
                if task.await.is_err() {
                    log::error!("zookeeper: the provider's {name} task panicked");
                }
            })
            .detach();
    }

    /// Stops the runtime thread (after a short grace for closing sessions); never blocks.
    pub(super) fn stop(&self) {
        self.stop.set();
    }
}

/// Runs `future` on this thread until it completes or `deadline` passes (`None`).
pub(super) fn block_on_until<T>(future: impl Future<Output = T>, deadline: Instant) -> Option<T> {
    if Instant::now() >= deadline {
        return None;
    }
    async_io::block_on(async { Some(future.await) }.or(async {
        Timer::at(deadline).await;
        None
    }))
}
