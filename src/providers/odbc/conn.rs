//! The ODBC provider's connections: the r2d2 connection manager (login timeout, per-session
//! limits, the table created once per provider, the statements prepared on every connection —
//! so a call is one execute of a plan the server already has) and a connection wrapper that
//! never panics when it is closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use odbc_api::handles::{SqlResult, StatementConnection};
use odbc_api::{ConnectionOptions, ConnectionTransitions, Prepared, ResultSetMetadata};

use super::connstr::ConnString;
use super::errors::Diag;
use super::options::Dialect;
use super::sql::{SLOTS, Statements};

/// A connection shared by its prepared statements (each keeps it alive).
type Shared = odbc_api::SharedConnection<'static>;

/// A statement prepared on a pooled connection.
pub(super) type Prep = Prepared<StatementConnection<Shared>>;

pub(super) const BACKEND: &str = "odbc";

/// A pooled connection.
pub(super) struct Conn {
    /// Always `Some` until dropped.
    shared: Option<Shared>,
    /// The provider's statements, prepared on this connection, by [`super::sql::Stmt::slot`].
    pub(super) prepared: Vec<Option<Prep>>,
    /// Calls served: a connection that has served calls may have died while idle in the pool.
    pub(super) uses: u64,
    /// It lost its link: r2d2 drops it instead of reusing it.
    pub(super) broken: bool,
    /// MySQL dialect on MariaDB ≥ 10.5 (and the option allows it): acquire with `RETURNING`.
    pub(super) returning: bool,
}

impl Conn {
    pub(super) fn new(conn: odbc_api::Connection<'static>) -> Conn {
        Conn {
            shared: Some(Arc::new(Mutex::new(conn))),
            prepared: Vec::new(),
            uses: 0,
            broken: false,
            returning: false,
        }
    }

    /// Whether the driver says the link is gone (`SQL_ATTR_CONNECTION_DEAD`; no round trip).
    pub(super) fn is_dead(&self) -> bool {
        self.with(|c| Ok(c.is_dead().unwrap_or(false)))
            .unwrap_or(true)
    }

    /// Runs `f` on the connection itself (for statements that are not prepared).
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&odbc_api::Connection<'static>) -> Result<T, Diag>,
    ) -> Result<T, Diag> {
        let shared = self
            .shared
            .as_ref()
            .ok_or_else(|| Diag::plain("no longer connected"))?;
        let conn = shared
            .lock()
            .map_err(|_| Diag::plain("the connection's lock was poisoned"))?;
        f(&conn)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The statements first: each holds the connection.
        self.prepared.clear();
        let Some(shared) = self.shared.take() else {
            return;
        };
        let Some(conn) = Arc::into_inner(shared).and_then(|m| m.into_inner().ok()) else {
            log::warn!("odbc: a connection still in use was dropped; leaking it");
            return;
        };
        // odbc-api panics if a disconnect fails; disconnect here instead and, if the driver
        // refuses, leak the handle (freeing a connected handle would fail too) and log it.
        let mut handle = conn.into_handle();
        match handle.disconnect() {
            SqlResult::Success(()) | SqlResult::SuccessWithInfo(()) => drop(handle),
            _ => {
                log::warn!("odbc: the driver refused to disconnect a connection; leaking it");
                std::mem::forget(handle);
            }
        }
    }
}

/// Makes [`Conn`]s for r2d2.
pub(super) struct Manager {
    pub(super) conn: ConnString,
    pub(super) sql: Arc<Statements>,
    pub(super) login_timeout: Duration,
    pub(super) command_timeout: Duration,
    pub(super) mariadb_returning: bool,
    pub(super) create_table: bool,
    /// The table exists (or need not be created) and the statements were checked: done once
    /// per provider, not on every new pooled connection.
    pub(super) ready: Arc<AtomicBool>,
    /// The last connection attempt was refused for its credentials or database: a permanent
    /// error, however the pool reports it.
    pub(super) auth_failed: Arc<AtomicBool>,
}

