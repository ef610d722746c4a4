//! Watch threads: long polls held by the server, streams read line by line as chunks arrive, the
//! stop interrupting a blocked poll or stream at once, and `run_watch` waking watchers after
//! each (re)subscription.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};

use super::servers::{Conn, Raw, drain, read_request, respond};
use super::*;
use crate::provider::Wakeup;
use crate::providers::support::listener::Stop;
use crate::providers::support::watchers::Watchers;

/// Generous bound for "promptly" on a busy machine.
const PROMPT: Duration = Duration::from_secs(5);

fn chunk(conn: &mut std::io::BufReader<Box<dyn Conn>>, data: &str) -> std::io::Result<()> {
    let conn = conn.get_mut();
    write!(conn, "{:x}\r\n{data}\r\n", data.len())?;
    conn.flush()
}

fn chunked_head(conn: &mut std::io::BufReader<Box<dyn Conn>>) -> std::io::Result<()> {
    let conn = conn.get_mut();
    conn.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")?;
    conn.flush()
}

/// Runs `f` in a thread; the receiver gets its result.
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Receiver<T> {
    let (tx, rx) = unbounded();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + PROMPT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn long_poll_outlasts_the_request_timeout() {
    // The server holds the poll 2 s; the client's request timeout is 1 s, the poll's wait 3 s.
    let server = Raw::start(|conn, _| {
        while read_request(conn).is_some() {
            std::thread::sleep(Duration::from_secs(2));
            if respond(conn, 200, "x-index: 7\r\n", "[]").is_err() {
                return;
            }
        }
    });
    let c = client_timeouts(&server.url(), Duration::from_secs(1));
    let stop = Stop::default();
    let w = c.watch(&stop);
    let resp = w
        .long_poll(&get("/v1/kv/?index=6&wait=3s"), Duration::from_secs(3))
        .unwrap();
    assert_eq!(resp.header("x-index"), Some("7"));
    // A plain request on the same server gives up after its 1 s.
    assert!(matches!(
        c.request(&get("/v1/kv/"), within(60)),
        Err(Error::Timeout { .. })
    ));
}

#[test]
fn stop_interrupts_a_blocked_long_poll() {
    let server = Raw::start(|conn, _| drain(conn));
    let c = client(&server.url());
    let stop = Stop::default();
    let (s, watchers) = (stop.clone(), Watchers::default());
    let done = spawn(move || {
        c.run_watch(&s, &watchers, |w, subscribed| {
            subscribed();
            w.long_poll(&get("/v1/kv/?index=1&wait=600s"), Duration::from_secs(600))
                .map(|_| ())
        })
    });
    wait_for("the poll", || server.connections() >= 1);
    std::thread::sleep(Duration::from_millis(200));
    stop.stop();
    assert!(done.recv_timeout(PROMPT).is_ok(), "the watch thread ended");

    // A watch made after the stop fails at once.
    let w = client(&server.url()).watch(&stop);
    assert!(w.is_stopped());
    assert!(w.long_poll(&get("/"), Duration::from_secs(600)).is_err());
}

#[test]
fn run_watch_wakes_watchers_and_resubscribes_after_a_failure() {
    // The first connection answers one poll and dies under the next; later ones answer polls
    // every 100 ms.
    let server = Raw::start(|conn, n| {
        while read_request(conn).is_some() {
            if n == 1 {
                let _ = respond(conn, 200, "x-index: 1\r\n", "[]");
                let _ = read_request(conn);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
            if respond(conn, 200, "x-index: 2\r\n", "[]").is_err() {
                return;
            }
        }
    });
    let c = client(&server.url());
    let (stop, watchers) = (Stop::default(), Watchers::default());
    let (wakeup, woken) = Wakeup::channel();
    let _watch = watchers.add("g", wakeup);
    let sessions = Arc::new(AtomicUsize::new(0));
    let (s, w2, n) = (stop.clone(), watchers.clone(), sessions.clone());
    let done = spawn(move || {
        c.run_watch(&s, &w2, |w, subscribed| {
            n.fetch_add(1, Ordering::SeqCst);
            let mut first = true;
            loop {
                w.long_poll(&get("/v1/kv/?wait=10s"), Duration::from_secs(10))?;
                if first {
                    subscribed();
                    first = false;
                }
                if w.is_stopped() {
                    return Ok(());
                }
            }
        })
    });
    // Woken by the first subscription, then again when the connection fails (the watch is no
    // longer live: followers go back to polling) and after the reconnect; subscribed again.
    woken.recv_timeout(PROMPT).unwrap();
    wait_for("a second session", || sessions.load(Ordering::SeqCst) >= 2);
    woken.recv_timeout(PROMPT).unwrap();
    wait_for("a second connection", || server.connections() >= 2);
    let (probe, _) = Wakeup::channel();
    assert!(
        watchers.add_when_listening("h", probe, PROMPT).is_some(),
        "not subscribed again after the reconnect"
    );
    assert!(_watch.is_live());
    stop.stop();
    assert!(done.recv_timeout(PROMPT).is_ok());
}

#[test]
fn stream_hands_over_lines_as_they_arrive() {
    let server = Raw::start(|conn, _| {
        if read_request(conn).is_none() || chunked_head(conn).is_err() {
            return;
        }
        // A line, then one split over two chunks with pauses, \r\n and an empty line.
        let pause = || std::thread::sleep(Duration::from_millis(300));
        let ok = chunk(conn, "{\"a\":1}\n").is_ok()
            && {
                pause();
                chunk(conn, "{\"b\":").is_ok()
            }
            && {
                pause();
                chunk(conn, "2}\r\n\n").is_ok()
            };
        if ok {
            drain(conn);
        }
    });
    let c = client(&server.url());
    let stop = Stop::default();
    let w = c.watch(&stop);
    let (tx, lines) = unbounded();
    let done = spawn(move || {
        let call = Call::new(Method::Post, "/v3/watch", "watch").body(b"{}");
        w.stream(&call, Duration::from_secs(60), |line| {
            let _ = tx.send(String::from_utf8_lossy(line).into_owned());
            Ok(())
        })
    });
    assert_eq!(lines.recv_timeout(PROMPT).unwrap(), "{\"a\":1}");
    assert_eq!(lines.recv_timeout(PROMPT).unwrap(), "{\"b\":2}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(lines.try_recv().is_err(), "no empty line");
    stop.stop();
    let result = done.recv_timeout(PROMPT).expect("the stop ends the stream");
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn stream_ends_with_the_body_and_reports_handler_errors() {
    let server = Raw::start(|conn, _| {
        while read_request(conn).is_some() {
            let ok = chunked_head(conn).is_ok()
                && chunk(conn, "one\ntwo\n").is_ok()
                && conn.get_mut().write_all(b"0\r\n\r\n").is_ok();
            if !ok {
                return;
            }
        }
    });
    let c = client(&server.url());
    let w = c.watch(&Stop::default());
    let call = Call::new(Method::Post, "/v3/watch", "watch");
    let mut seen = Vec::new();
    w.stream(&call, Duration::from_secs(10), |l| {
        seen.push(l.to_vec());
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);

    let e = w
        .stream(&call, Duration::from_secs(10), |_| {
            Err(Error::config("x", "handler"))
        })
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidConfig { field: "x", .. }),
        "{e:?}"
    );
}

#[test]
fn silent_stream_times_out_after_max_idle() {
    let server = Raw::start(|conn, _| {
        if read_request(conn).is_some() && chunked_head(conn).is_ok() {
            drain(conn);
        }
    });
    let w = client(&server.url()).watch(&Stop::default());
    let start = Instant::now();
    let e = w
        .stream(
            &Call::new(Method::Post, "/v3/watch", "watch"),
            Duration::from_millis(500),
            |_| Ok(()),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                operation: "watch",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn stream_error_statuses() {
    for (status, transient) in [(403, false), (404, false), (503, true)] {
        let (server, _) = fixed(status, &[], "no");
        let w = client(&server.url).watch(&Stop::default());
        let e = w
            .stream(
                &Call::new(Method::Post, "/v3/watch", "watch"),
                Duration::from_secs(10),
                |_| Ok(()),
            )
            .unwrap_err();
        assert!(matches!(e, Error::Backend { .. }), "{status}: {e:?}");
        assert_eq!(e.is_transient(), transient, "{status}");
    }
}
