//! The Redis provider against a live server: the conformance suite on the shared server
//! (`LE_REDIS_URL`), then data loss, outages, credentials and TLS on private instances.
#![cfg(feature = "redis")]

use le_test_support as common;

use std::time::{Duration, Instant};

use common::{PrivateRedis, chain, make_tls_certs, redis_url, unique};
use leader_election::testing::Harness;
use leader_election::{
    AcquireRequest, Acquisition, Error, LeadershipChange, Provider, RedisOptions, RedisProvider,
    Tls,
};

struct RedisHarness {
    options: RedisOptions,
}

impl Harness for RedisHarness {
    type Provider = RedisProvider;
    fn client(&self) -> RedisProvider {
        RedisProvider::new(self.options.clone())
            .unwrap_or_else(|e| panic!("cannot reach Redis at LE_REDIS_URL: {}", chain(&e)))
    }
}

fn shared() -> RedisHarness {
    RedisHarness {
        options: RedisOptions::new(redis_url()).key_prefix(format!("{}:", unique("le-conf"))),
    }
}

leader_election::conformance_tests!(conformance, super::shared());

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn acquire(p: &RedisProvider, group: &str, who: &str) -> Acquisition {
    p.try_acquire(
        &AcquireRequest::new(group, who, Duration::from_secs(30)),
        deadline(),
    )
    .unwrap_or_else(|e| panic!("acquire: {}", chain(&e)))
}

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("raw connection")
}

#[test]
fn tokens_keep_rising_after_redis_loses_its_data() {
    let mut server = PrivateRedis::start(&[]);
    let p = RedisProvider::new(RedisOptions::new(server.url())).unwrap();
    let Acquisition::Acquired(first) = acquire(&p, "g", "a") else {
        panic!("not acquired")
    };
    // A restart without persistence: every key, the token counter included, is gone.
    server.stop_server();
    server.start_server();
    // A participant that saw nothing before (a new process) may take it at once.
    let fresh = RedisProvider::new(RedisOptions::new(server.url())).unwrap();
    let Acquisition::Acquired(second) = acquire(&fresh, "g", "b") else {
        panic!("not acquired after the restart")
    };
    assert!(
        second.fencing_token() > first.fencing_token(),
        "token went from {} to {}",
        first.fencing_token(),
        second.fencing_token()
    );
    // The old holder learns it no longer holds the key.
    assert!(matches!(
        p.renew(&first, deadline()).unwrap(),
        leader_election::Renewal::Lost(_)
    ));
}

#[test]
fn a_follower_that_saw_a_leader_waits_one_ttl_after_the_data_is_lost() {
    let server = PrivateRedis::start(&[]);
    let (a, b) = (
        RedisProvider::new(RedisOptions::new(server.url())).unwrap(),
        RedisProvider::new(RedisOptions::new(server.url())).unwrap(),
    );
    let ttl = Duration::from_secs(2);
    let req = |who: &str| AcquireRequest::new("flushed", who, ttl);
    let Acquisition::Acquired(lease) = a.try_acquire(&req("a"), deadline()).unwrap() else {
        panic!("a did not acquire")
    };
    assert!(matches!(
        b.try_acquire(&req("b"), deadline()).unwrap(),
        Acquisition::Held(Some(_))
    ));
    let _: () = redis::cmd("FLUSHALL")
        .query(&mut raw(&server.url()))
        .unwrap();
    let lost = Instant::now();
    // a still believes it leads until its next renew; b must not take the group meanwhile.
    assert!(matches!(
        b.try_acquire(&req("b"), deadline()).unwrap(),
        Acquisition::Held(None)
    ));
    assert!(matches!(
        a.renew(&lease, deadline()).unwrap(),
        leader_election::Renewal::Lost(_)
    ));
    let taken = loop {
        match b.try_acquire(&req("b"), deadline()).unwrap() {
            Acquisition::Acquired(l) => break l,
            Acquisition::Held(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(
        lost.elapsed() >= ttl,
        "b took the group {:?} after the loss",
        lost.elapsed()
    );
    assert!(taken.fencing_token() > lease.fencing_token());
}

#[test]
fn leader_steps_down_when_redis_restarts_empty_and_leads_again() {
    let mut server = PrivateRedis::start(&[]);
    let p = RedisProvider::new(
        RedisOptions::new(server.url())
            .connect_timeout(Duration::from_secs(1))
            .command_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let e = common::fast_elector(p, "restart", Duration::from_millis(300));
    let changes = e.subscribe();
    let (first, _) = common::wait_acquired(&changes, Duration::from_secs(20));
    let threads_before = common::thread_count();
    server.stop_server();
    let stopped = Instant::now();
    match changes.recv_timeout(Duration::from_secs(10)) {
        Ok(LeadershipChange::Lost { .. }) => {}
        other => panic!("expected Lost, got {other:?}"),
    }
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "stepped down after {:?}",
        stopped.elapsed()
    );
    assert!(!e.is_leader());
    server.start_server();
    let (again, _) = common::wait_acquired(&changes, Duration::from_secs(30));
    assert!(again > first, "did not lead again with a higher token");
    // Reconnecting did not pile up threads.
    assert!(common::thread_count() <= threads_before + 1);
    e.shutdown().unwrap();
}

#[test]
fn server_down_at_start_fails_fast_or_retries_as_configured() {
    let mut server = PrivateRedis::start(&[]);
    server.stop_server();
    let e = RedisProvider::new(RedisOptions::new(server.url())).unwrap_err();
    assert!(e.is_transient(), "{}", chain(&e));
    assert!(e.to_string().contains("redis"), "{e}");
    let p = RedisProvider::new(RedisOptions::new(server.url()).fail_fast(false)).unwrap();
    common::assert_leads_once_the_server_starts(p, || server.start_server());
}

#[test]
fn acl_users_work_and_bad_passwords_are_not_echoed() {
    let user = unique("le_user");
    let mut admin = raw(&redis_url());
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                &user,
                "on",
                ">Corr3ct-Horse",
                "~*",
                "&*",
                "+@all",
            ][..],
        )
        .query(&mut admin)
        .expect("ACL SETUSER");
    let base = redis_url();
    let rest = base
        .strip_prefix("redis://")
        .expect("a redis:// LE_REDIS_URL");
    let good = format!("redis://{user}:Corr3ct-Horse@{rest}");
    let h = RedisHarness {
        options: RedisOptions::new(&good),
    };
    leader_election::testing::first_acquirer_wins(&h);
    leader_election::testing::release_lets_another_acquire_at_once(&h);

    let bad = format!("redis://{user}:Wr0ng-Battery@{rest}");
    let e = RedisProvider::new(RedisOptions::new(&bad)).unwrap_err();
    let text = format!("{} / {e:?}", chain(&e));
    assert!(!text.contains("Wr0ng-Battery"), "password leaked: {text}");
    assert!(!e.is_transient(), "{text}");
    assert!(
        text.to_uppercase().contains("WRONGPASS") || text.contains("auth"),
        "{text}"
    );
    let _: () = redis::cmd("ACL")
        .arg(&["DELUSER", &user][..])
        .query(&mut admin)
        .unwrap();

    let e = RedisProvider::new(RedisOptions::new(
        "redis://u:S3cret-Xyz@127.0.0.1:notaport/",
    ))
    .unwrap_err();
    assert!(
        matches!(e, Error::InvalidConfig { field: "url", .. }),
        "{e}"
    );
    assert!(!format!("{} {e:?}", chain(&e)).contains("S3cret-Xyz"));
    let options = RedisOptions::new("redis://u:S3cret-Xyz@127.0.0.1/");
    assert!(!format!("{options:?}").contains("S3cret-Xyz"));
}

#[test]
fn a_bad_key_prefix_is_rejected() {
    for prefix in ["has space:", "brace{", "x\n"] {
        let e = RedisProvider::new(RedisOptions::new(redis_url()).key_prefix(prefix)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    field: "key_prefix",
                    ..
                }
            ),
            "{e}"
        );
    }
}

