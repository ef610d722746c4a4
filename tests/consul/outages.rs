//! Outages and early invalidation: a session Consul invalidates at the earliest moment its
//! documentation allows, and a double that stalls and then refuses connections.

use super::*;

/// Consul may invalidate a session as early as one TTL after its last renew. A leader whose
/// renews hang, with a 10 s lease on a 10 s session and a thin 200 ms margin, must have stepped
/// down before the follower leads. (The lock-delay must be at least the lease TTL — the
/// provider refuses less — so the follower also waits out the lock-delay here.)
#[test]
fn a_session_invalidated_at_its_earliest_never_yields_two_leaders() {
    let double = ConsulDouble::start();
    double.set_expiry(Expiry::AtTtl);
    let options = ConsulOptions::new(double.url())
        .key_prefix(prefix())
        .lock_delay(Duration::from_secs(10));
    let faulty = FaultyProvider::new(ConsulProvider::new(options.clone()).unwrap());
    let faults = faulty.faults();
    let start = |p: Box<dyn Provider>, id: &str| {
        Elector::builder(p)
            .group("early")
            .participant_id(id)
            .lease_ttl(Duration::from_secs(10))
            .safety_margin(Duration::from_millis(200))
            .heartbeat_interval(Duration::from_secs(2))
            .retry_interval(Duration::from_millis(100))
            .start()
            .unwrap()
    };
    let a = start(Box::new(faulty), "a");
    let (ta, _) = common::wait_acquired(&a.subscribe(), Duration::from_secs(20));
    let b = start(Box::new(ConsulProvider::new(options).unwrap()), "b");
    std::thread::sleep(Duration::from_millis(500));
    faults.only(&[Operation::Renew]);
    faults.hang(); // a's renews never come back: its session ends at exactly one TTL
    let mut a_deadline = a.leader_deadline().expect("a leads");
    let b_first = loop {
        let (al, bl) = (a.is_leader(), b.is_leader());
        assert!(!(al && bl), "two leaders at once");
        if let Some(d) = a.leader_deadline() {
            a_deadline = d;
        }
        if bl {
            break Instant::now();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(!a.is_leader());
    assert!(b_first > a_deadline, "b led before a's deadline");
    eprintln!(
        "early invalidation: b led {:?} after a's deadline",
        b_first - a_deadline
    );
    assert!(b.fencing_token().unwrap() > ta);
    faults.unhang();
    drop(a);
    b.shutdown().unwrap();
}

/// The double stalls, then refuses connections: the leader steps down on its own deadline,
/// and leads again once the double answers.
#[test]
fn a_stalled_then_refusing_consul_steps_the_leader_down_on_time() {
    let double = ConsulDouble::start();
    let options = ConsulOptions::new(double.url())
        .key_prefix(prefix())
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_millis(800));
    let ttl = Duration::from_secs(3);
    let e = Elector::builder(ConsulProvider::new(options).unwrap())
        .group("outage")
        .lease_ttl(ttl)
        .heartbeat_interval(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(200))
        .start()
        .unwrap();
    let changes = e.subscribe();
    let (first, _) = common::wait_acquired(&changes, Duration::from_secs(20));
    double.faults(|f| f.stall = true);
    let stalled = Instant::now();
    let at = common::expect_deadline_step_down(&changes, Duration::from_secs(10));
    let took = at - stalled;
    eprintln!(
        "stall: stepped down {took:?} after the double stopped answering (lease TTL {ttl:?})"
    );
    assert!(
        took <= ttl + Duration::from_secs(1),
        "stepped down late: {took:?}"
    );
    assert!(!e.is_leader());
    double.faults(|f| {
        f.stall = false;
        f.refuse = true;
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!e.is_leader(), "led while the double refused connections");
    double.heal();
    let healed = Instant::now();
    let (again, _) = common::wait_acquired(&changes, Duration::from_secs(40));
    eprintln!(
        "outage: led again {:?} after the double healed",
        healed.elapsed()
    );
    assert!(again > first, "no new, higher token: {again} after {first}");
    e.shutdown().unwrap();
}
