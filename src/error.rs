//! The crate's one error type.

use std::time::Duration;

/// A boxed error from a backend client library, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in this crate.
///
/// [`Error::is_transient`] tells errors worth retrying (the backend is unreachable, slow or
/// briefly unhappy) from permanent ones (bad configuration, bad credentials, a corrupt record).
/// The heartbeat thread retries both kinds with back-off, because a backend that is misconfigured
/// now may be fixed later, but it logs permanent errors at a higher level.
///
/// `Display` never repeats the cause: walk [`std::error::Error::source`] for it. No variant ever
/// carries a password, key or token in its text.
///
/// ```
/// use leader_election::{Elector, MemoryProvider};
///
/// let err = Elector::builder(MemoryProvider::new()).group("").build().unwrap_err();
/// assert!(!err.is_transient());
/// assert!(err.to_string().contains("group"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option or identifier is invalid. `field` names the option, `rule` the rule it broke.
    #[error("invalid {field}: {rule}")]
    InvalidConfig {
        /// The option or argument at fault, e.g. `"group"` or `"lease_ttl"`.
        field: &'static str,
        /// The rule it broke, in words.
        rule: String,
    },

    /// The backend could not be reached (connection refused, reset, DNS failure, TLS failure).
    #[error("{backend}: cannot reach the server")]
    Unavailable {
        /// The provider's name, e.g. `"postgres"`.
        backend: &'static str,
        /// What the client library reported.
        #[source]
        source: BoxError,
    },

    /// A backend call did not finish within its deadline.
    #[error("{backend}: {operation} did not finish within {timeout:?}")]
    Timeout {
        /// The provider's name.
        backend: &'static str,
        /// What was being done, e.g. `"renew"`.
        operation: &'static str,
        /// How long the call was allowed to take.
        timeout: Duration,
    },

    /// The backend answered with an error.
    #[error("{backend}: {operation} failed")]
    Backend {
        /// The provider's name.
        backend: &'static str,
        /// What was being done, e.g. `"acquire"`.
        operation: &'static str,
        /// Whether retrying the same call later may succeed.
        transient: bool,
        /// What the client library or server reported.
        #[source]
        source: BoxError,
    },

    /// A leader record stored in the backend could not be understood.
    #[error("{backend}: corrupt leader record for group {group:?}: {detail}")]
    Corrupt {
        /// The provider's name.
        backend: &'static str,
        /// The election group whose record is corrupt.
        group: String,
        /// What is wrong with it.
        detail: String,
    },

    /// A local I/O operation failed (file provider, thread spawn).
    #[error("{operation} failed")]
    Io {
        /// What was being done, e.g. `"opening lock file /var/run/app/jobs.lock"`.
        operation: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The process is too close to one of its resource limits (memory mappings, address
    /// space, threads) to start another elector safely: starting it could make a thread that
    /// already runs fail an allocation and abort the whole process. The electors already
    /// running are unaffected; stopping some, or raising the limit, makes room.
    #[error("cannot start another elector: the process is near its {resource} limit ({detail})")]
    ResourceLimit {
        /// The limit, e.g. `"memory mapping (vm.max_map_count)"`.
        resource: &'static str,
        /// The figures: the limit and what is in use.
        detail: String,
    },

    /// The elector was already started.
    #[error("the elector is already running")]
    AlreadyStarted,

    /// The elector has shut down (or its heartbeat thread is gone).
    #[error("the elector has shut down")]
    ShutDown,

    /// An error injected by [`crate::FaultyProvider`].
    #[error("injected fault in {operation}")]
    Injected {
        /// The call that failed.
        operation: &'static str,
        /// Whether the injected fault claims to be transient.
        transient: bool,
    },
}

impl Error {
    /// Whether retrying later may succeed: `true` for unreachable or slow backends and for
    /// backend errors marked transient, `false` for configuration, corruption and state errors.
    ///
    /// ```
    /// use leader_election::Error;
    /// use std::time::Duration;
    ///
    /// let e = Error::Timeout { backend: "redis", operation: "renew", timeout: Duration::from_secs(1) };
    /// assert!(e.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::ResourceLimit { .. } => true,
            Error::Backend { transient, .. } | Error::Injected { transient, .. } => *transient,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            Error::InvalidConfig { .. }
            | Error::Corrupt { .. }
            | Error::AlreadyStarted
            | Error::ShutDown => false,
        }
    }

    /// The error followed by each of its sources, `": "`-separated: what a log line should
    /// show.
    ///
    /// ```
    /// use leader_election::Error;
    ///
    /// let e = Error::Backend {
    ///     backend: "redis",
    ///     operation: "renew",
    ///     transient: true,
    ///     source: "connection reset by peer".into(),
    /// };
    /// assert_eq!(e.report(), "redis: renew failed: connection reset by peer");
    /// ```
    pub fn report(&self) -> String {
        let mut s = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(cause) = src {
            s.push_str(": ");
            s.push_str(&cause.to_string());
            src = cause.source();
        }
        s
    }

    /// Shorthand for [`Error::InvalidConfig`].
    pub(crate) fn config(field: &'static str, rule: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field,
            rule: rule.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(operation: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            operation: operation.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_does_not_repeat_the_source() {
        let e = Error::Backend {
            backend: "redis",
            operation: "renew",
            transient: true,
            source: "connection reset by peer".into(),
        };
        assert_eq!(e.to_string(), "redis: renew failed");
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("connection reset by peer")
        );
        assert!(e.is_transient());
    }

    #[test]
    fn config_errors_are_permanent() {
        let e = Error::config("group", "must not be empty");
        assert!(!e.is_transient());
        assert_eq!(e.to_string(), "invalid group: must not be empty");
    }
}
