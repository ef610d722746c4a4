//! The watch thread against the double's faults: spurious early returns and zero indexes are
//! paced, an index that goes backwards resets the watch, errors back off without spinning.

use super::*;

/// The watch thread: a follower waiting on `group` behind a provider watching it.
struct Watching {
    double: ConsulDouble,
    prefix: String,
    a: ConsulProvider,
    woken: leader_election::crossbeam_channel::Receiver<()>,
    _watch: leader_election::Watch,
    _b: ConsulProvider,
}

impl Watching {
    fn start(wait: Duration) -> Watching {
        let double = ConsulDouble::start();
        let t = Target::at(&double.url(), None);
        let options = t.options.clone().watch_wait(wait);
        let b = ConsulProvider::new(options).unwrap();
        let (wakeup, woken) = Wakeup::channel();
        let watch = b.watch("w", wakeup).unwrap().expect("a watch");
        let w = Watching {
            a: t.provider(),
            prefix: t.prefix.clone(),
            double,
            woken,
            _watch: watch,
            _b: b,
        };
        w.hand_off("fresh");
        w
    }

    /// A term of `a` on `w` begins and ends: the watch must wake within `within`.
    fn hand_off_within(&self, round: &str, within: Duration) {
        let lease = must_acquire(&self.a, "w", "a", Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
        while self.woken.try_recv().is_ok() {}
        self.a.release(&lease, deadline()).unwrap();
        assert!(
            self.woken.recv_timeout(within).is_ok(),
            "{round}: no wake-up within {within:?} of a release"
        );
    }

    fn hand_off(&self, round: &str) {
        self.hand_off_within(round, Duration::from_secs(5));
    }

    /// Blocking-query requests (with or without an index) made during `d`.
    fn queries_during(&self, d: Duration) -> u64 {
        let count = || self.double.requests("kv-blocking") + self.double.requests("kv");
        let before = count();
        std::thread::sleep(d);
        count() - before
    }
}

/// CPU time of this process's Consul watch threads (all of them: other tests run too).
fn watch_threads_cpu() -> Duration {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "le-consul-watch" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 10)
}

/// Spurious early returns and a zero `X-Consul-Index` are paced, not spun on.
#[test]
fn the_watch_paces_early_returns_and_zero_indexes() {
    let w = Watching::start(Duration::from_secs(60));
    w.double.faults(|f| f.early_returns = true);
    let n = w.queries_during(Duration::from_secs(3));
    eprintln!("early returns: {n} blocking queries in 3 s");
    assert!(n < 30, "{n} queries in 3 s: not paced");
    w.double.heal();
    w.hand_off_within("after early returns", Duration::from_secs(10));
    w.double.faults(|f| f.zero_index = true);
    // A change ends the pending query; from then on every answer says index 0.
    let l = must_acquire(&w.a, "other", "a", Duration::from_secs(30));
    w.a.release(&l, deadline()).unwrap();
    let n = w.queries_during(Duration::from_secs(3));
    eprintln!("zero index: {n} queries in 3 s");
    assert!(n < 30, "{n} queries in 3 s: not paced");
    w.double.heal();
    w.hand_off_within("after zero indexes", Duration::from_secs(10));
}

/// An index that goes backwards — a snapshot restore, a reaped tombstone — resets the watch,
/// which would otherwise wait for an index the cluster will not reach for long.
#[test]
fn the_watch_resets_when_the_index_goes_backwards() {
    let w = Watching::start(Duration::from_secs(2));
    let snapshot = w.double.snapshot();
    // Move the index well past the snapshot's.
    for _ in 0..20 {
        let l = must_acquire(&w.a, "other", "a", Duration::from_secs(30));
        w.a.release(&l, deadline()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    w.double.restore(&snapshot);
    std::thread::sleep(Duration::from_millis(500));
    // Fewer writes than were undone: a watch still waiting for the old index would miss it.
    w.hand_off("after a snapshot restore");
    // The newest change under the prefix is a delete; reaping its tombstone lowers the
    // prefix's index (later writes still take higher Raft indexes, so this one is about the
    // watch surviving it, not about a missed change).
    let l = must_acquire(&w.a, "other", "a", Duration::from_secs(30));
    w.a.release(&l, deadline()).unwrap();
    w.double.delete(&format!("{}other", w.prefix));
    std::thread::sleep(Duration::from_millis(300));
    w.double.reap_tombstones();
    std::thread::sleep(Duration::from_secs(3)); // the blocking query times out with the lower index
    w.hand_off("after tombstones were reaped");
}

/// 503, 429 and 500 "No cluster leader" on the blocking queries: the watch backs off without
/// spinning, and works again afterwards.
#[test]
fn the_watch_backs_off_on_errors_without_spinning() {
    let w = Watching::start(Duration::from_secs(60));
    let cpu = watch_threads_cpu();
    let mut total = 0;
    for (i, (status, body)) in [(503, ""), (429, ""), (500, "No cluster leader")]
        .into_iter()
        .enumerate()
    {
        w.double
            .faults(|f| f.blocking_status = Some((status, body)));
        if i == 0 {
            // A change ends the pending query; the next ones meet the fault.
            let l = must_acquire(&w.a, "other", "a", Duration::from_secs(30));
            w.a.release(&l, deadline()).unwrap();
        }
        let n = w.double.requests("kv-blocking");
        std::thread::sleep(Duration::from_secs(3));
        let n = w.double.requests("kv-blocking") - n;
        eprintln!("HTTP {status}: {n} blocking queries in 3 s");
        total += n;
    }
    let cpu = watch_threads_cpu().saturating_sub(cpu);
    eprintln!("errors: {total} queries and {cpu:?} of watch-thread CPU in 9 s");
    assert!(total >= 3, "the fault was never met: {total} queries");
    assert!(total < 30, "{total} queries in 9 s: no back-off");
    assert!(cpu < Duration::from_millis(500), "{cpu:?} of CPU");
    w.double.heal();
    w.hand_off_within("after the errors", Duration::from_secs(15));
}
