//! `run`: campaign, run the command while leading, stop it before leadership can end.
//!
//! The timing argument. A term is valid until its deadline `D` = (send time of the last
//! confirmed renew) + ttl − safety margin; the backend keeps the lease until at least
//! `D + margin`, so no other participant can lead before `D`. Each renew moves `D`, so the loop
//! re-reads [`Elector::term`] whenever it wakes instead of trusting an old `D`. If `D` comes
//! within `grace + KILL_RESERVE` (no renew has landed for ttl − margin − grace − reserve), the
//! command's process group gets SIGTERM; at `D − KILL_RESERVE` it gets SIGKILL, leaving the
//! reserve for the kernel to end it and the tool to reap it — before `D`. A term lost earlier
//! (superseded) gets SIGTERM at once and SIGKILL at `min(now + grace, D − reserve)`. A term
//! that ended this way is resigned, so the next leader need not wait for the TTL. `grace` must
//! stay below ttl − margin − heartbeat − reserve, so that while renews succeed the command is
//! never stopped. If the tool itself dies, its guard (`guard.rs`) SIGKILLs the command's group
//! within milliseconds; where the lease ends with the tool's process (file locks) a new term
//! therefore starts its command one safety margin late, after any such kill.

mod setup;

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use leader_election::{Elector, LeadershipChange};
use rustix::process::Signal;

use crate::args::RunArgs;
use crate::child::{self, ChildProc};
use crate::guard::Guard;
use crate::{EXIT_TOOL_FAILED, explain, signals};

/// Left before the deadline for SIGKILL to take effect and the command to be reaped.
pub const KILL_RESERVE: Duration = Duration::from_millis(500);
/// `--restart` runs the command at most once per this period.
const RESTART_PERIOD: Duration = Duration::from_secs(1);

/// The command running now, and how it is being stopped.
struct Current {
    proc: ChildProc,
    stop: Option<Stop>,
}

struct Stop {
    /// SIGKILL at the latest then (and before the deadline − reserve, whatever it is).
    kill_at: Instant,
    killed: bool,
    late_logged: bool,
}

struct Runner {
    args: RunArgs,
    elector: Elector,
    guard: Guard,
    guard_died: Receiver<()>,
    exited: (crossbeam_channel::Sender<i32>, Receiver<i32>),
    current: Option<Current>,
    /// When to start the command (again, with `--restart`), within which term.
    restart_at: Option<(Instant, u64)>,
    /// How long a new term waits before starting the command: the safety margin on backends
    /// whose lease ends with its holder's process (file locks), so that the guard of a
    /// predecessor killed a moment ago has surely killed its command; zero elsewhere.
    start_delay: Duration,
    /// The deadline of the command's term as last read.
    last_deadline: Option<Instant>,
    /// A stopping signal the tool received: exit once the command is gone.
    exit_on_signal: Option<i32>,
}

/// Runs `run`; returns the exit status.
pub fn run(args: RunArgs) -> u8 {
    match setup::setup(args) {
        Ok(runner) => runner.run(),
        Err((code, message)) => {
            log::error!("{message}");
            code
        }
    }
}

impl Runner {
    fn run(mut self) -> u8 {
        let stop_signals = match signals::stopping() {
            Ok(rx) => rx,
            Err(e) => return self.finish(EXIT_TOOL_FAILED, &format!("cannot catch signals: {e}")),
        };
        let changes = self.elector.subscribe().into_receiver();
        if let Err(e) = self.elector.start() {
            return self.finish(EXIT_TOOL_FAILED, &explain(&e));
        }
        let exited = self.exited.1.clone();
        let guard_died = self.guard_died.clone();
        loop {
            let wake = match self.step() {
                Ok(wake) => wake,
                Err(code) => return code,
            };
            let timeout = wake
                .map(|w| w.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(5))
                .min(Duration::from_secs(5));
            let outcome = select! {
                recv(changes) -> change => match change {
                    Ok(change) => self.on_change(change),
                    Err(_) => Err(self.finish(EXIT_TOOL_FAILED, "the elector stopped")),
                },
                recv(exited) -> pid => match pid {
                    Ok(pid) if self.current.as_ref().is_some_and(|c| c.proc.pid() == pid) => {
                        self.on_exit()
                    }
                    _ => Ok(()),
                },
                recv(stop_signals) -> sig => match sig {
                    Ok(sig) => self.on_signal(sig),
                    Err(_) => Ok(()),
                },
                recv(guard_died) -> _ => {
                    self.restart_guard();
                    Ok(())
                },
                default(timeout) => Ok(()),
            };
            if let Err(code) = outcome {
                return code;
            }
        }
    }

