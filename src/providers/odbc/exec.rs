//! Running the ODBC provider's statements on one connection (on a call thread): binding the
//! values each statement's placeholders name, walking the result sets of a batch to the first
//! row, and turning the dialect's way of saying "this call won" (a flag column, MySQL's nonce,
//! an affected-row count) into one [`Answer`].

use odbc_api::parameter::{InputParameter, VarCharSlice};
use odbc_api::{Cursor, Nullable};

use super::conn::Conn;
use super::connstr::ConnString;
use super::errors::Diag;
use super::options::Dialect;
use super::sql::{Arg, Statements, Stmt};

/// The values a call binds.
pub(super) struct Values {
    pub(super) group: String,
    pub(super) participant: String,
    pub(super) token: i64,
    pub(super) ttl: i64,
    pub(super) metadata: String,
    pub(super) nonce: i64,
}

/// One provider call.
pub(super) enum Op {
    Acquire(Values),
    Renew(Values),
    Release(Values),
    Leader(Values),
}

/// A returned row: `(flag or nonce, participant, token, since_ms, metadata)`.
#[derive(Debug, Default)]
pub(super) struct Row {
    pub(super) first: Option<i64>,
    pub(super) participant: Option<String>,
    pub(super) token: Option<i64>,
    pub(super) since_ms: Option<i64>,
    pub(super) metadata: Option<String>,
}

/// What a call found: whether it took (or renewed) the lease, and the row it saw — this
/// call's lease when it won, otherwise the live holder's, if any.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) won: bool,
    pub(super) row: Option<Row>,
}

/// What one statement returned: the first row of its first result set that has rows, or, for
/// a statement without a result set, the affected-row count.
struct Outcome {
    row: Option<Row>,
    count: Option<usize>,
}

/// Runs `op` on `conn` with an ODBC query timeout of `timeout` seconds, if any.
pub(super) fn perform(
    sql: &Statements,
    cs: &ConnString,
    conn: &mut Conn,
    op: &Op,
    timeout: Option<u32>,
    channel: &str,
) -> Result<Answer, Diag> {
    let run =
        |conn: &mut Conn, stmt: &Stmt, v: &Values| execute(cs, conn, stmt, v, timeout, channel);
    match op {
        Op::Acquire(v) if sql.dialect == Dialect::MySql => {
            let out = match (&sql.acquire_returning, &sql.acquire_read) {
                (Some(returning), _) if conn.returning => run(conn, returning, v)?,
                (_, Some(read)) => {
                    run(conn, &sql.acquire, v)?;
                    run(conn, read, v)?
                }
                (_, None) => run(conn, &sql.acquire, v)?,
            };
            // Ours if it carries this call's nonce and participant (the nonce alone could be
            // an earlier one by a chance of 2^-63; with the id too, the row would be this
            // participant's own lease anyway).
            let won = out.row.as_ref().is_some_and(|r| {
                r.first == Some(v.nonce) && r.participant.as_deref() == Some(&v.participant)
            });
            Ok(Answer { won, row: out.row })
        }
        Op::Renew(v) if sql.dialect == Dialect::MySql => {
            if run(conn, &sql.renew, v)?.count == Some(1) {
                return Ok(Answer {
                    won: true,
                    row: None,
                });
            }
            let holder = run(conn, &sql.leader, v)?;
            Ok(Answer {
                won: false,
                row: holder.row,
            })
        }
        Op::Acquire(v) => flagged(run(conn, &sql.acquire, v)?),
        Op::Renew(v) => flagged(run(conn, &sql.renew, v)?),
        Op::Release(v) => {
            run(conn, &sql.release, v)?;
            Ok(Answer {
                won: false,
                row: None,
            })
        }
        Op::Leader(v) => Ok(Answer {
            won: false,
            row: run(conn, &sql.leader, v)?.row,
        }),
    }
}

/// A row whose first column is 1 when this call won, 0 when it shows the holder.
fn flagged(out: Outcome) -> Result<Answer, Diag> {
    let won = out.row.as_ref().is_some_and(|r| r.first == Some(1));
    Ok(Answer { won, row: out.row })
}

/// Executes `stmt`, prepared on `conn`, with `v`'s values.
fn execute(
    cs: &ConnString,
    conn: &mut Conn,
    stmt: &Stmt,
    v: &Values,
    timeout: Option<u32>,
    channel: &str,
) -> Result<Outcome, Diag> {
    let diag = |e: odbc_api::Error| Diag::new(&e, cs);
    let params: Vec<Box<dyn InputParameter + '_>> = stmt
        .args
        .iter()
        .map(|arg| -> Box<dyn InputParameter + '_> {
            match arg {
                Arg::Group => Box::new(VarCharSlice::new(v.group.as_bytes())),
                Arg::Participant => Box::new(VarCharSlice::new(v.participant.as_bytes())),
                Arg::Metadata => Box::new(VarCharSlice::new(v.metadata.as_bytes())),
                Arg::Channel => Box::new(VarCharSlice::new(channel.as_bytes())),
                Arg::Token => Box::new(v.token),
                Arg::Ttl => Box::new(v.ttl),
                Arg::Nonce => Box::new(v.nonce),
            }
        })
        .collect();
    let prepared = conn
        .prepared
        .get_mut(stmt.slot)
        .and_then(Option::as_mut)
        .ok_or_else(|| Diag::plain("the statement is not prepared on this connection"))?;
    if let Some(secs) = timeout {
        // psqlODBC sends `SET statement_timeout` only when the value changes.
        prepared
            .set_query_timeout_sec(secs as usize)
            .map_err(diag)?;
    }
    let row = match prepared.execute(&params[..]).map_err(diag)? {
        Some(cursor) => Some(first_row(cursor).map_err(diag)?),
        None => None,
    };
    match row {
        Some(row) => Ok(Outcome { row, count: None }),
        None => Ok(Outcome {
            row: None,
            count: prepared.row_count().map_err(diag)?,
        }),
    }
}

/// The first row of the first result set (of a batch's) that has one.
fn first_row(cursor: impl Cursor) -> Result<Option<Row>, odbc_api::Error> {
    let mut current = Some(cursor);
    while let Some(mut cursor) = current {
        if cursor.num_result_cols()? >= 5
            && let Some(mut r) = cursor.next_row()?
        {
            let mut row = Row::default();
            let mut n = Nullable::<i64>::null();
            r.get_data(1, &mut n)?;
            row.first = n.into_opt();
            let mut buf = Vec::new();
            if r.get_text(2, &mut buf)? {
                row.participant = Some(String::from_utf8_lossy(&buf).into_owned());
            }
            let mut n = Nullable::<i64>::null();
            r.get_data(3, &mut n)?;
            row.token = n.into_opt();
            let mut n = Nullable::<i64>::null();
            r.get_data(4, &mut n)?;
            row.since_ms = n.into_opt();
            buf.clear();
            if r.get_text(5, &mut buf)? {
                row.metadata = Some(String::from_utf8_lossy(&buf).into_owned());
            }
            return Ok(Some(row));
        }
        current = cursor.more_results()?;
    }
    Ok(None)
}
