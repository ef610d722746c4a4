//! Redis for the tests: the shared server's URL and a private instance of a test's own.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{env_or, free_port, wait_for};

/// The shared Redis server's URL.
pub fn redis_url() -> String {
    env_or("LE_REDIS_URL", "redis://127.0.0.1:6379/")
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
