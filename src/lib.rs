//! Leader election for plain (non-async) Rust programs, with fencing tokens, over pluggable
//! backends.
//!
//! Several copies of a program — schedulers, single writers, singleton consumers — start an
//! [`Elector`] for the same *group*; at most one of them leads at any instant, and another
//! takes over when the leader dies, resigns or shuts down.
//!
//! ```
//! use leader_election::{ChangesExt, Elector, LeadershipChange, MemoryProvider};
//! use std::time::Duration;
//!
//! let provider = MemoryProvider::new(); // or FileProvider, or a network backend
//! let elector = Elector::builder(provider)
//!     .group("invoice-sender")
//!     .lease_ttl(Duration::from_secs(10))
//!     .heartbeat_interval(Duration::from_secs(3))
//!     .start()?;
//!
//! for change in elector.subscribe().take_until_leader() {
//!     println!("{change:?}");
//! }
//! // Leader work: pass the fencing token to every system you write to, and stop before
//! // the deadline.
//! let token = elector.fencing_token().expect("leads");
//! assert!(elector.leader_deadline().is_some());
//! # let _ = token;
//! elector.shutdown()?; // releases leadership for a follower to take over
//! # Ok::<(), leader_election::Error>(())
//! ```
//!
//! # Guarantees
//!
//! - **One heartbeat thread per elector.** It campaigns every retry interval (with jitter,
//!   and at once when a backend that can push changes reports a release), renews every
//!   heartbeat interval while leading, and backs off after errors. Provider calls run on a
//!   small process-wide I/O pool (one elector's calls one at a time, in order; a thread added
//!   whenever calls wait and every thread is busy), so the heartbeat thread never blocks on
//!   the backend, and one hung call never holds up another elector's.
//! - **A local deadline.** A leader leads only until the moment it *sent* its last confirmed
//!   renew (or acquire) + lease TTL − safety margin, on the monotonic clock.
//!   [`Elector::is_leader`] checks that deadline itself, and the heartbeat thread wakes at it
//!   to deliver [`LeadershipChange::Lost`] with [`LostReason::DeadlinePassed`] — even while a
//!   backend call hangs. The backend, for its part, must not grant the lease to anyone else
//!   before `sent + TTL` (the [`Provider`] contract), so with clocks that run at rates within
//!   the margin of each other, and a backend that keeps its data, two participants never both
//!   believe they lead. (Each provider's docs say what can break that on its backend.)
//! - **Fencing tokens.** Every acquisition of a group yields a `u64` strictly greater than
//!   every earlier token of that group on that backend, as long as the backend's history is
//!   kept. Give it to the systems the leader writes to so they can reject a stale leader's late
//!   writes.
//! - **Subscribers never block the elector.** Each subscription is an unbounded channel; a
//!   slow subscriber only queues, a dropped one is forgotten. A new subscription first sees
//!   the current state: `Acquired` if it leads, else the leader it last observed, if any.
//! - **No panics, no secrets.** Backend errors are logged with [`log`] and retried; no
//!   password, key or authentication token ever appears in logs, `Debug` output or error
//!   text (fencing tokens are not secrets and are logged).
//!
//! # Backends
//!
//! | Provider | Feature | Primitive |
//! |---|---|---|
//! | [`MemoryProvider`] | always | in-process map, monotonic-clock TTL |
//! | [`FileProvider`] | `file` (default) | exclusive OS file lock per group, one machine |
//! | [`FaultyProvider`] | always | wraps any provider and injects failures, latency, hangs |
//! | `PostgresProvider` | `postgres` | row per group, expiry on the database clock, NOTIFY |
//! | `RedisProvider` | `redis` | `SET NX PX` + Lua, pub/sub hand-off |
//! | `ZooKeeperProvider` | `zookeeper` | ephemeral sequential nodes, predecessor watches |
//! | `EtcdProvider` | `etcd` | a lease per term, create-if-absent transaction, prefix watch |
//! | `ConsulProvider` | `consul` | KV key locked by a check-free TTL session, blocking-query watch |
//! | `AzureBlobProvider` | `azure-blob` | one blob per group, blob leases (15–60 s), token in metadata |
//! | `OdbcProvider` | `odbc` | SQL Server, MySQL/MariaDB or PostgreSQL row through ODBC |
//!
//! To follow who leads without campaigning (dashboards, routing to the leader), start an
//! [`Observer`]. The `cli` feature builds the `leader-election` command-line tool (see the
//! README), which runs any program only while it leads.
//!
//! Implement [`Provider`] for anything else. With the `testing` feature,
//! [`testing`] holds the conformance suite every provider must pass.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod adapters;
mod builder;
mod capabilities;
mod change;
mod changes;
mod clock;
mod config;
mod connect;
mod elector;
mod error;
mod heartbeat;
mod lease;
mod limits;
mod observer;
mod provider;
mod providers;
#[cfg(test)]
mod robustness;
mod shared;
mod status;
mod telemetry;
mod util;
pub mod validate;

#[cfg(feature = "testing")]
pub mod testing;

pub use adapters::{ChangesExt, DistinctUntilChanged, OnTransition, TakeUntilLeader, WhileLeader};
pub use builder::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEASE_TTL, DEFAULT_RETRY_INTERVAL,
    DEFAULT_SHUTDOWN_TIMEOUT, ElectorBuilder,
};
pub use capabilities::Capabilities;
pub use change::{EventKinds, LeadershipChange, LostReason};
pub use changes::Changes;
pub use connect::connect;
pub use elector::Elector;
pub use error::{BoxError, Error, Result};
pub use lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
pub use observer::{DEFAULT_CALL_TIMEOUT, DEFAULT_POLL_INTERVAL, Observer, ObserverBuilder};
pub use provider::{Provider, Wakeup, Watch};
#[cfg(feature = "azure-blob")]
pub use providers::azure_blob::AzureBlobProvider;
#[cfg(feature = "azure-blob")]
pub use providers::azure_blob::options::AzureBlobOptions;
#[cfg(feature = "consul")]
pub use providers::consul::ConsulProvider;
#[cfg(feature = "consul")]
pub use providers::consul::options::ConsulOptions;
#[cfg(feature = "etcd")]
pub use providers::etcd::EtcdProvider;
#[cfg(feature = "etcd")]
pub use providers::etcd::options::EtcdOptions;
pub use providers::faulty::{Faults, FaultyProvider, Operation};
#[cfg(feature = "file")]
pub use providers::file::FileProvider;
pub use providers::memory::MemoryProvider;
#[cfg(feature = "odbc")]
pub use providers::odbc::OdbcProvider;
#[cfg(feature = "odbc")]
pub use providers::odbc::options::{Dialect, OdbcOptions};
#[cfg(feature = "postgres")]
pub use providers::postgres::PostgresProvider;
#[cfg(feature = "postgres")]
pub use providers::postgres::options::PostgresOptions;
#[cfg(feature = "redis")]
pub use providers::redis::RedisProvider;
#[cfg(feature = "redis")]
pub use providers::redis::options::RedisOptions;
#[cfg(feature = "tls")]
pub use providers::support::tls::Tls;
#[cfg(feature = "zookeeper")]
pub use providers::zookeeper::ZooKeeperProvider;
#[cfg(feature = "zookeeper")]
pub use providers::zookeeper::options::{ZooKeeperAcl, ZooKeeperOptions};
pub use status::{Role, Status, Term};

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Re-exported so users can `select!` on [`Changes::receiver`] without naming the crate.
pub use crossbeam_channel;
