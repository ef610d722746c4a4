//! What a backend can do, as its provider reports it through [`crate::Provider::capabilities`]:
//! whether it pushes changes, whether a lease ends when the client that holds it dies, and the
//! range of lease TTLs it can honour. The elector refuses a TTL outside that range when it is
//! built, and the conformance suite reads the rest instead of asking test authors to restate it.

use std::time::Duration;

use crate::error::{Error, Result};

/// What a backend can do; returned by [`crate::Provider::capabilities`].
///
/// ```
/// use leader_election::{Capabilities, MemoryProvider, Provider};
/// use std::time::Duration;
///
/// let caps = MemoryProvider::new().capabilities();
/// assert!(caps.pushes_changes);
/// assert!(caps.check_lease_ttl("memory", Duration::from_secs(10)).is_ok());
///
/// // A provider of your own says what differs from the defaults:
/// let mine = Capabilities::default()
///     .with_lease_ends_with_client(true)
///     .with_lease_ttl_range(Duration::from_secs(1), Duration::from_secs(60));
/// assert!(mine.check_lease_ttl("mine", Duration::from_secs(90)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Whether [`crate::Provider::watch`] pushes changes (watches, blocking queries,
    /// LISTEN/NOTIFY, pub/sub), so waiting followers campaign at once after a release instead
    /// of at their next poll. Default `false`.
    pub pushes_changes: bool,
    /// Whether the push also reports a lease that ends without a release (its holder died):
    /// ZooKeeper session expiry, etcd lease expiry, Consul session invalidation. Then idle
    /// followers need not poll at the leader's expiry (see
    /// [`crate::ElectorBuilder::idle_poll_interval`]). Default `false`.
    pub pushes_expiry: bool,
    /// Whether a lease ends as soon as the client holding it is dropped or its process dies
    /// (file locks, ZooKeeper sessions), rather than only when its TTL runs out (rows, keys).
    /// Default `false`.
    pub lease_ends_with_client: bool,
    /// The shortest lease TTL the backend can honour.
    pub min_lease_ttl: Duration,
    /// The longest lease TTL the backend can honour.
    pub max_lease_ttl: Duration,
}

impl Default for Capabilities {
    /// No push, leases end at their TTL, any TTL the elector accepts (1 ms to 24 h).
    fn default() -> Self {
        Capabilities {
            pushes_changes: false,
            pushes_expiry: false,
            lease_ends_with_client: false,
            min_lease_ttl: Duration::from_millis(1),
            max_lease_ttl: crate::validate::MAX_DURATION,
        }
    }
}

impl Capabilities {
    /// Sets [`Capabilities::pushes_changes`].
    pub fn with_pushes_changes(mut self, pushes: bool) -> Self {
        self.pushes_changes = pushes;
        self
    }

    /// Sets [`Capabilities::pushes_expiry`].
    pub fn with_pushes_expiry(mut self, pushes: bool) -> Self {
        self.pushes_expiry = pushes;
        self
    }

    /// Sets [`Capabilities::lease_ends_with_client`].
    pub fn with_lease_ends_with_client(mut self, ends: bool) -> Self {
        self.lease_ends_with_client = ends;
        self
    }

    /// Sets the range of lease TTLs the backend can honour.
    pub fn with_lease_ttl_range(mut self, min: Duration, max: Duration) -> Self {
        self.min_lease_ttl = min;
        self.max_lease_ttl = max;
        self
    }

    /// [`Error::InvalidConfig`] naming `lease_ttl` and the range, unless `ttl` lies in it;
    /// `backend` is the provider's name, for the message.
    pub fn check_lease_ttl(&self, backend: &str, ttl: Duration) -> Result<()> {
        if ttl < self.min_lease_ttl || ttl > self.max_lease_ttl {
            return Err(Error::config(
                "lease_ttl",
                format!(
                    "the {backend} provider honours leases from {:?} to {:?}, got {ttl:?}",
                    self.min_lease_ttl, self.max_lease_ttl
                ),
            ));
        }
        Ok(())
    }
}
