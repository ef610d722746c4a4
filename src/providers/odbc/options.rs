//! Options of the ODBC provider: the SQL dialect, the builder, and the `odbc:` URL form read
//! by [`crate::connect`] (the connection string itself is [`super::connstr`]'s).

use std::time::Duration;

use super::connstr::ConnString;
use crate::error::{Error, Result};
use crate::providers::support::params::Params;

/// The SQL spoken by the server behind an ODBC connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// Microsoft SQL Server and Azure SQL (T-SQL): `MERGE … WITH (HOLDLOCK)`, `SYSUTCDATETIME()`.
    SqlServer,
    /// MySQL and MariaDB: `INSERT … ON DUPLICATE KEY UPDATE`, `UTC_TIMESTAMP(6)`.
    MySql,
    /// PostgreSQL: `INSERT … ON CONFLICT`, `clock_timestamp()`; the native provider's table.
    Postgres,
}

impl Dialect {
    /// The dialect a driver's name (`ODBC Driver 18 for SQL Server`, `MariaDB Unicode`,
    /// `PostgreSQL Unicode`, or a driver library's path) implies, if any.
    pub fn from_driver_name(driver: &str) -> Option<Dialect> {
        let d = driver.to_ascii_lowercase();
        if d.contains("sql server") || d.contains("msodbcsql") || d.contains("sqlncli") {
            Some(Dialect::SqlServer)
        } else if d.contains("mariadb") || d.contains("mysql") || d.contains("maodbc") {
            Some(Dialect::MySql)
        } else if d.contains("postgres") || d.contains("psqlodbc") {
            Some(Dialect::Postgres)
        } else {
            None
        }
    }

    /// The dialect of a DBMS name as ODBC reports it (`SQL_DBMS_NAME`), if known.
    pub(crate) fn from_dbms_name(dbms: &str) -> Option<Dialect> {
        let d = dbms.to_ascii_lowercase();
        if d.contains("sql server") {
            Some(Dialect::SqlServer)
        } else if d.contains("mariadb") || d.contains("mysql") {
            Some(Dialect::MySql)
        } else if d.contains("postgres") {
            Some(Dialect::Postgres)
        } else {
            None
        }
    }

    fn parse(s: &str) -> Result<Dialect> {
        match s.to_ascii_lowercase().as_str() {
            "sqlserver" | "sql_server" | "mssql" | "tsql" => Ok(Dialect::SqlServer),
            "mysql" | "mariadb" => Ok(Dialect::MySql),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            _ => Err(Error::config(
                "dialect",
                format!("{s:?} is not one of sqlserver, mysql, mariadb, postgres"),
            )),
        }
    }
}

/// Options of a [`crate::OdbcProvider`].
///
/// For SQL Server start from [`OdbcOptions::sql_server`]; MySQL/MariaDB and PostgreSQL have
/// [`OdbcOptions::mysql`] and [`OdbcOptions::postgres`]; [`OdbcOptions::new`] detects the
/// dialect from the driver's name (or, failing that, from the server when connecting).
///
/// ```
/// use leader_election::OdbcOptions;
/// use std::time::Duration;
///
/// let options = OdbcOptions::sql_server(
///     "Driver={ODBC Driver 18 for SQL Server};Server=db.internal;Database=app;\
///      UID=app;PWD={s3cr;et};Encrypt=yes",
/// )
/// .schema("coordination")
/// .table("leases")
/// .command_timeout(Duration::from_secs(3));
/// let shown = format!("{options:?}");
/// assert!(shown.contains("db.internal") && !shown.contains("s3cr"));
/// ```
#[derive(Clone)]
pub struct OdbcOptions {
    pub(crate) conn: ConnString,
    pub(crate) dialect: Option<Dialect>,
    pub(crate) schema: Option<String>,
    pub(crate) table: String,
    pub(crate) create_table: bool,
    pub(crate) command_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool_size: u32,
    pub(crate) fail_fast: bool,
    pub(crate) mariadb_returning: bool,
}

