//! The conformance suite every [`Provider`] must pass (feature `testing`).
//!
//! Implement [`Harness`] for a provider against a live backend, then generate one `#[test]`
//! per check with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```
//! use leader_election::testing::Harness;
//! use leader_election::MemoryProvider;
//!
//! struct Memory(MemoryProvider);
//! impl Harness for Memory {
//!     type Provider = MemoryProvider;
//!     fn client(&self) -> MemoryProvider { self.0.clone() }
//! }
//!
//! let h = Memory(MemoryProvider::new());
//! leader_election::testing::first_acquirer_wins(&h);
//! leader_election::testing::release_lets_another_acquire_at_once(&h);
//! ```
//!
//! Every check uses fresh group names, so checks may run in parallel against one server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::{Provider, Wakeup};

/// How a provider under test is made and how it behaves.
pub trait Harness: Sync {
    /// The provider type.
    type Provider: Provider;

    /// A new, independent client — what a separate process would have: its own connections,
    /// sessions and locks. Clients of one harness share one backend.
    fn client(&self) -> Self::Provider;

    /// The lease TTL the checks request (default 2 s). Backends with a minimum lease length
    /// (Azure: 15 s) raise it.
    fn ttl(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// How late past the TTL an expired lease may still block a new acquisition (default 1 s):
    /// covers server-side expiry granularity.
    fn expiry_slack(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// A group name no other check (or earlier run) uses.
pub fn unique_group(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{}-{n}-{:06x}",
        std::process::id(),
        crate::util::random_u64() & 0xff_ffff
    )
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn request<H: Harness>(h: &H, group: &str, who: &str) -> AcquireRequest {
    AcquireRequest::new(group, who, h.ttl())
}

fn acquire<P: Provider>(p: &P, req: &AcquireRequest) -> Acquisition {
    match p.try_acquire(req, deadline()) {
        Ok(a) => a,
        Err(e) => panic!(
            "{}: try_acquire({:?}, {:?}) failed: {}",
            p.name(),
            req.group,
            req.participant_id,
            e.report()
        ),
    }
}

fn must_acquire<P: Provider>(p: &P, req: &AcquireRequest) -> Lease {
    match acquire(p, req) {
        Acquisition::Acquired(lease) => lease,
        Acquisition::Held(l) => panic!(
            "{}: {:?} should have acquired {:?}, but it is held by {:?}",
            p.name(),
            req.participant_id,
            req.group,
            l.map(|l| l.participant_id)
        ),
    }
}

fn must_be_held<P: Provider>(p: &P, req: &AcquireRequest) -> Option<LeaderInfo> {
    match acquire(p, req) {
        Acquisition::Held(l) => l,
        Acquisition::Acquired(lease) => panic!(
            "{}: {:?} acquired {:?} (token {}) while another participant held it",
            p.name(),
            req.participant_id,
            req.group,
            lease.fencing_token()
        ),
    }
}

fn renew<P: Provider>(p: &P, lease: &Lease) -> Renewal {
    p.renew(lease, deadline())
        .unwrap_or_else(|e| panic!("{}: renew failed: {}", p.name(), e.report()))
}

fn release<P: Provider>(p: &P, lease: &Lease) {
    p.release(lease, deadline())
        .unwrap_or_else(|e| panic!("{}: release failed: {}", p.name(), e.report()))
}

fn leader<P: Provider>(p: &P, group: &str) -> Option<LeaderInfo> {
    p.leader(group, deadline())
        .unwrap_or_else(|e| panic!("{}: leader failed: {}", p.name(), e.report()))
}

/// Polls `try_acquire` until it succeeds or `within` passes.
fn acquire_within<P: Provider>(p: &P, req: &AcquireRequest, within: Duration) -> Lease {
    let start = Instant::now();
    loop {
        if let Acquisition::Acquired(lease) = acquire(p, req) {
            return lease;
        }
        assert!(
            start.elapsed() < within,
            "{}: {:?} could not acquire {:?} within {within:?}",
            p.name(),
            req.participant_id,
            req.group
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first participant to campaign wins; the second is told it is held.
pub fn first_acquirer_wins<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let g = unique_group("first");
    let lease = must_acquire(&a, &request(h, &g, "a"));
    assert_eq!(lease.info.participant_id, "a");
    assert_eq!(lease.info.group, g);
    assert!(lease.fencing_token() > 0, "tokens start above zero");
    must_be_held(&b, &request(h, &g, "b"));
    release(&a, &lease);
}

/// Followers see who holds the group, through `try_acquire` and `leader`.
pub fn others_see_the_holder<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let g = unique_group("see");
    assert_eq!(leader(&b, &g), None, "nobody leads a fresh group");
    let lease = must_acquire(&a, &request(h, &g, "a"));
    let held = must_be_held(&b, &request(h, &g, "b")).expect("the holder is reported");
    assert_eq!(held.participant_id, "a");
    assert_eq!(held.fencing_token, lease.fencing_token());
    let seen = leader(&b, &g).expect("leader() reports the holder");
    assert_eq!(seen.participant_id, "a");
    assert_eq!(seen.fencing_token, lease.fencing_token());
    release(&a, &lease);
    // Nobody leads — or, on queue-based backends, the next in line, never the releaser.
    assert!(
        leader(&b, &g).is_none_or(|l| l.participant_id != "a"),
        "{}: the releaser still shows as leader",
        b.name()
    );
}

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

/// After a release another participant acquires at once, with a higher token.
pub fn release_lets_another_acquire_at_once<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let g = unique_group("release");
    let la = must_acquire(&a, &request(h, &g, "a"));
    release(&a, &la);
    let lb = must_acquire(&b, &request(h, &g, "b"));
    assert!(lb.fencing_token() > la.fencing_token());
    // Releasing twice, or releasing an old term, must not touch the new term.
    release(&a, &la);
    assert_eq!(
        renew(&b, &lb),
        Renewal::Renewed,
        "an old term's release freed a new term"
    );
    release(&b, &lb);
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

/// Tokens strictly rise across successive leaders.
pub fn tokens_strictly_rise<H: Harness>(h: &H) {
    let clients: Vec<_> = (0..3).map(|_| h.client()).collect();
    let g = unique_group("tokens");
    let mut last = 0;
    for round in 0..6 {
        let c = &clients[round % clients.len()];
        let lease = must_acquire(c, &request(h, &g, &format!("p{round}")));
        assert!(
            lease.fencing_token() > last,
            "{}: token {} after {last}",
            c.name(),
            lease.fencing_token()
        );
        last = lease.fencing_token();
        release(c, &lease);
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

/// For TTL leases: once a lease expired, its holder cannot renew it, even if nobody took over
/// (it may already have been granted elsewhere as far as the holder can know).
pub fn renew_after_expiry_fails<H: Harness>(h: &H) {
    if h.client().capabilities().lease_ends_with_client {
        return;
    }
    let a = h.client();
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

/// Groups are independent.
pub fn groups_are_isolated<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let (g1, g2) = (unique_group("iso1"), unique_group("iso2"));
    let l1 = must_acquire(&a, &request(h, &g1, "a"));
    let l2 = must_acquire(&b, &request(h, &g2, "b"));
    assert_eq!(
        leader(&a, &g2).map(|l| l.participant_id).as_deref(),
        Some("b")
    );
    release(&a, &l1);
    assert_eq!(
        renew(&b, &l2),
        Renewal::Renewed,
        "releasing one group touched another"
    );
    release(&b, &l2);
}

/// Many threads, each with its own client, race for one group: exactly one wins.
pub fn racing_participants_give_one_winner<H: Harness>(h: &H) {
    const N: usize = 8;
    let g = unique_group("race");
    let clients: Vec<_> = (0..N).map(|_| h.client()).collect();
    let barrier = Arc::new(Barrier::new(N));
    let winners: Vec<Option<Lease>> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let barrier = barrier.clone();
                let req = request(h, &g, &format!("r{i}"));
                s.spawn(move || {
                    barrier.wait();
                    match acquire(c, &req) {
                        Acquisition::Acquired(l) => Some(l),
                        Acquisition::Held(_) => None,
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|j| j.join().expect("racer panicked"))
            .collect()
    });
    let won: Vec<(usize, &Lease)> = winners
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
        .collect();
    assert_eq!(
        won.len(),
        1,
        "{} winners: {:?}",
        won.len(),
        won.iter().map(|w| w.0).collect::<Vec<_>>()
    );
    let (i, lease) = won[0];
    release(&clients[i], lease);
}

/// The participant id and metadata stored on acquisition come back unchanged.
pub fn participant_and_metadata_round_trip<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let g = unique_group("meta");
    let req = request(h, &g, "node-7:9000@rack.b")
        .with_metadata("addr", "10.1.2.3:8080")
        .with_metadata("version", "1.4.0 (build \"42\", ünïcode)");
    let lease = must_acquire(&a, &req);
    assert_eq!(lease.info.metadata, req.metadata);
    let seen = leader(&b, &g).expect("a leader");
    assert_eq!(seen.participant_id, "node-7:9000@rack.b");
    assert_eq!(seen.metadata, req.metadata);
    assert_eq!(seen.fencing_token, lease.fencing_token());
    release(&a, &lease);
}

/// A participant id that already holds the group is not granted a second, concurrent term.
pub fn same_participant_is_not_granted_twice<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let g = unique_group("same");
    let lease = must_acquire(&a, &request(h, &g, "twin"));
    let held = must_be_held(&b, &request(h, &g, "twin"));
    if let Some(info) = held {
        assert_eq!(info.fencing_token, lease.fencing_token());
    }
    release(&a, &lease);
}

/// For providers that push changes: a release wakes a watcher promptly.
pub fn watch_wakes_on_release<H: Harness>(h: &H) {
    let (a, b) = (h.client(), h.client());
    let g = unique_group("watch");
    let lease = must_acquire(&a, &request(h, &g, "a"));
    let (wakeup, rx) = Wakeup::channel();
    let watch = b
        .watch(&g, wakeup)
        .unwrap_or_else(|e| panic!("{}: watch failed: {}", b.name(), e.report()));
    let Some(watch) = watch else {
        assert!(
            !b.capabilities().pushes_changes,
            "{}: the provider says it pushes changes, but watch() returned None",
            b.name()
        );
        return release(&a, &lease);
    };
    assert!(
        b.capabilities().pushes_changes,
        "{}: watch() returned a watch, but the provider says it does not push",
        b.name()
    );
    // Campaign once, as an elector does after starting its watch: queue-based backends
    // (ZooKeeper) watch their predecessor from then on.
    must_be_held(&b, &request(h, &g, "b"));
    // Let the watch settle, drop any wake-up it caused while starting.
    std::thread::sleep(Duration::from_millis(200));
    while rx.try_recv().is_ok() {}
    release(&a, &lease);
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "{}: no wake-up within 5 s of a release",
        b.name()
    );
    let start = Instant::now();
    drop(watch);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{}: dropping a watch blocked for {:?}",
        b.name(),
        start.elapsed()
    );
}

/// Generates one `#[test]` per conformance check, in a module named `$name`, for the harness
/// built by `$make` (an expression evaluated once per test).
///
/// ```text
/// leader_election::conformance_tests!(memory, MemoryHarness::default());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(@tests $make;
                first_acquirer_wins,
                others_see_the_holder,
                renew_extends_the_lease,
                release_lets_another_acquire_at_once,
                expiry_lets_another_acquire,
                tokens_strictly_rise,
                superseded_renew_fails,
                renew_after_expiry_fails,
                groups_are_isolated,
                racing_participants_give_one_winner,
                participant_and_metadata_round_trip,
                same_participant_is_not_granted_twice,
                watch_wakes_on_release
            );
        }
    };
    (@tests $make:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                let harness = $make;
                $crate::testing::$check(&harness);
            }
        )*
    };
}
