//! The command `run` supervises: started in its own process group (std's
//! `CommandExt::process_group(0)`), signalled as a group (rustix `kill_process_group`), and
//! awaited by a thread that uses `waitid(WNOWAIT)`: it learns of the exit without reaping, so
//! the group's id cannot be reused until the tool has killed what is left of the group and
//! reaped the main process. A group is never signalled after that.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// Why a command could not start, as an exit status: 127 not found, 126 not executable.
pub struct SpawnError {
    pub code: u8,
    pub message: String,
}

/// A running command: the leader of its own process group.
pub struct ChildProc {
    child: Child,
    pid: Pid,
    pub token: u64,
    pub started: Instant,
}

impl ChildProc {
    /// Starts `argv` in a new process group with the election's variables; a thread sends
    /// the pid to `exited` when it exits (without reaping it).
    pub fn spawn(
        argv: &[String],
        env: &[(&str, String)],
        token: u64,
        exited: Sender<i32>,
    ) -> Result<ChildProc, SpawnError> {
        let (program, args) = argv.split_first().ok_or_else(|| SpawnError {
            code: 127,
            message: "no command given".into(),
        })?;
        let mut cmd = Command::new(program);
        cmd.args(args).process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| SpawnError {
            code: if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            },
            message: format!("cannot run {program:?}: {e}"),
        })?;
        let raw = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let pid = Pid::from_raw(raw).ok_or_else(|| SpawnError {
            code: 126,
            message: "the command has no pid".into(),
        })?;
        std::thread::Builder::new()
            .name("wait-command".into())
            .spawn(move || {
                // Exited (or cannot be waited for: reported all the same).
                while let Err(rustix::io::Errno::INTR) = rustix::process::waitid(
                    WaitId::Pid(pid),
                    WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
                ) {}
                let _ = exited.send(raw);
            })
            .map_err(|e| SpawnError {
                code: 126,
                message: format!("cannot start a thread: {e}"),
            })?;
        Ok(ChildProc {
            child,
            pid,
            token,
            started: Instant::now(),
        })
    }

    /// The command's pid, which is also its process group's id.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw_nonzero().get()
    }

    /// Sends `sig` to the command's whole process group (a group already gone is no error).
    pub fn signal(&self, sig: Signal) {
        match rustix::process::kill_process_group(self.pid, sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => log::warn!("cannot signal the command's process group: {e}"),
        }
    }

    /// After the main process exited: kills whatever is left in its group (background jobs
    /// must not outlive the term either), then reaps it.
    pub fn reap(mut self) -> (ExitStatus, Duration) {
        self.signal(Signal::KILL);
        let ran = self.started.elapsed();
        let status = self.child.wait().unwrap_or_else(|e| {
            log::warn!("cannot reap the command: {e}");
            ExitStatus::from_raw(0x7f00)
        });
        (status, ran)
    }
}

/// The tool's exit status for a command's: its code, or 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(255),
        _ => 1,
    }
}

/// A command's status, for messages.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was ended by {}", crate::signals::name(sig)),
        _ => format!("ended ({status})"),
    }
}
