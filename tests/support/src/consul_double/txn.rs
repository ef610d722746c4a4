//! The double's `PUT /v1/txn`, after `agent/txn_endpoint.go` (parsing: an array of operations,
//! base64 values, unknown fields → 400, too many operations → 413; a transaction without
//! writes is answered without Raft) and `agent/consul/txn_endpoint.go` + `state/txn.go`
//! (pre-checks — ACLs, lock-delay — then every operation runs in one Raft index; any failure
//! rolls all back and the 409 lists every failed operation with `Results: null`; write
//! results carry no value, deletes and `check-not-exists` none at all).

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use super::Shared;
use super::endpoints::entry_json;
use super::http::{Reply, Request};
use super::store::{Entry, State};

const MAX_OPS: usize = 128;
const WRITES: &[&str] = &[
    "set",
    "delete",
    "delete-cas",
    "delete-tree",
    "cas",
    "lock",
    "unlock",
];

/// One KV operation (`api.KVTxnOp`); other operation kinds are not modelled.
struct Op {
    kind: String,
    verb: String,
    key: String,
    value: Option<Vec<u8>>,
    flags: u64,
    index: u64,
    session: String,
}

fn bad(text: impl std::fmt::Display) -> Reply {
    Reply::new(400, format!("Failed to parse body: {text}"))
}

fn parse(body: &[u8]) -> Result<Vec<Op>, Reply> {
    let value: Value = serde_json::from_slice(body).map_err(bad)?;
    let ops = value
        .as_array()
        .ok_or_else(|| bad("expected an array of operations"))?;
    if ops.len() > MAX_OPS {
        return Err(Reply::new(
            413,
            format!(
                "Transaction contains too many operations ({} > {MAX_OPS})",
                ops.len()
            ),
        ));
    }
    ops.iter().map(parse_op).collect()
}

fn parse_op(op: &Value) -> Result<Op, Reply> {
    let obj = op
        .as_object()
        .ok_or_else(|| bad("an operation is not an object"))?;
    let mut parsed = None;
    for (k, v) in obj {
        match k.to_ascii_lowercase().as_str() {
            "kv" => {
                parsed = Some(parse_kv(
                    v.as_object().ok_or_else(|| bad("KV: not an object"))?,
                )?)
            }
            kind @ ("node" | "service" | "check" | "session") => {
                parsed = Some(Op {
                    kind: kind.to_owned(),
                    verb: String::new(),
                    key: String::new(),
                    value: None,
                    flags: 0,
                    index: 0,
                    session: String::new(),
                })
            }
            _ => return Err(bad(format!("unknown field {k:?}"))),
        }
    }
    parsed.ok_or_else(|| bad("an operation names no kind"))
}

fn parse_kv(kv: &Map<String, Value>) -> Result<Op, Reply> {
    let mut op = Op {
        kind: "kv".into(),
        verb: String::new(),
        key: String::new(),
        value: None,
        flags: 0,
        index: 0,
        session: String::new(),
    };
    for (k, v) in kv {
        let text = || {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("{k}: not a string")))
        };
        let number = || v.as_u64().ok_or_else(|| bad(format!("{k}: not a number")));
        match k.to_ascii_lowercase().as_str() {
            "verb" => op.verb = text()?,
            "key" => op.key = text()?,
            "session" => op.session = text()?,
            "flags" => op.flags = number()?,
            "index" => op.index = number()?,
            "value" if v.is_null() => op.value = None,
            "value" => {
                let decoded = BASE64
                    .decode(text()?)
                    .map_err(|e| bad(format!("failed to decode value: {e}")))?;
                op.value = Some(decoded);
            }
            "namespace" | "partition" => {}
            _ => return Err(bad(format!("unknown field {k:?}"))),
        }
    }
    Ok(op)
}

