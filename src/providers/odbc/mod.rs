//! The ODBC provider: one lease row per group in SQL Server, MySQL/MariaDB or PostgreSQL,
//! through the system's ODBC driver manager (unixODBC) and the server's ODBC driver, with
//! connections pooled by r2d2 and every call run on a call thread the caller waits for no
//! longer than its deadline.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::lease::{AcquireRequest, Acquisition, LeaderInfo, Lease, Renewal};
use crate::provider::Provider;
use crate::validate;

mod calls;
mod conn;
mod connstr;
mod errors;
mod exec;
pub(crate) mod options;
mod record;
mod sql;

use calls::{Calls, Inner};
use conn::{BACKEND, Conn, Manager, QuietErrors};
use connstr::ConnString;
use errors::Diag;
use exec::{Op, Values};
use options::{Dialect, OdbcOptions};
use record::{ascii_json, corrupt, info, to_i64, ttl_units};
use sql::Statements;

/// Elects through one row per group in a SQL Server, MySQL/MariaDB or PostgreSQL table,
/// reached through ODBC (feature `odbc`; links the system's unixODBC).
///
/// The row holds the leader, its fencing token and an expiry time; every decision about expiry
/// is made by the database on its own clock, in the statement that takes or extends the lease
/// (`SYSUTCDATETIME()`, `UTC_TIMESTAMP(6)`, `clock_timestamp()`), so client clocks never
/// matter — a step of the server's wall clock does (keep it slewed by NTP, not stepped). The
/// token is the row's counter, incremented by each new term; rows are never deleted, so tokens
/// keep rising for the life of the table (deleting a row would restart its group at 1).
///
/// Acquire is one atomic upsert per dialect — `MERGE … WITH (HOLDLOCK)` on SQL Server,
/// `INSERT … ON DUPLICATE KEY UPDATE` on MySQL/MariaDB, `INSERT … ON CONFLICT DO UPDATE` on
/// PostgreSQL — which takes the row only if it is free or expired, so of any number of racing
/// sessions exactly one wins under each server's default isolation. Acquire, renew and release
/// are one round trip each (a statement or a batch), except on MySQL, which has no
/// `RETURNING`: there an acquire reads the row back (MariaDB ≥ 10.5 needs no second trip), and
/// a renew that fails reads who holds the group.
///
/// Calls are bounded three ways: the server's own limits (the ODBC query timeout, whole
/// seconds rounded up, on SQL Server and PostgreSQL; the session's lock-wait and statement
/// limits on MySQL/MariaDB, whose driver ignores the query timeout), the login timeout for new
/// connections, and the caller's deadline, which the caller never waits past: each call runs
/// on one of the provider's call threads (one per pooled connection), and a call still
/// running at its deadline is abandoned to finish there. A pooled connection found dead is
/// replaced and the call retried once.
///
/// There is no push channel through ODBC: followers poll every retry interval. With the
/// PostgreSQL dialect the table is the native `PostgresProvider`'s (same columns),
/// and a release here sends its `NOTIFY`, so the two providers can share a group.
///
/// ```no_run
/// use leader_election::{Elector, OdbcProvider};
///
/// let provider = OdbcProvider::sql_server(
///     "Driver={ODBC Driver 18 for SQL Server};Server=db.internal;Database=app;UID=app;PWD=…",
/// )?;
/// let elector = Elector::builder(provider).group("billing").start()?;
/// # Ok::<(), leader_election::Error>(())
/// ```
pub struct OdbcProvider {
    inner: Arc<Inner>,
    calls: Calls,
    server: String,
}

