//! [`ElectorBuilder`]: the options of an elector, their defaults, and the checks made when it
//! is built (the options' own rules in `config.rs`, then what the provider can honour).

use std::time::Duration;

use crate::config::Options;
use crate::elector::Elector;
use crate::error::Result;
use crate::provider::Provider;

/// Default lease TTL: 15 s.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);
/// Default heartbeat (renew) interval: 5 s.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Default retry (campaign) interval: 2 s.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// Default shutdown timeout: 5 s.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Configures and starts an [`Elector`]; made by [`Elector::builder`].
///
/// ```
/// use leader_election::{Elector, MemoryProvider};
/// use std::time::Duration;
///
/// let elector = Elector::builder(MemoryProvider::new())
///     .group("billing-jobs")
///     .participant_id("worker-1")
///     .lease_ttl(Duration::from_secs(10))
///     .heartbeat_interval(Duration::from_secs(3))
///     .retry_interval(Duration::from_secs(1))
///     .metadata("addr", "10.0.0.7:8080")
///     .start()?;
/// assert_eq!(elector.participant_id(), "worker-1");
/// # Ok::<(), leader_election::Error>(())
/// ```
#[must_use = "call .start() or .build()"]
pub struct ElectorBuilder<P> {
    pub(crate) provider: P,
    pub(crate) options: Options,
}

impl<P: Provider> ElectorBuilder<P> {
    /// The election group (required): participants of one group elect one leader. 1–128
    /// characters from `[A-Za-z0-9._-]`, starting with a letter or digit.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.options.group = Some(group.into());
        self
    }

    /// This participant's id (default: `hostname-pid-random`). 1–128 characters from
    /// `[A-Za-z0-9._:@-]`. Two electors with one id in one group never both lead, but the
    /// second waits for the first's lease to expire, so keep ids unique.
    pub fn participant_id(mut self, id: impl Into<String>) -> Self {
        self.options.participant_id = Some(id.into());
        self
    }

    /// How long a lease lasts without a renew (default 15 s). A crashed leader is replaced
    /// within about this plus one retry interval (with backends whose leases end with a
    /// session, such as ZooKeeper, after the session timeout instead). The provider may refuse
    /// a TTL it cannot honour ([`Provider::capabilities`]) when the elector is built.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.options.lease_ttl = ttl;
        self
    }

    /// How often the leader renews (default 5 s). Must be at most half of
    /// `lease_ttl − safety_margin`, so a leader gets at least two tries before its deadline.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.options.heartbeat_interval = interval;
        self
    }

    /// How often a follower campaigns (default 2 s, with jitter of up to −50 %); also the base
    /// of the back-off after errors. Backends that push changes wake followers sooner.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.options.retry_interval = interval;
        self
    }

    /// How often an idle follower campaigns while the backend pushes changes and its push
    /// connection is up (default: the lease TTL). Such a follower relies on the push for a
    /// hand-off and polls only as a safety net: where the push also reports a lease that ends
    /// without a release (ZooKeeper, etcd, Consul), at this interval; where it reports only
    /// releases (Redis, PostgreSQL, the memory provider), when the leader's lease would run
    /// out if not renewed (the backend says how long it has left), and at this interval at
    /// the latest — so a crashed leader is still replaced within its TTL plus one retry
    /// interval. While the push is down, or on backends that cannot push, followers campaign
    /// every retry interval. Set it to the retry interval to always poll at that pace. A push
    /// that dies without its provider noticing (a connection silently cut) delays a hand-off
    /// by up to this interval; each provider detects a dead push connection within its own
    /// timeouts (etcd's watch stream: 60 s of silence).
    ///
    /// ```
    /// use leader_election::{Elector, MemoryProvider};
    /// use std::time::Duration;
    ///
    /// let elector = Elector::builder(MemoryProvider::new())
    ///     .group("doc-idle-poll")
    ///     .idle_poll_interval(Duration::from_secs(60))
    ///     .build()?;
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn idle_poll_interval(mut self, interval: Duration) -> Self {
        self.options.idle_poll_interval = Some(interval);
        self
    }

    /// How much earlier than `sent + lease_ttl` the leader steps down (default: a tenth of the
    /// TTL). Above zero and below half the TTL. It must cover two things: the clock-rate
    /// difference between this host and the backend over one TTL, and the time your leader
    /// work needs to notice that the term ended (the `Lost` event arrives at the deadline, not
    /// before; work that checks [`Elector::term`] between steps is late by at most one step).
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.options.safety_margin = Some(margin);
        self
    }

    /// How long [`Elector::shutdown`] (and dropping the elector) waits for the release of the
    /// lease and the withdrawal from the group (default 5 s); past it, shutdown returns
    /// [`Error::Timeout`](crate::Error::Timeout) and the lease expires on its own. 1 ms – 24 h.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.options.shutdown_timeout = timeout;
        self
    }

    /// Adds a metadata entry stored with the leader record (an address, a version…). Keys:
    /// 1–64 characters from `[A-Za-z0-9._-]`; values: at most 1024 bytes; at most 32 entries.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.metadata.insert(key.into(), value.into());
        self
    }

    /// Checks the options and builds an elector without starting it.
    pub fn build(self) -> Result<Elector> {
        let config = self.options.validate()?;
        self.provider
            .capabilities()
            .check_lease_ttl(self.provider.name(), config.lease_ttl)?;
        Ok(Elector::new(config, self.provider))
    }

    /// Checks the options, builds the elector and starts its heartbeat thread.
    pub fn start(self) -> Result<Elector> {
        let elector = self.build()?;
        elector.start()?;
        Ok(elector)
    }
}
