//! Soak: 1,000 electors on one ZooKeeper provider (one session), each on its own group, TTL
//! 10 s, heartbeat 3 s, on the shared server. Prints the process's RSS every 30 s and every
//! leadership loss with its reason; fails on any loss (none is expected while the server is
//! healthy). Ignored by default (it runs for `LE_ZK_SOAK_SECS`, default 600 s):
//!
//! ```text
//! LE_EXTERNAL_SERVICES=1 cargo test --features zookeeper --test zookeeper_soak -- --ignored --nocapture
//! ```
#![cfg(feature = "zookeeper")]

use le_test_support as common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leader_election::{Elector, EventKinds, LeadershipChange, ZooKeeperOptions, ZooKeeperProvider};

const ELECTORS: usize = 1000;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "soak: runs for LE_ZK_SOAK_SECS (default 600 s)"]
fn a_thousand_electors_on_one_provider() {
    let secs: u64 = std::env::var("LE_ZK_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let root = format!("/le-test/{}", common::unique("soak"));
    let provider = Arc::new(
        ZooKeeperProvider::new(
            ZooKeeperOptions::new(common::zookeeper_hosts())
                .root_path(&root)
                .session_timeout(Duration::from_secs(10)),
        )
        .expect("ZooKeeper at LE_ZOOKEEPER_HOSTS"),
    );
    let started = Instant::now();
    let mut electors = Vec::with_capacity(ELECTORS);
    let mut changes = Vec::with_capacity(ELECTORS);
    for i in 0..ELECTORS {
        let e = Elector::builder(provider.clone())
            .group(format!("g{i}"))
            .participant_id("soak")
            .lease_ttl(Duration::from_secs(10))
            .heartbeat_interval(Duration::from_secs(3))
            .start()
            .unwrap();
        changes.push(e.subscribe_filtered(EventKinds::LOST | EventKinds::ACQUIRED));
        electors.push(e);
    }
    let all_lead = common::wait_for(Duration::from_secs(120), || {
        electors.iter().all(|e| e.is_leader())
    });
    eprintln!(
        "{ELECTORS} electors started, all leading: {all_lead}, after {:?}; RSS {} KiB",
        started.elapsed(),
        rss_kib()
    );
    let mut lost: BTreeMap<String, usize> = BTreeMap::new();
    let mut acquired = 0usize;
    let t0 = Instant::now();
    let mut next_print = t0;
    let mut samples = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        for c in &changes {
            for change in c.try_iter() {
                match change {
                    LeadershipChange::Lost { reason, .. } => {
                        *lost.entry(reason.to_string()).or_default() += 1;
                        eprintln!("  {:>4.0} s: lost ({reason})", t0.elapsed().as_secs_f64());
                    }
                    LeadershipChange::Acquired { .. } => acquired += 1,
                    _ => {}
                }
            }
        }
        if Instant::now() >= next_print {
            let rss = rss_kib();
            samples.push(rss);
            let leading = electors.iter().filter(|e| e.is_leader()).count();
            eprintln!(
                "{:>4} s: RSS {rss} KiB, {leading} leading, losses {lost:?}, re-acquired {acquired}",
                t0.elapsed().as_secs()
            );
            next_print += Duration::from_secs(30);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for e in electors {
        e.shutdown().unwrap();
    }
    eprintln!("RSS samples (KiB, every 30 s): {samples:?}; losses: {lost:?}");
    assert!(
        lost.is_empty(),
        "leadership lost on a healthy server: {lost:?}"
    );
}