/// Whole seconds, rounded up, at least 1: ODBC timeouts are seconds and 0 means "none".
pub(super) fn ceil_secs(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

impl Manager {
    /// Connects and prepares the session; creates the table and checks the statements the
    /// first time.
    pub(super) fn connect_conn(&self) -> Result<Conn, Diag> {
        let env = odbc_api::environment().map_err(|e| Diag::new(&e, &self.conn))?;
        let options = ConnectionOptions {
            login_timeout_sec: Some(ceil_secs(self.login_timeout)),
            packet_size: None,
        };
        let raw = env
            .connect_with_connection_string(&self.conn.text, options)
            .map_err(|e| {
                let d = Diag::new(&e, &self.conn);
                self.auth_failed.store(d.login_refused(), Ordering::SeqCst);
                d
            })?;
        self.auth_failed.store(false, Ordering::SeqCst);
        let mut conn = Conn::new(raw);
        self.setup_session(&mut conn)?;
        if !self.ready.load(Ordering::SeqCst) {
            self.create_table(&conn)?;
        }
        self.prepare(&mut conn)?;
        self.ready.store(true, Ordering::SeqCst);
        Ok(conn)
    }

    /// Runs `sql` once, unprepared, bounded by the command timeout where the driver honours
    /// the ODBC query timeout.
    fn exec(&self, conn: &Conn, sql: &str) -> Result<(), Diag> {
        let timeout = match self.sql.dialect {
            Dialect::MySql => None,
            _ => Some(ceil_secs(self.command_timeout) as usize),
        };
        conn.with(|c| {
            c.execute(sql, (), timeout)
                .map(drop)
                .map_err(|e| Diag::new(&e, &self.conn))
        })
    }

    /// Session limits, so the server ends a statement that outlives the command timeout even
    /// where the driver ignores the ODBC query timeout (MariaDB's does). psqlODBC implements
    /// the query timeout itself, as the session's `statement_timeout`.
    fn setup_session(&self, conn: &mut Conn) -> Result<(), Diag> {
        let ms = self.command_timeout.as_millis().max(1);
        match self.sql.dialect {
            Dialect::SqlServer => self.exec(conn, &format!("SET LOCK_TIMEOUT {ms}")),
            Dialect::Postgres => Ok(()),
            Dialect::MySql => {
                let secs = ceil_secs(self.command_timeout);
                self.exec(
                    conn,
                    &format!("SET SESSION innodb_lock_wait_timeout = {secs}"),
                )?;
                let version = self.version(conn)?;
                if let Some(mariadb) = mariadb_version(&version) {
                    let secs = self.command_timeout.as_secs_f64();
                    self.exec(conn, &format!("SET SESSION max_statement_time = {secs}"))?;
                    conn.returning = self.mariadb_returning && mariadb >= (10, 5);
                }
                Ok(())
            }
        }
    }

    fn version(&self, conn: &Conn) -> Result<String, Diag> {
        use odbc_api::Cursor;
        let diag = |e: odbc_api::Error| Diag::new(&e, &self.conn);
        conn.with(|c| {
            let mut out = Vec::new();
            if let Some(mut cursor) = c.execute("SELECT VERSION()", (), None).map_err(diag)?
                && let Some(mut row) = cursor.next_row().map_err(diag)?
            {
                row.get_text(1, &mut out).map_err(diag)?;
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        })
    }

    /// Creates the schema and table, unless told not to (once per provider).
    fn create_table(&self, conn: &Conn) -> Result<(), Diag> {
        if !self.create_table {
            return Ok(());
        }
        for ddl in &self.sql.create {
            if let Err(d) = self.exec(conn, ddl) {
                // Another process created it between our check and our CREATE.
                let exists = matches!(d.state.as_str(), "42S01" | "42P07" | "42P06" | "23505")
                    || d.native == 2714;
                if !exists {
                    return Err(d);
                }
            }
        }
        Ok(())
    }

    /// Prepares every statement on `conn`. The first time (per provider) it also asks the
    /// server to describe each one's result, so a wrong dialect or a foreign table with other
    /// columns fails here, with the server's words, instead of at the first campaign.
    fn prepare(&self, conn: &mut Conn) -> Result<(), Diag> {
        let shared = conn
            .shared
            .clone()
            .ok_or_else(|| Diag::plain("no longer connected"))?;
        let check = !self.ready.load(Ordering::SeqCst);
        let mut prepared: Vec<Option<Prep>> = (0..SLOTS).map(|_| None).collect();
        for (name, stmt) in self.sql.all() {
            let returning = self.sql.acquire_returning.as_ref().map(|s| s.slot);
            if returning == Some(stmt.slot) && !conn.returning {
                continue;
            }
            let mut p = shared.clone().into_prepared(&stmt.sql).map_err(|e| {
                let mut d = Diag::new(&e, &self.conn);
                d.message = format!("the {name} statement was refused: {}", d.message);
                d
            })?;
            // Makes drivers that defer preparing (psqlODBC, SQL Server's) ask the server. Strict
            // where verified on real servers; for SQL Server a refusal to describe a batch is
            // only logged (its statements still run, and fail clearly, at the first call).
            if check && let Err(e) = p.num_result_cols() {
                let d = Diag::new(&e, &self.conn);
                if self.sql.dialect != Dialect::SqlServer {
                    return Err(d);
                }
                log::debug!("odbc: SQL Server did not describe the {name} statement: {d}");
            }
            if let Some(slot) = prepared.get_mut(stmt.slot) {
                *slot = Some(p);
            }
        }
        conn.prepared = prepared;
        Ok(())
    }
}

/// `(major, minor)` of a MariaDB version string such as `10.11.19-MariaDB-0+deb12u1`.
fn mariadb_version(version: &str) -> Option<(u32, u32)> {
    if !version.contains("MariaDB") {
        return None;
    }
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = Diag;

    fn connect(&self) -> Result<Conn, Diag> {
        self.connect_conn()
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), Diag> {
        self.exec(conn, "SELECT 1")
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
    }
}

/// r2d2 logs connection errors itself by default; ours are reported through `Error`.
#[derive(Debug)]
pub(super) struct QuietErrors;

impl r2d2::HandleError<Diag> for QuietErrors {
    fn handle_error(&self, error: Diag) {
        log::debug!("odbc: pool connection attempt failed: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_versions() {
        assert_eq!(
            mariadb_version("10.11.19-MariaDB-0+deb12u1"),
            Some((10, 11))
        );
        assert_eq!(mariadb_version("8.0.36"), None);
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 1);
    }
}
