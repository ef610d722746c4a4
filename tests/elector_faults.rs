//! The elector under backend trouble, injected with `FaultyProvider` over the in-memory
//! provider: failed campaigns, renews and releases, a crash, a hung backend at shutdown, and a
//! resign or shutdown that races a campaign still in flight. Deadline semantics (a hung renew,
//! late answers) are in `elector_deadlines.rs`.
//!
//! Waits are event-driven (a call counted or hung, a change received) with bounds of seconds;
//! the only fixed pause is marked where a slow machine changes which path runs, not the result.

use std::time::{Duration, Instant};

use le_test_support::{steady_elector, unique, wait_for, wait_leader};
use leader_election::{
    AcquireRequest, Acquisition, Elector, Error, EventKinds, FaultyProvider, LeadershipChange,
    MemoryProvider, Operation, Provider,
};

/// An elector that campaigns once, then not for 30 s, on a 60 s lease: within seconds, only a
/// release can free what it holds.
fn patient(provider: impl Provider, group: &str, id: &str) -> Elector {
    Elector::builder(provider)
        .group(group)
        .participant_id(id)
        .lease_ttl(Duration::from_secs(60))
        .heartbeat_interval(Duration::from_secs(5))
        .retry_interval(Duration::from_secs(30))
        .shutdown_timeout(Duration::from_secs(30))
        .start()
        .unwrap()
}

