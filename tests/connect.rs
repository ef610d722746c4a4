//! `leader_election::connect(url)` against the live servers (and the Consul API double): a
//! provider from every backend's URL leads, its options come from the query, and no secret in
//! a URL reaches an error or a log line (the log output is captured and searched).

use std::time::Duration;

use le_test_support as common;
use leader_election::{Elector, connect};

fn capture_logs() {
    common::logs::capture();
}

fn assert_no_secret(secret: &str, error: &str) {
    assert!(
        !error.contains(secret),
        "the error shows the secret: {error}"
    );
    let log = common::logs::LINES.lock().unwrap();
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
    leads(&format!(
        "etcd://{}/{}/?request_timeout=2s",
        common::etcd_url().trim_start_matches("http://"),
        common::unique("connect")
    ));
    let consul = common::ConsulDouble::start();
    leads(&format!(
        "consul://{}/{}/election/?lock_delay=4s&watch_wait=5s&request_timeout=2s",
        consul.addr(),
        common::unique("connect")
    ));
    leads(&azure_url(common::azurite::DEV_KEY, "command_timeout=2s"));
    leads(&format!(
        "azure-blob:?connection_string={}&container=le-connect&blob_prefix={}/",
        enc(&format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={}",
            common::azurite::DEV_ACCOUNT,
            common::azurite::DEV_KEY,
            common::azurite_url()
        )),
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

/// Percent-encodes everything but letters and digits.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `azure-blob+http://devstoreaccount1:<key>@host:port/devstoreaccount1/le-connect?…`, from
/// `LE_AZURITE_URL`.
fn azure_url(key: &str, query: &str) -> String {
    let endpoint = common::azurite_url();
    let rest = endpoint
        .strip_prefix("http://")
        .expect("an http:// LE_AZURITE_URL");
    format!(
        "azure-blob+http://{}:{}@{rest}/le-connect?blob_prefix={}/&{query}",
        common::azurite::DEV_ACCOUNT,
        enc(key),
        common::unique("connect")
    )
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
        common::logs::any(|l| l.contains("campaign failed"))
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

    // A Consul ACL token never comes from a URL: the parameter is refused, not echoed.
    let e = connect("consul://127.0.0.1:1/app/?token=Wr0ng-C-s3cret")
        .err()
        .expect("a token in the URL is refused")
        .report();
    assert!(e.contains("CONSUL_HTTP_TOKEN"), "{e}");
    assert_no_secret("Wr0ng-C-s3cret", &e);
    let e = connect("consul://app:Wr0ng-C2-s3cret@127.0.0.1:1/app/")
        .err()
        .expect("credentials in the URL are refused")
        .report();
    assert_no_secret("Wr0ng-C2-s3cret", &e);

    let e = connect(
        "zookeeper://app:Wr0ng-Z-s3cret@127.0.0.1:1?session_timeout=2s&connect_timeout=300ms",
    )
    .err()
    .expect("no server on port 1")
    .report();
    assert_no_secret("Wr0ng-Z-s3cret", &e);

    // etcd: a password for a server without authentication is harmless; one for a server
    // that is down, or given in the query, never shows.
    let etcd = common::etcd_url().replace("http://", "etcd://app:Wr0ng-E-s3cret@");
    let e = connect(&format!(
        "{etcd}?connect_timeout=300ms&password=Wr0ng-E-s3cret"
    ))
    .err()
    .expect("a password in the query is refused")
    .report();
    assert!(e.contains("password"), "{e}");
    assert_no_secret("Wr0ng-E-s3cret", &e);
    let e = connect("etcd://app:Wr0ng-E-s3cret@127.0.0.1:1?connect_timeout=300ms")
        .err()
        .expect("no server on port 1")
        .report();
    assert_no_secret("Wr0ng-E-s3cret", &e);
    let lazy = connect("etcd://app:Wr0ng-E-s3cret@127.0.0.1:1?fail_fast=false").unwrap();
    let elector = Elector::builder(lazy)
        .group(common::unique("connect-etcd"))
        .lease_ttl(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(elector);
    assert_no_secret("Wr0ng-E-s3cret", "");
    // Azure: a wrong account key (well-formed base64) and a SAS signature in the URL.
    let wrong_key = "V3Jvbmctcy0zY3JldC1Xcm9uZy1zLTNjcmV0LVdyb25nLXMtM2NyZXQ=";
    let e = connect(&azure_url(wrong_key, "command_timeout=2s"))
        .err()
        .expect("a wrong key is refused")
        .report();
    assert!(e.contains("account key was refused"), "{e}");
    assert_no_secret(wrong_key, &e);
    let e = connect(&format!(
        "{}/le-connect?sv=2018-11-09&sr=c&sp=rwc&se=2099-01-01&sig=Wr0ng-A-s3cret&fail_fast=true",
        common::azurite_url().replacen("http://", "azure-blob+http://", 1)
    ))
    .err()
    .expect("a forged SAS is refused")
    .report();
    assert!(e.contains("SAS token was refused"), "{e}");
    assert_no_secret("Wr0ng-A-s3cret", &e);
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
        let logged = common::logs::LINES.lock().unwrap().len();
        assert!(common::wait_for(Duration::from_secs(10), || {
            common::logs::LINES.lock().unwrap()[logged..]
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
