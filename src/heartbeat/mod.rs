//! The threads behind one elector, and the [`HeartbeatHandle`] the [`crate::Elector`] keeps.
//!
//! Each elector runs one thread of its own. The *heartbeat thread* (this file's loop) waits for
//! whatever comes first — a command from the handle, an answer to a provider call, a wake-up
//! from the backend, or the time for the next step — and hands it to the state machine
//! ([`state`]), which campaigns, renews, steps down on its own deadline and publishes changes.
//! The provider calls run on the process's I/O pool ([`pool`]), one elector's calls at a time
//! and in order ([`io`]), so the heartbeat thread never blocks on the backend: it always wakes
//! at the leader's deadline, whatever the backend is doing.
//!
//! When the heartbeat thread stops, it closes its answers and reads those already sent: a
//! campaign that won after a shutdown gave up waiting has its lease released through the pool
//! (which runs queued releases even once nobody reads the answers), rather than left held
//! until its TTL.

mod io;
pub(crate) mod pool;
mod state;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, select};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::provider::{Provider, Wakeup};
use crate::shared::Shared;
use io::Outcomes;
use state::Machine;

/// Stack size of a heartbeat thread: it runs the state machine, the application's logger and
/// metrics recorder, never a provider call. Small, so thousands of electors fit in the
/// address space of a constrained process.
const HEARTBEAT_STACK: usize = 256 << 10;

/// Commands from the handle to the heartbeat thread.
enum Command {
    Resign,
    Shutdown(Sender<Result<()>>),
    /// Makes the heartbeat thread panic, to test what a panic leaves behind.
    #[cfg(test)]
    Panic,
}

