//! The etcd provider against a live server: the conformance suite on the shared server
//! (`LE_ETCD_URL`), a key deleted behind a leader's back, lease hygiene, restarts, lost watch
//! streams, authentication, TLS and the SIGKILL of a leader's process on private instances
//! (started from the local `etcd` binary; a missing binary fails the test). Every test uses a
//! key prefix of its own.
#![cfg(feature = "etcd")]

use le_test_support as common;

use std::time::{Duration, Instant};

use common::etcd::{etcd_delete, etcd_key, etcd_leases, etcd_post};
use common::{PrivateEtcd, TcpProxy, chain, etcd_url, unique};
use leader_election::testing::{self, Harness};
use leader_election::{
    AcquireRequest, Acquisition, Elector, EtcdOptions, EtcdProvider, EventKinds, LeadershipChange,
    Lease, LostReason, Provider, Renewal, Tls, Wakeup,
};

struct EtcdHarness {
    options: EtcdOptions,
}

impl Harness for EtcdHarness {
    type Provider = EtcdProvider;
    fn client(&self) -> EtcdProvider {
        EtcdProvider::new(self.options.clone())
            .unwrap_or_else(|e| panic!("cannot reach etcd: {}", chain(&e)))
    }
}

fn prefix() -> String {
    format!("{}/", unique("le-test"))
}

/// A harness on `url` with a key prefix of its own; returns the prefix too.
fn harness_with_prefix(url: &str) -> (EtcdHarness, String) {
    let prefix = prefix();
    let options = EtcdOptions::new(url).key_prefix(&prefix);
    (EtcdHarness { options }, prefix)
}

fn shared() -> EtcdHarness {
    harness_with_prefix(&etcd_url()).0
}

leader_election::conformance_tests!(conformance, super::shared());

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn acquire(p: &EtcdProvider, group: &str, who: &str, ttl: Duration) -> Acquisition {
    p.try_acquire(&AcquireRequest::new(group, who, ttl), deadline())
        .unwrap_or_else(|e| panic!("acquire: {}", chain(&e)))
}

fn must_acquire(p: &EtcdProvider, group: &str, who: &str) -> Lease {
    match acquire(p, group, who, Duration::from_secs(30)) {
        Acquisition::Acquired(lease) => lease,
        Acquisition::Held(l) => panic!("{who} did not acquire {group}: held by {l:?}"),
    }
}

#[test]
fn a_key_deleted_behind_the_leaders_back_ends_its_term_at_the_next_renew() {
    let prefix = prefix();
    let p = EtcdProvider::new(EtcdOptions::new(etcd_url()).key_prefix(&prefix)).unwrap();
    let e = Elector::builder(p)
        .group("deleted")
        .lease_ttl(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_millis(500))
        .retry_interval(Duration::from_millis(200))
        .start()
        .unwrap();
    let changes = e.subscribe();
    let (first, _) = common::wait_acquired(&changes, Duration::from_secs(20));
    etcd_delete(&etcd_url(), &format!("{prefix}deleted"));
    let deleted = Instant::now();
    match changes.recv_timeout(Duration::from_secs(5)) {
        Ok(LeadershipChange::Lost {
            reason: LostReason::Superseded,
            ..
        }) => {}
        other => panic!("expected Lost(Superseded) at the next renew, got {other:?}"),
    }
    assert!(
        deleted.elapsed() < Duration::from_secs(2),
        "stepped down {:?} after the delete (heartbeat 500 ms)",
        deleted.elapsed()
    );
    // The group is free again: the elector takes it, with a higher token.
    let (again, _) = common::wait_acquired(&changes, Duration::from_secs(10));
    assert!(again > first, "token {again} after {first}");
    e.shutdown().unwrap();
}

