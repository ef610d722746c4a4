//! Options of the PostgreSQL provider.

use std::str::FromStr;
use std::time::Duration;

use crate::providers::support::params::Params;
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
    pub(crate) allow_plaintext_password: bool,
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
            allow_plaintext_password: false,
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

    /// How server certificates are checked when TLS is used (default [`Tls::Verify`]: chain
    /// and host name against the system's roots — stricter than libpq's `require`, which
    /// checks nothing). Whether TLS is used is the connection string's `sslmode`, in libpq's
    /// spellings: `disable`, `allow` and `prefer` may run without TLS; `require`, `verify-ca`
    /// and `verify-full` never do, and all three verify as this option says (`verify-ca` checks
    /// the host name too). Without `sslmode`, TLS is required for a server not on this machine
    /// and preferred for `localhost`, loopback addresses and Unix sockets.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Allows `sslmode=disable`, `allow` or `prefer` for a remote server when the connection
    /// string carries a password (default `false`: refused, because someone in the middle could
    /// refuse TLS and ask for the password in cleartext, which the client cannot decline).
    pub fn allow_plaintext_password(mut self, allow: bool) -> Self {
        self.allow_plaintext_password = allow;
        self
    }
}

/// The URL parameters [`PostgresOptions::from_url`] takes; libpq's own (`sslmode`,
/// `application_name`, `options`, …) pass through to the client.
pub(crate) const URL_PARAMS: &[&str] = &[
    "schema",
    "table",
    "create_table",
    "command_timeout",
    "connect_timeout",
    "pool_size",
    "fail_fast",
    "tls",
    "ca_file",
    "allow_plaintext_password",
];

/// The libpq parameters the client understands (`password` too, though it belongs in the
/// URL's user part).
const LIBPQ_PARAMS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

impl PostgresOptions {
    /// Options from a `postgres://` URL whose query may hold, besides libpq's parameters,
    /// this type's options by their builder names (see [`crate::connect`]).
    pub(crate) fn from_url(url: &str) -> crate::Result<PostgresOptions> {
        let mut parsed = url::Url::parse(url).map_err(|_| {
            crate::Error::config("url", "is not a valid postgres://user:password@host/db URL")
        })?;
        let mut params = Params::parse("postgres", parsed.query().unwrap_or(""))?;
        let mut o = PostgresOptions::new("");
        if let Some(v) = params.take("schema") {
            o = o.schema(v);
        }
        if let Some(v) = params.take("table") {
            o = o.table(v);
        }
        if let Some(v) = params.bool("create_table")? {
            o = o.create_table(v);
        }
        if let Some(v) = params.duration("command_timeout")? {
            o = o.command_timeout(v);
        }
        if let Some(v) = params.duration("connect_timeout")? {
            o = o.connect_timeout(v);
        }
        if let Some(v) = params.u32("pool_size")? {
            o = o.pool_size(v);
        }
        if let Some(v) = params.bool("fail_fast")? {
            o = o.fail_fast(v);
        }
        o = o.tls(params.tls()?);
        if let Some(v) = params.bool("allow_plaintext_password")? {
            o = o.allow_plaintext_password(v);
        }
        let rest = params.into_rest();
        if let Some((name, _)) = rest
            .iter()
            .find(|(k, _)| !LIBPQ_PARAMS.contains(&k.as_str()))
        {
            return Err(crate::Error::config(
                "url",
                format!(
                    "unknown postgres URL parameter {name:?}; known are: {}, and libpq's {}",
                    URL_PARAMS.join(", "),
                    LIBPQ_PARAMS.join(", ")
                ),
            ));
        }
        super::sslmode::set_query(&mut parsed, &rest);
        o.url = parsed.into();
        Ok(o)
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
            .field("allow_plaintext_password", &self.allow_plaintext_password)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters() {
        let o = PostgresOptions::from_url(
            "postgres://app:pw@db:5433/x?sslmode=require&table=leases&schema=coord\
             &command_timeout=2s&pool_size=3&fail_fast=false&ca_file=/ca.pem&application_name=a",
        )
        .unwrap();
        assert_eq!((o.schema.as_str(), o.table.as_str()), ("coord", "leases"));
        assert_eq!(o.command_timeout, Duration::from_secs(2));
        assert_eq!(o.pool_size, 3);
        assert!(!o.fail_fast);
        assert_eq!(o.tls, Tls::VerifyWithCa("/ca.pem".into()));
        assert_eq!(
            o.url,
            "postgres://app:pw@db:5433/x?sslmode=require&application_name=a"
        );
        let e = PostgresOptions::from_url("postgres://h/db?tabel=x&password=pw")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tabel") && e.contains("table"), "{e}");
        assert!(!format!("{o:?}").contains("pw@"));
    }
}
