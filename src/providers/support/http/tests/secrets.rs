//! Error text never carries a secret: for every failure path, a secret planted in the base URL's
//! password and query, the request's query, a header value, the request body and the server's
//! response (body, headers, a malformed header line) is absent from `Error::report()` and from
//! the error's `Debug` form.

use std::io::Write;

use super::servers::{Raw, drain, read_request, respond};
use super::*;
use crate::providers::support::listener::Stop;

/// A client whose base URL carries the secret as password and query parameter.
fn secret_client(addr: &str) -> HttpClient {
    let url = format!("http://app:{SECRET}pw@{addr}/base?sig={SECRET}q");
    client(&url).with_error_code(|r| r.header("x-error-code").map(str::to_owned))
}

/// Sends a call loaded with secrets (query, header, body); returns the error.
fn fail(c: &HttpClient, deadline: Instant) -> Error {
    let path = format!("/v1/kv/k?token={SECRET}t");
    let header = format!("Bearer {SECRET}h");
    let body = format!("{{\"password\":\"{SECRET}b\"}}");
    let call = Call::new(Method::Put, &path, "acquire")
        .header("Authorization", &header)
        .header("X-Consul-Token", &header)
        .body(body.as_bytes());
    c.request(&call, deadline).unwrap_err()
}

fn assert_clean(e: &Error, path: &str) {
    let (report, debug) = (e.report(), format!("{e:?}"));
    assert!(!report.contains(SECRET), "{path}: {report}");
    assert!(!debug.contains(SECRET), "{path}: {debug}");
}

/// A server that echoes the whole request (secrets included) in its body and headers.
fn echoing(status: u16, code: &'static str) -> Raw {
    Raw::start(move |conn, _| {
        while let Some(req) = read_request(conn) {
            let headers = format!("x-error-code: {code}\r\nwww-authenticate: {SECRET}w\r\n");
            let body = req.replace(['\r', '\n'], " ");
            if respond(conn, status, &headers, &body).is_err() {
                return;
            }
        }
    })
}

#[test]
fn status_errors() {
    for status in [400, 401, 403, 429, 500, 503] {
        let server = echoing(status, "AuthenticationFailed");
        let e = fail(&secret_client(&server.addr.to_string()), within(10));
        assert_clean(&e, &format!("HTTP {status}"));
        let text = e.report();
        assert!(
            text.contains("(AuthenticationFailed)"),
            "the vetted code: {text}"
        );
        assert!(
            text.contains("PUT http://app@127.0.0.1:") && text.contains("/base/v1/kv/k"),
            "{text}"
        );
        assert_eq!(e.is_transient(), status >= 429, "{status}");
    }
    // A "code" that is really a message quoting the request is dropped.
    let server = echoing(403, "token hunter2t is not valid");
    let e = fail(&secret_client(&server.addr.to_string()), within(10));
    assert_clean(&e, "quoted code");
}

#[test]
fn unexpected_data_status() {
    let server = echoing(409, "Conflict");
    let c = secret_client(&server.addr.to_string());
    let path = format!("/k?token={SECRET}t");
    let call = get(&path);
    let resp = c.request(&call, within(10)).unwrap();
    assert!(
        String::from_utf8_lossy(&resp.body).contains(SECRET),
        "the body is the caller's"
    );
    let e = c.unexpected(&call, &resp);
    assert_clean(&e, "unexpected 409");
    assert!(!e.is_transient());
}

