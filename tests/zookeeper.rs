//! The ZooKeeper provider against a live server: the conformance suite on the shared server
//! (`LE_ZOOKEEPER_HOSTS`), then session expiry, restarts and process death on private servers.
#![cfg(feature = "zookeeper")]

use le_test_support as common;

use std::time::{Duration, Instant};

use common::{PrivateZooKeeper, unique, zookeeper_hosts};
use leader_election::testing::Harness;
use leader_election::{
    AcquireRequest, Acquisition, Elector, Error, EventKinds, LeadershipChange, LostReason,
    Provider, ZooKeeperAcl, ZooKeeperOptions, ZooKeeperProvider,
};

struct ZkHarness {
    options: ZooKeeperOptions,
}

impl Harness for ZkHarness {
    type Provider = ZooKeeperProvider;
    fn client(&self) -> ZooKeeperProvider {
        ZooKeeperProvider::new(self.options.clone())
            .unwrap_or_else(|e| panic!("cannot reach ZooKeeper at LE_ZOOKEEPER_HOSTS: {e}"))
    }
}

fn options(hosts: &str) -> ZooKeeperOptions {
    ZooKeeperOptions::new(hosts)
        .root_path(format!("/le-test/{}", unique("run")))
        .session_timeout(Duration::from_secs(4))
        .connect_timeout(Duration::from_secs(5))
}

fn shared() -> ZkHarness {
    ZkHarness {
        options: options(&zookeeper_hosts()),
    }
}

leader_election::conformance_tests!(conformance, super::shared());

fn elector(p: impl Provider, group: &str, id: &str) -> Elector {
    Elector::builder(p)
        .group(group)
        .participant_id(id)
        .lease_ttl(Duration::from_secs(4))
        .safety_margin(Duration::from_millis(400))
        .heartbeat_interval(Duration::from_millis(800))
        .retry_interval(Duration::from_millis(300))
        .start()
        .unwrap()
}

#[test]
fn hand_off_on_release_is_driven_by_the_watch() {
    let opts = options(&zookeeper_hosts());
    // TTL 4 s = the session timeout; the follower polls only every 15–30 s.
    let took = common::assert_push_hand_off(Duration::from_secs(4), || {
        ZooKeeperProvider::new(opts.clone()).unwrap()
    });
    eprintln!("zookeeper hand-off on release took {took:?}");
}

/// A chroot in the connection string that does not exist yet is created like the root path
/// (a client-side chroot that does not exist made every campaign fail with "no node").
#[test]
fn a_chroot_that_does_not_exist_yet_is_created() {
    let hosts = format!("{}/le-test/{}", zookeeper_hosts(), unique("chroot"));
    let p = ZooKeeperProvider::new(options(&hosts)).unwrap();
    let e = elector(p, "chrooted", "a");
    let changes = e.subscribe();
    common::wait_acquired(&changes, Duration::from_secs(20));
    e.shutdown().unwrap();
}

/// Two electors with one participant id on one provider share its node: the twin that does
/// not lead shutting down (a withdraw) must not delete the leader's node, which would let the
/// next participant lead while the leader still believes it does.
#[test]
fn a_twin_that_withdraws_does_not_end_the_other_twins_term() {
    let opts = options(&zookeeper_hosts());
    let shared = std::sync::Arc::new(ZooKeeperProvider::new(opts.clone()).unwrap());
    let leader = elector(shared.clone(), "twins", "twin");
    common::wait_acquired(&leader.subscribe(), Duration::from_secs(20));
    let twin = elector(shared.clone(), "twins", "twin");
    let other = elector(ZooKeeperProvider::new(opts).unwrap(), "twins", "other");
    std::thread::sleep(Duration::from_millis(500));
    twin.shutdown().unwrap();
    // Several renews of the leader (every 800 ms) and campaigns of the other (300 ms).
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !(other.is_leader() && leader.is_leader()),
            "two leaders after a twin withdrew"
        );
    }
    assert!(
        leader.is_leader(),
        "the leader lost its term when its twin withdrew"
    );
    assert!(!other.is_leader());
    leader.shutdown().unwrap();
    other.shutdown().unwrap();
}