pub(crate) fn handle(shared: &Shared, req: &Request, anonymous: bool) -> Reply {
    let ops = match parse(&req.body) {
        Ok(ops) => ops,
        Err(reply) => return reply,
    };
    let writes = ops
        .iter()
        .any(|o| o.kind != "kv" || WRITES.contains(&o.verb.as_str()));
    let mut st = shared.state();
    if !writes {
        // Txn.Read: no Raft, no index header.
        let mut scratch = st.clone();
        drop(st);
        return answer(dispatch(&mut scratch, 0, &ops, anonymous));
    }
    // preCheck: ACLs and lock-delays, before Raft.
    let now = Instant::now();
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if op.kind != "kv" {
            continue;
        }
        let reads = matches!(op.verb.as_str(), "get" | "get-tree" | "get-or-empty");
        if anonymous && !reads {
            errors.push(failure(i, "Permission denied".into()));
        } else if op.verb == "lock" && st.lock_delayed(&op.key, now) {
            errors.push(failure(
                i,
                format!("failed to lock key {:?} due to lock delay", op.key),
            ));
        }
    }
    if !errors.is_empty() {
        return conflict(errors);
    }
    let idx = st.raft_apply();
    let mut scratch = st.clone();
    let outcome = dispatch(&mut scratch, idx, &ops, anonymous);
    if outcome.is_ok() {
        *st = scratch;
    }
    drop(st);
    shared.changed.notify_all();
    answer(outcome)
}

fn failure(i: usize, what: String) -> Value {
    json!({ "OpIndex": i, "What": what })
}

fn conflict(errors: Vec<Value>) -> Reply {
    Reply::json(409, &json!({ "Results": Value::Null, "Errors": errors }))
}

fn answer(outcome: Result<Vec<Value>, Vec<Value>>) -> Reply {
    match outcome {
        Ok(results) => Reply::json(200, &json!({ "Results": results, "Errors": Value::Null })),
        Err(errors) => conflict(errors),
    }
}

/// `txnDispatch`: every operation, collecting results and every error.
fn dispatch(
    st: &mut State,
    idx: u64,
    ops: &[Op],
    anonymous: bool,
) -> Result<Vec<Value>, Vec<Value>> {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match run(st, idx, op) {
            Ok(entries) => {
                let with_value = matches!(op.verb.as_str(), "get" | "get-or-empty" | "get-tree");
                // Reads the token may not make are filtered out of the results.
                if !(anonymous && with_value) {
                    results.extend(
                        entries
                            .iter()
                            .map(|e| json!({ "KV": entry_json(e, with_value) })),
                    );
                }
            }
            Err(what) => errors.push(failure(i, what)),
        }
    }
    if errors.is_empty() {
        Ok(results)
    } else {
        Err(errors)
    }
}

fn run(st: &mut State, idx: u64, op: &Op) -> Result<Vec<Entry>, String> {
    if op.kind != "kv" {
        return Err(format!(
            "the Consul double does not model {} operations",
            op.kind
        ));
    }
    let key = op.key.as_str();
    let value = op.value.clone();
    let one = |e: Entry| Ok(vec![e]);
    match op.verb.as_str() {
        "set" => one(st.kv_set(idx, key, value, op.flags)),
        "delete" => {
            st.kv_delete(idx, key);
            Ok(Vec::new())
        }
        "delete-cas" if st.kv_delete_cas(idx, key, op.index) => Ok(Vec::new()),
        "delete-cas" => Err(format!("failed to delete key {key:?}, index is stale")),
        "delete-tree" => {
            st.kv_delete_tree(idx, key);
            Ok(Vec::new())
        }
        "cas" => match st.kv_cas(idx, key, value, op.flags, op.index) {
            Some(e) => one(e),
            None => Err(format!("failed to set key {key:?}, index is stale")),
        },
        "lock" => match st.kv_lock(idx, key, value, op.flags, &op.session)? {
            Some(e) => one(e),
            None => Err(format!("failed to lock key {key:?}, lock is already held")),
        },
        "unlock" => match st.kv_unlock(idx, key, value, op.flags, &op.session)? {
            Some(e) => one(e),
            None => Err(format!(
                "failed to unlock key {key:?}, lock isn't held, or is held by another session"
            )),
        },
        "get" => match st.kvs.get(key) {
            Some(e) => one(e.clone()),
            None => Err(format!("key {key:?} doesn't exist")),
        },
        "get-or-empty" => one(st
            .kvs
            .get(key)
            .cloned()
            .unwrap_or_else(|| Entry::new(key, None, 0, ""))),
        "get-tree" => Ok(st.list(key).1),
        "check-session" => st.check_session(key, &op.session).map(|e| vec![e]),
        "check-index" => st.check_index(key, op.index).map(|e| vec![e]),
        "check-not-exists" if st.kvs.contains_key(key) => Err(format!("key {key:?} exists")),
        "check-not-exists" => Ok(Vec::new()),
        other => Err(format!("unknown KV verb {other:?}")),
    }
}
