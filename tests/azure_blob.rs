//! The Azure Blob provider against Azurite: the conformance suite on the shared instance
//! (`LE_AZURITE_URL`), the service behaviour the provider's safety argument relies on (checked
//! with raw requests signed independently of the provider), credentials and SAS tokens, HTTPS
//! with a private CA, a restart that loses everything, and a network that silently drops
//! traffic. Leases last at
//! least 15 s on this service, so the slow checks run in parallel (one `#[test]` each); a
//! missing Azurite fails them.
#![cfg(feature = "azure-blob")]

use le_test_support as common;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::azurite::{DEV_ACCOUNT, DEV_KEY, container_sas, raw_request};
use common::{PrivateAzurite, Proxy, azurite_url, chain, unique};
use leader_election::testing::Harness;
use leader_election::{
    AcquireRequest, Acquisition, AzureBlobOptions, AzureBlobProvider, Elector, Error,
    LeadershipChange, Provider, Renewal, Tls,
};

/// Every log line of this test binary, formatted with its arguments.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

/// Everything at every level — except TRACE of the HTTP client (`ureq`, `ureq_proto`), which
/// at that level logs whole requests, credentials included, by design (see the README).
impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() < log::Level::Trace || !metadata.target().starts_with("ureq")
    }
    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
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

/// Fails if a log line shows `secret`.
fn assert_not_logged(secret: &str) {
    let found = LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|l| l.contains(secret))
        .cloned();
    if let Some(line) = found {
        panic!("a log line shows a secret: {line}");
    }
}

/// A container name of this run's own.
fn container(prefix: &str) -> String {
    unique(prefix).replace('_', "-").to_lowercase()
}

fn options(endpoint: &str, container: &str) -> AzureBlobOptions {
    AzureBlobOptions::shared_key(endpoint, DEV_ACCOUNT, DEV_KEY, container)
}

fn provider(options: AzureBlobOptions) -> AzureBlobProvider {
    AzureBlobProvider::new(options).unwrap_or_else(|e| {
        panic!(
            "cannot reach Azurite at LE_AZURITE_URL ({}; start it with scripts/services.sh up \
             azurite): {}",
            azurite_url(),
            chain(&e)
        )
    })
}

/// The shared Azurite's port (raw requests go there).
fn shared_port() -> u16 {
    url_port(&azurite_url())
}

fn url_port(url: &str) -> u16 {
    let authority = url.split("//").nth(1).unwrap().split('/').next().unwrap();
    authority.rsplit(':').next().unwrap().parse().unwrap()
}

struct AzureHarness {
    options: AzureBlobOptions,
}

impl Harness for AzureHarness {
    type Provider = AzureBlobProvider;
    fn client(&self) -> AzureBlobProvider {
        provider(self.options.clone())
    }
    /// The shortest lease the service grants: a shorter TTL would still hold the blob 15 s,
    /// and the expiry checks wait for the TTL.
    fn ttl(&self) -> Duration {
        Duration::from_secs(15)
    }
    fn expiry_slack(&self) -> Duration {
        Duration::from_secs(2)
    }
}

fn shared() -> AzureHarness {
    AzureHarness {
        options: options(&azurite_url(), "le-conformance")
            .blob_prefix(format!("{}/", unique("run"))),
    }
}

leader_election::conformance_tests!(conformance, super::shared());

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn acquire(p: &AzureBlobProvider, group: &str, who: &str, ttl: Duration) -> Acquisition {
    p.try_acquire(&AcquireRequest::new(group, who, ttl), deadline())
        .unwrap_or_else(|e| panic!("acquire: {}", chain(&e)))
}

fn must_acquire(
    p: &AzureBlobProvider,
    group: &str,
    who: &str,
    ttl: Duration,
) -> leader_election::Lease {
    match acquire(p, group, who, ttl) {
        Acquisition::Acquired(l) => l,
        Acquisition::Held(h) => panic!("{who} did not acquire {group}: held by {h:?}"),
    }
}

