//! What the scale benchmark measures inside one process: a [`Probe`] provider that forwards to
//! the real one and counts renews and the slack each confirmed renew left before the
//! elector's deadline, and readings of the process from `/proc` (threads, memory, CPU time).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use leader_election::{
    AcquireRequest, Acquisition, Capabilities, LeaderInfo, Lease, Provider, Renewal, Result,
    Wakeup, Watch,
};
use parking_lot::Mutex;

/// Forwards to `inner`, counting renews and tracking the smallest slack.
#[derive(Clone)]
pub struct Probe {
    inner: Arc<dyn Provider>,
    /// How long a term lasts after the send time of its last confirmed call (TTL − margin).
    validity: Duration,
    pub stats: Arc<ProbeStats>,
}

#[derive(Default)]
pub struct ProbeStats {
    pub renews: AtomicU64,
    pub renew_errors: AtomicU64,
    /// Send time of each group's last confirmed acquire or renew.
    confirmed: Mutex<HashMap<String, Instant>>,
    /// Smallest `confirmed + validity − answer time` seen, in µs (`u64::MAX`: none yet).
    min_slack_us: AtomicU64,
    measuring: std::sync::atomic::AtomicBool,
}

impl ProbeStats {
    /// Starts (or stops) recording slack.
    pub fn measure(&self, on: bool) {
        self.min_slack_us.store(u64::MAX, Ordering::SeqCst);
        self.measuring.store(on, Ordering::SeqCst);
    }

    /// The smallest slack while measuring, if any renew was confirmed.
    pub fn min_slack(&self) -> Option<Duration> {
        match self.min_slack_us.load(Ordering::SeqCst) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

impl Probe {
    pub fn new(inner: Arc<dyn Provider>, validity: Duration) -> Self {
        Probe {
            inner,
            validity,
            stats: Arc::default(),
        }
    }
}

impl Provider for Probe {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn try_acquire(&self, request: &AcquireRequest, deadline: Instant) -> Result<Acquisition> {
        let sent = Instant::now();
        let out = self.inner.try_acquire(request, deadline);
        if let Ok(Acquisition::Acquired(_)) = &out {
            self.stats
                .confirmed
                .lock()
                .insert(request.group.clone(), sent);
        }
        out
    }
    fn renew(&self, lease: &Lease, deadline: Instant) -> Result<Renewal> {
        let sent = Instant::now();
        let out = self.inner.renew(lease, deadline);
        let answered = Instant::now();
        self.stats.renews.fetch_add(1, Ordering::Relaxed);
        match &out {
            Ok(Renewal::Renewed) => {
                let previous = self
                    .stats
                    .confirmed
                    .lock()
                    .insert(lease.info.group.clone(), sent);
                if let Some(previous) = previous
                    && self.stats.measuring.load(Ordering::Relaxed)
                {
                    let slack = (previous + self.validity).saturating_duration_since(answered);
                    let us = u64::try_from(slack.as_micros()).unwrap_or(u64::MAX - 1);
                    self.stats.min_slack_us.fetch_min(us, Ordering::SeqCst);
                }
            }
            _ => {
                self.stats.renew_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        out
    }
    fn release(&self, lease: &Lease, deadline: Instant) -> Result<()> {
        self.inner.release(lease, deadline)
    }
    fn withdraw(&self, group: &str, participant_id: &str, deadline: Instant) -> Result<()> {
        self.inner.withdraw(group, participant_id, deadline)
    }
    fn leader(&self, group: &str, deadline: Instant) -> Result<Option<LeaderInfo>> {
        self.inner.leader(group, deadline)
    }
    fn watch(&self, group: &str, wakeup: Wakeup) -> Result<Option<Watch>> {
        self.inner.watch(group, wakeup)
    }
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`) or a count (`Threads`).
pub fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Context switches (voluntary and not) of every thread of the process: each is a wake-up.
pub fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// CPU time (user + system) of the whole process.
pub fn process_cpu() -> Duration {
    rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime).into_duration()
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime).into_duration()
}

trait IntoDuration {
    fn into_duration(self) -> Duration;
}

impl IntoDuration for rustix::time::Timespec {
    fn into_duration(self) -> Duration {
        Duration::new(
            u64::try_from(self.tv_sec).unwrap_or(0),
            u32::try_from(self.tv_nsec).unwrap_or(0),
        )
    }
}

/// CPU time per renew of `provider` called directly in a loop on this thread (the client's
/// own cost of one renew, without any elector), and its wall time.
pub fn raw_renew_cost(provider: &dyn Provider, group: &str, calls: u32) -> (Duration, Duration) {
    // Long enough that the loop never races the lease's expiry; within what the backend
    // honours (ZooKeeper: its session timeout).
    let ttl = Duration::from_secs(30).min(provider.capabilities().max_lease_ttl);
    let deadline = || Instant::now() + Duration::from_secs(10);
    let req = AcquireRequest::new(group, "raw", ttl);
    let lease = match provider.try_acquire(&req, deadline()) {
        Ok(Acquisition::Acquired(lease)) => lease,
        other => panic!("raw renew: cannot acquire {group}: {other:?}"),
    };
    for _ in 0..calls / 10 {
        let _ = provider.renew(&lease, deadline());
    }
    let cpu = thread_cpu();
    let wall = Instant::now();
    for _ in 0..calls {
        match provider.renew(&lease, deadline()) {
            Ok(Renewal::Renewed) => {}
            other => panic!("raw renew failed: {other:?}"),
        }
    }
    let per = |d: Duration| d / calls;
    let out = (per(thread_cpu() - cpu), per(wall.elapsed()));
    let _ = provider.release(&lease, deadline());
    out
}
