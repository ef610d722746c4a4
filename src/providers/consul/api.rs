//! The slice of Consul's HTTP API this provider uses, as documented in Consul's API docs and
//! read in its source (`agent/kvs_endpoint.go`, `agent/session_endpoint.go`,
//! `agent/txn_endpoint.go`, `agent/consul/state/kvs.go`, `agent/consul/state/txn.go`): KV reads,
//! session create / renew / destroy, and `/v1/txn` for the lock and the checked unlock. Every
//! request carries the ACL token as `X-Consul-Token` (never in a URL) and `?dc=` when set;
//! session ids travel in paths only behind [`Call::redact_path`], so no error or log shows them.
//! Also here: the stored record (the leader record without its token, which is the key's
//! `ModifyIndex`) and the error codes read from Consul's plain-text error bodies.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lease::LeaderInfo;
use crate::providers::support::http::{Call, HttpClient, Method, Response};

pub(crate) const BACKEND: &str = "consul";

/// A KV entry as `GET /v1/kv/<key>` and transaction results return it (`structs.DirEntry`:
/// `Session` is omitted when empty, `Value` is base64 and `null` in write results).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KvEntry {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: Option<String>,
    #[serde(default)]
    pub(crate) session: Option<String>,
    pub(crate) modify_index: u64,
}

impl KvEntry {
    /// The holding session, if the key is locked.
    pub(crate) fn holder(&self) -> Option<&str> {
        self.session.as_deref().filter(|s| !s.is_empty())
    }
}

/// The body of `PUT /v1/session/create` (`structs.Session`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NewSession<'a> {
    pub(crate) name: &'a str,
    /// A Go duration: whole seconds, rounded up from the lease TTL.
    #[serde(rename = "TTL")]
    pub(crate) ttl: String,
    /// A Go duration string ("2500ms"): a bare number below 1000 would be read as seconds.
    pub(crate) lock_delay: String,
    pub(crate) behavior: &'static str,
    /// Both empty: no health check at all, not even the node's `serfHealth` (Consul adds it
    /// unless `Checks` is an empty list; `NodeChecks` is the 1.7+ spelling).
    pub(crate) node_checks: [&'static str; 0],
    pub(crate) checks: [&'static str; 0],
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Created {
    #[serde(rename = "ID")]
    id: String,
}

/// One KV operation of a transaction (`api.KVTxnOp`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnKv<'a> {
    pub(crate) verb: &'static str,
    pub(crate) key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) flags: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session: Option<&'a str>,
}

#[derive(Serialize)]
struct TxnOp<'a> {
    #[serde(rename = "KV")]
    kv: TxnKv<'a>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnReply {
    #[serde(default)]
    results: Option<Vec<TxnResult>>,
    #[serde(default)]
    errors: Option<Vec<TxnError>>,
}

#[derive(Deserialize)]
struct TxnResult {
    #[serde(rename = "KV", default)]
    kv: Option<KvEntry>,
}

/// A failed operation: its position and Consul's text, which may quote the key and session id
/// (so it is classified, never copied into an error).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TxnError {
    pub(crate) op_index: usize,
    pub(crate) what: String,
}

/// What a transaction came to: its KV results (a deleted key or a check gives none, so
/// positions need not match the operations), or the failed operations (409).
pub(crate) enum Txn {
    Done(Vec<KvEntry>),
    Failed(Vec<TxnError>),
}

/// A client for one agent: the HTTP transport plus the token and datacenter.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) http: HttpClient,
    token: Option<String>,
    dc: Option<String>,
}

impl Api {
    pub(crate) fn new(http: HttpClient, token: Option<String>, dc: Option<String>) -> Api {
        Api { http, token, dc }
    }

