//! The PostgreSQL provider: one row per group, expiry on the database's clock, LISTEN/NOTIFY
//! hand-off.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use postgres::Statement;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::{Provider, Wakeup, Watch};
use crate::providers::postgres::options::{PostgresOptions, describe};
use crate::providers::support::deadline;
use crate::providers::support::listener::{self, Listener};
use crate::providers::support::watchers::Watchers;
use crate::validate;

mod listen;
pub(crate) mod options;
mod sql;
mod sslmode;

/// Reads `sslmode` out of a connection string (for the property tests).
#[cfg(test)]
pub(crate) fn sslmode_of(conn: &str) {
    let _ = sslmode::take_sslmode(conn);
}

use listen::ListenCtx;
use sql::{Conn, Manager, PoolError, QuietErrors, Sql};

const BACKEND: &str = "postgres";

/// Elects through one row per group in a PostgreSQL table.
///
/// The row holds the leader, its fencing token and an expiry time. Every decision about expiry
/// is made by the database on its own clock (`clock_timestamp()`), in a single statement, so
/// client clocks never matter; a step of the database server's wall clock, though, shortens or
/// lengthens leases by the step (keep it slewed by NTP, not stepped). The token is the row's counter, incremented by each new
/// acquisition; rows are never deleted, so tokens keep rising for the life of the table.
/// Releasing a lease sends `NOTIFY` on a channel named after the table, and a listener thread
/// (one per provider, started by the first [`Provider::watch`]) wakes waiting followers at
/// once. Acquire, renew and release are one round trip each, on statements prepared per pooled
/// connection.
///
/// Statements are bounded by `statement_timeout` (set at connect), and the socket by
/// `tcp_user_timeout` (unacknowledged sends) and keepalives probing every second (a lost
/// reply), so a dead network ends a call within about the command timeout. A server that is
/// alive but frozen holds the call until it resumes; the elector's own deadline still makes
/// its leader step down on time.
///
/// ```no_run
/// use leader_election::{Elector, PostgresOptions, PostgresProvider};
///
/// let provider = PostgresProvider::new(
///     PostgresOptions::new("postgres://app:secret@127.0.0.1/app").table("leases"),
/// )?;
/// let elector = Elector::builder(provider).group("billing").start()?;
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct PostgresProvider {
    pool: r2d2::Pool<Manager>,
    sql: Arc<Sql>,
    config: postgres::Config,
    tls: MakeRustlsConnect,
    command_timeout: Duration,
    watchers: Watchers,
    listener: Listener,
    server: String,
    /// Sends the cancels armed by `cancel_at` (its own thread: a cancel to a dead server may
    /// block for the connect timeout, and must not hold up the pool's connection builder).
    timer: scheduled_thread_pool::ScheduledThreadPool,
    auth_failed: Arc<AtomicBool>,
}

