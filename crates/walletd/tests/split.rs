//! The services running apart: supply and order in one process, claim in a second, the wallet in
//! a third, each on its own PostgreSQL database (identity in a fourth that all share), talking
//! gRPC, with events over Kafka. The full flow and the 500-claims race hold every invariant; then
//! the order process is killed with `kill -9` while claims are processing and restarted on the
//! same address: processing converges and nothing settles twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::collections::HashMap;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use testkit::process::{WalletdProcess, admin_token, fund_at, sign_in};
use testkit::{TempDir, pg, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_walletd");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn dec(v: &Value) -> Decimal {
    v.as_str().unwrap_or_else(|| panic!("not an amount: {v}")).parse().unwrap()
}

/// Three processes and their settings.
struct Split {
    dir: TempDir,
    /// supply + order
    shop_env: Vec<(String, String)>,
    shop: WalletdProcess,
    claims: WalletdProcess,
    wallet: WalletdProcess,
    http: reqwest::Client,
    admin: String,
}

impl Split {
    async fn start() -> Self {
        let server = pg::server_url();
        let (identity, shop_db, claim_db, wallet_db) = (
            pg::fresh_database(&server).await,
            pg::fresh_database(&server).await,
            pg::fresh_database(&server).await,
            pg::fresh_database(&server).await,
        );
        let key = testkit::shared_jwt_key();
        let common: Vec<(String, String)> = vec![
            ("WALLETD_IDENTITY_DATABASE_URL".into(), identity.clone()),
            ("WALLETD_JWT_PRIVATE_KEY_FILE".into(), key.display().to_string()),
            ("WALLETD_KAFKA_BROKERS".into(), testkit::kafka::brokers()),
            ("WALLETD_KAFKA_GROUP_PREFIX".into(), format!("split-{}", uuid::Uuid::now_v7().simple())),
            ("WALLETD_KAFKA_FETCH_WAIT_MS".into(), "10".into()),
            ("WALLETD_SIGNIN_RATE_LIMIT_PER_MINUTE".into(), "0".into()),
        ];
        let with = |extra: &[(&str, String)]| {
            let mut env = common.clone();
            env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
            env
        };
        let (wallet_grpc, shop_grpc, shop_http) = (free_port(), free_port(), free_port());
        let wallet_env =
            with(&[("WALLETD_DATABASE_URL", wallet_db), ("WALLETD_GRPC_ADDR", format!("127.0.0.1:{wallet_grpc}"))]);
        let shop_env = with(&[
            ("WALLETD_DATABASE_URL", shop_db),
            ("WALLETD_GRPC_ADDR", format!("127.0.0.1:{shop_grpc}")),
            ("WALLETD_HTTP_ADDR", format!("127.0.0.1:{shop_http}")),
            ("WALLETD_WALLET_GRPC_URL", format!("http://127.0.0.1:{wallet_grpc}")),
        ]);
        let claim_env = with(&[
            ("WALLETD_DATABASE_URL", claim_db),
            ("WALLETD_ORDER_GRPC_URL", format!("http://127.0.0.1:{shop_grpc}")),
            ("WALLETD_SUPPLY_GRPC_URL", format!("http://127.0.0.1:{shop_grpc}")),
            ("WALLETD_WALLET_GRPC_URL", format!("http://127.0.0.1:{wallet_grpc}")),
        ]);
        let dir = TempDir::new();
        let wallet = start(&dir, &wallet_env, "wallet");
        let shop = start(&dir, &shop_env, "supply,order");
        let claims = start(&dir, &claim_env, "claim");
        let admin_env =
            [("WALLETD_DATABASE_URL", identity.as_str()), ("WALLETD_JWT_PRIVATE_KEY_FILE", &key.display().to_string())];
        let admin = admin_token(BIN, &dir.0, &admin_env);
        Self { dir, shop_env, shop, claims, wallet, http: reqwest::Client::new(), admin }
    }

