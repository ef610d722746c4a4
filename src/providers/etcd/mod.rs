//! The etcd provider: a v3 lease per leadership term, a create-if-absent transaction to
//! acquire, the key's `create_revision` as fencing token, and a watch for hand-off — all over
//! etcd's JSON gateway (`/v3/...`) on the crate's HTTP transport.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};
use crate::providers::support::http::HttpClient;
use crate::providers::support::listener::Listener;
use crate::providers::support::watchers::Watchers;
use crate::validate;

mod api;
mod cluster;
mod ops;
pub(crate) mod options;
mod watch;

use api::KeyValue;
use cluster::Cluster;
use ops::Created;
use options::EtcdOptions;

const BACKEND: &str = "etcd";

/// Elects through one etcd key per group, `<prefix><group>`, attached to a lease.
///
/// **Acquire.** A follower first reads the key (a linearizable range): while the group is
/// held — the usual case — a campaign costs one read and writes nothing. If the key is absent,
/// the provider grants a lease of the requested TTL rounded *up* to whole seconds (it checks the
/// TTL etcd granted and refuses less; etcd raises TTLs below its minimum, 2 s by default, which
/// only lengthens the lease), then runs one transaction: if the key's `create_revision` is 0
/// (absent), put the leader record with that lease and read the key back; else read the key.
/// If another participant won the race, the fresh lease is revoked at once, so campaigns never
/// pile up leases. A key held by the same participant id from an earlier term is `Held`, like
/// any other holder: nothing is ever granted while the key exists.
///
/// **One lease per term.** A lease is granted for one acquisition and never reused: it is the
/// term. Renewing it cannot keep anything else alive, revoking it (on release) cannot end
/// anything else, and its expiry ends exactly this term. One lease per provider shared by its
/// groups would save keepalives, but would let one group's renew keep another group's key
/// alive after that elector stopped renewing (failover blocked), and one lost lease would end
/// every group at once. The cost is a grant and a revoke per term, not per heartbeat.
///
/// **Fencing token**: the key's `create_revision`, the cluster-wide revision of the write that
/// created it. Revisions only grow (compaction keeps them), so every new term's token is above
/// every earlier one, even after the key was deleted by hand. Replacing the cluster with a new
/// one (fresh data directories) resets them, and so does restoring an *older* snapshot, which
/// sets the revision back to the snapshot's: restore with `etcdutl snapshot restore
/// --bump-revision N --mark-compacted` (N above the revisions issued since the snapshot).
///
/// **Raft terms**: a renew is accepted only if its keepalive and its check were answered in the
/// same Raft term; otherwise a deposed etcd leader that has not noticed (etcd issue 15247, in
/// releases before its fix) could refresh a lease that the new leader expires, while the check
/// is served elsewhere. The renew then fails (transient) and the elector's deadline decides.
///
/// **Renew: two round trips.** etcd has no single request that both refreshes a lease and
/// checks a key: a keepalive takes only the lease id, and a transaction cannot touch a lease's
/// TTL. So a renew is a keepalive — which must answer a TTL of at least the requested one
/// (etcd restarts the full TTL when its leader processes it, after the call was sent; 0 means
/// the lease is gone: `Lost`; etcd never renews a lease whose TTL ran out, it waits for the
/// revocation and reports it not found) — then a linearizable read that the key still carries
/// this lease and this `create_revision` (else `Lost`: deleted behind the leader's back, or a
/// new term). The key cannot lose its lease before the lease's expiry except by an explicit
/// delete or revoke, so the lease lasts at least `sent + ttl`.
///
/// **Release**: a transaction deleting the key only if its `create_revision` is this term's,
/// then a revoke of the lease (a lease already gone is fine).
///
/// **Hand-off**: one watch thread per provider streams `/v3/watch` over every key under the
/// prefix (deletions only) and wakes the electors watching the group whose key went; it
/// resumes from the last revision it saw after a reconnection, and after a compaction starts
/// from the current revision and wakes everyone.
///
/// **Clocks and etcd's own guarantees.** Lease expiry runs on the etcd leader's monotonic
/// clock; a new etcd leader restarts every lease's full TTL (plus an election timeout), which
/// only lengthens leases. As with every etcd lock, a leader whose process pauses past its
/// deadline is fenced only by its token.
///
/// **Connections**: several endpoints (a call that cannot reach one, or that it cannot serve,
/// tries the next), TLS through [`crate::Tls`], user/password authentication whose token is
/// fetched again whenever etcd reports it expired. Passwords and tokens never appear in logs,
/// errors or `Debug` output.
///
/// ```no_run
/// use leader_election::{Elector, EtcdOptions, EtcdProvider};
///
/// let provider = EtcdProvider::new(EtcdOptions::new("http://127.0.0.1:2379"))?;
/// let elector = Elector::builder(provider).group("billing").start()?;
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct EtcdProvider {
    cluster: Arc<Cluster>,
    prefix: String,
    /// The end of the prefix's key range (the prefix with its last byte raised by one).
    range_end: String,
    watchers: Watchers,
    listener: Listener,
    endpoints: String,
}

