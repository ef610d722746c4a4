//! The process-wide I/O pool: the few threads that make every elector's provider calls, so an
//! elector needs only its own heartbeat thread. Each elector owns a [`Lane`]-like queue (see
//! `io.rs`) that it hands to the pool whenever it has work; a worker takes the lane at the
//! front of the ready queue, makes its next call, and puts the lane back at the end if more
//! are queued, so one elector's calls run one at a time and in order, and lanes take turns.
//!
//! The pool grows on demand: a lane that finds no waiting worker wakes the *monitor* thread,
//! which spawns one after [`SPAWN_AFTER`] (up to [`MAX_QUICK`] workers in calls that started
//! less than [`SLOW_CALL`] ago), so one hung call never delays another elector's call. A call
//! running longer than that (a hung backend, a provider that ignores deadlines) no longer
//! counts against the limit, so even thousands of calls hung on one backend do not hold up the
//! electors of another; [`MAX_WORKERS`] bounds the total. Workers above [`CORE_WORKERS`] that sit idle for
//! [`IDLE_EXIT`] end. A worker that cannot be spawned (thread or memory limits) is logged
//! once and retried while work waits; the calls already queued run on the workers there are.
//! Idle, the pool costs nothing: every thread blocks without a timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

/// Workers that never end once spawned.
const CORE_WORKERS: usize = 1;
/// Workers in quick calls beyond which none is spawned.
pub(crate) const MAX_QUICK: usize = 64;
/// Workers in all, slow ones included.
pub(crate) const MAX_WORKERS: usize = 1024;
/// A call running longer than this is slow: its worker no longer counts against [`MAX_QUICK`].
const SLOW_CALL: Duration = Duration::from_secs(1);
/// How long a worker above the core count waits for work before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(30);
/// How often the monitor looks again while work waits and no worker can take it.
const MONITOR_TICK: Duration = Duration::from_millis(100);
/// How long the oldest queued lane waits before the monitor adds a worker: a burst of quick
/// calls is served by the workers there are instead of spawning a thread per call.
const SPAWN_AFTER: Duration = Duration::from_millis(10);
/// Stack size of a worker: provider calls (TLS handshakes, drivers written in C) get the
/// standard thread stack.
const WORKER_STACK: usize = 2 << 20;

/// Something a worker can run: one queued call of one elector.
pub(crate) trait Work: Send + Sync + 'static {
    /// Runs the next queued call, if any; returns `true` if more are queued (the lane goes
    /// back in the ready queue). Calls `started` just before the call, so the pool can tell
    /// a slow one.
    fn run_next(&self, started: &dyn Fn()) -> bool;
}

/// See the module docs.
pub(crate) struct Pool {
    state: Mutex<State>,
    /// The monitor waits here.
    monitor: Condvar,
}

struct State {
    /// Lanes with work, and when each was queued.
    ready: VecDeque<(Instant, Arc<dyn Work>)>,
    /// Workers by id, with when the call each is running started (`None`: idle or between
    /// calls).
    workers: HashMap<u64, Option<Instant>>,
    /// Workers spawned that have not yet looked for work (the monitor counts them as free).
    starting: usize,
    /// Parked workers, the most recently parked last: work goes to it, so the others stay
    /// idle long enough to end.
    idle: Vec<(u64, Thread)>,
    next_worker: u64,
    /// A spawn failed since the last success (logged once).
    spawn_failing: bool,
}

impl State {
    /// Workers in a call that started more than [`SLOW_CALL`] ago.
    fn slow(&self, now: Instant) -> usize {
        self.workers
            .values()
            .filter(|d| d.is_some_and(|started| now > started + SLOW_CALL))
            .count()
    }
}

/// Figures for tests.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolStats {
    pub(crate) workers: usize,
    pub(crate) ready: usize,
}

static POOL: OnceLock<Arc<Pool>> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

