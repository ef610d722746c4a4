//! CPU spent while the ZooKeeper server is down. Alone in its binary so that the process's
//! CPU time is this test's. Prints the figures; fails only on a spin (a busy core).
#![cfg(feature = "zookeeper")]

use le_test_support as common;

use std::time::Duration;

use leader_election::{Elector, EventKinds, ZooKeeperOptions, ZooKeeperProvider};

#[test]
fn no_cpu_spin_while_the_server_is_down() {
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

    zk.kill_server();
    // Phase 1: the crate's client is inside its session timeout and reconnects on its own.
    let t0 = common::cpu_time();
    std::thread::sleep(session + Duration::from_secs(1));
    let phase1 = common::cpu_time() - t0;
    // Phase 2: the session is over; the provider probes with plain TCP connects and backs off.
    let t1 = common::cpu_time();
    let window = Duration::from_secs(5);
    std::thread::sleep(window);
    let phase2 = common::cpu_time() - t1;
    eprintln!(
        "CPU while ZooKeeper is down: {phase1:?} in the first {:?} (inside the session timeout), \
         {phase2:?} in the next {window:?}",
        session + Duration::from_secs(1)
    );
    assert!(!e.is_leader());
    assert!(
        phase2 < window / 4,
        "{phase2:?} of CPU in {window:?} with the server down: a reconnect loop spins"
    );

    zk.start_server();
    assert!(
        acquired.recv_timeout(Duration::from_secs(30)).is_ok(),
        "did not lead again after the server came back"
    );
    e.shutdown().unwrap();
}