#[test]
fn leases_are_rounded_up_never_shorter_and_campaigns_do_not_pile_them_up() {
    let server = PrivateEtcd::start(&[]);
    let (h, prefix) = harness_with_prefix(&server.url());
    let (a, b) = (h.client(), h.client());
    // 2.5 s asks for 3 s; 1 ms for 1 s, which etcd raises to its minimum (2 s by default).
    for (ttl, granted) in [
        (Duration::from_millis(2500), 3),
        (Duration::from_millis(1), 2),
    ] {
        let Acquisition::Acquired(lease) = acquire(&a, "ttl", "a", ttl) else {
            panic!("not acquired")
        };
        let r = etcd_post(
            &server.url(),
            "/v3/lease/timetolive",
            &serde_json::json!({ "ID": lease.handle }),
        );
        assert_eq!(
            r["grantedTTL"].as_str(),
            Some(granted.to_string().as_str()),
            "{ttl:?}"
        );
        a.release(&lease, deadline()).unwrap();
    }
    assert_eq!(
        etcd_leases(&server.url()).len(),
        0,
        "release revokes the lease"
    );

    let held = must_acquire(&a, "g", "a");
    for _ in 0..20 {
        assert!(matches!(
            acquire(&b, "g", "b", Duration::from_secs(30)),
            Acquisition::Held(Some(_))
        ));
    }
    // Eight racers for a free group: the losers revoke the leases they were granted.
    testing::racing_participants_give_one_winner(&h);
    assert_eq!(
        etcd_leases(&server.url()),
        vec![held.handle.clone()],
        "only the holder's lease is left"
    );
    // The key carries this term's lease, and renewing checks exactly that.
    let (rev, lease) = etcd_key(&server.url(), &format!("{prefix}g")).unwrap();
    assert_eq!(
        (rev as u64, lease.to_string()),
        (held.fencing_token(), held.handle.clone())
    );
    assert_eq!(a.renew(&held, deadline()).unwrap(), Renewal::Renewed);
    a.release(&held, deadline()).unwrap();
    assert!(etcd_leases(&server.url()).is_empty());
}

#[test]
fn leader_steps_down_when_etcd_restarts_and_leads_again_with_a_higher_token() {
    let mut server = PrivateEtcd::start(&[]);
    let p = EtcdProvider::new(
        EtcdOptions::new(server.url())
            .key_prefix(prefix())
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let e = common::fast_elector(p, "restart", Duration::from_millis(300));
    let changes = e.subscribe();
    let (first, _) = common::wait_acquired(&changes, Duration::from_secs(20));
    server.kill_server();
    let killed = Instant::now();
    let at = common::expect_deadline_step_down(&changes, Duration::from_secs(10));
    // The deadline: the last renew sent (before the kill) + 3 s TTL − 300 ms margin.
    assert!(
        at - killed < Duration::from_secs(3),
        "stepped down {:?} after the kill",
        at - killed
    );
    assert!(!e.is_leader());
    server.start_server(); // same data directory: etcd comes back with its revisions
    let (again, _) = common::wait_acquired(&changes, Duration::from_secs(30));
    assert!(again > first, "token {again} after {first}");
    e.shutdown().unwrap();
}

#[test]
fn a_watch_that_loses_its_stream_reconnects_and_still_wakes_a_follower() {
    let mut server = PrivateEtcd::start(&[]);
    let proxy = TcpProxy::start(server.port);
    let prefix = prefix();
    let options = |url: String| {
        EtcdOptions::new(url)
            .key_prefix(&prefix)
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(2))
    };
    let a = EtcdProvider::new(options(server.url())).unwrap();
    let b = EtcdProvider::new(options(proxy.url())).unwrap();
    let (wakeup, woken) = Wakeup::channel();
    let _watch = b.watch("g", wakeup).unwrap().expect("etcd pushes changes");
    let reconnected = |what: &str| {
        assert!(
            woken.recv_timeout(Duration::from_secs(20)).is_ok(),
            "{what}: no wake-up once the watch stream was (re)created"
        );
    };
    let handoff = |round: &str| {
        let lease = must_acquire(&a, "g", "a");
        std::thread::sleep(Duration::from_millis(200));
        while woken.try_recv().is_ok() {}
        a.release(&lease, deadline()).unwrap();
        assert!(
            woken.recv_timeout(Duration::from_secs(5)).is_ok(),
            "{round}: no wake-up after the release"
        );
    };
    reconnected("first stream");
    handoff("fresh");

    // Connections cut while the server runs on; meanwhile a term begins and ends and the
    // history is compacted past the watch's revision: it must start again from the current
    // revision (and wake everyone) rather than retry the compacted one forever.
    proxy.cut();
    let lease = must_acquire(&a, "g", "a");
    a.release(&lease, deadline()).unwrap();
    let rev = etcd_post(
        &server.url(),
        "/v3/kv/range",
        &serde_json::json!({"key": "eA=="}),
    )["header"]["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    etcd_post(
        &server.url(),
        "/v3/kv/compaction",
        &serde_json::json!({ "revision": rev }),
    );
    while woken.try_recv().is_ok() {}
    proxy.heal();
    reconnected("after the cut and the compaction");
    handoff("after the cut and the compaction");

    // The server killed and restarted (same port, same data).
    server.kill_server();
    server.start_server();
    reconnected("after the server restart");
    handoff("after the server restart");
}

