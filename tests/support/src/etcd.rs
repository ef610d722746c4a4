//! etcd for the tests: the shared server's URL, raw JSON-gateway calls (to delete a key behind
//! a leader's back, read a key's lease), a private instance of a test's own — its own client
//! and peer ports and data directory, kept across a stop and start so that etcd restarts with
//! its data — and a TCP proxy a test can cut to make a client lose its connections while the
//! server keeps running.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::{env_or, free_port, wait_for};

/// The shared etcd server's client URL.
pub fn etcd_url() -> String {
    env_or("LE_ETCD_URL", "http://127.0.0.1:2379")
}

/// POSTs `body` to the JSON gateway at `url` + `path` (HTTP/1.0, no keep-alive) and returns
/// the response body; panics on a transport failure.
pub fn etcd_post(url: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("etcd at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let json = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = json.lines().next().unwrap_or("null");
    serde_json::from_str(json).unwrap_or_else(|_| panic!("not JSON from etcd: {out}"))
}

/// Base64, as the gateway takes keys.
pub fn b64(text: &str) -> String {
    STANDARD.encode(text)
}

/// Deletes `key` behind everyone's back.
pub fn etcd_delete(url: &str, key: &str) {
    etcd_post(
        url,
        "/v3/kv/deleterange",
        &serde_json::json!({ "key": b64(key) }),
    );
}

/// `(create_revision, lease)` of `key`, if it exists.
pub fn etcd_key(url: &str, key: &str) -> Option<(i64, i64)> {
    let r = etcd_post(url, "/v3/kv/range", &serde_json::json!({ "key": b64(key) }));
    let kv = r["kvs"].get(0)?;
    let int = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    Some((int(&kv["create_revision"]), int(&kv["lease"])))
}

/// The ids of the server's live leases.
pub fn etcd_leases(url: &str) -> Vec<String> {
    let r = etcd_post(url, "/v3/lease/leases", &serde_json::json!({}));
    let list = r["leases"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|l| l["ID"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// An etcd server of this test's own (one member, free client and peer ports, data in a
/// temporary directory kept across restarts), which a test may stop, kill and start again.
pub struct PrivateEtcd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub peer_port: u16,
    child: Option<Child>,
    args: Vec<String>,
    tls: bool,
}

impl PrivateEtcd {
    /// Starts a member; `args` are extra `etcd` arguments (`--auth-token-ttl 2`, say).
    pub fn start(args: &[&str]) -> PrivateEtcd {
        PrivateEtcd::start_inner(args, None)
    }

    /// Starts a member serving clients over TLS with the certificate and key of
    /// [`crate::make_tls_certs`] (the CA is `dir/ca.crt`).
    pub fn start_tls(args: &[&str]) -> PrivateEtcd {
        let dir = tempfile::Builder::new()
            .prefix("le-etcd-certs-")
            .tempdir_in("/tmp")
            .unwrap();
        let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        crate::make_tls_certs(dir.path(), &cert, &key);
        PrivateEtcd::start_inner(args, Some(dir))
    }

    fn start_inner(args: &[&str], certs: Option<tempfile::TempDir>) -> PrivateEtcd {
        let dir = tempfile::Builder::new()
            .prefix("le-etcd-")
            .tempdir_in("/tmp")
            .unwrap();
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(certs) = &certs {
            for f in ["server.crt", "server.key", "ca.crt"] {
                std::fs::copy(certs.path().join(f), dir.path().join(f)).unwrap();
            }
            args.push(format!(
                "--cert-file={}",
                dir.path().join("server.crt").display()
            ));
            args.push(format!(
                "--key-file={}",
                dir.path().join("server.key").display()
            ));
        }
        let mut e = PrivateEtcd {
            dir,
            port: free_port(),
            peer_port: free_port(),
            child: None,
            args,
            tls: certs.is_some(),
        };
        e.start_server();
        e
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts the (stopped) server on its data directory and waits until it serves.
    pub fn start_server(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(env_or("LE_ETCD", "etcd"))
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian package etcd-server) is required");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        assert!(
            wait_for(Duration::from_secs(30), || if self.tls {
                self.etcdctl_status(&["endpoint", "health"]).0
            } else {
                health(&addr)
            }),
            "etcd did not become healthy on {addr}"
        );
    }

    /// Stops the server gracefully (SIGTERM); its data stays.
    pub fn stop_server(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = rustix::process::Pid::from_raw(c.id() as i32).expect("pid");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = c.wait();
        }
    }

    /// Kills the server (SIGKILL); its data stays (etcd syncs its log before answering).
    pub fn kill_server(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `etcdctl` (Debian package etcd-client) against this server; returns its output.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let (ok, text) = self.etcdctl_status(args);
        assert!(ok, "etcdctl {args:?} failed: {text}");
        text
    }

    fn etcdctl_status(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env_or("LE_ETCDCTL", "etcdctl"))
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()))
            .args(["--dial-timeout=2s", "--command-timeout=5s"])
            .args(
                self.tls
                    .then(|| format!("--cacert={}", self.dir.path().join("ca.crt").display())),
            )
            .args(args)
            .output()
            .expect("etcdctl (Debian package etcd-client) is required");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for PrivateEtcd {
    fn drop(&mut self) {
        self.kill_server();
    }
}

/// Whether etcd's `/health` at `addr` reports healthy.
fn health(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut out = String::new();
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
        && s.read_to_string(&mut out).is_ok()
        && out.contains("\"health\":\"true\"")
}

/// A TCP proxy on a free port to `upstream`, which a test can cut (close every connection and
/// refuse new ones) and heal, to make a client lose its connections while the server runs on.
pub struct TcpProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    pub fn start(upstream: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, list) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut l = list.lock().unwrap();
                l.push(client.try_clone().unwrap());
                l.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        TcpProxy { port, cut, conns }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the proxy and refuses new ones until [`Self::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
    });
}
