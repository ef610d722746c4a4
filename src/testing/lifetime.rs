//! Conformance checks on how long a lease lives: renews extend it, a renewed lease holds for
//! its whole TTL, an abandoned lease expires (TTL leases) or ends with its client, and an
//! ended lease — superseded, released or expired — cannot be renewed.

use std::time::{Duration, Instant};

use super::{
    Harness, acquire, acquire_within, leader, must_acquire, must_be_held, release, renew, request,
    unique_group,
};
use crate::lease::{Acquisition, Renewal};
use crate::provider::Provider;

/// Renewing keeps the lease past its original TTL.
pub fn renew_extends_the_lease<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let g = unique_group("renew");
    let lease = must_acquire(&a, &request(h, &g, "a"));
    let ttl = h.ttl();
    let end = Instant::now() + ttl + ttl / 2;
    while Instant::now() < end {
        std::thread::sleep(ttl / 4);
        assert_eq!(renew(&a, &lease), Renewal::Renewed, "renew of a live lease");
    }
    // Past the first TTL, the renewed lease still holds.
    must_be_held(&b, &request(h, &g, "b"));
    release(&a, &lease);
}

/// A renewed lease holds for at least its TTL after the renew was sent: until then another
/// participant is refused. The elector's deadline (the send time of its last renew + TTL −
/// margin) relies on it; a renew that extends by less passes [`renew_extends_the_lease`] yet
/// breaks it. The renew comes past half the TTL, so a shorter extension shows whether it
/// replaces the expiry or only moves it forward. The other participant polls until
/// `min(ttl / 4, expiry_slack)` before `renew sent + ttl`, which leaves room for its own
/// round trips; leases that end with their client hold all along.
pub fn renewed_lease_holds_for_its_ttl<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let g = unique_group("holds");
    let ttl = h.ttl();
    let la = must_acquire(&a, &request(h, &g, "a"));
    std::thread::sleep(ttl * 3 / 5);
    let sent = Instant::now();
    assert_eq!(
        renew(&a, &la),
        Renewal::Renewed,
        "{}: renew of a live lease",
        a.name()
    );
    let until = sent + ttl - (ttl / 4).min(h.expiry_slack());
    let req_b = request(h, &g, "b");
    loop {
        let asked = sent.elapsed();
        if sent + asked >= until {
            break;
        }
        if let Acquisition::Acquired(lb) = acquire(&b, &req_b) {
            release(&b, &lb);
            panic!(
                "{}: another participant acquired the group {asked:?} after a renew was sent, \
                 before the lease's TTL ({ttl:?}) ran out",
                b.name()
            );
        }
        std::thread::sleep(ttl / 20);
    }
    release(&a, &la);
}

/// A holder that vanishes without releasing is replaced: after the TTL for TTL leases (and
/// not before), at once for leases that end with their client.
pub fn expiry_lets_another_acquire<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let g = unique_group("expiry");
    let start = Instant::now();
    let la = must_acquire(&a, &request(h, &g, "a"));
    drop(a); // crash: no renew, no release
    let req_b = request(h, &g, "b");
    if !h.client().capabilities().lease_ends_with_client {
        must_be_held(&b, &req_b);
        let lb = acquire_within(
            &b,
            &req_b,
            h.ttl() + h.expiry_slack() + Duration::from_secs(2),
        );
        assert!(
            start.elapsed() >= h.ttl(),
            "{}: the lease was taken over after {:?}, before its TTL {:?}",
            b.name(),
            start.elapsed(),
            h.ttl()
        );
        assert!(lb.fencing_token() > la.fencing_token());
        release(&b, &lb);
    } else {
        let lb = acquire_within(&b, &req_b, h.ttl() + h.expiry_slack());
        assert!(lb.fencing_token() > la.fencing_token());
        release(&b, &lb);
    }
}

/// A leader whose term was taken over cannot renew it.
pub fn superseded_renew_fails<H: Harness>(h: &H) {
    let (a, b, c) = (h.client(), h.client(), h.client());
    let g = unique_group("supersede");
    let la = must_acquire(&a, &request(h, &g, "a"));
    if !h.client().capabilities().lease_ends_with_client {
        // Let the lease lapse while `a` is silent, then `b` takes over.
        let lb = acquire_within(
            &b,
            &request(h, &g, "b"),
            h.ttl() + h.expiry_slack() + Duration::from_secs(2),
        );
        match renew(&a, &la) {
            Renewal::Lost(Some(now)) => assert_eq!(now.participant_id, "b"),
            Renewal::Lost(None) => {}
            Renewal::Renewed => panic!("{}: a superseded lease was renewed", a.name()),
        }
        assert_eq!(renew(&b, &lb), Renewal::Renewed);
        release(&b, &lb);
    } else {
        drop(a);
        let lb = acquire_within(&b, &request(h, &g, "b"), h.ttl() + h.expiry_slack());
        assert!(
            matches!(renew(&c, &la), Renewal::Lost(_)),
            "{}: a superseded lease was renewed through another client",
            c.name()
        );
        assert_eq!(renew(&b, &lb), Renewal::Renewed);
        release(&b, &lb);
    }
}

/// A released lease cannot be renewed — not by its holder, and not once another participant
/// holds the group — and trying does not disturb the new holder. Applies to every provider.
pub fn renew_after_release_fails<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let g = unique_group("renew-released");
    let la = must_acquire(&a, &request(h, &g, "a"));
    release(&a, &la);
    assert!(
        matches!(renew(&a, &la), Renewal::Lost(_)),
        "{}: a released lease was renewed",
        a.name()
    );
    let lb = must_acquire(&b, &request(h, &g, "b"));
    match renew(&a, &la) {
        Renewal::Lost(Some(now)) => assert_eq!(now.participant_id, "b", "{}", a.name()),
        Renewal::Lost(None) => {}
        Renewal::Renewed => panic!(
            "{}: a released lease was renewed after another participant took the group",
            a.name()
        ),
    }
    assert_eq!(
        renew(&b, &lb),
        Renewal::Renewed,
        "{}: renewing an old term disturbed the new one",
        b.name()
    );
    assert_eq!(
        leader(&a, &g).map(|l| l.participant_id).as_deref(),
        Some("b"),
        "{}: the group is no longer the new holder's",
        a.name()
    );
    release(&b, &lb);
}

/// For TTL leases: once a lease expired, its holder cannot renew it, even if nobody took over
/// (it may already have been granted elsewhere as far as the holder can know). Does not apply
/// to leases that end with their client (they never expire while it lives), and says so.
pub fn renew_after_expiry_fails<H: Harness>(h: &H) {
    let a = h.client();
    if a.capabilities().lease_ends_with_client {
        eprintln!(
            "{}: renew_after_expiry_fails does not apply: its leases end with their client, \
             never on a TTL (renew_after_release_fails and superseded_renew_fails check that \
             an ended lease cannot be renewed)",
            a.name()
        );
        return;
    }
    let g = unique_group("late-renew");
    let lease = must_acquire(&a, &request(h, &g, "a"));
    std::thread::sleep(h.ttl() + h.expiry_slack());
    assert!(
        matches!(renew(&a, &lease), Renewal::Lost(_)),
        "{}: an expired lease was renewed",
        a.name()
    );
    release(&a, &lease);
}
