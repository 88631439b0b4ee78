//! PostgreSQL for tests: a fresh database per test on the suite's server, and private servers
//! that a test may stop and start.

use std::path::PathBuf;
use std::process::Command;

use uuid::Uuid;

use crate::TempDir;

/// The suite's server, from `scripts/test.sh`.
pub fn server_url() -> String {
    std::env::var("WALLETD_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("WALLETD_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL")
    })
}

/// Creates an empty database on the server at `admin_url` and returns its URL.
pub async fn fresh_database(admin_url: &str) -> String {
    let (client, conn) =
        tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await.expect("connect to test PostgreSQL");
    let task = tokio::spawn(conn);
    let name = format!("walletd_test_{}", Uuid::new_v4().simple());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
    drop(client);
    let _ = task.await;
    let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin_url);
    format!("{base}/{name}")
}

/// Runs `statements` on the database at `url` in a connection of their own.
pub async fn batch(url: &str, statements: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let result = client.batch_execute(statements).await;
    drop(client);
    let _ = task.await;
    result
}

/// A PostgreSQL server of a test's own, which the test may stop and start.
pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    _dir: TempDir,
}

fn as_postgres(cmd: &str) -> Command {
    // PostgreSQL refuses to run as root.
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", cmd]);
        c
    } else {
        Command::new(cmd)
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// A directory PostgreSQL may write to, its data directory's path, and a free port.
fn new_server_dir() -> (TempDir, PathBuf, u16) {
    let dir = TempDir::new();
    if is_root() {
        let ok = Command::new("chown").args(["-R", "postgres"]).arg(&dir.0).status().unwrap().success();
        assert!(ok, "chown");
    }
    let data = dir.0.join("pg");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    (dir, data, port)
}

impl PrivatePostgres {
    /// initdb + start on a free port.
    pub fn start() -> Self {
        let bin = PathBuf::from(
            std::env::var("WALLETD_TEST_PG_BIN")
                .unwrap_or_else(|_| panic!("WALLETD_TEST_PG_BIN is not set: run the suite with scripts/test.sh")),
        );
        let (dir, data, port) = new_server_dir();
        let out = as_postgres(bin.join("initdb").to_str().unwrap())
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let pg = Self { bin, data, port, _dir: dir };
        pg.start_again();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A streaming replica of this server (`pg_basebackup -R`), started, on a port of its own.
    pub fn replica(&self) -> Self {
        let (dir, data, port) = new_server_dir();
        let out = as_postgres(self.bin.join("pg_basebackup").to_str().unwrap())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_basebackup: {}", String::from_utf8_lossy(&out.stderr));
        let pg = Self { bin: self.bin.clone(), data, port, _dir: dir };
        pg.start_again();
        pg
    }

    fn pg_ctl(&self, args: &[&str]) {
        let sock = self._dir.0.display().to_string();
        let opts = format!("-p {} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", self.port);
        let log = self._dir.0.join("pg.log");
        let out = as_postgres(self.bin.join("pg_ctl").to_str().unwrap())
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts, "-w", "-t", "60"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }

    pub fn start_again(&self) {
        self.pg_ctl(&["start"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres(self.bin.join("pg_ctl").to_str().unwrap_or("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
