//! The PostgreSQL provider's SQL and connections: the statements of one table, built once from
//! validated identifiers, and the r2d2 connection manager that prepares them on every pooled
//! connection (so acquire, renew and release are one round trip each).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The SQL of one table, built once from validated identifiers.
pub(super) struct Sql {
    pub(super) create: String,
    pub(super) acquire: String,
    pub(super) renew: String,
    pub(super) release: String,
    pub(super) leader: String,
    pub(super) channel: String,
}

impl Sql {
    pub(super) fn new(schema: &str, table: &str) -> Sql {
        // Both names passed validate::sql_identifier: [a-z_][a-z0-9_]{0,62}. Quoting them
        // anyway keeps reserved words usable.
        let q = format!("\"{schema}\".\"{table}\"");
        let ms = |col: &str| format!("(extract(epoch FROM {col}) * 1000)::bigint");
        let live = "participant_id IS NOT NULL AND expires_at > clock_timestamp()";
        let create_schema = if schema == "public" {
            String::new()
        } else {
            format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\";")
        };
        Sql {
            create: format!(
                "BEGIN;
                 SELECT pg_advisory_xact_lock(8872615010934);
                 {create_schema}
                 CREATE TABLE IF NOT EXISTS {q} (
                     group_name     text PRIMARY KEY,
                     participant_id text,
                     fencing_token  bigint NOT NULL,
                     expires_at     timestamptz,
                     acquired_at    timestamptz,
                     metadata       text NOT NULL DEFAULT '{{}}'
                 );
                 COMMIT;"
            ),
            // One round trip: take the row if free or expired (deciding on the database's
            // clock), else report the live holder and the ms its lease has left.
            acquire: format!(
                "WITH up AS (
                     INSERT INTO {q} AS t
                         (group_name, participant_id, fencing_token, expires_at, acquired_at, metadata)
                     VALUES ($1, $2, 1, clock_timestamp() + $3::bigint * interval '1 millisecond',
                             clock_timestamp(), $4)
                     ON CONFLICT (group_name) DO UPDATE
                        SET participant_id = EXCLUDED.participant_id,
                            fencing_token  = t.fencing_token + 1,
                            expires_at     = EXCLUDED.expires_at,
                            acquired_at    = EXCLUDED.acquired_at,
                            metadata       = EXCLUDED.metadata
                      WHERE t.participant_id IS NULL OR t.expires_at <= clock_timestamp()
                     RETURNING participant_id, fencing_token, acquired_at, metadata)
                 SELECT true, participant_id, fencing_token, {acq}, metadata, NULL::bigint FROM up
                 UNION ALL
                 SELECT false, participant_id, fencing_token, {acq}, metadata,
                        (extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint
                   FROM {q}
                  WHERE group_name = $1 AND {live} AND NOT EXISTS (SELECT 1 FROM up)",
                acq = ms("acquired_at"),
            ),
            renew: format!(
                "WITH up AS (
                     UPDATE {q} SET expires_at = clock_timestamp() + $4::bigint * interval '1 millisecond'
                      WHERE group_name = $1 AND participant_id = $2 AND fencing_token = $3
                        AND expires_at > clock_timestamp()
                     RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM up), t.participant_id, t.fencing_token,
                        {acq}, t.metadata
                   FROM (SELECT 1) AS one
                   LEFT JOIN {q} AS t ON t.group_name = $1 AND t.{live_t}",
                acq = ms("t.acquired_at"),
                live_t = "participant_id IS NOT NULL AND t.expires_at > clock_timestamp()",
            ),
            release: format!(
                "WITH rel AS (
                     UPDATE {q} SET participant_id = NULL, expires_at = NULL
                      WHERE group_name = $1 AND participant_id = $2 AND fencing_token = $3
                     RETURNING group_name)
                 SELECT pg_notify($4, group_name) FROM rel"
            ),
            leader: format!(
                "SELECT participant_id, fencing_token, {acq}, metadata FROM {q}
                  WHERE group_name = $1 AND {live}",
                acq = ms("acquired_at"),
            ),
            // NOTIFY channels are identifiers: at most 63 bytes.
            channel: format!("le_{schema}_{table}").chars().take(63).collect(),
        }
    }
}

/// A pooled connection with the provider's statements prepared on it.
pub(super) struct Conn {
    pub(super) client: Client,
    pub(super) acquire: Statement,
    pub(super) renew: Statement,
    pub(super) release: Statement,
    pub(super) leader: Statement,
    /// A statement on it was cancelled at its caller's deadline: r2d2 drops it rather than
    /// hand it out again (a late cancel request must never hit a later caller's statement).
    pub(super) poisoned: bool,
}

/// Makes [`Conn`]s for r2d2.
pub(super) struct Manager {
    pub(super) config: postgres::Config,
    pub(super) tls: MakeRustlsConnect,
    pub(super) sql: Arc<Sql>,
    /// The table exists (or need not be created): the DDL runs once per provider, not on
    /// every new pooled connection.
    pub(super) table_ready: Arc<AtomicBool>,
    /// The last connection attempt failed authentication (SQLSTATE class 28) or named a
    /// database that does not exist (3D000): a permanent error, however the pool reports it.
    pub(super) auth_failed: Arc<AtomicBool>,
}

impl Manager {
    pub(super) fn connect_conn(&self) -> std::result::Result<Conn, postgres::Error> {
        let mut client = self.config.connect(self.tls.clone()).inspect_err(|e| {
            self.auth_failed.store(is_auth_error(e), Ordering::SeqCst);
        })?;
        self.auth_failed.store(false, Ordering::SeqCst);
        if !self.table_ready.load(Ordering::SeqCst) {
            client.batch_execute(&self.sql.create)?;
            self.table_ready.store(true, Ordering::SeqCst);
        }
        Ok(Conn {
            acquire: client.prepare(&self.sql.acquire)?,
            renew: client.prepare(&self.sql.renew)?,
            release: client.prepare(&self.sql.release)?,
            leader: client.prepare(&self.sql.leader)?,
            poisoned: false,
            client,
        })
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<Conn, postgres::Error> {
        self.connect_conn()
    }

    fn is_valid(&self, conn: &mut Conn) -> std::result::Result<(), postgres::Error> {
        conn.client.simple_query("").map(drop)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.poisoned || conn.client.is_closed()
    }
}

/// Whether a connection error is a refusal of the credentials or of the database name: no
/// retry will fix it.
pub(super) fn is_auth_error(e: &postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("28") || c.code() == "3D000")
}

/// r2d2 logs connection errors itself by default; ours are reported through `Error`.
#[derive(Debug)]
pub(super) struct QuietErrors;

impl r2d2::HandleError<postgres::Error> for QuietErrors {
    fn handle_error(&self, error: postgres::Error) {
        log::debug!("postgres: pool connection attempt failed: {error}");
    }
}

#[derive(Debug)]
pub(super) struct PoolError(pub(super) String);

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PoolError {}
