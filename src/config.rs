//! The settings of one elector: [`Options`], what the [`crate::ElectorBuilder`] collects, and
//! [`Config`], what [`Options::validate`] turns them into once every rule holds. The elector
//! handle and its heartbeat thread both read the same `Config`; nothing changes it after the
//! elector is built. (The defaults, `DEFAULT_*`, live with the builder in `elector.rs`.)

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::{util, validate};

/// The builder's options, as set; unchecked.
pub(crate) struct Options {
    pub group: Option<String>,
    pub participant_id: Option<String>,
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub retry_interval: Duration,
    /// `None`: a tenth of the lease TTL.
    pub safety_margin: Option<Duration>,
    pub shutdown_timeout: Duration,
    /// `None`: the lease TTL.
    pub idle_poll_interval: Option<Duration>,
    pub metadata: BTreeMap<String, String>,
}

/// Validated settings of one elector.
#[derive(Debug)]
pub(crate) struct Config {
    pub group: String,
    pub participant_id: String,
    pub lease_ttl: Duration,
    pub heartbeat_interval: Duration,
    pub retry_interval: Duration,
    pub safety_margin: Duration,
    pub shutdown_timeout: Duration,
    /// How often a follower polls while the backend's push is live (see
    /// [`crate::ElectorBuilder::idle_poll_interval`]).
    pub idle_poll_interval: Duration,
    pub metadata: BTreeMap<String, String>,
}

impl Options {
    /// Checks every rule (group and id syntax, metadata limits, duration caps, margin below
    /// half the TTL, two renews per term) and fills in the defaults; the first broken rule is
    /// the error. What the provider itself can honour is checked by the builder afterwards.
    pub(crate) fn validate(self) -> Result<Config> {
        let group = self
            .group
            .ok_or_else(|| Error::config("group", "must be set with .group(..)"))?;
        validate::group(&group)?;
        let participant_id = self
            .participant_id
            .unwrap_or_else(util::default_participant_id);
        validate::participant_id(&participant_id)?;
        if self.metadata.len() > validate::MAX_METADATA_ENTRIES {
            return Err(Error::config(
                "metadata",
                format!(
                    "at most {} entries, got {}",
                    validate::MAX_METADATA_ENTRIES,
                    self.metadata.len()
                ),
            ));
        }
        for (k, v) in &self.metadata {
            validate::metadata_key(k)?;
            validate::metadata_value(v)?;
        }
        validate::duration("lease_ttl", self.lease_ttl)?;
        validate::duration("heartbeat_interval", self.heartbeat_interval)?;
        validate::duration("retry_interval", self.retry_interval)?;
        validate::duration("shutdown_timeout", self.shutdown_timeout)?;
        let idle_poll_interval = self.idle_poll_interval.unwrap_or(self.lease_ttl);
        validate::duration("idle_poll_interval", idle_poll_interval)?;
        let safety_margin = self.safety_margin.unwrap_or(self.lease_ttl / 10);
        if safety_margin.is_zero() {
            return Err(Error::config(
                "safety_margin",
                "must be above zero: it absorbs clock-rate differences between hosts and the \
                 time leader work needs to notice that a term ended",
            ));
        }
        if safety_margin
            .checked_mul(2)
            .is_none_or(|twice| twice >= self.lease_ttl)
        {
            return Err(Error::config(
                "safety_margin",
                format!(
                    "must be below half of lease_ttl ({:?}), got {safety_margin:?}",
                    self.lease_ttl
                ),
            ));
        }
        let validity = self.lease_ttl - safety_margin;
        if self.heartbeat_interval * 2 > validity {
            return Err(Error::config(
                "heartbeat_interval",
                format!(
                    "must be at most half of lease_ttl − safety_margin ({validity:?}) so a leader \
                     can renew at least twice before its deadline, got {:?}",
                    self.heartbeat_interval
                ),
            ));
        }
        Ok(Config {
            group,
            participant_id,
            lease_ttl: self.lease_ttl,
            heartbeat_interval: self.heartbeat_interval,
            retry_interval: self.retry_interval,
            safety_margin,
            shutdown_timeout: self.shutdown_timeout,
            idle_poll_interval,
            metadata: self.metadata,
        })
    }
}

impl Config {
    /// How long a term lasts after the renew (or acquire) that confirmed it was *sent*.
    pub(crate) fn validity(&self) -> Duration {
        self.lease_ttl - self.safety_margin
    }

    /// How long a shutdown waits for the release (and a drop, for the shutdown).
    pub(crate) fn shutdown_wait(&self) -> Duration {
        self.shutdown_timeout
    }
}
