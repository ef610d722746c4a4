//! The Azure Blob Storage provider: one blob per group, held through the Blob service's
//! leases, with the fencing token counter in the blob's metadata and the leader record as its
//! body. Requests are signed with the account key (Shared Key) or carry a SAS token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::Provider;
use crate::providers::azure_blob::account::{Account, validate_prefix};
use crate::providers::azure_blob::blob::{BlobState, Blobs, Found, LeaseAction, LeaseOutcome};
use crate::providers::azure_blob::campaign::{History, lease_length};
use crate::providers::azure_blob::options::AzureBlobOptions;
use crate::providers::azure_blob::refusals::check_sas;
use crate::providers::support::http::HttpClient;
use crate::providers::support::safe_url::SafeUrl;
use crate::validate;

pub(crate) mod account;
mod blob;
mod campaign;
pub(crate) mod options;
mod refusals;
mod signing;

#[cfg(test)]
pub(crate) use refusals::sas_time;

pub(crate) const BACKEND: &str = "azure-blob";

/// The shortest and longest lease the Blob service grants.
const MIN_LEASE: Duration = Duration::from_secs(15);
const MAX_LEASE: Duration = Duration::from_secs(60);

/// A blob name no group can have (groups start with a letter or digit): read to check the
/// account, the credentials and the container.
const PROBE: &str = ".leader-election-probe";

/// Elects through one blob per group in an Azure Storage container, using blob leases.
///
/// **Leases.** Acquire is a Lease Blob *acquire* with a proposed lease id — random, from the
/// operating system's generator, new for every term — for `max(15 s, ttl rounded up to whole
/// seconds)`: the service grants only 15–60 s leases, so a TTL above 60 s is refused when the
/// elector is built, and a shorter TTL still holds the blob for 15 s. The elector's own
/// deadline follows its TTL, but a crashed leader blocks its group for the granted length:
/// failover takes up to `max(15 s, ttl)`. Renew is one *renew*, release one *release*; the
/// lease id is the term's capability and is kept in [`Lease::handle`], never printed. The
/// service renews a lease that expired if nobody took the blob since, so a renew that comes
/// after the granted length (by this provider's clock, from the last confirmed call) is
/// reported [`Renewal::Lost`] without asking. A participant id whose earlier term still holds
/// the lease gets `Held`: the new term's lease id differs, and the service refuses it.
///
/// **Round trips.** A follower's campaign is one GET of the blob (lease state, ETag, token
/// counter and leader record together) while the lease is held; taking a free group is that GET,
/// the lease *acquire* (conditional on the ETag read), and one Put Blob writing the new token and
/// record under the lease (conditional on the same ETag) — plus one request to create the blob,
/// and one for the container, the first time. Renew and release are one request each, and so is
/// [`Provider::leader`]. Nothing is pushed: followers poll. The record a follower reads is
/// written by the token write, so for one round trip after a new lease — and up to the granted
/// length if its holder dies before writing — `leader()` and `Held` still show the previous
/// term's record (or none). Anyone allowed to write the blob can *break* its lease, which ends
/// the term early: the leader learns it at its next renew, so leave the blobs to this provider.
///
/// **Fencing tokens.** The blob's metadata `fencingtoken` holds the last token issued. A new
/// term writes `max(counter, the highest token this provider saw for the group) + 1` with a Put
/// Blob that carries its lease id and the ETag read before the lease was taken: no other term
/// can write while the lease is held, a term whose lease has lapsed can no longer write
/// (HTTP 412), and a write after another term's write fails the ETag condition — so two terms
/// never share a value. If that write fails, the lease is released and the campaign reports
/// `Held` or the error. A new blob's counter starts at the service's clock in whole seconds,
/// as microseconds (its `Date` header), or above the highest token this provider saw.
///
/// **What resets it.** Deleting the blob or its container — or an emulator restarted without
/// persistence, which loses everything — loses the counter. A provider that saw the group's
/// blob and finds it gone does not take the group for one lease TTL from that discovery (so an
/// old leader has stepped down by its deadline), and continues from the highest token it saw. A
/// participant that saw nothing (a new process) starts from the service's clock, which is above
/// every earlier token as long as the blob was lost in a later second than it was created, fewer
/// than a million terms ran on it per second of its life, and the service's clock was not set
/// back. The old leader learns of the loss at its next renew.
///
/// **Clocks.** Lease expiry is decided on the service's clock; this provider and the elector
/// count their deadlines on the local monotonic clock, from when each call was sent.
///
/// ```no_run
/// use leader_election::{AzureBlobOptions, AzureBlobProvider, Elector};
///
/// let options = AzureBlobOptions::connection_string("UseDevelopmentStorage=true", "leases");
/// let provider = AzureBlobProvider::new(options)?;
/// let elector = Elector::builder(provider).group("billing").start()?;
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct AzureBlobProvider {
    blobs: Blobs,
    create_container: bool,
    server: String,
    /// Per group: what this provider saw of its history.
    history: Mutex<HashMap<String, History>>,
    /// Per lease id: when its last acquire or renew was sent and how long the service granted.
    terms: Mutex<HashMap<String, Term>>,
}

#[derive(Clone, Copy)]
struct Term {
    confirmed: Instant,
    granted: Duration,
}

