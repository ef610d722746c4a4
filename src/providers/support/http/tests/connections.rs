//! Connections and deadlines: stalling and trickling servers time out by the deadline, a
//! refused port is unavailable, and the one retry happens exactly when a pooled keep-alive
//! connection died under a request — not on a fresh connection, not after a timeout (the
//! connection counts of the raw servers prove which).

use std::io::Write;
use std::time::{Duration, Instant};

use super::servers::{Raw, drain, read_request, respond};
use super::*;

#[test]
fn stalled_server_times_out_by_the_deadline() {
    // Accepts, reads the request, never answers.
    let server = Raw::start(|conn, _| drain(conn));
    let start = Instant::now();
    let e = client(&server.url())
        .request(&get("/k"), within(1))
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        matches!(
            e,
            Error::Timeout {
                operation: "read",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient());
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // The request timeout bounds it too when it is shorter than the deadline.
    let c = client_timeouts(&server.url(), Duration::from_secs(1));
    let start = Instant::now();
    let e = c.request(&get("/k"), within(60)).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn trickling_server_times_out_by_the_deadline() {
    // Headers, then a promised body one byte at a time, forever (until the client leaves).
    let server = Raw::start(|conn, _| {
        if read_request(conn).is_none() {
            return;
        }
        let conn = conn.get_mut();
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n");
        while conn.write_all(b"x").and_then(|()| conn.flush()).is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let start = Instant::now();
    let e = client(&server.url())
        .request(&get("/k"), within(1))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // Headers trickled a byte at a time are bounded the same way.
    let server = Raw::start(|conn, _| {
        if read_request(conn).is_none() {
            return;
        }
        let conn = conn.get_mut();
        for b in b"HTTP/1.1 200 OK\r\nx-slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'))
        {
            if conn.write_all(&[*b]).and_then(|()| conn.flush()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let start = Instant::now();
    let e = client(&server.url())
        .request(&get("/k"), within(1))
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn refused_connection_is_unavailable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = client(&format!("http://127.0.0.1:{port}"))
        .request(&get("/k"), within(10))
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(e.is_transient());
}

#[test]
fn dead_pooled_connection_is_retried_once() {
    // The first connection answers one request, then reads the next and closes without a
    // word: the race of a server closing an idle keep-alive connection as a request arrives.
    let server = Raw::start(|conn, n| {
        while read_request(conn).is_some() {
            if n == 1 && respond(conn, 200, "", "first").is_err() {
                return;
            }
            if n == 1 {
                let _ = read_request(conn);
                return;
            }
            if respond(conn, 200, "", "again").is_err() {
                return;
            }
        }
    });
    let c = client(&server.url());
    assert_eq!(c.request(&get("/a"), within(10)).unwrap().body, b"first");
    let resp = c
        .request(&Call::new(Method::Put, "/b", "write"), within(10))
        .unwrap();
    assert_eq!(resp.body, b"again");
    assert_eq!(
        server.connections(),
        2,
        "the retry opened a second connection"
    );
}

#[test]
fn server_closing_after_each_response_is_transparent() {
    let server = Raw::start(|conn, _| {
        if read_request(conn).is_some() {
            let _ = respond(conn, 200, "", "once");
        }
    });
    let c = client(&server.url());
    for _ in 0..3 {
        assert_eq!(c.request(&get("/a"), within(10)).unwrap().body, b"once");
    }
    assert_eq!(server.connections(), 3);
}

#[test]
fn fresh_connection_closed_under_a_request_is_not_retried() {
    let server = Raw::start(|conn, _| {
        let _ = read_request(conn);
    });
    let e = client(&server.url())
        .request(&get("/a"), within(10))
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert_eq!(server.connections(), 1);
}

#[test]
fn timeout_on_a_pooled_connection_is_not_retried() {
    let server = Raw::start(|conn, _| {
        if read_request(conn).is_some() && respond(conn, 200, "", "first").is_ok() {
            drain(conn);
        }
    });
    // The request timeout (1 s) runs out long before the deadline: time is left for a retry,
    // but the server may be working on the request.
    let c = client_timeouts(&server.url(), Duration::from_secs(1));
    c.request(&get("/a"), within(10)).unwrap();
    let e = c.request(&get("/b"), within(10)).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert_eq!(server.connections(), 1);
}
