//! Helpers shared by the integration tests of `leader-election` (a dev-only crate, never
//! published): unique names, polling, thread and CPU readings, error chains and elector
//! helpers here; one module per server — [`postgres`], [`redis`], [`zookeeper`], [`etcd`],
//! [`azurite`], [`odbc`] (MariaDB, and the ODBC driver registry) — with the shared server's URL
//! and a private instance a test may stop, restart or break at will; [`consul_double`], a model
//! of Consul's HTTP API (no Consul server can be installed here); [`tls`] for test
//! certificates; and [`proxy`], a TCP proxy that can drop traffic.
//!
//! The shared servers (started by `scripts/services.sh` or docker compose) serve the
//! conformance suites. Tests that restart or break a server start their own instance on a free
//! port from the locally installed binaries; a missing binary fails the test.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

pub mod azurite;
pub mod consul_double;
pub mod etcd;
pub mod logs;
pub mod odbc;
pub mod postgres;
pub mod proxy;
pub mod redis;
pub mod tls;
pub mod zookeeper;

pub use azurite::{PrivateAzurite, azurite_url};
pub use consul_double::{ConsulDouble, consul_addr};
pub use etcd::{PrivateEtcd, TcpProxy, etcd_url};
pub use odbc::{PrivateMariaDb, mariadb_odbc, mssql_odbc, odbc_setup, postgres_odbc};
pub use postgres::{PrivatePostgres, postgres_url};
pub use proxy::Proxy;
pub use redis::{PrivateRedis, redis_url};
pub use tls::make_tls_certs;
pub use zookeeper::{AcceptAndClose, PrivateZooKeeper, server_tick, zookeeper_hosts};

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

/// Starts a leader `a` and a follower `b` that polls only every 15–30 s (retry interval 30 s),
/// waits until `b`'s watch is established and `b` has campaigned once since (its answer named
/// `a` the leader), then shuts `a` down: `b` must lead within 10 s — before its next poll, and
/// before `ttl` if that is long — which only the provider's push (NOTIFY, pub/sub, watches)
/// can explain. Returns how long the hand-off took.
///
/// Waiting for the watch matters: a listener that (re)subscribes wakes every watcher, so a
/// follower whose subscription completed only after the release would take over even if the
/// push were lost.
pub fn assert_push_hand_off<P: leader_election::Provider>(
    ttl: Duration,
    make: impl Fn() -> P,
) -> Duration {
    use leader_election::{Elector, LeadershipChange};
    const RETRY: Duration = Duration::from_secs(30);
    // Below RETRY / 2, the soonest a jittered poll can come.
    const WITHIN: Duration = Duration::from_secs(10);
    let g = unique("handoff").replace('_', "-");
    let start_one = |id: &str| {
        Elector::builder(make())
            .group(&g)
            .participant_id(id)
            .lease_ttl(ttl)
            .heartbeat_interval(ttl / 4)
            .retry_interval(RETRY)
            .start()
            .unwrap()
    };
    let a = start_one("a");
    let (ta, _) = wait_acquired(&a.subscribe(), Duration::from_secs(20));
    let b = start_one("b");
    let b_changes = b.subscribe();
    // An elector establishes its watch before its first campaign, and campaigns only once the
    // watch call has answered (a failed watch is retried only after four retry intervals): if
    // the watch is established when b learns of a, b has campaigned once since.
    match b_changes.recv_timeout(Duration::from_secs(20)) {
        Ok(LeadershipChange::LeaderChanged { leader: Some(l) }) => {
            assert_eq!((l.participant_id.as_str(), l.fencing_token), ("a", ta));
        }
        other => panic!("b did not learn of a: {other:?}"),
    }
    let status = b.status();
    assert!(
        status.watch_established,
        "b's watch is not established, so only a poll could hand over: {status:?}"
    );
    assert!(!b.is_leader());
    let start = Instant::now();
    a.shutdown().unwrap();
    let end = start + WITHIN;
    let took = loop {
        let left = end.saturating_duration_since(Instant::now());
        match b_changes.recv_timeout(left) {
            Ok(LeadershipChange::Acquired { fencing_token, .. }) => {
                assert!(fencing_token > ta, "token {fencing_token} after {ta}");
                break start.elapsed();
            }
            Ok(_) => {}
            Err(e) => panic!(
                "b did not take over within {WITHIN:?} of the release ({e}): the push was lost"
            ),
        }
    };
    b.shutdown().unwrap();
    took
}

/// An elector on `provider` with a 3 s lease, a 1 s safety margin, a 500 ms heartbeat and a
/// 100 ms retry interval: quick, yet a stall of a second or so on a busy machine does not end
/// its term (it renews four times per term and keeps 1 s spare).
pub fn steady_elector<P: leader_election::Provider>(
    provider: P,
    group: &str,
    id: &str,
) -> leader_election::Elector {
    leader_election::Elector::builder(provider)
        .group(group)
        .participant_id(id)
        .lease_ttl(Duration::from_secs(3))
        .safety_margin(Duration::from_secs(1))
        .heartbeat_interval(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(100))
        .start()
        .unwrap()
}

/// Waits (up to 20 s) until `e` leads; returns its fencing token.
pub fn wait_leader(e: &leader_election::Elector) -> u64 {
    wait_acquired(&e.subscribe(), Duration::from_secs(20)).0
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

/// The child side of [`spawn_leading_child`]: prints `ACQ <token>` once `elector` leads (within
/// 30 s), then waits to be killed.
pub fn report_leadership_until_killed(elector: &leader_election::Elector) {
    use std::io::Write;
    let changes = elector.subscribe_filtered(leader_election::EventKinds::ACQUIRED);
    let mut out = std::io::stdout();
    if let Ok(leader_election::LeadershipChange::Acquired { fencing_token, .. }) =
        changes.recv_timeout(Duration::from_secs(30))
    {
        writeln!(out, "ACQ {fencing_token}").unwrap();
        out.flush().unwrap();
    }
    std::thread::sleep(Duration::from_secs(60)); // until killed
}

/// Runs this test binary's ignored test `role` as a child process, with `env` set, and waits
/// up to 30 s until it prints `ACQ <token>` (it leads). Returns the child, to kill, and that
/// token. The child role prints the line once its elector holds the group.
pub fn spawn_leading_child(role: &str, env: (&str, &str)) -> (std::process::Child, u64) {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--ignored",
            "--exact",
            role,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env.0, env.1)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawning the child role");
    let stdout = child.stdout.take().expect("the child's stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            // libtest prints "test <role> ... " without a newline first.
            if let Some(t) = line.split("ACQ ").nth(1)
                && let Ok(token) = t.trim().parse::<u64>()
            {
                let _ = tx.send(token);
            }
        }
    });
    let token = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the child did not lead");
    (child, token)
}
