//! PostgreSQL's statements: `"double quote"` quoting, `clock_timestamp()`, and the native
//! provider's table and upsert (`INSERT … ON CONFLICT DO UPDATE … WHERE`), so both providers
//! can share one table.

use super::Arg::*;
use super::{Statements, Stmt, qualified};
use crate::providers::odbc::options::Dialect;

fn double_quote(id: &str) -> String {
    format!("\"{id}\"")
}

/// The native PostgreSQL provider's table and statements, with `?` placeholders: the two
/// providers can share a table (and a release here wakes the native provider's listeners).
pub(super) fn statements(schema: Option<&str>, table: &str) -> Statements {
    let q = qualified(schema, table, double_quote);
    let ms = |col: &str| format!("CAST(extract(epoch FROM {col}) * 1000 AS bigint)");
    let cols = |p: &str| {
        format!(
            "{p}participant_id, {p}fencing_token, {}, {p}metadata",
            ms(&format!("{p}acquired_at"))
        )
    };
    let live = "participant_id IS NOT NULL AND expires_at > clock_timestamp()";
    let ttl = "CAST(? AS bigint) * interval '1 microsecond'";
    let holder = format!(
        "SELECT 0, {} FROM {q} WHERE group_name = CAST(? AS text) AND {live}",
        cols("")
    );
    let mut create = Vec::new();
    if let Some(s) = schema {
        create.push(format!("CREATE SCHEMA IF NOT EXISTS {}", double_quote(s)));
    }
    create.push(format!(
        "CREATE TABLE IF NOT EXISTS {q} (
             group_name     text PRIMARY KEY,
             participant_id text,
             fencing_token  bigint NOT NULL,
             expires_at     timestamptz,
             acquired_at    timestamptz,
             metadata       text NOT NULL DEFAULT '{{}}'
         )"
    ));
    Statements {
        dialect: Dialect::Postgres,
        create,
        // ON CONFLICT DO UPDATE locks the conflicting row and evaluates its WHERE against the
        // latest committed version, even one the statement's snapshot does not see: of two
        // racing sessions, the second finds the first's live lease and updates nothing.
        acquire: Stmt {
            slot: 0,
            sql: format!(
                "WITH up AS (
                     INSERT INTO {q} AS t
                         (group_name, participant_id, fencing_token, expires_at, acquired_at, metadata)
                     VALUES (CAST(? AS text), CAST(? AS text), 1, clock_timestamp() + {ttl},
                             clock_timestamp(), CAST(? AS text))
                     ON CONFLICT (group_name) DO UPDATE
                        SET participant_id = EXCLUDED.participant_id,
                            fencing_token  = t.fencing_token + 1,
                            expires_at     = EXCLUDED.expires_at,
                            acquired_at    = EXCLUDED.acquired_at,
                            metadata       = EXCLUDED.metadata
                      WHERE t.participant_id IS NULL OR t.expires_at <= clock_timestamp()
                     RETURNING participant_id, fencing_token, acquired_at, metadata)
                 SELECT 1, {} FROM up
                 UNION ALL
                 {holder} AND NOT EXISTS (SELECT 1 FROM up)",
                cols("")
            ),
            args: &[Group, Participant, Ttl, Metadata, Group],
        },
        acquire_returning: None,
        acquire_read: None,
        renew: Stmt {
            slot: 1,
            sql: format!(
                "WITH up AS (
                     UPDATE {q} SET expires_at = clock_timestamp() + {ttl}
                      WHERE group_name = CAST(? AS text) AND participant_id = CAST(? AS text)
                        AND fencing_token = CAST(? AS bigint) AND expires_at > clock_timestamp()
                     RETURNING participant_id, fencing_token, acquired_at, metadata)
                 SELECT 1, {} FROM up
                 UNION ALL
                 {holder} AND NOT EXISTS (SELECT 1 FROM up)",
                cols("")
            ),
            args: &[Ttl, Group, Participant, Token, Group],
        },
        release: Stmt {
            slot: 2,
            sql: format!(
                "WITH rel AS (
                     UPDATE {q} SET participant_id = NULL, expires_at = NULL
                      WHERE group_name = CAST(? AS text) AND participant_id = CAST(? AS text)
                        AND fencing_token = CAST(? AS bigint)
                     RETURNING group_name)
                 SELECT pg_notify(CAST(? AS text), group_name) FROM rel"
            ),
            args: &[Group, Participant, Token, Channel],
        },
        leader: Stmt {
            slot: 3,
            sql: holder,
            args: &[Group],
        },
        ttl_in_ms: false,
    }
}
