//! The in-memory provider: one process, shared by clones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::capabilities::Capabilities;
use crate::error::Result;
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};
use crate::providers::support::watchers::Watchers;

/// A provider that keeps leases in memory, shared by every clone of it in one process.
///
/// For tests, doctests and single-process programs that run several participants (worker
/// pools). Leases expire by the monotonic clock; releases wake waiting electors at once.
///
/// ```
/// use leader_election::{AcquireRequest, Acquisition, MemoryProvider, Provider};
/// use std::time::{Duration, Instant};
///
/// let provider = MemoryProvider::new();
/// let deadline = Instant::now() + Duration::from_secs(1);
/// let req = AcquireRequest::new("jobs", "a", Duration::from_secs(5));
/// assert!(matches!(provider.try_acquire(&req, deadline)?, Acquisition::Acquired(_)));
/// let req = AcquireRequest::new("jobs", "b", Duration::from_secs(5));
/// assert!(matches!(provider.clone().try_acquire(&req, deadline)?, Acquisition::Held(Some(_))));
/// # Ok::<(), leader_election::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct MemoryProvider {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    groups: Mutex<HashMap<String, Group>>,
    watchers: Watchers,
}

#[derive(Default)]
struct Group {
    last_token: u64,
    holder: Option<Holder>,
}

struct Holder {
    info: LeaderInfo,
    expires: Instant,
}

impl Group {
    fn live_holder(&self, now: Instant) -> Option<&Holder> {
        self.holder.as_ref().filter(|h| now < h.expires)
    }
}

impl MemoryProvider {
    /// A new, empty store. Clone it to share it between electors.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest fencing token issued for `group` so far (0 if none).
    ///
    /// ```
    /// use leader_election::{AcquireRequest, MemoryProvider, Provider};
    /// use std::time::{Duration, Instant};
    ///
    /// let p = MemoryProvider::new();
    /// let req = AcquireRequest::new("jobs", "a", Duration::from_secs(5));
    /// p.try_acquire(&req, Instant::now() + Duration::from_secs(1))?;
    /// assert_eq!(p.last_token("jobs"), 1);
    /// # Ok::<(), leader_election::Error>(())
    /// ```
    pub fn last_token(&self, group: &str) -> u64 {
        self.inner
            .groups
            .lock()
            .get(group)
            .map_or(0, |g| g.last_token)
    }
}

impl std::fmt::Debug for MemoryProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryProvider")
            .field("groups", &self.inner.groups.lock().len())
            .finish()
    }
}

impl Provider for MemoryProvider {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_pushes_changes(true)
    }

    fn try_acquire(&self, request: &AcquireRequest, _deadline: Instant) -> Result<Acquisition> {
        let now = Instant::now();
        let mut groups = self.inner.groups.lock();
        let group = groups.entry(request.group.clone()).or_default();
        if let Some(holder) = group.live_holder(now) {
            let mut info = holder.info.clone();
            info.expires_in = Some(holder.expires.saturating_duration_since(now));
            return Ok(Acquisition::Held(Some(info)));
        }
        let had_holder = group.holder.is_some();
        group.last_token += 1;
        let info = LeaderInfo::new(
            &request.group,
            &request.participant_id,
            group.last_token,
            request.metadata.clone(),
        );
        group.holder = Some(Holder {
            info: info.clone(),
            expires: now + request.ttl,
        });
        drop(groups);
        if had_holder {
            // An expired term was replaced: other watchers may want to know.
            self.inner.watchers.wake(&request.group);
        }
        let handle = info.fencing_token.to_string();
        Ok(Acquisition::Acquired(Lease::new(info, request.ttl, handle)))
    }

    fn renew(&self, lease: &Lease, _deadline: Instant) -> Result<Renewal> {
        let now = Instant::now();
        let mut groups = self.inner.groups.lock();
        let Some(group) = groups.get_mut(&lease.info.group) else {
            return Ok(Renewal::Lost(None));
        };
        match &mut group.holder {
            Some(h)
                if now < h.expires
                    && h.info.fencing_token == lease.info.fencing_token
                    && h.info.participant_id == lease.info.participant_id =>
            {
                h.expires = now + lease.ttl;
                Ok(Renewal::Renewed)
            }
            _ => Ok(Renewal::Lost(
                group.live_holder(now).map(|h| h.info.clone()),
            )),
        }
    }

    fn release(&self, lease: &Lease, _deadline: Instant) -> Result<()> {
        let released = {
            let mut groups = self.inner.groups.lock();
            match groups.get_mut(&lease.info.group) {
                Some(group)
                    if group
                        .holder
                        .as_ref()
                        .is_some_and(|h| h.info.fencing_token == lease.info.fencing_token) =>
                {
                    group.holder = None;
                    true
                }
                _ => false,
            }
        };
        if released {
            self.inner.watchers.wake(&lease.info.group);
        }
        Ok(())
    }

    fn leader(&self, group: &str, _deadline: Instant) -> Result<Option<LeaderInfo>> {
        let now = Instant::now();
        Ok(self
            .inner
            .groups
            .lock()
            .get(group)
            .and_then(|g| g.live_holder(now))
            .map(|h| h.info.clone()))
    }

    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        Ok(Some(self.inner.watchers.add(group, wakeup)))
    }
}