/// What the provider's safety argument assumes of the service, checked on Azurite with raw
/// requests (signed by the test support's own Shared Key code, not the provider's).
#[test]
fn the_service_behaves_as_the_safety_argument_assumes() {
    let port = shared_port();
    let c = container("le-raw");
    let blob = format!("/{c}/g");
    let (a, b) = (
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
    );
    assert_eq!(
        raw_request(port, "PUT", &format!("/{c}"), "restype=container", &[]).status,
        201
    );
    let created = raw_request(
        port,
        "PUT",
        &blob,
        "",
        &[("x-ms-blob-type", "BlockBlob"), ("if-none-match", "*")],
    );
    assert_eq!(created.status, 201);
    let etag = created.header("etag").unwrap().to_owned();
    // Creating again is refused: two campaigns never both create the blob.
    let again = raw_request(
        port,
        "PUT",
        &blob,
        "",
        &[("x-ms-blob-type", "BlockBlob"), ("if-none-match", "*")],
    );
    assert_eq!(
        (again.status, again.header("x-ms-error-code")),
        (409, Some("BlobAlreadyExists"))
    );
    let lease = |action: &str, id: &str, extra: &[(&str, &str)]| {
        let mut h = vec![("x-ms-lease-action", action)];
        h.extend_from_slice(extra);
        let key = if action == "acquire" {
            "x-ms-proposed-lease-id"
        } else {
            "x-ms-lease-id"
        };
        h.push((key, id));
        raw_request(port, "PUT", &blob, "comp=lease", &h)
    };
    // A lease shorter than 15 s is refused, not shortened.
    assert_eq!(
        lease("acquire", a, &[("x-ms-lease-duration", "5")]).status,
        400
    );
    // Acquire is conditional on the ETag read before it.
    let stale = lease(
        "acquire",
        a,
        &[("x-ms-lease-duration", "15"), ("if-match", "\"0x0\"")],
    );
    assert_eq!(stale.status, 412);
    let held = lease(
        "acquire",
        a,
        &[("x-ms-lease-duration", "15"), ("if-match", &etag)],
    );
    assert_eq!(held.status, 201);
    let acquired_at = Instant::now();
    // Lease operations leave the ETag alone (the token write is conditional on it).
    let props = raw_request(port, "HEAD", &blob, "", &[]);
    assert_eq!(props.header("etag"), Some(etag.as_str()));
    assert_eq!(props.header("x-ms-lease-state"), Some("leased"));
    // Another id (another term, even of the same participant) is refused while it is held.
    let other = lease("acquire", b, &[("x-ms-lease-duration", "15")]);
    assert_eq!(
        (other.status, other.header("x-ms-error-code")),
        (409, Some("LeaseAlreadyPresent"))
    );
    // The holder's own id is accepted again (a retried acquire learns that it won).
    assert!(lease("acquire", a, &[("x-ms-lease-duration", "15")]).status < 300);
    assert_eq!(lease("renew", b, &[]).status, 409);
    // No write without the lease id while it is held.
    let unleased = raw_request(
        port,
        "PUT",
        &blob,
        "comp=metadata",
        &[("x-ms-meta-fencingtoken", "9")],
    );
    assert_eq!(
        (unleased.status, unleased.header("x-ms-error-code")),
        (412, Some("LeaseIdMissing"))
    );
    // Held for the whole granted length: just before it ends, still leased.
    std::thread::sleep(Duration::from_secs(14).saturating_sub(acquired_at.elapsed()));
    let props = raw_request(port, "HEAD", &blob, "", &[]);
    assert_eq!(props.header("x-ms-lease-state"), Some("leased"));
    std::thread::sleep(Duration::from_secs(16).saturating_sub(acquired_at.elapsed()));
    let props = raw_request(port, "HEAD", &blob, "", &[]);
    assert_eq!(props.header("x-ms-lease-state"), Some("expired"));
    // A lapsed lease can no longer write: a late token write of an ended term fails.
    let late = raw_request(
        port,
        "PUT",
        &blob,
        "comp=metadata",
        &[("x-ms-lease-id", a), ("x-ms-meta-fencingtoken", "9")],
    );
    // (Azure answers LeaseLost; Azurite 3.35 LeaseNotPresentWithBlobOperation.)
    assert_eq!(late.status, 412, "{late:?}");
    // But the service renews a lapsed lease nobody took since — which is why the provider
    // reports such a renew as lost by its own clock.
    assert_eq!(lease("renew", a, &[]).status, 200);
    assert_eq!(lease("release", a, &[]).status, 200);
    // Released: another id may acquire at once; the old id can neither renew nor write.
    assert_eq!(
        lease("acquire", b, &[("x-ms-lease-duration", "15")]).status,
        201
    );
    assert_eq!(lease("renew", a, &[]).status, 409);
    let old = raw_request(
        port,
        "PUT",
        &blob,
        "comp=metadata",
        &[("x-ms-lease-id", a), ("x-ms-meta-fencingtoken", "9")],
    );
    assert_eq!(old.status, 412);
    assert_eq!(lease("release", b, &[]).status, 200);
}