/// A private server with authentication: user `app` may read and write under `le/`.
fn server_with_auth(args: &[&str]) -> PrivateEtcd {
    let server = PrivateEtcd::start(args);
    server.etcdctl(&["user", "add", "root:R00t-Secret"]);
    server.etcdctl(&["role", "add", "le"]);
    server.etcdctl(&[
        "role",
        "grant-permission",
        "le",
        "--prefix=true",
        "readwrite",
        "le/",
    ]);
    server.etcdctl(&["user", "add", "app:Corr3ct-Horse"]);
    server.etcdctl(&["user", "grant-role", "app", "le"]);
    server.etcdctl(&["auth", "enable"]);
    server
}

#[test]
fn authentication_wrong_password_is_permanent_and_expired_tokens_are_renewed() {
    // Simple tokens expire after 2 s without use here.
    let server = server_with_auth(&["--auth-token-ttl", "2"]);
    let options = EtcdOptions::new(server.url()).key_prefix("le/");
    let failure = |o: EtcdOptions, secret: &str| {
        let e = EtcdProvider::new(o).unwrap_err();
        let text = format!("{} / {e:?}", chain(&e));
        assert!(!text.contains(secret), "secret leaked: {text}");
        assert!(!e.is_transient(), "{text}");
        text
    };
    let text = failure(
        options.clone().auth("app", "Wr0ng-Battery"),
        "Wr0ng-Battery",
    );
    assert!(text.contains("AuthFailed"), "{text}");
    let text = failure(options.clone(), "Corr3ct-Horse");
    assert!(text.contains("AuthRequired"), "{text}");
    let elsewhere = options
        .clone()
        .key_prefix("other/")
        .auth("app", "Corr3ct-Horse");
    let text = failure(elsewhere, "Corr3ct-Horse");
    assert!(text.contains("PermissionDenied"), "{text}");

    let h = EtcdHarness {
        options: options.auth("app", "Corr3ct-Horse"),
    };
    testing::first_acquirer_wins(&h);
    testing::release_lets_another_acquire_at_once(&h);
    testing::watch_wakes_on_release(&h);

    // Idle past the token's TTL: the renew and the (first) watch authenticate again.
    let (a, b) = (h.client(), h.client());
    let lease = must_acquire(&a, "expiry", "a");
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(a.renew(&lease, deadline()).unwrap(), Renewal::Renewed);
    let (wakeup, woken) = Wakeup::channel();
    let _watch = b.watch("expiry", wakeup).unwrap().unwrap();
    assert!(
        woken.recv_timeout(Duration::from_secs(10)).is_ok(),
        "watch created"
    );
    a.release(&lease, deadline()).unwrap();
    assert!(
        woken.recv_timeout(Duration::from_secs(5)).is_ok(),
        "no wake-up after the release"
    );
}

