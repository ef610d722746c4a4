//! The double's session endpoints and timers, after Consul's `agent/session_endpoint.go`
//! (HTTP: defaults, `fixupEmptySessionChecks`, 404 text of a renew), `agent/consul/
//! session_endpoint.go` (validation: behavior, TTL range 10 s – 24 h answered with 500) and
//! `agent/consul/session_ttl.go` (timers only on the leader, reset by create and renew, all
//! restarted in full by a new leader). Also Go's duration syntax, which Consul parses for TTL,
//! LockDelay and `wait`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Shared;
use super::http::{Reply, Request};
use super::store::{Behavior, SERF_CHECK, Session};

const TTL_MIN: Duration = Duration::from_secs(10);
const TTL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Node name of the double's agent.
pub const NODE: &str = "consul-double";

/// The TTL thread: invalidates sessions whose timer fired, while the cluster has a leader.
pub(crate) fn reap(shared: &Shared) {
    while !shared.stopped.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
        if shared.faults().no_leader {
            continue;
        }
        let mut state = shared.state();
        let now = Instant::now();
        let expired = state.expired(now);
        if expired.is_empty() {
            continue;
        }
        for id in expired {
            let idx = state.raft_apply();
            state.session_destroy(idx, &id, now);
        }
        drop(state);
        shared.changed.notify_all();
    }
}

pub(crate) fn json(s: &Session) -> Value {
    json!({
        "ID": s.id,
        "Name": s.name,
        "Node": s.node,
        "LockDelay": s.lock_delay.as_nanos() as u64,
        "Behavior": match s.behavior { Behavior::Release => "release", Behavior::Delete => "delete" },
        "TTL": s.ttl_text,
        "NodeChecks": s.node_checks,
        "ServiceChecks": Value::Null,
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}

fn error(status: u16, text: String) -> Reply {
    Reply::new(status, text)
}

/// `PUT /v1/session/create`.
pub(crate) fn create(shared: &Shared, req: &Request) -> Reply {
    let mut session = Session {
        id: shared.uuid(),
        name: String::new(),
        node: NODE.into(),
        lock_delay: Duration::from_secs(15),
        behavior: Behavior::Release,
        ttl: None,
        ttl_text: String::new(),
        node_checks: vec![SERF_CHECK.into()],
        checks: vec![SERF_CHECK.into()],
        create_index: 0,
        modify_index: 0,
        expires: None,
    };
    let mut behavior = String::new();
    if !req.body.is_empty() {
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return error(400, format!("Request decode failed: {e}")),
        };
        let Some(map) = body.as_object() else {
            return error(400, "Request decode failed: not an object".into());
        };
        // Go's decoder matches field names case-insensitively; unknown fields are refused.
        for (k, v) in map {
            let strings = |v: &Value| -> Option<Vec<String>> {
                match v {
                    Value::Null => Some(Vec::new()),
                    Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_owned)).collect(),
                    _ => None,
                }
            };
            let bad = || error(400, format!("Request decode failed: bad value for {k}"));
            match k.to_ascii_lowercase().as_str() {
                "name" => session.name = v.as_str().unwrap_or_default().to_owned(),
                "node" => session.node = v.as_str().unwrap_or(NODE).to_owned(),
                "behavior" => behavior = v.as_str().unwrap_or_default().to_owned(),
                "ttl" => session.ttl_text = v.as_str().unwrap_or_default().to_owned(),
                "nodechecks" => match strings(v) {
                    Some(c) => session.node_checks = c,
                    None => return bad(),
                },
                "checks" => match strings(v) {
                    Some(c) => session.checks = c,
                    None => return bad(),
                },
                "servicechecks" | "namespace" | "partition" => {}
                "lockdelay" => {
                    // A string is a Go duration, a number nanoseconds; below 1000 ns it is
                    // taken as seconds (`lockDelayMinThreshold`).
                    let d = match v {
                        Value::String(s) => match parse_go_duration(s) {
                            Ok(d) => d,
                            Err(e) => return error(400, format!("Request decode failed: {e}")),
                        },
                        Value::Number(n) => Duration::from_nanos(n.as_f64().unwrap_or(0.0) as u64),
                        _ => return bad(),
                    };
                    session.lock_delay = if d < Duration::from_nanos(1000) {
                        Duration::from_secs(d.as_nanos() as u64)
                    } else {
                        d
                    };
                }
                _ => return error(400, format!("Request decode failed: unknown field {k:?}")),
            }
        }
    }
    // fixupEmptySessionChecks: an empty `Checks` empties the default `NodeChecks` too; the
    // default `Checks` gives way to `NodeChecks`; an empty `NodeChecks` empties `Checks`.
    if session.checks.is_empty() {
        session.node_checks.clear();
    } else if session.checks == [SERF_CHECK] || session.node_checks.is_empty() {
        session.checks.clear();
    }
    session.behavior = match behavior.as_str() {
        "" | "release" => Behavior::Release,
        "delete" => Behavior::Delete,
        other => return error(500, format!("Invalid Behavior setting '{other}'")),
    };
    if !session.ttl_text.is_empty() {
        let ttl = match parse_go_duration(&session.ttl_text) {
            Ok(d) => d,
            Err(e) => {
                return error(
                    500,
                    format!("Session TTL '{}' invalid: {e}", session.ttl_text),
                );
            }
        };
        if ttl != Duration::ZERO && !(TTL_MIN..=TTL_MAX).contains(&ttl) {
            return error(
                500,
                format!(
                    "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                    ttl.as_nanos()
                ),
            );
        }
        session.ttl = (ttl != Duration::ZERO).then_some(ttl);
    }
    let id = session.id.clone();
    let expiry = shared.options().expiry;
    let unit = shared.random();
    let mut state = shared.state();
    let idx = state.raft_apply();
    state.session_create(idx, session);
    state.reset_timer(&id, Instant::now(), expiry, unit);
    drop(state);
    shared.changed.notify_all();
    Reply::json(200, &json!({ "ID": id }))
}