#[test]
fn rediss_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    make_tls_certs(dir.path(), &cert, &key);
    let port = common::free_port();
    let args = [
        "--tls-port".to_owned(),
        port.to_string(),
        "--tls-cert-file".to_owned(),
        cert.display().to_string(),
        "--tls-key-file".to_owned(),
        key.display().to_string(),
        "--tls-auth-clients".to_owned(),
        "no".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _server = PrivateRedis::start(&args);
    let url = format!("rediss://127.0.0.1:{port}/");
    let h = RedisHarness {
        options: RedisOptions::new(&url).tls(Tls::VerifyWithCa(dir.path().join("ca.crt"))),
    };
    leader_election::testing::first_acquirer_wins(&h);
    leader_election::testing::watch_wakes_on_release(&h);
    // The system roots do not know the test CA.
    let e = RedisProvider::new(RedisOptions::new(&url)).unwrap_err();
    assert!(
        chain(&e).to_lowercase().contains("certificate"),
        "{}",
        chain(&e)
    );
    // Explicitly insecure works.
    let p = RedisProvider::new(RedisOptions::new(&url).tls(Tls::DangerAcceptInvalidCerts)).unwrap();
    assert!(matches!(
        acquire(&p, "insecure", "a"),
        Acquisition::Acquired(_)
    ));
}

#[test]
fn release_wakes_a_follower_through_pubsub() {
    let took = common::assert_push_hand_off(Duration::from_secs(60), || {
        RedisProvider::new(RedisOptions::new(redis_url())).unwrap()
    });
    eprintln!("redis hand-off on release took {took:?}");
}

#[test]
fn the_pubsub_listener_survives_idle_pings_and_killed_connections() {
    let server = PrivateRedis::start(&[]);
    let (a, b) = (
        RedisProvider::new(RedisOptions::new(server.url())).unwrap(),
        RedisProvider::new(RedisOptions::new(server.url())).unwrap(),
    );
    let (wakeup, woken) = leader_election::Wakeup::channel();
    let _watch = b.watch("g", wakeup).unwrap().expect("redis pushes changes");
    let deadline = || Instant::now() + Duration::from_secs(5);
    let handoff = |round: &str| {
        let Acquisition::Acquired(lease) = acquire(&a, "g", "a") else {
            panic!("{round}: not acquired")
        };
        while woken.try_recv().is_ok() {}
        a.release(&lease, deadline()).unwrap();
        assert!(
            woken.recv_timeout(Duration::from_secs(5)).is_ok(),
            "{round}: no wake-up after the release"
        );
    };
    handoff("fresh");
    std::thread::sleep(Duration::from_secs(6)); // the listener pings its idle connection
    handoff("after an idle ping");
    let mut admin = raw(&server.url());
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"][..])
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 1);
    std::thread::sleep(Duration::from_millis(500)); // reconnect and resubscribe
    handoff("after the connection was killed");
}
