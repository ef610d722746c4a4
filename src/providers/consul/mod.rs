//! The Consul provider: one KV key per group, locked by a TTL session with no health checks;
//! the fencing token is the key's `ModifyIndex` at acquisition; a blocking-query watch thread
//! hands off. The API calls are in `api`, the options in `options`, the watch in `watch`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};
use crate::providers::support::http::HttpClient;
use crate::providers::support::listener::Listener;
use crate::providers::support::watchers::Watchers;
use crate::validate;

mod api;
pub(crate) mod options;
mod sessions;
mod watch;

use api::{Api, BACKEND, KvEntry, Txn, TxnKv};
use options::{CONSUL_MAX_LOCK_DELAY, CONSUL_MAX_SESSION_TTL, ConsulOptions};
use sessions::Session;

/// Elects through Consul's session locks: group `G` is the KV key `<prefix>G`.
///
/// **Sessions.** A campaign that finds the key unlocked creates a session with TTL
/// `max(lease TTL, session_ttl_min)` (whole seconds; Consul accepts 10 s – 24 h), **no health
/// checks** (`"NodeChecks": []` and `"Checks": []`: otherwise the node's `serfHealth` check is
/// attached and a gossip flap would invalidate the session, releasing the lock while its holder
/// lives), `Behavior` `release` (an invalidated session unlocks the key and keeps the last
/// record readable; `delete` would remove it), and a lock-delay equal to the lease TTL (capped
/// at Consul's 60 s; see [`ConsulOptions::lock_delay`]). A session that lost a race is kept for
/// the next campaign of the same participant, renewed first when it might expire within the
/// lease TTL, and destroyed by [`Provider::withdraw`].
///
/// **Lease length.** Consul never invalidates a session sooner than its TTL after the last
/// create or renew it processed (its timer runs for 2 × TTL, on the Raft leader, and a new
/// leader restarts every timer in full). The provider counts on a create or renew only when
/// the moment it was sent plus the session TTL lies at least one lease TTL past the elector's
/// `sent` (a kept session is renewed first otherwise), so the lock cannot lapse before
/// `sent + ttl`; a renew confirms exactly `sent + ttl`, never more than the session promises.
/// A lease TTL under 10 s gets a 10 s session: more, never less, but a crashed leader's lock
/// is then freed only 10–20 s after its last renew, plus the lock-delay.
///
/// **Acquire** reads the key (`GET`, one round trip; a locked key means `Held`), makes sure of
/// a session, and locks the key with a `/v1/txn` `lock` operation whose result carries the
/// key's new `ModifyIndex` — the fencing token — in the same round trip (`?acquire` returns
/// only `true`, and writes carry no `X-Consul-Index`). The value is the leader record without
/// its token (a value cannot contain its own index); readers take the token from the key's
/// `ModifyIndex`. A lock answered "invalid session" gets a new session, never a retry.
///
/// **Fencing tokens** are Raft indexes: every write to any key takes a higher one, so a new
/// lock of the key always yields a token above every earlier one — across keys, deletions and
/// restarts of clients. What resets them: restoring a Consul snapshot (every index goes back
/// to the snapshot's) or rebuilding the cluster from scratch. An operator's plain write to a
/// locked key bumps its `ModifyIndex` without touching the lock: followers then report that
/// index, and the holder's next renew sees the change and ends its term.
///
/// **Renew** is two round trips — Consul cannot renew a session inside a transaction: `PUT
/// /v1/session/renew/<id>`, then `GET` of the key, which must still be locked by this session
/// with the term's `ModifyIndex`. A deleted key, a forced write, or an unlock by someone else
/// ends the term at the next renew. **Release** is one transaction (`check-index` + `unlock`,
/// resending the record: an unlock overwrites the value) and then the session's destroy, in
/// that order (destroying a session that still holds the key would start its lock-delay).
///
/// **Watch.** One thread per provider runs a blocking query on the key prefix and wakes the
/// groups whose key changed (see the `watch` module for index resets and pacing).
///
/// The ACL token goes in the `X-Consul-Token` header only; it and session ids never appear in
/// `Debug`, logs or errors.
///
/// ```no_run
/// use leader_election::{ConsulOptions, ConsulProvider, Elector};
///
/// let provider = ConsulProvider::new(ConsulOptions::new("http://127.0.0.1:8500"))?;
/// let elector = Elector::builder(provider).group("billing").start()?;
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct ConsulProvider {
    api: Api,
    prefix: String,
    session_ttl_min: Duration,
    lock_delay: Option<Duration>,
    watch_wait: Duration,
    server: String,
    watchers: Watchers,
    listener: Listener,
    /// Per (group, participant): a session that lost a race, for the next campaign.
    spares: Mutex<HashMap<(String, String), Session>>,
}