    /// `base` with `query` and the datacenter joined as its query string.
    pub(crate) fn path(&self, base: &str, query: &[&str]) -> String {
        let dc = self.dc.as_ref().map(|dc| format!("dc={dc}"));
        let parts: Vec<&str> = query.iter().copied().chain(dc.as_deref()).collect();
        if parts.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", parts.join("&"))
        }
    }

    /// A call with the token header.
    pub(crate) fn call<'a>(
        &'a self,
        method: Method,
        path: &'a str,
        operation: &'static str,
    ) -> Call<'a> {
        let call = Call::new(method, path, operation);
        match &self.token {
            Some(token) => call.header("X-Consul-Token", token),
            None => call,
        }
    }

    /// `GET /v1/kv/<key>`: the entry, `None` if absent (404).
    pub(crate) fn get(
        &self,
        key: &str,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<Option<KvEntry>> {
        let path = self.path(&format!("/v1/kv/{key}"), &[]);
        let call = self.call(Method::Get, &path, operation);
        let resp = self.http.request(&call, deadline)?;
        match resp.status {
            200 => Ok(resp
                .json::<Vec<KvEntry>>()?
                .into_iter()
                .find(|e| e.key == key)),
            404 => Ok(None),
            _ => Err(self.http.unexpected(&call, &resp)),
        }
    }

    /// `PUT /v1/session/create`: the new session's id.
    pub(crate) fn create_session(
        &self,
        body: &NewSession<'_>,
        deadline: Instant,
    ) -> Result<String> {
        let path = self.path("/v1/session/create", &[]);
        let call = self.call(Method::Put, &path, "create session");
        let resp = self.http.send_json(call.clone(), body, deadline)?;
        match resp.status {
            200 => Ok(resp.json::<Created>()?.id),
            _ => Err(self.http.unexpected(&call, &resp)),
        }
    }

    /// `PUT /v1/session/renew/<id>`: `false` if the session is gone (404, plain-text body).
    pub(crate) fn renew_session(
        &self,
        id: &str,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<bool> {
        let path = self.path(&format!("/v1/session/renew/{id}"), &[]);
        let shown = self.path("/v1/session/renew/(session)", &[]);
        let call = self.call(Method::Put, &path, operation).redact_path(&shown);
        let resp = self.http.request(&call, deadline)?;
        match resp.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.http.unexpected(&call, &resp)),
        }
    }

    /// `PUT /v1/session/destroy/<id>`. The keys the session still holds are released (or
    /// deleted) by Consul, with the session's lock-delay.
    pub(crate) fn destroy_session(&self, id: &str, deadline: Instant) -> Result<()> {
        let path = self.path(&format!("/v1/session/destroy/{id}"), &[]);
        let shown = self.path("/v1/session/destroy/(session)", &[]);
        let call = self
            .call(Method::Put, &path, "destroy session")
            .redact_path(&shown);
        let resp = self.http.request(&call, deadline)?;
        match resp.status {
            200 => Ok(()),
            _ => Err(self.http.unexpected(&call, &resp)),
        }
    }

    /// `PUT /v1/txn` with KV operations: all applied, or none (409 with the failures).
    pub(crate) fn txn(
        &self,
        ops: Vec<TxnKv<'_>>,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<Txn> {
        let path = self.path("/v1/txn", &[]);
        let call = self.call(Method::Put, &path, operation);
        let body: Vec<TxnOp<'_>> = ops.into_iter().map(|kv| TxnOp { kv }).collect();
        let resp = self.http.send_json(call.clone(), &body, deadline)?;
        let reply = match resp.status {
            200 | 409 => resp.json::<TxnReply>()?,
            _ => return Err(self.http.unexpected(&call, &resp)),
        };
        Ok(match (resp.status, reply.errors) {
            (200, _) => Txn::Done(
                reply
                    .results
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|r| r.kv)
                    .collect(),
            ),
            (_, errors) => Txn::Failed(errors.unwrap_or_default()),
        })
    }

    /// `GET /v1/status/leader`: whether the agent knows a cluster leader (it answers `""`
    /// while there is none).
    pub(crate) fn has_leader(&self, deadline: Instant) -> Result<bool> {
        let path = self.path("/v1/status/leader", &[]);
        let call = self.call(Method::Get, &path, "status");
        let resp = self.http.request(&call, deadline)?;
        match resp.status {
            200 => Ok(!resp.json::<String>()?.is_empty()),
            _ => Err(self.http.unexpected(&call, &resp)),
        }
    }
}

/// An error for a transaction that failed in a way the caller did not expect; Consul's text is
/// classified, never copied (it quotes keys and session ids).
pub(crate) fn txn_error(operation: &'static str, errors: &[TxnError]) -> Error {
    let denied = errors.iter().any(|e| denied(&e.what));
    let what = if denied {
        "permission denied (the ACL token needs key:write on the key prefix)"
    } else {
        "the transaction failed"
    };
    Error::Backend {
        backend: BACKEND,
        operation,
        transient: false,
        source: format!("HTTP 409 from PUT /v1/txn: {what}").into(),
    }
}

fn denied(text: &str) -> bool {
    text.contains("Permission denied") || text.contains("ACL not found")
}

