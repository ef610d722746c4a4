//! The Consul provider against the Consul API double (`le_test_support::consul_double`, a model
//! of Consul's HTTP API built from its documentation and source: no Consul server can be
//! installed on the test machines) and, when `LE_CONSUL_ADDR` is set, against a real Consul
//! agent (`LE_CONSUL_ADDR=http://127.0.0.1:8500 cargo test --all-features --test consul`; the
//! token, if ACLs are on, from `CONSUL_HTTP_TOKEN`). Without `LE_CONSUL_ADDR` the real-Consul
//! tests print `SKIPPED` to stderr: they never pass silently.
//!
//! The conformance checks run in parallel threads of one test, since Consul's 10 s minimum
//! session TTL makes each expiry check take up to half a minute. Outages and the earliest
//! session invalidation are in `consul/outages.rs`, the watch thread's faults in
//! `consul/watch.rs`.
#![cfg(all(feature = "consul", feature = "testing"))]

use le_test_support as common;

#[path = "consul/outages.rs"]
mod outages;
#[path = "consul/watch.rs"]
mod watch;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::consul_double::{Expiry, Options, client};
use common::{ConsulDouble, chain, unique};
use leader_election::testing::{self, Harness};
use leader_election::{
    AcquireRequest, Acquisition, ConsulOptions, ConsulProvider, Elector, FaultyProvider, Operation,
    Provider, Renewal, Wakeup,
};

/// Every log line of this test binary (to prove no token or session id reaches one).
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LOG.lock().unwrap().push(format!(
            "{} {}: {}",
            record.level(),
            record.target(),
            record.args()
        ));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        log::set_boxed_logger(Box::new(Capture)).expect("logger");
        log::set_max_level(log::LevelFilter::Debug);
    });
}

/// Where a test runs: the double or a real agent, with the options and the operator's token.
struct Target {
    options: ConsulOptions,
    prefix: String,
    base: String,
    token: Option<String>,
    _double: Option<ConsulDouble>,
}

impl Target {
    fn double() -> Target {
        Target::on_double(ConsulDouble::start())
    }

    fn on_double(double: ConsulDouble) -> Target {
        let mut t = Target::at(&double.url(), None);
        t._double = Some(double);
        t
    }

    fn at(base: &str, token: Option<String>) -> Target {
        let prefix = prefix();
        let mut options = ConsulOptions::new(base).key_prefix(&prefix);
        if let Some(t) = &token {
            options = options.token(t);
        }
        Target {
            options,
            prefix,
            base: base.to_owned(),
            token,
            _double: None,
        }
    }

