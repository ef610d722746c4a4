//! `leader_election::connect(url)` against the live servers: a provider from every backend's
//! URL leads, its options come from the query, and no secret in a URL reaches an error or a
//! log line (the log output is captured and searched).

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use le_test_support as common;
use leader_election::{Elector, connect};

/// Every log line of this test binary, formatted with its arguments.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        LOG.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        log::set_boxed_logger(Box::new(Capture)).expect("logger");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

fn assert_no_secret(secret: &str, error: &str) {
    assert!(
        !error.contains(secret),
        "the error shows the secret: {error}"
    );
    let log = LOG.lock().unwrap();
    assert!(
        !log.is_empty(),
        "nothing was logged: the check would prove nothing"
    );
    if let Some(line) = log.iter().find(|l| l.contains(secret)) {
        panic!("a log line shows the secret: {line}");
    }
}

/// Starts an elector on `url`'s provider and waits until it leads.
fn leads(url: &str) {
    let provider = connect(url).unwrap_or_else(|e| panic!("connect: {}", e.report()));
    let elector = Elector::builder(provider)
        .group(common::unique("connect"))
        .lease_ttl(Duration::from_secs(4))
        .heartbeat_interval(Duration::from_secs(1))
        .retry_interval(Duration::from_millis(200))
        .start()
        .unwrap();
    common::wait_acquired(&elector.subscribe(), Duration::from_secs(20));
    elector.shutdown().unwrap();
}

fn with_query(base: &str, query: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{query}")
}

#[test]
fn every_built_backend_leads_from_a_url() {
    capture_logs();
    leads("memory:");
    let dir = tempfile::tempdir().unwrap();
    leads(&format!("file://{}", dir.path().display()));
    leads(&with_query(
        &common::postgres_url(),
        &format!("table={}&command_timeout=2s", common::unique("connect_t")),
    ));
    leads(&with_query(
        &common::redis_url(),
        &format!(
            "key_prefix={}:&command_timeout=2s",
            common::unique("connect")
        ),
    ));
    leads(&format!(
        "zookeeper://{}?session_timeout=6s&root_path=/{}",
        common::zookeeper_hosts(),
        common::unique("connect")
    ));
    common::odbc_setup();
    leads(&format!(
        "odbc:{}?table={}&command_timeout=2s",
        common::mariadb_odbc(),
        common::unique("connect_t")
    ));
    leads(&format!(
        "odbc:{}?table={}&dialect=postgres",
        common::postgres_odbc(),
        common::unique("connect_t")
    ));
}

#[test]
fn secrets_in_urls_stay_out_of_errors_and_logs() {
    capture_logs();
    let pg = common::postgres_url().replace("leader-secret", "Wr0ng-PG-s3cret");
    assert!(
        pg.contains("Wr0ng-PG-s3cret"),
        "the PostgreSQL URL has no password to replace"
    );
    let e = connect(&pg)
        .err()
        .expect("a wrong password is refused")
        .report();
    assert_no_secret("Wr0ng-PG-s3cret", &e);

    // Lazily, an elector keeps retrying and logging: still no secret.
    let lazy = connect(&with_query(&pg, "fail_fast=false")).unwrap();
    let elector = Elector::builder(lazy)
        .group(common::unique("connect-lazy"))
        .lease_ttl(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    assert!(common::wait_for(Duration::from_secs(10), || {
        LOG.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("campaign failed"))
    }));
    drop(elector);
    assert_no_secret("Wr0ng-PG-s3cret", "");

    let redis = common::redis_url().replace("redis://", "redis://no-such-user:Wr0ng-R-s3cret@");
    let e = connect(&redis).err().expect("AUTH is refused").report();
    assert_no_secret("Wr0ng-R-s3cret", &e);

    let e = connect("redis://127.0.0.1:1/?key_prefix=x&password=Wr0ng-Q-s3cret")
        .err()
        .expect("unknown parameter")
        .report();
    assert!(e.contains("password"), "{e}");
    assert_no_secret("Wr0ng-Q-s3cret", &e);

    let e = connect(
        "zookeeper://app:Wr0ng-Z-s3cret@127.0.0.1:1?session_timeout=2s&connect_timeout=300ms",
    )
    .err()
    .expect("no server on port 1")
    .report();
    assert_no_secret("Wr0ng-Z-s3cret", &e);

    // ODBC: the password is in the connection string, which no error or log line repeats —
    // neither ours nor odbc-api's (it logs driver diagnostics through `log` too).
    common::odbc_setup();
    for (conn, secret) in [
        (common::mariadb_odbc(), "Wr0ng-M-s3cret"),
        (common::postgres_odbc(), "Wr0ng-P-s3cret"),
    ] {
        let wrong = conn.replace("PWD=leader-secret", &format!("PWD={{{secret}}}"));
        assert!(wrong.contains(secret), "no PWD=leader-secret to replace");
        let e = connect(&format!("odbc:{wrong}"))
            .err()
            .expect("a wrong password is refused")
            .report();
        assert_no_secret(secret, &e);
        let lazy = connect(&format!("odbc:{wrong}?fail_fast=false&connect_timeout=1s")).unwrap();
        let elector = Elector::builder(lazy)
            .group(common::unique("connect-odbc"))
            .lease_ttl(Duration::from_secs(2))
            .heartbeat_interval(Duration::from_millis(500))
            .retry_interval(Duration::from_millis(100))
            .start()
            .unwrap();
        let logged = LOG.lock().unwrap().len();
        assert!(common::wait_for(Duration::from_secs(10), || {
            LOG.lock().unwrap()[logged..]
                .iter()
                .any(|l| l.contains("campaign failed"))
        }));
        drop(elector);
        assert_no_secret(secret, "");
    }
    let e = connect("odbc:Driver={MariaDB Unicode};PWD={Wr0ng-U-s3cret}?passwd=x")
        .err()
        .expect("unknown parameter")
        .report();
    assert!(e.contains("passwd"), "{e}");
    assert_no_secret("Wr0ng-U-s3cret", &e);
}
