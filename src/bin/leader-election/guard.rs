//! The watchdog that kills the command if the tool itself dies (SIGKILL, OOM killer, crash):
//! otherwise the command would run on, an orphan, after the lease it ran under ended — with
//! backends whose lease ends with its holder (file locks), at once.
//!
//! `run` starts this same binary as `leader-election __guard` with a pipe on its stdin, and
//! writes the command's process group id to it after each start (`0` once it is reaped). The
//! write end of the pipe is close-on-exec and held by the tool alone, so the guard reads
//! end-of-file exactly when the tool is gone; it then SIGKILLs the group it was last told of
//! and exits. It ignores SIGINT, SIGTERM and SIGHUP (a terminal's Ctrl-C reaches it too: the
//! tool handles those). If the guard dies, the tool starts another.

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};

use crossbeam_channel::Sender;
use rustix::process::{Pid, Signal};

/// The tool's side: the guard process and the pipe to it.
pub struct Guard {
    stdin: ChildStdin,
    group: i32,
}

impl Guard {
    /// Starts a guard; `died` hears of its exit.
    pub fn start(died: Sender<()>) -> std::io::Result<Guard> {
        let exe = std::env::current_exe()?;
        let mut child: Child = Command::new(exe)
            .arg("__guard")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no pipe to the guard"))?;
        std::thread::Builder::new()
            .name("wait-guard".into())
            .spawn(move || {
                let _ = child.wait();
                let _ = died.send(());
            })?;
        Ok(Guard { stdin, group: 0 })
    }

    /// Tells the guard which process group to kill if the tool dies (`0`: none).
    pub fn protect(&mut self, group: i32) {
        self.group = group;
        if let Err(e) = writeln!(self.stdin, "{group}").and_then(|()| self.stdin.flush()) {
            log::warn!("cannot reach the guard process: {e}");
        }
    }

    /// The group it protects now.
    pub fn group(&self) -> i32 {
        self.group
    }
}

/// The guard's side (`leader-election __guard`).
pub fn run() -> u8 {
    // Caught (and dropped) rather than fatal: only end-of-file on stdin ends the guard.
    let ignored = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]);
    if let Err(e) = &ignored {
        log::warn!("guard: cannot catch signals: {e}");
    }
    let mut group = 0i32;
    for line in std::io::stdin().lock().lines() {
        match line.map(|l| l.trim().parse::<i32>()) {
            Ok(Ok(g)) => group = g,
            Ok(Err(_)) => continue,
            Err(_) => break,
        }
    }
    if let Some(pid) = Pid::from_raw(group) {
        // Kill first, explain after: every microsecond counts.
        let killed = rustix::process::kill_process_group(pid, Signal::KILL);
        log::error!(
            "the leader-election process died while its command ran: killed the command's \
             process group {group}"
        );
        match killed {
            Ok(()) | Err(rustix::io::Errno::SRCH) => {}
            Err(e) => log::error!("cannot kill process group {group}: {e}"),
        }
    }
    drop(ignored);
    0
}
