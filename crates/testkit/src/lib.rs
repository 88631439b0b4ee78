//! Test harness: spawns walletd with the same `build` as `main`, on a fresh SQLite file or a fresh
//! PostgreSQL database per test, and signs in with freshly generated Ethereum keys.
//!
//! PostgreSQL comes from `scripts/test.sh` (`WALLETD_TEST_POSTGRES_URL`); a PostgreSQL test run
//! without it fails with a message saying so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test harness: failing loudly is the point")]

pub mod anvil;
pub mod kafka;
pub mod otlp;
pub mod pg;
pub mod process;
pub mod redis;
pub mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use identity::eth::{LocalWallet, to_checksum};
use serde_json::{Value, json};
use settings::Settings;
use uuid::Uuid;

pub use reqwest;

/// Storage backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("walletd-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Logs only with `TEST_LOG=1`.
pub fn init_test_logging() {
    if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
        walletd::telemetry::init_logging(settings::LogFormat::Text, None);
    }
}

/// The admin of every test server (a key made for this test process; nobody signs with it).
pub fn admin_address() -> &'static str {
    static ADDRESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ADDRESS.get_or_init(|| to_checksum(&LocalWallet::random().unwrap().address()))
}

/// The shared test signing key: generated once per machine, atomically, so tests do not each
/// pay for an RSA key generation.
pub fn shared_jwt_key() -> PathBuf {
    let path = std::env::temp_dir().join("walletd-test-jwt-signing-key.pem");
    if !path.exists() {
        let tmp = std::env::temp_dir().join(format!("walletd-test-jwt-{}.pem", Uuid::new_v4().simple()));
        identity::TokenKeys::load_or_generate(&tmp, "walletd", Duration::from_secs(60), base::clock::system()).unwrap();
        let _ = std::fs::rename(&tmp, &path);
    }
    path
}

/// A database URL for a fresh, empty database on `backend`.
pub async fn fresh_database_url(backend: Backend, dir: &TempDir) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.0.join("walletd.db").display()),
        Backend::Postgres => pg::fresh_database(&pg::server_url()).await,
    }
}

