//! At a process limit, `start()` returns a clear error and the electors already running keep
//! leading: the process never aborts. A child process (this test binary again) runs with its
//! address space capped (`ulimit -v`), starts electors until one is refused, checks that every
//! elector started still leads with its first token after a few heartbeats, and reports; the
//! parent checks the child exited normally (an abort would end it with SIGABRT).

use std::process::Command;
use std::time::{Duration, Instant};

use leader_election::{Elector, Error, MemoryProvider};

const CHILD: &str = "LE_LIMITS_CHILD";

/// The child's body: returns the line it prints for the parent.
fn child() -> String {
    let provider = MemoryProvider::new();
    let mut electors = Vec::new();
    let refused = loop {
        if electors.len() >= 50_000 {
            return "CHILD-NEVER-REFUSED".into();
        }
        let started = Elector::builder(provider.clone())
            .group(format!("limits-{}", electors.len()))
            .participant_id("p")
            .lease_ttl(Duration::from_secs(10))
            .heartbeat_interval(Duration::from_millis(500))
            .retry_interval(Duration::from_millis(500))
            .start();
        match started {
            Ok(e) => electors.push(e),
            Err(e) => break e,
        }
    };
    // Let every elector win its group, then run a few heartbeats at the limit.
    let end = Instant::now() + Duration::from_secs(60);
    while electors.iter().any(|e| !e.is_leader()) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let tokens: Vec<Option<u64>> = electors.iter().map(|e| e.fencing_token()).collect();
    std::thread::sleep(Duration::from_secs(3));
    let still: usize = electors
        .iter()
        .zip(&tokens)
        .filter(|(e, t)| e.is_leader() && e.fencing_token() == **t && t.is_some())
        .count();
    let kind = match &refused {
        Error::ResourceLimit { .. } => "ResourceLimit",
        Error::Io { .. } => "Io",
        _ => "other",
    };
    let n = electors.len();
    for e in electors {
        let _ = e.shutdown();
    }
    format!(
        "CHILD-OK started={n} still_leading={still} kind={kind} error={}",
        refused.report()
    )
}

#[test]
fn at_the_address_space_limit_start_fails_and_running_electors_go_on() {
    if std::env::var_os(CHILD).is_some() {
        println!("{}", child());
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // 1 GiB of address space: room for the test harness and a few thousand electors (with
    // glibc's per-thread arenas, 64 MiB of address space each, capped at two).
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
        .arg(&exe)
        .args([
            "--exact",
            "at_the_address_space_limit_start_fails_and_running_electors_go_on",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("MALLOC_ARENA_MAX", "2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child did not exit normally ({:?}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("CHILD-").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no report from the child:\n{stdout}\n{stderr}"));
    println!("{line}");
    assert!(line.starts_with("CHILD-OK"), "{line}");
    let field = |name: &str| -> usize {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let started = field("started");
    assert!(started >= 100, "only {started} electors fit: {line}");
    assert_eq!(
        field("still_leading"),
        started,
        "electors lost leadership at the limit: {line}"
    );
    assert!(line.contains("kind=ResourceLimit"), "{line}");
    assert!(line.contains("address space (RLIMIT_AS)"), "{line}");
}
