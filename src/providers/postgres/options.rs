//! Options of the PostgreSQL provider.

use std::str::FromStr;
use std::time::Duration;

use crate::providers::support::safe_url::SafeUrl;
use crate::providers::support::tls::Tls;

/// Options of a [`crate::PostgresProvider`].
///
/// ```
/// use leader_election::{PostgresOptions, Tls};
/// use std::time::Duration;
///
/// let options = PostgresOptions::new("postgres://app:secret@db.internal/app?sslmode=require")
///     .schema("coordination")
///     .table("leases")
///     .command_timeout(Duration::from_secs(3))
///     .pool_size(2)
///     .tls(Tls::VerifyWithCa("/etc/ssl/db-ca.pem".into()));
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct PostgresOptions {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) create_table: bool,
    pub(crate) command_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool_size: u32,
    pub(crate) fail_fast: bool,
    pub(crate) tls: Tls,
}

impl PostgresOptions {
    /// Options for a connection string — a URL (`postgres://user:pass@host:port/db?sslmode=…`)
    /// or `key=value` pairs — with defaults: schema `public`, table `leader_election`, created
    /// if missing, 5 s command timeout, 5 s connect timeout, pool of 2, fail fast, TLS verified.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresOptions {
            url: url.into(),
            schema: "public".into(),
            table: "leader_election".into(),
            create_table: true,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            pool_size: 2,
            fail_fast: true,
            tls: Tls::Verify,
        }
    }

    /// The schema of the table (default `public`): `[a-z_][a-z0-9_]*`, at most 63 characters.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The table name (default `leader_election`): `[a-z_][a-z0-9_]*`, at most 63 characters.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Whether to create the schema and table if missing (default `true`).
    pub fn create_table(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// The longest a statement may run, enforced by the server (`statement_timeout`) and by
    /// the socket (`tcp_user_timeout`); also bounds waiting for a pooled connection. Default
    /// 5 s.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The longest a connection attempt may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The most connections kept open (default 2: heartbeats run one call at a time).
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// Whether [`crate::PostgresProvider::new`] connects (and creates the table) at once and fails if
    /// it cannot (default `true`). With `false`, it never fails for an unreachable server: the
    /// elector's calls fail with transient errors and are retried until the server is up.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// How server certificates are checked when the connection string asks for TLS.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("server", &describe(&self.url))
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("create_table", &self.create_table)
            .field("command_timeout", &self.command_timeout)
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// `postgres://user@host:port/db` of a connection string (URL or `key=value` form), without
/// the password or any other parameter.
pub(crate) fn describe(url: &str) -> String {
    match postgres::Config::from_str(url) {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    #[cfg(unix)]
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_default();
            let port = c.get_ports().first().copied().unwrap_or(5432);
            let db = format!("/{}", c.get_dbname().unwrap_or(""));
            SafeUrl::from_parts(
                "postgres",
                c.get_user().unwrap_or(""),
                [format!("{host}:{port}")],
                &db,
            )
            .to_string()
        }
        Err(_) => "<unparsable connection string>".into(),
    }
}
