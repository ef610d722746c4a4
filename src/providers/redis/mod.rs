//! The Redis provider: `SET NX PX` leases checked by Lua scripts, pub/sub hand-off.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::{Connection, ErrorKind, RedisError, Script, ServerErrorKind};

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};
use crate::providers::redis::options::{RedisOptions, describe, validate_prefix};
use crate::providers::support::deadline;
use crate::providers::support::listener::{self, Listener, Stop};
use crate::providers::support::tls::{self, Tls};
use crate::providers::support::watchers::Watchers;
use crate::validate;

pub(crate) mod options;

const BACKEND: &str = "redis";

/// Takes the lease if free, with a token above every earlier one — even after Redis lost its
/// data: `max(last token + 1, server time in µs)`.
/// KEYS: lease, token counter. ARGV: TTL in ms, the record without its token.
const ACQUIRE: &str = include_str!("acquire.lua");

/// Extends the lease if it still holds exactly this term's value.
/// KEYS: lease. ARGV: the term's value, TTL in ms.
const RENEW: &str = include_str!("renew.lua");

/// Deletes the lease if it still holds this term's value, and announces it.
/// KEYS: lease. ARGV: the term's value, the events channel, the group.
const RELEASE: &str = include_str!("release.lua");

/// Elects through one Redis key per group.
///
/// Acquire is one Lua script: if the key is absent it takes a fencing token and writes
/// `"<token> <record>"` with `SET NX PX <ttl>`. Renew and release are Lua scripts that act only
/// if the key still holds exactly that value — same holder, same token — one round trip each.
/// Expiry is Redis's own key expiry, on the server's clock: a step of that clock shortens or
/// lengthens leases by the step (keep it slewed by NTP, not stepped). A release publishes on
/// `<prefix>events`, and a listener thread (one per provider, started by the first
/// [`Provider::watch`]) wakes waiting followers at once.
///
/// **Data loss.** If Redis loses its data (a restart without persistence, a flush), the old
/// leader's next renew finds the key gone and it steps down — by its own deadline at the
/// latest, which is less than one TTL after the loss. So a provider that has seen the group's
/// history (its token counter) and then finds it gone does not take the group for one TTL
/// from that discovery: by then the old leader has stepped down. What remains: a participant
/// that never saw the group before the loss (a new process) may take it at once, and the old
/// leader may believe it leads until its next renew; fencing tokens still rise, so the systems
/// the leaders write to can reject the old one. Tokens never go backwards even then: each token is `max(previous + 1, server time
/// in µs)`, so after the counter is lost tokens continue from the server's clock, which is
/// past every earlier token unless that clock was stepped back. The same holds for evictions.
/// Failover to an asynchronously replicated replica can lose a recent acquisition: use one
/// primary, or accept that risk. An eviction policy that may evict keys with a TTL
/// (`volatile-*`, `allkeys-*`) can end a live lease early: run with `noeviction`.
///
/// Passwords, ACL users (`redis://user:password@host`) and TLS (`rediss://`) come through the
/// URL, which never appears in logs, errors or `Debug` output.
///
/// ```no_run
/// use leader_election::{Elector, RedisOptions, RedisProvider};
///
/// let provider = RedisProvider::new(RedisOptions::new("redis://127.0.0.1:6379/"))?;
/// let elector = Elector::builder(provider).group("billing").start()?;
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct RedisProvider {
    client: redis::Client,
    conn: Mutex<Option<Connection>>,
    acquire: Script,
    renew: Script,
    release: Script,
    prefix: String,
    channel: String,
    connect_timeout: Duration,
    command_timeout: Duration,
    watchers: Watchers,
    listener: Listener,
    server: String,
    /// Per group: whether this provider saw its history, and since when it found it gone.
    history: Mutex<HashMap<String, History>>,
}

/// What this provider knows of a group's history (see "Data loss" above).
#[derive(Default, Clone, Copy)]
struct History {
    seen: bool,
    gone_since: Option<Instant>,
}

