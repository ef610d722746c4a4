//! Azurite (the Azure Storage emulator) for the tests: the shared instance's endpoint, a private
//! instance of a test's own (on a free port, in memory, which a test may kill and restart — a
//! restart loses every container and blob), SAS tokens made with the development key, and a raw
//! signed request — a second, independent Shared Key implementation — for checking what the
//! service itself does, below the provider.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{KeyInit, Mac};

use crate::{env_or, free_port, wait_for};

/// The emulator's development account and its published key.
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
pub const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The shared Azurite's blob endpoint (path-style, with the account):
/// `LE_AZURITE_URL`, default `http://127.0.0.1:10000/devstoreaccount1`.
pub fn azurite_url() -> String {
    env_or("LE_AZURITE_URL", "http://127.0.0.1:10000/devstoreaccount1")
}

/// An Azurite blob service of this test's own, in memory, on a free port.
pub struct PrivateAzurite {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// Extra `azurite-blob` arguments.
    args: Vec<String>,
    https: bool,
}

impl PrivateAzurite {
    pub fn start() -> PrivateAzurite {
        Self::start_with(&[], false)
    }

    /// An instance serving HTTPS with this PEM certificate and key.
    pub fn start_https(cert: &std::path::Path, key: &std::path::Path) -> PrivateAzurite {
        let args = [
            "--cert".to_owned(),
            cert.display().to_string(),
            "--key".to_owned(),
            key.display().to_string(),
        ];
        Self::start_with(&args, true)
    }

    fn start_with(args: &[String], https: bool) -> PrivateAzurite {
        let mut a = PrivateAzurite {
            dir: tempfile::Builder::new()
                .prefix("le-azurite-")
                .tempdir_in("/tmp")
                .unwrap(),
            port: free_port(),
            child: None,
            args: args.to_vec(),
            https,
        };
        a.start_server();
        a
    }

    /// The blob endpoint, path-style: `http://127.0.0.1:<port>/devstoreaccount1` (`https` for
    /// an instance started with [`PrivateAzurite::start_https`]).
    pub fn endpoint(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    /// Starts the (stopped) server and waits until it answers HTTP.
    pub fn start_server(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("azurite.log"))
            .unwrap();
        let child = Command::new(env_or("LE_AZURITE_BLOB", "azurite-blob"))
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &self.port.to_string(),
            ])
            .args([
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
            ])
            .args(&self.args)
            // In memory: nothing is written but the log, in the test's own directory.
            .current_dir(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "azurite-blob is required (npm install -g azurite@3.35.0, or \
                 scripts/services.sh install azurite)",
            );
        self.child = Some(child);
        let port = self.port;
        let https = self.https;
        assert!(
            wait_for(Duration::from_secs(30), || if https {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                http_answers(port)
            }),
            "azurite-blob did not answer on {port}: {}",
            std::fs::read_to_string(self.dir.path().join("azurite.log")).unwrap_or_default()
        );
    }

    /// Kills the server (SIGKILL, by PID): everything it stored is lost.
    pub fn stop_server(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateAzurite {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// Whether something on 127.0.0.1:`port` answers an HTTP request.
pub fn http_answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 12];
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| n > 0 && buf.starts_with(b"HTTP/1."))
}

fn hmac_b64(key: &[u8], data: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn dev_key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(DEV_KEY)
        .unwrap()
}

/// A container SAS token (service SAS, version 2018-11-09) for `container` with permissions
/// `sp`, expiring at `se` (`2030-01-01T00:00:00Z`), signed with the development key.
pub fn container_sas(container: &str, sp: &str, se: &str) -> String {
    let sv = "2018-11-09";
    let to_sign = [
        sp,
        "",
        se,
        &format!("/blob/{DEV_ACCOUNT}/{container}"),
        "",
        "",
        "",
        sv,
        "c",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let sig = hmac_b64(&dev_key(), &to_sign);
    let enc = |s: &str| url_encode(s);
    format!(
        "sv={sv}&sr=c&sp={}&se={}&sig={}",
        enc(sp),
        enc(se),
        enc(&sig)
    )
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A response to [`raw_request`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request to the emulator at 127.0.0.1:`port` as the development account, signed with
/// Shared Key by this module's own implementation: `path` below the account
/// (`/container/blob`), `query` (`comp=lease`) and extra headers (lower-case names, `x-ms-*`
/// or `if-match`). No body.
pub fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let date = httpdate::fmt_http_date(SystemTime::now());
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    all.push(("x-ms-date".into(), date));
    all.push(("x-ms-version".into(), "2021-12-02".into()));
    let get = |n: &str| {
        all.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut ms: Vec<&(String, String)> =
        all.iter().filter(|(n, _)| n.starts_with("x-ms-")).collect();
    ms.sort();
    let canon_headers: String = ms.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let mut canon_query: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_lowercase(), v.to_owned())
        })
        .collect();
    canon_query.sort();
    let canon_query: String = canon_query
        .iter()
        .map(|(k, v)| format!("\n{k}:{v}"))
        .collect();
    let to_sign = format!(
        "{method}\n\n\n\n\n\n\n\n{}\n{}\n\n\n{canon_headers}/{DEV_ACCOUNT}/{DEV_ACCOUNT}{path}{canon_query}",
        get("if-match"),
        get("if-none-match"),
    );
    let auth = format!("SharedKey {DEV_ACCOUNT}:{}", hmac_b64(&dev_key(), &to_sign));
    let target = if query.is_empty() {
        format!("/{DEV_ACCOUNT}{path}")
    } else {
        format!("/{DEV_ACCOUNT}{path}?{query}")
    };
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Authorization: {auth}\r\n"
    );
    if method == "PUT" {
        req.push_str("Content-Length: 0\r\n");
    }
    for (n, v) in &all {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to azurite");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response from azurite: {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    RawResponse { status, headers }
}
