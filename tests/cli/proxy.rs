//! A TCP proxy on 127.0.0.1 that can stop forwarding, to cut a tool off from its backend.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A TCP proxy on 127.0.0.1 that can stop forwarding: afterwards it keeps every connection
/// open (and accepts new ones) but drops what it reads, as a network partition would.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    forwarding: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub(crate) fn start(upstream: String) -> Proxy {
        use std::net::{TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let forwarding = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (fw, st) = (forwarding.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) if !fw.load(Ordering::SeqCst) => held.push(client),
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(&upstream) else {
                            continue;
                        };
                        for (from, to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            let (fw, st) = (fw.clone(), st.clone());
                            std::thread::spawn(move || pump(from, to, &fw, &st));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            forwarding,
            stop,
        }
    }

    pub(crate) fn cut(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
    }
}

pub(crate) fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    forwarding: &AtomicBool,
    stop: &AtomicBool,
) {
    use std::io::Read;
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if forwarding.load(Ordering::SeqCst) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Ok(_) => {} // partitioned: dropped
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