impl PostgresProvider {
    /// Checks the options and builds the provider; with `fail_fast` (the default) it also
    /// connects and creates the table, failing with a clear error if it cannot.
    pub fn new(options: PostgresOptions) -> Result<Self> {
        validate::sql_identifier("schema", &options.schema)?;
        validate::sql_identifier("table", &options.table)?;
        validate::duration("command_timeout", options.command_timeout)?;
        validate::duration("connect_timeout", options.connect_timeout)?;
        if options.pool_size == 0 {
            return Err(Error::config("pool_size", "must be at least 1"));
        }
        let (conn_str, sslmode) = sslmode::take_sslmode(&options.url)?;
        // Never echo the string: it may carry a password.
        let mut config = postgres::Config::from_str(&conn_str).map_err(|_| {
            Error::config(
                "url",
                "is not a valid PostgreSQL connection string \
                 (expected postgres://user:password@host:port/database?options or key=value pairs)",
            )
        })?;
        let timeout_ms = options.command_timeout.as_millis().max(1);
        config
            .connect_timeout(options.connect_timeout)
            .tcp_user_timeout(options.command_timeout)
            // A reply lost in a black-holed network leaves nothing unacknowledged for
            // tcp_user_timeout to notice: keepalives end such a wait after about
            // command_timeout / 2 + 3 s.
            .keepalives(true)
            .keepalives_idle((options.command_timeout / 2).max(Duration::from_secs(1)))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3);
        let mode = sslmode::client_mode(
            sslmode,
            &config,
            &options.tls,
            options.allow_plaintext_password,
        )?;
        config.ssl_mode(mode);
        // Ours go after the user's own `options`, so they win for these two settings only.
        let ours = format!(
            "-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms}"
        );
        let all = match config.get_options() {
            Some(user) if !user.trim().is_empty() => format!("{user} {ours}"),
            _ => ours,
        };
        config.options(&all);
        if config.get_application_name().is_none() {
            config.application_name("leader-election");
        }
        let tls = MakeRustlsConnect::new(options.tls.client_config()?);
        let sql = Arc::new(Sql::new(&options.schema, &options.table));
        let auth_failed = Arc::new(AtomicBool::new(false));
        let manager = Manager {
            config: config.clone(),
            tls: tls.clone(),
            sql: sql.clone(),
            table_ready: Arc::new(AtomicBool::new(!options.create_table)),
            auth_failed: auth_failed.clone(),
        };
        let server = describe(&options.url);
        if options.fail_fast {
            // Connect once outside the pool to get a typed error (r2d2's are strings).
            manager
                .connect_conn()
                .map_err(|e| map_err("connect", e, options.connect_timeout))?;
        }
        // One pool thread, and no lingering after the provider is dropped (r2d2's default
        // pool keeps three threads until the next scheduled reaping, up to 30 s later).
        let threads = scheduled_thread_pool::ScheduledThreadPool::builder()
            .num_threads(1)
            .thread_name_pattern("le-pg-pool-{}")
            .on_drop_behavior(scheduled_thread_pool::OnPoolDropBehavior::DiscardPendingScheduled)
            .build();
        let pool = r2d2::Pool::builder()
            .thread_pool(Arc::new(threads))
            .max_size(options.pool_size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            .connection_timeout(options.connect_timeout + options.command_timeout)
            .error_handler(Box::new(QuietErrors))
            .build_unchecked(manager);
        Ok(PostgresProvider {
            pool,
            sql,
            config,
            tls,
            command_timeout: options.command_timeout,
            watchers: Watchers::default(),
            listener: Listener::default(),
            server,
            timer: scheduled_thread_pool::ScheduledThreadPool::builder()
                .num_threads(1)
                .thread_name_pattern("le-pg-cancel-{}")
                .on_drop_behavior(
                    scheduled_thread_pool::OnPoolDropBehavior::DiscardPendingScheduled,
                )
                .build(),
            auth_failed,
        })
    }

    fn conn(
        &self,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<r2d2::PooledConnection<Manager>> {
        let wait = deadline::time_left(deadline);
        // r2d2 reports a timeout, with the last connection error when there was one.
        self.pool.get_timeout(wait).map_err(|e| {
            let source = Box::new(PoolError(format!("{operation}: {e}")));
            if self.pool.state().connections == 0 && self.auth_failed.load(Ordering::SeqCst) {
                // Wrong credentials or database: permanent, and said so.
                Error::Backend {
                    backend: BACKEND,
                    operation,
                    transient: false,
                    source,
                }
            } else {
                Error::Unavailable {
                    backend: BACKEND,
                    source,
                }
            }
        })
    }

    /// Runs the statement `pick` selects with `params` on a pooled connection. A pooled
    /// connection found dead (the server restarted since it was opened) is discarded and the
    /// statement retried on another, up to the pool's size: every statement here is safe to
    /// repeat.
    fn query(
        &self,
        operation: &'static str,
        deadline: Instant,
        pick: fn(&Conn) -> &Statement,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        let mut attempts = self.pool.max_size() + 1;
        loop {
            let mut conn = self.conn(operation, deadline)?;
            let stmt = pick(&conn).clone();
            let canceller = self.cancel_at(&conn, deadline);
            let result = conn.client.query(&stmt, params);
            if canceller.is_some_and(Canceller::disarm) {
                conn.poisoned = true;
            }
            match result {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    attempts -= 1;
                    if conn.client.is_closed() && attempts > 0 && Instant::now() < deadline {
                        log::debug!("postgres: pooled connection was dead ({e}); retrying");
                        continue;
                    }
                    return Err(map_err(operation, e, self.command_timeout));
                }
            }
        }
    }

