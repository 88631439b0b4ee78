//! `kill -9` of walletd while claims are being processed, then a restart: every claim is
//! processed exactly once, none stays stuck, no reservation is doubled. On both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rstest::rstest;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use testkit::process::{Pair, WalletdProcess, admin_token, fund_at, place_order, shopper, sign_in};
use testkit::workload::{Actor, Workload, mismatched_holds, unreflected};
use testkit::{Backend, TempDir, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_walletd");

async fn fetch(http: &reqwest::Client, base: &str, token: &str, path: String) -> Value {
    http.get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

fn dec(v: &Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

#[rstest]
#[case::sqlite(Backend::Sqlite, false)]
#[case::postgres(Backend::Postgres, false)]
#[case::postgres_kafka(Backend::Postgres, true)]
#[tokio::test]
async fn kill_9_while_processing_then_restart(#[case] backend: Backend, #[case] kafka: bool) {
    let dir = TempDir::new();
    let url = testkit::fresh_database_url(backend, &dir).await;
    let (brokers, prefix) = (testkit::kafka::brokers(), format!("kill-{}", uuid::Uuid::now_v7().simple()));
    let mut envs = vec![("WALLETD_DATABASE_URL", url.as_str())];
    if kafka {
        envs.push(("WALLETD_KAFKA_BROKERS", brokers.as_str()));
        envs.push(("WALLETD_KAFKA_GROUP_PREFIX", prefix.as_str()));
    }
    let mut first = WalletdProcess::start(BIN, &dir.0, &envs);
    let base = first.base.clone();
    let http = reqwest::Client::new();
    let admin = admin_token(BIN, &dir.0, &envs);

    let (buyer, buyer_id) = sign_in(&http, &base).await;
    fund_at(&http, &base, &admin, &buyer_id, "USDC", "1000000").await;
    let mut shoppers = Vec::new();
    for _ in 0..10 {
        shoppers.push(shopper(&http, &base, "1000").await);
    }
    let mut orders = Vec::new();
    for i in 0..60 {
        orders.push(place_order(&http, &base, &buyer, &format!("{}.25", i + 1)).await);
    }

    // Claim everything at once and kill -9 as soon as a third of the answers are in: claims are
    // being made and processed at that moment.
    let mut inflight: FuturesUnordered<_> = orders
        .iter()
        .enumerate()
        .map(|(i, oid)| {
            let req = http.post(format!("{base}/v1/orders/{oid}/claim")).bearer_auth(&shoppers[i % 10].0).send();
            async move { req.await.map(|r| r.status().as_u16()) }
        })
        .collect();
    let mut answered = 0;
    while let Some(res) = inflight.next().await {
        if res.is_ok_and(|s| s == 201) {
            answered += 1;
        }
        if answered == 20 {
            first.kill9();
            break;
        }
    }
    while inflight.next().await.is_some() {}
    drop(first);

    // Look before processing resumes: the kill must have left work behind, or it tested nothing.
    let mut look = WalletdProcess::start(BIN, &dir.0, &[envs[0], ("WALLETD_RUN_CONSUMERS", "false")]);
    let pending = fetch(&http, &look.base, &admin, "/v1/claims?status=pending&limit=500".into()).await;
    let left_pending = pending["items"].as_array().unwrap().len();
    assert!(left_pending > 0, "every claim was processed before the kill; the test proves nothing");
    assert!(look.terminate(Duration::from_secs(20)).is_some_and(|s| s.success()));

    let second = WalletdProcess::start(BIN, &dir.0, &envs);
    let base = second.base.clone();
    let get = |path: String| fetch(&http, &base, &admin, path);
    let settled = wait_until(Duration::from_secs(60), || testkit::processing_done(&http, &base, &admin)).await;
    assert!(settled, "claims stuck in pending after the restart");
    let claims = get("/v1/claims?limit=500".into()).await;
    let claims = claims["items"].as_array().unwrap();
    assert!(claims.len() >= 20, "{} claims", claims.len());
    assert!(claims.iter().all(|c| c["status"] == "processed"), "{claims:?}");
    assert_eq!(get("/v1/admin/parked-events".into()).await["items"], json!([]));

    let mut types = Vec::new();
    let mut after = "0".to_string();
    loop {
        let page = get(format!("/v1/admin/events?after={after}&limit=500")).await;
        types.extend(page["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => after = c.to_string(),
            None => break,
        }
    }
    let count = |t: &str| types.iter().filter(|x| *x == t).count();
    assert_eq!(count("claim.processed"), claims.len(), "each claim processed exactly once");
    assert_eq!(count("order.completed"), claims.len());

    let mut claimed_total = Decimal::ZERO;
    for c in claims {
        claimed_total += dec(&c["amount"]);
        let o = get(format!("/v1/orders/{}", c["order_id"].as_str().unwrap())).await;
        assert_eq!(o["status"], "completed");
    }
    let mut consumed = Decimal::ZERO;
    for (_, sid) in &shoppers {
        let s = get(format!("/v1/supplies/{sid}")).await;
        assert_eq!(dec(&s["reserved"]), Decimal::ZERO, "no reservation left behind or doubled: {s}");
        consumed += Decimal::from(1000) - dec(&s["amount"]);
    }
    assert_eq!(consumed, claimed_total, "consumed supply equals what was claimed, once");
}

/// Claims one order per shopper through `base`; returns how many.
async fn claim_round(http: &reqwest::Client, base: &str, buyer: &str, shoppers: &[(String, String)]) -> usize {
    for (token, _) in shoppers {
        let oid = place_order(http, base, buyer, "1").await;
        let res = http.post(format!("{base}/v1/orders/{oid}/claim")).bearer_auth(token).send().await.unwrap();
        assert_eq!(res.status(), 201);
    }
    shoppers.len()
}

#[tokio::test]
async fn the_embedded_log_runs_a_group_in_one_process_and_another_takes_over_after_a_kill() {
    let dir = TempDir::new();
    let url = testkit::fresh_database_url(Backend::Postgres, &dir).await;
    let envs = [("WALLETD_DATABASE_URL", url.as_str()), ("WALLETD_LEASE_SECS", "2")];
    let Pair { one, two, http, admin, buyer, shoppers } = Pair::start(BIN, &dir.0, &envs, 4, "1000").await;
    let ok = [r#"group="claim-processor""#, r#"outcome="ok""#];
    let mut claims = claim_round(&http, &one.base, &buyer, &shoppers).await;
    claims += claim_round(&http, &two.base, &buyer, &shoppers).await;
    assert!(wait_until(Duration::from_secs(30), || testkit::processing_done(&http, &one.base, &admin)).await);
    let (a, b) = (one.metric("events_handled_total", &ok).await, two.metric("events_handled_total", &ok).await);
    assert!(a + b >= claims as f64, "{a} + {b}");
    assert!(a == 0.0 || b == 0.0, "both processes worked the group: {a} and {b}");

    // The one holding the group dies; the other takes it over once the lease lapses.
    let (mut holder, other) = if a > 0.0 { (one, two) } else { (two, one) };
    holder.kill9();
    claims += claim_round(&http, &other.base, &buyer, &shoppers).await;
    assert!(
        wait_until(Duration::from_secs(30), || testkit::processing_done(&http, &other.base, &admin)).await,
        "no process took over"
    );
    assert!(other.metric("events_handled_total", &ok).await > 0.0);
    let all = fetch(&http, &other.base, &admin, "/v1/claims?limit=500".into()).await;
    let all = all["items"].as_array().unwrap();
    assert_eq!(all.len(), claims);
    assert!(all.iter().all(|c| c["status"] == "processed"), "{all:?}");
}

/// Placing an order holds its amount first and writes the order second. Killed between the two (a
/// failpoint stalls there), the process leaves a hold that no order owns; the next process's
/// reconciler voids it, nothing of the order remains, and the ledger verifies.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_kill_between_an_orders_hold_and_the_order_is_repaired(#[case] backend: Backend) {
    let dir = TempDir::new();
    let url = testkit::fresh_database_url(backend, &dir).await;
    let envs = [
        ("WALLETD_DATABASE_URL", url.as_str()),
        ("WALLETD_RECONCILE_INTERVAL_SECS", "1"),
        ("WALLETD_RECONCILE_GRACE_SECS", "1"),
    ];
    // Without consumers, so no reconciler of its own repairs anything before the kill.
    let stalling = [envs[0], ("WALLETD_FAILPOINTS", "order-after-hold"), ("WALLETD_RUN_CONSUMERS", "false")];
    let mut stalled = WalletdProcess::start(BIN, &dir.0, &stalling);
    let http = reqwest::Client::new();
    let admin = admin_token(BIN, &dir.0, &envs);
    let (buyer, buyer_id) = sign_in(&http, &stalled.base).await;
    fund_at(&http, &stalled.base, &admin, &buyer_id, "USDC", "100").await;
    let held = |base: String, buyer: String| {
        let http = http.clone();
        async move { fetch(&http, &base, &buyer, "/v1/wallet/accounts/USDC".into()).await["held"].clone() }
    };

    let (base, token) = (stalled.base.clone(), buyer.clone());
    let request = tokio::spawn(async move {
        let body = json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": "12.5", "quantity": 2}]});
        reqwest::Client::new().post(format!("{base}/v1/orders")).bearer_auth(&token).json(&body).send().await
    });
    let stuck = wait_until(Duration::from_secs(30), || async {
        held(stalled.base.clone(), buyer.clone()).await == "25.000000"
    });
    assert!(stuck.await, "the hold was not placed");
    stalled.kill9();
    assert!(request.await.unwrap().is_err(), "a killed process answers nothing");

    let next = WalletdProcess::start(BIN, &dir.0, &envs);
    let repaired =
        wait_until(Duration::from_secs(30), || async { held(next.base.clone(), buyer.clone()).await == "0.000000" });
    assert!(repaired.await, "the orphaned hold was not voided");
    let orders: Value =
        http.get(format!("{}/v1/orders", next.base)).bearer_auth(&buyer).send().await.unwrap().json().await.unwrap();
    assert_eq!(orders["items"], json!([]), "no order without its hold, and no hold without its order");
    testkit::assert_ledger_verifies(&http, &next.base, &admin).await;
    assert!(next.metric("wallet_holds_reconciled_total", &["outcome=\"voided\""]).await >= 1.0);
}

/// The random workload of `wallet::a_random_concurrent_workload_leaves_a_ledger_that_adds_up` (64
/// clients, 5,120 operations) on PostgreSQL, with `kill -9` of walletd halfway and a restart on the
/// same database: the clients go on against the new process; afterwards the ledger verifies, every
/// order's hold matches its state (the reconciler repairs what the kill cut in two), and every 2xx
/// answer given before or after the kill is reflected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_in_a_random_workload_loses_no_acknowledged_money() {
    let dir = TempDir::new();
    let url = testkit::fresh_database_url(Backend::Postgres, &dir).await;
    let envs = [
        ("WALLETD_DATABASE_URL", url.as_str()),
        ("WALLETD_RECONCILE_INTERVAL_SECS", "1"),
        ("WALLETD_RECONCILE_GRACE_SECS", "3"),
    ];
    let mut first = WalletdProcess::start(BIN, &dir.0, &envs);
    let http = reqwest::Client::new();
    let admin = admin_token(BIN, &dir.0, &envs);
    let mut actors = Vec::new();
    for _ in 0..16 {
        let (token, id) = sign_in(&http, &first.base).await;
        fund_at(&http, &first.base, &admin, &id, "USDC", "1000000").await;
        let res = http
            .post(format!("{}/v1/supplies", first.base))
            .bearer_auth(&token)
            .json(&json!({"currency": "USDC", "amount": "1000000"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        actors.push(Actor { token, id: id.parse().unwrap() });
    }

    let (tx, base) = tokio::sync::watch::channel(first.base.clone());
    let done = std::sync::atomic::AtomicUsize::new(0);
    let workload = Workload { http: &http, base, admin: &admin, users: &actors, clients: 64, steps: 80, done: &done };
    let killer = async {
        let halfway = wait_until(Duration::from_secs(300), || async {
            done.load(std::sync::atomic::Ordering::Relaxed) >= 64 * 80 / 2
        })
        .await;
        assert!(halfway, "the workload did not get halfway");
        first.kill9();
        let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let dir = dir.0.clone();
        let second = tokio::task::spawn_blocking(move || {
            let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            WalletdProcess::start(BIN, &dir, &envs)
        })
        .await
        .unwrap();
        tx.send(second.base.clone()).unwrap();
        second
    };
    let (outcome, second) = tokio::join!(workload.run(), killer);
    eprintln!("{}", outcome.summary());
    assert!(outcome.unanswered > 0, "the kill cut no request short; it tested nothing: {}", outcome.summary());
    assert!(outcome.statuses.len() + outcome.unanswered >= 5_000, "{}", outcome.summary());
    assert_eq!(outcome.count(500..600), 0, "{}", outcome.summary());

    let base = second.base.clone();
    let settled = wait_until(Duration::from_secs(60), || testkit::processing_done(&http, &base, &admin)).await;
    assert!(settled, "claims stuck after the restart");
    let db = storage::Database::connect(&url, &storage::DbOptions::default()).await.unwrap();
    let matches = wait_until(Duration::from_secs(60), || async { mismatched_holds(&db).await.is_empty() }).await;
    assert!(matches, "orders whose hold does not match: {:?}", mismatched_holds(&db).await);
    let missing = unreflected(&http, &base, &actors, &db, &outcome.acked).await;
    assert!(missing.is_empty(), "2xx answers not reflected: {missing:?}");
    testkit::assert_ledger_verifies(&http, &base, &admin).await;
}