impl OdbcOptions {
    /// Options for an ODBC connection string (`Driver={…};Server=…;UID=…;PWD=…` or `DSN=…`),
    /// with the dialect taken from the driver's name, and defaults: the connection's default
    /// schema, table `leader_election`, created if missing, 5 s command timeout, 5 s login
    /// timeout, pool of 2, fail fast.
    pub fn new(connection_string: impl Into<String>) -> Self {
        OdbcOptions {
            conn: ConnString::parse(&connection_string.into()),
            dialect: None,
            schema: None,
            table: "leader_election".into(),
            create_table: true,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            pool_size: 2,
            fail_fast: true,
            mariadb_returning: true,
        }
    }

    /// Options for Microsoft SQL Server (or Azure SQL) through its ODBC driver, e.g.
    /// `Driver={ODBC Driver 18 for SQL Server};Server=tcp:db,1433;Database=app;UID=app;PWD=…`.
    pub fn sql_server(connection_string: impl Into<String>) -> Self {
        OdbcOptions::new(connection_string).dialect(Dialect::SqlServer)
    }

    /// Options for MySQL or MariaDB, e.g.
    /// `Driver={MariaDB Unicode};Server=db;Port=3306;Database=app;UID=app;PWD=…`.
    pub fn mysql(connection_string: impl Into<String>) -> Self {
        OdbcOptions::new(connection_string).dialect(Dialect::MySql)
    }

    /// Options for PostgreSQL through psqlODBC, e.g.
    /// `Driver={PostgreSQL Unicode};Server=db;Port=5432;Database=app;UID=app;PWD=…`.
    pub fn postgres(connection_string: impl Into<String>) -> Self {
        OdbcOptions::new(connection_string).dialect(Dialect::Postgres)
    }

    /// The dialect, instead of detecting it from the driver's name.
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = Some(dialect);
        self
    }

    /// The schema of the table (SQL Server, PostgreSQL) or database (MySQL):
    /// `[a-z_][a-z0-9_]*`, at most 63 characters; created if missing along with the table.
    /// Default: none, so the connection's default (`dbo`, `search_path`, the current database).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The table name (default `leader_election`): `[a-z_][a-z0-9_]*`, at most 63 characters.
    /// With the PostgreSQL dialect the table is the native PostgreSQL provider's, so the two
    /// providers can share it.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Whether to create the schema and table if missing (default `true`), once per provider.
    pub fn create_table(mut self, create: bool) -> Self {
        self.create_table = create;
        self
    }

    /// The longest a statement may run (default 5 s): the ODBC query timeout (whole seconds,
    /// rounded up; SQL Server, PostgreSQL), the session's lock-wait and statement time limits
    /// (MySQL, MariaDB), and the wait for a pooled connection. Every call also ends at its
    /// caller's deadline, whichever comes first.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The ODBC login timeout (default 5 s, whole seconds rounded up).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The most connections kept open (default 2: heartbeats run one call at a time).
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// Whether [`crate::OdbcProvider::new`] connects (and creates the table) at once and fails
    /// if it cannot (default `true`). With `false` it never fails for an unreachable server:
    /// the elector's calls fail with transient errors until the server is up.
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// Whether an acquire on MariaDB 10.5 or newer is one `INSERT … ON DUPLICATE KEY UPDATE …
    /// RETURNING` statement (default `true`). With `false` — and always on MySQL, which has
    /// no `RETURNING` — it is the upsert followed by a read of the row: two round trips.
    pub fn mariadb_returning(mut self, returning: bool) -> Self {
        self.mariadb_returning = returning;
        self
    }
}

impl std::fmt::Debug for OdbcOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OdbcOptions")
            .field("connection", &self.conn.describe())
            .field("dialect", &self.dialect)
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("create_table", &self.create_table)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_size", &self.pool_size)
            .field("fail_fast", &self.fail_fast)
            .finish_non_exhaustive()
    }
}

/// The options [`OdbcOptions::from_url`] takes after the connection string's `?`.
pub(crate) const URL_PARAMS: &[&str] = &[
    "dialect",
    "schema",
    "table",
    "create_table",
    "command_timeout",
    "connect_timeout",
    "pool_size",
    "fail_fast",
    "mariadb_returning",
];

