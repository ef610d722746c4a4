//! Helpers shared by the integration tests: connection settings from the environment, unique
//! names, and private server instances that a test may stop, restart or break at will.
//!
//! The shared servers (started by `scripts/services.sh` or docker compose) serve the
//! conformance suites. Tests that restart or break a server start their own instance on a free
//! port from the locally installed binaries; a missing binary fails the test.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An environment variable or a default.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The shared PostgreSQL server's URL.
pub fn postgres_url() -> String {
    env_or(
        "LE_POSTGRES_URL",
        "postgres://leader:leader-secret@127.0.0.1:5432/leader_election?sslmode=disable",
    )
}

/// The shared Redis server's URL.
pub fn redis_url() -> String {
    env_or("LE_REDIS_URL", "redis://127.0.0.1:6379/")
}

/// A unique name for a group, table or key prefix.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff
    )
}

/// A free TCP port on 127.0.0.1 (racy, but fine for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms until it is true or `within` passes.
pub fn wait_for(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The names of this process's threads.
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The number of threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Makes a test CA (`dir/ca.crt`) and a server certificate for 127.0.0.1 signed by it, with
/// the openssl command-line tool.
pub fn make_tls_certs(dir: &Path, cert: &Path, key: &Path) {
    let ca = dir.join("ca.crt");
    let cakey = dir.join("ca.key");
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=leader-election test CA", "-keyout"])
        .arg(&cakey)
        .arg("-out")
        .arg(&ca));
    let csr = dir.join("server.csr");
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(key)
        .arg("-out")
        .arg(&csr));
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&cakey)
        .args(["-CAcreateserial", "-out"])
        .arg(cert)
        .arg("-extfile")
        .arg(&ext));
    run(Command::new("chmod").arg("600").arg(key));
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

/// A Redis instance of this test's own, on a free port, without persistence; restarting it
/// loses every key, as a real restart without persistence does.
pub struct PrivateRedis {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
}

impl PrivateRedis {
    /// Starts an instance; `args` are extra `redis-server` arguments.
    pub fn start(args: &[&str]) -> PrivateRedis {
        let mut r = PrivateRedis {
            dir: tempfile::Builder::new()
                .prefix("le-redis-")
                .tempdir_in("/tmp")
                .unwrap(),
            port: free_port(),
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        r.start_server();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the (stopped) server and waits until it answers.
    pub fn start_server(&mut self) {
        let child = Command::new(env_or("LE_REDIS_SERVER", "redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) is required");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_for(Duration::from_secs(10), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "redis-server did not listen on {port}"
        );
    }

    /// Kills the server (SIGKILL): all data is lost.
    pub fn stop_server(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// The shared ZooKeeper ensemble's connection string.
pub fn zookeeper_hosts() -> String {
    env_or("LE_ZOOKEEPER_HOSTS", "127.0.0.1:2181")
}

/// A ZooKeeper server of this test's own (standalone, on a free port, data in a temporary
/// directory), which a test may kill, restart, freeze and thaw.
pub struct PrivateZooKeeper {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl PrivateZooKeeper {
    pub fn start() -> PrivateZooKeeper {
        let dir = tempfile::Builder::new()
            .prefix("le-zk-")
            .tempdir_in("/tmp")
            .unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=*\n\
                 minSessionTimeout=1000\nmaxSessionTimeout=60000\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut zk = PrivateZooKeeper {
            dir,
            port,
            child: None,
        };
        zk.start_server();
        zk
    }

    pub fn hosts(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn start_server(&mut self) {
        let jar = env_or("LE_ZOOKEEPER_JAR", "/usr/share/java/zookeeper.jar");
        assert!(
            Path::new(&jar).exists(),
            "{jar} is missing: install the Debian package zookeeper (scripts/services.sh install)"
        );
        let mut cp = jar;
        for extra in [
            "/usr/share/java/slf4j-simple.jar",
            "/usr/share/java/slf4j-api.jar",
        ] {
            if Path::new(extra).exists() {
                cp = format!("{cp}:{extra}");
            }
        }
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new("java")
            .args(["-Xmx128m", "-XX:+UseSerialGC", "-cp", &cp])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.path().join("zoo.cfg"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("java is required for ZooKeeper");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_for(Duration::from_secs(60), || {
                use std::io::{Read, Write};
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    return false;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut out = String::new();
                s.write_all(b"ruok").is_ok() && s.read_to_string(&mut out).is_ok() && out == "imok"
            }),
            "ZooKeeper did not answer on {port}"
        );
    }

    /// Kills the server (SIGKILL); its data stays for a restart.
    pub fn kill_server(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = self.child.as_ref().expect("server running").id();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).expect("pid"),
            sig,
        )
        .expect("signal");
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal(rustix::process::Signal::CONT);
    }
}

impl Drop for PrivateZooKeeper {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A frozen server must be thawed to die cleanly.
            if let Some(c) = self.child.as_ref() {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(c.id() as i32).expect("pid"),
                    rustix::process::Signal::CONT,
                );
            }
        }
        self.kill_server();
    }
}

/// This process's CPU time (user + system) so far.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// An error with all its sources, as a log line would show them.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s += &format!(": {c}");
        src = c.source();
    }
    s
}