    /// Arms a cancel of the statement about to run on `conn` at `deadline`, when the deadline
    /// comes before the server's own `statement_timeout` would end it: a call never runs past
    /// its caller's deadline on a live server. `None` when the statement timeout comes first.
    fn cancel_at(&self, conn: &Conn, deadline: Instant) -> Option<Canceller> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left >= self.command_timeout {
            return None;
        }
        let fired = Arc::new(parking_lot::Mutex::new(Some(false)));
        let (token, tls, state) = (conn.client.cancel_token(), self.tls.clone(), fired.clone());
        let job = self.timer.execute_after(left, move || {
            // Held while the cancel request goes out, so `disarm` waits for it.
            let mut state = state.lock();
            if let Some(fired) = state.as_mut() {
                *fired = true;
                if let Err(e) = token.cancel_query(tls) {
                    log::debug!("postgres: cancelling a statement at its deadline failed: {e}");
                }
            }
        });
        Some(Canceller { job, fired })
    }

    /// Starts the LISTEN thread once.
    fn ensure_listener(&self) -> Result<()> {
        self.listener.ensure("le-pg-listen", |stop| {
            let ctx = ListenCtx {
                config: self.config.clone(),
                tls: self.tls.clone(),
                channel: self.sql.channel.clone(),
                watchers: self.watchers.clone(),
                stop,
            };
            move || ctx.run()
        })
    }
}

/// A cancel armed by [`PostgresProvider::cancel_at`].
struct Canceller {
    job: scheduled_thread_pool::JobHandle,
    /// `Some(fired)` while armed; `None` once disarmed.
    fired: Arc<parking_lot::Mutex<Option<bool>>>,
}

impl Canceller {
    /// Disarms it; returns whether the cancel was sent (the connection must then be dropped).
    fn disarm(self) -> bool {
        self.job.cancel();
        self.fired.lock().take().unwrap_or(false)
    }
}

impl std::fmt::Debug for PostgresProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvider")
            .field("server", &self.server)
            .field("channel", &self.sql.channel)
            .finish_non_exhaustive()
    }
}

/// Maps a client error: connection trouble and server-side cancellations are transient;
/// authentication, permission and SQL errors are permanent.
fn map_err(operation: &'static str, e: postgres::Error, timeout: Duration) -> Error {
    let Some(code) = e.code().map(|c| c.code().to_owned()) else {
        if e.is_closed() || std::error::Error::source(&e).is_some() {
            return Error::Unavailable {
                backend: BACKEND,
                source: Box::new(e),
            };
        }
        return Error::Backend {
            backend: BACKEND,
            operation,
            transient: true,
            source: Box::new(e),
        };
    };
    if code == "57014" {
        // query_canceled: our statement_timeout fired.
        return Error::Timeout {
            backend: BACKEND,
            operation,
            timeout,
        };
    }
    let transient = matches!(code.get(..2), Some("08" | "40" | "53" | "55" | "57" | "58"));
    Error::Backend {
        backend: BACKEND,
        operation,
        transient,
        source: Box::new(e),
    }
}

