//! Tests of the HTTP transport against real servers on 127.0.0.1 (see `servers`): here the
//! request API, status mapping, `Retry-After`, the TLS modes and configuration errors;
//! deadlines and the dead-connection retry in `connections`, secret-free error text in
//! `secrets`, long polls and streams in `watch`. Time bounds are generous upper limits, never
//! tight ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod connections;
mod secrets;
mod servers;
mod watch;

use servers::{Certs, Raw, Tiny, read_request, respond};

use super::*;

/// Planted in URLs, headers and bodies; must never show in error text.
const SECRET: &str = "hunter2";

fn client_tls(url: &str, tls: &Tls) -> HttpClient {
    HttpClient::new(
        "test",
        url.parse().unwrap(),
        tls,
        Duration::from_secs(2),
        Duration::from_secs(10),
    )
    .unwrap()
}

/// A client whose connect and request timeouts are both `timeout`.
fn client_timeouts(url: &str, timeout: Duration) -> HttpClient {
    HttpClient::new("test", url.parse().unwrap(), &Tls::Verify, timeout, timeout).unwrap()
}

fn client(url: &str) -> HttpClient {
    client_tls(url, &Tls::Verify)
}

fn within(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

fn get(path: &str) -> Call<'_> {
    Call::new(Method::Get, path, "read")
}

/// A tiny_http server answering every request with `status`, `headers` and `body`, counting.
fn fixed(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> (Tiny, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let server = Tiny::start(move |req| {
        c.fetch_add(1, Ordering::SeqCst);
        let mut resp = tiny_http::Response::from_string(body).with_status_code(status);
        for (n, v) in headers {
            resp.add_header(tiny_http::Header::from_bytes(*n, *v).unwrap());
        }
        let _ = req.respond(resp);
    });
    (server, count)
}

#[test]
fn joins_base_url_sends_headers_and_reads_json() {
    let server = Tiny::start(|mut req| {
        let mut body = String::new();
        let _ = req.as_reader().read_to_string(&mut body);
        let token = req
            .headers()
            .iter()
            .find(|h| h.field.equiv("x-token"))
            .map(|h| h.value.to_string());
        let echo = serde_json::json!({
            "method": req.method().to_string(),
            "url": req.url(),
            "token": token,
            "body": body,
        });
        let resp = tiny_http::Response::from_string(echo.to_string())
            .with_header(tiny_http::Header::from_bytes("X-Index", "42").unwrap());
        let _ = req.respond(resp);
    });
    // A path prefix and a query (a SAS token, say) on the base URL apply to every request.
    let c = client(&format!("{}/prefix/?sv=1&sig=abc", server.url));
    let resp = c
        .request(
            &get("/v1/kv/x?recurse").header("X-Token", "t0k"),
            within(10),
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-index"), Some("42"));
    assert!(
        resp.headers.iter().any(|(n, _)| n == "x-index"),
        "lower-case names"
    );
    let echo: serde_json::Value = resp.json().unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["url"], "/prefix/v1/kv/x?sv=1&sig=abc&recurse");
    assert_eq!(echo["token"], "t0k");

    let sent = serde_json::json!({"key": "k", "value": 1});
    let resp = c
        .send_json(
            Call::new(Method::Post, "/v3/kv/put", "write"),
            &sent,
            within(10),
        )
        .unwrap();
    let echo: serde_json::Value = resp.json().unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["url"], "/prefix/v3/kv/put?sv=1&sig=abc");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(echo["body"].as_str().unwrap()).unwrap(),
        sent
    );
    // PUT without a body, DELETE, HEAD.
    for method in [Method::Put, Method::Delete, Method::Head] {
        let resp = c
            .request(&Call::new(method, "/x", "op"), within(10))
            .unwrap();
        assert_eq!(resp.status, 200, "{method:?}");
    }
}

#[test]
fn data_statuses_come_back_as_responses() {
    for status in [404, 409, 412] {
        let (server, _) = fixed(status, &[], "{\"why\":\"cas\"}");
        let resp = client(&server.url).request(&get("/k"), within(10)).unwrap();
        assert_eq!(resp.status, status);
        assert_eq!(resp.body, b"{\"why\":\"cas\"}");
    }
}

