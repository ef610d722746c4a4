//! The idle-follower scenario of the scale benchmark: one leader and `followers` idle
//! followers on one group, and the requests the server answers per second meanwhile, read
//! from the server's own counters (Redis `total_commands_processed`, PostgreSQL's committed
//! and rolled-back transactions, ZooKeeper's `zk_packets_received`). "Before" polls every
//! retry interval (`idle_poll_interval` = the retry interval); "after" is the default.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use leader_election::{ChangesExt, Elector};

use crate::{HEARTBEAT, RETRY, TTL, provider, url};

/// The server's request counter for `backend`.
fn server_requests(backend: &str) -> u64 {
    match backend {
        "redis" => redis_commands(),
        "postgres" => postgres_transactions(),
        "zookeeper" => zookeeper_packets(),
        other => panic!("no request counter for {other}"),
    }
}

#[cfg(feature = "redis")]
fn redis_commands() -> u64 {
    let client = redis::Client::open(url("redis")).expect("redis url");
    let mut con = client.get_connection().expect("redis connection");
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut con)
        .expect("INFO stats");
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_commands_processed")
}

#[cfg(not(feature = "redis"))]
fn redis_commands() -> u64 {
    panic!("built without the redis feature")
}

#[cfg(feature = "postgres")]
fn postgres_transactions() -> u64 {
    let mut client =
        postgres::Client::connect(&url("postgres"), postgres::NoTls).expect("postgres");
    let row = client
        .query_one(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database
              WHERE datname = current_database()",
            &[],
        )
        .expect("pg_stat_database");
    u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)
}

#[cfg(not(feature = "postgres"))]
fn postgres_transactions() -> u64 {
    panic!("built without the postgres feature")
}

fn zookeeper_packets() -> u64 {
    let hosts = std::env::var("LE_ZOOKEEPER_HOSTS").unwrap_or_else(|_| "127.0.0.1:2181".into());
    let host = hosts.split(',').next().unwrap_or("127.0.0.1:2181");
    let mut s = std::net::TcpStream::connect(host).expect("zookeeper");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"mntr").expect("mntr");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find_map(|l| l.strip_prefix("zk_packets_received"))
        .and_then(|v| v.trim().parse().ok())
        .expect("zk_packets_received")
}

/// Runs the scenario and returns its `RESULT` line.
pub fn run(backend: &str, followers: usize, before: bool, window: Duration) -> String {
    let p = provider(backend);
    let group = format!("idle-{}-{backend}", std::process::id());
    let start = |id: String| {
        let mut b = Elector::builder(p.clone())
            .group(&group)
            .participant_id(id)
            .lease_ttl(TTL)
            .heartbeat_interval(HEARTBEAT)
            .retry_interval(RETRY);
        if before {
            b = b.idle_poll_interval(RETRY);
        }
        b.start().unwrap_or_else(|e| panic!("{}", e.report()))
    };
    let leader = start("leader".into());
    leader.subscribe().take_until_leader().for_each(drop);
    let all: Vec<Elector> = (0..followers).map(|i| start(format!("f{i}"))).collect();
    let end = Instant::now() + Duration::from_secs(60);
    while all.iter().any(|f| !f.status().watch_established) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let watching = all.iter().filter(|f| f.status().watch_established).count();
    // Let the start-up campaigns pass.
    std::thread::sleep(TTL);
    let r0 = server_requests(backend);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let requests = server_requests(backend) - r0;
    let rate = requests as f64 / t0.elapsed().as_secs_f64();
    assert!(leader.is_leader(), "the leader lost its group");
    for f in all {
        let _ = f.shutdown();
    }
    let _ = leader.shutdown();
    format!(
        "RESULT backend={backend} followers={followers} watching={watching} mode={} \
         requests={requests} rate={rate:.1}",
        if before { "before" } else { "after" }
    )
}