impl OdbcOptions {
    /// Options from `odbc:<connection string>[?option=value&…]`. The connection string is
    /// taken verbatim (no percent-decoding, so `;`, `=`, `%` and braces need no escaping);
    /// the options start at the first `?` outside `{…}`, so a value holding `?` — like one
    /// holding `;` — goes in braces: `PWD={a?b;c}`.
    pub(crate) fn from_url(url: &str) -> Result<OdbcOptions> {
        let rest = url
            .get("odbc:".len()..)
            .ok_or_else(|| Error::config("url", "an ODBC URL starts with odbc:"))?;
        let (conn, query) = split_query(rest)?;
        if conn.trim().is_empty() {
            return Err(Error::config(
                "url",
                "an ODBC URL is odbc:<connection string>, e.g. \
                 odbc:Driver={ODBC Driver 18 for SQL Server};Server=db;UID=app;PWD=…",
            ));
        }
        let mut params = Params::parse("odbc", query)?;
        let mut o = OdbcOptions::new(conn);
        if let Some(v) = params.take("dialect") {
            o = o.dialect(Dialect::parse(&v)?);
        }
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
        if let Some(v) = params.bool("mariadb_returning")? {
            o = o.mariadb_returning(v);
        }
        params.finish(URL_PARAMS)?;
        Ok(o)
    }
}

/// Splits `conn?query` at the first `?` outside braces.
fn split_query(s: &str) -> Result<(&str, &str)> {
    let mut depth_open = false;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if !depth_open => depth_open = true,
            '}' if depth_open => {
                // `}}` inside braces is an escaped brace.
                if chars.peek().map(|&(_, c)| c) == Some('}') {
                    chars.next();
                } else {
                    depth_open = false;
                }
            }
            '?' if !depth_open => return Ok((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    if depth_open {
        return Err(Error::config(
            "url",
            "the ODBC connection string has a '{' without its '}'",
        ));
    }
    Ok((s, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_from_driver_names() {
        for (name, d) in [
            ("ODBC Driver 18 for SQL Server", Dialect::SqlServer),
            (
                "/opt/microsoft/msodbcsql18/lib64/libmsodbcsql-18.4.so.1.1",
                Dialect::SqlServer,
            ),
            ("MariaDB Unicode", Dialect::MySql),
            ("MySQL ODBC 8.0 Unicode Driver", Dialect::MySql),
            (
                "/usr/lib/x86_64-linux-gnu/odbc/libmaodbc.so",
                Dialect::MySql,
            ),
            ("PostgreSQL Unicode", Dialect::Postgres),
            ("psqlodbcw.so", Dialect::Postgres),
        ] {
            assert_eq!(Dialect::from_driver_name(name), Some(d), "{name}");
        }
        assert_eq!(Dialect::from_driver_name("SQLite3"), None);
        assert_eq!(
            Dialect::from_dbms_name("Microsoft SQL Server"),
            Some(Dialect::SqlServer)
        );
    }

    #[test]
    fn url_form() {
        let o = OdbcOptions::from_url(
            "odbc:Driver={MariaDB Unicode};Server=127.0.0.1;UID=u;PWD={a?b;c%20}\
             ?table=leases&command_timeout=2s&dialect=mariadb&pool_size=3",
        )
        .unwrap();
        assert_eq!(o.conn.get("PWD"), Some("a?b;c%20"));
        assert_eq!(o.table, "leases");
        assert_eq!(o.command_timeout, Duration::from_secs(2));
        assert_eq!(o.dialect, Some(Dialect::MySql));
        assert_eq!(o.pool_size, 3);
        let e = OdbcOptions::from_url("odbc:DSN=x;PWD=hunter2?tabel=x")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("tabel") && !e.contains("hunter2"), "{e}");
        let e = OdbcOptions::from_url("odbc:DSN=x;PWD={hunter2?x")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains('{') && !e.contains("hunter2"), "{e}");
        assert!(OdbcOptions::from_url("odbc:").is_err());
        let e = OdbcOptions::from_url("odbc:DSN=x?dialect=oracle")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("dialect"), "{e}");
        assert!(!format!("{o:?}").contains("a?b"));
    }
}