#[test]
fn options_are_checked_and_secrets_stay_out_of_errors() {
    let e = ZooKeeperProvider::new(ZooKeeperOptions::new("127.0.0.1:2181").root_path("relative"))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                field: "root_path",
                ..
            }
        ),
        "{e}"
    );
    let e = ZooKeeperProvider::new(ZooKeeperOptions::new("not a host")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                field: "connect",
                ..
            }
        ),
        "{e}"
    );
    let e = ZooKeeperProvider::new(
        ZooKeeperOptions::new(zookeeper_hosts()).acl(ZooKeeperAcl::CreatorAll),
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::InvalidConfig { field: "acl", .. }),
        "{e}"
    );
    // A lease longer than the session is refused: it could outlive its node.
    let p = ZooKeeperProvider::new(options(&zookeeper_hosts())).unwrap();
    let req = AcquireRequest::new("g", "a", Duration::from_secs(30));
    let e = p
        .try_acquire(&req, Instant::now() + Duration::from_secs(5))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                field: "lease_ttl",
                ..
            }
        ),
        "{e}"
    );
    // …and an elector with such a TTL is refused when it is built.
    let e = Elector::builder(p)
        .group("g")
        .lease_ttl(Duration::from_secs(30))
        .heartbeat_interval(Duration::from_secs(5))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("lease_ttl"), "{e}");
    let o = options(&zookeeper_hosts()).digest("u", "Sup3r-Secret");
    assert!(!format!("{o:?}").contains("Sup3r-Secret"));
}

#[test]
fn digest_auth_with_creator_acls() {
    let o = options(&zookeeper_hosts())
        .digest("le-user", "Sup3r-Secret")
        .acl(ZooKeeperAcl::CreatorAllWorldRead);
    let h = ZkHarness { options: o.clone() };
    leader_election::testing::first_acquirer_wins(&h);
    leader_election::testing::participant_and_metadata_round_trip(&h);
    // Another identity can read who leads but cannot join the election.
    let p = h.client();
    let req = AcquireRequest::new("acl", "a", Duration::from_secs(4));
    let Acquisition::Acquired(_l) = p
        .try_acquire(&req, Instant::now() + Duration::from_secs(5))
        .unwrap()
    else {
        panic!("not acquired")
    };
    let intruder = ZooKeeperProvider::new(o.digest("other", "Wr0ng")).unwrap();
    let seen = intruder
        .leader("acl", Instant::now() + Duration::from_secs(5))
        .unwrap();
    assert_eq!(seen.map(|l| l.participant_id).as_deref(), Some("a"));
    let req = AcquireRequest::new("acl", "intruder", Duration::from_secs(4));
    let e = intruder
        .try_acquire(&req, Instant::now() + Duration::from_secs(5))
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(!format!("{e} {e:?}").contains("Wr0ng"));
}

