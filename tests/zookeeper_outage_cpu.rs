//! What a ZooKeeper outage costs a process with a leading elector: CPU time and lines logged
//! (the provider's and the ZooKeeper client's, bridged from `tracing`) during a 10 s outage of
//! a private server, then during a 10 s outage where a listener accepts connections and closes
//! them at once (a load balancer with no backend), and that the elector leads again after each.
//! Alone in its binary so that the process's CPU time and log are this test's. Prints the
//! figures; the bounds are generous (a spin or a log flood fails them by orders of magnitude).
#![cfg(feature = "zookeeper")]

use le_test_support as common;

use std::time::Duration;

use common::logs::LINES;
use leader_election::{Elector, EventKinds, ZooKeeperOptions, ZooKeeperProvider};

const OUTAGE: Duration = Duration::from_secs(10);

fn loud(l: &str) -> bool {
    l.starts_with("ERROR") || l.starts_with("WARN") || l.starts_with("INFO")
}

/// Whether a line comes from the ZooKeeper provider or its client (not the elector).
fn zookeeper_line(l: &str) -> bool {
    let target = l.split_whitespace().nth(1).unwrap_or_default();
    target.starts_with("leader_election::providers::zookeeper")
        || target.starts_with("zookeeper_client")
}

/// Lines logged so far: (at INFO or above by the provider and its client, at INFO or above,
/// at any level).
fn line_counts() -> (usize, usize, usize) {
    let lines = LINES.lock().unwrap();
    let zk = lines
        .iter()
        .filter(|l| loud(l) && zookeeper_line(l))
        .count();
    let loud = lines.iter().filter(|l| loud(l)).count();
    (zk, loud, lines.len())
}

/// CPU time and lines logged while `f` runs; the INFO+ lines logged are printed.
fn measure(what: &str, f: impl FnOnce()) -> (Duration, usize, usize) {
    let (zk0, loud0, all0) = line_counts();
    let t0 = common::cpu_time();
    f();
    let cpu = common::cpu_time() - t0;
    let (zk1, loud1, all1) = line_counts();
    eprintln!(
        "{what}: {cpu:?} of CPU in {OUTAGE:?}; lines logged: {} at INFO or above by the \
         provider and its client, {} at INFO or above in all (the elector's included), {} at \
         any level:",
        zk1 - zk0,
        loud1 - loud0,
        all1 - all0
    );
    for l in LINES.lock().unwrap()[all0..all1]
        .iter()
        .filter(|l| !l.starts_with("DEBUG") && !l.starts_with("TRACE"))
    {
        eprintln!("    {l}");
    }
    (cpu, zk1 - zk0, all1 - all0)
}

#[test]
fn an_outage_costs_no_cpu_and_few_log_lines() {
    common::logs::capture();
    let session = Duration::from_secs(3);
    let mut zk = common::PrivateZooKeeper::start();
    let provider = ZooKeeperProvider::new(
        ZooKeeperOptions::new(zk.hosts())
            .session_timeout(session)
            .connect_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    let e = Elector::builder(provider)
        .group("cpu")
        .lease_ttl(session)
        .heartbeat_interval(Duration::from_millis(600))
        .retry_interval(Duration::from_millis(300))
        .start()
        .unwrap();
    let acquired = e.subscribe_filtered(EventKinds::ACQUIRED);
    assert!(acquired.recv_timeout(Duration::from_secs(20)).is_ok());

    // 1. The server is down: connections are refused.
    zk.kill_server();
    let (cpu, loud, all) = measure("server down", || std::thread::sleep(OUTAGE));
    assert!(!e.is_leader());
    assert!(
        cpu < OUTAGE / 10,
        "{cpu:?} of CPU in {OUTAGE:?} with the server down: a reconnect loop spins"
    );
    assert!(loud <= 20, "{loud} provider lines at INFO+ in one outage");
    assert!(all <= 400, "{all} lines at any level in one outage");
    zk.start_server();
    assert!(
        acquired.recv_timeout(Duration::from_secs(30)).is_ok(),
        "did not lead again after the server came back"
    );

    // 2. Something accepts connections and closes them at once.
    zk.kill_server();
    let lb = common::AcceptAndClose::start(zk.port);
    let (cpu, loud, all) = measure("accept-and-close listener", || std::thread::sleep(OUTAGE));
    let attempts = lb.accepted();
    eprintln!("accept-and-close listener: {attempts} connections in {OUTAGE:?}");
    assert!(!e.is_leader());
    assert!(
        cpu < OUTAGE / 10,
        "{cpu:?} of CPU in {OUTAGE:?} against an accept-and-close listener: a reconnect loop spins"
    );
    assert!(
        attempts <= 60,
        "{attempts} connections in {OUTAGE:?}: reconnecting does not back off"
    );
    assert!(loud <= 40, "{loud} provider lines at INFO+ in one outage");
    assert!(all <= 600, "{all} lines at any level in one outage");
    drop(lb);
    zk.start_server();
    assert!(
        acquired.recv_timeout(Duration::from_secs(30)).is_ok(),
        "did not lead again after the listener gave way to the server"
    );
    e.shutdown().unwrap();
}
