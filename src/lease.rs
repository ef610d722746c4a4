//! The values exchanged between the elector and a provider: who leads, leases, outcomes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who leads a group, as stored in the backend.
///
/// ```
/// use leader_election::LeaderInfo;
/// use std::collections::BTreeMap;
///
/// let info = LeaderInfo::new("jobs", "node-1", 7, BTreeMap::new());
/// assert_eq!(info.fencing_token, 7);
/// assert_eq!(info.participant_id, "node-1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaderInfo {
    /// The election group.
    pub group: String,
    /// The leading participant.
    pub participant_id: String,
    /// The fencing token of this leadership term: strictly greater than every earlier term's
    /// token for the same group on the same backend.
    pub fencing_token: u64,
    /// When the term began, by the acquiring participant's wall clock (informational only: no
    /// decision in this crate depends on a wall clock).
    pub since: SystemTime,
    /// The leader's metadata (see [`crate::ElectorBuilder::metadata`]).
    pub metadata: BTreeMap<String, String>,
    /// How long the leader's lease had left when the backend was asked, where the provider
    /// reports it (Redis, PostgreSQL, the memory provider; `None` elsewhere). A snapshot, not
    /// kept up to date; idle followers use it to poll when the lease would run out (see
    /// [`crate::ElectorBuilder::idle_poll_interval`]). Never stored.
    pub expires_in: Option<Duration>,
}

impl LeaderInfo {
    /// A record for a term beginning now.
    pub fn new(
        group: impl Into<String>,
        participant_id: impl Into<String>,
        fencing_token: u64,
        metadata: BTreeMap<String, String>,
    ) -> Self {
        LeaderInfo {
            group: group.into(),
            participant_id: participant_id.into(),
            fencing_token,
            since: SystemTime::now(),
            metadata,
            expires_in: None,
        }
    }

    /// Serializes the record (without the group, which is the key) as compact JSON, the form
    /// every bundled provider stores.
    pub fn to_json(&self) -> String {
        let rec = Record {
            participant_id: self.participant_id.clone(),
            fencing_token: self.fencing_token,
            since_ms: self
                .since
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            metadata: self.metadata.clone(),
        };
        // Serializing strings, integers and a string map cannot fail.
        serde_json::to_string(&rec).unwrap_or_default()
    }

    /// Parses what [`LeaderInfo::to_json`] wrote. `backend` names the provider in the error.
    ///
    /// ```
    /// use leader_election::LeaderInfo;
    /// use std::collections::BTreeMap;
    ///
    /// let info = LeaderInfo::new("jobs", "node-1", 7, BTreeMap::new());
    /// let back = LeaderInfo::from_json("my-backend", "jobs", &info.to_json())?;
    /// assert_eq!(back.fencing_token, 7);
    /// assert!(LeaderInfo::from_json("my-backend", "jobs", "{oops").is_err());
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn from_json(backend: &'static str, group: &str, json: &str) -> Result<Self> {
        let rec: Record = serde_json::from_str(json).map_err(|e| Error::Corrupt {
            backend,
            group: group.to_owned(),
            detail: e.to_string(),
        })?;
        Ok(LeaderInfo {
            group: group.to_owned(),
            participant_id: rec.participant_id,
            fencing_token: rec.fencing_token,
            // An absurd time (a corrupt record) must not overflow the clock: the epoch then.
            since: UNIX_EPOCH
                .checked_add(Duration::from_millis(rec.since_ms))
                .unwrap_or(UNIX_EPOCH),
            metadata: rec.metadata,
            expires_in: None,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(rename = "id")]
    participant_id: String,
    #[serde(rename = "token")]
    fencing_token: u64,
    #[serde(rename = "since")]
    since_ms: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

/// What a participant asks a provider for in [`crate::Provider::try_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcquireRequest {
    /// The election group (already validated).
    pub group: String,
    /// The campaigning participant (already validated).
    pub participant_id: String,
    /// How long the lease must stay held for this participant, counted from the moment the
    /// call was sent, unless renewed or released.
    pub ttl: Duration,
    /// Metadata to store with the leader record.
    pub metadata: BTreeMap<String, String>,
}

impl AcquireRequest {
    /// A request; the elector builds these, tests and benchmarks may too.
    pub fn new(group: impl Into<String>, participant_id: impl Into<String>, ttl: Duration) -> Self {
        AcquireRequest {
            group: group.into(),
            participant_id: participant_id.into(),
            ttl,
            metadata: BTreeMap::new(),
        }
    }

    /// Adds metadata.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// A held lease: the proof a provider hands back on acquisition and takes in renew and release.
///
/// `Debug` shows the record and the TTL but never the `handle`: with some backends (Azure lease
/// ids, Consul sessions) the handle is a capability that lets its bearer renew or release the
/// lease.
///
/// ```
/// use leader_election::{LeaderInfo, Lease};
/// use std::time::Duration;
///
/// let info = LeaderInfo::new("jobs", "node-1", 7, Default::default());
/// let lease = Lease::new(info, Duration::from_secs(10), "lease-id-3f9a");
/// assert!(!format!("{lease:?}").contains("3f9a"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The leader record of this term (fencing token included).
    pub info: LeaderInfo,
    /// The TTL the lease was requested with.
    pub ttl: Duration,
    /// Provider-specific handle identifying this term (an Azure lease id, a ZooKeeper node
    /// path, a Consul session id, …). Opaque to the elector.
    pub handle: String,
}

impl Lease {
    /// A lease for `info` with a provider-specific `handle`.
    pub fn new(info: LeaderInfo, ttl: Duration, handle: impl Into<String>) -> Self {
        Lease {
            info,
            ttl,
            handle: handle.into(),
        }
    }

    /// The term's fencing token.
    pub fn fencing_token(&self) -> u64 {
        self.info.fencing_token
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("info", &self.info)
            .field("ttl", &self.ttl)
            .field("handle", &"<redacted>")
            .finish()
    }
}

/// The outcome of [`crate::Provider::try_acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquisition {
    /// The caller now leads.
    Acquired(Lease),
    /// Someone else leads (`Some`), or the caller must wait its turn without a known leader
    /// (`None`, e.g. a queue position behind a node whose record is gone).
    Held(Option<LeaderInfo>),
}

/// The outcome of [`crate::Provider::renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// The lease is extended by its TTL from the moment the renew was sent.
    Renewed,
    /// The lease is no longer the caller's; the new holder if known.
    Lost(Option<LeaderInfo>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let mut md = BTreeMap::new();
        md.insert("addr".to_owned(), "10.0.0.1:80".to_owned());
        let info = LeaderInfo::new("g", "p", 42, md);
        let back = LeaderInfo::from_json("memory", "g", &info.to_json()).unwrap();
        assert_eq!(back.participant_id, "p");
        assert_eq!(back.fencing_token, 42);
        assert_eq!(back.metadata, info.metadata);
        let since = |i: &LeaderInfo| i.since.duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(since(&back), since(&info));
    }

    #[test]
    fn absurd_times_do_not_panic() {
        let json = r#"{"id":"p","token":1,"since":18446744073709551615}"#;
        let info = LeaderInfo::from_json("file", "g", json).unwrap();
        assert_eq!(info.fencing_token, 1);
    }

    #[test]
    fn corrupt_json_is_reported() {
        let e = LeaderInfo::from_json("file", "g", "{not json").unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }));
        assert!(e.to_string().contains("\"g\""));
    }
}
