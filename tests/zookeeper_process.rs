//! SIGKILL of the leader's process: a follower in another process leads after the session
//! timeout — within the negotiated timeout plus one server tick, the documented bound — with a
//! higher token.
#![cfg(all(unix, feature = "zookeeper"))]

use le_test_support as common;

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
    common::report_leadership_until_killed(&e);
}

#[test]
fn sigkill_of_the_leader_process() {
    let root = format!("/le-test/{}", common::unique("kill"));
    let (mut child, child_token) =
        common::spawn_leading_child("zk_child_role", ("LE_ZK_ROOT", &root));
    let follower_provider = provider(&root);
    let follower_session = follower_provider.session_timeout();
    let follower = Elector::builder(follower_provider)
        .group("killed")
        .participant_id("parent")
        .lease_ttl(SESSION)
        .heartbeat_interval(Duration::from_millis(800))
        .retry_interval(Duration::from_millis(300))
        .start()
        .unwrap();
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
    let hosts = common::zookeeper_hosts();
    let first = hosts.split(',').next().unwrap_or_default();
    let tick = common::server_tick(first).unwrap_or(Duration::from_secs(2));
    let negotiated = follower_session;
    eprintln!(
        "failover after SIGKILL took {took:?} (negotiated session timeout {negotiated:?}, \
         server tick {tick:?}: documented bound {:?} + a few round trips)",
        negotiated + tick
    );
    // The session outlives the process by up to its timeout; never much less.
    assert!(
        took >= SESSION / 2,
        "took over after {took:?}, before the session could expire"
    );
    // The documented bound: the negotiated timeout plus one server tick (sessions expire on
    // tick boundaries), plus generous slack for the woken follower's round trips.
    assert!(
        took <= negotiated + tick + Duration::from_millis(1500),
        "failover took {took:?}, beyond the negotiated timeout {negotiated:?} + tick {tick:?}"
    );
    follower.shutdown().unwrap();
}
