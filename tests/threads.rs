//! No thread outlives its elector and provider: heartbeat, LISTEN and pub/sub threads,
//! connection pools and ZooKeeper clients all end after shutdown and drop; the process-wide
//! I/O pool (`le-pool-*`) and the ZooKeeper client's reactor (`async-io`) stay, small. Alone
//! in its own test binary, so the process's thread count is this test's.
#![cfg(all(feature = "postgres", feature = "redis", feature = "zookeeper"))]

use le_test_support as common;

use std::time::Duration;

use leader_election::{
    ChangesExt, Elector, MemoryProvider, PostgresOptions, PostgresProvider, Provider, RedisOptions,
    RedisProvider, ZooKeeperOptions, ZooKeeperProvider,
};

fn lead_and_stop(provider: impl Provider, group: &str) {
    let a = Elector::builder(provider)
        .group(group)
        .lease_ttl(Duration::from_secs(3))
        .heartbeat_interval(Duration::from_millis(300))
        .retry_interval(Duration::from_millis(200))
        .start()
        .unwrap();
    a.subscribe().take_until_leader().for_each(drop);
    std::thread::sleep(Duration::from_millis(500)); // renews, watch established
    a.shutdown().unwrap();
}

/// Threads of this process outside the process-wide ones, and those: the I/O pool and the
/// ZooKeeper client's one `async-io` reactor thread.
fn threads() -> (usize, usize) {
    let names = common::thread_names();
    let shared = names
        .iter()
        .filter(|n| n.starts_with("le-pool") || *n == "async-io")
        .count();
    (names.len() - shared, shared)
}

#[test]
fn no_thread_outlives_its_elector() {
    let (before, _) = threads();
    for round in 0..3 {
        let g = common::unique("threads").replace('_', "-");
        lead_and_stop(MemoryProvider::new(), &g);
        let pg = PostgresProvider::new(PostgresOptions::new(common::postgres_url())).unwrap();
        lead_and_stop(pg, &g);
        let redis = RedisProvider::new(RedisOptions::new(common::redis_url())).unwrap();
        lead_and_stop(redis, &g);
        let zk = ZooKeeperProvider::new(
            ZooKeeperOptions::new(common::zookeeper_hosts())
                .root_path("/le-test/threads")
                .session_timeout(Duration::from_secs(3)),
        )
        .unwrap();
        lead_and_stop(zk, &g);
        assert!(
            common::wait_for(Duration::from_secs(10), || threads().0 <= before),
            "round {round}: {} threads after shutdown, {before} before: {:?}",
            threads().0,
            common::thread_names()
        );
        // The pool's monitor and a few workers (those beyond one end after 30 s idle), and
        // the ZooKeeper client's reactor.
        assert!(threads().1 <= 9, "{:?}", common::thread_names());
    }
}