/// A short code for a failed response's plain-text body, for error text (the body itself may
/// quote a key, a session id or a token name, so only known phrases are turned into codes).
pub(crate) fn error_code(resp: &Response) -> Option<String> {
    let body = String::from_utf8_lossy(&resp.body[..resp.body.len().min(1024)]);
    let code = if body.contains("ACL not found") {
        "acl-not-found"
    } else if body.contains("Permission denied") {
        "permission-denied"
    } else if body.contains("No cluster leader") {
        "no-cluster-leader"
    } else if body.contains("invalid session") || body.contains("Unknown session") {
        "invalid-session"
    } else if body.contains("Session TTL") {
        "invalid-session-ttl"
    } else if resp.status == 429 {
        "rate-limited"
    } else {
        return None;
    };
    Some(code.to_owned())
}

/// The stored value: the leader record without its fencing token, which a write cannot know
/// (it is the key's `ModifyIndex` after that write); readers add it from the entry.
pub(crate) fn record_value(info: &LeaderInfo) -> String {
    let json = info.to_json();
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.remove("token");
            serde_json::Value::Object(map).to_string()
        }
        _ => json,
    }
}

/// The value, base64-encoded as the KV and transaction APIs carry it.
pub(crate) fn encode(value: &str) -> String {
    BASE64.encode(value.as_bytes())
}

/// The leader record of an entry: its value, with the entry's `ModifyIndex` as the token.
pub(crate) fn record(group: &str, entry: &KvEntry) -> Result<LeaderInfo> {
    let corrupt = |detail: &str| Error::Corrupt {
        backend: BACKEND,
        group: group.to_owned(),
        detail: detail.to_owned(),
    };
    let raw = entry
        .value
        .as_deref()
        .ok_or_else(|| corrupt("the key has no value"))?;
    let bytes = BASE64
        .decode(raw)
        .map_err(|_| corrupt("the value is not base64"))?;
    let mut value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| corrupt("the value is not a JSON record"))?;
    let Some(map) = value.as_object_mut() else {
        return Err(corrupt("the value is not a JSON object"));
    };
    map.insert("token".into(), entry.modify_index.into());
    LeaderInfo::from_json(BACKEND, group, &value.to_string())
}

/// The session TTL for a lease TTL: whole seconds, at least `min`, never less than the lease.
pub(crate) fn session_ttl(lease_ttl: Duration, min: Duration) -> Duration {
    let secs = lease_ttl.as_secs() + u64::from(lease_ttl.subsec_nanos() > 0);
    let min_secs = min.as_secs() + u64::from(min.subsec_nanos() > 0);
    Duration::from_secs(secs.max(min_secs))
}

/// A duration as a Go duration string Consul parses exactly (`"2500ms"`).
pub(crate) fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn records_leave_out_the_token_and_read_it_from_the_index() {
        let mut md = BTreeMap::new();
        md.insert("addr".to_owned(), "10.0.0.1:80".to_owned());
        let info = LeaderInfo::new("g", "p", 0, md);
        let value = record_value(&info);
        assert!(!value.contains("token"), "{value}");
        assert_eq!(value, record_value(&info), "deterministic");
        let entry = KvEntry {
            key: "x/g".into(),
            value: Some(encode(&value)),
            session: Some("s".into()),
            modify_index: 42,
        };
        let back = record("g", &entry).unwrap();
        assert_eq!(back.fencing_token, 42);
        assert_eq!(back.participant_id, "p");
        assert_eq!(back.metadata, info.metadata);
        let bad = KvEntry {
            value: Some(encode("operator was here")),
            ..entry
        };
        assert!(matches!(record("g", &bad), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn session_ttls_round_up_and_respect_the_minimum() {
        let min = Duration::from_secs(10);
        assert_eq!(session_ttl(Duration::from_secs(2), min), min);
        assert_eq!(
            session_ttl(Duration::from_millis(15_001), min),
            Duration::from_secs(16)
        );
        assert_eq!(go_duration(Duration::from_millis(2500)), "2500ms");
        assert_eq!(go_duration(Duration::ZERO), "0ms");
    }

    #[test]
    fn new_sessions_have_no_checks() {
        let body = NewSession {
            name: "n",
            ttl: "10s".into(),
            lock_delay: "0ms".into(),
            behavior: "release",
            node_checks: [],
            checks: [],
        };
        let json = serde_json::to_string(&body).unwrap();
        assert!(json.contains("\"NodeChecks\":[]") && json.contains("\"Checks\":[]"));
        assert!(json.contains("\"TTL\":\"10s\"") && json.contains("\"LockDelay\":\"0ms\""));
    }
}