/// Starts a leader and a follower with a 30 s retry interval, then shuts the leader down:
/// the follower must lead within seconds — well before its next poll, and before `ttl` if
/// that is long — which only the provider's push channel (NOTIFY, pub/sub, watches) can make
/// happen. Returns how long the hand-off took.
pub fn assert_push_hand_off<P: leader_election::Provider>(
    ttl: Duration,
    make: impl Fn() -> P,
) -> Duration {
    use leader_election::{ChangesExt, Elector, LeadershipChange};
    let g = unique("handoff").replace('_', "-");
    let start_one = |id: &str| {
        Elector::builder(make())
            .group(&g)
            .participant_id(id)
            .lease_ttl(ttl)
            .heartbeat_interval(ttl / 4)
            .retry_interval(Duration::from_secs(30))
            .start()
            .unwrap()
    };
    let a = start_one("a");
    a.subscribe().take_until_leader().for_each(drop);
    let ta = a.fencing_token().expect("a leads");
    let b = start_one("b");
    let mut b_changes = b.subscribe();
    // b has campaigned once and now waits (its next poll is 15–30 s away).
    assert!(matches!(
        b_changes.recv_timeout(Duration::from_secs(10)),
        Ok(LeadershipChange::LeaderChanged { leader: Some(_) })
    ));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    a.shutdown().unwrap();
    let acquired = b_changes.find(|c| c.is_acquired());
    let took = start.elapsed();
    match acquired {
        Some(LeadershipChange::Acquired { fencing_token, .. }) => assert!(fencing_token > ta),
        other => panic!("b did not take over: {other:?}"),
    }
    assert!(took < Duration::from_secs(10), "hand-off took {took:?}");
    took
}

/// An elector with a 3 s lease, renewing every `heartbeat`, campaigning every 200 ms: quick
/// enough for outage tests against private servers.
pub fn fast_elector<P: leader_election::Provider>(
    provider: P,
    group: &str,
    heartbeat: Duration,
) -> leader_election::Elector {
    leader_election::Elector::builder(provider)
        .group(group)
        .lease_ttl(Duration::from_secs(3))
        .heartbeat_interval(heartbeat)
        .retry_interval(Duration::from_millis(200))
        .start()
        .unwrap()
}

/// Waits up to `within` for an `Acquired` change (skipping others); returns its token and
/// when it arrived.
pub fn wait_acquired(changes: &leader_election::Changes, within: Duration) -> (u64, Instant) {
    use leader_election::LeadershipChange;
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(LeadershipChange::Acquired { fencing_token, .. }) =
            changes.recv_timeout(Duration::from_millis(100))
        {
            return (fencing_token, Instant::now());
        }
    }
    panic!("no leadership within {within:?}");
}

/// For a provider built lazily while its server is down: an elector on it does not lead,
/// then leads within 20 s of `start_server` running.
pub fn assert_leads_once_the_server_starts<P: leader_election::Provider>(
    provider: P,
    start_server: impl FnOnce(),
) {
    use leader_election::EventKinds;
    let e = fast_elector(provider, "down-at-start", Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(800));
    assert!(!e.is_leader(), "led while the server was down");
    start_server();
    let changes = e.subscribe_filtered(EventKinds::ACQUIRED);
    assert!(
        changes.recv_timeout(Duration::from_secs(20)).is_ok(),
        "no leadership within 20 s of the server starting"
    );
    e.shutdown().unwrap();
}

/// Waits up to `within` for the next change, which must be a step-down on the local deadline;
/// returns when it arrived.
pub fn expect_deadline_step_down(changes: &leader_election::Changes, within: Duration) -> Instant {
    use leader_election::{LeadershipChange, LostReason};
    let lost = changes.recv_timeout(within);
    let at = Instant::now();
    assert!(
        matches!(
            lost,
            Ok(LeadershipChange::Lost {
                reason: LostReason::DeadlinePassed,
                ..
            })
        ),
        "expected a step-down on the deadline, got {lost:?}"
    );
    at
}