impl AzureBlobProvider {
    /// Checks the options (names, timeouts, a SAS token's permissions and expiry) and builds
    /// the provider; with `fail_fast` (the default) it also reads once from the container —
    /// proving the endpoint, the credentials and the container — and creates the container if
    /// it is missing and allowed to.
    pub fn new(options: AzureBlobOptions) -> Result<Self> {
        let account = Account::resolve(&options)?;
        validate_prefix(&options.blob_prefix)?;
        for (field, d) in [
            ("connect_timeout", options.connect_timeout),
            ("command_timeout", options.command_timeout),
        ] {
            validate::duration(field, d)?;
        }
        check_sas(&account.credential)?;
        let server = format!(
            "{}/{}",
            SafeUrl::from_url(&account.endpoint)
                .to_string()
                .trim_end_matches('/'),
            account.container
        );
        let client = HttpClient::new(
            BACKEND,
            account.endpoint.clone(),
            &options.tls,
            options.connect_timeout,
            options.command_timeout,
        )?
        .with_error_code(|r| r.header("x-ms-error-code").map(str::to_owned));
        let provider = AzureBlobProvider {
            blobs: Blobs::new(client, account, options.blob_prefix),
            create_container: options.create_container,
            server,
            history: Mutex::new(HashMap::new()),
            terms: Mutex::new(HashMap::new()),
        };
        if options.fail_fast {
            let deadline = Instant::now() + options.connect_timeout + 2 * options.command_timeout;
            provider.ensure_container(deadline)?;
        }
        Ok(provider)
    }

    /// One signed request that reads a blob which never exists: `Ok` when the service answers
    /// and accepts the credentials (a health check; the benchmark's raw round trip).
    pub fn ping(&self, deadline: Instant) -> Result<()> {
        self.blobs.get(PROBE, "ping", deadline).map(drop)
    }

    /// Creates the container if it is missing and allowed to.
    fn ensure_container(&self, deadline: Instant) -> Result<()> {
        match self.blobs.get(PROBE, "connect", deadline)? {
            Found::Missing {
                container_missing: true,
                ..
            } => self.create_container(deadline),
            _ => Ok(()),
        }
    }

    fn create_container(&self, deadline: Instant) -> Result<()> {
        if !self.create_container {
            return Err(Error::config(
                "container",
                format!(
                    "{:?} does not exist; create it, or allow create_container",
                    self.blobs.container()
                ),
            ));
        }
        self.blobs.create_container(deadline)
    }

    /// The leader record of a held blob; `None` before the first term wrote one.
    fn record(group: &str, state: &BlobState) -> Result<Option<LeaderInfo>> {
        if state.record.is_empty() {
            return Ok(None);
        }
        let json = std::str::from_utf8(&state.record).map_err(|_| Error::Corrupt {
            backend: BACKEND,
            group: group.to_owned(),
            detail: "the leader record is not UTF-8".into(),
        })?;
        LeaderInfo::from_json(BACKEND, group, json).map(Some)
    }

    /// Who holds `group` now, as far as one read tells; `None` on any failure.
    fn holder(&self, group: &str, deadline: Instant) -> Option<LeaderInfo> {
        match self.blobs.get(group, "renew", deadline) {
            Ok(Found::Blob(state)) if state.lease == blob::LeaseState::Held => {
                Self::record(group, &state).ok().flatten()
            }
            _ => None,
        }
    }
}

impl std::fmt::Debug for AzureBlobProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBlobProvider")
            .field("container", &self.server)
            .field("blob_prefix", &self.blobs.prefix())
            .finish_non_exhaustive()
    }
}

impl Provider for AzureBlobProvider {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_lease_ttl_range(Duration::from_millis(1), MAX_LEASE)
    }

    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        self.campaign(request, deadline)
    }

    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        let group = &lease.info.group;
        validate::group(group)?;
        let start = Instant::now();
        let granted = lease_length(lease.ttl)?;
        let known = self.terms.lock().get(&lease.handle).copied();
        if known.is_some_and(|t| start >= t.confirmed + t.granted) {
            // The service would renew a lapsed lease nobody took since; the term has ended.
            self.terms.lock().remove(&lease.handle);
            return Ok(Renewal::Lost(None));
        }
        let renew = LeaseAction::Renew { id: &lease.handle };
        match self.blobs.lease(group, &renew, deadline)? {
            LeaseOutcome::Done => {
                self.terms.lock().insert(
                    lease.handle.clone(),
                    Term {
                        confirmed: start,
                        granted,
                    },
                );
                Ok(Renewal::Renewed)
            }
            _ => {
                self.terms.lock().remove(&lease.handle);
                Ok(Renewal::Lost(self.holder(group, deadline)))
            }
        }
    }

    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        validate::group(&lease.info.group)?;
        let release = LeaseAction::Release { id: &lease.handle };
        // Done, or no longer ours (another lease, none, no blob): released either way.
        self.blobs.lease(&lease.info.group, &release, deadline)?;
        self.terms.lock().remove(&lease.handle);
        Ok(())
    }

    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        validate::group(group)?;
        match self.blobs.get(group, "leader", deadline)? {
            Found::Missing { .. } => Ok(None),
            Found::Blob(state) => {
                self.note(group, state.counter);
                if state.lease == blob::LeaseState::Held {
                    Self::record(group, &state)
                } else {
                    Ok(None)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_are_refused_before_any_request() {
        // Port 1: nothing listens, so reaching the network would be a different error.
        let key = account::DEV_KEY;
        let base = || {
            AzureBlobOptions::shared_key(
                "http://127.0.0.1:1/devstoreaccount1",
                "devstoreaccount1",
                key,
                "ok-name",
            )
        };
        for (options, field) in [
            (
                AzureBlobOptions::shared_key(
                    "http://127.0.0.1:1/devstoreaccount1",
                    "devstoreaccount1",
                    key,
                    "Bad_Name",
                ),
                "container",
            ),
            (base().blob_prefix("../x"), "blob_prefix"),
            (base().command_timeout(Duration::ZERO), "command_timeout"),
        ] {
            match AzureBlobProvider::new(options) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
