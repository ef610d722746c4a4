//! The process-wide I/O pool: the few threads that make every elector's provider calls, so an
//! elector needs only its own heartbeat thread. Each elector owns a [`Lane`]-like queue (see
//! `io.rs`) that it hands to the pool whenever it has work; a worker takes the lane at the
//! front of the ready queue, makes its next call, and puts the lane back at the end if more
//! are queued, so one elector's calls run one at a time and in order, and lanes take turns.
//!
//! The pool grows on demand: a lane that finds no waiting worker wakes the *monitor* thread,
//! which spawns one (up to [`MAX_ON_TIME`] workers whose call is still within its deadline),
//! so one hung call never delays another elector's call. A call still running
//! [`OVERRUN_GRACE`] past its own deadline (a provider that ignores deadlines) no longer counts
//! against that limit, so even such calls delay others by at most their deadline plus the
//! grace; [`MAX_WORKERS`] bounds the total. Workers above [`CORE_WORKERS`] that sit idle for
//! [`IDLE_EXIT`] end. A worker that cannot be spawned (thread or memory limits) is logged
//! once and retried while work waits; the calls already queued run on the workers there are.
//! Idle, the pool costs nothing: every thread blocks without a timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};

/// Workers that never end once spawned.
const CORE_WORKERS: usize = 1;
/// Workers whose call is within its deadline (plus the grace) beyond which none is spawned.
pub(crate) const MAX_ON_TIME: usize = 64;
/// Workers in all, overrunning ones included.
pub(crate) const MAX_WORKERS: usize = 1024;
/// How long past its deadline a call may run before its worker stops counting as on time.
const OVERRUN_GRACE: Duration = Duration::from_secs(1);
/// How long a worker above the core count waits for work before it ends.
const IDLE_EXIT: Duration = Duration::from_secs(30);
/// How often the monitor looks again while work waits and no worker can take it.
const MONITOR_TICK: Duration = Duration::from_millis(100);
/// How long the oldest queued lane waits before the monitor adds a worker: a burst of quick
/// calls is served by the workers there are instead of spawning a thread per call.
const SPAWN_AFTER: Duration = Duration::from_millis(2);
/// Stack size of a worker: provider calls (TLS handshakes, drivers written in C) get the
/// standard thread stack.
const WORKER_STACK: usize = 2 << 20;

/// Something a worker can run: one queued call of one elector.
pub(crate) trait Work: Send + Sync + 'static {
    /// Runs the next queued call, if any; returns `true` if more are queued (the lane goes
    /// back in the ready queue). `deadline` is told the call's deadline before the call
    /// starts, so the pool can tell an overrunning worker.
    fn run_next(&self, started: &dyn Fn(Instant)) -> bool;
}

/// See the module docs.
pub(crate) struct Pool {
    state: Mutex<State>,
    /// Idle workers wait here.
    work: Condvar,
    /// The monitor waits here.
    monitor: Condvar,
}

struct State {
    /// Lanes with work, and when each was queued.
    ready: VecDeque<(Instant, Arc<dyn Work>)>,
    /// Workers by id, with the deadline of the call each is running (`None`: idle or between
    /// calls).
    workers: HashMap<u64, Option<Instant>>,
    next_worker: u64,
    /// A spawn failed since the last success (logged once).
    spawn_failing: bool,
}

impl State {
    /// Workers whose call has run past its deadline plus the grace.
    fn overrunning(&self, now: Instant) -> usize {
        self.workers
            .values()
            .filter(|d| d.is_some_and(|d| now > d + OVERRUN_GRACE))
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
                next_worker: 0,
                spawn_failing: false,
            }),
            work: Condvar::new(),
            monitor: Condvar::new(),
        });
        for _ in 0..CORE_WORKERS {
            pool.spawn_worker()?;
        }
        let monitor = pool.clone();
        std::thread::Builder::new()
            .name("le-pool-monitor".into())
            .stack_size(256 << 10)
            .spawn(move || monitor.monitor_loop())
            .map_err(|e| Error::io("spawning the I/O pool's monitor thread", e))?;
        let _ = POOL.set(pool.clone());
        Ok(pool)
    }

    /// Queues `lane` for a worker (the caller makes sure a lane is queued at most once).
    pub(crate) fn schedule(&self, lane: Arc<dyn Work>) {
        let mut state = self.state.lock();
        state.ready.push_back((Instant::now(), lane));
        drop(state);
        // A woken worker takes a lane; if none was waiting, the monitor finds one.
        if !self.work.notify_one() {
            self.monitor.notify_one();
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
                Err(Error::io("spawning an I/O pool thread", e))
            }
        }
    }

    fn worker_loop(&self, id: u64) {
        let mut state = self.state.lock();
        loop {
            if let Some((_, lane)) = state.ready.pop_front() {
                drop(state);
                let started = |deadline: Instant| {
                    self.state.lock().workers.insert(id, Some(deadline));
                };
                let more = lane.run_next(&started);
                state = self.state.lock();
                state.workers.insert(id, None);
                if more {
                    state.ready.push_back((Instant::now(), lane));
                }
                continue;
            }
            let idle = self.work.wait_for(&mut state, IDLE_EXIT);
            if idle.timed_out()
                && state.ready.is_empty()
                && state.workers.len() > CORE_WORKERS
                && id > CORE_WORKERS as u64
            {
                state.workers.remove(&id);
                return;
            }
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
            let busy = state.workers.values().filter(|d| d.is_some()).count();
            let free = state.workers.len() - busy;
            let on_time = state.workers.len() - state.overrunning(now);
            let waited = state
                .ready
                .front()
                .map_or(Duration::ZERO, |(at, _)| now.saturating_duration_since(*at));
            let wanted = state.ready.len() > free
                && on_time < MAX_ON_TIME
                && state.workers.len() < MAX_WORKERS;
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
        deadline: Duration,
        done: AtomicUsize,
    }

    impl Work for Sleeper {
        fn run_next(&self, started: &dyn Fn(Instant)) -> bool {
            let more = {
                let mut calls = self.calls.lock();
                if *calls == 0 {
                    return false;
                }
                *calls -= 1;
                *calls > 0
            };
            started(Instant::now() + self.deadline);
            std::thread::sleep(self.each);
            self.done.fetch_add(1, Ordering::SeqCst);
            more
        }
    }

    fn sleeper(calls: usize, each: Duration, deadline: Duration) -> Arc<Sleeper> {
        Arc::new(Sleeper {
            calls: Mutex::new(calls),
            each,
            deadline,
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
        let hung = sleeper(1, Duration::from_secs(5), Duration::from_secs(10));
        pool.schedule(hung.clone());
        let quick = sleeper(3, Duration::from_millis(1), Duration::from_secs(1));
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
        let lane = sleeper(50, Duration::ZERO, Duration::from_secs(1));
        pool.schedule(lane.clone());
        assert!(wait_until(Duration::from_secs(5), || lane
            .done
            .load(Ordering::SeqCst)
            == 50));
        assert!(pool.stats().workers <= MAX_WORKERS);
    }
}
