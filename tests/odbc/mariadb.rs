//! MariaDB through its ODBC driver (the MySQL dialect): the conformance suite with and without
//! `INSERT … RETURNING`, the acquire race, deadlines, restarts and failure cases.

use super::*;

use common::{PrivateMariaDb, mariadb_odbc};
use leader_election::{Dialect, Error, Renewal};

fn harness() -> OdbcHarness {
    OdbcHarness {
        options: OdbcOptions::new(mariadb_odbc()).table("le_conformance"),
    }
}

/// The MySQL path: no `RETURNING`, an acquire is the upsert and then a read.
fn harness_without_returning() -> OdbcHarness {
    OdbcHarness {
        options: OdbcOptions::new(mariadb_odbc())
            .table("le_conformance")
            .mariadb_returning(false),
    }
}

leader_election::conformance_tests!(conformance, super::harness());
leader_election::conformance_tests!(
    conformance_without_returning,
    super::harness_without_returning()
);

#[test]
fn the_dialect_comes_from_the_driver_name() {
    assert_eq!(harness().client().dialect(), Dialect::MySql);
}

#[test]
fn metadata_and_since_round_trip() {
    super::metadata_and_since_round_trip(&harness());
    super::metadata_and_since_round_trip(&harness_without_returning());
}

#[test]
fn acquire_race_has_one_winner_per_round() {
    race(&harness(), 8, 25);
}

#[test]
fn acquire_race_has_one_winner_per_round_without_returning() {
    race(&harness_without_returning(), 8, 25);
}

#[test]
fn sql_in_table_or_schema_names_is_rejected() {
    sql_in_names_is_rejected_before_any_statement(
        "Driver={MariaDB Unicode};Server=127.0.0.1;Port=1;UID=leader;PWD=leader-secret",
    );
}

#[test]
fn a_wrong_password_is_a_clear_permanent_error_that_does_not_echo_it() {
    common::odbc_setup();
    let wrong = with_password(&mariadb_odbc(), "Wr0ng-Ma-s3cret");
    let e = OdbcProvider::new(OdbcOptions::new(&wrong)).unwrap_err();
    assert!(!e.is_transient(), "{}", chain(&e));
    assert!(chain(&e).contains("Access denied"), "{}", chain(&e));
    assert_hidden("Wr0ng-Ma-s3cret", &e);
    assert!(!format!("{:?}", OdbcOptions::new(&wrong)).contains("Wr0ng"));
    // Found later, by a lazy provider: still permanent, still hidden.
    let p = OdbcProvider::new(OdbcOptions::new(&wrong).fail_fast(false)).unwrap();
    let req = AcquireRequest::new("late-auth", "a", Duration::from_secs(5));
    let e = p
        .try_acquire(&req, Instant::now() + Duration::from_secs(3))
        .unwrap_err();
    assert!(!e.is_transient(), "{}", chain(&e));
    assert_hidden("Wr0ng-Ma-s3cret", &e);
}

#[test]
fn a_missing_driver_is_named() {
    common::odbc_setup();
    let e = OdbcProvider::new(OdbcOptions::mysql(
        "Driver={MariaDB Unicorn};Server=127.0.0.1;UID=leader;PWD=Dr1ver-s3cret",
    ))
    .unwrap_err();
    let text = chain(&e);
    assert!(
        matches!(e, Error::InvalidConfig { .. }) && text.contains("\"MariaDB Unicorn\""),
        "{text}"
    );
    assert!(
        text.contains("MariaDB Unicode"),
        "the installed drivers are listed: {text}"
    );
    assert_hidden("Dr1ver-s3cret", &e);
    let e = OdbcProvider::new(OdbcOptions::mysql(
        "Driver=/nonexistent/libmaodbc.so;Server=127.0.0.1",
    ))
    .unwrap_err();
    assert!(
        chain(&e).contains("/nonexistent/libmaodbc.so"),
        "{}",
        chain(&e)
    );
}

#[test]
fn a_missing_table_without_create_is_a_clear_error() {
    common::odbc_setup();
    let table = common::unique("absent");
    let e = OdbcProvider::new(
        OdbcOptions::new(mariadb_odbc())
            .table(&table)
            .create_table(false),
    )
    .unwrap_err();
    let text = chain(&e);
    assert!(
        text.contains(&table) && text.contains("doesn't exist"),
        "{text}"
    );
    assert!(!e.is_transient());
}

