//! The double's HTTP/1.1 server, on raw sockets rather than an HTTP library, so that its
//! transport faults are real: a stalled request is never answered, a closed connection gets no
//! response at all, and a refusing double has no listening socket (connections are refused,
//! open ones are shut). One thread accepts, one thread per connection serves keep-alive
//! requests (`Content-Length` or chunked bodies) and answers with `Content-Length`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;

/// A parsed request: percent-decoded path and query, lower-case header names.
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's value (`""` for a bare flag such as `?recurse`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply::new(status, value.to_string()).with("Content-Type", "application/json")
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// Binds `addr` and serves until the double stops.
pub fn start(shared: Arc<Shared>, listener: TcpListener) {
    let addr = shared.addr;
    std::thread::Builder::new()
        .name("consul-double".into())
        .spawn(move || accept_loop(&shared, listener, addr))
        .expect("spawn the double's accept thread");
}

fn accept_loop(shared: &Arc<Shared>, listener: TcpListener, addr: SocketAddr) {
    let mut listener = Some(listener);
    while !shared.stopped.load(Ordering::SeqCst) {
        if shared.faults().refuse {
            if listener.take().is_some() {
                shared.close_connections();
            }
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let Some(l) = &listener else {
            // Healed: listen again on the same port.
            match TcpListener::bind(addr) {
                Ok(l) => listener = Some(l),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            continue;
        };
        // `poke` connects to wake this accept when a fault or stop needs it.
        let Ok((stream, _)) = l.accept() else {
            continue;
        };
        if shared.stopped.load(Ordering::SeqCst) || shared.faults().refuse {
            continue;
        }
        let shared = shared.clone();
        let _ = std::thread::Builder::new()
            .name("consul-double-conn".into())
            .spawn(move || serve(&shared, stream));
    }
}

/// Serves one connection's requests until it closes, a fault closes it, or the double stops.
fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let id = shared.register(&stream);
    let mut reader = BufReader::new(stream);
    let mut writer = write_half;
    while let Some(req) = read_request(&mut reader) {
        if shared.faults().close {
            break;
        }
        let reply = if shared.faults().stall {
            None
        } else {
            let reply = super::endpoints::handle(shared, &req);
            // A stall that began while the request was held swallows its answer too.
            (!shared.faults().stall).then_some(reply)
        };
        let Some(reply) = reply else {
            while shared.faults().stall && !shared.stopped.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            break;
        };
        if write_reply(&mut writer, &reply).is_err() {
            break;
        }
        if req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
    shared.unregister(id);
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        if headers.len() > 100 {
            return None;
        }
    }
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(reader)?
    } else {
        let len: usize = find("content-length").map_or(Some(0), |v| v.parse().ok())?;
        if len > 4 << 20 {
            return None;
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
        body
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Some(Request {
        method,
        path: decode(path),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
            })
            .collect(),
        headers,
        body,
    })
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            let mut end = String::new();
            reader.read_line(&mut end).ok()?;
            return Some(body);
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..size]);
        if body.len() > 4 << 20 {
            return None;
        }
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn write_reply(w: &mut TcpStream, reply: &Reply) -> std::io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(&reply.body);
    w.write_all(&out)?;
    w.flush()
}