#[test]
fn chosen_failure_statuses_come_back_as_data() {
    let (server, count) = fixed(401, &[], "{\"code\":16}");
    let c = client(&server.url);
    let resp = c
        .request(&get("/k").status_as_data(401), within(10))
        .unwrap();
    assert_eq!(
        (resp.status, resp.body.as_slice()),
        (401, &b"{\"code\":16}"[..])
    );
    // Only the statuses named: the others are still errors.
    let e = c
        .request(&get("/k").status_as_data(400), within(10))
        .unwrap_err();
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
    // The caller words one it cannot use as the transport would have.
    let e = c.unexpected(&get("/k"), &resp);
    assert!(
        !e.is_transient() && e.report().contains("HTTP 401"),
        "{e:?}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn auth_and_client_errors_are_permanent() {
    for status in [400, 401, 403, 405, 301] {
        let (server, count) = fixed(status, &[("Location", "http://elsewhere/")], "no");
        let e = client(&server.url)
            .request(&get("/k"), within(10))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Backend {
                    transient: false,
                    ..
                }
            ),
            "{status}: {e:?}"
        );
        let text = e.report();
        assert!(
            text.contains(&format!("HTTP {status}")) && text.contains("GET http://"),
            "{text}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1, "{status}: not retried");
    }
}

#[test]
fn server_errors_are_transient_and_not_retried_without_retry_after() {
    for status in [408, 429, 500, 502, 503] {
        let (server, count) = fixed(status, &[], "busy");
        let e = client(&server.url)
            .request(&get("/k"), within(10))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Backend {
                    transient: true,
                    ..
                }
            ),
            "{status}: {e:?}"
        );
        assert!(e.is_transient());
        assert_eq!(count.load(Ordering::SeqCst), 1, "{status}");
    }
}

#[test]
fn retry_after_is_honoured_once_when_the_deadline_allows() {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let server = Tiny::start(move |req| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let resp = if n == 0 {
            tiny_http::Response::from_string("later")
                .with_status_code(503)
                .with_header(tiny_http::Header::from_bytes("Retry-After", "1").unwrap())
        } else {
            tiny_http::Response::from_string("ok")
        };
        let _ = req.respond(resp);
    });
    let start = Instant::now();
    let resp = client(&server.url).request(&get("/k"), within(10)).unwrap();
    assert_eq!(resp.body, b"ok");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "waited as asked"
    );

    // Once only: a server that keeps asking gets its second 429 back as an error.
    let (server, count) = fixed(429, &[("Retry-After", "1")], "slow down");
    let e = client(&server.url)
        .request(&get("/k"), within(10))
        .unwrap_err();
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
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[test]
fn retry_after_beyond_the_deadline_fails_at_once() {
    let (server, count) = fixed(503, &[("Retry-After", "30")], "later");
    let start = Instant::now();
    let e = client(&server.url)
        .request(&get("/k"), within(10))
        .unwrap_err();
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
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(start.elapsed() < Duration::from_secs(8), "did not wait");
}

#[test]
fn tls_modes() {
    let certs = Certs::make();
    let server = Raw::tls(&certs, |conn, _| {
        while read_request(conn).is_some() {
            if respond(conn, 200, "", "secure").is_err() {
                return;
            }
        }
    });
    let url = format!("https://{}", server.addr);
    let c = client_tls(&url, &Tls::VerifyWithCa(certs.ca.clone()));
    assert_eq!(c.request(&get("/a"), within(10)).unwrap().body, b"secure");
    assert_eq!(c.request(&get("/b"), within(10)).unwrap().body, b"secure");
    assert_eq!(server.connections(), 1, "keep-alive over TLS");

    let c = client_tls(&url, &Tls::DangerAcceptInvalidCerts);
    assert_eq!(c.request(&get("/a"), within(10)).unwrap().body, b"secure");

    // The system roots do not know the test CA.
    let e = client_tls(&url, &Tls::Verify)
        .request(&get("/a"), within(10))
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(
        e.report().to_lowercase().contains("certificate"),
        "{}",
        e.report()
    );
}

#[test]
fn bad_configuration_is_reported_without_echo() {
    let e = HttpClient::new(
        "test",
        format!("ftp://u:{SECRET}@h/").parse().unwrap(),
        &Tls::Verify,
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, Error::InvalidConfig { field: "url", .. }),
        "{e:?}"
    );
    assert!(!e.report().contains(SECRET), "{}", e.report());

    let (server, count) = fixed(200, &[], "");
    let value = format!("Bearer {SECRET}\r\nx-evil: 1");
    let e = client(&server.url)
        .request(&get("/a").header("Authorization", &value), within(10))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
    assert!(!e.report().contains(SECRET), "{}", e.report());
    assert_eq!(count.load(Ordering::SeqCst), 0);
}