#[test]
fn a_wrong_key_is_a_clear_permanent_error_without_key_or_signature() {
    capture_logs();
    // A well-formed key that is not the account's.
    let wrong = "V3Jvbmcta2V5LVdyb25nLWtleS1Xcm9uZy1rZXktV3Jvbmcta2V5LVdyb25nLWtleQ==";
    let o = AzureBlobOptions::shared_key(azurite_url(), DEV_ACCOUNT, wrong, "le-conformance");
    assert!(!format!("{o:?}").contains("V3Jvbmc"));
    let e = AzureBlobProvider::new(o.clone()).unwrap_err();
    let text = format!("{} / {e:?}", chain(&e));
    assert!(!e.is_transient(), "{text}");
    assert!(
        text.contains("account key was refused") && text.contains("403"),
        "{text}"
    );
    for secret in ["V3Jvbmc", "SharedKey", DEV_KEY] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    // Lazily: the elector keeps campaigning, failing and logging — never the key.
    let lazy = AzureBlobProvider::new(o.fail_fast(false)).unwrap();
    assert!(!format!("{lazy:?}").contains("V3Jvbmc"));
    let e = Elector::builder(lazy)
        .group("wrong-key")
        .lease_ttl(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    assert!(common::wait_for(Duration::from_secs(10), || {
        e.status().consecutive_failures >= 2
    }));
    let last = e.status().last_error.unwrap_or_default();
    assert!(last.contains("account key was refused"), "{last}");
    e.shutdown().unwrap();
    for secret in ["V3Jvbmc", "SharedKey"] {
        assert_not_logged(secret);
    }
}

#[test]
fn lease_ids_stay_out_of_debug_errors_and_logs() {
    capture_logs();
    let p = provider(
        options(&azurite_url(), "le-conformance").blob_prefix(format!("{}/", unique("ids"))),
    );
    let lease = must_acquire(&p, "g", "a", Duration::from_secs(5));
    assert_eq!(lease.handle.len(), 36, "a GUID");
    assert!(!format!("{lease:?} {p:?}").contains(&lease.handle));
    assert_eq!(p.renew(&lease, deadline()).unwrap(), Renewal::Renewed);
    p.release(&lease, deadline()).unwrap();
    assert_not_logged(&lease.handle);
}

#[test]
fn sas_tokens_read_only_expired_and_working() {
    let c = container("le-sas");
    let endpoint = azurite_url();
    // The container exists (a container SAS cannot create one).
    provider(options(&endpoint, &c));
    let url = |sas: &str| format!("{endpoint}/{c}?{sas}");

    let e = AzureBlobProvider::new(AzureBlobOptions::sas_url(url(&container_sas(
        &c,
        "rl",
        "2099-01-01T00:00:00Z",
    ))))
    .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
    assert!(e.to_string().contains("read and write"), "{e}");
    let e = AzureBlobProvider::new(AzureBlobOptions::sas_url(url(&container_sas(
        &c,
        "rwc",
        "2001-01-01T00:00:00Z",
    ))))
    .unwrap_err();
    assert!(e.to_string().contains("expired at 2001-01-01"), "{e}");

    // A working token.
    let sas = container_sas(&c, "rwc", "2099-01-01T00:00:00Z");
    let sig = sas.rsplit("sig=").next().unwrap().to_owned();
    let h = AzureHarness {
        options: AzureBlobOptions::sas_url(url(&sas)),
    };
    leader_election::testing::first_acquirer_wins(&h);
    leader_election::testing::release_lets_another_acquire_at_once(&h);
    assert!(!format!("{:?} {:?}", h.options, h.client()).contains(&sig));

    // A signature that does not match: refused by the service, explained, not echoed.
    let forged = sas.replace(&sig, "Zm9yZ2VkLXNpZ25hdHVyZS1mb3JnZWQtc2lnbmF0dXJlMDA%3D");
    let e = AzureBlobProvider::new(AzureBlobOptions::sas_url(url(&forged))).unwrap_err();
    let text = chain(&e);
    assert!(
        !e.is_transient() && text.contains("SAS token was refused"),
        "{text}"
    );
    assert!(!text.contains("Zm9yZ2Vk"), "{text}");

    // A token that expires while in use: the service's refusal names the expiry.
    let soon = httpdate_rfc3339(std::time::SystemTime::now() + Duration::from_secs(3));
    let p = AzureBlobProvider::new(AzureBlobOptions::sas_url(url(&container_sas(
        &c, "rwc", &soon,
    ))))
    .unwrap();
    let lease = must_acquire(&p, "expiring", "a", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(4));
    let e = p.renew(&lease, deadline()).unwrap_err();
    let text = chain(&e);
    assert!(
        !e.is_transient() && text.contains(&format!("SAS token expired at {soon}")),
        "{text}"
    );
}

/// `t` as `YYYY-MM-DDThh:mm:ssZ`.
fn httpdate_rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[test]
fn an_invalid_container_name_is_rejected_before_any_request() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!(
        "http://127.0.0.1:{}/{DEV_ACCOUNT}",
        listener.local_addr().unwrap().port()
    );
    for name in ["Leases", "a--b", "ab", "-abc", "abc-", "has_underscore"] {
        let e = AzureBlobProvider::new(options(&endpoint, name)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    field: "container",
                    ..
                }
            ),
            "{name}: {e}"
        );
    }
    let e = AzureBlobProvider::new(AzureBlobOptions::sas_url(format!(
        "{endpoint}/Bad_Name?sp=rw&sig=x"
    )))
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                field: "container",
                ..
            }
        ),
        "{e}"
    );
    assert!(listener.accept().is_err(), "a request reached the network");
}

