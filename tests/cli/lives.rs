//! Watching the commands' lives: the START/END lines they append, and `/proc` for the ones
//! killed without a word.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::mono_ns;

#[derive(Debug, Clone)]
pub(crate) struct Life {
    pub(crate) token: u64,
    pub(crate) pid: u32,
    /// The tool that ran it.
    pub(crate) ppid: u32,
    pub(crate) start: u64,
    /// Written by the command as its last act.
    pub(crate) end_reported: Option<u64>,
    /// When the watcher first saw it gone.
    pub(crate) gone_seen: Option<u64>,
}

impl Life {
    /// When it stopped running: its own END, else when it was seen gone (an upper bound).
    pub(crate) fn end(&self) -> Option<u64> {
        self.end_reported.or(self.gone_seen)
    }
}

/// Reads the lives file and polls `/proc` for each living command, every millisecond.
pub(crate) struct Lives {
    pub(crate) path: PathBuf,
    lives: Arc<Mutex<Vec<Life>>>,
    stop: Arc<AtomicBool>,
}

pub(crate) fn proc_start_time(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f[0].chars().next()?, f[19].parse().ok()?))
}

impl Lives {
    pub(crate) fn new(dir: &Path) -> Lives {
        let path = dir.join("lives");
        std::fs::write(&path, b"").unwrap();
        let lives = Arc::new(Mutex::new(Vec::<Life>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, l, s) = (path.clone(), lives.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut identity: BTreeMap<u32, u64> = BTreeMap::new();
            while !s.load(Ordering::SeqCst) {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let now = mono_ns();
                let mut lives = l.lock().unwrap();
                for line in text.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    match f.as_slice() {
                        ["START", token, pid, ppid, t] => {
                            let pid: u32 = pid.parse().unwrap();
                            if !lives.iter().any(|x| x.pid == pid) {
                                lives.push(Life {
                                    token: token.parse().unwrap(),
                                    pid,
                                    ppid: ppid.parse().unwrap(),
                                    start: t.parse().unwrap(),
                                    end_reported: None,
                                    gone_seen: None,
                                });
                            }
                        }
                        ["END", _, pid, t] => {
                            let pid: u32 = pid.parse().unwrap();
                            if let Some(x) = lives.iter_mut().find(|x| x.pid == pid) {
                                x.end_reported.get_or_insert(t.parse().unwrap());
                            }
                        }
                        _ => {}
                    }
                }
                for x in lives.iter_mut().filter(|x| x.gone_seen.is_none()) {
                    let alive = match proc_start_time(x.pid) {
                        Some((state, started)) if state != 'Z' && state != 'X' => {
                            *identity.entry(x.pid).or_insert(started) == started
                        }
                        _ => false,
                    };
                    if !alive {
                        x.gone_seen = Some(now);
                    }
                }
                drop(lives);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Lives { path, lives, stop }
    }

    pub(crate) fn all(&self) -> Vec<Life> {
        let mut v = self.lives.lock().unwrap().clone();
        v.sort_by_key(|l| l.start);
        v
    }

    /// Waits for a command with a token above `after` to start.
    pub(crate) fn wait_start(&self, after: u64, within: Duration) -> Life {
        let end = Instant::now() + within;
        loop {
            if let Some(l) = self.all().into_iter().find(|l| l.token > after) {
                return l;
            }
            assert!(
                Instant::now() < end,
                "no command with a token above {after} within {within:?}: {:#?}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the command `pid` is over.
    pub(crate) fn wait_gone(&self, pid: u32, within: Duration) -> Life {
        let end = Instant::now() + within;
        loop {
            if let Some(l) = self
                .all()
                .into_iter()
                .find(|l| l.pid == pid && l.gone_seen.is_some())
            {
                return l;
            }
            assert!(
                Instant::now() < end,
                "command {pid} still runs after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// At no instant did two commands run; tokens rose with time. Returns the gaps between
    /// one command's end and the next one's start.
    pub(crate) fn assert_no_overlap(&self) -> Vec<Duration> {
        let all = self.all();
        let mut gaps = Vec::new();
        for pair in all.windows(2) {
            let end = pair[0].end().expect("a command still runs");
            assert!(
                end <= pair[1].start,
                "two commands ran at once: {:?} and {:?}\nall: {all:#?}",
                pair[0],
                pair[1]
            );
            assert!(pair[1].token > pair[0].token, "tokens fell: {pair:?}");
            gaps.push(Duration::from_nanos(pair[1].start - end));
        }
        gaps
    }
}

impl Drop for Lives {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
