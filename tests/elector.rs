//! The elector's everyday guarantees on the in-memory provider, without injected faults:
//! subscriptions, hand-off on resign, shutdown and drop, slow subscribers, and twins that share
//! a participant id. Faults live in `elector_faults.rs`, deadlines in `elector_deadlines.rs`.
//!
//! Electors use `steady_elector` (TTL 3 s, margin 1 s, heartbeat 500 ms): a stall of a second
//! or so on a busy machine does not end a term, so no check here depends on tight timing.

use std::time::{Duration, Instant};

use le_test_support::{steady_elector, unique, wait_leader};
use leader_election::{
    ChangesExt, Elector, EventKinds, LeadershipChange, LostReason, MemoryProvider,
};

#[test]
fn late_subscriber_sees_the_current_state_first() {
    let e = steady_elector(MemoryProvider::new(), &unique("late"), "a");
    let token = wait_leader(&e);
    let changes = e.subscribe();
    match changes.try_iter().next() {
        Some(LeadershipChange::Acquired { fencing_token, .. }) => assert_eq!(fencing_token, token),
        other => panic!("expected Acquired first, got {other:?}"),
    }
    // take_until_leader on a leading elector returns at once (the first change is Acquired).
    assert_eq!(e.subscribe().take_until_leader().count(), 1);
}

#[test]
fn follower_learns_the_leader() {
    let p = MemoryProvider::new();
    let g = unique("learn");
    let a = steady_elector(p.clone(), &g, "a");
    let token = wait_leader(&a);
    let b = steady_elector(p, &g, "b");
    let changes = b.subscribe();
    let seen = changes
        .recv_timeout(Duration::from_secs(20))
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
    let g = unique("resign");
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
    // b's first campaign has answered (it names a), so its next poll is 15–30 s away.
    match b.subscribe().recv_timeout(Duration::from_secs(20)) {
        Ok(LeadershipChange::LeaderChanged { leader: Some(l) }) => assert_eq!(l.fencing_token, ta),
        other => panic!("b did not learn of a: {other:?}"),
    }
    let b_changes = b.subscribe_filtered(EventKinds::ACQUIRED);
    let a_changes = a.subscribe();
    assert!(a_changes.recv().unwrap().is_acquired());
    let start = Instant::now();
    a.resign();
    assert!(!a.is_leader(), "is_leader() is false when resign() returns");
    assert_eq!(
        a_changes.recv_timeout(Duration::from_secs(10)),
        Ok(LeadershipChange::Lost {
            fencing_token: ta,
            reason: LostReason::Resigned
        })
    );
    match b_changes.recv_timeout(Duration::from_secs(10)) {
        Ok(LeadershipChange::Acquired { fencing_token, .. }) => assert!(fencing_token > ta),
        other => panic!("b did not take over within 10 s: {other:?}"),
    }
    eprintln!("resign hand-off took {:?}", start.elapsed());
    // The resigner does not campaign for a retry interval (30 s), so it cannot take it back.
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.is_leader() && !a.is_leader());
}

#[test]
fn shutdown_releases_and_ends_the_streams() {
    let p = MemoryProvider::new();
    let g = unique("shutdown");
    let a = steady_elector(p.clone(), &g, "a");
    let ta = wait_leader(&a);
    let b = steady_elector(p, &g, "b");
    let mut a_changes = a.subscribe();
    assert!(a_changes.next().unwrap().is_acquired());
    a.shutdown().expect("clean shutdown");
    // Then the shutdown's Lost, and the stream ends. (Only a stall of seconds could end the
    // term first, on its deadline; that is a legitimate lapse, not a failure.)
    let rest: Vec<_> = a_changes.by_ref().collect();
    match rest.first() {
        Some(LeadershipChange::Lost {
            fencing_token,
            reason: LostReason::ShutDown,
        }) if *fencing_token == ta => assert_eq!(rest.len(), 1, "{rest:?}"),
        Some(LeadershipChange::Lost {
            fencing_token,
            reason: LostReason::DeadlinePassed,
        }) if *fencing_token == ta => eprintln!("a's term lapsed before the shutdown: {rest:?}"),
        _ => panic!("expected Lost({ta}, ShutDown), then the end: {rest:?}"),
    }
    assert!(!a.is_leader());
    assert!(wait_leader(&b) > ta);
    // Idempotent, and a subscription after shutdown is empty.
    a.shutdown().unwrap();
    assert_eq!(a.subscribe().next(), None);
}

#[test]
fn slow_and_dropped_subscribers_never_block_the_elector() {
    let p = MemoryProvider::new();
    let g = unique("slow");
    let a = steady_elector(p.clone(), &g, "a");
    let b = steady_elector(p, &g, "b");
    let never_read = a.subscribe();
    drop(b.subscribe());
    let mut terms = 0;
    let mut last = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while terms < 10 && Instant::now() < end {
        for e in [&a, &b] {
            if let Some(t) = e.fencing_token()
                && t > last
            {
                last = t;
                terms += 1;
                e.resign();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(terms >= 10, "only {terms} terms in 60 s");
    // Everything a saw is queued, in order, with alternating Acquired/Lost.
    let seen: Vec<_> = never_read
        .try_iter()
        .filter(|c| !matches!(c, LeadershipChange::LeaderChanged { .. }))
        .collect();
    assert!(seen.len() >= 4, "{seen:?}");
    for pair in seen.windows(2) {
        assert_ne!(pair[0].is_acquired(), pair[1].is_acquired(), "{pair:?}");
    }
}

#[test]
fn dropping_the_elector_releases() {
    let p = MemoryProvider::new();
    let g = unique("drop");
    let a = steady_elector(p.clone(), &g, "a");
    let ta = wait_leader(&a);
    drop(a);
    assert!(p.last_token(&g) >= ta);
    // A 60 s lease and a 30 s poll: leading within 10 s needs the released lease.
    let b = Elector::builder(p)
        .group(&g)
        .participant_id("b")
        .lease_ttl(Duration::from_secs(60))
        .heartbeat_interval(Duration::from_secs(5))
        .retry_interval(Duration::from_secs(30))
        .start()
        .unwrap();
    let start = Instant::now();
    assert!(wait_leader(&b) > ta);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "the drop did not release: b led after {:?}",
        start.elapsed()
    );
}

#[test]
fn two_electors_with_one_id_never_both_lead() {
    let p = MemoryProvider::new();
    let g = unique("twins");
    let a = steady_elector(p.clone(), &g, "same-id");
    let ta = wait_leader(&a);
    let b = steady_elector(p, &g, "same-id");
    // b campaigns every 50–100 ms for 1.5 s while a renews: while a holds its term, b must
    // never be granted one (b is read first: if it leads and a still holds ta after, both
    // led at once).
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        let b_leads = b.is_leader();
        assert!(
            !(b_leads && a.fencing_token() == Some(ta)),
            "both twins lead"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Once a has gone (released), b leads with a higher token.
    a.shutdown().unwrap();
    assert!(wait_leader(&b) > ta);
}
