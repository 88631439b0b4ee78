//! A real Prometheus (Debian's `prometheus`) scraping a walletd that served traffic with everything on
//! (PostgreSQL, Redis, Kafka, a chain with deposits and a withdrawal): every rule of
//! `deploy/prometheus/walletd-rules.yml` loads and evaluates without error, every recording rule and
//! every panel of `deploy/grafana/walletd.json` returns data, and every alert's condition, taken as a
//! boolean (`> bool`), covers at least one series. This is what catches a panel or an alert that names
//! a metric or a label walletd does not export. The parked-event alert is also seen firing on the first
//! event parked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use serde_json::{Value, json};
use testkit::anvil::{Anvil, chains_file};
use testkit::{Backend, TempDir, TestApp, wait_until};

const DEADLINE: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Prometheus on a private port, scraping `targets` (host:port) every second as job `walletd` and
/// evaluating `rules` every second, with its data in a directory of its own.
struct Prometheus {
    child: Child,
    base: String,
    http: reqwest::Client,
    _dir: TempDir,
}

impl Prometheus {
    fn start(targets: &[String], rules: &Path) -> Self {
        let dir = TempDir::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules],
            "scrape_configs": [{"job_name": "walletd", "static_configs": [{"targets": targets}]}],
        });
        // JSON is YAML.
        let config_file = dir.0.join("prometheus.yml");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let bin = std::env::var("WALLETD_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}): scripts/test.sh installs Debian's prometheus package")
            });
        testkit::wait_for_port(port, Duration::from_secs(30), "prometheus");
        Self { child, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new(), _dir: dir }
    }

    /// Until Prometheus answers queries (it listens before its storage is open, answering 503).
    async fn ready(&self) {
        let ready = wait_until(Duration::from_secs(30), || async {
            let res = self.http.get(format!("{}/-/ready", self.base)).send().await;
            res.is_ok_and(|r| r.status().is_success())
        })
        .await;
        assert!(ready, "Prometheus did not become ready");
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), query).unwrap();
        let body: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The instant vector `expr` evaluates to now.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await;
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"].as_array().unwrap().clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Metrics the test's single walletd cannot export, with the reason; an alert's `or` branch that names
/// one is left out (and printed).
const ABSENT_HERE: &[(&str, &str)] = &[(
    "rpc_client_breaker_open",
    "exported only by a process that calls another service over gRPC (services run apart, tests/split.rs)",
)];

/// Splits `expr` at its top-level `or`s (outside parentheses, braces and strings).
fn or_operands(expr: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let (mut depth, mut quote) = (0i32, None::<char>);
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some(q), _) if c == q && chars.get(i.wrapping_sub(1)) != Some(&'\\') => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '(' | '{' | '[') => depth += 1,
            (None, ')' | '}' | ']') => depth -= 1,
            (None, 'o') if depth == 0 => {
                let word = chars.get(i..i + 2) == Some(&['o', 'r'][..]);
                let before = i == 0 || chars[i - 1].is_whitespace() || chars[i - 1] == ')';
                let after = chars.get(i + 2).is_none_or(|n| n.is_whitespace() || *n == '(');
                if word && before && after {
                    parts.push(String::new());
                    i += 2;
                    continue;
                }
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(c);
        i += 1;
    }
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