    /// Applies the schedule: stops the command when its term ends or is about to; runs it
    /// again when a `--restart` is due. Returns when to wake next.
    fn step(&mut self) -> Result<Option<Instant>, u8> {
        let now = Instant::now();
        let grace = self.args.grace;
        let term = self.elector.term();
        let Some(cur) = &mut self.current else {
            if let Some((at, token)) = self.restart_at {
                if term.as_ref().is_none_or(|t| t.fencing_token != token) {
                    self.restart_at = None; // the term ended meanwhile: the next one runs it
                } else if now >= at {
                    self.restart_at = None;
                    return self.start_child().map(|()| Some(now));
                } else {
                    return Ok(Some(at));
                }
            }
            return Ok(None);
        };
        let token = cur.proc.token;
        match term.as_ref().filter(|t| t.fencing_token == token) {
            Some(t) => self.last_deadline = Some(t.deadline),
            None if cur.stop.is_none() => {
                // Lost before its deadline (superseded, resigned, the elector stopped).
                log::warn!("term {token} ended: stopping the command");
                cur.stop = Some(begin_stop(&cur.proc, now + grace));
            }
            None => {}
        }
        let hard = self
            .last_deadline
            .map(|d| d.checked_sub(KILL_RESERVE).unwrap_or(now))
            .unwrap_or(now);
        let stop = match &mut cur.stop {
            Some(stop) => stop,
            None => {
                let term_at = hard.checked_sub(grace).unwrap_or(now);
                if now < term_at {
                    return Ok(Some(term_at));
                }
                let why = self
                    .elector
                    .status()
                    .last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                log::warn!(
                    "term {token} reaches its deadline in {} without a confirmed renew{why}: \
                     stopping the command",
                    fmt_ms(
                        self.last_deadline
                            .map(|d| d.saturating_duration_since(now))
                            .unwrap_or_default()
                    )
                );
                cur.stop.insert(begin_stop(&cur.proc, hard))
            }
        };
        let kill_at = stop.kill_at.min(hard);
        if !stop.killed {
            if now >= kill_at {
                log::warn!(
                    "the command (pid {}) is still running: SIGKILL to its process group",
                    cur.proc.pid()
                );
                cur.proc.signal(Signal::KILL);
                stop.killed = true;
            } else {
                return Ok(Some(kill_at));
            }
        }
        if let Some(deadline) = self.last_deadline {
            if now >= deadline && !stop.late_logged {
                stop.late_logged = true;
                log::error!(
                    "the command (pid {}) was not reaped by its term's deadline, {} after \
                     SIGKILL",
                    cur.proc.pid(),
                    fmt_ms(KILL_RESERVE)
                );
            } else if now < deadline {
                return Ok(Some(deadline));
            }
        }
        Ok(None)
    }

    fn on_change(&mut self, change: LeadershipChange) -> Result<(), u8> {
        match change {
            LeadershipChange::Acquired { fencing_token, .. } => {
                log::debug!("acquired term {fencing_token}");
                if self.current.is_none() && self.restart_at.is_none() {
                    self.schedule_start(fencing_token)?;
                }
            }
            LeadershipChange::Lost {
                fencing_token,
                reason,
            } => log::debug!("term {fencing_token} ended: {reason}"),
            LeadershipChange::LeaderChanged { leader: Some(l) } => log::info!(
                "group {:?}: {} leads (token {})",
                l.group,
                l.participant_id,
                l.fencing_token
            ),
            LeadershipChange::LeaderChanged { leader: None } => {
                log::info!("group {:?}: nobody leads", self.elector.group())
            }
            _ => {}
        }
        Ok(())
    }

    /// Starts the command for term `token` now, or after the start delay.
    fn schedule_start(&mut self, token: u64) -> Result<(), u8> {
        if self.start_delay.is_zero() {
            return self.start_child();
        }
        log::debug!(
            "term {token}: starting the command in {}",
            fmt_ms(self.start_delay)
        );
        self.restart_at = Some((Instant::now() + self.start_delay, token));
        Ok(())
    }

