//! A TCP proxy on 127.0.0.1 that a test can *block*: while blocked it accepts connections and
//! lets clients write (the kernel buffers the bytes) but forwards nothing in either direction
//! and answers nothing — a network that silently drops traffic, which only timeouts notice.
//! Unblocked, it forwards again. Its threads poll a stop flag and end when it is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(20);

/// See the module docs.
pub struct Proxy {
    pub port: u16,
    blocked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy to `target`, forwarding.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let blocked = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (blocked.clone(), stop.clone());
        std::thread::Builder::new()
            .name("test-proxy".into())
            .spawn(move || accept(listener, target, b, s))
            .unwrap();
        Proxy {
            port,
            blocked,
            stop,
        }
    }

    /// Stops forwarding (existing and new connections).
    pub fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept(
    listener: TcpListener,
    target: SocketAddr,
    blocked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let (b, s) = (blocked.clone(), stop.clone());
                let _ = std::thread::Builder::new()
                    .name("test-proxy-conn".into())
                    .spawn(move || connection(client, target, b, s));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Connects to the target once unblocked, then pumps both ways.
fn connection(
    client: TcpStream,
    target: SocketAddr,
    blocked: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    while blocked.load(Ordering::SeqCst) {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(POLL);
    }
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (b, s) = (blocked.clone(), stop.clone());
    let _ = std::thread::Builder::new()
        .name("test-proxy-pump".into())
        .spawn(move || pump(s2, c2, b, s));
    pump(client, server, blocked, stop);
}

/// Copies `from` to `to` while unblocked; while blocked, reads nothing and writes nothing.
fn pump(mut from: TcpStream, mut to: TcpStream, blocked: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if blocked.load(Ordering::SeqCst) {
            std::thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}
