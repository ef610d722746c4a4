//! Heartbeat cost per provider: one renew, and one acquire + release cycle.
//!
//! ```text
//! cargo bench --bench heartbeat --all-features
//! ```
//!
//! Network providers are measured next to one raw round trip of the same client, so their
//! overhead reads as a ratio; a provider whose server is not reachable is skipped with a note.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use leader_election::{AcquireRequest, Acquisition, Lease, Provider};

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn group(name: &str) -> String {
    format!("bench-{name}-{}", std::process::id())
}

/// Acquires `group` or panics (benchmarks run on a fresh group).
fn acquire(p: &dyn Provider, group: &str, who: &str) -> Lease {
    let req = AcquireRequest::new(group, who, Duration::from_secs(30));
    match p.try_acquire(&req, deadline()).expect("acquire") {
        Acquisition::Acquired(l) => l,
        Acquisition::Held(l) => panic!("{group} is held by {l:?}"),
    }
}

/// Benchmarks renew and acquire+release for `p` under the name `name`.
fn bench_provider(c: &mut Criterion, name: &str, p: &dyn Provider) {
    let mut g = c.benchmark_group(name);
    let renew_group = group(&format!("{name}-renew"));
    let lease = acquire(p, &renew_group, "bench");
    g.bench_function("renew", |b| {
        b.iter(|| black_box(p.renew(&lease, deadline()).expect("renew")))
    });
    p.release(&lease, deadline()).expect("release");

    let cycle_group = group(&format!("{name}-cycle"));
    g.bench_function("acquire+release", |b| {
        b.iter(|| {
            let l = acquire(p, &cycle_group, "bench");
            p.release(&l, deadline()).expect("release");
        })
    });
    g.finish();
}

fn memory(c: &mut Criterion) {
    bench_provider(c, "memory", &leader_election::MemoryProvider::new());
}

#[cfg(feature = "file")]
fn file(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = leader_election::FileProvider::new(dir.path()).expect("file provider");
    bench_provider(c, "file", &p);
}
#[cfg(not(feature = "file"))]
fn file(_: &mut Criterion) {}

/// The same provider bench next to one raw round trip of the same client library, when the
/// server answers; otherwise a note.
#[cfg(feature = "postgres")]
fn postgres(c: &mut Criterion) {
    let url = std::env::var("LE_POSTGRES_URL").unwrap_or_else(|_| {
        "postgres://leader:leader-secret@127.0.0.1:5432/leader_election?sslmode=disable".into()
    });
    let p =
        match leader_election::PostgresProvider::new(leader_election::PostgresOptions::new(&url)) {
            Ok(p) => p,
            Err(e) => return eprintln!("postgres: skipped, server not reachable: {e}"),
        };
    let mut raw = ::postgres::Client::connect(&url, ::postgres::NoTls).expect("raw client");
    let select1 = raw.prepare("SELECT 1").expect("prepare");
    c.bench_function("postgres/raw SELECT 1", |b| {
        b.iter(|| black_box(raw.query_one(&select1, &[]).expect("SELECT 1")))
    });
    bench_provider(c, "postgres", &p);
}
#[cfg(not(feature = "postgres"))]
fn postgres(_: &mut Criterion) {}

#[cfg(feature = "redis")]
fn redis(c: &mut Criterion) {
    let url = std::env::var("LE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let p = match leader_election::RedisProvider::new(leader_election::RedisOptions::new(&url)) {
        Ok(p) => p,
        Err(e) => return eprintln!("redis: skipped, server not reachable: {e}"),
    };
    let mut raw = ::redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("raw client");
    c.bench_function("redis/raw PING", |b| {
        b.iter(|| {
            let pong: String = ::redis::cmd("PING").query(&mut raw).expect("PING");
            black_box(pong)
        })
    });
    bench_provider(c, "redis", &p);
}
#[cfg(not(feature = "redis"))]
fn redis(_: &mut Criterion) {}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = memory, file, postgres, redis
}
criterion_main!(benches);
