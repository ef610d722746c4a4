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
//! Every check uses fresh group names, so checks may run in parallel against one server. The
//! checks are in two files: who holds a group (`testing/holders.rs`) and how long a lease
//! lives (`testing/lifetime.rs`); all are re-exported here. A check that does not apply to a
//! provider says so on stderr rather than passing silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::Provider;

mod holders;
mod lifetime;

pub use holders::{
    first_acquirer_wins, groups_are_isolated, others_see_the_holder,
    participant_and_metadata_round_trip, racing_participants_give_one_winner,
    release_lets_another_acquire_at_once, same_participant_is_not_granted_twice,
    tokens_strictly_rise, watch_wakes_on_release,
};
pub use lifetime::{
    expiry_lets_another_acquire, renew_after_expiry_fails, renew_after_release_fails,
    renew_extends_the_lease, renewed_lease_holds_for_its_ttl, superseded_renew_fails,
};

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
                renewed_lease_holds_for_its_ttl,
                release_lets_another_acquire_at_once,
                expiry_lets_another_acquire,
                tokens_strictly_rise,
                superseded_renew_fails,
                renew_after_release_fails,
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
