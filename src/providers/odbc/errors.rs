//! The ODBC provider's errors: a driver diagnostic (SQLSTATE, native code, message with every
//! secret of the connection string redacted) and its mapping to the crate's errors — class 08
//! unavailable, HYT00/HYT01 and the servers' own time limits timeouts, syntax, permission,
//! driver-manager and refused-login errors permanent, the rest transient.

use std::time::Duration;

use super::conn::BACKEND;
use super::connstr::ConnString;
use crate::error::Error;

/// One diagnostic from the driver manager or driver, with secrets redacted.
#[derive(Debug, Clone)]
pub(super) struct Diag {
    /// The SQLSTATE, e.g. `08S01`; empty when the failure had no diagnostic record.
    pub(super) state: String,
    pub(super) native: i32,
    pub(super) message: String,
}

impl std::fmt::Display for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.state.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(
                f,
                "SQLSTATE {} (native error {}): {}",
                self.state,
                self.native,
                self.message.trim_end()
            )
        }
    }
}

impl std::error::Error for Diag {}

impl Diag {
    pub(super) fn new(e: &odbc_api::Error, conn: &ConnString) -> Diag {
        match e {
            odbc_api::Error::Diagnostics { record, function } => Diag {
                state: record.state.as_str().to_owned(),
                native: record.native_error,
                message: conn.redact(&format!(
                    "{} (in {function})",
                    String::from_utf8_lossy(&record.message)
                )),
            },
            other => Diag {
                state: String::new(),
                native: 0,
                message: conn.redact(&other.to_string()),
            },
        }
    }

    pub(super) fn plain(message: impl Into<String>) -> Diag {
        Diag {
            state: String::new(),
            native: 0,
            message: message.into(),
        }
    }

    fn class(&self) -> &str {
        self.state.get(..2).unwrap_or("")
    }

    /// Whether the connection the error came from must not be used again: the link is gone
    /// (class 08, MySQL's 2006/2013 "gone away"/"lost connection", PostgreSQL's shutdowns)
    /// or a statement was cancelled mid-way.
    pub(super) fn connection_lost(&self) -> bool {
        matches!(self.class(), "08")
            || matches!(
                self.state.as_str(),
                "HYT00" | "HYT01" | "57P01" | "57P02" | "57P03"
            )
            || (self.state == "HY000" && matches!(self.native, 2006 | 2013 | 2055))
            || (self.state.is_empty() && self.message.contains("no longer connected"))
    }

    /// Whether the statement was chosen as a deadlock victim and rolled back (SQLSTATE 40001
    /// or 40P01; MySQL 1213, SQL Server 1205).
    pub(super) fn deadlocked(&self) -> bool {
        matches!(self.state.as_str(), "40001" | "40P01") || matches!(self.native, 1213)
    }

    /// Whether a server refused the login itself: wrong credentials or database (SQLSTATE
    /// class 28, 3D; MySQL 1044/1045; psqlODBC reports these as 08001 with the server's
    /// FATAL message).
    pub(super) fn login_refused(&self) -> bool {
        let msg = self.message.to_ascii_lowercase();
        matches!(self.class(), "28" | "3D")
            || matches!(self.native, 1044 | 1045 | 18456)
            || (self.state == "08001"
                && (msg.contains("authentication failed")
                    || msg.contains("login failed")
                    || msg.contains("pg_hba.conf")
                    || (msg.contains("database") && msg.contains("does not exist"))))
    }

    /// Whether SQL or configuration is at fault, so a retry cannot help: syntax and
    /// permission errors (42), data errors (22), unsupported features (0A), driver-manager
    /// errors (IM: no such driver or DSN) and refused logins.
    pub(super) fn permanent(&self) -> bool {
        matches!(self.class(), "42" | "22" | "0A" | "IM" | "3F" | "44") || self.login_refused()
    }

    /// Whether it reports a timeout: the ODBC query/login timeout (HYT00, HYT01), PostgreSQL's
    /// statement or lock timeout (57014, 55P03), MariaDB's `max_statement_time` (1969),
    /// InnoDB's lock wait (1205 — not SQL Server's 1205, a deadlock, SQLSTATE 40001) or SQL
    /// Server's `LOCK_TIMEOUT` (1222).
    pub(super) fn timed_out(&self) -> bool {
        matches!(
            self.state.as_str(),
            "HYT00" | "HYT01" | "57014" | "55P03" | "70100"
        ) || (!self.deadlocked() && matches!(self.native, 1205 | 1969 | 1222 | 3024))
    }

    /// The crate's error for this diagnostic.
    pub(super) fn into_error(self, operation: &'static str, timeout: Duration) -> Error {
        if self.timed_out() {
            return Error::Timeout {
                backend: BACKEND,
                operation,
                timeout,
            };
        }
        if self.class() == "08" && !self.login_refused() {
            return Error::Unavailable {
                backend: BACKEND,
                source: Box::new(self),
            };
        }
        Error::Backend {
            backend: BACKEND,
            operation,
            transient: !self.permanent(),
            source: Box::new(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag(state: &str, native: i32, message: &str) -> Diag {
        Diag {
            state: state.into(),
            native,
            message: message.into(),
        }
    }

    #[test]
    fn sqlstates_are_classified() {
        let t = Duration::from_secs(1);
        let transient = |d: Diag| d.into_error("renew", t).is_transient();
        assert!(matches!(
            diag("HYT00", 0, "timeout").into_error("renew", t),
            Error::Timeout { .. }
        ));
        assert!(matches!(
            diag("08S01", 0, "link").into_error("renew", t),
            Error::Unavailable { .. }
        ));
        assert!(transient(diag("40001", 1213, "deadlock")));
        assert!(!transient(diag("42000", 1064, "syntax")));
        assert!(!transient(diag("42S02", 1146, "no table")));
        assert!(!transient(diag("28000", 1045, "Access denied")));
        assert!(!transient(diag("IM002", 0, "no driver")));
        assert!(!transient(diag(
            "08001",
            101,
            "FATAL:  password authentication failed for user \"leader\""
        )));
        assert!(transient(diag("08001", 101, "Connection refused")));
        assert!(diag("HY000", 2013, "Lost connection").connection_lost());
        assert!(matches!(
            diag("HY000", 1205, "Lock wait timeout").into_error("acquire", t),
            Error::Timeout { .. }
        ));
    }
}