    async fn get(&self, base: &str, path: &str) -> Value {
        let res = self.http.get(format!("{base}{path}")).bearer_auth(&self.admin).send().await.unwrap();
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.unwrap()
    }

    /// A buyer signed in (at the shop; identity is shared) and funded at the wallet.
    async fn buyer(&self) -> String {
        let (token, id) = sign_in(&self.http, &self.shop.base).await;
        fund_at(&self.http, &self.wallet.base, &self.admin, &id, "USDC", "1000000").await;
        token
    }

    /// A shopper with a USDC supply of 1000; (token, user id, supply id).
    async fn shopper(&self) -> (String, String, String) {
        let (token, id) = sign_in(&self.http, &self.shop.base).await;
        let res = self
            .http
            .post(format!("{}/v1/supplies", self.shop.base))
            .bearer_auth(&token)
            .json(&json!({"currency": "USDC", "amount": "1000"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let supply = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        (token, id, supply)
    }

    /// An order at `price` (its hold placed at the wallet over gRPC); (id, amount).
    async fn order(&self, buyer: &str, price: &str) -> (String, Decimal) {
        let body = json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": price, "quantity": 1}]});
        let res = self
            .http
            .post(format!("{}/v1/orders", self.shop.base))
            .bearer_auth(buyer)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "order: {}", res.text().await.unwrap_or_default());
        let o: Value = res.json().await.unwrap();
        (o["id"].as_str().unwrap().to_string(), dec(&o["amount"]))
    }

    async fn claim(&self, shopper: &str, order: &str) -> (u16, Value) {
        let url = format!("{}/v1/orders/{order}/claim", self.claims.base);
        let res = self.http.post(url).bearer_auth(shopper).send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
    }

    /// No claim pending at the claim service, no order `claimed` at the order service.
    async fn processing_done(&self) -> bool {
        let pending = self.get(&self.claims.base, "/v1/claims?status=pending&limit=1").await;
        let claimed = self.get(&self.shop.base, "/v1/orders?status=claimed&limit=1").await;
        pending["items"].as_array().is_some_and(Vec::is_empty) && claimed["items"].as_array().is_some_and(Vec::is_empty)
    }

    /// Every invariant: each order completed by exactly one processed claim, consumed supply equal
    /// to what was ordered, each shopper paid exactly their processed claims (nothing settled
    /// twice), nothing parked, and the wallet's ledger verifies.
    async fn assert_invariants(&self, orders: &[(String, Decimal)], supplies: &[(String, String)]) {
        let done = wait_until(Duration::from_secs(120), || self.processing_done()).await;
        assert!(done, "processing converges");
        let mut paid_to: HashMap<String, Decimal> = HashMap::new();
        let mut processed = 0;
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                Some(c) => format!("/v1/claims?status=processed&limit=200&cursor={c}"),
                None => "/v1/claims?status=processed&limit=200".to_string(),
            };
            let page = self.get(&self.claims.base, &page_path).await;
            for c in page["items"].as_array().unwrap() {
                processed += 1;
                *paid_to.entry(c["user_id"].as_str().unwrap().to_string()).or_default() += dec(&c["amount"]);
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(processed, orders.len(), "one processed claim per order");
        for (oid, _) in orders {
            let o = self.get(&self.shop.base, &format!("/v1/orders/{oid}")).await;
            assert_eq!(o["status"], "completed", "order {oid}");
        }
        let ordered: Decimal = orders.iter().map(|(_, a)| *a).sum();
        let mut consumed = Decimal::ZERO;
        for (user, sid) in supplies {
            let s = self.get(&self.shop.base, &format!("/v1/supplies/{sid}")).await;
            assert_eq!(dec(&s["reserved"]), Decimal::ZERO, "supply {sid}");
            let used = Decimal::from(1000) - dec(&s["amount"]);
            consumed += used;
            let account = self.get(&self.wallet.base, &format!("/v1/wallet/accounts?user_id={user}")).await;
            let balance = account["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["currency"] == "USDC")
                .map_or(Decimal::ZERO, |a| dec(&a["balance"]));
            let paid = paid_to.get(user).copied().unwrap_or_default();
            assert_eq!(balance, paid, "shopper {user} is paid exactly their processed claims");
            assert_eq!(used, paid, "shopper {user}'s supply is consumed by exactly their processed claims");
        }
        assert_eq!(consumed, ordered, "consumed supply equals the sum of order amounts");
        let verify = self.get(&self.wallet.base, "/v1/admin/wallet/verify").await;
        assert_eq!(verify["ok"], true, "{verify}");
        for base in [&self.shop.base, &self.claims.base, &self.wallet.base] {
            let parked = self.get(base, "/v1/admin/parked-events").await;
            assert!(parked["items"].as_array().is_none_or(Vec::is_empty), "parked at {base}: {parked}");
        }
    }
}

fn start(dir: &TempDir, env: &[(String, String)], services: &str) -> WalletdProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    WalletdProcess::start_with(BIN, &dir.0, &env, &["--services", services])
}

#[tokio::test]
async fn services_apart_on_their_own_databases_hold_every_invariant_through_a_kill() {
    let mut split = Split::start().await;
    let buyers = futures::future::join_all((0..5).map(|_| split.buyer())).await;
    let shoppers = futures::future::join_all((0..100).map(|_| split.shopper())).await;
    let mut orders = Vec::new();
    for i in 0..50 {
        orders.push(split.order(&buyers[i % 5], &format!("{}.5", i + 1)).await);
    }

    // The race: 500 claims over 50 orders at once, at the claim process.
    let split_ref = &split;
    let outcomes = futures::future::join_all((0..500).map(|i| {
        let (who, (oid, _)) = (&shoppers[i % 100].0, &orders[(i * 7) % 50]);
        async move { split_ref.claim(who, oid).await }
    }))
    .await;
    let won = outcomes.iter().filter(|(s, _)| *s == 201).count();
    let lost: Vec<_> = outcomes.iter().filter(|(s, _)| *s == 409).collect();
    assert_eq!(won, 50, "exactly one claim per order: {:?}", outcomes.iter().find(|(s, _)| *s != 201 && *s != 409));
    assert_eq!(lost.len(), 450);
    assert!(lost.iter().all(|(_, b)| b["code"] == "ORDER_ALREADY_CLAIMED"));
    let supplies: Vec<(String, String)> = shoppers.iter().map(|(_, u, s)| (u.clone(), s.clone())).collect();
    split.assert_invariants(&orders, &supplies).await;

    // The order process dies with claims in flight, and comes back on the same address.
    let mut more = Vec::new();
    for i in 0..40 {
        more.push(split.order(&buyers[i % 5], &format!("{}.25", i + 1)).await);
    }
    let claimed = futures::future::join_all(
        more.iter().enumerate().map(|(i, (oid, _))| split_ref_claim(&split, &shoppers[i].0, oid)),
    )
    .await;
    split.shop.kill9();
    assert!(claimed.iter().all(|s| *s == 201), "{claimed:?}");
    let pending = split.get(&split.claims.base, "/v1/claims?status=pending&limit=200").await;
    let pending = pending["items"].as_array().map_or(0, Vec::len);
    let env: Vec<(String, String)> = split.shop_env.clone();
    split.shop = start(&split.dir, &env, "supply,order");
    orders.extend(more);
    split.assert_invariants(&orders, &supplies).await;
    // The kill met processing in flight: the claim process's calls to the order service failed
    // meanwhile (and were retried until it was back).
    let calls = split.claims.metric("rpc_client_requests_total", &["peer=\"order\""]).await;
    let ok = split.claims.metric("rpc_client_requests_total", &["peer=\"order\"", "outcome=\"ok\""]).await;
    eprintln!("pending at the kill: {pending}; calls to the order service: {calls}, failed: {}", calls - ok);
    assert!(calls - ok >= 1.0, "no call to the order service failed: the kill met no processing");
}

async fn split_ref_claim(split: &Split, shopper: &str, order: &str) -> u16 {
    split.claim(shopper, order).await.0
}
