//! SIGKILL of the leader's process: a follower in another process leads after the session
//! timeout, with a higher token.
#![cfg(all(unix, feature = "zookeeper"))]

use le_test_support as common;

use std::io::Write;
use std::time::{Duration, Instant};

use leader_election::{Elector, EventKinds, LeadershipChange, ZooKeeperOptions, ZooKeeperProvider};

const SESSION: Duration = Duration::from_secs(4);

fn provider(root: &str) -> ZooKeeperProvider {
    ZooKeeperProvider::new(
        ZooKeeperOptions::new(common::zookeeper_hosts())
            .root_path(root)
            .session_timeout(SESSION),
    )
    .expect("ZooKeeper at LE_ZOOKEEPER_HOSTS")
}

fn elector(root: &str, id: &str) -> Elector {
    Elector::builder(provider(root))
        .group("killed")
        .participant_id(id)
        .lease_ttl(SESSION)
        .heartbeat_interval(Duration::from_millis(800))
        .retry_interval(Duration::from_millis(300))
        .start()
        .unwrap()
}

#[test]
#[ignore = "child role of sigkill_of_the_leader_process, which runs it"]
fn zk_child_role() {
    let root = std::env::var("LE_ZK_ROOT").expect("LE_ZK_ROOT");
    let e = elector(&root, "child");
    let changes = e.subscribe_filtered(EventKinds::ACQUIRED);
    let mut out = std::io::stdout();
    if let Ok(LeadershipChange::Acquired { fencing_token, .. }) =
        changes.recv_timeout(Duration::from_secs(30))
    {
        writeln!(out, "ACQ {fencing_token}").unwrap();
        out.flush().unwrap();
    }
    std::thread::sleep(Duration::from_secs(60)); // until killed
}

#[test]
fn sigkill_of_the_leader_process() {
    let root = format!("/le-test/{}", common::unique("kill"));
    let (mut child, child_token) =
        common::spawn_leading_child("zk_child_role", ("LE_ZK_ROOT", &root));
    let follower = elector(&root, "parent");
    let changes = follower.subscribe_filtered(EventKinds::ACQUIRED);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!follower.is_leader());
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    match changes.recv_timeout(SESSION * 5) {
        Ok(LeadershipChange::Acquired { fencing_token, .. }) => {
            assert!(fencing_token > child_token)
        }
        other => panic!("the follower did not take over: {other:?}"),
    }
    let took = killed.elapsed();
    eprintln!("failover after SIGKILL took {took:?} (session timeout {SESSION:?})");
    // The session outlives the process by up to its timeout; never much less.
    assert!(
        took >= SESSION / 2,
        "took over after {took:?}, before the session could expire"
    );
    follower.shutdown().unwrap();
}
