//! Telemetry through the `metrics` facade (feature `metrics`): the heartbeat reports terms
//! won, leadership lost by reason, campaign and renew latency, and backend errors by kind, and
//! the application's own exporter (Prometheus, StatsD, …) publishes them. Without the feature
//! every function here is empty and compiles away.
//!
//! | Name | Kind | Labels |
//! |---|---|---|
//! | `leader_election_terms_won_total` | counter | `group`, `backend` |
//! | `leader_election_leadership_lost_total` | counter | `group`, `backend`, `reason` |
//! | `leader_election_campaign_seconds` | histogram | `group`, `backend`, `outcome` (`acquired`, `held`, `error`) |
//! | `leader_election_renew_seconds` | histogram | `group`, `backend`, `outcome` (`renewed`, `lost`, `error`) |
//! | `leader_election_backend_errors_total` | counter | `group`, `backend`, `operation`, `kind` (`unavailable`, `timeout`, `transient`, `permanent`) |

use std::time::Duration;

use crate::change::LostReason;
use crate::error::Error;

/// A term began.
pub(crate) fn term_won(group: &str, backend: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("leader_election_terms_won_total",
        "group" => group.to_owned(), "backend" => backend)
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (group, backend);
}

/// A term ended.
pub(crate) fn leadership_lost(group: &str, backend: &'static str, reason: LostReason) {
    #[cfg(feature = "metrics")]
    metrics::counter!("leader_election_leadership_lost_total",
        "group" => group.to_owned(), "backend" => backend, "reason" => reason_label(reason))
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (group, backend, reason);
}

/// A campaign (`renew == false`) or renew was answered after `took`.
pub(crate) fn call_answered(
    group: &str,
    backend: &'static str,
    renew: bool,
    outcome: &'static str,
    took: Duration,
) {
    #[cfg(feature = "metrics")]
    {
        let name = if renew {
            "leader_election_renew_seconds"
        } else {
            "leader_election_campaign_seconds"
        };
        metrics::histogram!(name, "group" => group.to_owned(), "backend" => backend,
            "outcome" => outcome)
        .record(took.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (group, backend, renew, outcome, took);
}

/// A backend call failed.
pub(crate) fn backend_error(
    group: &str,
    backend: &'static str,
    operation: &'static str,
    e: &Error,
) {
    #[cfg(feature = "metrics")]
    {
        let kind = match e {
            Error::Unavailable { .. } => "unavailable",
            Error::Timeout { .. } => "timeout",
            _ if e.is_transient() => "transient",
            _ => "permanent",
        };
        metrics::counter!("leader_election_backend_errors_total", "group" => group.to_owned(),
            "backend" => backend, "operation" => operation, "kind" => kind)
        .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (group, backend, operation, e);
}

#[cfg(feature = "metrics")]
fn reason_label(reason: LostReason) -> &'static str {
    match reason {
        LostReason::DeadlinePassed => "deadline_passed",
        LostReason::Superseded => "superseded",
        LostReason::Resigned => "resigned",
        LostReason::ShutDown => "shut_down",
    }
}