    /// Starts the command for the current term, unless the term is too near its end.
    fn start_child(&mut self) -> Result<(), u8> {
        let Some(term) = self.elector.term() else {
            return Ok(());
        };
        if Instant::now() + KILL_RESERVE + self.args.grace >= term.deadline {
            log::warn!(
                "term {} is too near its deadline to start the command",
                term.fencing_token
            );
            self.elector.resign();
            return Ok(());
        }
        let env = [
            ("LEADER_ELECTION_GROUP", self.elector.group().to_owned()),
            (
                "LEADER_ELECTION_PARTICIPANT",
                self.elector.participant_id().to_owned(),
            ),
            (
                "LEADER_ELECTION_FENCING_TOKEN",
                term.fencing_token.to_string(),
            ),
        ];
        let tx = self.exited.0.clone();
        match ChildProc::spawn(&self.args.command, &env, term.fencing_token, tx) {
            Ok(proc) => {
                self.guard.protect(proc.pid());
                log::info!(
                    "leading group {:?} with fencing token {}: started {:?} (pid {})",
                    self.elector.group(),
                    term.fencing_token,
                    self.args.command[0],
                    proc.pid()
                );
                self.last_deadline = Some(term.deadline);
                self.current = Some(Current { proc, stop: None });
                Ok(())
            }
            Err(e) => Err(self.finish(e.code, &e.message)),
        }
    }

    /// The command's main process exited.
    fn on_exit(&mut self) -> Result<(), u8> {
        let Some(cur) = self.current.take() else {
            return Ok(());
        };
        let token = cur.proc.token;
        let started = cur.proc.started;
        let (status, ran) = cur.proc.reap();
        self.guard.protect(0);
        log::info!(
            "the command {} after {}",
            child::describe(status),
            fmt_ms(ran)
        );
        let code = child::exit_code(status);
        if let Some(sig) = self.exit_on_signal {
            return Err(self.finish(code, &format!("stopped by {}", signals::name(sig))));
        }
        let term = self.elector.term();
        if cur.stop.is_some() {
            // Stopped because its term ended: hand over, or run for a newer term won meanwhile.
            match term {
                Some(t) if t.fencing_token > token => return self.schedule_start(t.fencing_token),
                _ => {
                    self.elector.resign();
                    log::info!("term {token} released; campaigning again");
                }
            }
            return Ok(());
        }
        if self.args.restart && term.is_some_and(|t| t.fencing_token == token) {
            let at = (started + RESTART_PERIOD).max(Instant::now());
            log::info!("--restart: running the command again");
            self.restart_at = Some((at, token));
            return Ok(());
        }
        Err(self.finish(code, "releasing the lease"))
    }

    fn on_signal(&mut self, sig: i32) -> Result<(), u8> {
        let name = signals::name(sig);
        let Some(cur) = &mut self.current else {
            self.exit_on_signal = Some(sig);
            let code = u8::try_from(128 + sig).unwrap_or(255);
            return Err(self.finish(code, &format!("received {name}")));
        };
        if self.exit_on_signal.is_some() {
            log::warn!("received {name} again: SIGKILL to the command's process group");
            cur.proc.signal(Signal::KILL);
            return Ok(());
        }
        self.exit_on_signal = Some(sig);
        let grace = self.args.grace;
        log::info!(
            "received {name}: forwarding it to the command's process group (SIGKILL in {})",
            fmt_ms(grace)
        );
        if let Some(s) = Signal::from_named_raw(sig) {
            cur.proc.signal(s);
        }
        let kill_at = Instant::now() + grace;
        match &mut cur.stop {
            Some(stop) => stop.kill_at = stop.kill_at.min(kill_at),
            None => {
                cur.stop = Some(Stop {
                    kill_at,
                    killed: false,
                    late_logged: false,
                })
            }
        }
        Ok(())
    }

    fn restart_guard(&mut self) {
        log::warn!("the guard process died: starting another");
        let (tx, rx) = crossbeam_channel::unbounded();
        match Guard::start(tx) {
            Ok(mut guard) => {
                guard.protect(self.guard.group());
                self.guard = guard;
                self.guard_died = rx;
            }
            Err(e) => log::error!("cannot start the guard process: {e}"),
        }
    }

    /// Shuts the elector down (releasing the lease) and returns `code`.
    fn finish(&mut self, code: u8, why: &str) -> u8 {
        if let Some(cur) = self.current.take() {
            // Only on a failure: the command must not outlive the lease.
            cur.proc.signal(Signal::KILL);
            let _ = cur.proc.reap();
            self.guard.protect(0);
        }
        log::info!("{why}; exiting with status {code}");
        if let Err(e) = self.elector.shutdown() {
            log::warn!("releasing the lease: {}", explain(&e));
        }
        code
    }
}

/// SIGTERM now, SIGKILL at `kill_at`.
fn begin_stop(proc: &ChildProc, kill_at: Instant) -> Stop {
    log::info!(
        "SIGTERM to the command's process group (pid {}); SIGKILL in {}",
        proc.pid(),
        fmt_ms(kill_at.saturating_duration_since(Instant::now()))
    );
    proc.signal(Signal::TERM);
    Stop {
        kill_at,
        killed: false,
        late_logged: false,
    }
}

fn fmt_ms(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}
