//! Deadline helpers shared by every network provider: how much time a call has left, and a
//! client timeout clamped to it. Every backend call is bounded by the caller's deadline; these
//! two functions are the one place that turns a deadline into the timeouts a client library
//! takes (which must never be zero: most clients read a zero timeout as "wait forever").

use std::time::{Duration, Instant};

/// The shortest timeout handed to a client library: many treat `Duration::ZERO` as "no
/// timeout", so a deadline that has just passed still yields a tiny, finite one.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Time left until `deadline`, at least [`MIN_TIMEOUT`].
pub(crate) fn time_left(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_TIMEOUT)
}

/// `timeout` (a client's configured connect or command timeout), cut to the time left until
/// `deadline`; at least [`MIN_TIMEOUT`].
pub(crate) fn clamp(timeout: Duration, deadline: Instant) -> Duration {
    timeout.min(time_left(deadline)).max(MIN_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_zero() {
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(time_left(past), MIN_TIMEOUT);
        assert_eq!(clamp(Duration::ZERO, past), MIN_TIMEOUT);
    }

    #[test]
    fn clamps_to_the_deadline() {
        let soon = Instant::now() + Duration::from_millis(200);
        assert!(clamp(Duration::from_secs(5), soon) <= Duration::from_millis(200));
        assert_eq!(
            clamp(Duration::from_millis(50), soon),
            Duration::from_millis(50)
        );
    }
}