/// An alert's condition as a boolean for every series it covers: each comparison outside label
/// matchers and strings gets `bool` (unless it has it), so `x > 1000` answers 0 or 1 for every `x`
/// instead of only the series over the threshold.
fn as_boolean(expr: &str) -> String {
    let mut out = String::new();
    let (mut braces, mut quote) = (0, None::<char>);
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        out.push(c);
        match (quote, c) {
            (Some(q), _) if c == q && chars.get(i.wrapping_sub(1)) != Some(&'\\') => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{') => braces += 1,
            (None, '}') => braces -= 1,
            (None, '>' | '<' | '=' | '!') if braces == 0 => {
                let two = chars.get(i + 1) == Some(&'=');
                if two {
                    out.push('=');
                    i += 1;
                }
                let rest: String = chars[i + 1..].iter().collect();
                if (two || c == '>' || c == '<') && !rest.trim_start().starts_with("bool") {
                    out.push_str(" bool");
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[test]
fn as_boolean_adds_bool_to_comparisons_only() {
    assert_eq!(as_boolean("max(x) > 1000"), "max(x) > bool 1000");
    assert_eq!(
        as_boolean(r#"a{state="idle"} == 0 and b{status=~"5..",x!="y"} >= 1"#),
        r#"a{state="idle"} == bool 0 and b{status=~"5..",x!="y"} >= bool 1"#
    );
    assert_eq!(as_boolean(r#"up{job="walletd"} != 1"#), r#"up{job="walletd"} != bool 1"#);
    assert_eq!(as_boolean("x > bool 1"), "x > bool 1", "bool is not added twice");
    assert_eq!(as_boolean("x{a='>'} < 2"), "x{a='>'} < bool 2");
}

#[test]
fn or_operands_splits_at_top_level_only() {
    assert_eq!(or_operands("a > 1 or max by (g) (b) > 2"), ["a > 1", "max by (g) (b) > 2"]);
    assert_eq!(or_operands("(a or b) > 1"), ["(a or b) > 1"]);
    assert_eq!(or_operands(r#"x{l="a or b"} or order_total"#), [r#"x{l="a or b"}"#, "order_total"]);
    assert_eq!(or_operands("(sum(rate(x[5m])) or vector(0)) / y"), ["(sum(rate(x[5m])) or vector(0)) / y"]);
}

/// The expressions of the Grafana dashboard's panels, with the panel's title.
fn panel_expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("deploy/grafana/walletd.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((panel["title"].as_str().unwrap().to_string(), target["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// What does not yet hold, one line each; empty when every rule and panel answers.
async fn missing(prometheus: &Prometheus, panels: &[(String, String)]) -> Vec<String> {
    let mut missing = Vec::new();
    let groups = prometheus.api("/api/v1/rules", &[]).await;
    for group in groups["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let (name, expr) = (rule["name"].as_str().unwrap(), rule["query"].as_str().unwrap());
            if rule["health"] != "ok" {
                missing.push(format!("rule {name}: health {} ({})", rule["health"], rule["lastError"]));
                continue;
            }
            if rule["type"] == "recording" {
                if prometheus.query(name).await.is_empty() {
                    missing.push(format!("recording rule {name}: no data"));
                }
                continue;
            }
            // Each branch of an alert's `or` on its own: one branch with data must not hide
            // another that names something walletd does not export.
            for branch in or_operands(expr) {
                if ABSENT_HERE.iter().any(|(metric, _)| branch.contains(metric)) {
                    continue;
                }
                let query = as_boolean(&branch);
                if prometheus.query(&query).await.is_empty() {
                    missing.push(format!("alert {name}: no data for {query}"));
                }
            }
        }
    }
    for (title, expr) in panels {
        if prometheus.query(expr).await.is_empty() {
            missing.push(format!("panel \"{title}\": no data for {expr}"));
        }
    }
    missing
}

fn usdc(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000u64)
}

#[tokio::test]
async fn every_rule_and_panel_returns_data_from_a_walletd_that_served_traffic() {
    // A chain with a token, and a hot wallet holding gas and tokens.
    let anvil = Anvil::start().await;
    let funder = anvil.funded_key(1_000).await;
    let token = funder.deploy_token(6).await;
    funder.mint(token, funder.address(), usdc(1_000_000)).await;
    let hot = alloy::signers::local::PrivateKeySigner::random();
    anvil.rpc("anvil_setBalance", json!([hot.address(), "0x8ac7230489e80000"])).await.unwrap();
    funder.mint(token, hot.address(), usdc(1_000)).await;
    let dir = TempDir::new();
    let chains = chains_file(&dir.0, &anvil, token, 1, "");
    let redis = testkit::redis::PrivateRedis::start();
    // A broker of its own: the poison event below must not reach other tests' consumer groups.
    let broker = testkit::kafka::PrivateKafka::start();
    let kafka = testkit::kafka::settings(&broker.brokers());
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        s.kafka = Some(kafka);
        s.redis_url = Some(redis.url());
        s.chains_file = Some(chains);
        // The primary stands for its own read replica (one server has none): the replica's series
        // exist, at no lag.
        s.read_database_url = s.database_url.clone();
        s.chain_signer_key = Some(settings::Redacted(alloy::primitives::hex::encode(hot.to_bytes())));
        // The poison event below is retried for a few seconds, so Prometheus sees its counter at 0
        // before the parking makes it 1.
        s.event_max_attempts = 3;
        s.event_retry_backoff = Duration::from_secs(1);
    })
    .await;
    let metrics_target = app.metrics_base.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&[metrics_target], &repo_root().join("deploy/prometheus/walletd-rules.yml"));
    prometheus.ready().await;

    // Traffic: users funded by an admin, a supply, an order claimed and processed, reads (cache
    // misses, then hits), a refusal, a transfer, a chain deposit credited and a withdrawal paid out.
    let admin = app.admin_token().await;
    let (buyer, shopper) = (app.new_user().await, app.new_user().await);
    app.create_supply(&shopper.access, "USDC", "100").await;
    let order_id = testkit::process::place_order(&app.client, &app.base, &buyer.access, "2").await;
    let res = app.post(&format!("/v1/orders/{order_id}/claim"), &shopper.access).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert!(wait_until(DEADLINE, || app.processing_done(&admin)).await, "the claim was processed");
    for _ in 0..3 {
        assert_eq!(app.get(&format!("/v1/orders/{order_id}"), &buyer.access).send().await.unwrap().status(), 200);
    }
    let res = app.get(&format!("/v1/orders/{}", uuid::Uuid::now_v7()), &buyer.access).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let transfer = json!({"to_user_id": shopper.user_id, "currency": "USDC", "amount": "1"});
    assert_eq!(app.post("/v1/wallet/transfers", &buyer.access).json(&transfer).send().await.unwrap().status(), 201);

    let address: Value =
        app.get("/v1/wallet/deposit-addresses/local", &buyer.access).send().await.unwrap().json().await.unwrap();
    let address: Address = address["address"].as_str().unwrap().parse().unwrap();
    funder.send_tokens(token, address, usdc(5)).await;
    anvil.mine(2).await;
    let to = alloy::signers::local::PrivateKeySigner::random().address();
    let withdrawal = json!({"chain": "local", "currency": "USDC", "to_address": to, "amount": "1"});
    let res = app.post("/v1/wallet/withdrawals", &buyer.access).json(&withdrawal).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let credited =
        wait_until(DEADLINE, || async { app.metric("chain_deposits_credited_total", &[]).await >= 1.0 }).await;
    assert!(credited, "the deposit was credited");

    // A poison event: an `order.claimed` whose data is not a claim. The claim processor parks it,
    // once Prometheus has seen its parked counter at 0 (the real claim's event made it exist).
    let parked = format!(r#"events_parked_total{{group="{}",type="order.claimed"}} == 0"#, claim::processor::GROUP);
    let zero_seen = wait_until(DEADLINE, || async { !prometheus.query(&parked).await.is_empty() }).await;
    assert!(zero_seen, "Prometheus never saw the claim processor's parked counter at 0");
    let db = storage::Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    let poison = events::outbox::NewEvent {
        event_type: "order.claimed",
        version: 1,
        topic: claim::service::ORDER_TOPIC,
        aggregate_id: uuid::Uuid::now_v7(),
        data: json!({"not": "a claim"}),
    };
    let storage::Database::Postgres(pool) = &db else { panic!("PostgreSQL") };
    let mut conn = pool.get().await.unwrap();
    let tx = conn.transaction().await.unwrap();
    events::outbox::insert_pg(
        &tx,
        &events::outbox::EventContext { region: "test".into(), ..Default::default() },
        &poison,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Every rule and panel answers (rates need two scrapes after the traffic).
    let panels = panel_expressions();
    let last = std::sync::Mutex::new(Vec::new());
    let answered = wait_until(DEADLINE, || async {
        let now = missing(&prometheus, &panels).await;
        let done = now.is_empty();
        *last.lock().unwrap() = now;
        done
    })
    .await;
    assert!(answered, "after {DEADLINE:?}, still without data:\n{}", last.lock().unwrap().join("\n"));
    let rules = prometheus.api("/api/v1/rules", &[]).await;
    let count = rules["groups"].as_array().unwrap().iter().map(|g| g["rules"].as_array().unwrap().len()).sum::<usize>();
    eprintln!("prometheus: {count} rules and {} panel expressions answered", panels.len());
    for (metric, why) in ABSENT_HERE {
        eprintln!("prometheus: alert branches naming {metric} not checked here: {why}");
    }

    // The first parked event of its kind fires the alert.
    let fired = wait_until(DEADLINE, || async {
        let alerts = prometheus.api("/api/v1/alerts", &[]).await;
        alerts["alerts"].as_array().unwrap().iter().any(|a| {
            a["labels"]["alertname"] == "WalletdEventsParked"
                && a["labels"]["group"] == claim::processor::GROUP
                && a["labels"]["type"] == "order.claimed"
                && a["state"] == "firing"
        })
    })
    .await;
    assert!(
        fired,
        "WalletdEventsParked does not fire: alerts {}, the claim processor's parked counter over 5 minutes {}, rules {}",
        prometheus.api("/api/v1/alerts", &[]).await,
        prometheus.api("/api/v1/query", &[("query", "events_parked_total{group=\"claim-processor\"}[5m]")]).await,
        prometheus.api("/api/v1/rules", &[("type", "alert")]).await
    );
}
