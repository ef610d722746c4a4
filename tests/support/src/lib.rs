//! Helpers shared by the integration tests of `leader-election` (a dev-only crate, never
//! published): unique names, polling, thread and CPU readings, error chains and elector
//! helpers here; one module per server — [`postgres`], [`redis`], [`zookeeper`], [`odbc`]
//! (MariaDB, and the ODBC driver registry) — with the
//! shared server's URL and a private instance a test may stop, restart or break at will; and
//! [`tls`] for test certificates.
//!
//! The shared servers (started by `scripts/services.sh` or docker compose) serve the
//! conformance suites. Tests that restart or break a server start their own instance on a free
//! port from the locally installed binaries; a missing binary fails the test.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

pub mod odbc;
pub mod postgres;
pub mod redis;
pub mod tls;
pub mod zookeeper;

pub use odbc::{PrivateMariaDb, mariadb_odbc, mssql_odbc, odbc_setup, postgres_odbc};
pub use postgres::{PrivatePostgres, postgres_url};
pub use redis::{PrivateRedis, redis_url};
pub use tls::make_tls_certs;
pub use zookeeper::{PrivateZooKeeper, zookeeper_hosts};

/// An environment variable or a default.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A unique name for a group, table or key prefix.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff
    )
}

/// A free TCP port on 127.0.0.1 (racy, but fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it is true or `within` passes.
pub fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The names of this process's threads.
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The number of threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

pub(crate) fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// This process's CPU time (user + system) so far.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// An error with all its sources, as a log line would show them.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s += &format!(": {c}");
        src = c.source();
    }
    s
}

/// Starts a leader and a follower with a 30 s retry interval, then shuts the leader down:
/// the follower must lead within seconds — well before its next poll, and before `ttl` if
/// that is long — which only the provider's push channel (NOTIFY, pub/sub, watches) can make
/// happen. Returns how long the hand-off took.
pub fn assert_push_hand_off<P: leader_election::Provider>(
    ttl: Duration,
    make: impl Fn() -> P,
) -> Duration {
    use leader_election::{ChangesExt, Elector, LeadershipChange};
    let g = unique("handoff").replace('_', "-");
    let start_one = |id: &str| {
        Elector::builder(make())
            .group(&g)
            .participant_id(id)
            .lease_ttl(ttl)
            .heartbeat_interval(ttl / 4)
            .retry_interval(Duration::from_secs(30))
            .start()
            .unwrap()
    };
    let a = start_one("a");
    a.subscribe().take_until_leader().for_each(drop);
    let ta = a.fencing_token().expect("a leads");
    let b = start_one("b");
    let mut b_changes = b.subscribe();
    // b has campaigned once and now waits (its next poll is 15–30 s away).
    assert!(matches!(
        b_changes.recv_timeout(Duration::from_secs(10)),
        Ok(LeadershipChange::LeaderChanged { leader: Some(_) })
    ));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    a.shutdown().unwrap();
    let acquired = b_changes.find(|c| c.is_acquired());
    let took = start.elapsed();
    match acquired {
        Some(LeadershipChange::Acquired { fencing_token, .. }) => assert!(fencing_token > ta),
        other => panic!("b did not take over: {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "hand-off took {took:?}");
    took
}

/// An elector with a 3 s lease, renewing every `heartbeat`, campaigning every 200 ms: quick
/// enough for outage tests against private servers.
pub fn fast_elector<P: leader_election::Provider>(
    provider: P,
    group: &str,
    heartbeat: Duration,
) -> leader_election::Elector {
    leader_election::Elector::builder(provider)
        .group(group)
        .lease_ttl(Duration::from_secs(3))
        .heartbeat_interval(heartbeat)
        .retry_interval(Duration::from_millis(200))
        .start()
        .unwrap()
}

/// Waits up to `within` for an `Acquired` change (skipping others); returns its token and
/// when it arrived.
pub fn wait_acquired(changes: &leader_election::Changes, within: Duration) -> (u64, Instant) {
    use leader_election::LeadershipChange;
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(LeadershipChange::Acquired { fencing_token, .. }) =
            changes.recv_timeout(Duration::from_millis(100))
        {
            return (fencing_token, Instant::now());
        }
    }
    panic!("no leadership within {within:?}");
}

/// For a provider built lazily while its server is down: an elector on it does not lead,
/// then leads within 20 s of `start_server` running.
pub fn assert_leads_once_the_server_starts<P: leader_election::Provider>(
    provider: P,
    start_server: impl FnOnce(),
) {
    use leader_election::EventKinds;
    let e = fast_elector(provider, "down-at-start", Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(800));
    assert!(!e.is_leader(), "led while the server was down");
    start_server();
    let changes = e.subscribe_filtered(EventKinds::ACQUIRED);
    assert!(
        changes.recv_timeout(Duration::from_secs(20)).is_ok(),
        "no leadership within 20 s of the server starting"
    );
    e.shutdown().unwrap();
}

/// Waits up to `within` for the next change, which must be a step-down on the local deadline;
/// returns when it arrived.
pub fn expect_deadline_step_down(changes: &leader_election::Changes, within: Duration) -> Instant {
    use leader_election::{LeadershipChange, LostReason};
    let lost = changes.recv_timeout(within);
    let at = Instant::now();
    assert!(
        matches!(
            lost,
            Ok(LeadershipChange::Lost {
                reason: LostReason::DeadlinePassed,
                ..
            })
        ),
        "expected a step-down on the deadline, got {lost:?}"
    );
    at
}
