//! PostgreSQL for the tests: the shared server's URL and a private instance of a test's own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{env_or, free_port, is_root, make_tls_certs, run};

/// The shared PostgreSQL server's URL.
pub fn postgres_url() -> String {
    env_or(
        "LE_POSTGRES_URL",
        "postgres://leader:leader-secret@127.0.0.1:5432/leader_election?sslmode=disable",
    )
}

/// A PostgreSQL instance of this test's own, in a temporary directory, on a free port, with a
/// password-protected role `leader` (password `leader-secret`) and database `leader_election`.
pub struct PrivatePostgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl PrivatePostgres {
    fn bin() -> PathBuf {
        if let Ok(b) = std::env::var("LE_PG_BIN") {
            return b.into();
        }
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries (Debian package postgresql) are required")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        versions.sort();
        versions
            .pop()
            .expect("no initdb under /usr/lib/postgresql/*/bin")
    }

    fn cmd(&self, prog: &str) -> Command {
        let path = self.bin.join(prog);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// Creates and starts an instance; `ssl` turns TLS on with a certificate signed by a CA
    /// whose certificate is [`PrivatePostgres::ca_file`].
    pub fn start(ssl: bool) -> PrivatePostgres {
        let dir = tempfile::Builder::new()
            .prefix("le-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        if is_root() {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path()));
        }
        let pg = PrivatePostgres {
            port: free_port(),
            bin: Self::bin(),
            dir,
        };
        let data = pg.data();
        run(pg.cmd("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]));
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\n",
            pg.port,
            pg.dir.path().display()
        );
        if ssl {
            pg.make_certs();
            conf += "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
        }
        pg.append(&data.join("postgresql.conf"), &conf);
        pg.start_server();
        run(pg.cmd("psql").args([
            "-q",
            "-h",
            &pg.dir.path().display().to_string(),
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "CREATE ROLE leader LOGIN PASSWORD 'leader-secret'",
            "-c",
            "CREATE DATABASE leader_election OWNER leader",
        ]));
        pg
    }

    fn append(&self, file: &Path, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(file).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn make_certs(&self) {
        let data = self.data();
        make_tls_certs(
            self.dir.path(),
            &data.join("server.crt"),
            &data.join("server.key"),
        );
        if is_root() {
            run(Command::new("chown")
                .args(["postgres:postgres"])
                .arg(data.join("server.key"))
                .arg(data.join("server.crt")));
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The CA certificate (PEM) that signed the server's certificate, when started with TLS.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A URL for role `leader`; `extra` is appended as query options.
    pub fn url(&self, extra: &str) -> String {
        format!(
            "postgres://leader:leader-secret@127.0.0.1:{}/leader_election?{extra}",
            self.port
        )
    }

    /// Starts the (stopped) server.
    pub fn start_server(&self) {
        let log = self.dir.path().join("server.log");
        run(self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null()));
    }

    /// Stops the server at once (`-m immediate`: like a crash, connections are cut).
    pub fn stop_server(&self) {
        run(self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdout(Stdio::null()));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "-t", "10", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