#[test]
fn azurite_restart_while_leading() {
    let mut server = PrivateAzurite::start();
    let quick = |o: AzureBlobOptions| {
        o.connect_timeout(Duration::from_secs(1))
            .command_timeout(Duration::from_secs(1))
    };
    let e = common::fast_elector(
        provider(quick(options(&server.endpoint(), "leases"))),
        "restart",
        Duration::from_millis(500),
    );
    let changes = e.subscribe();
    let (first, _) = common::wait_acquired(&changes, Duration::from_secs(20));
    let deadline = e.leader_deadline().expect("leads");
    server.stop_server();
    let stopped = Instant::now();
    match changes.recv_timeout(Duration::from_secs(10)) {
        Ok(LeadershipChange::Lost { .. }) => {}
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(
        Instant::now() < deadline + Duration::from_secs(1),
        "late step-down"
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "stepped down after {:?}",
        stopped.elapsed()
    );
    // In-memory Azurite comes back empty: no container, no blob, no token counter.
    server.start_server();
    let restarted = Instant::now();
    // A participant that saw the group before waits one TTL before taking it (so an old
    // leader has stepped down); the elector, which saw it too, leads again after that, with a
    // token above its last one.
    let (again, at) = common::wait_acquired(&changes, Duration::from_secs(30));
    assert!(again > first, "token went from {first} to {again}");
    assert!(at >= restarted, "led before the restart");
    e.shutdown().unwrap();
    // A participant that saw nothing (a new process) starts from the service's clock, which
    // is past the first blob's tokens (it was created in an earlier second).
    let fresh = provider(options(&server.endpoint(), "leases"));
    let lease = must_acquire(&fresh, "restart", "fresh", Duration::from_secs(3));
    assert!(
        lease.fencing_token() > again,
        "{} after {again}",
        lease.fencing_token()
    );
}

#[test]
fn a_follower_that_saw_the_blob_waits_one_ttl_after_it_is_lost() {
    let mut server = PrivateAzurite::start();
    let (a, b) = (
        provider(options(&server.endpoint(), "leases")),
        provider(options(&server.endpoint(), "leases")),
    );
    let ttl = Duration::from_secs(2);
    let la = must_acquire(&a, "lost", "a", ttl);
    assert!(matches!(
        acquire(&b, "lost", "b", ttl),
        Acquisition::Held(Some(_))
    ));
    server.stop_server();
    server.start_server();
    let lost = Instant::now();
    assert!(matches!(
        acquire(&b, "lost", "b", ttl),
        Acquisition::Held(None)
    ));
    assert!(matches!(
        a.renew(&la, deadline()).unwrap(),
        Renewal::Lost(_)
    ));
    let lb = loop {
        match acquire(&b, "lost", "b", ttl) {
            Acquisition::Acquired(l) => break l,
            Acquisition::Held(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(
        lost.elapsed() >= ttl,
        "taken {:?} after the loss",
        lost.elapsed()
    );
    assert!(lb.fencing_token() > la.fencing_token());
}

#[test]
fn a_blocked_network_leader_steps_down_on_time_and_no_thread_is_stuck() {
    let target = format!("127.0.0.1:{}", shared_port()).parse().unwrap();
    let proxy = Proxy::start(target);
    let endpoint = format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", proxy.port);
    let p = provider(
        options(&endpoint, "le-conformance")
            .blob_prefix(format!("{}/", unique("blocked")))
            .connect_timeout(Duration::from_secs(1))
            .command_timeout(Duration::from_secs(1)),
    );
    let e = Elector::builder(p)
        .group("blocked")
        .lease_ttl(Duration::from_secs(3))
        .heartbeat_interval(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(200))
        .shutdown_timeout(Duration::from_secs(2))
        .start()
        .unwrap();
    let changes = e.subscribe();
    common::wait_acquired(&changes, Duration::from_secs(20));
    let deadline = e.leader_deadline().expect("leads");
    proxy.block();
    let lost_at = common::expect_deadline_step_down(&changes, Duration::from_secs(10));
    assert!(
        lost_at < deadline + Duration::from_millis(500),
        "late step-down"
    );
    // Calls keep ending at their timeout instead of hanging on the silent connection.
    let watch_until = Instant::now() + Duration::from_secs(3);
    let mut longest = Duration::ZERO;
    while Instant::now() < watch_until {
        if let Some((_, running)) = e.status().call_in_flight {
            longest = longest.max(running);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        longest < Duration::from_millis(2500),
        "a call ran {longest:?}"
    );
    assert!(e.status().consecutive_failures >= 2, "{:?}", e.status());
    let stop = Instant::now();
    // The release cannot get through: shutdown gives up on it at its timeout.
    if let Err(err) = e.shutdown() {
        assert!(matches!(err, Error::Timeout { .. }), "{}", chain(&err));
    }
    assert!(
        stop.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        stop.elapsed()
    );
    drop(e);
    assert!(
        common::wait_for(Duration::from_secs(5), || {
            !common::thread_names()
                .iter()
                .any(|n| n.starts_with("le-") && n.ends_with("-blocked"))
        }),
        "elector threads left: {:?}",
        common::thread_names()
    );
}

#[test]
fn https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    common::make_tls_certs(dir.path(), &cert, &key);
    let server = PrivateAzurite::start_https(&cert, &key);
    let h = AzureHarness {
        options: options(&server.endpoint(), "leases")
            .tls(Tls::VerifyWithCa(dir.path().join("ca.crt"))),
    };
    leader_election::testing::first_acquirer_wins(&h);
    leader_election::testing::release_lets_another_acquire_at_once(&h);
    // The system roots do not know the test CA.
    let e = AzureBlobProvider::new(options(&server.endpoint(), "leases")).unwrap_err();
    assert!(
        chain(&e).to_lowercase().contains("certificate"),
        "{}",
        chain(&e)
    );
    // Explicitly insecure works.
    let p = provider(options(&server.endpoint(), "leases").tls(Tls::DangerAcceptInvalidCerts));
    must_acquire(&p, "insecure", "a", Duration::from_secs(3));
}