#[test]
fn several_endpoints_tls_and_connection_urls() {
    // A dead endpoint first: calls move on to the next.
    let dead = common::free_port();
    let h = EtcdHarness {
        options: EtcdOptions::new(format!("http://127.0.0.1:{dead},{}", etcd_url()))
            .key_prefix(prefix())
            .connect_timeout(Duration::from_millis(500)),
    };
    testing::first_acquirer_wins(&h);
    testing::watch_wakes_on_release(&h);

    let server = PrivateEtcd::start_tls(&[]);
    let ca = server.dir.path().join("ca.crt");
    let h = EtcdHarness {
        options: EtcdOptions::new(server.url())
            .key_prefix(prefix())
            .tls(Tls::VerifyWithCa(ca.clone())),
    };
    testing::first_acquirer_wins(&h);
    testing::watch_wakes_on_release(&h);
    // The system roots do not know the test CA.
    let e = EtcdProvider::new(EtcdOptions::new(server.url())).unwrap_err();
    assert!(
        chain(&e).to_lowercase().contains("certificate"),
        "{}",
        chain(&e)
    );
    // The same through a connection URL.
    let url = format!(
        "etcds://127.0.0.1:{}/{}?ca_file={}&request_timeout=2s",
        server.port,
        prefix(),
        ca.display()
    );
    let p = leader_election::connect(&url).unwrap_or_else(|e| panic!("{}", e.report()));
    let req = AcquireRequest::new("url", "a", Duration::from_secs(5));
    assert!(matches!(
        p.try_acquire(&req, deadline()).unwrap(),
        Acquisition::Acquired(_)
    ));
}

const KILL_TTL: Duration = Duration::from_secs(3);
const KILL_RETRY: Duration = Duration::from_millis(300);

fn kill_elector(prefix: &str, id: &str) -> Elector {
    let p = EtcdProvider::new(EtcdOptions::new(etcd_url()).key_prefix(prefix)).unwrap();
    Elector::builder(p)
        .group("killed")
        .participant_id(id)
        .lease_ttl(KILL_TTL)
        .heartbeat_interval(Duration::from_millis(800))
        .retry_interval(KILL_RETRY)
        .start()
        .unwrap()
}

#[test]
#[ignore = "child role of sigkill_of_the_leader_process, which runs it"]
fn etcd_child_role() {
    let prefix = std::env::var("LE_ETCD_PREFIX").expect("LE_ETCD_PREFIX");
    let e = kill_elector(&prefix, "child");
    common::report_leadership_until_killed(&e);
}

#[test]
fn sigkill_of_the_leader_process() {
    let prefix = prefix();
    let (mut child, child_token) =
        common::spawn_leading_child("etcd_child_role", ("LE_ETCD_PREFIX", &prefix));
    let follower = kill_elector(&prefix, "parent");
    let changes = follower.subscribe_filtered(EventKinds::ACQUIRED);
    std::thread::sleep(Duration::from_secs(1));
    assert!(!follower.is_leader());
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let took = match changes.recv_timeout(KILL_TTL * 4) {
        Ok(LeadershipChange::Acquired { fencing_token, .. }) => {
            assert!(fencing_token > child_token);
            killed.elapsed()
        }
        other => panic!("the follower did not take over: {other:?}"),
    };
    eprintln!("etcd failover after SIGKILL took {took:?} (TTL {KILL_TTL:?})");
    // The lease outlives the process by its TTL from the last keepalive (≤ 800 ms before the
    // kill); etcd checks expiry every 500 ms; the follower campaigns every ≤ 300 ms.
    assert!(
        took >= KILL_TTL - Duration::from_millis(900),
        "{took:?}: before the TTL"
    );
    assert!(
        took <= KILL_TTL + KILL_RETRY + Duration::from_millis(1500),
        "{took:?}: failover slower than TTL + retry interval"
    );
    follower.shutdown().unwrap();
}

#[test]
fn release_wakes_a_follower_through_the_watch() {
    let prefix = prefix();
    let took = common::assert_push_hand_off(Duration::from_secs(60), || {
        EtcdProvider::new(EtcdOptions::new(etcd_url()).key_prefix(&prefix)).unwrap()
    });
    eprintln!("etcd hand-off on release took {took:?}");
}
