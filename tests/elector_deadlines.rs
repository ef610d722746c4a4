//! A leader's local deadline, tested with `FaultyProvider` over the in-memory provider: it is
//! counted from the *send* time of the last confirmed renew or acquire (+ TTL − margin), never
//! from when the answer arrived; the leader steps down on it even while a renew hangs; and a
//! `Renewed` answer that arrives after it does not revive the term.
//!
//! Each test first waits until the call it aims at really hangs (`hung_calls()`), so the
//! deadline it reads can no longer move and the time it notes is after the call was sent.
//! Upper bounds are generous (seconds); lower bounds allow only for converting the elector's
//! clock to an `Instant`.

use std::time::{Duration, Instant};

use le_test_support::{steady_elector, unique, wait_for, wait_leader};
use leader_election::{
    Elector, EventKinds, Faults, FaultyProvider, LeadershipChange, LostReason, MemoryProvider,
    Operation, Provider,
};

/// How late after its deadline a leader may step down on a busy machine.
const STEP_DOWN_BOUND: Duration = Duration::from_secs(2);

/// Converting the deadline to an `Instant` reads two clocks; a preemption between the reads
/// makes it late, never early. Allowance for the rest.
const CLOCK_TOLERANCE: Duration = Duration::from_millis(20);

/// The leader's deadline while it cannot move, read a few times: the earliest read is the
/// most precise (see [`CLOCK_TOLERANCE`]).
fn fixed_deadline(e: &Elector) -> Instant {
    (0..5)
        .filter_map(|_| e.leader_deadline())
        .min()
        .expect("still leading")
}

/// Waits until `n` calls hang.
fn wait_hung(faults: &Faults, n: u32) {
    assert!(
        wait_for(Duration::from_secs(10), || faults.hung_calls() == n),
        "no call hung"
    );
}

#[test]
fn hung_backend_cannot_delay_the_step_down() {
    let mem = MemoryProvider::new();
    let faulty = FaultyProvider::new(mem.clone());
    let faults = faulty.faults();
    let g = unique("hung");
    // The margin (3 s) exceeds STEP_DOWN_BOUND: b's takeover, which wakes a through its
    // watch, comes too late to pass for a's step-down.
    let wide_margin = |p: Box<dyn Provider>, id: &str| {
        Elector::builder(p)
            .group(&g)
            .participant_id(id)
            .lease_ttl(Duration::from_secs(8))
            .safety_margin(Duration::from_secs(3))
            .heartbeat_interval(Duration::from_secs(1))
            .retry_interval(Duration::from_millis(100))
            .start()
            .unwrap()
    };
    let a = wide_margin(Box::new(faulty), "a");
    let ta = wait_leader(&a);
    let lost = a.subscribe_filtered(EventKinds::LOST);
    faults.only(&[Operation::Renew, Operation::Release]);
    faults.hang();
    let b = wide_margin(Box::new(mem), "b");
    let b_changes = b.subscribe_filtered(EventKinds::ACQUIRED);

    // Once a renew hangs, a's deadline cannot move.
    wait_hung(&faults, 1);
    let deadline = fixed_deadline(&a);
    let within = (deadline + STEP_DOWN_BOUND).saturating_duration_since(Instant::now());
    let change = lost.recv_timeout(within);
    let lost_at = Instant::now();
    assert_eq!(
        change,
        Ok(LeadershipChange::Lost {
            fencing_token: ta,
            reason: LostReason::DeadlinePassed
        }),
        "no step-down within {STEP_DOWN_BOUND:?} of the deadline while the renew hangs"
    );
    assert!(
        lost_at + CLOCK_TOLERANCE >= deadline,
        "stepped down {:?} before the deadline",
        deadline - lost_at
    );
    assert!(!a.is_leader(), "is_leader() after the deadline");

    // b takes over only after a's deadline (a's lease expired on the backend).
    let acquired = b_changes.recv_timeout(Duration::from_secs(20));
    let b_at = Instant::now();
    match acquired {
        Ok(LeadershipChange::Acquired { fencing_token, .. }) => assert!(fencing_token > ta),
        other => panic!("b did not take over: {other:?}"),
    }
    assert!(b_at > deadline, "b led before a's deadline");

    // The hung calls return (the renew says Lost now). a campaigns again only once it has
    // taken those answers, and stays a follower.
    let campaigns = faults.calls(Operation::Acquire);
    faults.clear();
    assert!(
        wait_for(Duration::from_secs(10), || faults.calls(Operation::Acquire)
            > campaigns),
        "a campaigns again"
    );
    assert!(!a.is_leader());
    assert!(b.is_leader());
    a.shutdown().unwrap();
}

/// The latency given to the call under test: the answer arrives at least this long after the
/// call was sent, so a deadline counted from the answer would be this much later.
const DELAY: Duration = Duration::from_secs(3);

/// TTL 10 s, margin 1 s (a term lasts 9 s after the send), heartbeat 1 s: a call delayed by
/// [`DELAY`] is answered well within the term, and the renew that follows it is delayed as
/// long, leaving seconds to read the deadline the first answer gave.
fn roomy(faulty: FaultyProvider<MemoryProvider>) -> Elector {
    Elector::builder(faulty)
        .group(unique("send-time"))
        .lease_ttl(Duration::from_secs(10))
        .safety_margin(Duration::from_secs(1))
        .heartbeat_interval(Duration::from_secs(1))
        .retry_interval(Duration::from_millis(100))
        .start()
        .unwrap()
}

