//! The threads behind one elector, and the [`HeartbeatHandle`] the [`crate::Elector`] keeps.
//!
//! Each elector runs two threads. The *heartbeat thread* (this file's loop) waits for whatever
//! comes first — a command from the handle, an answer from the I/O thread, a wake-up from the
//! backend, or the time for the next step — and hands it to the state machine ([`state`]),
//! which campaigns, renews, steps down on its own deadline and publishes changes. The *I/O
//! thread* ([`io`]) makes the provider calls, one at a time, so the heartbeat thread never
//! blocks on the backend: it always wakes at the leader's deadline, whatever the backend is
//! doing.

mod io;
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
    /// Spawns the I/O and heartbeat threads of one elector (named `le-io-…` and `le-hb-…`
    /// after the group's first 8 characters).
    pub(crate) fn spawn(
        config: Arc<Config>,
        provider: Arc<dyn Provider>,
        shared: Arc<Shared>,
    ) -> Result<Self> {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let short: String = config.group.chars().take(8).collect();
        let (link, outcomes) = io::spawn(provider.clone(), shared.clone(), &config.group, &short)?;
        let (wakeup, wake_rx) = Wakeup::channel();
        let machine = Machine::new(provider.name(), config, shared.clone(), link, wakeup);
        let thread = std::thread::Builder::new()
            .name(format!("le-hb-{short}"))
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
    mut outcomes: Outcomes,
    wakeups: Receiver<()>,
) {
    log::debug!(
        "leader election {:?}: {} starts on {}",
        machine.config().group,
        machine.config().participant_id,
        machine.backend()
    );
    while machine.turn(machine.now()) {
        let timeout = machine.wake_at().saturating_duration_since(machine.now());
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
            recv(outcomes) -> out => match out {
                Ok((id, outcome)) => machine.on_outcome(id, outcome),
                Err(_) => {
                    outcomes = crossbeam_channel::never();
                    machine.io_gone();
                }
            },
            recv(wakeups) -> _ => machine.on_wakeup(),
            default(timeout) => {}
        }
    }
    machine.finish();
}
