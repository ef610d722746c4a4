//! MySQL's and MariaDB's statements: `` `backtick` `` quoting, `UTC_TIMESTAMP(6)`, `INSERT … ON
//! DUPLICATE KEY UPDATE` for the acquire (with MariaDB's `RETURNING` where it exists), and a
//! nonce column by which a call recognizes its own write.

use super::Arg::*;
use super::{Statements, Stmt, qualified};
use crate::providers::odbc::options::Dialect;

fn backtick(id: &str) -> String {
    format!("`{id}`")
}

pub(super) fn statements(schema: Option<&str>, table: &str) -> Statements {
    let q = qualified(schema, table, backtick);
    let now = "UTC_TIMESTAMP(6)";
    let since =
        "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', acquired_at) DIV 1000 AS SIGNED)";
    let cols = format!("participant_id, fencing_token, {since}, metadata");
    // A row is free once its expiry has passed or was cleared by a release (which clears the
    // participant with it): the test reads one column only, so the assignments below can run
    // in any order as long as `expires_at` comes last.
    let free = format!("(expires_at IS NULL OR expires_at <= {now})");
    let live = format!("expires_at > {now}");
    let mut create = Vec::new();
    if let Some(s) = schema {
        create.push(format!("CREATE SCHEMA IF NOT EXISTS {}", backtick(s)));
    }
    create.push(format!(
        "CREATE TABLE IF NOT EXISTS {q} (
             group_name     VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
             participant_id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NULL,
             fencing_token  BIGINT NOT NULL,
             expires_at     DATETIME(6) NULL,
             acquired_at    DATETIME(6) NULL,
             metadata       TEXT NOT NULL,
             nonce          BIGINT NOT NULL
         ) ENGINE=InnoDB"
    ));
    // InnoDB runs the UPDATE part on the existing row under an exclusive lock, reading its
    // latest committed values, so of two racing sessions the second sees the first's lease.
    // MySQL evaluates the assignments left to right, each seeing the columns already
    // assigned: every condition reads `expires_at`, which is assigned last.
    let upsert = format!(
        "INSERT INTO {q} (group_name, participant_id, fencing_token, expires_at, acquired_at, metadata, nonce)
         VALUES (?, ?, 1, {now} + INTERVAL ? MICROSECOND, {now}, ?, ?)
         ON DUPLICATE KEY UPDATE
             participant_id = IF({free}, VALUES(participant_id), participant_id),
             fencing_token  = IF({free}, fencing_token + 1, fencing_token),
             acquired_at    = IF({free}, VALUES(acquired_at), acquired_at),
             metadata       = IF({free}, VALUES(metadata), metadata),
             nonce          = IF({free}, VALUES(nonce), nonce),
             expires_at     = IF({free}, VALUES(expires_at), expires_at)"
    );
    let leader = format!("SELECT 0, {cols} FROM {q} WHERE group_name = ? AND {live}");
    Statements {
        dialect: Dialect::MySql,
        create,
        acquire: Stmt {
            slot: 0,
            sql: upsert.clone(),
            args: &[Group, Participant, Ttl, Metadata, Nonce],
        },
        acquire_returning: Some(Stmt {
            slot: 4,
            sql: format!("{upsert}\n         RETURNING nonce, {cols}"),
            args: &[Group, Participant, Ttl, Metadata, Nonce],
        }),
        acquire_read: Some(Stmt {
            slot: 5,
            sql: format!("SELECT nonce, {cols} FROM {q} WHERE group_name = ? AND {live}"),
            args: &[Group],
        }),
        // The fresh nonce makes the row change on every renew, so the affected-row count is 1
        // exactly when the lease was renewed, whether or not the driver counts found rows.
        renew: Stmt {
            slot: 1,
            sql: format!(
                "UPDATE {q} SET nonce = ?, expires_at = {now} + INTERVAL ? MICROSECOND
                  WHERE group_name = ? AND participant_id = ? AND fencing_token = ? AND {live}"
            ),
            args: &[Nonce, Ttl, Group, Participant, Token],
        },
        release: Stmt {
            slot: 2,
            sql: format!(
                "UPDATE {q} SET participant_id = NULL, expires_at = NULL
                  WHERE group_name = ? AND participant_id = ? AND fencing_token = ?"
            ),
            args: &[Group, Participant, Token],
        },
        leader: Stmt {
            slot: 3,
            sql: leader,
            args: &[Group],
        },
        ttl_in_ms: false,
    }
}
