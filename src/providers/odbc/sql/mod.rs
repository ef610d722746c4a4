//! The ODBC provider's SQL, one set per dialect, built once from validated identifiers quoted
//! the dialect's way (`[x]`, `` `x` ``, `"x"`). Each statement lists the values its `?`
//! placeholders take, in order, so text and parameters cannot drift apart.
//!
//! Every statement that reports a leader returns rows of five columns: a flag (1: this call
//! won or renewed; 0: the row shows someone else — on MySQL the row's nonce, compared by the
//! caller), the participant, the fencing token, the term's start in Unix milliseconds and the
//! metadata. Expiry is decided on the server's clock only:
//!
//! - **SQL Server** `SYSUTCDATETIME()`: evaluated once per statement, when it starts. The
//!   statement starts after the request was sent, so a lease written as start + TTL ends no
//!   earlier than sent + TTL; and an earlier lease counts as expired only if it ended before
//!   the statement started, so before the decision. UTC: no time-zone or DST steps.
//! - **MySQL/MariaDB** `UTC_TIMESTAMP(6)`: also the statement's start time (like `NOW()`), by
//!   the same argument. `SYSDATE(6)` (the time of execution) would be as safe for both uses,
//!   but it is local time in the session's time zone, which can step with DST; the columns are
//!   `DATETIME(6)`, which never converts.
//! - **PostgreSQL** `clock_timestamp()`: the actual time at each evaluation (not the
//!   transaction's start); the new expiry is computed when the row values are, after the
//!   request arrived, and the old one is compared at the moment of the decision.

use super::options::Dialect;

mod mysql;
mod postgres;
mod tsql;

/// The value bound to one `?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arg {
    Group,
    Participant,
    Token,
    /// The TTL in the dialect's unit (milliseconds on SQL Server, microseconds elsewhere),
    /// rounded up.
    Ttl,
    Metadata,
    /// A random number marking this call's write (MySQL).
    Nonce,
    /// The NOTIFY channel of the native PostgreSQL provider.
    Channel,
}

/// One statement (or batch) and the values of its placeholders.
#[derive(Debug, Clone)]
pub(super) struct Stmt {
    pub(super) sql: String,
    pub(super) args: &'static [Arg],
    /// Its place among a connection's prepared statements (see [`Statements::all`]).
    pub(super) slot: usize,
}

/// How many statements a connection prepares at most.
pub(super) const SLOTS: usize = 6;

/// The SQL of one table in one dialect.
#[derive(Debug, Clone)]
pub(super) struct Statements {
    pub(super) dialect: Dialect,
    /// Run in order, once per provider; "already exists" errors are ignored.
    pub(super) create: Vec<String>,
    pub(super) acquire: Stmt,
    /// MySQL's acquire as one `INSERT … RETURNING` (MariaDB ≥ 10.5 only).
    pub(super) acquire_returning: Option<Stmt>,
    /// Reads the row back after an acquire that returns none (MySQL without `RETURNING`).
    pub(super) acquire_read: Option<Stmt>,
    pub(super) renew: Stmt,
    pub(super) release: Stmt,
    pub(super) leader: Stmt,
    /// Whether [`Arg::Ttl`] is in milliseconds (SQL Server's `DATEADD` takes an `int`) rather
    /// than microseconds.
    pub(super) ttl_in_ms: bool,
}

impl Statements {
    /// The statements for `table` (in `schema`, if given) — both already validated as
    /// `[a-z_][a-z0-9_]{0,62}`; quoting them anyway keeps reserved words usable.
    pub(super) fn new(dialect: Dialect, schema: Option<&str>, table: &str) -> Statements {
        match dialect {
            Dialect::SqlServer => tsql::statements(schema, table),
            Dialect::MySql => mysql::statements(schema, table),
            Dialect::Postgres => postgres::statements(schema, table),
        }
    }

    /// Every statement a call may run, named, in slot order: each connection prepares them.
    pub(super) fn all(&self) -> Vec<(&'static str, &Stmt)> {
        let mut all = vec![
            ("acquire", &self.acquire),
            ("renew", &self.renew),
            ("release", &self.release),
            ("leader", &self.leader),
        ];
        if let Some(s) = &self.acquire_returning {
            all.push(("acquire", s));
        }
        if let Some(s) = &self.acquire_read {
            all.push(("acquire", s));
        }
        all
    }
}