/// The running heartbeat of one elector: resigns, shuts down, and joins its thread.
///
/// Dropping it without [`HeartbeatHandle::shutdown`] shuts the heartbeat down all the same
/// (the thread sees the handle gone) and waits for the thread.
pub(crate) struct HeartbeatHandle {
    commands: Option<Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl HeartbeatHandle {
    /// Spawns the heartbeat thread of one elector (named `le-hb-…` after the group's first 8
    /// characters), starting the process's I/O pool on first use.
    pub(crate) fn spawn(
        config: Arc<Config>,
        provider: Arc<dyn Provider>,
        shared: Arc<Shared>,
    ) -> Result<Self> {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let short: String = config.group.chars().take(8).collect();
        let (link, outcomes) = io::link(provider.clone(), shared.clone())?;
        let (wakeup, wake_rx) = Wakeup::channel();
        let pushes_expiry = provider.capabilities().pushes_expiry;
        let machine = Machine::new(provider.name(), config, shared.clone(), link, wakeup)
            .with_pushes_expiry(pushes_expiry);
        let thread = std::thread::Builder::new()
            .name(format!("le-hb-{short}"))
            .stack_size(HEARTBEAT_STACK)
            .spawn(move || {
                let group = machine.config().group.clone();
                let body = AssertUnwindSafe(|| run(machine, cmd_rx, outcomes, wake_rx));
                if catch_unwind(body).is_err() {
                    // A bug, never expected: end the term and every stream rather than leave
                    // subscribers waiting and `is_leader()` true until the deadline.
                    log::error!(
                        "leader election {group:?}: the heartbeat thread panicked; the elector \
                         stopped (its lease expires on its own)"
                    );
                    shared.close();
                }
            })
            .map_err(|e| Error::io("spawning the elector's heartbeat thread", e))?;
        Ok(HeartbeatHandle {
            commands: Some(cmd_tx),
            thread: Some(thread),
        })
    }

    /// Makes the heartbeat thread panic (tests).
    #[cfg(test)]
    pub(crate) fn inject_panic(&self) {
        if let Some(commands) = &self.commands {
            let _ = commands.send(Command::Panic);
        }
    }

    /// Asks the heartbeat thread to step down (if leading), release, and not campaign for a
    /// retry interval. The caller ends the term in [`Shared`] first.
    pub(crate) fn resign(&self) {
        if let Some(commands) = &self.commands {
            let _ = commands.send(Command::Resign);
        }
    }

    /// Shuts the heartbeat down and waits for its thread: the result of the release (or
    /// withdrawal), [`Error::Timeout`] if a hung call kept it from finishing within
    /// [`Config::shutdown_wait`], `Ok(())` if the thread had already stopped.
    pub(crate) fn shutdown(mut self) -> Result<()> {
        let result = match self.commands.take() {
            Some(commands) => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                if commands.send(Command::Shutdown(tx)).is_ok() {
                    rx.recv().unwrap_or(Err(Error::ShutDown))
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        };
        self.join();
        result
    }

    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HeartbeatHandle {
    fn drop(&mut self) {
        // Hang up first: the heartbeat thread then shuts down on its own.
        self.commands.take();
        self.join();
    }
}

/// The heartbeat thread: feeds the state machine until it stops, then lets it finish.
fn run(
    mut machine: Machine,
    mut commands: Receiver<Command>,
    outcomes: Outcomes,
    wakeups: Receiver<()>,
) {
    log::debug!(
        "leader election {:?}: {} starts on {}",
        machine.config().group,
        machine.config().participant_id,
        machine.backend()
    );
    loop {
        for (id, outcome, answered) in outcomes.take() {
            machine.on_outcome(id, outcome, answered);
        }
        if !machine.turn(machine.now()) {
            break;
        }
        let wake_at = machine.wake_at();
        // Quiet only if this sleep ends before the answer of the renew out is needed.
        let quiet = machine.quiet_until().is_some_and(|until| wake_at <= until);
        if !outcomes.arm(quiet) {
            continue;
        }
        let timeout = wake_at.saturating_duration_since(machine.now());
        select! {
            recv(commands) -> cmd => match cmd {
                Ok(Command::Resign) => machine.resign(),
                Ok(Command::Shutdown(reply)) => machine.begin_stop(reply),
                #[cfg(test)]
                Ok(Command::Panic) => panic!("injected heartbeat panic"),
                // The handle is gone without a shutdown: stop anyway.
                Err(_) => {
                    commands = crossbeam_channel::never();
                    if !machine.is_stopping() {
                        let (tx, _) = crossbeam_channel::bounded(1);
                        machine.begin_stop(tx);
                    }
                }
            },
            // Answers are read at the top of the loop. (The machine's link keeps the sender,
            // so this never disconnects.)
            recv(outcomes.wake()) -> _ => {}
            recv(wakeups) -> _ => machine.on_wakeup(),
            default(timeout) => {}
        }
    }
    #[cfg(test)]
    hooks::run_after_loop(&machine.config().group, &outcomes);
    machine.finish(&outcomes);
}

/// Test seams of the heartbeat thread.
#[cfg(test)]
mod hooks {
    use std::sync::Mutex;

    use super::io::Outcomes;

    type AfterLoop = Box<dyn FnOnce(&Outcomes) + Send>;

    static AFTER_LOOP: Mutex<Vec<(String, AfterLoop)>> = Mutex::new(Vec::new());

    /// Runs `hook` on the heartbeat thread of the elector of `group` once its loop has ended,
    /// before it closes and reads the last answers: a test can make an answer arrive then.
    pub(super) fn after_loop(group: &str, hook: impl FnOnce(&Outcomes) + Send + 'static) {
        let mut hooks = AFTER_LOOP.lock().unwrap_or_else(|e| e.into_inner());
        hooks.push((group.to_owned(), Box::new(hook)));
    }

    pub(super) fn run_after_loop(group: &str, outcomes: &Outcomes) {
        let mine: Vec<AfterLoop> = {
            let mut hooks = AFTER_LOOP.lock().unwrap_or_else(|e| e.into_inner());
            let (mine, others) = std::mem::take(&mut *hooks)
                .into_iter()
                .partition(|(g, _)| g == group);
            *hooks = others;
            mine.into_iter().map(|(_, hook)| hook).collect()
        };
        for hook in mine {
            hook(outcomes);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::{Elector, Error, FaultyProvider, MemoryProvider, Operation, Provider};

    fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + within;
        while !f() {
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// A campaign whose `Acquired` answer arrives after a shutdown gave up waiting, but before
    /// the heartbeat thread let go of its answers: the lease it won is released at once, not
    /// left held for its TTL (60 s here).
    #[test]
    fn a_lease_won_after_the_shutdown_gave_up_is_released() {
        let group = "late-win-after-shutdown";
        let memory = MemoryProvider::new();
        let faulty = FaultyProvider::new(memory.clone());
        let faults = faulty.faults();
        faults.only(&[Operation::Acquire]);
        faults.hang();
        let elector = Elector::builder(faulty)
            .group(group)
            .participant_id("a")
            .lease_ttl(Duration::from_secs(60))
            .heartbeat_interval(Duration::from_secs(5))
            .retry_interval(Duration::from_secs(30))
            .shutdown_timeout(Duration::from_millis(200))
            .start()
            .unwrap();
        // The first campaign hangs before it reaches the backend.
        assert!(wait_for(Duration::from_secs(10), || faults.hung_calls() == 1));
        // Once the shutdown gave up and the loop ended, the campaign goes through and wins;
        // its answer is in the channel before the heartbeat thread goes on.
        let f = faults.clone();
        super::hooks::after_loop(group, move |outcomes| {
            f.unhang();
            let _ = wait_for(Duration::from_secs(10), || !outcomes.is_empty());
        });
        let result = elector.shutdown();
        assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
        assert_eq!(memory.last_token(group), 1, "the late campaign won");
        let deadline = || Instant::now() + Duration::from_secs(1);
        assert!(
            wait_for(Duration::from_secs(10), || memory
                .leader(group, deadline())
                .is_ok_and(|l| l.is_none())),
            "the lease won after the shutdown gave up is still held"
        );
        assert!(!elector.is_leader());
    }
}