impl RedisProvider {
    /// Checks the options and builds the provider; with `fail_fast` (the default) it also
    /// connects, failing with a clear error if it cannot.
    pub fn new(options: RedisOptions) -> Result<Self> {
        validate_prefix(&options.key_prefix)?;
        for (field, d) in [
            ("connect_timeout", options.connect_timeout),
            ("command_timeout", options.command_timeout),
        ] {
            validate::duration(field, d)?;
        }
        // Never echo the URL: it may carry a password.
        let bad_url = |_| {
            Error::config(
                "url",
                "is not a valid Redis URL (expected redis://[user][:password@]host[:port][/db] \
                 or rediss://… for TLS)",
            )
        };
        if options.url.contains('#') {
            return Err(Error::config(
                "url",
                "must not have a fragment: choose certificate checks with RedisOptions::tls \
                 (e.g. Tls::DangerAcceptInvalidCerts instead of #insecure)",
            ));
        }
        if options.url.starts_with("rediss:") {
            tls::ensure_process_default_provider();
        }
        let client = match &options.tls {
            Tls::Verify => redis::Client::open(options.url.as_str()).map_err(bad_url)?,
            Tls::DangerAcceptInvalidCerts => {
                redis::Client::open(format!("{}#insecure", options.url)).map_err(bad_url)?
            }
            Tls::VerifyWithCa(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::config("ca_file", format!("cannot read {}: {e}", path.display()))
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::open(options.url.as_str()).map_err(bad_url)?;
                redis::Client::build_with_tls(options.url.as_str(), certs).map_err(|_| {
                    Error::config(
                        "ca_file",
                        format!("{} holds no usable PEM certificate", path.display()),
                    )
                })?
            }
        };
        let provider = RedisProvider {
            client,
            conn: Mutex::new(None),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            channel: format!("{}events", options.key_prefix),
            prefix: options.key_prefix,
            connect_timeout: options.connect_timeout,
            command_timeout: options.command_timeout,
            watchers: Watchers::default(),
            listener: Listener::default(),
            server: describe(&options.url),
            history: Mutex::new(HashMap::new()),
        };
        if options.fail_fast {
            let deadline = Instant::now() + options.connect_timeout + options.command_timeout;
            provider.with_conn("connect", deadline, |c| {
                redis::cmd("PING").query::<String>(c).map(drop)
            })?;
        }
        Ok(provider)
    }

    fn lease_key(&self, group: &str) -> String {
        format!("{}{{{group}}}", self.prefix)
    }

    fn token_key(&self, group: &str) -> String {
        format!("{}{{{group}}}:token", self.prefix)
    }

    /// Runs `f` on the provider's connection (connecting first if needed) with socket timeouts
    /// bounded by `deadline`; a connection that failed is dropped. If a reused connection
    /// turns out dead (the server restarted since), `f` runs once more on a new one: every
    /// script here is safe to repeat.
    fn with_conn<T>(
        &self,
        operation: &'static str,
        deadline: Instant,
        mut f: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        // Electors sharing this provider take turns; none waits past its own deadline.
        let mut slot = self.conn.try_lock_until(deadline).ok_or(Error::Timeout {
            backend: BACKEND,
            operation,
            timeout: self.command_timeout,
        })?;
        let mut retried = false;
        loop {
            let reused = slot.is_some();
            if slot.is_none() {
                let timeout = deadline::clamp(self.connect_timeout, deadline);
                let conn = self
                    .client
                    .get_connection_with_timeout(timeout)
                    .map_err(|e| map_err(operation, e, timeout))?;
                *slot = Some(conn);
            }
            let Some(conn) = slot.as_mut() else {
                return Err(Error::ShutDown);
            };
            let timeout = deadline::clamp(self.command_timeout, deadline);
            let result = conn
                .set_read_timeout(Some(timeout))
                .and_then(|()| conn.set_write_timeout(Some(timeout)))
                .and_then(|()| f(conn));
            match result {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let broken = e.is_io_error()
                        || e.is_timeout()
                        || e.is_connection_dropped()
                        || e.is_unrecoverable_error();
                    if broken {
                        *slot = None;
                    }
                    let stale = broken && !e.is_timeout() && reused;
                    if stale && !retried && Instant::now() < deadline {
                        log::debug!("redis: connection was dead ({e}); reconnecting once");
                        retried = true;
                        continue;
                    }
                    return Err(map_err(operation, e, timeout));
                }
            }
        }
    }

    /// Parses a lease value `"<token> <record>"`.
    fn parse(&self, group: &str, value: &str) -> Result<LeaderInfo> {
        let corrupt = |detail: String| Error::Corrupt {
            backend: BACKEND,
            group: group.to_owned(),
            detail,
        };
        let (token, record) = value
            .split_once(' ')
            .ok_or_else(|| corrupt("expected \"<token> <record>\"".into()))?;
        let token: u64 = token
            .parse()
            .map_err(|_| corrupt(format!("bad token {token:?}")))?;
        let mut info = LeaderInfo::from_json(BACKEND, group, record)?;
        info.fencing_token = token;
        Ok(info)
    }

    fn ensure_listener(&self) -> Result<()> {
        self.listener.ensure("le-redis-sub", |stop| {
            let ctx = Subscriber {
                client: self.client.clone(),
                channel: self.channel.clone(),
                watchers: self.watchers.clone(),
                stop,
                connect_timeout: self.connect_timeout,
            };
            move || ctx.run()
        })
    }
}