#[test]
fn transport_errors() {
    // Timeout.
    let server = Raw::start(|conn, _| drain(conn));
    let e = fail(&secret_client(&server.addr.to_string()), within(1));
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_clean(&e, "timeout");

    // Connection closed under a fresh request.
    let server = Raw::start(|conn, _| {
        let _ = read_request(conn);
    });
    let e = fail(&secret_client(&server.addr.to_string()), within(10));
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_clean(&e, "closed");

    // Refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = fail(&secret_client(&format!("127.0.0.1:{port}")), within(10));
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_clean(&e, "refused");

    // A malformed response whose bad header line holds the secret.
    let server = Raw::start(|conn, _| {
        if read_request(conn).is_some() {
            let _ = write!(
                conn.get_mut(),
                "HTTP/1.1 200 OK\r\n{SECRET} garbage\r\n\r\n"
            );
            drain(conn);
        }
    });
    let e = fail(&secret_client(&server.addr.to_string()), within(10));
    assert!(
        matches!(
            e,
            Error::Backend {
                transient: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert_clean(&e, "malformed");
}

#[test]
fn json_errors() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Record {
        index: u64,
    }
    let server = Raw::start(|conn, _| {
        while read_request(conn).is_some() {
            if respond(conn, 200, "", &format!("{{\"index\": \"{SECRET}\"}}")).is_err() {
                return;
            }
        }
    });
    let resp = secret_client(&server.addr.to_string())
        .request(&get("/k"), within(10))
        .unwrap();
    let e = resp.json::<Record>().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Backend {
                transient: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert_clean(&e, "json");
    assert!(e.report().contains("line 1"), "{}", e.report());
}

#[test]
fn stream_errors() {
    let stop = Stop::default();
    let header = format!("Bearer {SECRET}h");
    let path = format!("/v3/watch?token={SECRET}t");
    let call = Call::new(Method::Post, &path, "watch").header("Authorization", &header);
    // An error status with an echoing body.
    let server = echoing(403, "PermissionDenied");
    let w = secret_client(&server.addr.to_string()).watch(&stop);
    let e = w
        .stream(&call, Duration::from_secs(10), |_| Ok(()))
        .unwrap_err();
    assert_clean(&e, "stream status");
    // A silent stream.
    let server = Raw::start(|conn, _| {
        if read_request(conn).is_some() {
            let _ = conn
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
            drain(conn);
        }
    });
    let w = secret_client(&server.addr.to_string()).watch(&stop);
    let e = w
        .stream(&call, Duration::from_millis(300), |_| Ok(()))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_clean(&e, "stream idle");
}

#[test]
fn debug_forms() {
    let server = echoing(200, "Ok");
    let c = secret_client(&server.addr.to_string());
    let (path, header) = (format!("/k?token={SECRET}t"), format!("Bearer {SECRET}h"));
    let body = format!("{SECRET}b");
    let call = get(&path)
        .header("Authorization", &header)
        .body(body.as_bytes());
    let resp = c.request(&call, within(10)).unwrap();
    assert!(String::from_utf8_lossy(&resp.body).contains(SECRET));
    for text in [format!("{c:?}"), format!("{call:?}"), format!("{resp:?}")] {
        assert!(!text.contains(SECRET), "{text}");
    }
    assert!(format!("{call:?}").contains("Authorization"));
}

#[test]
fn redacted_paths() {
    // A path holding a secret (Consul's /v1/session/renew/<id>) shows only its redacted form,
    // in status errors, transport errors and Debug.
    let path = format!("/v1/session/renew/{SECRET}s");
    let call = Call::new(Method::Put, &path, "renew").redact_path("/v1/session/renew/(session)");
    let server = echoing(500, "Boom");
    let c = secret_client(&server.addr.to_string());
    let e = c.request(&call, within(10)).unwrap_err();
    assert_clean(&e, "redacted status");
    assert!(
        e.report().contains("/v1/session/renew/(session)"),
        "{}",
        e.report()
    );
    let server = Raw::start(|conn, _| drain(conn));
    let e = secret_client(&server.addr.to_string())
        .request(&call, within(1))
        .unwrap_err();
    assert_clean(&e, "redacted timeout");
    assert!(!format!("{call:?}").contains(SECRET));
    let stop = Stop::default();
    let server = echoing(403, "Denied");
    let w = secret_client(&server.addr.to_string()).watch(&stop);
    let e = w.long_poll(&call, Duration::from_secs(5)).unwrap_err();
    assert_clean(&e, "redacted long poll");
}
