//! The double's request handling: faults first (a status for everything, for blocking queries
//! only, a leaderless cluster holding requests for `rpc_hold_timeout`), then ACLs, then the
//! routes. KV reads follow `agent/kvs_endpoint.go` and `agent/consul/kvs_endpoint.go`: a present
//! key's index is its `ModifyIndex`, an absent key's the table's (sent with the 404), a list's
//! the highest under the prefix (tombstones included); blocking follows
//! `agent/blockingquery/blockingquery.go` (return once the index passes `?index`, or at `wait`
//! plus up to wait/16; an absent key keeps waiting through writes elsewhere). `X-Consul-Index`
//! goes on reads only, never on writes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::Shared;
use super::http::{Reply, Request};
use super::sessions::{self, NODE, parse_go_duration};
use super::store::{Entry, State};

const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);
/// `KVMaxValueSize`'s default.
const MAX_VALUE: usize = 512 * 1024;

pub(crate) fn handle(shared: &Shared, req: &Request) -> Reply {
    let blocking = req.method == "GET"
        && req
            .param("index")
            .and_then(|i| i.parse::<u64>().ok())
            .is_some_and(|i| i > 0);
    shared.count(match req.path.as_str() {
        p if p.starts_with("/v1/kv/") && blocking => "kv-blocking",
        p if p.starts_with("/v1/kv/") => "kv",
        p if p.starts_with("/v1/session/") => "session",
        "/v1/txn" => "txn",
        "/v1/status/leader" => "status",
        _ => "other",
    });
    let faults = shared.faults();
    if let Some((status, body)) = faults.status {
        return Reply::new(status, body);
    }
    if blocking && let Some((status, body)) = faults.blocking_status {
        return Reply::new(status, body);
    }
    if faults.no_leader {
        if req.path == "/v1/status/leader" {
            return Reply::json(200, &json!(""));
        }
        let stale = req.method == "GET" && req.param("stale").is_some();
        if !stale && !leader_within(shared, shared.options().rpc_hold) {
            return Reply::new(500, "No cluster leader");
        }
    }
    let anonymous = match access(shared, req) {
        Ok(anonymous) => anonymous,
        Err(reply) => return reply,
    };
    let path = req.path.as_str();
    let method = req.method.as_str();
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return match method {
            "GET" => kv_get(shared, req, anonymous, key),
            "PUT" => kv_put(shared, req, anonymous, key),
            "DELETE" => kv_delete(shared, req, anonymous, key),
            _ => Reply::new(405, "method not allowed"),
        };
    }
    let session_write = || denied("session:write", NODE);
    match (method, path) {
        ("GET", "/v1/status/leader") => Reply::json(200, &json!("127.0.0.1:8300")),
        ("PUT", "/v1/session/create") if anonymous => session_write(),
        ("PUT", "/v1/session/create") => sessions::create(shared, req),
        ("PUT", p) if p.starts_with("/v1/session/renew/") => match &p[18..] {
            "" => Reply::new(400, "Missing session"),
            _ if anonymous => session_write(),
            id => sessions::renew(shared, id),
        },
        ("PUT", p) if p.starts_with("/v1/session/destroy/") => match &p[20..] {
            "" => Reply::new(400, "Missing session"),
            _ if anonymous => session_write(),
            id => sessions::destroy(shared, id),
        },
        // Sessions the token cannot read are filtered out.
        ("GET", p) if p.starts_with("/v1/session/") && anonymous => Reply::json(200, &json!([])),
        ("GET", p) if p.starts_with("/v1/session/info/") => sessions::read(shared, Some(&p[17..])),
        ("GET", "/v1/session/list") => sessions::read(shared, None),
        ("PUT", "/v1/txn") => super::txn::handle(shared, req, anonymous),
        (_, "/v1/txn" | "/v1/status/leader" | "/v1/session/create") => {
            Reply::new(405, "method not allowed")
        }
        _ => Reply::new(404, "Invalid URL path: not served by the Consul double"),
    }
}

