//! The PostgreSQL provider against a live server: the conformance suite on the shared server
//! (`LE_POSTGRES_URL`), then failure cases on private instances.
#![cfg(feature = "postgres")]

use le_test_support as common;

use std::time::{Duration, Instant};

use common::{PrivatePostgres, chain, postgres_url, unique};
use leader_election::testing::Harness;
use leader_election::{
    AcquireRequest, Acquisition, Error, PostgresOptions, PostgresProvider, Provider, Tls,
};

struct PgHarness {
    url: String,
    tls: Tls,
}

impl Harness for PgHarness {
    type Provider = PostgresProvider;
    fn client(&self) -> PostgresProvider {
        PostgresProvider::new(
            PostgresOptions::new(&self.url)
                .table("le_conformance")
                .tls(self.tls.clone()),
        )
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at LE_POSTGRES_URL: {}", chain(&e)))
    }
}

fn shared() -> PgHarness {
    PgHarness {
        url: postgres_url(),
        tls: Tls::Verify,
    }
}

leader_election::conformance_tests!(conformance, super::shared());

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[test]
fn sql_in_table_or_schema_names_is_rejected() {
    for (table, schema) in [
        ("leases; DROP TABLE users", "public"),
        ("leases\"--", "public"),
        ("Leases", "public"),
        ("leases", "public; DROP SCHEMA x"),
    ] {
        let e = PostgresProvider::new(
            PostgresOptions::new(postgres_url())
                .table(table)
                .schema(schema),
        )
        .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("table") || msg.contains("schema"), "{msg}");
        assert!(!e.is_transient());
    }
}