impl EtcdProvider {
    /// Checks the options and builds the provider; with `fail_fast` (the default) it also
    /// authenticates (if asked) and reads under the key prefix, failing with a clear error if
    /// it cannot.
    pub fn new(options: EtcdOptions) -> Result<Self> {
        let urls = options.check()?;
        let n = urls.len();
        let clients = urls
            .into_iter()
            .map(|url| {
                HttpClient::new(
                    BACKEND,
                    url,
                    &options.tls,
                    options.connect_timeout,
                    options.request_timeout,
                )
                .map(|c| c.with_error_code(api::error_code))
            })
            .collect::<Result<Vec<_>>>()?;
        let prefix = options.key_prefix.clone();
        let provider = EtcdProvider {
            cluster: Arc::new(Cluster::new(
                clients,
                options.auth.clone(),
                options.request_timeout,
            )),
            range_end: range_end(&prefix),
            prefix,
            watchers: Watchers::default(),
            listener: Listener::default(),
            endpoints: options.describe(),
        };
        if options.fail_fast {
            let each = options.connect_timeout + options.request_timeout;
            let deadline = Instant::now() + each * u32::try_from(n).unwrap_or(1);
            provider.cluster.token(deadline)?;
            provider
                .cluster
                .probe(&provider.prefix, &provider.range_end, deadline)?;
        }
        Ok(provider)
    }

    fn key(&self, group: &str) -> String {
        format!("{}{group}", self.prefix)
    }

    /// The leader record stored in `kv`, with its `create_revision` as token.
    fn info(&self, group: &str, kv: &KeyValue) -> Result<LeaderInfo> {
        let corrupt = |detail: &str| Error::Corrupt {
            backend: BACKEND,
            group: group.to_owned(),
            detail: detail.to_owned(),
        };
        let value = api::unb64(&kv.value).ok_or_else(|| corrupt("the value is not base64"))?;
        let text = String::from_utf8(value).map_err(|_| corrupt("the value is not UTF-8"))?;
        let mut info = LeaderInfo::from_json(BACKEND, group, &text)?;
        info.fencing_token = u64::try_from(kv.create_revision)
            .ok()
            .filter(|&t| t > 0)
            .ok_or_else(|| corrupt("the key has no creation revision"))?;
        Ok(info)
    }

    /// Revokes a lease that carries no term of ours (a lost race, an unknown outcome), if
    /// time remains; otherwise it expires with its TTL.
    fn discard(&self, lease: i64, deadline: Instant) {
        if Instant::now() >= deadline {
            return;
        }
        if let Err(e) = self.cluster.revoke(lease, "acquire", deadline) {
            log::debug!(
                "etcd: could not revoke an unused lease ({}); it expires with its TTL",
                e.report()
            );
        }
    }

    fn ensure_listener(&self) -> Result<()> {
        self.listener.ensure("le-etcd-watch", |stop| {
            let watcher = watch::Watcher::new(
                self.cluster.clone(),
                self.prefix.clone(),
                self.range_end.clone(),
                self.watchers.clone(),
                stop,
            );
            move || watcher.run()
        })
    }
}

