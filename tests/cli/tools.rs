//! The `leader-election` processes of the tests: long-running tools with their stderr kept in
//! a file, and short invocations.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::lives::Lives;
use super::{BIN, TIMING};

/// One `leader-election` process, its stderr kept in a file.
pub(crate) struct Tool {
    name: String,
    child: Child,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

/// The command line of the child role (behind `sh -c "trap '' TERM; exec …"` if it must
/// ignore SIGTERM).
pub(crate) fn child_command(ignore_term: bool) -> Vec<String> {
    let me = std::env::current_exe().unwrap().display().to_string();
    let mut argv: Vec<String> = Vec::new();
    if ignore_term {
        // A command that ignores SIGTERM, the shell way (the disposition survives exec).
        argv.extend(["sh", "-c", "trap '' TERM; exec \"$@\"", "sh"].map(String::from));
    }
    argv.push(me);
    argv.extend(
        [
            "--ignored",
            "--exact",
            "child_role",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(String::from),
    );
    argv
}

impl Tool {
    pub(crate) fn start(dir: &Path, name: &str, args: &[String], env: &[(&str, String)]) -> Tool {
        let stderr = dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Tool {
            name: name.to_owned(),
            child: cmd.spawn().expect("the leader-election binary"),
            stderr,
            status: None,
        }
    }

    /// `run URL --group G --id NAME TIMING… -- <the child role>`.
    pub(crate) fn run(
        dir: &Path,
        name: &str,
        url: &str,
        group: &str,
        lives: &Lives,
        ignore_term: bool,
    ) -> Tool {
        let mut args: Vec<String> = ["run", url, "--group", group, "--id", name]
            .map(String::from)
            .to_vec();
        args.extend(TIMING.iter().map(|s| s.to_string()));
        args.push("--".into());
        args.extend(child_command(ignore_term));
        let mut env = vec![("LE_CLI_LIVES", lives.path.display().to_string())];
        if ignore_term {
            env.push(("LE_CLI_IGNORE_TERM", "1".into()));
        }
        Tool::start(dir, name, &args, &env)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn signal(&self, sig: Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    pub(crate) fn wait(&mut self, within: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let end = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.status = Some(s);
                return s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit within {within:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::TERM);
            let end = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn logs(tools: &[Tool]) -> String {
    tools
        .iter()
        .map(|t| format!("--- {}:\n{}", t.name, t.log()))
        .collect()
}

/// A short-lived `leader-election` invocation: its exit code, stdout and stderr.
pub(crate) fn invoke(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the leader-election binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