fn to_i64(field: &'static str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::config(field, "is too large for PostgreSQL's bigint"))
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Builds a leader record from `(participant_id, fencing_token, acquired_at_ms, metadata)`
/// columns starting at `at`.
fn info_from_row(group: &str, row: &postgres::Row, at: usize) -> Result<Option<LeaderInfo>> {
    let participant: Option<String> = column(group, row, at)?;
    let Some(participant_id) = participant else {
        return Ok(None);
    };
    let token: i64 = column(group, row, at + 1)?;
    let since_ms: Option<i64> = column(group, row, at + 2)?;
    let metadata: String = column(group, row, at + 3)?;
    let metadata = serde_json::from_str(&metadata).map_err(|e| Error::Corrupt {
        backend: BACKEND,
        group: group.to_owned(),
        detail: format!("metadata is not a JSON object of strings: {e}"),
    })?;
    let token = u64::try_from(token).map_err(|_| Error::Corrupt {
        backend: BACKEND,
        group: group.to_owned(),
        detail: format!("negative fencing token {token}"),
    })?;
    let mut info = LeaderInfo::new(group, participant_id, token, metadata);
    let since_ms = u64::try_from(since_ms.unwrap_or(0)).unwrap_or(0);
    info.since = UNIX_EPOCH
        .checked_add(Duration::from_millis(since_ms))
        .unwrap_or(UNIX_EPOCH);
    Ok(Some(info))
}

/// Column `at` of `row`, or [`Error::Corrupt`] when the table's column has another type (a
/// table created by someone else) — never a panic.
fn column<'a, T: postgres::types::FromSql<'a>>(
    group: &str,
    row: &'a postgres::Row,
    at: usize,
) -> Result<T> {
    row.try_get(at).map_err(|e| Error::Corrupt {
        backend: BACKEND,
        group: group.to_owned(),
        detail: format!("column {at} of the table: {e}"),
    })
}

impl Provider for PostgresProvider {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default().with_pushes_changes(true)
    }

    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        validate::group(&request.group)?;
        let metadata = serde_json::to_string(&request.metadata).unwrap_or_else(|_| "{}".into());
        let rows = self.query(
            "acquire",
            deadline,
            |c| &c.acquire,
            &[
                &request.group,
                &request.participant_id,
                &ttl_ms(request.ttl),
                &metadata,
            ],
        )?;
        let Some(row) = rows.first() else {
            return Ok(Acquisition::Held(None));
        };
        let acquired: bool = column(&request.group, row, 0)?;
        let info = info_from_row(&request.group, row, 1)?;
        match (acquired, info) {
            (true, Some(info)) => {
                let handle = info.fencing_token.to_string();
                Ok(Acquisition::Acquired(Lease::new(info, request.ttl, handle)))
            }
            (_, mut info) => {
                let left_ms: Option<i64> = column(&request.group, row, 5)?;
                if let Some(info) = &mut info {
                    info.expires_in = left_ms
                        .and_then(|ms| u64::try_from(ms).ok())
                        .map(Duration::from_millis);
                }
                Ok(Acquisition::Held(info))
            }
        }
    }

    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        let token = to_i64("fencing_token", lease.info.fencing_token)?;
        let rows = self.query(
            "renew",
            deadline,
            |c| &c.renew,
            &[
                &lease.info.group,
                &lease.info.participant_id,
                &token,
                &ttl_ms(lease.ttl),
            ],
        )?;
        let Some(row) = rows.first() else {
            return Err(Error::Backend {
                backend: BACKEND,
                operation: "renew",
                transient: false,
                source: "the renew statement returned no row".into(),
            });
        };
        if column::<bool>(&lease.info.group, row, 0)? {
            Ok(Renewal::Renewed)
        } else {
            Ok(Renewal::Lost(info_from_row(&lease.info.group, row, 1)?))
        }
    }

    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        let token = to_i64("fencing_token", lease.info.fencing_token)?;
        self.query(
            "release",
            deadline,
            |c| &c.release,
            &[
                &lease.info.group,
                &lease.info.participant_id,
                &token,
                &self.sql.channel,
            ],
        )?;
        Ok(())
    }

    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        validate::group(group)?;
        let rows = self.query("leader", deadline, |c| &c.leader, &[&group])?;
        match rows.first() {
            Some(row) => info_from_row(group, row, 0),
            None => Ok(None),
        }
    }

    /// Waits (up to the connect timeout) for the LISTEN connection to be listening.
    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        self.ensure_listener()?;
        let within = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(5));
        listener::watch(BACKEND, &self.watchers, group, wakeup, within)
    }
}