pub(super) fn qualified(schema: Option<&str>, table: &str, quote: fn(&str) -> String) -> String {
    match schema {
        Some(s) => format!("{}.{}", quote(s), quote(table)),
        None => quote(table),
    }
}

/// The native PostgreSQL provider's NOTIFY channel for this table (identifiers: ≤ 63 bytes).
pub(super) fn pg_channel(schema: Option<&str>, table: &str) -> String {
    format!("le_{}_{table}", schema.unwrap_or("public"))
        .chars()
        .take(63)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(s: &Statements) -> Vec<&str> {
        let mut v: Vec<&str> = s.all().into_iter().map(|(_, st)| st.sql.as_str()).collect();
        // The last DDL creates the table (the one before it, if any, the schema).
        v.extend(s.create.last().map(String::as_str));
        v
    }

    #[test]
    fn placeholders_match_their_arguments() {
        for d in [Dialect::SqlServer, Dialect::MySql, Dialect::Postgres] {
            let s = Statements::new(d, Some("coord"), "leases");
            for (name, st) in s.all() {
                assert_eq!(
                    st.sql.matches('?').count(),
                    st.args.len(),
                    "{d:?} {name}: {}",
                    st.sql
                );
            }
        }
    }

    #[test]
    fn sql_server_quotes_with_brackets_and_locks_the_key() {
        let s = Statements::new(Dialect::SqlServer, Some("coord"), "select");
        for sql in every(&s) {
            assert!(sql.contains("[coord].[select]"), "{sql}");
            assert!(!sql.contains('`') && !sql.contains("\"select\""), "{sql}");
        }
        assert!(
            s.acquire
                .sql
                .contains("MERGE INTO [coord].[select] WITH (HOLDLOCK) AS t")
        );
        assert!(s.acquire.sql.contains("OUTPUT 1, inserted.participant_id"));
        assert!(
            s.renew
                .sql
                .contains("UPDATE [coord].[select] WITH (HOLDLOCK)")
        );
        assert!(s.create[0].contains("CREATE SCHEMA [coord]"));
        assert!(s.acquire.sql.contains("SYSUTCDATETIME()") && !s.acquire.sql.contains("GETDATE"));
        // Without a schema the name stands alone.
        let s = Statements::new(Dialect::SqlServer, None, "leases");
        assert!(
            s.leader.sql.contains("FROM [leases] WHERE"),
            "{}",
            s.leader.sql
        );
        assert!(s.create[0].contains("OBJECT_ID(N'[leases]', N'U')"));
    }

    #[test]
    fn mysql_quotes_with_backticks_and_assigns_the_expiry_last() {
        let s = Statements::new(Dialect::MySql, Some("coord"), "order");
        for sql in every(&s) {
            assert!(sql.contains("`coord`.`order`"), "{sql}");
            assert!(!sql.contains('[') && !sql.contains("\"order\""), "{sql}");
        }
        let upsert = &s.acquire.sql;
        let update = &upsert[upsert.find("ON DUPLICATE KEY UPDATE").unwrap()..];
        let assigned: Vec<&str> = update
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(assigned.last(), Some(&"expires_at"), "{update}");
        assert!(upsert.contains("UTC_TIMESTAMP(6)") && !upsert.contains("NOW()"));
        assert!(
            s.acquire_returning
                .as_ref()
                .unwrap()
                .sql
                .contains("RETURNING nonce")
        );
    }

    #[test]
    fn postgres_quotes_with_double_quotes_like_the_native_provider() {
        let s = Statements::new(Dialect::Postgres, Some("coord"), "user");
        for sql in every(&s) {
            assert!(sql.contains("\"coord\".\"user\""), "{sql}");
            assert!(!sql.contains('`') && !sql.contains("[coord]"), "{sql}");
        }
        assert!(s.acquire.sql.contains("ON CONFLICT (group_name) DO UPDATE"));
        assert!(s.release.sql.contains("pg_notify"));
        assert_eq!(
            pg_channel(None, "leader_election"),
            "le_public_leader_election"
        );
    }
}