/// How a lock transaction ended.
enum Locked {
    Yes(u64),
    Held,
    Delayed,
    InvalidSession,
}

impl ConsulProvider {
    /// Checks the options and builds the provider; with `fail_fast` (the default) it also asks
    /// the agent for its cluster leader, failing with a clear error if it cannot.
    pub fn new(options: ConsulOptions) -> Result<Self> {
        let base = options.validate()?;
        let http = HttpClient::new(
            BACKEND,
            base.clone(),
            &options.tls,
            options.connect_timeout,
            options.request_timeout,
        )?
        .with_error_code(api::error_code);
        let provider = ConsulProvider {
            api: Api::new(http, options.token, options.datacenter),
            prefix: options.key_prefix,
            session_ttl_min: options.session_ttl_min,
            lock_delay: options.lock_delay,
            watch_wait: options.watch_wait,
            server: options::describe(&base),
            watchers: Watchers::default(),
            listener: Listener::default(),
            spares: Mutex::new(HashMap::new()),
        };
        if options.fail_fast {
            let deadline = Instant::now() + options.connect_timeout + options.request_timeout;
            if !provider.api.has_leader(deadline)? {
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation: "connect",
                    transient: true,
                    source: "the agent knows no cluster leader".into(),
                });
            }
        }
        Ok(provider)
    }

    fn key(&self, group: &str) -> String {
        format!("{}{group}", self.prefix)
    }

    /// The leader record of a locked entry; a record that cannot be read is logged and
    /// reported as an unknown holder.
    fn holder(&self, group: &str, entry: &KvEntry) -> Option<LeaderInfo> {
        entry.holder()?;
        match api::record(group, entry) {
            Ok(info) => Some(info),
            Err(e) => {
                log::warn!("consul: group {group:?} is locked, but: {}", e.report());
                None
            }
        }
    }

    /// The current holder of `group`, read again.
    fn current(
        &self,
        group: &str,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<Option<LeaderInfo>> {
        let entry = self.api.get(&self.key(group), operation, deadline)?;
        Ok(entry.and_then(|e| self.holder(group, &e)))
    }

    /// `lock` of the key with `session`, in one transaction whose result is the new entry.
    fn lock(&self, key: &str, value: &str, session: &str, deadline: Instant) -> Result<Locked> {
        let op = TxnKv {
            verb: "lock",
            key,
            value: Some(value),
            flags: Some(0),
            index: None,
            session: Some(session),
        };
        match self.api.txn(vec![op], "acquire", deadline)? {
            Txn::Done(results) => results
                .iter()
                .find(|e| e.key == key && e.holder() == Some(session))
                .map(|e| Locked::Yes(e.modify_index))
                .ok_or_else(|| Error::Backend {
                    backend: BACKEND,
                    operation: "acquire",
                    transient: true,
                    source: "the lock transaction returned no entry held by our session".into(),
                }),
            Txn::Failed(errors) => {
                let has = |s: &str| errors.iter().any(|e| e.what.contains(s));
                if has("invalid session") {
                    Ok(Locked::InvalidSession)
                } else if has("lock delay") {
                    Ok(Locked::Delayed)
                } else if has("already held") {
                    Ok(Locked::Held)
                } else {
                    Err(api::txn_error("acquire", &errors))
                }
            }
        }
    }
}