#[test]
fn frozen_server_leader_steps_down_by_its_deadline_then_someone_leads() {
    let zk = PrivateZooKeeper::start();
    let opts = options(&zk.hosts());
    let a = elector(ZooKeeperProvider::new(opts.clone()).unwrap(), "freeze", "a");
    let a_changes = a.subscribe();
    let (ta, _) = common::wait_acquired(&a_changes, Duration::from_secs(20));
    let b = elector(ZooKeeperProvider::new(opts).unwrap(), "freeze", "b");
    let b_changes = b.subscribe_filtered(EventKinds::ACQUIRED);
    std::thread::sleep(Duration::from_millis(500));
    let deadline = a.leader_deadline().expect("a leads");
    zk.freeze();
    let lost_at = common::expect_deadline_step_down(&a_changes, Duration::from_secs(10));
    assert!(
        lost_at < deadline + Duration::from_secs(1),
        "late step-down"
    );
    assert!(!a.is_leader());
    // Frozen past the session timeout: on thaw the server expires both sessions.
    std::thread::sleep(Duration::from_secs(3));
    zk.thaw();
    let leader_changes = [a.subscribe_filtered(EventKinds::ACQUIRED), b_changes];
    let end = Instant::now() + Duration::from_secs(30);
    let token = loop {
        if let Some(t) = leader_changes
            .iter()
            .find_map(|c| match c.try_recv_token() {
                Some(t) if t > ta => Some(t),
                _ => None,
            })
        {
            break t;
        }
        assert!(Instant::now() < end, "nobody led within 30 s of the thaw");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(token > ta, "a new session, a new node, a new token");
    assert!(!(a.is_leader() && b.is_leader()));
}

#[test]
fn zookeeper_restart_with_a_leader() {
    let mut zk = PrivateZooKeeper::start();
    let a = elector(
        ZooKeeperProvider::new(options(&zk.hosts())).unwrap(),
        "restart",
        "a",
    );
    let changes = a.subscribe();
    let (ta, _) = common::wait_acquired(&changes, Duration::from_secs(20));
    zk.kill_server();
    match changes.recv_timeout(Duration::from_secs(10)) {
        Ok(LeadershipChange::Lost {
            reason: LostReason::DeadlinePassed,
            ..
        }) => {}
        other => panic!("expected a deadline step-down, got {other:?}"),
    }
    zk.start_server();
    let (tb, _) = common::wait_acquired(&changes, Duration::from_secs(40));
    assert!(tb > ta);
    a.shutdown().unwrap();
}

trait TryToken {
    fn try_recv_token(&self) -> Option<u64>;
}

impl TryToken for leader_election::Changes {
    fn try_recv_token(&self) -> Option<u64> {
        self.try_iter().find_map(|c| match c {
            LeadershipChange::Acquired { fencing_token, .. } => Some(fencing_token),
            _ => None,
        })
    }
}

#[test]
fn one_provider_never_hands_the_same_term_out_twice() {
    let p = ZooKeeperProvider::new(options(&zookeeper_hosts())).unwrap();
    let deadline = || Instant::now() + Duration::from_secs(5);
    let req = AcquireRequest::new("twin", "same-id", Duration::from_secs(4));
    let Acquisition::Acquired(first) = p.try_acquire(&req, deadline()).unwrap() else {
        panic!("not acquired")
    };
    // The same participant id campaigning again while its term is out: held, not re-granted.
    match p.try_acquire(&req, deadline()).unwrap() {
        Acquisition::Held(_) => {}
        Acquisition::Acquired(l) => panic!("granted twice (token {})", l.fencing_token()),
    }
    p.release(&first, deadline()).unwrap();
    let Acquisition::Acquired(second) = p.try_acquire(&req, deadline()).unwrap() else {
        panic!("not acquired after release")
    };
    assert!(second.fencing_token() > first.fencing_token());
}

#[test]
fn renews_do_not_wake_the_waiting_follower() {
    use leader_election::{FaultyProvider, Operation};
    let opts = options(&zookeeper_hosts());
    let make = |p: Box<dyn Provider>, id: &str| {
        Elector::builder(p)
            .group("idle")
            .participant_id(id)
            .lease_ttl(Duration::from_secs(4))
            .heartbeat_interval(Duration::from_millis(250))
            .retry_interval(Duration::from_secs(30))
            .start()
            .unwrap()
    };
    let a = make(Box::new(ZooKeeperProvider::new(opts.clone()).unwrap()), "a");
    common::wait_acquired(&a.subscribe(), Duration::from_secs(20));
    let follower = FaultyProvider::new(ZooKeeperProvider::new(opts).unwrap());
    let faults = follower.faults();
    let b = make(Box::new(follower), "b");
    std::thread::sleep(Duration::from_secs(3)); // about twelve renews by a
    let campaigns = faults.calls(Operation::Acquire);
    assert!(
        campaigns <= 2,
        "the follower campaigned {campaigns} times in 3 s: renews are waking it"
    );
    assert!(a.is_leader() && !b.is_leader());
}

#[test]
fn an_overrun_on_a_shared_provider_never_ends_another_electors_lease() {
    let zk = PrivateZooKeeper::start();
    let opts = options(&zk.hosts());
    // One provider shared by two electors of this process, and one for "another process".
    let shared = std::sync::Arc::new(ZooKeeperProvider::new(opts.clone()).unwrap());
    let other = std::sync::Arc::new(ZooKeeperProvider::new(opts).unwrap());
    let builder = |p: &std::sync::Arc<ZooKeeperProvider>, group: &str, id: &str| {
        Elector::builder(p.clone())
            .group(group)
            .participant_id(id)
            .lease_ttl(Duration::from_secs(4))
            .safety_margin(Duration::from_millis(400))
    };
    // B leads "kept" on the shared provider and renews rarely.
    let b = builder(&shared, "kept", "b")
        .heartbeat_interval(Duration::from_millis(1500))
        .retry_interval(Duration::from_millis(300))
        .start()
        .unwrap();
    common::wait_acquired(&b.subscribe(), Duration::from_secs(20));
    // C, in the other process, waits for "kept" behind B (woken by its predecessor watch).
    let c = elector(other.clone(), "kept", "c");
    let c_acquired = c.subscribe_filtered(EventKinds::ACQUIRED);
    // X leads "busy" elsewhere; W campaigns for it on the shared provider with 100 ms calls.
    let x = elector(other.clone(), "busy", "x");
    common::wait_acquired(&x.subscribe(), Duration::from_secs(20));
    let w = builder(&shared, "busy", "w")
        .heartbeat_interval(Duration::from_millis(100))
        .retry_interval(Duration::from_millis(50))
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // A frozen server makes W's campaign overrun its deadline on the shared session.
    zk.freeze();
    std::thread::sleep(Duration::from_millis(800));
    zk.thaw();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if c_acquired.recv_timeout(Duration::from_millis(20)).is_ok() {
            assert!(
                !b.is_leader(),
                "C took \"kept\" while B, on the shared provider, still believed it led"
            );
        }
    }
    assert!(
        b.is_leader(),
        "B lost \"kept\" although its session was never lost"
    );
    drop((w, x, c));
}
