//! ZooKeeper for the tests: the shared server's hosts and a private instance of a test's own
//! that can be killed, frozen (SIGSTOP) and thawed, and a listener that accepts connections and
//! closes them at once (a load balancer with no backend).

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::{env_or, free_port, wait_for};

/// The shared ZooKeeper ensemble's connection string.
pub fn zookeeper_hosts() -> String {
    env_or("LE_ZOOKEEPER_HOSTS", "127.0.0.1:2181")
}

/// The `tickTime` of the server at `host:port`, from its `conf` four-letter command (`None` if
/// it does not answer it).
pub fn server_tick(host_port: &str) -> Option<Duration> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(host_port).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"conf").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let ms = out
        .lines()
        .find_map(|l| l.strip_prefix("tickTime="))?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms))
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

/// A listener on 127.0.0.1:`port` that accepts every connection and closes it at once — a load
/// balancer with no backend behind it. Counts the connections; stops when dropped.
pub struct AcceptAndClose {
    accepted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AcceptAndClose {
    /// Binds `port` (retrying for a few seconds while a killed server's socket goes away).
    pub fn start(port: u16) -> AcceptAndClose {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let mut listener = None;
        assert!(
            wait_for(Duration::from_secs(10), || {
                listener = std::net::TcpListener::bind(("127.0.0.1", port)).ok();
                listener.is_some()
            }),
            "cannot bind 127.0.0.1:{port}"
        );
        let listener = listener.expect("bound");
        listener.set_nonblocking(true).unwrap();
        let accepted = std::sync::Arc::new(AtomicU64::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        AcceptAndClose {
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted (and closed) so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for AcceptAndClose {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
