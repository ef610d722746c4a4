//! The shared conformance suite, run against every provider that needs no server; and proof
//! that its lease-lifetime check catches a provider whose renew extends a lease by less than
//! its TTL (a wrapper over the in-memory provider that renews for half of it), which the older
//! checks let pass.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use leader_election::testing::Harness;
use leader_election::{
    AcquireRequest, Acquisition, FileProvider, LeaderInfo, Lease, MemoryProvider, Provider,
    Renewal, Result,
};

/// All clients share one in-process store.
#[derive(Default)]
struct MemoryHarness(MemoryProvider);

impl Harness for MemoryHarness {
    type Provider = MemoryProvider;
    fn client(&self) -> MemoryProvider {
        self.0.clone()
    }
}

/// Every client is its own `FileProvider` (its own open files, so its own locks) on one
/// directory, as separate processes would be.
struct FileHarness(tempfile::TempDir);

impl FileHarness {
    fn new() -> Self {
        FileHarness(tempfile::tempdir().expect("temp dir"))
    }
}

impl Harness for FileHarness {
    type Provider = FileProvider;
    fn client(&self) -> FileProvider {
        FileProvider::new(self.0.path()).expect("file provider")
    }
}

leader_election::conformance_tests!(memory, MemoryHarness::default());
leader_election::conformance_tests!(file, FileHarness::new());

/// A broken provider: its renew extends the lease by half the TTL only.
struct HalfRenew(MemoryProvider);

impl Provider for HalfRenew {
    fn name(&self) -> &'static str {
        "half-renew"
    }
    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        self.0.try_acquire(request, deadline)
    }
    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        let mut short = lease.clone();
        short.ttl /= 2;
        self.0.renew(&short, deadline)
    }
    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        self.0.release(lease, deadline)
    }
    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        self.0.leader(group, deadline)
    }
}

#[derive(Default)]
struct HalfRenewHarness(MemoryProvider);

impl Harness for HalfRenewHarness {
    type Provider = HalfRenew;
    fn client(&self) -> HalfRenew {
        HalfRenew(self.0.clone())
    }
}

#[test]
fn the_suite_catches_a_renew_that_extends_by_half_the_ttl() {
    let h = HalfRenewHarness::default();
    // The older check passes it: renewing every TTL / 4 keeps even a half-TTL lease alive.
    leader_election::testing::renew_extends_the_lease(&h);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        leader_election::testing::renewed_lease_holds_for_its_ttl(&h)
    }));
    let panic = caught.expect_err("renewed_lease_holds_for_its_ttl passed a half-TTL renew");
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(
        message.contains("another participant acquired the group"),
        "failed for another reason: {message}"
    );
}