/// A running walletd for one test.
pub struct TestApp {
    pub base: String,
    /// `http://127.0.0.1:port` of the gRPC API.
    pub grpc_base: String,
    pub metrics_base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub backend: Backend,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    dir: Option<TempDir>,
    /// Minted once: every funded user needs it.
    admin: tokio::sync::OnceCell<String>,
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub user_id: Uuid,
    pub address: String,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns with settings adjusted by `tweak` (the database URL is already set).
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_at(backend, base::clock::system(), tweak).await
    }

    /// Spawns with the clock that sign-in and tokens read: a test of expiry moves a
    /// [`base::clock::ManualClock`] instead of waiting.
    pub async fn spawn_at(
        backend: Backend,
        clock: std::sync::Arc<dyn base::Clock>,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        init_test_logging();
        let dir = TempDir::new();
        let mut settings = Settings {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.0.clone(),
            jwt_private_key_file: Some(shared_jwt_key()),
            database_url: Some(fresh_database_url(backend, &dir).await),
            // Tests sign in many users from one address; the rate-limit tests turn limits on.
            rate_limit: web::ratelimit::Rate { per_minute: 0, burst: 1 },
            signin_rate_limit: web::ratelimit::Rate { per_minute: 0, burst: 1 },
            admin_addresses: vec![admin_address().to_string()],
            ..Settings::default()
        };
        tweak(&mut settings);
        Self::spawn_settings(backend, settings, dir, clock).await
    }

    async fn spawn_settings(
        backend: Backend,
        settings: Settings,
        dir: TempDir,
        clock: std::sync::Arc<dyn base::Clock>,
    ) -> Self {
        let server =
            walletd::build_with_clock(settings.clone(), &walletd::all_services(), clock).await.expect("walletd builds");
        let base = format!("http://{}", server.http_addr);
        let metrics_base = format!("http://{}", server.metrics_addr);
        let grpc_base = format!("http://{}", server.grpc_addr);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Self {
            base,
            grpc_base,
            metrics_base,
            client,
            settings,
            backend,
            shutdown: Some(tx),
            task: Some(task),
            dir: Some(dir),
            admin: tokio::sync::OnceCell::new(),
        }
    }

    /// Shuts the server down as SIGTERM would, waits for it, and hands back its directory so a
    /// SQLite database outlives it (for a restart on the same data).
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        self.dir.take().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Asks for a nonce for `wallet` and returns the message to sign.
    pub async fn nonce_message(&self, wallet: &LocalWallet) -> String {
        let res = self
            .client
            .post(self.url("/v1/auth/nonce"))
            .json(&json!({"address": to_checksum(&wallet.address())}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["message"].as_str().unwrap().to_string()
    }

    /// Posts a login; returns the raw response.
    pub async fn login_raw(&self, message: &str, signature: &str) -> reqwest::Response {
        self.client
            .post(self.url("/v1/auth/login"))
            .json(&json!({"message": message, "signature": signature}))
            .send()
            .await
            .unwrap()
    }

    /// Signs in with `wallet` through the real nonce + signature flow.
    pub async fn login(&self, wallet: &LocalWallet) -> Session {
        let message = self.nonce_message(wallet).await;
        let res = self.login_raw(&message, &wallet.sign_message(&message).unwrap()).await;
        assert_eq!(res.status(), 200, "login failed: {}", res.text().await.unwrap_or_default());
        session_from(res.json().await.unwrap())
    }

    /// A new user with a fresh key, funded (1,000,000 USDC and 1,000 ETH) so that their orders are
    /// (DESIGN flow 2: no funds, no order).
    pub async fn new_user(&self) -> Session {
        let user = self.new_unfunded_user().await;
        let admin = self.admin_token().await;
        for (currency, amount) in [("USDC", "1000000"), ("ETH", "1000")] {
            process::fund_at(&self.client, &self.base, &admin, &user.user_id.to_string(), currency, amount).await;
        }
        user
    }

    /// A new user with a fresh key and nothing in the wallet.
    pub async fn new_unfunded_user(&self) -> Session {
        self.login(&LocalWallet::random().unwrap()).await
    }

    /// An admin: a token minted with the server's key, as `walletd token --role admin` does, for
    /// [`admin_address`], which every test server lists as an admin.
    pub async fn admin_token(&self) -> String {
        self.admin.get_or_init(|| self.mint_admin_token()).await.clone()
    }

    async fn mint_admin_token(&self) -> String {
        let address = admin_address();
        let db = storage::Database::connect(&self.settings.database_url(), &self.settings.db_options()).await.unwrap();
        let user = identity::IdentityStore::new(db, base::clock::system()).upsert_user(address).await.unwrap();
        let keys = identity::TokenKeys::load_or_generate(
            &self.settings.jwt_key_path(),
            &self.settings.jwt_issuer,
            self.settings.access_token_ttl,
            base::clock::system(),
        )
        .unwrap();
        keys.issue(user.id, address, &[web::Role::User, web::Role::Admin], Duration::from_secs(600)).unwrap()
    }

    /// See [`processing_done`].
    pub async fn processing_done(&self, admin: &str) -> bool {
        processing_done(&self.client, &self.base, admin).await
    }

    /// See [`assert_ledger_verifies`].
    pub async fn assert_ledger_verifies(&self, admin: &str) -> Value {
        assert_ledger_verifies(&self.client, &self.base, admin).await
    }

    /// See [`metric_at`].
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        metric_at(&self.metrics_base, name, labels).await
    }

    pub fn get(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(token)
    }

    pub fn post(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(token)
    }

    pub fn patch(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client.patch(self.url(path)).bearer_auth(token)
    }

    pub fn delete(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path)).bearer_auth(token)
    }

    /// Creates a supply and returns its JSON.
    pub async fn create_supply(&self, token: &str, currency: &str, amount: &str) -> Value {
        let res = self
            .post("/v1/supplies", token)
            .json(&json!({"currency": currency, "amount": amount}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "create supply: {}", res.text().await.unwrap_or_default());
        res.json().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Reads a token response.
pub fn session_from(body: Value) -> Session {
    Session {
        access: body["access_token"].as_str().unwrap().to_string(),
        refresh: body["refresh_token"].as_str().unwrap().to_string(),
        user_id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
        address: body["user"]["address"].as_str().unwrap().to_string(),
    }
}

/// Polls `check` until it returns true or `deadline` passes; returns whether it did.
pub async fn wait_until<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that `GET /v1/admin/wallet/verify` finds the ledger consistent; returns its answer.
pub async fn assert_ledger_verifies(http: &reqwest::Client, base: &str, admin: &str) -> Value {
    let v: Value = http
        .get(format!("{base}/v1/admin/wallet/verify"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v
}

/// Whether claim processing is done, whatever the transport: no claim is pending and no order is
/// `claimed` (an order is claimed only between a claim's first and last steps, or its undoing).
pub async fn processing_done(http: &reqwest::Client, base: &str, admin: &str) -> bool {
    let empty = |path: &'static str| async move {
        let page: Value =
            http.get(format!("{base}{path}")).bearer_auth(admin).send().await.unwrap().json().await.unwrap();
        page["items"].as_array().is_some_and(Vec::is_empty)
    };
    empty("/v1/claims?status=pending&limit=1").await && empty("/v1/orders?status=claimed&limit=1").await
}

/// Waits (bounded) until a server listens on a loopback `port`; panics naming `what` otherwise.
pub fn wait_for_port(port: u16, deadline: Duration, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < deadline, "{what} did not start listening on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sum of a Prometheus metric's samples (exact name) that carry every one of `labels`
/// (`group="x"`), read from the metrics listener at `metrics_base` (`http://host:port`).
pub async fn metric_at(metrics_base: &str, name: &str, labels: &[&str]) -> f64 {
    let text = reqwest::get(format!("{metrics_base}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Asserts a problem+json answer with `status` and `code`; returns the body.
pub async fn assert_problem(res: reqwest::Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "status; body: {body}");
    assert_eq!(ct, "application/problem+json", "content type; body: {body}");
    assert_eq!(body["code"], code, "code; body: {body}");
    assert_eq!(body["status"], status, "status field; body: {body}");
    body
}

/// The field names a 422 lists.
pub fn problem_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Makes every update of the claims of `order` fail with "refused by test trigger", as a broken
/// constraint would: an error of the event's (its processing is parked), not an unreachable database
/// (that would wait). `refuse = false` lifts it again, so an operator's redrive can succeed.
pub async fn refuse_claim_updates(db: &storage::Database, order: &str, refuse: bool) {
    match db {
        storage::Database::Postgres(pool) => {
            let sql = if refuse {
                format!(
                    "CREATE FUNCTION refuse_claim() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by test trigger'; END $$;
                     CREATE TRIGGER refuse BEFORE UPDATE ON claims FOR EACH ROW WHEN (OLD.order_id = '{order}') EXECUTE FUNCTION refuse_claim();"
                )
            } else {
                "DROP TRIGGER refuse ON claims; DROP FUNCTION refuse_claim();".to_string()
            };
            pool.get().await.unwrap().batch_execute(&sql).await.unwrap();
        }
        storage::Database::Sqlite(pool) => {
            let sql = if refuse {
                format!(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON claims FOR EACH ROW WHEN OLD.order_id = '{order}'
                     BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END;"
                )
            } else {
                "DROP TRIGGER refuse".to_string()
            };
            pool.call(move |c| c.execute_batch(&sql).map_err(anyhow::Error::from)).await.unwrap();
        }
    }
}