#[test]
fn a_bad_password_is_a_clear_permanent_error_that_does_not_echo_it() {
    let url = postgres_url().replace("leader-secret", "wr0ng-Pa55word");
    assert!(
        url.contains("wr0ng-Pa55word"),
        "LE_POSTGRES_URL must use the password leader-secret"
    );
    let e = PostgresProvider::new(PostgresOptions::new(&url)).unwrap_err();
    let text = format!("{} / {e:?}", chain(&e));
    assert!(!text.contains("wr0ng-Pa55word"), "password leaked: {text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!e.is_transient(), "{text}");
}

#[test]
fn an_unparsable_connection_string_does_not_echo_it() {
    let e = PostgresProvider::new(PostgresOptions::new(
        "postgres://leader:s3cr3t-P4ss@127.0.0.1:notaport/db",
    ))
    .unwrap_err();
    let text = format!("{} / {e:?}", chain(&e));
    assert!(
        matches!(e, Error::InvalidConfig { field: "url", .. }),
        "{text}"
    );
    assert!(!text.contains("s3cr3t-P4ss"), "{text}");
    let options = PostgresOptions::new("postgres://leader:s3cr3t-P4ss@127.0.0.1/db");
    assert!(!format!("{options:?}").contains("s3cr3t-P4ss"));
}

#[test]
fn a_missing_table_without_create_is_a_clear_error() {
    let e = PostgresProvider::new(
        PostgresOptions::new(postgres_url())
            .table(unique("absent"))
            .create_table(false),
    )
    .unwrap_err();
    let text = chain(&e);
    assert!(text.contains("does not exist"), "{text}");
    assert!(!e.is_transient());
}

#[test]
fn a_custom_schema_is_created_and_used() {
    let schema = unique("le_schema");
    let p = PostgresProvider::new(PostgresOptions::new(postgres_url()).schema(&schema)).unwrap();
    let req = AcquireRequest::new("g", "a", Duration::from_secs(5));
    assert!(matches!(
        p.try_acquire(&req, deadline()).unwrap(),
        Acquisition::Acquired(_)
    ));
}

#[test]
fn server_down_at_start_fails_fast_or_retries_as_configured() {
    let pg = PrivatePostgres::start(false);
    pg.stop_server();
    // Fail fast (the default): a clear, transient error naming the backend.
    let start = Instant::now();
    let e = PostgresProvider::new(PostgresOptions::new(pg.url("sslmode=disable"))).unwrap_err();
    assert!(e.is_transient(), "{}", chain(&e));
    assert!(e.to_string().contains("postgres"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // Lazy: the elector retries until the server is up.
    let p = PostgresProvider::new(PostgresOptions::new(pg.url("sslmode=disable")).fail_fast(false))
        .expect("lazy provider");
    common::assert_leads_once_the_server_starts(p, || pg.start_server());
}

#[test]
fn tls_with_sslmode_require() {
    let pg = PrivatePostgres::start(true);
    let url = pg.url("sslmode=require");
    // Verified against the test CA: the whole conformance check passes over TLS.
    let h = PgHarness {
        url: url.clone(),
        tls: Tls::VerifyWithCa(pg.ca_file()),
    };
    leader_election::testing::first_acquirer_wins(&h);
    leader_election::testing::release_lets_another_acquire_at_once(&h);
    // libpq's verify-full and verify-ca spellings are understood.
    for mode in ["verify-full", "verify-ca"] {
        let h = PgHarness {
            url: pg.url(&format!("sslmode={mode}")),
            tls: Tls::VerifyWithCa(pg.ca_file()),
        };
        leader_election::testing::first_acquirer_wins(&h);
    }
    // The system roots do not know the test CA: a clear error, no password.
    let e = PostgresProvider::new(PostgresOptions::new(&url)).unwrap_err();
    let text = chain(&e);
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(!text.contains("leader-secret"), "{text}");
    // libpq's `require` semantics, chosen explicitly.
    let p = PostgresProvider::new(PostgresOptions::new(&url).tls(Tls::DangerAcceptInvalidCerts))
        .unwrap();
    let req = AcquireRequest::new("tls-noverify", "a", Duration::from_secs(5));
    assert!(matches!(
        p.try_acquire(&req, deadline()).unwrap(),
        Acquisition::Acquired(_)
    ));
    // A server without TLS refuses `sslmode=require` clients.
    let plain = PrivatePostgres::start(false);
    let e = PostgresProvider::new(PostgresOptions::new(plain.url("sslmode=require"))).unwrap_err();
    assert!(
        chain(&e).to_lowercase().contains("tls") || chain(&e).contains("ssl"),
        "{}",
        chain(&e)
    );
}

#[test]
fn release_wakes_a_follower_through_notify() {
    let took = common::assert_push_hand_off(Duration::from_secs(60), || {
        PostgresProvider::new(PostgresOptions::new(postgres_url())).unwrap()
    });
    eprintln!("postgres hand-off on release took {took:?}");
}

#[test]
fn leader_steps_down_when_the_server_dies_and_recovers_after() {
    let pg = PrivatePostgres::start(false);
    let p = PostgresProvider::new(
        PostgresOptions::new(pg.url("sslmode=disable"))
            .command_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let e = common::fast_elector(p, "restart", Duration::from_millis(500));
    let changes = e.subscribe();
    let (first, _) = common::wait_acquired(&changes, Duration::from_secs(20));
    pg.stop_server();
    let stopped = Instant::now();
    common::expect_deadline_step_down(&changes, Duration::from_secs(10));
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "stepped down after {:?}",
        stopped.elapsed()
    );
    assert!(!e.is_leader());
    pg.start_server();
    let (again, _) = common::wait_acquired(&changes, Duration::from_secs(30));
    assert!(again > first, "did not lead again with a higher token");
    e.shutdown().unwrap();
}

#[test]
fn a_server_restart_costs_no_failed_call() {
    let pg = PrivatePostgres::start(false);
    let p = PostgresProvider::new(PostgresOptions::new(pg.url("sslmode=disable"))).unwrap();
    let req = AcquireRequest::new("restart-call", "a", Duration::from_secs(30));
    let Acquisition::Acquired(lease) = p.try_acquire(&req, deadline()).unwrap() else {
        panic!("not acquired")
    };
    pg.stop_server();
    pg.start_server();
    // The pooled connection died with the server; the call transparently uses a new one.
    let renewed = p.renew(&lease, deadline());
    assert_eq!(renewed.ok(), Some(leader_election::Renewal::Renewed));
}

#[test]
fn a_statement_ends_at_its_callers_deadline_not_at_the_statement_timeout() {
    let table = unique("le_deadline");
    let p = PostgresProvider::new(
        PostgresOptions::new(postgres_url())
            .table(&table)
            .command_timeout(Duration::from_secs(20)),
    )
    .unwrap();
    let req = AcquireRequest::new("deadline", "a", Duration::from_secs(30));
    let Acquisition::Acquired(lease) = p.try_acquire(&req, deadline()).unwrap() else {
        panic!("not acquired");
    };
    // Another session locks the table, so the renew waits for the lock.
    let mut locker = postgres::Client::connect(&postgres_url(), postgres::NoTls).unwrap();
    let mut tx = locker.transaction().unwrap();
    tx.batch_execute(&format!(
        "LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE"
    ))
    .unwrap();
    let start = Instant::now();
    let e = p
        .renew(&lease, Instant::now() + Duration::from_millis(500))
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(e, Error::Timeout { .. }), "{}", chain(&e));
    // Before: the 20 s statement timeout. Generous for a busy machine, far below 20 s.
    assert!(took < Duration::from_secs(8), "the renew took {took:?}");
    tx.rollback().unwrap();
    // The cancelled connection is not reused for a later statement; the next call works.
    assert_eq!(
        p.renew(&lease, deadline()).unwrap(),
        leader_election::Renewal::Renewed
    );
}

#[test]
fn the_users_own_options_are_kept() {
    let table = unique("le_opts");
    drop(PostgresProvider::new(PostgresOptions::new(postgres_url()).table(&table)).unwrap());
    let url = format!(
        "{}&options=-c%20default_transaction_read_only%3Don",
        postgres_url()
    );
    let p =
        PostgresProvider::new(PostgresOptions::new(url).table(&table).create_table(false)).unwrap();
    let req = AcquireRequest::new("opts", "a", Duration::from_secs(5));
    let e = p.try_acquire(&req, deadline()).unwrap_err();
    assert!(chain(&e).contains("read-only"), "{}", chain(&e));
}

#[test]
fn a_bad_password_found_after_start_is_permanent() {
    let url = postgres_url().replace("leader-secret", "not-the-password");
    let p = PostgresProvider::new(PostgresOptions::new(url).fail_fast(false)).unwrap();
    let req = AcquireRequest::new("late-auth", "a", Duration::from_secs(5));
    let e = p
        .try_acquire(&req, Instant::now() + Duration::from_secs(3))
        .unwrap_err();
    assert!(!e.is_transient(), "{}", chain(&e));
    assert!(!chain(&e).contains("not-the-password"), "{}", chain(&e));
}