/// `PUT /v1/session/renew/<id>`: resets the timer; no Raft write, so no index moves.
pub(crate) fn renew(shared: &Shared, id: &str) -> Reply {
    let expiry = shared.options().expiry;
    let unit = shared.random();
    let mut state = shared.state();
    if !state.sessions.contains_key(id) {
        return Reply::new(404, format!("Session id '{id}' not found"));
    }
    state.reset_timer(id, Instant::now(), expiry, unit);
    let s = state.sessions.get(id).map(json).unwrap_or(Value::Null);
    Reply::json(200, &json!([s]))
}

/// `PUT /v1/session/destroy/<id>`. With ACLs on, an unknown session is an error (the server
/// looks it up to check `session:write` on its node).
pub(crate) fn destroy(shared: &Shared, id: &str) -> Reply {
    let acl = shared.options().acl_token.is_some();
    let mut state = shared.state();
    if acl && !state.sessions.contains_key(id) {
        return error(500, format!("Unknown session {id:?}"));
    }
    let idx = state.raft_apply();
    state.session_destroy(idx, id, Instant::now());
    drop(state);
    shared.changed.notify_all();
    Reply::json(200, &json!(true))
}

/// `GET /v1/session/info/<id>` and `/v1/session/list`.
pub(crate) fn read(shared: &Shared, id: Option<&str>) -> Reply {
    let state = shared.state();
    let list: Vec<Value> = state
        .sessions
        .values()
        .filter(|s| id.is_none_or(|id| s.id == id))
        .map(json)
        .collect();
    Reply::json(200, &Value::Array(list))
        .with("X-Consul-Index", state.sessions_table.max(1).to_string())
}

/// Go's `time.ParseDuration`: `"300ms"`, `"1.5h"`, `"1h2m3s"`, `"0"`; a number without a unit
/// is an error.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("time: invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err(err());
    }
    let mut rest = s.trim_start_matches('+');
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            u => return Err(format!("time: unknown unit {u:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        total += n * nanos;
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("2500ms"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert!(
            parse_go_duration("15")
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(parse_go_duration("5x").is_err());
    }
}