impl std::fmt::Debug for ConsulProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulProvider")
            .field("server", &self.server)
            .field("key_prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Provider for ConsulProvider {
    fn name(&self) -> &'static str {
        BACKEND
    }

    /// Lease TTLs up to the lock-delay (60 s by default): Consul can end a session early
    /// whatever its checks (its node leaves the catalog when the local agent restarts or is
    /// force-left; an operator destroys it), and only a lock-delay of at least the lease TTL
    /// keeps another participant from locking the key before the old leader's deadline.
    fn capabilities(&self) -> Capabilities {
        let max = self
            .lock_delay
            .unwrap_or(CONSUL_MAX_LOCK_DELAY)
            .min(CONSUL_MAX_LOCK_DELAY)
            .min(CONSUL_MAX_SESSION_TTL)
            .max(Duration::from_millis(1));
        Capabilities::default()
            .with_pushes_changes(true)
            .with_pushes_expiry(true)
            .with_lease_ttl_range(Duration::from_millis(1), max)
    }

    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        validate::group(&request.group)?;
        let key = self.key(&request.group);
        if let Some(entry) = self.api.get(&key, "acquire", deadline)?
            && let Some(holder) = entry.holder()
            && !self.is_spare(request, holder)
        {
            // Locked by anyone — this participant's earlier term included — but a session of
            // ours whose lock was applied while its answer was lost (that one is taken over).
            return Ok(Acquisition::Held(self.holder(&request.group, &entry)));
        }
        let info = LeaderInfo::new(
            &request.group,
            &request.participant_id,
            0,
            request.metadata.clone(),
        );
        let value = api::encode(&api::record_value(&info));
        let mut session = self.session(request, deadline)?;
        let mut locked = self.lock(&key, &value, &session.id, deadline);
        if matches!(locked, Ok(Locked::InvalidSession)) {
            // Expired or destroyed: permanent for that session. A new one, once.
            session = self.session(request, deadline)?;
            locked = self.lock(&key, &value, &session.id, deadline);
        }
        match locked {
            Ok(Locked::Yes(token)) => {
                let mut info = info;
                info.fencing_token = token;
                Ok(Acquisition::Acquired(Lease::new(
                    info,
                    request.ttl,
                    session.id,
                )))
            }
            Ok(Locked::Held) => {
                self.keep_spare(request, session);
                Ok(Acquisition::Held(self.current(
                    &request.group,
                    "acquire",
                    deadline,
                )?))
            }
            Ok(Locked::Delayed) => {
                self.keep_spare(request, session);
                Ok(Acquisition::Held(None))
            }
            Ok(Locked::InvalidSession) => Err(Error::Backend {
                backend: BACKEND,
                operation: "acquire",
                transient: true,
                source: "a session invalid right after its creation".into(),
            }),
            Err(e) => {
                // The lock may have been applied (a lost response): keep the session, so the
                // next campaign, finding the key locked by it, takes that lock over.
                self.keep_spare(request, session);
                Err(e)
            }
        }
    }

    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        let group = &lease.info.group;
        if !self.api.renew_session(&lease.handle, "renew", deadline)? {
            // Invalidated (expired, destroyed): the lock is gone with it.
            // Certainly lost: a failed read of the new holder must not turn it into an error.
            return Ok(Renewal::Lost(
                self.current(group, "renew", deadline).ok().flatten(),
            ));
        }
        match self.api.get(&self.key(group), "renew", deadline)? {
            Some(e)
                if e.holder() == Some(lease.handle.as_str())
                    && e.modify_index == lease.fencing_token() =>
            {
                Ok(Renewal::Renewed)
            }
            Some(e) if e.holder().is_some_and(|s| s != lease.handle) => {
                Ok(Renewal::Lost(self.holder(group, &e)))
            }
            // Deleted, unlocked, or written over while still locked by us.
            _ => Ok(Renewal::Lost(None)),
        }
    }

    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        let key = self.key(&lease.info.group);
        let value = api::encode(&api::record_value(&lease.info));
        let ops = vec![
            TxnKv {
                verb: "check-index",
                key: &key,
                value: None,
                flags: None,
                index: Some(lease.fencing_token()),
                session: None,
            },
            TxnKv {
                verb: "unlock",
                key: &key,
                value: Some(&value),
                flags: Some(0),
                index: None,
                session: Some(&lease.handle),
            },
        ];
        let still_holds = match self.api.txn(ops, "release", deadline)? {
            Txn::Done(_) => false,
            Txn::Failed(errors) if errors.iter().any(|e| e.what.contains("Permission denied")) => {
                return Err(api::txn_error("release", &errors));
            }
            // The unlock (operation 1) would have worked: our session holds a key written
            // over since; only destroying the session frees it (with its lock-delay).
            Txn::Failed(errors) if errors.iter().all(|e| e.op_index == 0) => true,
            // Not ours any more (deleted, released, expired, taken over): nothing to unlock.
            Txn::Failed(_) => false,
        };
        match self.api.destroy_session(&lease.handle, deadline) {
            Ok(()) => Ok(()),
            Err(e) if still_holds => Err(e),
            Err(e) => {
                log::debug!(
                    "consul: destroying a released term's session failed (it expires on its own): {}",
                    e.report()
                );
                Ok(())
            }
        }
    }

    fn withdraw(&self, group: &str, participant_id: &str, deadline: Instant) -> Result<()> {
        let spare = self
            .spares
            .lock()
            .remove(&(group.to_owned(), participant_id.to_owned()));
        if let Some(s) = spare {
            self.destroy_quietly(&s.id, deadline);
        }
        Ok(())
    }

    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        validate::group(group)?;
        let Some(entry) = self.api.get(&self.key(group), "leader", deadline)? else {
            return Ok(None);
        };
        if entry.holder().is_none() {
            return Ok(None);
        }
        api::record(group, &entry).map(Some)
    }

    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        validate::group(group)?;
        self.listener.ensure("le-consul-watch", |stop| {
            let run = watch::WatchLoop {
                api: self.api.clone(),
                prefix: self.prefix.clone(),
                wait: self.watch_wait,
                watchers: self.watchers.clone(),
                stop,
            };
            move || run.run()
        })?;
        Ok(Some(self.watchers.add(group, wakeup)))
    }
}