const VALIDITY: Duration = Duration::from_secs(9);

/// Hangs a leader's next renew before the backend, notes the time (after the send), then lets
/// it go on with [`DELAY`] before or after the backend call: the deadline it gives is counted
/// from the send — at most `noted + validity` — not from the answer (`noted + DELAY + validity`
/// at the earliest).
fn renew_deadline_counts_from_the_send(delay_before_backend: bool) {
    let faulty = FaultyProvider::new(MemoryProvider::new());
    let faults = faulty.faults();
    let a = roomy(faulty);
    wait_leader(&a);
    faults.only(&[Operation::Renew]);
    faults.hang();
    wait_hung(&faults, 1);
    let sent_by = Instant::now();
    let old = fixed_deadline(&a);
    if delay_before_backend {
        faults.set_latency_before(DELAY);
    } else {
        faults.set_latency_after(DELAY);
    }
    faults.unhang();
    // The renew moves the deadline by about a heartbeat (1 s); the next one is as slow.
    let mut new = old;
    assert!(
        wait_for(Duration::from_secs(20), || {
            new = fixed_deadline(&a);
            new > old + Duration::from_millis(500)
        }),
        "the renew did not extend the term"
    );
    let latest = sent_by + VALIDITY + CLOCK_TOLERANCE;
    assert!(
        new <= latest,
        "the deadline is {:?} past send + TTL − margin: counted from the answer",
        new - (sent_by + VALIDITY)
    );
    faults.clear();
    a.shutdown().unwrap();
}

#[test]
fn a_renew_answered_late_extends_the_term_from_its_send_time() {
    renew_deadline_counts_from_the_send(false);
}

#[test]
fn a_renew_that_reaches_the_backend_late_extends_the_term_from_its_send_time() {
    renew_deadline_counts_from_the_send(true);
}

#[test]
fn an_acquire_answered_late_starts_the_term_from_its_send_time() {
    let faulty = FaultyProvider::new(MemoryProvider::new());
    let faults = faulty.faults();
    // The renews that follow are as slow, so the first deadline stays seconds to read.
    faults.only(&[Operation::Acquire, Operation::Renew]);
    faults.hang();
    let a = roomy(faulty);
    wait_hung(&faults, 1);
    let sent_by = Instant::now();
    faults.set_latency_after(DELAY);
    faults.unhang();
    wait_leader(&a);
    let deadline = fixed_deadline(&a);
    assert!(
        deadline <= sent_by + VALIDITY + CLOCK_TOLERANCE,
        "the deadline is {:?} past send + TTL − margin: counted from the answer",
        deadline - (sent_by + VALIDITY)
    );
    faults.clear();
    a.shutdown().unwrap();
}

/// A renew that reaches the backend (which extends the lease) but whose `Renewed` answer
/// arrives after the leader's deadline: the leader steps down on the deadline, and the late
/// answer does not bring the term back — no `is_leader()` with its token, no second
/// `Acquired` with it.
#[test]
fn a_renewed_answer_after_the_deadline_does_not_revive_the_term() {
    // At least 4 s after the deadline (at most 2 s after the send): a step-down that waited
    // for the answer would miss STEP_DOWN_BOUND.
    const LATE: Duration = Duration::from_secs(6);
    let faulty = FaultyProvider::new(MemoryProvider::new());
    let faults = faulty.faults();
    let a = steady_elector(faulty, &unique("late-renewed"), "a");
    let ta = wait_leader(&a);
    let changes = a.subscribe_filtered(EventKinds::ACQUIRED | EventKinds::LOST);
    assert!(changes.recv().unwrap().is_acquired());
    faults.only(&[Operation::Renew]);
    faults.hang();
    wait_hung(&faults, 1);
    let deadline = fixed_deadline(&a);
    faults.set_latency_after(LATE);
    faults.unhang();

    let within = (deadline + STEP_DOWN_BOUND).saturating_duration_since(Instant::now());
    let change = changes.recv_timeout(within);
    let lost_at = Instant::now();
    assert_eq!(
        change,
        Ok(LeadershipChange::Lost {
            fencing_token: ta,
            reason: LostReason::DeadlinePassed
        }),
        "no step-down within {STEP_DOWN_BOUND:?} of the deadline"
    );
    assert!(lost_at + CLOCK_TOLERANCE >= deadline, "stepped down early");
    // The late renew has read its latency long ago; the renews of a next term are prompt.
    faults.clear();

    // The I/O thread answers in order — the late renew, the release queued on stepping down,
    // then a new campaign — so once a campaigns again, it has taken the late `Renewed`.
    let campaigns = faults.calls(Operation::Acquire);
    assert!(
        wait_for(Duration::from_secs(20), || {
            assert_ne!(
                a.fencing_token(),
                Some(ta),
                "the late answer revived the term"
            );
            faults.calls(Operation::Acquire) > campaigns
        }),
        "a did not campaign again"
    );
    assert_ne!(
        a.fencing_token(),
        Some(ta),
        "the late answer revived the term"
    );
    // Its next term, if any, is a new one.
    match changes.recv_timeout(Duration::from_secs(20)) {
        Ok(LeadershipChange::Acquired { fencing_token, .. }) => assert!(
            fencing_token > ta,
            "a second Acquired with token {ta}: the late answer revived the term"
        ),
        other => panic!("expected a new term after the lapse: {other:?}"),
    }
    a.shutdown().unwrap();
}