#[test]
fn a_schema_is_a_database_created_on_demand() {
    let h = OdbcHarness {
        options: OdbcOptions::new(mariadb_odbc()).schema(common::unique("le_db")),
    };
    leader_election::testing::first_acquirer_wins(&h);
}

#[test]
fn a_url_with_a_connection_string_leads() {
    common::odbc_setup();
    let url = format!(
        "odbc:{}?table={}&command_timeout=2s&pool_size=1",
        mariadb_odbc(),
        common::unique("le_url")
    );
    let p = leader_election::connect(&url).unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(p.name(), "odbc");
    let req = AcquireRequest::new("url", "a", Duration::from_secs(5));
    assert!(matches!(
        p.try_acquire(&req, deadline()).unwrap(),
        Acquisition::Acquired(_)
    ));
}

#[test]
fn a_statement_ends_at_its_callers_deadline_not_at_the_server_limits() {
    common::odbc_setup();
    let table = common::unique("le_deadline");
    let p = OdbcProvider::new(
        OdbcOptions::new(mariadb_odbc())
            .table(&table)
            .command_timeout(Duration::from_secs(20)),
    )
    .unwrap();
    let req = AcquireRequest::new("deadline", "a", Duration::from_secs(60));
    let Acquisition::Acquired(lease) = p.try_acquire(&req, deadline()).unwrap() else {
        panic!("not acquired");
    };
    // Another session locks the row, so the renew waits (up to the 20 s lock-wait limit).
    let env = odbc_api::environment().unwrap();
    let locker = env
        .connect_with_connection_string(&mariadb_odbc(), Default::default())
        .unwrap();
    locker.set_autocommit(false).unwrap();
    locker
        .execute(
            &format!("SELECT * FROM `{table}` WHERE group_name = 'deadline' FOR UPDATE"),
            (),
            None,
        )
        .unwrap();
    let start = Instant::now();
    let e = p
        .renew(&lease, Instant::now() + Duration::from_millis(500))
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(e, Error::Timeout { .. }), "{}", chain(&e));
    assert!(took < Duration::from_secs(3), "the renew took {took:?}");
    locker.rollback().unwrap();
    drop(locker);
    // The abandoned call finishes on its own thread; the next call is served at once.
    assert_eq!(p.renew(&lease, deadline()).unwrap(), Renewal::Renewed);
}

#[test]
fn a_server_restart_costs_no_failed_call() {
    common::odbc_setup();
    let db = PrivateMariaDb::start();
    let p = OdbcProvider::new(OdbcOptions::new(db.odbc()).pool_size(1)).unwrap();
    let req = AcquireRequest::new("restart-call", "a", Duration::from_secs(60));
    let Acquisition::Acquired(lease) = p.try_acquire(&req, deadline()).unwrap() else {
        panic!("not acquired");
    };
    db.stop_server();
    db.start_server();
    // The pooled connection died with the server; the call is retried on a new one.
    let renewed = p.renew(&lease, deadline());
    assert_eq!(renewed.ok(), Some(Renewal::Renewed), "{}", db.log());
}

#[test]
fn leader_steps_down_when_the_server_dies_and_leads_again_after() {
    common::odbc_setup();
    let db = PrivateMariaDb::start();
    let p = OdbcProvider::new(
        OdbcOptions::new(db.odbc())
            .command_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let e = common::fast_elector(p, "restart", Duration::from_millis(500));
    let changes = e.subscribe();
    let (first, _) = common::wait_acquired(&changes, Duration::from_secs(20));
    db.stop_server();
    let stopped = Instant::now();
    common::expect_deadline_step_down(&changes, Duration::from_secs(10));
    // A 3 s lease renewed every 0.5 s: the deadline is at most 3 s after the last renew.
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "stepped down after {:?}",
        stopped.elapsed()
    );
    assert!(!e.is_leader());
    db.start_server();
    let (again, _) = common::wait_acquired(&changes, Duration::from_secs(30));
    assert!(again > first, "led again with token {again} after {first}");
    e.shutdown().unwrap();
}