impl std::fmt::Debug for EtcdProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdProvider")
            .field("endpoints", &self.endpoints)
            .field("key_prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The prefix's range end: the prefix with its last byte raised by one (the prefix is ASCII
/// from a set that ends below `0x7f`, so no carry).
fn range_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A lease TTL in whole seconds, rounded up (at least 1).
fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

/// etcd granted a shorter lease than asked: never accepted.
fn short_lease(operation: &'static str, granted: i64, wanted: i64) -> Error {
    Error::Backend {
        backend: BACKEND,
        operation,
        transient: true,
        source: format!("etcd granted a {granted} s lease where {wanted} s were asked").into(),
    }
}

impl Provider for EtcdProvider {
    fn name(&self) -> &'static str {
        BACKEND
    }

    /// Pushes changes (a watch on the prefix); leases end at their TTL, which is rounded up
    /// to whole seconds.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_pushes_changes(true)
            .with_pushes_expiry(true)
    }

    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        validate::group(&request.group)?;
        let group = &request.group;
        let key = self.key(group);
        if let Some(kv) = self.cluster.get(&key, "acquire", deadline)? {
            return Ok(Acquisition::Held(Some(self.info(group, &kv)?)));
        }
        let ttl = ttl_secs(request.ttl);
        let (lease, granted) = self.cluster.grant(ttl, deadline)?;
        if granted < ttl {
            self.discard(lease, deadline);
            return Err(short_lease("acquire", granted, ttl));
        }
        let record =
            LeaderInfo::new(group, &request.participant_id, 0, request.metadata.clone()).to_json();
        let created = match self.cluster.create(&key, &record, lease, deadline) {
            Ok(created) => created,
            Err(e) => {
                // Unknown outcome: revoking also deletes the key if the transaction ran.
                self.discard(lease, deadline);
                return Err(e);
            }
        };
        match created {
            Created::Mine(kv) => {
                let info = self.info(group, &kv)?;
                Ok(Acquisition::Acquired(Lease::new(
                    info,
                    request.ttl,
                    lease.to_string(),
                )))
            }
            // Our own transaction, run twice by a transport retry: the key carries the lease
            // granted for this very campaign.
            Created::Exists(kv) if kv.lease == lease => {
                let info = self.info(group, &kv)?;
                Ok(Acquisition::Acquired(Lease::new(
                    info,
                    request.ttl,
                    lease.to_string(),
                )))
            }
            Created::Exists(kv) => {
                self.discard(lease, deadline);
                Ok(Acquisition::Held(Some(self.info(group, &kv)?)))
            }
            Created::LeaseGone => Err(Error::Backend {
                backend: BACKEND,
                operation: "acquire",
                transient: true,
                source: "the lease expired before the transaction ran".into(),
            }),
        }
    }

    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        let Ok(id) = lease.handle.parse::<i64>() else {
            return Ok(Renewal::Lost(None));
        };
        let ttl = ttl_secs(lease.ttl);
        let (granted, lease_term) = self.cluster.keepalive(id, deadline)?;
        if granted == 0 {
            return Ok(Renewal::Lost(None));
        }
        if granted < ttl {
            return Err(short_lease("renew", granted, ttl));
        }
        let group = &lease.info.group;
        let (kv, read_term) = self
            .cluster
            .get_with_term(&self.key(group), "renew", deadline)?;
        // Both answers must come from one Raft term: a deposed etcd leader that has not noticed
        // (etcd issue 15247) can still refresh a lease that the new leader will expire, and a
        // read served elsewhere would then wrongly confirm it.
        if lease_term != read_term {
            return Err(Error::Backend {
                backend: BACKEND,
                operation: "renew",
                transient: true,
                source: "the keepalive and the check were answered in different Raft terms".into(),
            });
        }
        match kv {
            Some(kv)
                if kv.lease == id
                    && u64::try_from(kv.create_revision).ok() == Some(lease.fencing_token()) =>
            {
                Ok(Renewal::Renewed)
            }
            Some(kv) => Ok(Renewal::Lost(self.info(group, &kv).ok())),
            None => Ok(Renewal::Lost(None)),
        }
    }

    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        if let Ok(token) = i64::try_from(lease.fencing_token()) {
            self.cluster
                .delete_if(&self.key(&lease.info.group), token, deadline)?;
        }
        if let Ok(id) = lease.handle.parse::<i64>() {
            self.cluster.revoke(id, "release", deadline)?;
        }
        Ok(())
    }

    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        validate::group(group)?;
        self.cluster
            .get(&self.key(group), "leader", deadline)?
            .map(|kv| self.info(group, &kv))
            .transpose()
    }

    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        self.ensure_listener()?;
        Ok(Some(self.watchers.add(group, wakeup)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(2)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
        assert_eq!(range_end("leader-election/"), "leader-election0");
        assert_eq!(range_end("a:"), "a;");
    }

    #[test]
    fn debug_shows_no_secret() {
        let p = EtcdProvider::new(
            EtcdOptions::new("http://127.0.0.1:1")
                .auth("app", "Hunter-22")
                .fail_fast(false),
        )
        .unwrap();
        let shown = format!("{p:?} {:?}", p.cluster);
        assert!(
            shown.contains("127.0.0.1:1") && !shown.contains("Hunter-22"),
            "{shown}"
        );
    }
}
