//! SQL Server, when `LE_MSSQL_ODBC` holds an ODBC connection string (see the README); each
//! test otherwise writes a loud "DID NOT RUN" line past the harness's output capture.

use super::*;

fn harness(conn: &str, table: &str) -> OdbcHarness {
    OdbcHarness {
        options: OdbcOptions::sql_server(conn).table(table),
    }
}

#[test]
fn sqlserver_conformance_and_statements_on_a_real_server() {
    let Some(conn) = common::mssql_odbc("sqlserver_conformance_and_statements_on_a_real_server")
    else {
        return;
    };
    common::odbc_setup();
    // Building the provider creates the table and prepares (and has the server describe)
    // every T-SQL statement; "select" is a reserved word, so this also proves the quoting.
    let h = harness(&conn, "select");
    drop(h.client());
    let h = OdbcHarness {
        options: OdbcOptions::sql_server(&conn)
            .schema(common::unique("le_schema"))
            .table("le_conformance"),
    };
    all_conformance_checks(&h);
    metadata_and_since_round_trip(&h);
}

#[test]
fn sqlserver_acquire_race_has_one_winner_per_round() {
    let Some(conn) = common::mssql_odbc("sqlserver_acquire_race_has_one_winner_per_round") else {
        return;
    };
    race(&harness(&conn, "le_race"), 8, 20);
}

#[test]
fn sqlserver_wrong_password_is_permanent_and_hidden() {
    let Some(conn) = common::mssql_odbc("sqlserver_wrong_password_is_permanent_and_hidden") else {
        return;
    };
    common::odbc_setup();
    let wrong = with_password(&conn, "Wr0ng-MS-s3cret");
    let e = OdbcProvider::new(OdbcOptions::sql_server(wrong)).unwrap_err();
    assert!(!e.is_transient(), "{}", chain(&e));
    assert_hidden("Wr0ng-MS-s3cret", &e);
}
