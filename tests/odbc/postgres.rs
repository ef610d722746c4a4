//! PostgreSQL through psqlODBC (the PostgreSQL dialect, on the native provider's table).

use super::*;

use common::postgres_odbc;
use leader_election::{Dialect, Error, Renewal};

fn harness() -> OdbcHarness {
    OdbcHarness {
        options: OdbcOptions::new(postgres_odbc()).table("le_odbc_conformance"),
    }
}

leader_election::conformance_tests!(conformance, super::harness());

#[test]
fn the_dialect_comes_from_the_driver_name() {
    assert_eq!(harness().client().dialect(), Dialect::Postgres);
}

#[test]
fn metadata_and_since_round_trip() {
    super::metadata_and_since_round_trip(&harness());
}

#[test]
fn acquire_race_has_one_winner_per_round() {
    race(&harness(), 8, 25);
}

#[test]
fn sql_in_table_or_schema_names_is_rejected() {
    sql_in_names_is_rejected_before_any_statement(
        "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=1;UID=leader;PWD=leader-secret",
    );
}

#[test]
fn a_wrong_password_is_a_clear_permanent_error_that_does_not_echo_it() {
    common::odbc_setup();
    let wrong = with_password(&postgres_odbc(), "Wr0ng-Pg-s3cret");
    let e = OdbcProvider::new(OdbcOptions::new(&wrong)).unwrap_err();
    assert!(!e.is_transient(), "{}", chain(&e));
    assert!(
        chain(&e).contains("password authentication failed"),
        "{}",
        chain(&e)
    );
    assert_hidden("Wr0ng-Pg-s3cret", &e);
}

#[test]
fn a_statement_ends_at_its_callers_deadline_not_at_the_query_timeout() {
    common::odbc_setup();
    let table = common::unique("le_deadline");
    let p = OdbcProvider::new(
        OdbcOptions::new(postgres_odbc())
            .table(&table)
            .command_timeout(Duration::from_secs(20)),
    )
    .unwrap();
    let req = AcquireRequest::new("deadline", "a", Duration::from_secs(60));
    let Acquisition::Acquired(lease) = p.try_acquire(&req, deadline()).unwrap() else {
        panic!("not acquired");
    };
    let env = odbc_api::environment().unwrap();
    let locker = env
        .connect_with_connection_string(&postgres_odbc(), Default::default())
        .unwrap();
    locker.set_autocommit(false).unwrap();
    locker
        .execute(
            &format!("LOCK TABLE \"{table}\" IN ACCESS EXCLUSIVE MODE"),
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
    assert_eq!(p.renew(&lease, deadline()).unwrap(), Renewal::Renewed);
}

/// The PostgreSQL dialect uses the native provider's table: the two see each other's leases,
/// and tokens keep rising across them.
#[cfg(feature = "postgres")]
#[test]
fn shares_a_table_with_the_native_provider() {
    use leader_election::{PostgresOptions, PostgresProvider};
    common::odbc_setup();
    let table = common::unique("le_shared");
    let odbc = OdbcProvider::new(OdbcOptions::new(postgres_odbc()).table(&table)).unwrap();
    let native =
        PostgresProvider::new(PostgresOptions::new(common::postgres_url()).table(&table)).unwrap();
    let g = "shared";
    let Acquisition::Acquired(a) = odbc
        .try_acquire(
            &AcquireRequest::new(g, "odbc", Duration::from_secs(30)),
            deadline(),
        )
        .unwrap()
    else {
        panic!("odbc did not acquire");
    };
    let seen = native
        .leader(g, deadline())
        .unwrap()
        .expect("native sees it");
    assert_eq!(
        (seen.participant_id.as_str(), seen.fencing_token),
        ("odbc", a.fencing_token())
    );
    odbc.release(&a, deadline()).unwrap();
    let Acquisition::Acquired(b) = native
        .try_acquire(
            &AcquireRequest::new(g, "native", Duration::from_secs(30)),
            deadline(),
        )
        .unwrap()
    else {
        panic!("native did not acquire");
    };
    assert!(b.fencing_token() > a.fencing_token());
    let seen = odbc.leader(g, deadline()).unwrap().expect("odbc sees it");
    assert_eq!(seen.participant_id, "native");
}

#[test]
fn a_server_restart_costs_no_failed_call() {
    common::odbc_setup();
    let pg = common::PrivatePostgres::start(false);
    let conn = format!(
        "Driver={{PostgreSQL Unicode}};Server=127.0.0.1;Port={};Database=leader_election;\
         UID=leader;PWD=leader-secret;",
        pg.port
    );
    let p = OdbcProvider::new(OdbcOptions::new(conn).pool_size(1)).unwrap();
    let req = AcquireRequest::new("restart-call", "a", Duration::from_secs(60));
    let Acquisition::Acquired(lease) = p.try_acquire(&req, deadline()).unwrap() else {
        panic!("not acquired");
    };
    pg.stop_server();
    pg.start_server();
    // The pooled connection died with the server; the call is retried on a new one.
    let renewed = p.renew(&lease, deadline());
    assert!(
        matches!(renewed, Ok(Renewal::Renewed)),
        "{:?}",
        renewed.map_err(|e| chain(&e))
    );
}
