//! The elector's guarantees, tested on the in-memory provider with injected faults.

use std::time::{Duration, Instant};

use leader_election::{
    ChangesExt, Elector, Error, Faults, FaultyProvider, LeadershipChange, LostReason,
    MemoryProvider, Operation,
};

fn group(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits (generously) for the elector to lead.
fn wait_leader(e: &Elector) -> u64 {
    let changes = e.subscribe();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok(LeadershipChange::Acquired { fencing_token, .. }) =
            changes.recv_timeout(Duration::from_millis(100))
        {
            return fencing_token;
        }
    }
    panic!("{} did not lead within 10 s", e.participant_id());
}

fn quick(provider: impl leader_election::Provider, g: &str, id: &str) -> Elector {
    Elector::builder(provider)
        .group(g)
        .participant_id(id)
        .lease_ttl(Duration::from_millis(1000))
        .safety_margin(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(200))
        .retry_interval(Duration::from_millis(100))
        .start()
        .expect("start")
}

#[test]
fn late_subscriber_sees_the_current_state_first() {
    let e = quick(MemoryProvider::new(), &group("late"), "a");
    let token = wait_leader(&e);
    let changes = e.subscribe();
    match changes.try_iter().next() {
        Some(LeadershipChange::Acquired { fencing_token, .. }) => assert_eq!(fencing_token, token),
        other => panic!("expected Acquired first, got {other:?}"),
    }
    // take_until_leader on a leading elector returns at once.
    let start = Instant::now();
    assert_eq!(e.subscribe().take_until_leader().count(), 1);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn follower_learns_the_leader() {
    let p = MemoryProvider::new();
    let g = group("learn");
    let a = quick(p.clone(), &g, "a");
    let token = wait_leader(&a);
    let b = quick(p, &g, "b");
    let changes = b.subscribe();
    let seen = changes
        .recv_timeout(Duration::from_secs(10))
        .expect("a LeaderChanged");
    match seen {
        LeadershipChange::LeaderChanged { leader: Some(l) } => {
            assert_eq!(l.participant_id, "a");
            assert_eq!(l.fencing_token, token);
        }
        other => panic!("expected LeaderChanged, got {other:?}"),
    }
    assert_eq!(b.leader().unwrap().participant_id, "a");
    assert!(!b.is_leader());
    assert_eq!(b.fencing_token(), None);
}

#[test]
fn resign_hands_off_without_waiting_for_ttl_or_poll() {
    let p = MemoryProvider::new();
    let g = group("resign");
    // Long TTL and retry interval: a hand-off within seconds can only come from the release
    // and the watch wake-up.
    let slow = |id: &str| {
        Elector::builder(p.clone())
            .group(&g)
            .participant_id(id)
            .lease_ttl(Duration::from_secs(60))
            .heartbeat_interval(Duration::from_secs(5))
            .retry_interval(Duration::from_secs(30))
            .start()
            .unwrap()
    };
    let a = slow("a");
    let ta = wait_leader(&a);
    let b = slow("b");
    let b_changes = b.subscribe_filtered(leader_election::EventKinds::ACQUIRED);
    // Let b's first campaign finish (it sees a).
    std::thread::sleep(Duration::from_millis(200));
    let a_changes = a.subscribe();
    assert!(a_changes.recv().unwrap().is_acquired());
    let start = Instant::now();
    a.resign();
    assert_eq!(
        a_changes.recv_timeout(Duration::from_secs(5)),
        Ok(LeadershipChange::Lost {
            fencing_token: ta,
            reason: LostReason::Resigned
        })
    );
    assert!(!a.is_leader());
    match b_changes.recv_timeout(Duration::from_secs(10)) {
        Ok(LeadershipChange::Acquired { fencing_token, .. }) => assert!(fencing_token > ta),
        other => panic!("b did not take over: {other:?}"),
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "hand-off took {took:?}");
    eprintln!("resign hand-off took {took:?}");
    // The resigner does not grab leadership back.
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.is_leader() && !a.is_leader());
}

#[test]
fn shutdown_releases_and_ends_the_streams() {
    let p = MemoryProvider::new();
    let g = group("shutdown");
    let a = quick(p.clone(), &g, "a");
    let ta = wait_leader(&a);
    let b = quick(p, &g, "b");
    let mut a_changes = a.subscribe();
    assert!(a_changes.next().unwrap().is_acquired());
    a.shutdown().expect("clean shutdown");
    assert_eq!(
        a_changes.next(),
        Some(LeadershipChange::Lost {
            fencing_token: ta,
            reason: LostReason::ShutDown
        })
    );
    assert_eq!(a_changes.next(), None, "the stream ends after shutdown");
    assert!(!a.is_leader());
    assert!(wait_leader(&b) > ta);
    // Idempotent, and a subscription after shutdown is empty.
    a.shutdown().unwrap();
    assert_eq!(a.subscribe().next(), None);
}

