//! Conformance checks on who holds a group: the first campaign wins, others see the holder,
//! a release frees the group at once, tokens rise, groups are independent, racers get one
//! winner, records round-trip, a participant id is not granted twice, and a release wakes a
//! watcher.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::{
    Harness, acquire, leader, must_acquire, must_be_held, release, renew, request, unique_group,
};
use crate::lease::{Acquisition, Lease, Renewal};
use crate::provider::{Provider, Wakeup};

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
        eprintln!(
            "{}: watch_wakes_on_release does not apply: the provider does not push changes \
             (checked: watch() returns None and the capabilities agree)",
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
