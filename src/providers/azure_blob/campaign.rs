//! Taking a group (`try_acquire`): read the group's blob — creating it, and its container, the
//! first time, unless this provider saw it before and finds it gone — then, if its lease is
//! free, acquire the lease with a new random lease id, conditional on the ETag read, and write
//! the term's token and leader record under the lease, conditional on the same ETag. A write
//! that fails gives the lease back. Also here: what a provider remembers of each group's
//! history (the highest token it saw, and when it found the blob gone), the lease length the
//! service grants for a TTL, and lease ids.

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease};
use crate::providers::azure_blob::blob::{self, BlobState, Found, LeaseAction, LeaseOutcome};
use crate::providers::azure_blob::{AzureBlobProvider, BACKEND, MAX_LEASE, MIN_LEASE, Term};
use crate::validate;

/// What a provider saw of a group's history.
#[derive(Default, Clone, Copy)]
pub(super) struct History {
    /// The highest token seen for the group (0: never saw its blob).
    pub(super) last_token: u64,
    /// When the group's blob was found gone after it had been seen.
    pub(super) gone_since: Option<Instant>,
}

impl AzureBlobProvider {
    /// `Provider::try_acquire`: see the module's and the provider's docs for the steps.
    pub(super) fn campaign(
        &self,
        request: &AcquireRequest,
        deadline: Instant,
    ) -> Result<Acquisition> {
        validate::group(&request.group)?;
        let group = &request.group;
        let granted = lease_length(request.ttl)?;
        let start = Instant::now();
        let gone = self.history.lock().get(group).and_then(|h| h.gone_since);
        // (This waits our own TTL: participants of one group are expected to share one TTL.)
        if gone.is_some_and(|t| t.elapsed() < request.ttl) {
            return Ok(Acquisition::Held(None));
        }
        let Some(state) = self.blob_for_campaign(request, deadline)? else {
            return Ok(Acquisition::Held(None));
        };
        let last = self.note(group, state.counter);
        if state.lease == blob::LeaseState::Held {
            let holder = AzureBlobProvider::record(group, &state).unwrap_or_else(|e| {
                log::warn!("azure-blob: {}", e.report());
                None
            });
            return Ok(Acquisition::Held(holder));
        }
        let id = new_lease_id()?;
        let acquire = LeaseAction::Acquire {
            id: &id,
            seconds: granted.as_secs(),
            etag: &state.etag,
        };
        match self.blobs.lease(group, &acquire, deadline)? {
            LeaseOutcome::Done => {}
            // A retried request may have won the first time: the service accepts the same
            // proposed id again from the lease's holder, and only from it.
            LeaseOutcome::Conflict(blob::Code::LeaseAlreadyPresent) => {
                if self.blobs.lease(group, &acquire, deadline)? != LeaseOutcome::Done {
                    return Ok(Acquisition::Held(None));
                }
            }
            _ => return Ok(Acquisition::Held(None)),
        }
        let Some(token) = last.checked_add(1) else {
            self.abandon(group, &id, deadline);
            return Err(Error::Corrupt {
                backend: BACKEND,
                group: group.clone(),
                detail: "the token counter is at its maximum".into(),
            });
        };
        let info = LeaderInfo::new(
            group,
            &request.participant_id,
            token,
            request.metadata.clone(),
        );
        let written =
            self.blobs
                .write_record(group, &id, &state.etag, token, &info.to_json(), deadline);
        let written = match written {
            Ok(LeaseOutcome::Done) => true,
            // A retried write whose first attempt landed fails the ETag condition: the counter
            // then shows our token (nobody else can write under our lease).
            Ok(LeaseOutcome::Changed) => matches!(
                self.blobs.get(group, "acquire", deadline),
                Ok(Found::Blob(s)) if s.counter == token && s.lease == blob::LeaseState::Held
            ),
            Ok(_) => false,
            Err(e) => {
                self.abandon(group, &id, deadline);
                return Err(e);
            }
        };
        if !written {
            self.abandon(group, &id, deadline);
            return Ok(Acquisition::Held(None));
        }
        self.note(group, token);
        let mut terms = self.terms.lock();
        terms.retain(|_, t| t.confirmed.elapsed() < t.granted);
        terms.insert(
            id.clone(),
            Term {
                confirmed: start,
                granted,
            },
        );
        drop(terms);
        log::debug!("azure-blob: group {group:?}: term {token} acquired");
        Ok(Acquisition::Acquired(Lease::new(info, request.ttl, id)))
    }