    /// The real agent at `LE_CONSUL_ADDR`, or `None` after saying loudly that `test` is skipped.
    fn real(test: &str) -> Option<Target> {
        let Some(addr) = common::consul_addr() else {
            eprintln!(
                "SKIPPED: LE_CONSUL_ADDR not set: {test} did not run against a real Consul \
                 (LE_CONSUL_ADDR=http://127.0.0.1:8500 cargo test --all-features --test consul)"
            );
            return None;
        };
        let token = std::env::var("CONSUL_HTTP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        Some(Target::at(&addr, token))
    }

    fn provider(&self) -> ConsulProvider {
        ConsulProvider::new(self.options.clone())
            .unwrap_or_else(|e| panic!("cannot reach Consul: {}", chain(&e)))
    }

    fn key(&self, group: &str) -> String {
        format!("{}{group}", self.prefix)
    }

    /// An operator's request (plain write, delete, session info…).
    fn operator(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        client::request(&self.base, method, path, self.token.as_deref(), body)
    }
}

fn prefix() -> String {
    format!("{}/", unique("le-consul"))
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn acquire(p: &ConsulProvider, group: &str, who: &str, ttl: Duration) -> Acquisition {
    p.try_acquire(&AcquireRequest::new(group, who, ttl), deadline())
        .unwrap_or_else(|e| panic!("acquire: {}", chain(&e)))
}

fn must_acquire(
    p: &ConsulProvider,
    group: &str,
    who: &str,
    ttl: Duration,
) -> leader_election::Lease {
    match acquire(p, group, who, ttl) {
        Acquisition::Acquired(l) => l,
        other => panic!("{who} did not acquire {group}: {other:?}"),
    }
}

struct ConsulHarness(ConsulOptions);

impl Harness for ConsulHarness {
    type Provider = ConsulProvider;
    fn client(&self) -> ConsulProvider {
        ConsulProvider::new(self.0.clone())
            .unwrap_or_else(|e| panic!("cannot reach Consul: {}", chain(&e)))
    }
    /// Consul's shortest session TTL.
    fn ttl(&self) -> Duration {
        Duration::from_secs(10)
    }
    /// A crashed holder's session is invalidated by 2 × TTL, then its key waits out the
    /// lock-delay (one lease TTL).
    fn expiry_slack(&self) -> Duration {
        Duration::from_secs(21)
    }
}

/// Every conformance check, each in its own thread, at once.
fn conformance(h: &ConsulHarness) {
    type Check = fn(&ConsulHarness);
    let checks: [(&str, Check); 13] = [
        ("first_acquirer_wins", testing::first_acquirer_wins),
        ("others_see_the_holder", testing::others_see_the_holder),
        ("renew_extends_the_lease", testing::renew_extends_the_lease),
        (
            "release_lets_another_acquire_at_once",
            testing::release_lets_another_acquire_at_once,
        ),
        (
            "expiry_lets_another_acquire",
            testing::expiry_lets_another_acquire,
        ),
        ("tokens_strictly_rise", testing::tokens_strictly_rise),
        ("superseded_renew_fails", testing::superseded_renew_fails),
        (
            "renew_after_expiry_fails",
            testing::renew_after_expiry_fails,
        ),
        ("groups_are_isolated", testing::groups_are_isolated),
        (
            "racing_participants_give_one_winner",
            testing::racing_participants_give_one_winner,
        ),
        (
            "participant_and_metadata_round_trip",
            testing::participant_and_metadata_round_trip,
        ),
        (
            "same_participant_is_not_granted_twice",
            testing::same_participant_is_not_granted_twice,
        ),
        ("watch_wakes_on_release", testing::watch_wakes_on_release),
    ];
    let start = Instant::now();
    let failed: Vec<&str> = std::thread::scope(|s| {
        let running: Vec<_> = checks
            .iter()
            .map(|(name, check)| (*name, s.spawn(move || check(h))))
            .collect();
        running
            .into_iter()
            .filter_map(|(name, j)| j.join().is_err().then_some(name))
            .collect()
    });
    eprintln!("conformance: 13 checks in {:?}", start.elapsed());
    assert!(failed.is_empty(), "failed conformance checks: {failed:?}");
}

#[test]
fn conformance_on_the_double() {
    conformance(&ConsulHarness(Target::double().options));
}

#[test]
fn conformance_on_a_real_consul() {
    if let Some(t) = Target::real("conformance_on_a_real_consul") {
        conformance(&ConsulHarness(t.options.clone()));
    }
}

/// Sessions carry no health check (a gossip flap would otherwise release the lock under a
/// live leader), `Behavior` release, a TTL of at least 10 s and the lease TTL as lock-delay.
fn sessions_have_no_checks(t: &Target) {
    let p = t.provider();
    let lease = must_acquire(&p, "checks", "a", Duration::from_secs(3));
    let (status, body) = t.operator("GET", &format!("/v1/session/info/{}", lease.handle), b"");
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    let s = &info[0];
    assert_eq!(s["NodeChecks"], serde_json::json!([]), "{s}");
    assert!(s["Checks"].as_array().is_none_or(|c| c.is_empty()), "{s}");
    assert_eq!(s["Behavior"], "release");
    assert_eq!(s["TTL"], "10s", "a 3 s lease gets Consul's 10 s minimum");
    assert_eq!(
        s["LockDelay"], 3_000_000_000u64,
        "lock-delay = the lease TTL"
    );
    p.release(&lease, deadline()).unwrap();
}

#[test]
fn sessions_have_no_checks_and_survive_a_gossip_flap() {
    let double = ConsulDouble::start();
    let t = Target::at(&double.url(), None);
    sessions_have_no_checks(&t);
    // A flap of the agent's node invalidates a session with the default checks (the double
    // models Consul's default), never the provider's.
    let p = t.provider();
    let lease = must_acquire(&p, "flap", "a", Duration::from_secs(10));
    let (status, body) = t.operator("PUT", "/v1/session/create", br#"{"TTL": "10s"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        double.serf_flap(),
        1,
        "only the session with default checks is invalidated"
    );
    assert_eq!(p.renew(&lease, deadline()).unwrap(), Renewal::Renewed);
    p.release(&lease, deadline()).unwrap();
}

#[test]
fn sessions_have_no_checks_on_a_real_consul() {
    if let Some(t) = Target::real("sessions_have_no_checks_on_a_real_consul") {
        sessions_have_no_checks(&t);
    }
}

/// An operator deletes the key, then writes over a re-locked one: each ends the term at the
/// holder's next renew, and the next leader's token is higher.
fn tamper_with_the_key(t: &Target) {
    let (a, b) = (t.provider(), t.provider());
    let ttl = Duration::from_secs(2);
    let la = must_acquire(&a, "tamper", "a", ttl);
    let (status, _) = t.operator("DELETE", &format!("/v1/kv/{}", t.key("tamper")), b"");
    assert_eq!(status, 200);
    assert_eq!(
        a.renew(&la, deadline()).unwrap(),
        Renewal::Lost(None),
        "deleted key"
    );
    // No lock-delay after a plain delete: b takes it at once, with a higher token.
    let lb = must_acquire(&b, "tamper", "b", ttl);
    assert!(lb.fencing_token() > la.fencing_token());
    a.release(&la, deadline()).unwrap();
    assert_eq!(
        b.renew(&lb, deadline()).unwrap(),
        Renewal::Renewed,
        "old release left b alone"
    );

    // A forced write keeps the lock holder but bumps ModifyIndex: followers see that index
    // as the token, and b's next renew ends its term.
    let (status, _) = t.operator(
        "PUT",
        &format!("/v1/kv/{}", t.key("tamper")),
        b"{\"id\":\"op\",\"since\":0}",
    );
    assert_eq!(status, 200);
    let seen = a
        .leader("tamper", deadline())
        .unwrap()
        .expect("still locked");
    assert!(
        seen.fencing_token > lb.fencing_token(),
        "followers read the new index"
    );
    assert_eq!(
        b.renew(&lb, deadline()).unwrap(),
        Renewal::Lost(None),
        "forced write"
    );
    // Releasing destroys the session that still holds the key: its lock-delay (the 2 s lease
    // TTL) applies, then a takes over above the forced write's index.
    b.release(&lb, deadline()).unwrap();
    let start = Instant::now();
    let lc = loop {
        match acquire(&a, "tamper", "a", ttl) {
            Acquisition::Acquired(l) => break l,
            Acquisition::Held(_) => std::thread::sleep(Duration::from_millis(100)),
        }
        assert!(start.elapsed() < Duration::from_secs(15), "never freed");
    };
    assert!(lc.fencing_token() > seen.fencing_token);
    a.release(&lc, deadline()).unwrap();
}

#[test]
fn deleted_and_overwritten_keys_end_the_term() {
    tamper_with_the_key(&Target::double());
}

#[test]
fn deleted_and_overwritten_keys_end_the_term_on_a_real_consul() {
    if let Some(t) = Target::real("deleted_and_overwritten_keys_end_the_term_on_a_real_consul") {
        tamper_with_the_key(&t);
    }
}

/// How long after a release returns the follower's watch wakes (five rounds); and the
/// elector-level hand-off.
fn watch_wakes_promptly(t: &Target, what: &str) {
    let (a, b) = (t.provider(), t.provider());
    let ttl = Duration::from_secs(30);
    let (wakeup, woken) = Wakeup::channel();
    let _watch = b
        .watch("wake", wakeup)
        .unwrap()
        .expect("consul pushes changes");
    let mut took = Vec::new();
    for _ in 0..5 {
        let lease = must_acquire(&a, "wake", "a", ttl);
        assert!(matches!(
            acquire(&b, "wake", "b", ttl),
            Acquisition::Held(Some(_))
        ));
        std::thread::sleep(Duration::from_millis(200));
        while woken.try_recv().is_ok() {}
        let sent = Instant::now();
        a.release(&lease, deadline()).unwrap();
        woken
            .recv_timeout(Duration::from_secs(5))
            .expect("no wake-up within 5 s of a release");
        // From the start of the release (its unlock is the first of its two round trips).
        took.push(sent.elapsed());
    }
    took.sort();
    eprintln!(
        "{what}: watch woke the follower {:?} (median) / {:?} (max) after the release was sent",
        took[2], took[4]
    );
    assert!(took[2] < Duration::from_secs(1), "{took:?}");
    let options = t.options.clone();
    let hand_off = common::assert_push_hand_off(Duration::from_secs(60), || {
        ConsulProvider::new(options.clone()).unwrap()
    });
    eprintln!("{what}: elector hand-off on release took {hand_off:?}");
}

#[test]
fn the_watch_wakes_a_follower_within_milliseconds_of_a_release() {
    watch_wakes_promptly(&Target::double(), "consul double");
}

#[test]
fn the_watch_wakes_a_follower_on_a_real_consul() {
    if let Some(t) = Target::real("the_watch_wakes_a_follower_on_a_real_consul") {
        watch_wakes_promptly(&t, "real consul");
    }
}

/// A wrong ACL token is a permanent error that names the problem, never the token; session
/// ids stay out of errors and logs too.
#[test]
fn acl_errors_are_permanent_and_secrets_stay_out_of_errors_and_logs() {
    capture_logs();
    let token = "Right-T0ken-4f2a";
    let double = ConsulDouble::with(Options {
        acl_token: Some(token.into()),
        ..Options::default()
    });
    let good = ConsulOptions::new(double.url())
        .key_prefix(prefix())
        .token(token);
    testing::first_acquirer_wins(&ConsulHarness(good.clone()));

    let wrong = "Wr0ng-T0ken-9c1e";
    let options = ConsulOptions::new(double.url())
        .key_prefix(prefix())
        .token(wrong);
    let p = ConsulProvider::new(options.clone()).unwrap();
    let e = p
        .try_acquire(
            &AcquireRequest::new("acl", "a", Duration::from_secs(5)),
            deadline(),
        )
        .unwrap_err();
    let text = format!("{} / {e:?} / {p:?} / {options:?}", chain(&e));
    assert!(!e.is_transient(), "{text}");
    assert!(
        text.contains("403") && text.contains("acl-not-found"),
        "{text}"
    );
    assert!(!text.contains(wrong), "the token leaked: {text}");
    eprintln!("wrong token: {}", e.report());

    let anonymous =
        ConsulProvider::new(ConsulOptions::new(double.url()).key_prefix(prefix())).unwrap();
    let e = anonymous
        .try_acquire(
            &AcquireRequest::new("acl", "a", Duration::from_secs(5)),
            deadline(),
        )
        .unwrap_err();
    assert!(
        !e.is_transient() && e.report().contains("permission-denied"),
        "{}",
        e.report()
    );

    // A session id travels in renew and destroy paths: it must show as (session).
    let p = ConsulProvider::new(good).unwrap();
    let lease = must_acquire(&p, "ids", "a", Duration::from_secs(5));
    double.faults(|f| f.status = Some((500, "No cluster leader")));
    let e = p.renew(&lease, deadline()).unwrap_err();
    assert!(e.is_transient());
    let text = e.report();
    assert!(
        text.contains("(session)") && text.contains("no-cluster-leader"),
        "{text}"
    );
    assert!(!text.contains(&lease.handle), "a session id leaked: {text}");
    assert!(p.release(&lease, deadline()).is_err());
    double.heal();
    p.release(&lease, deadline()).unwrap();
    let log = LOG.lock().unwrap();
    assert!(!log.is_empty());
    for secret in [token, wrong, lease.handle.as_str()] {
        if let Some(line) = log.iter().find(|l| l.contains(secret)) {
            panic!("a log line shows a secret: {line}");
        }
    }
}

/// A session kept from a lost campaign that is gone by the next one answers "invalid
/// session": the provider makes a new session instead of retrying that one.
#[test]
fn an_invalid_session_is_replaced_not_retried() {
    let double = ConsulDouble::start();
    let t = Target::at(&double.url(), None);
    let (a, b) = (t.provider(), t.provider());
    let ttl = Duration::from_secs(2);
    let la = must_acquire(&a, "spare", "a", ttl);
    assert!(matches!(
        acquire(&b, "spare", "b", ttl),
        Acquisition::Held(Some(_))
    ));
    assert_eq!(
        double.sessions().len(),
        1,
        "a follower makes no session for a held key"
    );
    // An operator destroys a's session: the key is released, with a's 2 s lock-delay.
    double.destroy_session(&la.handle);
    assert!(
        matches!(acquire(&b, "spare", "b", ttl), Acquisition::Held(None)),
        "the lock-delay holds b off"
    );
    let spare = double.sessions();
    assert_eq!(
        spare.len(),
        1,
        "b keeps the session it made, for its next campaign"
    );
    double.destroy_session(&spare[0].id);
    std::thread::sleep(ttl); // the lock-delay ends
    let txns = double.requests("txn");
    let lb = must_acquire(&b, "spare", "b", ttl);
    assert_ne!(lb.handle, spare[0].id);
    assert_eq!(
        double.requests("txn") - txns,
        2,
        "one lock answered \"invalid session\", one with a new session"
    );
    assert!(matches!(
        a.renew(&la, deadline()).unwrap(),
        Renewal::Lost(_)
    ));
    b.release(&lb, deadline()).unwrap();
}

/// `withdraw` destroys the session a participant kept from a lost campaign.
#[test]
fn withdraw_destroys_a_kept_session() {
    let double = ConsulDouble::start();
    let t = Target::at(&double.url(), None);
    let (a, b) = (t.provider(), t.provider());
    let ttl = Duration::from_secs(2);
    let la = must_acquire(&a, "withdraw", "a", ttl);
    double.destroy_session(&la.handle); // released, with a 2 s lock-delay
    assert!(matches!(
        acquire(&b, "withdraw", "b", ttl),
        Acquisition::Held(None)
    ));
    assert_eq!(double.sessions().len(), 1, "b kept its session");
    b.withdraw("withdraw", "b", deadline()).unwrap();
    assert!(double.sessions().is_empty(), "withdraw left a session");
}