impl OdbcProvider {
    /// Checks the options — identifiers and timeouts first, before anything reaches a driver —
    /// and the driver's name, then builds the provider; with `fail_fast` (the default) it also
    /// connects, creates the table and checks every statement against the server.
    pub fn new(options: OdbcOptions) -> Result<Self> {
        if let Some(schema) = &options.schema {
            validate::sql_identifier("schema", schema)?;
        }
        validate::sql_identifier("table", &options.table)?;
        validate::duration("command_timeout", options.command_timeout)?;
        validate::duration("connect_timeout", options.connect_timeout)?;
        if options.pool_size == 0 {
            return Err(Error::config("pool_size", "must be at least 1"));
        }
        let conn = options.conn.clone();
        if !conn.is_valid() {
            // Never echo the string: it may carry a password.
            return Err(Error::config(
                "connection_string",
                "is not an ODBC connection string (key=value attributes separated by ';', \
                 values holding ';' in braces: PWD={a;b})",
            ));
        }
        let env = odbc_api::environment().map_err(|e| Error::Backend {
            backend: BACKEND,
            operation: "connect",
            transient: false,
            source: Box::new(Diag::plain(format!(
                "cannot set up the ODBC environment (is unixODBC installed?): {e}"
            ))),
        })?;
        check_driver(env, &conn)?;
        let dialect = match options
            .dialect
            .or_else(|| conn.driver().and_then(Dialect::from_driver_name))
        {
            Some(d) => d,
            None if options.fail_fast => detect_dialect(env, &conn, &options)?,
            None => {
                return Err(Error::config(
                    "dialect",
                    "cannot be told from the connection string (its Driver= names no known \
                     driver): set it with OdbcOptions::dialect (or ?dialect= in a URL)",
                ));
            }
        };
        let sql = Arc::new(Statements::new(
            dialect,
            options.schema.as_deref(),
            &options.table,
        ));
        let auth_failed = Arc::new(AtomicBool::new(false));
        let manager = Manager {
            conn: conn.clone(),
            sql: sql.clone(),
            login_timeout: options.connect_timeout,
            command_timeout: options.command_timeout,
            mariadb_returning: options.mariadb_returning,
            create_table: options.create_table,
            ready: Arc::new(AtomicBool::new(false)),
            auth_failed: auth_failed.clone(),
        };
        if options.fail_fast {
            // Connect once outside the pool to get a typed error (r2d2's are strings).
            manager
                .connect_conn()
                .map_err(|d| d.into_error("connect", options.connect_timeout))?;
        }
        // One pool thread, and no lingering after the provider is dropped.
        let threads = scheduled_thread_pool::ScheduledThreadPool::builder()
            .num_threads(1)
            .thread_name_pattern("le-odbc-pool-{}")
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
        let inner = Arc::new(Inner {
            pool,
            channel: sql::pg_channel(options.schema.as_deref(), &options.table),
            sql,
            conn: conn.clone(),
            command_timeout: options.command_timeout,
            auth_failed,
        });
        let calls = Calls::spawn(options.pool_size)?;
        Ok(OdbcProvider {
            inner,
            calls,
            server: conn.describe(),
        })
    }

    /// Shorthand for `OdbcProvider::new(OdbcOptions::sql_server(connection_string))`: SQL
    /// Server (or Azure SQL) with the other options at their defaults.
    pub fn sql_server(connection_string: impl Into<String>) -> Result<Self> {
        OdbcProvider::new(OdbcOptions::sql_server(connection_string))
    }

    /// The dialect in use (given, or detected from the driver or server).
    pub fn dialect(&self) -> Dialect {
        self.inner.sql.dialect
    }
}

/// A `Driver=` naming a driver the driver manager does not know is a configuration error,
/// and says which drivers it does know (unixODBC's own message names neither).
fn check_driver(env: &odbc_api::Environment, conn: &ConnString) -> Result<()> {
    let Some(driver) = conn.driver() else {
        return Ok(());
    };
    if driver.contains('/') || driver.contains('\\') {
        if std::path::Path::new(driver).exists() {
            return Ok(());
        }
        return Err(Error::config(
            "connection_string",
            format!("names the ODBC driver library {driver:?}, which does not exist"),
        ));
    }
    let Ok(known) = env.drivers() else {
        return Ok(()); // cannot tell: let the connect report it
    };
    if known
        .iter()
        .any(|d| d.description.eq_ignore_ascii_case(driver))
    {
        return Ok(());
    }
    let mut names: Vec<&str> = known.iter().map(|d| d.description.as_str()).collect();
    names.sort_unstable();
    let registry = match std::env::var("ODBCSYSINI") {
        Ok(dir) => format!("{dir}/odbcinst.ini (ODBCSYSINI)"),
        Err(_) => "the system's odbcinst.ini (see `odbcinst -j`)".into(),
    };
    Err(Error::config(
        "connection_string",
        format!(
            "names the ODBC driver {driver:?}, which is not installed: {registry} lists {}",
            if names.is_empty() {
                "no drivers".to_owned()
            } else {
                names.join(", ")
            }
        ),
    ))
}

