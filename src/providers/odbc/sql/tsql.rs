//! SQL Server's statements (T-SQL): `[bracket]` quoting, `SYSUTCDATETIME()`, `MERGE … WITH
//! (HOLDLOCK)` with `OUTPUT` for the acquire, and batches whose `SELECT` reports the holder.

use super::Arg::*;
use super::{Statements, Stmt, qualified};
use crate::providers::odbc::options::Dialect;

fn bracket(id: &str) -> String {
    format!("[{id}]")
}

pub(super) fn statements(schema: Option<&str>, table: &str) -> Statements {
    let q = qualified(schema, table, bracket);
    let now = "SYSUTCDATETIME()";
    let ms = |col: &str| format!("DATEDIFF_BIG(millisecond, '19700101', {col})");
    let cols = |p: &str| {
        format!(
            "{p}participant_id, {p}fencing_token, {}, {p}metadata",
            ms(&format!("{p}acquired_at"))
        )
    };
    let live = format!("participant_id IS NOT NULL AND expires_at > {now}");
    let holder = format!(
        "SELECT 0, {} FROM {q} WHERE group_name = ? AND {live};",
        cols("")
    );
    let mut create = Vec::new();
    if let Some(s) = schema {
        create.push(format!(
            "IF SCHEMA_ID(N'{s}') IS NULL EXEC(N'CREATE SCHEMA {}')",
            bracket(s)
        ));
    }
    // Object names in OBJECT_ID are quoted too; N'' literals hold only validated names.
    let object = match schema {
        Some(s) => format!("[{s}].[{table}]"),
        None => format!("[{table}]"),
    };
    create.push(format!(
        "IF OBJECT_ID(N'{object}', N'U') IS NULL
         CREATE TABLE {q} (
             group_name     varchar(128) COLLATE Latin1_General_BIN2 NOT NULL PRIMARY KEY,
             participant_id varchar(128) COLLATE Latin1_General_BIN2 NULL,
             fencing_token  bigint NOT NULL,
             expires_at     datetime2(7) NULL,
             acquired_at    datetime2(7) NULL,
             metadata       nvarchar(max) NOT NULL
         )"
    ));
    Statements {
        dialect: Dialect::SqlServer,
        create,
        // HOLDLOCK makes the MERGE serializable on the key: two sessions racing for a missing
        // row cannot both insert, and for an existing row the second waits for the first's
        // commit and evaluates WHEN MATCHED against the committed row. OUTPUT yields a row
        // only when this call took the lease; the SELECT after it reports the holder.
        acquire: Stmt {
            slot: 0,
            sql: format!(
                "SET NOCOUNT ON;
                 MERGE INTO {q} WITH (HOLDLOCK) AS t
                 USING (SELECT CAST(? AS varchar(128)) AS group_name,
                               CAST(? AS varchar(128)) AS participant_id,
                               CAST(? AS int) AS ttl_ms,
                               CAST(? AS nvarchar(max)) AS metadata) AS s
                    ON t.group_name = s.group_name
                 WHEN MATCHED AND (t.participant_id IS NULL OR t.expires_at <= {now}) THEN
                     UPDATE SET participant_id = s.participant_id,
                                fencing_token  = t.fencing_token + 1,
                                expires_at     = DATEADD(millisecond, s.ttl_ms, {now}),
                                acquired_at    = {now},
                                metadata       = s.metadata
                 WHEN NOT MATCHED THEN
                     INSERT (group_name, participant_id, fencing_token, expires_at, acquired_at, metadata)
                     VALUES (s.group_name, s.participant_id, 1,
                             DATEADD(millisecond, s.ttl_ms, {now}), {now}, s.metadata)
                 OUTPUT 1, {};
                 {holder}",
                cols("inserted.")
            ),
            args: &[Group, Participant, Ttl, Metadata, Group],
        },
        acquire_returning: None,
        acquire_read: None,
        renew: Stmt {
            slot: 1,
            sql: format!(
                "SET NOCOUNT ON;
                 UPDATE {q} WITH (HOLDLOCK)
                    SET expires_at = DATEADD(millisecond, CAST(? AS int), {now})
                 OUTPUT 1, {}
                  WHERE group_name = ? AND participant_id = ? AND fencing_token = ?
                    AND expires_at > {now};
                 {holder}",
                cols("inserted.")
            ),
            args: &[Ttl, Group, Participant, Token, Group],
        },
        release: Stmt {
            slot: 2,
            sql: format!(
                "UPDATE {q} WITH (HOLDLOCK) SET participant_id = NULL, expires_at = NULL
                  WHERE group_name = ? AND participant_id = ? AND fencing_token = ?"
            ),
            args: &[Group, Participant, Token],
        },
        leader: Stmt {
            slot: 3,
            sql: holder.trim_end_matches(';').to_owned(),
            args: &[Group],
        },
        ttl_in_ms: true,
    }
}