/// Holds a request while the cluster has no leader, up to `hold`: whether one came back.
fn leader_within(shared: &Shared, hold: Duration) -> bool {
    let end = Instant::now() + hold;
    while shared.faults().no_leader {
        if Instant::now() >= end || shared.stopped.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// `Ok(true)` for the anonymous token, `Ok(false)` for full access, `Err` for a token the
/// cluster does not know. The token comes from `X-Consul-Token`, `Authorization: Bearer` or
/// `?token=` (all three are accepted by Consul).
fn access(shared: &Shared, req: &Request) -> Result<bool, Reply> {
    let Some(acl) = shared.options().acl_token else {
        return Ok(false);
    };
    if req.path == "/v1/status/leader" {
        return Ok(false);
    }
    let token = req
        .header("x-consul-token")
        .or_else(|| {
            req.header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .or_else(|| req.param("token"))
        .filter(|t| !t.is_empty());
    match token {
        None => Ok(true),
        Some(t) if t == acl => Ok(false),
        Some(_) => Err(Reply::new(403, "ACL not found")),
    }
}

fn denied(permission: &str, on: &str) -> Reply {
    Reply::new(
        403,
        format!("Permission denied: anonymous token lacks permission '{permission}' on {on:?}"),
    )
}

/// A KV entry as the API shows it (`Session` omitted when empty; `Value` base64 or null).
pub(crate) fn entry_json(e: &Entry, with_value: bool) -> Value {
    let value = match (&e.value, with_value) {
        (Some(v), true) => json!(BASE64.encode(v)),
        _ => Value::Null,
    };
    let mut m = json!({
        "LockIndex": e.lock_index,
        "Key": e.key,
        "Flags": e.flags,
        "Value": value,
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    });
    if !e.session.is_empty() {
        m["Session"] = json!(e.session);
    }
    m
}

fn read_reply(status: u16, body: Value, index: u64) -> Reply {
    let reply = if status == 200 {
        Reply::json(200, &body)
    } else {
        Reply::new(status, "")
    };
    reply
        .with("X-Consul-Index", index.to_string())
        .with("X-Consul-Knownleader", "true")
        .with("X-Consul-Lastcontact", "0")
}

/// `?index=` and `?wait=` (a Go duration with its unit; capped at 10 minutes).
fn blocking_params(req: &Request) -> Result<(u64, Duration), Reply> {
    let min = match req.param("index") {
        None => 0,
        Some(v) => v.parse().map_err(|_| Reply::new(400, "Invalid index"))?,
    };
    let wait = match req.param("wait") {
        None => DEFAULT_WAIT,
        Some(v) => parse_go_duration(v).map_err(|_| Reply::new(400, "Invalid wait time"))?,
    };
    let wait = if wait.is_zero() {
        DEFAULT_WAIT
    } else {
        wait.min(MAX_WAIT)
    };
    Ok((min, wait))
}

/// Runs `query` (index, not-found, result) and, for a blocking request, again at each change
/// until its index passes `min` or the wait ends.
fn block<T>(
    shared: &Shared,
    (min, wait): (u64, Duration),
    mut query: impl FnMut(&State) -> (u64, bool, T),
) -> (u64, T) {
    let mut state = shared.state();
    let (mut index, mut absent, mut out) = query(&state);
    if min == 0 {
        return (index, out);
    }
    let start = Instant::now();
    let end = start + wait + wait.mul_f64(shared.random() / 16.0);
    let restores = shared.restores.load(Ordering::SeqCst);
    let (mut min, mut absent_before) = (min, false);
    loop {
        if absent {
            if absent_before {
                min = index; // nothing found, and nothing to report: keep waiting
            }
            absent_before = true;
        }
        if index > min {
            return (index, out);
        }
        let now = Instant::now();
        let early = shared.faults().early_returns && now >= start + Duration::from_millis(20);
        // A restored snapshot abandons the old store: every blocking query returns.
        let abandoned = shared.restores.load(Ordering::SeqCst) != restores;
        if now >= end || early || abandoned || shared.stopped.load(Ordering::SeqCst) {
            return (index, out);
        }
        let step = (end - now).min(Duration::from_millis(20));
        state = shared
            .changed
            .wait_timeout(state, step)
            .map(|(s, _)| s)
            .unwrap_or_else(|e| e.into_inner().0);
        (index, absent, out) = query(&state);
    }
}

fn kv_get(shared: &Shared, req: &Request, anonymous: bool, key: &str) -> Reply {
    let params = match blocking_params(req) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let shown = |index: u64| if shared.faults().zero_index { 0 } else { index };
    if req.param("recurse").is_some() {
        let (index, entries) = block(shared, params, |st| {
            let (index, entries) = st.list(key);
            (index, false, entries)
        });
        // Entries the token cannot read are filtered out, not refused.
        let entries: Vec<Value> = if anonymous {
            Vec::new()
        } else {
            entries.iter().map(|e| entry_json(e, true)).collect()
        };
        let status = if entries.is_empty() { 404 } else { 200 };
        return read_reply(status, Value::Array(entries), shown(index));
    }
    if anonymous {
        return denied("key:read", key);
    }
    let (index, entry) = block(shared, params, |st| match st.kvs.get(key) {
        Some(e) => (e.modify_index, false, Some(e.clone())),
        None => (st.get_index(key), true, None),
    });
    match entry {
        None => read_reply(404, Value::Null, shown(index)),
        Some(e) if req.param("raw").is_some() => {
            let mut reply = Reply::new(200, e.value.unwrap_or_default());
            reply
                .headers
                .push(("X-Consul-Index", shown(index).to_string()));
            reply
        }
        Some(e) => read_reply(200, json!([entry_json(&e, true)]), shown(index)),
    }
}

fn kv_put(shared: &Shared, req: &Request, anonymous: bool, key: &str) -> Reply {
    if anonymous {
        return denied("key:write", key);
    }
    if key.is_empty() {
        return Reply::new(400, "Missing key name");
    }
    if req.body.len() > MAX_VALUE {
        return Reply::new(413, format!("Value exceeds {MAX_VALUE} byte limit"));
    }
    let flags = match req.param("flags").map(str::parse::<u64>).transpose() {
        Ok(f) => f.unwrap_or(0),
        Err(_) => return Reply::new(400, "Invalid flags"),
    };
    // An empty body is a null value (the buffer's bytes are nil).
    let value = (!req.body.is_empty()).then(|| req.body.clone());
    let now = Instant::now();
    let mut st = shared.state();
    let result: Result<bool, String> = if let Some(session) = req.param("acquire") {
        if st.lock_delayed(key, now) {
            Ok(false) // refused before Raft (kvsPreApply): indistinguishable from "held"
        } else {
            let idx = st.raft_apply();
            st.kv_lock(idx, key, value, flags, session)
                .map(|e| e.is_some())
        }
    } else if let Some(session) = req.param("release") {
        let idx = st.raft_apply();
        st.kv_unlock(idx, key, value, flags, session)
            .map(|e| e.is_some())
    } else if let Some(cas) = req.param("cas") {
        let Ok(cas) = cas.parse() else {
            return Reply::new(400, "Invalid cas index");
        };
        let idx = st.raft_apply();
        Ok(st.kv_cas(idx, key, value, flags, cas).is_some())
    } else {
        let idx = st.raft_apply();
        st.kv_set(idx, key, value, flags);
        Ok(true)
    };
    drop(st);
    shared.changed.notify_all();
    match result {
        Ok(done) => Reply::json(200, &json!(done)),
        Err(text) => Reply::new(500, text),
    }
}

fn kv_delete(shared: &Shared, req: &Request, anonymous: bool, key: &str) -> Reply {
    if anonymous {
        return denied("key:write", key);
    }
    let mut st = shared.state();
    let idx = st.raft_apply();
    let done = if req.param("recurse").is_some() {
        st.kv_delete_tree(idx, key);
        true
    } else if let Some(cas) = req.param("cas") {
        let Ok(cas) = cas.parse() else {
            return Reply::new(400, "Invalid cas index");
        };
        st.kv_delete_cas(idx, key, cas)
    } else {
        st.kv_delete(idx, key);
        true
    };
    drop(st);
    shared.changed.notify_all();
    Reply::json(200, &json!(done))
}