/// Connects once to ask the server what it is (for a `DSN=` string without a dialect).
fn detect_dialect(
    env: &'static odbc_api::Environment,
    conn: &ConnString,
    options: &OdbcOptions,
) -> Result<Dialect> {
    let c = env
        .connect_with_connection_string(
            &conn.text,
            odbc_api::ConnectionOptions {
                login_timeout_sec: Some(conn::ceil_secs(options.connect_timeout)),
                packet_size: None,
            },
        )
        .map_err(|e| Diag::new(&e, conn).into_error("connect", options.connect_timeout))?;
    let name = c
        .database_management_system_name()
        .map_err(|e| Diag::new(&e, conn).into_error("connect", options.connect_timeout))?;
    // Closed through the wrapper, which never panics on a failed disconnect.
    drop(Conn::new(c));
    Dialect::from_dbms_name(&name).ok_or_else(|| {
        Error::config(
            "dialect",
            format!("the server calls itself {name:?}, which is no dialect this provider speaks"),
        )
    })
}

impl std::fmt::Debug for OdbcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OdbcProvider")
            .field("server", &self.server)
            .field("dialect", &self.inner.sql.dialect)
            .finish_non_exhaustive()
    }
}

impl Provider for OdbcProvider {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        validate::group(&request.group)?;
        validate::participant_id(&request.participant_id)?;
        validate::duration("lease_ttl", request.ttl)?;
        let values = Values {
            group: request.group.clone(),
            participant: request.participant_id.clone(),
            token: 0,
            ttl: ttl_units(request.ttl, self.inner.sql.ttl_in_ms),
            metadata: ascii_json(&request.metadata),
            // Positive and never 0, the column's value before any MySQL acquire.
            nonce: i64::try_from(crate::util::random_u64() >> 1)
                .unwrap_or(1)
                .max(1),
        };
        let answer = self
            .calls
            .call(&self.inner, "acquire", deadline, Op::Acquire(values))?;
        let row = match answer.row {
            Some(row) => row,
            None if answer.won => {
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation: "acquire",
                    transient: true,
                    source: "the acquire statement returned no row".into(),
                });
            }
            None => return Ok(Acquisition::Held(None)),
        };
        let info = info(&request.group, &row)?;
        match (answer.won, info) {
            (true, Some(info)) => {
                let handle = info.fencing_token.to_string();
                Ok(Acquisition::Acquired(Lease::new(info, request.ttl, handle)))
            }
            (true, None) => Err(corrupt(
                &request.group,
                "the acquired row has no participant",
            )),
            (false, info) => Ok(Acquisition::Held(info)),
        }
    }

    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        validate::duration("lease_ttl", lease.ttl)?;
        let values = Values {
            group: lease.info.group.clone(),
            participant: lease.info.participant_id.clone(),
            token: to_i64(lease.info.fencing_token)?,
            ttl: ttl_units(lease.ttl, self.inner.sql.ttl_in_ms),
            metadata: String::new(),
            nonce: i64::try_from(crate::util::random_u64() >> 1)
                .unwrap_or(1)
                .max(1),
        };
        let answer = self
            .calls
            .call(&self.inner, "renew", deadline, Op::Renew(values))?;
        if answer.won {
            return Ok(Renewal::Renewed);
        }
        match answer.row {
            Some(row) => Ok(Renewal::Lost(info(&lease.info.group, &row)?)),
            None => Ok(Renewal::Lost(None)),
        }
    }

    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        let values = Values {
            group: lease.info.group.clone(),
            participant: lease.info.participant_id.clone(),
            token: to_i64(lease.info.fencing_token)?,
            ttl: 0,
            metadata: String::new(),
            nonce: 0,
        };
        self.calls
            .call(&self.inner, "release", deadline, Op::Release(values))?;
        Ok(())
    }

    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        validate::group(group)?;
        let values = Values {
            group: group.to_owned(),
            participant: String::new(),
            token: 0,
            ttl: 0,
            metadata: String::new(),
            nonce: 0,
        };
        let answer = self
            .calls
            .call(&self.inner, "leader", deadline, Op::Leader(values))?;
        match answer.row {
            Some(row) => info(group, &row),
            None => Ok(None),
        }
    }
}