#[test]
fn hung_backend_cannot_delay_the_step_down() {
    let mem = MemoryProvider::new();
    let faulty = FaultyProvider::new(mem.clone());
    let faults: Faults = faulty.faults();
    let g = group("hung");
    let a = quick(faulty, &g, "a");
    let ta = wait_leader(&a);
    let changes = a.subscribe_filtered(leader_election::EventKinds::LOST);
    faults.only(&[Operation::Renew, Operation::Release]);
    faults.hang();
    let b = quick(mem, &g, "b");
    let b_changes = b.subscribe_filtered(leader_election::EventKinds::ACQUIRED);

    // The renew now hangs forever; the deadline can only move back from here.
    let deadline = a.leader_deadline().expect("a leads");
    let lost = changes
        .recv_timeout(Duration::from_secs(10))
        .expect("Lost must be delivered while the renew hangs");
    let lost_at = Instant::now();
    assert_eq!(
        lost,
        LeadershipChange::Lost {
            fencing_token: ta,
            reason: LostReason::DeadlinePassed
        }
    );
    assert!(
        lost_at >= deadline - Duration::from_millis(250),
        "stepped down early"
    );
    assert!(!a.is_leader(), "is_leader() after the deadline");
    assert!(faults.hung_calls() >= 1, "the renew really hung");

    // b takes over only after a's deadline (its lease expired on the backend).
    let acquired = b_changes.recv_timeout(Duration::from_secs(10));
    let b_at = Instant::now();
    match acquired {
        Ok(LeadershipChange::Acquired { fencing_token, .. }) => assert!(fencing_token > ta),
        other => panic!("b did not take over: {other:?}"),
    }
    assert!(b_at > deadline, "b led before a's deadline");

    // The hung call returns; a must stay a follower and shut down cleanly.
    faults.clear();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!a.is_leader());
    assert!(b.is_leader());
    a.shutdown().unwrap();
}

#[test]
fn transient_campaign_errors_are_retried() {
    let faulty = FaultyProvider::new(MemoryProvider::new());
    let faults = faulty.faults();
    faults.only(&[Operation::Acquire]);
    faults.fail_next(3);
    let a = quick(faulty, &group("retry"), "a");
    wait_leader(&a);
    assert!(faults.calls(Operation::Acquire) >= 4);
}

#[test]
fn a_failed_renew_within_the_deadline_keeps_leadership() {
    let faulty = FaultyProvider::new(MemoryProvider::new());
    let faults = faulty.faults();
    let a = quick(faulty, &group("renewfail"), "a");
    let ta = wait_leader(&a);
    let changes = a.subscribe_filtered(leader_election::EventKinds::LOST);
    faults.only(&[Operation::Renew]);
    faults.fail_next(1);
    let before = faults.calls(Operation::Renew);
    let end = Instant::now() + Duration::from_secs(10);
    while faults.calls(Operation::Renew) < before + 4 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(faults.calls(Operation::Renew) >= before + 4, "renews go on");
    assert!(
        changes.try_iter().next().is_none(),
        "no Lost after one failed renew"
    );
    assert_eq!(a.fencing_token(), Some(ta));
}

#[test]
fn crash_failover_within_ttl_plus_retry() {
    let mem = MemoryProvider::new();
    let faulty = FaultyProvider::new(mem.clone());
    let faults = faulty.faults();
    let g = group("crash");
    let a = quick(faulty, &g, "a");
    let ta = wait_leader(&a);
    let b = quick(mem, &g, "b");
    let b_changes = b.subscribe_filtered(leader_election::EventKinds::ACQUIRED);
    std::thread::sleep(Duration::from_millis(300));
    // "Crash": the release never reaches the backend, so the lease must expire.
    faults.only(&[Operation::Release]);
    faults.fail_next_permanent(u32::MAX);
    let stopped = Instant::now();
    let err = a.shutdown().expect_err("the failed release is reported");
    assert!(matches!(err, Error::Injected { .. }), "{err}");
    let acquired = b_changes.recv_timeout(Duration::from_secs(10));
    let took = stopped.elapsed();
    match acquired {
        Ok(LeadershipChange::Acquired { fencing_token, .. }) => assert!(fencing_token > ta),
        other => panic!("b did not take over: {other:?}"),
    }
    // TTL 1 s + retry 100 ms, with generous slack for a busy machine.
    assert!(took < Duration::from_secs(5), "failover took {took:?}");
    eprintln!("crash failover took {took:?} (TTL 1 s, retry 100 ms)");
}

