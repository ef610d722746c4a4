//! Heartbeat cost per provider: one renew, one acquire + release cycle, and for the watching
//! backends (ZooKeeper, etcd) the hand-off from a release to the successor holding the lease.
//!
//! ```text
//! cargo bench --bench heartbeat --all-features
//! ```
//!
//! Network providers are measured next to one raw round trip of the same client, so their
//! overhead reads as a ratio; a provider whose server is not reachable is skipped with a note.
//! Consul runs against the tests' Consul API double (and a real agent with `LE_CONSUL_ADDR`).

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

/// Hand-off: from the leader's release to its watching successor holding the lease.
#[cfg(any(feature = "zookeeper", feature = "etcd"))]
fn bench_hand_off(c: &mut Criterion, name: &str, a: &dyn Provider, b: &dyn Provider) {
    use leader_election::Wakeup;
    let g = group(&format!("{name}-handoff"));
    let (wakeup, woken) = Wakeup::channel();
    let _watch = b.watch(&g, wakeup).expect("watch");
    c.bench_function(&format!("{name}/hand-off on release"), |bch| {
        bch.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let la = acquire(a, &g, "a");
                let req_b = AcquireRequest::new(&g, "b", Duration::from_secs(30));
                assert!(matches!(
                    b.try_acquire(&req_b, deadline()).expect("campaign"),
                    Acquisition::Held(_)
                ));
                while woken.try_recv().is_ok() {}
                let start = Instant::now();
                a.release(&la, deadline()).expect("release");
                woken.recv_timeout(Duration::from_secs(5)).expect("wake-up");
                let lb = match b.try_acquire(&req_b, deadline()).expect("acquire") {
                    Acquisition::Acquired(l) => l,
                    Acquisition::Held(l) => panic!("still held by {l:?}"),
                };
                total += start.elapsed();
                b.release(&lb, deadline()).expect("release");
            }
            total
        })
    });
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

/// ZooKeeper: the provider next to raw calls of the same client (`zookeeper-client`, whose
/// session task runs on a small executor thread here), and its hand-off next to the client's
/// own lock recipe (Curator's `LeaderLatch` layout) on the same server.
#[cfg(feature = "zookeeper")]
fn zookeeper(c: &mut Criterion) {
    use std::sync::Arc;

    use ::zookeeper_client::{Acls, Client, CreateMode, LockOptions, LockPrefix};
    use leader_election::{ZooKeeperOptions, ZooKeeperProvider};

    struct Spawner(Arc<async_executor::Executor<'static>>);
    impl spawns_core::Spawn for Spawner {
        fn spawn(&self, task: spawns_core::Task) {
            self.0.spawn(std::pin::Pin::from(task.future)).detach();
        }
    }
    let hosts = std::env::var("LE_ZOOKEEPER_HOSTS").unwrap_or_else(|_| "127.0.0.1:2181".into());
    let options = ZooKeeperOptions::new(&hosts)
        .root_path(format!("/le-bench-{}", std::process::id()))
        .session_timeout(Duration::from_secs(30));
    let (a, b) = match (
        ZooKeeperProvider::new(options.clone()),
        ZooKeeperProvider::new(options),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return eprintln!("zookeeper: skipped, server not reachable: {e}");
        }
    };
    let ex = Arc::new(async_executor::Executor::new());
    let runner = ex.clone();
    std::thread::spawn(move || {
        let spawner = Spawner(runner.clone());
        let _scope = spawns_core::enter(&spawner);
        async_io::block_on(runner.run(std::future::pending::<()>()))
    });
    let run = |f: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
        async_io::block_on(ex.spawn(f))
    };
    let connect = |hosts: String| {
        let (tx, rx) = std::sync::mpsc::channel();
        run(Box::pin(async move {
            let c = Client::connector()
                .with_session_timeout(Duration::from_secs(30))
                .connect(&hosts)
                .await;
            let _ = tx.send(c);
        }));
        rx.recv().expect("connect").expect("raw client")
    };
    let raw = connect(hosts.clone());
    c.bench_function("zookeeper/raw exists", |bch| {
        bch.iter(|| black_box(async_io::block_on(raw.check_stat("/")).expect("exists")))
    });
    // The renew is a write (it must reach the ensemble's leader): compare with a raw one too.
    let scratch = format!("/le-bench-scratch-{}", std::process::id());
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    let _ = async_io::block_on(raw.create(&scratch, b"", &ephemeral));
    c.bench_function("zookeeper/raw setData", |bch| {
        bch.iter(|| black_box(async_io::block_on(raw.set_data(&scratch, b"x", None))))
    });
    bench_provider(c, "zookeeper", &a);
    bench_hand_off(c, "zookeeper", &a, &b);

    // The peer recipe: the client's own lock, B queued behind A; from A's delete to B holding.
    let (ra, rb) = (raw, connect(hosts));
    let dir = format!("/le-bench-latch-{}", std::process::id());
    let ex2 = ex.clone();
    c.bench_function(
        "zookeeper/peer recipe hand-off (zookeeper-client lock)",
        |bch| {
            bch.iter_custom(|iters| {
                let (ra, rb, dir, ex2) = (ra.clone(), rb.clone(), dir.clone(), ex2.clone());
                let (tx, rx) = std::sync::mpsc::channel();
                run(Box::pin(async move {
                    let options = || {
                        LockOptions::new(Acls::anyone_all())
                            .with_ancestor_options(
                                CreateMode::Persistent.with_acls(Acls::anyone_all()),
                            )
                            .expect("options")
                    };
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let prefix = LockPrefix::new_curator(&dir, "latch-").expect("prefix");
                        let la = ra
                            .lock(prefix, b"", options())
                            .await
                            .expect("lock a")
                            .into_owned();
                        let (rb2, dir2) = (rb.clone(), dir.clone());
                        let tb = ex2.spawn(async move {
                            let prefix = LockPrefix::new_curator(&dir2, "latch-").expect("prefix");
                            rb2.lock(prefix, b"", options())
                                .await
                                .expect("lock b")
                                .into_owned()
                        });
                        while ra.list_children(&dir).await.map_or(0, |c| c.len()) < 2 {
                            async_io::Timer::after(Duration::from_millis(1)).await;
                        }
                        let start = Instant::now();
                        ra.delete(la.lock_path(), None).await.expect("release a");
                        let lb = tb.await;
                        total += start.elapsed();
                        rb.delete(lb.lock_path(), None).await.expect("release b");
                        drop((la, lb));
                    }
                    let _ = tx.send(total);
                }));
                rx.recv().expect("hand-off loop")
            })
        },
    );
}
#[cfg(not(feature = "zookeeper"))]
fn zookeeper(_: &mut Criterion) {}