/// Asserts another participant acquires `group` on `memory` at its first try.
fn acquires_at_once(memory: &MemoryProvider, group: &str) -> u64 {
    let req = AcquireRequest::new(group, "other", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(5);
    match memory.try_acquire(&req, deadline) {
        Ok(Acquisition::Acquired(lease)) => lease.fencing_token(),
        other => panic!("the group is still held: {other:?}"),
    }
}

#[test]
fn transient_campaign_errors_are_retried() {
    let faulty = FaultyProvider::new(MemoryProvider::new());
    let faults = faulty.faults();
    faults.only(&[Operation::Acquire]);
    faults.fail_next(3);
    let a = steady_elector(faulty, &unique("retry"), "a");
    wait_leader(&a);
    assert!(faults.calls(Operation::Acquire) >= 4);
}

#[test]
fn a_failed_renew_within_the_deadline_keeps_leadership() {
    let faulty = FaultyProvider::new(MemoryProvider::new());
    let faults = faulty.faults();
    let a = steady_elector(faulty, &unique("renewfail"), "a");
    let ta = wait_leader(&a);
    let changes = a.subscribe_filtered(EventKinds::LOST);
    faults.only(&[Operation::Renew]);
    faults.fail_next(1);
    let before = faults.calls(Operation::Renew);
    assert!(
        wait_for(Duration::from_secs(20), || faults.calls(Operation::Renew)
            >= before + 4),
        "renews go on"
    );
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
    let g = unique("crash");
    let a = steady_elector(faulty, &g, "a");
    let ta = wait_leader(&a);
    let b = steady_elector(mem, &g, "b");
    let b_changes = b.subscribe_filtered(EventKinds::ACQUIRED);
    // "Crash": the release never reaches the backend, so the lease must expire.
    faults.only(&[Operation::Release]);
    faults.fail_next_permanent(u32::MAX);
    let stopped = Instant::now();
    let err = a.shutdown().expect_err("the failed release is reported");
    assert!(matches!(err, Error::Injected { .. }), "{err}");
    let acquired = b_changes.recv_timeout(Duration::from_secs(20));
    let took = stopped.elapsed();
    match acquired {
        Ok(LeadershipChange::Acquired { fencing_token, .. }) => assert!(fencing_token > ta),
        other => panic!("b did not take over: {other:?}"),
    }
    // TTL 3 s + retry 100 ms, with generous slack for a busy machine.
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    eprintln!("crash failover took {took:?} (TTL 3 s, retry 100 ms)");
}

#[test]
fn a_failed_release_is_retried_so_followers_need_not_wait_for_the_ttl() {
    let mem = MemoryProvider::new();
    let faulty = FaultyProvider::new(mem.clone());
    let faults = faulty.faults();
    let g = unique("release-retry");
    let slow = |p: Box<dyn Provider>, id: &str| {
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
    let b_changes = b.subscribe_filtered(EventKinds::ACQUIRED);
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
fn shutdown_with_a_hung_backend_is_bounded() {
    let faulty = FaultyProvider::new(MemoryProvider::new());
    let faults = faulty.faults();
    let a = Elector::builder(faulty)
        .group(unique("hungstop"))
        .lease_ttl(Duration::from_secs(3))
        .safety_margin(Duration::from_secs(1))
        .heartbeat_interval(Duration::from_millis(500))
        .shutdown_timeout(Duration::from_secs(1))
        .start()
        .unwrap();
    wait_leader(&a);
    faults.hang();
    assert!(
        wait_for(Duration::from_secs(10), || faults.hung_calls() >= 1),
        "a renew hangs"
    );
    let start = Instant::now();
    let r = a.shutdown();
    let took = start.elapsed();
    assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    // The shutdown timeout (1 s), with generous slack for a busy machine.
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert!(!a.is_leader());
    faults.clear();
}

/// `resign()` while a campaign is in flight: the lease the campaign then wins is released at
/// once, and the elector never leads. (`resign()` ends the term before it returns, so a
/// campaign sent before it is never adopted, whenever its answer comes.)
#[test]
fn resign_during_a_campaign_releases_what_it_wins() {
    let mem = MemoryProvider::new();
    let faulty = FaultyProvider::new(mem.clone());
    let faults = faulty.faults();
    faults.only(&[Operation::Acquire]);
    faults.hang();
    let g = unique("resign-race");
    let a = patient(faulty, &g, "a");
    let acquired = a.subscribe_filtered(EventKinds::ACQUIRED);
    assert!(
        wait_for(Duration::from_secs(10), || faults.hung_calls() == 1),
        "the campaign hangs"
    );
    a.resign();
    faults.unhang();
    assert!(
        wait_for(Duration::from_secs(10), || mem.last_token(&g) == 1),
        "the campaign went through and won"
    );
    // The 60 s lease is released within seconds, and a never led.
    let mut token = None;
    let req = AcquireRequest::new(&g, "other", Duration::from_secs(60));
    let freed = wait_for(Duration::from_secs(10), || {
        let deadline = Instant::now() + Duration::from_secs(5);
        if let Ok(Acquisition::Acquired(l)) = mem.try_acquire(&req, deadline) {
            token = Some(l.fencing_token());
        }
        token.is_some()
    });
    assert!(freed, "the lease won after resign() was not released");
    assert!(token > Some(1));
    assert!(!a.is_leader());
    assert!(
        acquired.try_iter().next().is_none(),
        "a published a term it resigned"
    );
}

/// `shutdown()` while a campaign is in flight: the lease the campaign wins is released before
/// the shutdown returns, and the elector does not lead after it.
#[test]
fn shutdown_during_a_campaign_releases_what_it_wins() {
    let mem = MemoryProvider::new();
    let faulty = FaultyProvider::new(mem.clone());
    let faults = faulty.faults();
    faults.only(&[Operation::Acquire]);
    faults.hang();
    let g = unique("shutdown-race");
    let a = patient(faulty, &g, "a");
    let acquired = a.subscribe_filtered(EventKinds::ACQUIRED);
    assert!(
        wait_for(Duration::from_secs(10), || faults.hung_calls() == 1),
        "the campaign hangs"
    );
    std::thread::scope(|s| {
        let stop = s.spawn(|| a.shutdown());
        // Lets the heartbeat thread take the shutdown before the campaign answers. Should a
        // stalled machine take longer, the campaign's term is adopted and then ended by the
        // shutdown instead: a different path, the same result below.
        std::thread::sleep(Duration::from_millis(500));
        faults.unhang();
        stop.join().unwrap().expect("clean shutdown");
    });
    assert_eq!(mem.last_token(&g), 1, "the campaign went through and won");
    assert!(acquires_at_once(&mem, &g) > 1);
    assert!(!a.is_leader());
    if acquired.try_iter().any(|c| c.is_acquired()) {
        eprintln!("the campaign answered before the shutdown was taken: its term was adopted");
    }
}