    /// Notes a token seen for `group`; returns the highest seen.
    pub(super) fn note(&self, group: &str, token: u64) -> u64 {
        let mut history = self.history.lock();
        let h = history.entry(group.to_owned()).or_default();
        h.last_token = h.last_token.max(token);
        h.gone_since = None;
        h.last_token
    }

    /// The group's blob, created (with its container) if it is missing and this provider
    /// never saw it; `None` when the campaign must wait (someone else created it first, or
    /// the blob vanished less than one TTL ago).
    fn blob_for_campaign(
        &self,
        request: &AcquireRequest,
        deadline: Instant,
    ) -> Result<Option<BlobState>> {
        let group = &request.group;
        let (container_missing, server_time) = match self.blobs.get(group, "acquire", deadline)? {
            Found::Blob(state) => return Ok(Some(state)),
            Found::Missing {
                container_missing,
                server_time,
            } => (container_missing, server_time),
        };
        let last = {
            let mut history = self.history.lock();
            let h = history.entry(group.clone()).or_default();
            if h.last_token > 0 {
                let since = *h.gone_since.get_or_insert_with(|| {
                    log::warn!(
                        "azure-blob: the blob of group {group:?} is gone (deleted, or the \
                         service lost its data); not taking the group for one lease TTL \
                         ({:?}) so that the old leader has stepped down",
                        request.ttl
                    );
                    Instant::now()
                });
                if since.elapsed() < request.ttl {
                    return Ok(None);
                }
            }
            h.last_token
        };
        let seed = blob::micros(server_time).max(last.saturating_add(1));
        if container_missing {
            self.create_container(deadline)?;
        }
        let mut created = self.blobs.create(group, seed, deadline)?;
        if created == Err(blob::Code::ContainerNotFound) {
            self.create_container(deadline)?;
            created = self.blobs.create(group, seed, deadline)?;
        }
        Ok(created.ok().map(|etag| BlobState {
            etag,
            lease: blob::LeaseState::Free,
            counter: seed,
            record: Vec::new(),
        }))
    }

    /// After a failed token write: gives the lease back (best effort, within `deadline`).
    fn abandon(&self, group: &str, id: &str, deadline: Instant) {
        if let Err(e) = self
            .blobs
            .lease(group, &LeaseAction::Release { id }, deadline)
        {
            log::warn!(
                "azure-blob: could not release the lease of group {group:?} after a failed \
                 token write; it lapses by itself: {}",
                e.report()
            );
        }
    }
}

/// The lease length the service grants for `ttl`: whole seconds, rounded up, at least 15;
/// a TTL above 60 s is refused.
pub(super) fn lease_length(ttl: Duration) -> Result<Duration> {
    if ttl > MAX_LEASE {
        return Err(Error::config(
            "lease_ttl",
            format!("Azure blob leases last at most 60 s, got {ttl:?}"),
        ));
    }
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    Ok(Duration::from_secs(secs).max(MIN_LEASE))
}

/// A new lease id: 128 bits from the operating system's generator, in GUID form.
fn new_lease_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| {
        Error::io(
            "generating a lease id",
            std::io::Error::other(e.to_string()),
        )
    })?;
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lengths_round_up_to_whole_seconds_and_at_least_15() {
        let s = |ms: u64| lease_length(Duration::from_millis(ms)).map(|d| d.as_secs());
        assert_eq!(s(1).unwrap(), 15);
        assert_eq!(s(15_000).unwrap(), 15);
        assert_eq!(s(15_001).unwrap(), 16);
        assert_eq!(s(60_000).unwrap(), 60);
        assert!(matches!(
            s(60_001),
            Err(Error::InvalidConfig {
                field: "lease_ttl",
                ..
            })
        ));
    }

    #[test]
    fn lease_ids_are_random_guids() {
        let a = new_lease_id().unwrap();
        let b = new_lease_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(a, a.to_lowercase());
    }
}