#[cfg(feature = "etcd")]
fn etcd(c: &mut Criterion) {
    use leader_election::{EtcdOptions, EtcdProvider};
    let url = std::env::var("LE_ETCD_URL").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let options = EtcdOptions::new(&url).key_prefix(format!("le-bench-{}/", std::process::id()));
    let (a, b) = match (
        EtcdProvider::new(options.clone()),
        EtcdProvider::new(options),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return eprintln!("etcd: skipped, server not reachable: {e}"),
    };
    // Raw calls on a keep-alive agent of the same HTTP library (ureq), JSON in and out.
    let agent = ::ureq::Agent::new_with_defaults();
    let base = url.trim_end_matches('/').to_owned();
    let post = |path: &str, body: &str| {
        let mut r = agent
            .post(&format!("{base}{path}"))
            .header("content-type", "application/json")
            .send(body)
            .expect("raw request");
        r.body_mut().read_to_vec().expect("raw response")
    };
    c.bench_function("etcd/raw range", |bch| {
        bch.iter(|| black_box(post("/v3/kv/range", r#"{"key":"bGUtYmVuY2g="}"#)))
    });
    let grant = post("/v3/lease/grant", r#"{"TTL":"60"}"#);
    let id = serde_json::from_slice::<serde_json::Value>(&grant).expect("grant")["ID"].clone();
    let keepalive = serde_json::json!({ "ID": id }).to_string();
    c.bench_function("etcd/raw keepalive", |bch| {
        bch.iter(|| black_box(post("/v3/lease/keepalive", &keepalive)))
    });
    post("/v3/lease/revoke", &keepalive);
    bench_provider(c, "etcd", &a);
    bench_hand_off(c, "etcd", &a, &b);
}
#[cfg(not(feature = "etcd"))]
fn etcd(_: &mut Criterion) {}
/// Consul against the API double of the tests (no Consul server can be installed here), and
/// against a real agent too when `LE_CONSUL_ADDR` is set: renew (a session renew and a read of
/// the key, two round trips) next to one raw `GET /v1/status/leader` on the same agent.
#[cfg(feature = "consul")]
fn consul(c: &mut Criterion) {
    use leader_election::{ConsulOptions, ConsulProvider, Wakeup};
    let double = le_test_support::ConsulDouble::start();
    let mut targets = vec![("consul-double", double.url())];
    if let Some(addr) = le_test_support::consul_addr() {
        targets.push(("consul-real", addr));
    }
    for (name, url) in targets {
        let mut options =
            ConsulOptions::new(&url).key_prefix(format!("le-bench-{}/", std::process::id()));
        if let Ok(token) = std::env::var("CONSUL_HTTP_TOKEN") {
            options = options.token(token);
        }
        let (a, b) = match (
            ConsulProvider::new(options.clone()),
            ConsulProvider::new(options),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("{name}: skipped, agent not reachable: {e}");
                continue;
            }
        };
        let agent = ::ureq::Agent::new_with_defaults();
        let leader = format!("{url}/v1/status/leader");
        c.bench_function(&format!("{name}/raw GET /v1/status/leader"), |bch| {
            bch.iter(|| {
                let mut resp = agent.get(&leader).call().expect("status/leader");
                black_box(resp.body_mut().read_to_string().expect("body"))
            })
        });
        bench_provider(c, name, &a);

        // Hand-off: from the leader's release to its watching successor holding the lease.
        let g = group(&format!("{name}-handoff"));
        let (wakeup, woken) = Wakeup::channel();
        let _watch = b.watch(&g, wakeup).expect("watch");
        c.bench_function(&format!("{name}/hand-off on release"), |bch| {
            bch.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let la = acquire(&a, &g, "a");
                    let req_b = AcquireRequest::new(&g, "b", Duration::from_secs(30));
                    assert!(matches!(
                        b.try_acquire(&req_b, deadline()).expect("campaign"),
                        Acquisition::Held(_)
                    ));
                    while woken.try_recv().is_ok() {}
                    let start = Instant::now();
                    a.release(&la, deadline()).expect("release");
                    woken.recv_timeout(Duration::from_secs(5)).expect("wake-up");
                    let lb = match b.try_acquire(&req_b, deadline()).expect("acquire") {
                        Acquisition::Acquired(l) => l,
                        Acquisition::Held(l) => panic!("still held by {l:?}"),
                    };
                    total += start.elapsed();
                    b.release(&lb, deadline()).expect("release");
                }
                total
            })
        });
    }
}
#[cfg(not(feature = "consul"))]
fn consul(_: &mut Criterion) {}
/// Azure Blob on Azurite (`LE_AZURITE_URL`): renew (one lease renew) and acquire + release
/// (GET, lease acquire, token write, release) next to one raw signed GET on the same client.
#[cfg(feature = "azure-blob")]
fn azure_blob(c: &mut Criterion) {
    use leader_election::{AzureBlobOptions, AzureBlobProvider};
    let endpoint = std::env::var("LE_AZURITE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:10000/devstoreaccount1".into());
    let key =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let options = AzureBlobOptions::shared_key(&endpoint, "devstoreaccount1", key, "le-bench");
    let p = match AzureBlobProvider::new(options) {
        Ok(p) => p,
        Err(e) => return eprintln!("azure-blob: skipped, Azurite not reachable: {e}"),
    };
    c.bench_function("azure-blob/raw signed GET", |b| {
        b.iter(|| p.ping(black_box(deadline())).expect("GET"))
    });
    bench_provider(c, "azure-blob", &p);
}
#[cfg(not(feature = "azure-blob"))]
fn azure_blob(_: &mut Criterion) {}
/// The ODBC provider on MariaDB and on PostgreSQL (psqlODBC), each next to a raw `SELECT 1`
/// through the same driver (its own connection, a statement executed and fetched per call),
/// and a raw prepared one-row `UPDATE` of the lease table in autocommit — what a renew costs
/// the server (on MariaDB mostly the commit's log flush).
#[cfg(feature = "odbc")]
fn odbc(c: &mut Criterion) {
    use leader_election::{OdbcOptions, OdbcProvider};
    use odbc_api::Cursor;
    le_test_support::odbc_setup();
    for (name, conn, update) in [
        (
            "odbc-mariadb",
            le_test_support::mariadb_odbc(),
            "UPDATE le_bench SET nonce = nonce + 1 WHERE group_name = ?",
        ),
        (
            "odbc-postgres",
            le_test_support::postgres_odbc(),
            "UPDATE le_bench SET expires_at = expires_at WHERE group_name = ?",
        ),
    ] {
        let p = match OdbcProvider::new(OdbcOptions::new(&conn).table("le_bench")) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{name}: skipped, server not reachable: {}", e.report());
                continue;
            }
        };
        let env = odbc_api::environment().expect("ODBC environment");
        let raw = env
            .connect_with_connection_string(&conn, Default::default())
            .expect("raw connection");
        c.bench_function(&format!("{name}/raw SELECT 1"), |b| {
            b.iter(|| {
                let mut cursor = raw
                    .execute("SELECT 1", (), None)
                    .expect("SELECT 1")
                    .expect("a result set");
                while cursor.next_row().expect("fetch").is_some() {}
            })
        });
        let row = group(&format!("{name}-raw"));
        let held = acquire(&p, &row, "bench");
        let mut update = raw.prepare(update).expect("prepare UPDATE");
        c.bench_function(&format!("{name}/raw UPDATE one row"), |b| {
            b.iter(|| {
                use odbc_api::IntoParameter;
                update
                    .execute(&row.as_str().into_parameter())
                    .expect("UPDATE");
            })
        });
        drop(update);
        p.release(&held, deadline()).expect("release");
        bench_provider(c, name, &p);
    }
}
#[cfg(not(feature = "odbc"))]
fn odbc(_: &mut Criterion) {}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = memory, file, postgres, redis, zookeeper, etcd, consul, azure_blob, odbc
}
criterion_main!(benches);
