//! Real HTTP servers on 127.0.0.1 for the transport's tests: [`Tiny`], a `tiny_http` server for
//! well-behaved exchanges, and [`Raw`], a bare `TcpListener` whose handler writes whatever bytes
//! a misbehaving server would (stalls, trickles, silent closes) and which counts connections;
//! [`Raw::tls`] wraps it in rustls with certificates made by the `openssl` command. Each server
//! stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// A `tiny_http` server answering each request with `handler`.
pub(super) struct Tiny {
    pub(super) url: String,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Tiny {
    pub(super) fn start(handler: impl Fn(tiny_http::Request) + Send + 'static) -> Tiny {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr = server.server_addr().to_ip().unwrap();
        let s = server.clone();
        let thread = std::thread::spawn(move || {
            while let Ok(request) = s.recv() {
                handler(request);
            }
        });
        Tiny {
            url: format!("http://{addr}"),
            server,
            thread: Some(thread),
        }
    }
}

impl Drop for Tiny {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A stream a [`Raw`] handler talks on: plain TCP or TLS.
pub(super) trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

type Handler = dyn Fn(&mut BufReader<Box<dyn Conn>>, usize) + Send + Sync;

/// A raw server: each connection runs `handler(stream, connection number from 1)` in its own
/// thread.
pub(super) struct Raw {
    pub(super) addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Raw {
    pub(super) fn start(
        handler: impl Fn(&mut BufReader<Box<dyn Conn>>, usize) + Send + Sync + 'static,
    ) -> Raw {
        Raw::serve(None, Arc::new(handler))
    }

    /// As [`Raw::start`], over TLS with `certs`.
    pub(super) fn tls(
        certs: &Certs,
        handler: impl Fn(&mut BufReader<Box<dyn Conn>>, usize) + Send + Sync + 'static,
    ) -> Raw {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(&certs.server_cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&certs.server_key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(
            crate::providers::support::tls::crypto_provider(),
        )
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Raw::serve(Some(Arc::new(config)), Arc::new(handler))
    }

    fn serve(tls: Option<Arc<rustls::ServerConfig>>, handler: Arc<Handler>) -> Raw {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let (handler, tls) = (handler.clone(), tls.clone());
                std::thread::spawn(move || {
                    let conn: Box<dyn Conn> = match tls {
                        None => Box::new(stream),
                        Some(config) => {
                            let Ok(session) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            Box::new(rustls::StreamOwned::new(session, stream))
                        }
                    };
                    handler(&mut BufReader::new(conn), n);
                });
            }
        });
        Raw {
            addr,
            connections,
            stop,
        }
    }

    pub(super) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub(super) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads one request (head and `Content-Length` body); `None` at the end of the connection.
pub(super) fn read_request(conn: &mut BufReader<Box<dyn Conn>>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    conn.read_exact(&mut body).ok()?;
    head.push_str(&String::from_utf8_lossy(&body));
    Some(head)
}

/// Writes a response with `status`, extra header lines (each ending in `\r\n`) and `body`.
pub(super) fn respond(
    conn: &mut BufReader<Box<dyn Conn>>,
    status: u16,
    headers: &str,
    body: &str,
) -> std::io::Result<()> {
    let conn = conn.get_mut();
    write!(
        conn,
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n{headers}\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// Reads and discards until the client closes the connection: a server that never answers.
pub(super) fn drain(conn: &mut BufReader<Box<dyn Conn>>) {
    let mut buf = [0u8; 1024];
    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
}

/// A test CA and a server certificate for 127.0.0.1 it signed, made by `openssl`.
pub(super) struct Certs {
    _dir: tempfile::TempDir,
    pub(super) ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl Certs {
    pub(super) fn make() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let (ca, ca_key) = (p("ca.crt"), p("ca.key"));
        let (server_cert, server_key, csr, ext) = (
            p("server.crt"),
            p("server.key"),
            p("server.csr"),
            p("ext.cnf"),
        );
        openssl(
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ],
            |c| {
                c.args(["-subj", "/CN=leader-election http test CA", "-keyout"])
                    .arg(&ca_key)
                    .arg("-out")
                    .arg(&ca);
            },
        );
        openssl(&["req", "-newkey", "rsa:2048", "-nodes"], |c| {
            c.args(["-subj", "/CN=127.0.0.1", "-keyout"])
                .arg(&server_key)
                .arg("-out")
                .arg(&csr);
        });
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&["x509", "-req", "-days", "2"], |c| {
            c.arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&ca)
                .arg("-CAkey")
                .arg(&ca_key);
            c.args(["-CAcreateserial", "-out"]).arg(&server_cert);
            c.arg("-extfile").arg(&ext);
        });
        Certs {
            _dir: dir,
            ca,
            server_cert,
            server_key,
        }
    }
}

fn openssl(args: &[&str], more: impl FnOnce(&mut Command)) {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    more(&mut cmd);
    let out = cmd
        .output()
        .expect("the openssl command (for test certificates)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