impl Pool {
    /// The process's pool, started with its monitor and core workers on first use. Errors if
    /// those threads cannot be spawned (a later call tries again).
    pub(crate) fn get() -> Result<Arc<Pool>> {
        if let Some(pool) = POOL.get() {
            return Ok(pool.clone());
        }
        let _init = INIT.lock();
        if let Some(pool) = POOL.get() {
            return Ok(pool.clone());
        }
        let pool = Arc::new(Pool {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                workers: HashMap::new(),
                idle: Vec::new(),
                starting: 0,
                next_worker: 0,
                spawn_failing: false,
            }),
            monitor: Condvar::new(),
        });
        // The monitor first: once it runs, the pool is kept (it spawns workers on demand
        // even if the core worker below cannot be spawned now), so no thread is ever left
        // behind on a pool that was not.
        let monitor = pool.clone();
        std::thread::Builder::new()
            .name("le-pool-monitor".into())
            .stack_size(256 << 10)
            .spawn(move || monitor.monitor_loop())
            .map_err(|e| Error::io("spawning the I/O pool's monitor thread", e))?;
        let _ = POOL.set(pool.clone());
        for _ in 0..CORE_WORKERS {
            if let Err(e) = pool.spawn_worker() {
                log::warn!(
                    "leader election: cannot start the I/O pool's first thread (retried when \
                     calls wait): {}",
                    e.report()
                );
            }
        }
        Ok(pool)
    }

    /// Queues `lane` for a worker (the caller makes sure a lane is queued at most once).
    pub(crate) fn schedule(&self, lane: Arc<dyn Work>) {
        let mut state = self.state.lock();
        state.ready.push_back((Instant::now(), lane));
        let worker = state.idle.pop();
        drop(state);
        // The worker parked last takes it; if none is parked, the monitor finds one.
        match worker {
            Some((_, thread)) => thread.unpark(),
            None => {
                self.monitor.notify_one();
            }
        }
    }

    /// Workers and queued lanes now.
    #[cfg(test)]
    pub(crate) fn stats(&self) -> PoolStats {
        let state = self.state.lock();
        PoolStats {
            workers: state.workers.len(),
            ready: state.ready.len(),
        }
    }

    fn spawn_worker(self: &Arc<Self>) -> Result<()> {
        let id = {
            let mut state = self.state.lock();
            state.next_worker += 1;
            let id = state.next_worker;
            state.workers.insert(id, None);
            state.starting += 1;
            id
        };
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("le-pool-{id}"))
            .stack_size(WORKER_STACK)
            .spawn(move || pool.worker_loop(id));
        let mut state = self.state.lock();
        match spawned {
            Ok(_) => {
                state.spawn_failing = false;
                Ok(())
            }
            Err(e) => {
                state.workers.remove(&id);
                state.starting -= 1;
                Err(Error::io("spawning an I/O pool thread", e))
            }
        }
    }

    fn worker_loop(&self, id: u64) {
        let mut state = self.state.lock();
        state.starting = state.starting.saturating_sub(1);
        loop {
            if let Some((_, lane)) = state.ready.pop_front() {
                drop(state);
                let started = || {
                    self.state.lock().workers.insert(id, Some(Instant::now()));
                };
                let more = lane.run_next(&started);
                state = self.state.lock();
                state.workers.insert(id, None);
                if more {
                    state.ready.push_back((Instant::now(), lane));
                }
                continue;
            }
            state.idle.push((id, std::thread::current()));
            drop(state);
            let mut since = Instant::now();
            state = loop {
                std::thread::park_timeout(IDLE_EXIT.saturating_sub(since.elapsed()));
                let mut st = self.state.lock();
                let Some(at) = st.idle.iter().position(|(i, _)| *i == id) else {
                    break st; // unparked by `schedule`, which took it off the idle list
                };
                if !st.ready.is_empty() {
                    st.idle.remove(at);
                    break st;
                }
                if since.elapsed() >= IDLE_EXIT
                    && st.workers.len() > CORE_WORKERS
                    && id > CORE_WORKERS as u64
                {
                    st.idle.remove(at);
                    st.workers.remove(&id);
                    return;
                }
                // A spurious unpark, or a core worker's idle time: park again.
                if since.elapsed() >= IDLE_EXIT {
                    since = Instant::now();
                }
            };
        }
    }

    /// Spawns workers while lanes wait and no worker is free to take them.
    fn monitor_loop(self: Arc<Self>) {
        let mut state = self.state.lock();
        loop {
            if state.ready.is_empty() {
                self.monitor.wait(&mut state);
                continue;
            }
            let now = Instant::now();
            let free = state.idle.len() + state.starting;
            let quick = state.workers.len() - state.slow(now);
            let waited = state
                .ready
                .front()
                .map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(*at));
            let wanted =
                state.ready.len() > free && quick < MAX_QUICK && state.workers.len() < MAX_WORKERS;
            if wanted && waited < SPAWN_AFTER {
                self.monitor.wait_for(&mut state, SPAWN_AFTER - waited);
                continue;
            }
            if wanted {
                drop(state);
                let spawned = self.spawn_worker();
                state = self.state.lock();
                if let Err(e) = spawned {
                    if !state.spawn_failing {
                        state.spawn_failing = true;
                        log::warn!(
                            "leader election: cannot add a thread to the I/O pool (calls wait for \
                             a busy one): {}",
                            e.report()
                        );
                    }
                } else {
                    continue;
                }
            }
            self.monitor.wait_for(&mut state, MONITOR_TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Runs `calls` calls, each sleeping `each` (a hung call when long).
    struct Sleeper {
        calls: Mutex<usize>,
        each: Duration,
        done: AtomicUsize,
    }

    impl Work for Sleeper {
        fn run_next(&self, started: &dyn Fn()) -> bool {
            let more = {
                let mut calls = self.calls.lock();
                if *calls == 0 {
                    return false;
                }
                *calls -= 1;
                *calls > 0
            };
            started();
            std::thread::sleep(self.each);
            self.done.fetch_add(1, Ordering::SeqCst);
            more
        }
    }

    fn sleeper(calls: usize, each: Duration) -> Arc<Sleeper> {
        Arc::new(Sleeper {
            calls: Mutex::new(calls),
            each,
            done: AtomicUsize::new(0),
        })
    }

    fn wait_until(within: Duration, f: impl Fn() -> bool) -> bool {
        let end = Instant::now() + within;
        while !f() {
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// A hung call does not hold up another lane: the monitor adds a worker.
    #[test]
    fn a_hung_call_does_not_delay_another_lane() {
        let pool = Pool::get().unwrap();
        let hung = sleeper(1, Duration::from_secs(5));
        pool.schedule(hung.clone());
        let quick = sleeper(3, Duration::from_millis(1));
        pool.schedule(quick.clone());
        assert!(
            wait_until(Duration::from_secs(2), || quick.done.load(Ordering::SeqCst)
                == 3),
            "the quick lane waited for the hung one"
        );
        assert_eq!(hung.done.load(Ordering::SeqCst), 0);
    }

    /// One lane's calls run one at a time and all of them run.
    #[test]
    fn a_lane_runs_every_call_in_turn() {
        let pool = Pool::get().unwrap();
        let lane = sleeper(50, Duration::ZERO);
        pool.schedule(lane.clone());
        assert!(wait_until(Duration::from_secs(5), || lane
            .done
            .load(Ordering::SeqCst)
            == 50));
        assert!(pool.stats().workers <= MAX_WORKERS);
    }
}

/// Work goes to the worker parked last, so a pool that grew in a burst shrinks again.
#[cfg(test)]
mod lifo {
    use std::collections::HashSet;

    use super::*;

    struct Named {
        left: Mutex<usize>,
        each: Duration,
        names: Arc<Mutex<HashSet<String>>>,
    }

    impl Work for Named {
        fn run_next(&self, started: &dyn Fn()) -> bool {
            let more = {
                let mut left = self.left.lock();
                if *left == 0 {
                    return false;
                }
                *left -= 1;
                *left > 0
            };
            started();
            self.names
                .lock()
                .insert(std::thread::current().name().unwrap_or("").to_owned());
            std::thread::sleep(self.each);
            more
        }
    }

    #[test]
    fn steady_quick_calls_use_few_workers() {
        let pool = Pool::get().unwrap();
        let burst = Arc::new(Mutex::new(HashSet::new()));
        for _ in 0..30 {
            pool.schedule(Arc::new(Named {
                left: Mutex::new(1),
                each: Duration::from_millis(50),
                names: burst.clone(),
            }));
        }
        std::thread::sleep(Duration::from_millis(300));
        let steady = Arc::new(Mutex::new(HashSet::new()));
        for _ in 0..100 {
            pool.schedule(Arc::new(Named {
                left: Mutex::new(1),
                each: Duration::from_micros(100),
                names: steady.clone(),
            }));
            std::thread::sleep(Duration::from_millis(3));
        }
        assert!(burst.lock().len() > 5, "the burst did not grow the pool");
        // One worker suffices; a few if the machine is busy.
        assert!(steady.lock().len() <= 5, "{:?}", steady.lock());
    }
}
