//! The etcd v3 JSON gateway as this provider speaks it: the request bodies it sends and the
//! responses it reads (keys and values base64, int64 fields as JSON strings — read either way),
//! the gateway's error bodies turned into short vetted codes for error text (never the
//! server's message, which a future version might make quote a request), and the few error
//! answers the provider acts on (an expired token, a missing lease). Everything here was read
//! off a live etcd 3.4: proto3 leaves out zero values, so `succeeded: false`, `TTL: 0`, an
//! empty `kvs` and a `PUT` event type all arrive as absent fields.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};
use crate::providers::support::http::Response;

use super::BACKEND;

/// Base64 of `bytes`, as the gateway takes keys and values.
pub(super) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes a base64 key or value; `None` if it is not base64.
pub(super) fn unb64(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// An int64 field: a JSON string (as the gateway writes them) or a number.
fn int<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s.parse().map_err(|_| D::Error::custom("not an int64")),
    }
}

/// The response header; only the store revision is used.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Header {
    #[serde(default, deserialize_with = "int")]
    pub(super) revision: i64,
    /// The Raft term of the member that answered.
    #[serde(default, deserialize_with = "int")]
    pub(super) raft_term: i64,
}

/// A key-value pair (base64 key and value).
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct KeyValue {
    #[serde(default)]
    pub(super) key: String,
    #[serde(default, deserialize_with = "int")]
    pub(super) create_revision: i64,
    #[serde(default, deserialize_with = "int")]
    pub(super) mod_revision: i64,
    #[serde(default)]
    pub(super) value: String,
    #[serde(default, deserialize_with = "int")]
    pub(super) lease: i64,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RangeResponse {
    #[serde(default)]
    pub(super) header: Header,
    #[serde(default)]
    pub(super) kvs: Vec<KeyValue>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ResponseOp {
    #[serde(default)]
    pub(super) response_range: Option<RangeResponse>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct TxnResponse {
    #[serde(default)]
    pub(super) succeeded: bool,
    #[serde(default)]
    pub(super) responses: Vec<ResponseOp>,
}

impl TxnResponse {
    /// The first key-value pair any range in the taken branch returned.
    pub(super) fn first_kv(self) -> Option<KeyValue> {
        self.responses
            .into_iter()
            .filter_map(|r| r.response_range)
            .find_map(|r| r.kvs.into_iter().next())
    }
}

#[derive(Debug, Default, Deserialize)]
#[allow(non_snake_case)]
pub(super) struct LeaseGrantResponse {
    #[serde(default, deserialize_with = "int")]
    pub(super) ID: i64,
    #[serde(default, deserialize_with = "int")]
    pub(super) TTL: i64,
    #[serde(default)]
    pub(super) error: String,
}

#[derive(Debug, Default, Deserialize)]
#[allow(non_snake_case)]
pub(super) struct LeaseKeepAliveResponse {
    #[serde(default)]
    pub(super) header: Header,
    #[serde(default, deserialize_with = "int")]
    pub(super) TTL: i64,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct AuthenticateResponse {
    #[serde(default)]
    pub(super) token: String,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Event {
    #[serde(default)]
    pub(super) kv: KeyValue,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WatchResponse {
    #[serde(default)]
    pub(super) header: Header,
    #[serde(default)]
    pub(super) created: bool,
    #[serde(default)]
    pub(super) canceled: bool,
    #[serde(default, deserialize_with = "int")]
    pub(super) compact_revision: i64,
    #[serde(default)]
    pub(super) cancel_reason: String,
    #[serde(default)]
    pub(super) events: Vec<Event>,
}

/// One line of a gateway stream (keepalive, watch): a result or an error.
#[derive(Debug, Deserialize)]
pub(super) struct StreamLine<T> {
    pub(super) result: Option<T>,
    pub(super) error: Option<StreamError>,
}

/// A stream's error object (grpc-gateway's form).
#[derive(Debug, Default, Deserialize)]
pub(super) struct StreamError {
    #[serde(default)]
    grpc_code: i32,
    #[serde(default)]
    message: String,
}

impl StreamError {
    /// The crate's error for it; transient for the gRPC codes a retry may cure.
    pub(super) fn into_error(self, operation: &'static str) -> Error {
        Error::Backend {
            backend: BACKEND,
            operation,
            transient: transient_grpc(self.grpc_code),
            source: format!("stream error ({})", name(&self.message, self.grpc_code)).into(),
        }
    }
}

/// Parses one stream line, which must carry a result.
pub(super) fn stream_line<T: for<'de> Deserialize<'de>>(
    line: &[u8],
    operation: &'static str,
) -> Result<T> {
    let line: StreamLine<T> = serde_json::from_slice(line).map_err(|e| Error::Backend {
        backend: BACKEND,
        operation,
        transient: false,
        source: format!(
            "a stream line is not the expected JSON ({:?} error at column {})",
            e.classify(),
            e.column()
        )
        .into(),
    })?;
    match (line.result, line.error) {
        (_, Some(e)) => Err(e.into_error(operation)),
        (Some(result), None) => Ok(result),
        (None, None) => Err(Error::Backend {
            backend: BACKEND,
            operation,
            transient: false,
            source: "a stream line carries neither a result nor an error".into(),
        }),
    }
}

/// The gateway's error body for a failed unary call.
#[derive(Debug, Default, Deserialize)]
struct GatewayError {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: String,
}

fn gateway_error(response: &Response) -> Option<GatewayError> {
    serde_json::from_slice(&response.body).ok()
}

/// What a failed response means to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The token is missing, expired or stale: authenticate again and retry.
    Reauthenticate,
    /// `etcdserver: requested lease not found`.
    LeaseNotFound,
    /// `etcdserver: authentication is not enabled` (to an authenticate call).
    AuthNotEnabled,
    /// Anything else: the usual error.
    Other,
}

/// Sorts a failed (non-2xx) response by etcd's error message, which is one of etcd's fixed
/// `rpctypes` strings for these cases.
pub(super) fn failure(response: &Response) -> Failure {
    let Some(e) = gateway_error(response) else {
        return Failure::Other;
    };
    let message = if e.message.is_empty() {
        e.error.as_str()
    } else {
        e.message.as_str()
    };
    match message {
        // The three answers clientv3 refreshes its token on.
        "etcdserver: invalid auth token"
        | "etcdserver: user name is empty"
        | "etcdserver: revision of auth store is old" => Failure::Reauthenticate,
        "etcdserver: requested lease not found" => Failure::LeaseNotFound,
        "etcdserver: authentication is not enabled" => Failure::AuthNotEnabled,
        _ => Failure::Other,
    }
}

/// The server error code shown in error text (for [`HttpClient::with_error_code`]): a name
/// for etcd's known messages, else the gRPC status name; never the message itself.
///
/// [`HttpClient::with_error_code`]: crate::providers::support::http::HttpClient::with_error_code
pub(super) fn error_code(response: &Response) -> Option<String> {
    let e = gateway_error(response)?;
    let message = if e.message.is_empty() {
        &e.error
    } else {
        &e.message
    };
    Some(name(message, e.code).to_owned())
}

fn name(message: &str, code: i32) -> &'static str {
    match message {
        "etcdserver: authentication failed, invalid user ID or password" => "AuthFailed",
        "etcdserver: invalid auth token" => "InvalidAuthToken",
        "etcdserver: user name is empty" => "AuthRequired",
        "etcdserver: authentication is not enabled" => "AuthNotEnabled",
        "etcdserver: revision of auth store is old" => "AuthOldRevision",
        "etcdserver: permission denied" => "PermissionDenied",
        "etcdserver: requested lease not found" => "LeaseNotFound",
        "etcdserver: no leader" => "NoLeader",
        "etcdserver: leader changed" => "LeaderChanged",
        "etcdserver: request timed out" => "RequestTimedOut",
        "etcdserver: too many requests" => "TooManyRequests",
        _ => grpc_name(code),
    }
}

fn grpc_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("Unknown")
}

/// gRPC codes a retry may cure: deadline exceeded, resource exhausted, aborted, unavailable.
fn transient_grpc(code: i32) -> bool {
    matches!(code, 4 | 8 | 10 | 14)
}

/// A cancelled watch's reason, sorted: the token to refresh, or the crate's error.
pub(super) fn cancel_reason(reason: &str) -> Failure {
    // "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token", …
    let message = reason.rsplit("desc = ").next().unwrap_or_default();
    match message {
        "etcdserver: invalid auth token"
        | "etcdserver: user name is empty"
        | "etcdserver: revision of auth store is old" => Failure::Reauthenticate,
        _ => Failure::Other,
    }
}

/// The name for a cancelled watch's reason, for error text.
pub(super) fn cancel_name(reason: &str) -> &'static str {
    let message = reason.rsplit("desc = ").next().unwrap_or_default();
    let code = reason
        .split("code = ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| (0..17).find(|&i| grpc_name(i) == n))
        .unwrap_or(2);
    name(message, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response::for_test(BACKEND, status, body)
    }

    #[test]
    fn reads_the_gateway_forms_seen_on_etcd_3_4() {
        let txn: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"2"},"succeeded":true,"responses":[{"response_put":
            {"header":{"revision":"2"}}},{"response_range":{"header":{"revision":"2"},"kvs":
            [{"key":"ZXhwbG9yZS9nMQ==","create_revision":"2","mod_revision":"2","version":"1",
            "value":"eyJpZCI6ImEifQ==","lease":"7668682514124914964"}],"count":"1"}}]}"#,
        )
        .unwrap();
        assert!(txn.succeeded);
        let kv = txn.first_kv().unwrap();
        assert_eq!((kv.create_revision, kv.lease), (2, 7668682514124914964));
        assert_eq!(unb64(&kv.key).unwrap(), b"explore/g1");
        // A failed compare leaves `succeeded` out; numbers are accepted too.
        let txn: TxnResponse = serde_json::from_str(r#"{"header":{"revision":3}}"#).unwrap();
        assert!(!txn.succeeded && txn.first_kv().is_none());
        // A keepalive of a lease that is gone: no TTL.
        let ka: LeaseKeepAliveResponse =
            stream_line(br#"{"result":{"header":{},"ID":"999"}}"#, "renew").unwrap();
        assert_eq!(ka.TTL, 0);
        let e = stream_line::<LeaseKeepAliveResponse>(
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}"#,
            "renew",
        )
        .unwrap_err();
        assert!(e.is_transient() && e.report().contains("NoLeader"), "{e:?}");
    }

    #[test]
    fn failures_are_sorted_and_named_without_the_message() {
        let expired = response(
            401,
            r#"{"error":"etcdserver: invalid auth token","message":"etcdserver: invalid auth token","code":16}"#,
        );
        assert_eq!(failure(&expired), Failure::Reauthenticate);
        assert_eq!(error_code(&expired).as_deref(), Some("InvalidAuthToken"));
        let wrong = response(
            400,
            r#"{"error":"etcdserver: authentication failed, invalid user ID or password","code":3}"#,
        );
        assert_eq!(failure(&wrong), Failure::Other);
        assert_eq!(error_code(&wrong).as_deref(), Some("AuthFailed"));
        let other = response(400, r#"{"error":"bad input 'hunter2'","code":3}"#);
        assert_eq!(error_code(&other).as_deref(), Some("InvalidArgument"));
        assert_eq!(error_code(&response(404, "Not Found")), None);
        assert_eq!(
            failure(&response(
                404,
                r#"{"message":"etcdserver: requested lease not found","code":5}"#
            )),
            Failure::LeaseNotFound
        );
    }

    #[test]
    fn watch_cancel_reasons() {
        let r = "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token";
        assert_eq!(cancel_reason(r), Failure::Reauthenticate);
        let r = "rpc error: code = PermissionDenied desc = etcdserver: permission denied";
        assert_eq!(cancel_reason(r), Failure::Other);
        assert_eq!(cancel_name(r), "PermissionDenied");
        assert_eq!(
            cancel_name("rpc error: code = Internal desc = x"),
            "Internal"
        );
    }
}