impl std::fmt::Debug for RedisProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisProvider")
            .field("server", &self.server)
            .field("key_prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn map_err(operation: &'static str, e: RedisError, timeout: Duration) -> Error {
    if e.is_timeout() {
        return Error::Timeout {
            backend: BACKEND,
            operation,
            timeout,
        };
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        return Error::Unavailable {
            backend: BACKEND,
            source: Box::new(e),
        };
    }
    let transient = matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ClusterDown
        )
    ) || matches!(e.code(), Some("LOADING" | "BUSY" | "READONLY"));
    Error::Backend {
        backend: BACKEND,
        operation,
        transient,
        source: Box::new(e),
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Provider for RedisProvider {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_pushes_changes(true)
    }

    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        validate::group(&request.group)?;
        // The record without its token (Lua prefixes the token it picks).
        let record = LeaderInfo::new(
            &request.group,
            &request.participant_id,
            0,
            request.metadata.clone(),
        )
        .to_json();
        let known = self
            .history
            .lock()
            .get(&request.group)
            .copied()
            .unwrap_or_default();
        let expect_history = match known.gone_since {
            // Found gone less than one TTL ago: the old leader may still believe it leads.
            Some(t) if t.elapsed() < request.ttl => return Ok(Acquisition::Held(None)),
            Some(_) => false,
            None => known.seen,
        };
        let (acquired, value, left_ms): (i64, String, i64) =
            self.with_conn("acquire", deadline, |c| {
                self.acquire
                    .key(self.lease_key(&request.group))
                    .key(self.token_key(&request.group))
                    .arg(ttl_ms(request.ttl))
                    .arg(&record)
                    .arg(if expect_history { "1" } else { "0" })
                    .invoke(c)
            })?;
        let mut history = self.history.lock();
        let entry = history.entry(request.group.clone()).or_default();
        if acquired == 2 {
            log::warn!(
                "redis: the history of group {:?} is gone (Redis lost its data?); not taking it \
                 for one lease TTL ({:?}) so that the old leader has stepped down",
                request.group,
                request.ttl
            );
            entry.gone_since = Some(Instant::now());
            return Ok(Acquisition::Held(None));
        }
        *entry = History {
            seen: true,
            gone_since: None,
        };
        drop(history);
        let mut info = self.parse(&request.group, &value)?;
        if acquired == 1 {
            Ok(Acquisition::Acquired(Lease::new(info, request.ttl, value)))
        } else {
            // PTTL: -1 (no expiry) or -2 (gone meanwhile) say nothing useful.
            info.expires_in = u64::try_from(left_ms).ok().map(Duration::from_millis);
            Ok(Acquisition::Held(Some(info)))
        }
    }

    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        let group = &lease.info.group;
        let (renewed, current): (i64, String) = self.with_conn("renew", deadline, |c| {
            self.renew
                .key(self.lease_key(group))
                .arg(&lease.handle)
                .arg(ttl_ms(lease.ttl))
                .invoke(c)
        })?;
        if renewed == 1 {
            Ok(Renewal::Renewed)
        } else if current.is_empty() {
            Ok(Renewal::Lost(None))
        } else {
            Ok(Renewal::Lost(self.parse(group, &current).ok()))
        }
    }

    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        let group = &lease.info.group;
        self.with_conn("release", deadline, |c| {
            self.release
                .key(self.lease_key(group))
                .arg(&lease.handle)
                .arg(&self.channel)
                .arg(group)
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        validate::group(group)?;
        let value: Option<String> = self.with_conn("leader", deadline, |c| {
            redis::cmd("GET").arg(self.lease_key(group)).query(c)
        })?;
        value.map(|v| self.parse(group, &v)).transpose()
    }

    /// Waits (up to the connect timeout) for the pub/sub listener to be subscribed.
    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        self.ensure_listener()?;
        let within = self.connect_timeout;
        listener::watch(BACKEND, &self.watchers, group, wakeup, within)
    }
}

/// The pub/sub thread's state.
struct Subscriber {
    client: redis::Client,
    channel: String,
    watchers: Watchers,
    stop: Stop,
    connect_timeout: Duration,
}

impl Subscriber {
    fn run(self) {
        listener::run(BACKEND, &self.stop, &self.watchers, |subscribed| {
            let mut conn = self
                .client
                .get_connection_with_timeout(self.connect_timeout)?;
            conn.set_write_timeout(Some(self.connect_timeout))?;
            let mut pubsub = conn.as_pubsub();
            pubsub.set_read_timeout(Some(Duration::from_millis(500)))?;
            pubsub.subscribe(&self.channel)?;
            subscribed();
            let mut last_ping = Instant::now();
            while !self.stop.is_stopped() {
                // A connection that died silently would just look quiet: ping it now and then
                // (a reply that does not come within the read timeout ends this session).
                if last_ping.elapsed() >= Duration::from_secs(5) {
                    pubsub.ping::<redis::Value>()?;
                    last_ping = Instant::now();
                }
                match pubsub.get_message() {
                    Ok(msg) => {
                        if let Ok(group) = msg.get_payload::<String>() {
                            self.watchers.wake(&group);
                        }
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
    }
}
