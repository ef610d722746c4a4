//! Three processes compete through the file provider; the leader is SIGKILLed twice; another
//! leads each time with a higher token, and no two processes ever lead at the same moment.
//!
//! Each child polls `is_leader()` every millisecond and logs its leadership intervals on
//! CLOCK_MONOTONIC, which all processes on one machine share. Intervals are widened
//! conservatively: a term starts at the last check that saw "not leader" and ends at the first
//! check after that saw "not leader" again. A killed leader's term ends at its kill at the
//! latest: the parent notes the time just before it sends SIGKILL (a process cannot run after
//! the signal lands, and its successor cannot lead before), not after reaping it — a fast
//! successor would otherwise look like an overlap.
#![cfg(all(unix, feature = "file"))]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use leader_election::{Elector, FileProvider};

const GROUP: &str = "multi-process";

fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The child's role: run only when the parent starts this binary with `LE_MP_DIR` set.
#[test]
#[ignore = "child role of multi_process_failover, which runs it"]
fn child_role() {
    let dir = PathBuf::from(std::env::var("LE_MP_DIR").expect("LE_MP_DIR"));
    let id = std::env::var("LE_MP_ID").expect("LE_MP_ID");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{id}.log")))
        .expect("log file");
    let elector = Elector::builder(FileProvider::new(dir.join("locks")).expect("provider"))
        .group(GROUP)
        .participant_id(&id)
        .lease_ttl(Duration::from_secs(3))
        .safety_margin(Duration::from_secs(1))
        .heartbeat_interval(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(100))
        .start()
        .expect("start");
    writeln!(log, "READY").unwrap();
    let end = Instant::now() + Duration::from_secs(90);
    let mut leading = false;
    let mut last_not_leader = mono_ns();
    while Instant::now() < end && !dir.join("stop").exists() {
        let before = mono_ns();
        let now_leading = elector.is_leader();
        let after = mono_ns();
        if now_leading && !leading {
            let token = elector.fencing_token().unwrap_or(0);
            writeln!(log, "ACQ {last_not_leader} {token}").unwrap();
        } else if !now_leading && leading {
            writeln!(log, "END {after}").unwrap();
        }
        if !now_leading {
            last_not_leader = before;
        }
        leading = now_leading;
        std::thread::sleep(Duration::from_millis(1));
    }
    elector.shutdown().expect("shutdown");
    if leading {
        writeln!(log, "END {}", mono_ns()).unwrap();
    }
    writeln!(log, "EXIT").unwrap();
}

struct Proc {
    id: String,
    child: Child,
    killed_at: Option<u64>,
}

fn spawn(dir: &Path, id: &str) -> Proc {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LE_MP_DIR", dir)
        .env("LE_MP_ID", id)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    Proc {
        id: id.to_owned(),
        child,
        killed_at: None,
    }
}

#[derive(Debug, Clone)]
struct Term {
    who: String,
    start: u64,
    end: u64,
    token: u64,
}

/// Parses every child's log into terms; an open term ends when its process was killed.
fn terms(dir: &Path, procs: &[Proc]) -> Vec<Term> {
    let mut out = Vec::new();
    for p in procs {
        let text = std::fs::read_to_string(dir.join(format!("{}.log", p.id))).unwrap_or_default();
        let mut open: Option<(u64, u64)> = None;
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["ACQ", start, token] => {
                    open = Some((start.parse().unwrap(), token.parse().unwrap()))
                }
                ["END", end] => {
                    let (start, token) = open.take().expect("END without ACQ");
                    out.push(Term {
                        who: p.id.clone(),
                        start,
                        end: end.parse().unwrap(),
                        token,
                    });
                }
                _ => {}
            }
        }
        if let Some((start, token)) = open {
            out.push(Term {
                who: p.id.clone(),
                start,
                end: p.killed_at.unwrap_or(u64::MAX),
                token,
            });
        }
    }
    out.sort_by_key(|t| t.start);
    out
}

fn wait_for_new_leader(dir: &Path, procs: &[Proc], after_token: u64) -> Term {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if let Some(t) = terms(dir, procs)
            .into_iter()
            .find(|t| t.token > after_token && t.end == u64::MAX)
        {
            return t;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no new leader within 20 s; terms: {:?}", terms(dir, procs));
}

#[test]
fn multi_process_failover() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut procs: Vec<Proc> = (0..3).map(|i| spawn(dir, &format!("child{i}"))).collect();

    let mut last_token = 0;
    let mut failovers = Vec::new();
    for _round in 0..2 {
        let leader = wait_for_new_leader(dir, &procs, last_token);
        assert!(
            leader.token > last_token,
            "token rose: {leader:?} after {last_token}"
        );
        last_token = leader.token;
        std::thread::sleep(Duration::from_millis(500)); // followers are campaigning
        let p = procs.iter_mut().find(|p| p.id == leader.who).unwrap();
        let killed = mono_ns();
        p.killed_at = Some(killed);
        p.child.kill().expect("SIGKILL");
        p.child.wait().expect("reap");
        let next = wait_for_new_leader(dir, &procs, last_token);
        failovers.push(Duration::from_nanos(next.start.saturating_sub(killed)));
    }
    let survivor = wait_for_new_leader(dir, &procs, last_token);
    assert!(survivor.token > last_token);

    std::fs::write(dir.join("stop"), b"").unwrap();
    for p in &mut procs {
        if p.killed_at.is_some() {
            continue;
        }
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match p.child.try_wait().unwrap() {
                Some(status) => {
                    assert!(status.success(), "{} exited with {status}", p.id);
                    break;
                }
                None if Instant::now() > end => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    panic!("{} did not stop", p.id);
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    let all = terms(dir, &procs);
    eprintln!("terms: {all:#?}\nfailover after SIGKILL (kill → next term start): {failovers:?}");
    assert!(all.len() >= 3, "at least three terms: {all:?}");
    for pair in all.windows(2) {
        assert!(
            pair[0].end <= pair[1].start,
            "overlapping leadership: {:?} and {:?}",
            pair[0],
            pair[1]
        );
        assert!(pair[1].token > pair[0].token, "tokens rise: {pair:?}");
    }
}
