//! Redis for tests: the suite's server (`WALLETD_TEST_REDIS_URL`) and private servers a test may
//! stop and start again on the same port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The suite's Redis, from `scripts/test.sh`; `db` picks a logical database (0-15).
pub fn server_url(db: u8) -> String {
    let base = std::env::var("WALLETD_TEST_REDIS_URL")
        .unwrap_or_else(|_| panic!("WALLETD_TEST_REDIS_URL is not set: run the suite with scripts/test.sh"));
    format!("{}/{db}", base.trim_end_matches('/'))
}

/// A `redis-server` of a test's own.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Self { port, child: None };
        r.start_again();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        crate::wait_for_port(self.port, Duration::from_secs(10), "redis-server");
    }

    /// Kills the server (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
