//! The crate's one clock for leadership deadlines. A leader's deadline must keep running while
//! the machine is suspended (or its VM paused), because the backend's timers do: after a
//! resume, a peer may already lead. `std::time::Instant` does not count suspended time on
//! Linux (it is `CLOCK_MONOTONIC`), so deadlines here are [`Moment`]s of `CLOCK_BOOTTIME`,
//! which does. Elsewhere `Instant` is used: on Windows it counts suspended time; on macOS and
//! the BSDs it may not (documented in the README). Provider calls still take `Instant`
//! deadlines — a timeout that ends late after a suspend is harmless — converted here.
//!
//! Each elector's [`Clock`] can be moved forward in the crate's own tests, to show what a
//! suspend does to a leader.

use std::ops::Add;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A point in time on the suspend-counting clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Moment(Duration);

impl Moment {
    /// How long after `earlier` this is; zero if it is not after.
    pub(crate) fn saturating_duration_since(self, earlier: Moment) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Moment {
    type Output = Moment;
    fn add(self, d: Duration) -> Moment {
        Moment(self.0.saturating_add(d))
    }
}

/// The clock of one elector: the system's suspend-counting clock, plus what a test skipped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clock {
    skipped_ns: Arc<AtomicU64>,
}

impl Clock {
    /// Now.
    pub(crate) fn now(&self) -> Moment {
        Moment(system_now() + Duration::from_nanos(self.skipped_ns.load(Ordering::SeqCst)))
    }

    /// The `Instant` that corresponds to `at` (now, if `at` has passed).
    pub(crate) fn instant_at(&self, at: Moment) -> Instant {
        let left = at.saturating_duration_since(self.now());
        Instant::now()
            .checked_add(left)
            .unwrap_or_else(Instant::now)
    }

    /// Moves this clock forward by `d`, as a suspend of the machine would (tests).
    #[cfg(test)]
    pub(crate) fn skip(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.skipped_ns.fetch_add(ns, Ordering::SeqCst);
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn system_now() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn system_now() -> Duration {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_the_monotonic_clock_and_skips_forward() {
        let clock = Clock::default();
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = clock.now();
        assert!(b.saturating_duration_since(a) >= Duration::from_millis(20));
        clock.skip(Duration::from_secs(10));
        assert!(clock.now().saturating_duration_since(b) >= Duration::from_secs(10));
        let soon = clock.now() + Duration::from_millis(500);
        let i = clock.instant_at(soon);
        assert!(i > Instant::now() && i <= Instant::now() + Duration::from_millis(500));
        assert_eq!(a + Duration::MAX, Moment(Duration::MAX));
    }
}