#[test]
fn slow_and_dropped_subscribers_never_block_the_elector() {
    let p = MemoryProvider::new();
    let g = group("slow");
    let a = quick(p.clone(), &g, "a");
    let b = quick(p, &g, "b");
    let never_read = a.subscribe();
    drop(b.subscribe());
    let mut terms = 0;
    let mut last = 0;
    let end = Instant::now() + Duration::from_secs(30);
    while terms < 10 && Instant::now() < end {
        for e in [&a, &b] {
            if e.is_leader() {
                let t = e.fencing_token().unwrap();
                if t > last {
                    last = t;
                    terms += 1;
                    e.resign();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(terms >= 10, "only {terms} terms in 30 s");
    // Everything a saw is queued, in order, with alternating Acquired/Lost.
    let seen: Vec<_> = never_read
        .try_iter()
        .filter(|c| !matches!(c, LeadershipChange::LeaderChanged { .. }))
        .collect();
    assert!(seen.len() >= 4);
    for pair in seen.windows(2) {
        assert_ne!(pair[0].is_acquired(), pair[1].is_acquired(), "{pair:?}");
    }
}

#[test]
fn shutdown_with_a_hung_backend_is_bounded() {
    let faulty = FaultyProvider::new(MemoryProvider::new());
    let faults = faulty.faults();
    let a = Elector::builder(faulty)
        .group(group("hungstop"))
        .lease_ttl(Duration::from_secs(3))
        .heartbeat_interval(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_millis(500))
        .start()
        .unwrap();
    wait_leader(&a);
    faults.hang();
    std::thread::sleep(Duration::from_millis(500)); // a renew is now stuck
    let start = Instant::now();
    let r = a.shutdown();
    // The shutdown timeout (500 ms), with generous slack for a busy machine.
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    assert!(!a.is_leader());
    faults.clear();
}

#[test]
fn dropping_the_elector_releases() {
    let p = MemoryProvider::new();
    let g = group("drop");
    let a = quick(p.clone(), &g, "a");
    let ta = wait_leader(&a);
    drop(a);
    assert!(p.last_token(&g) >= ta);
    let b = Elector::builder(p)
        .group(&g)
        .participant_id("b")
        .lease_ttl(Duration::from_secs(60))
        .heartbeat_interval(Duration::from_secs(5))
        .start()
        .unwrap();
    let start = Instant::now();
    wait_leader(&b);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the drop released"
    );
}

#[test]
fn a_failed_release_is_retried_so_followers_need_not_wait_for_the_ttl() {
    let mem = MemoryProvider::new();
    let faulty = FaultyProvider::new(mem.clone());
    let faults = faulty.faults();
    let g = group("release-retry");
    let slow = |p: Box<dyn leader_election::Provider>, id: &str| {
        Elector::builder(p)
            .group(&g)
            .participant_id(id)
            .lease_ttl(Duration::from_secs(60))
            .heartbeat_interval(Duration::from_secs(5))
            .retry_interval(Duration::from_millis(200))
            .start()
            .unwrap()
    };
    let a = slow(Box::new(faulty), "a");
    let ta = wait_leader(&a);
    let b = slow(Box::new(mem), "b");
    let b_changes = b.subscribe_filtered(leader_election::EventKinds::ACQUIRED);
    faults.only(&[Operation::Release]);
    faults.fail_next(1); // transient
    a.resign();
    match b_changes.recv_timeout(Duration::from_secs(20)) {
        Ok(LeadershipChange::Acquired { fencing_token, .. }) => assert!(fencing_token > ta),
        other => panic!("b did not take over within 20 s (TTL 60 s): {other:?}"),
    }
    assert!(
        faults.calls(Operation::Release) >= 2,
        "the release was retried"
    );
}

#[test]
fn two_electors_with_one_id_never_both_lead() {
    let p = MemoryProvider::new();
    let g = group("twins");
    let a = quick(p.clone(), &g, "same-id");
    let ta = wait_leader(&a);
    let b = quick(p, &g, "same-id");
    // b campaigns every 50–100 ms for 1.5 s while a renews: it must never be granted a term.
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        assert!(!(a.is_leader() && b.is_leader()), "both twins lead");
        assert!(!b.is_leader());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(a.fencing_token(), Some(ta));
    // Once a has gone (released), b leads with a higher token.
    a.shutdown().unwrap();
    assert!(wait_leader(&b) > ta);
}
