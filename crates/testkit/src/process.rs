//! The real `walletd` binary as a child process, for tests that kill or restart it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use identity::eth::{LocalWallet, to_checksum};

/// Runs `cmd` and waits (bounded) for it to exit by itself: its exit status and everything it wrote
/// to stderr, or `None` (and the process killed) when it is still running at the deadline. It waits
/// on the end of stderr, which the process closes when it exits, so nothing polls.
pub fn run_to_exit(mut cmd: Command, deadline: Duration) -> Option<(std::process::ExitStatus, String)> {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        let _ = tx.send(text);
    });
    match rx.recv_timeout(deadline) {
        Ok(text) => Some((child.wait().unwrap(), text)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

/// A running `walletd serve`.
pub struct WalletdProcess {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The metrics listener, `http://127.0.0.1:PORT`.
    pub metrics: String,
    /// The gRPC listener, `http://127.0.0.1:PORT`.
    pub grpc: String,
}

/// Spawns `cmd` with its JSON log lines (stderr) coming through the returned channel; a line that is
/// not JSON comes as a string value. The channel ends when the process closes stderr. Lines wait
/// up to a minute each, then the iteration ends.
pub fn spawn_logged(mut cmd: Command) -> (Child, LogLines) {
    let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v = serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line));
            // Keep draining after the receiver is gone: a closed pipe would fail the child's logging.
            let _ = tx.send(v);
        }
    });
    (child, LogLines(rx))
}

/// A child's log lines as they come.
pub struct LogLines(std::sync::mpsc::Receiver<Value>);

impl LogLines {
    /// The lines, each waited for up to a minute.
    pub fn iter(&self) -> impl Iterator<Item = Value> + '_ {
        std::iter::from_fn(|| self.0.recv_timeout(Duration::from_secs(60)).ok())
    }
}

/// A `walletd` command in `dir` with a clean environment, the test admin listed, plus `envs`.
pub fn command(bin: &str, dir: &Path, envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin);
    c.current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    // Every test server lists the test admin (`envs` may say otherwise).
    c.env("WALLETD_ADMIN_ADDRESSES", crate::admin_address());
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

impl WalletdProcess {
    /// Starts `walletd serve` on ephemeral ports and waits for its ready line.
    pub fn start(bin: &str, dir: &Path, envs: &[(&str, &str)]) -> Self {
        Self::start_with(bin, dir, envs, &[])
    }

    /// [`Self::start`] with more arguments to `serve` (`--services ...`); `envs` may fix the ports.
    pub fn start_with(bin: &str, dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Self {
        let ephemeral = [
            ("WALLETD_HTTP_ADDR", "127.0.0.1:0"),
            ("WALLETD_METRICS_ADDR", "127.0.0.1:0"),
            ("WALLETD_GRPC_ADDR", "127.0.0.1:0"),
            ("WALLETD_LOG_FORMAT", "json"),
        ];
        let mut all: Vec<(&str, &str)> =
            ephemeral.iter().filter(|(k, _)| !envs.iter().any(|(e, _)| e == k)).copied().collect();
        all.extend_from_slice(envs);
        let mut cmd = command(bin, dir, &all);
        cmd.arg("serve").args(args);
        let (child, lines) = spawn_logged(cmd);
        let ready = lines.iter().find(|v| v["message"] == "walletd ready").expect("walletd did not log its ready line");
        let addr = |field: &str| format!("http://{}", ready[field].as_str().unwrap_or_default());
        Self { child, base: addr("http.addr"), metrics: addr("metrics.addr"), grpc: addr("grpc.addr") }
    }

    /// See [`crate::metric_at`].
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        crate::metric_at(&self.metrics, name, labels).await
    }

    /// `kill -9`: no shutdown, no draining.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait (bounded) for the exit.
    pub fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for WalletdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mints an admin token with `walletd token` in `dir` (the server's signing key is there).
pub fn admin_token(bin: &str, dir: &Path, envs: &[(&str, &str)]) -> String {
    let out = command(bin, dir, envs)
        .args(["token", "--role", "admin", "--address", crate::admin_address()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Signs in to a server at `base` with a fresh key; returns (access token, user id).
pub async fn sign_in(http: &reqwest::Client, base: &str) -> (String, String) {
    let wallet = LocalWallet::random().unwrap();
    let nonce: Value = http
        .post(format!("{base}/v1/auth/nonce"))
        .json(&json!({"address": to_checksum(&wallet.address())}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let message = nonce["message"].as_str().unwrap();
    let login: Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"message": message, "signature": wallet.sign_message(message).unwrap()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (login["access_token"].as_str().unwrap().to_string(), login["user"]["id"].as_str().unwrap().to_string())
}

/// Signs in a new shopper at `base` with a USDC supply of `amount`; returns (token, supply id).
pub async fn shopper(http: &reqwest::Client, base: &str, amount: &str) -> (String, String) {
    let (token, _) = sign_in(http, base).await;
    let res = http
        .post(format!("{base}/v1/supplies"))
        .bearer_auth(&token)
        .json(&json!({"currency": "USDC", "amount": amount}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    (token, id)
}

/// Credits `user_id` with `amount` of `currency` through `POST /v1/admin/deposits` as `admin`.
pub async fn fund_at(http: &reqwest::Client, base: &str, admin: &str, user_id: &str, currency: &str, amount: &str) {
    let reference = format!("test-funds-{}", uuid::Uuid::now_v7());
    let body = json!({"user_id": user_id, "currency": currency, "amount": amount, "reference": reference});
    let res = http.post(format!("{base}/v1/admin/deposits")).bearer_auth(admin).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 201, "deposit: {}", res.text().await.unwrap_or_default());
}

/// Places a one-item USDC order at `price`; returns its id.
pub async fn place_order(http: &reqwest::Client, base: &str, buyer: &str, price: &str) -> String {
    let body =
        json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": price, "quantity": 1}]});
    let res = http.post(format!("{base}/v1/orders")).bearer_auth(buyer).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Two `walletd serve` processes on the same settings, with an admin token, a buyer and shoppers
/// (each with a USDC supply of `amount`), for tests of work shared between processes.
pub struct Pair {
    pub one: WalletdProcess,
    pub two: WalletdProcess,
    pub http: reqwest::Client,
    pub admin: String,
    pub buyer: String,
    /// (token, supply id)
    pub shoppers: Vec<(String, String)>,
}

impl Pair {
    pub async fn start(bin: &str, dir: &Path, envs: &[(&str, &str)], shoppers: usize, amount: &str) -> Self {
        let one = WalletdProcess::start(bin, dir, envs);
        let two = WalletdProcess::start(bin, dir, envs);
        let admin = admin_token(bin, dir, envs);
        let http = reqwest::Client::new();
        let (buyer, buyer_id) = sign_in(&http, &one.base).await;
        // The buyer's orders are funded: plenty of USDC for any test.
        fund_at(&http, &one.base, &admin, &buyer_id, "USDC", "1000000").await;
        let mut list = Vec::new();
        for _ in 0..shoppers {
            list.push(shopper(&http, &two.base, amount).await);
        }
        Self { one, two, http, admin, buyer, shoppers: list }
    }
}
