//! Chaos: a mixed workload (sign-ins, supplies, orders, claims) against two walletd processes on
//! PostgreSQL with Redis and the broker, while in turn one walletd is killed (`kill -9`) and
//! restarted, PostgreSQL is shut down (fast) and started again, then Redis, then the broker. At the
//! end: every write answered 2xx is in the database, no order has two live claims, every claim
//! converged, every processed claim had its effects exactly once (its order's hold posted to the
//! shopper, the ledger consistent), and nothing was parked. The counts
//! of each phase (requests, 2xx, 5xx, connection errors, time to recover) are printed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use identity::eth::LocalWallet;
use serde_json::{Value, json};
use storage::Database;
use testkit::kafka::PrivateKafka;
use testkit::pg::{PrivatePostgres, fresh_database};
use testkit::process::{WalletdProcess, admin_token};
use testkit::redis::PrivateRedis;
use testkit::{TempDir, processing_done, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_walletd");
/// Every supply the workload creates holds this much USDC; every order costs one.
const SUPPLY: &str = "50";

/// What the load saw in one phase.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: u64,
    ok: u64,
    server_errors: u64,
    client_errors: u64,
    connection_errors: u64,
}

/// What the load did and what it was told was written.
#[derive(Default)]
struct Log {
    phase: Mutex<String>,
    counts: Mutex<BTreeMap<String, Counts>>,
    supplies: Mutex<Vec<String>>,
    orders: Mutex<Vec<String>>,
    claims: Mutex<Vec<String>>,
}

impl Log {
    fn record(&self, outcome: Option<u16>) {
        let phase = self.phase.lock().unwrap().clone();
        let mut counts = self.counts.lock().unwrap();
        let c = counts.entry(phase).or_default();
        c.requests += 1;
        match outcome {
            Some(s) if s < 300 => c.ok += 1,
            Some(s) if s >= 500 => c.server_errors += 1,
            Some(_) => c.client_errors += 1,
            None => c.connection_errors += 1,
        }
    }

    fn total(&self, f: impl Fn(&Counts) -> u64) -> u64 {
        self.counts.lock().unwrap().values().map(f).sum()
    }

    fn enter(&self, phase: &str) {
        *self.phase.lock().unwrap() = phase.to_string();
    }
}

/// One request; the status and body, or `None` when no answer came (the process is gone).
async fn send(log: &Log, req: reqwest::RequestBuilder) -> Option<(u16, Value)> {
    let res = req.timeout(Duration::from_secs(10)).send().await;
    let out = match res {
        Ok(r) => {
            let status = r.status().as_u16();
            Some((status, r.json::<Value>().await.unwrap_or(Value::Null)))
        }
        Err(_) => None,
    };
    log.record(out.as_ref().map(|(s, _)| *s));
    out
}

/// Signs in; the token and the user id.
async fn sign_in_user(log: &Log, http: &reqwest::Client, base: &str) -> Option<(String, String)> {
    let wallet = LocalWallet::random().unwrap();
    let address = identity::eth::to_checksum(&wallet.address());
    let (status, nonce) =
        send(log, http.post(format!("{base}/v1/auth/nonce")).json(&json!({"address": address}))).await?;
    if status != 200 {
        return None;
    }
    let message = nonce["message"].as_str()?.to_string();
    let body = json!({"message": message, "signature": wallet.sign_message(&message).unwrap()});
    let (status, login) = send(log, http.post(format!("{base}/v1/auth/login")).json(&body)).await?;
    (status == 200).then(|| {
        (login["access_token"].as_str().unwrap().to_string(), login["user"]["id"].as_str().unwrap().to_string())
    })
}

async fn sign_in(log: &Log, http: &reqwest::Client, base: &str) -> Option<String> {
    sign_in_user(log, http, base).await.map(|(token, _)| token)
}

/// Signs in a buyer whose orders are funded.
async fn funded_buyer(log: &Log, http: &reqwest::Client, base: &str, admin: &str) -> Option<String> {
    let (token, id) = sign_in_user(log, http, base).await?;
    let body = json!({"user_id": id, "currency": "USDC", "amount": "100000", "reference": format!("chaos-{id}")});
    let (status, _) = send(log, http.post(format!("{base}/v1/admin/deposits")).bearer_auth(admin).json(&body)).await?;
    (status == 201).then_some(token)
}

/// One worker of the load: a buyer and a shopper of its own, each round on the next instance.
async fn worker(
    log: Arc<Log>,
    bases: Arc<RwLock<Vec<String>>>,
    admin: String,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let http = reqwest::Client::new();
    let base = |n: usize| bases.read().unwrap()[n % 2].clone();
    let (mut buyer, mut shopper) = (None, None);
    let mut open_orders: Vec<String> = Vec::new();
    for n in 0usize.. {
        if *stop.borrow() {
            return;
        }
        let b = base(n);
        let (Some(buyer_token), Some(shopper_token)) = (buyer.clone(), shopper.clone()) else {
            // Sign in (again) until both are in.
            if buyer.is_none() {
                buyer = funded_buyer(&log, &http, &b, &admin).await;
            } else {
                shopper = sign_in(&log, &http, &b).await;
            }
            continue;
        };
        match n % 6 {
            0 => {
                // A sign-in, as new users keep arriving.
                let _ = sign_in(&log, &http, &b).await;
            }
            1 => {
                let req = http.post(format!("{b}/v1/supplies")).bearer_auth(&shopper_token);
                if let Some((201, s)) = send(&log, req.json(&json!({"currency": "USDC", "amount": SUPPLY}))).await {
                    log.supplies.lock().unwrap().push(s["id"].as_str().unwrap().to_string());
                }
            }
            2 | 3 => {
                let body = json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": "1", "quantity": 1}]});
                let req = http.post(format!("{b}/v1/orders")).bearer_auth(&buyer_token).json(&body);
                if let Some((201, o)) = send(&log, req).await {
                    let id = o["id"].as_str().unwrap().to_string();
                    log.orders.lock().unwrap().push(id.clone());
                    open_orders.push(id);
                }
            }
            _ => {
                let Some(oid) = open_orders.pop() else { continue };
                let req = http.post(format!("{b}/v1/orders/{oid}/claim")).bearer_auth(&shopper_token);
                match send(&log, req).await {
                    Some((201, c)) => log.claims.lock().unwrap().push(c["id"].as_str().unwrap().to_string()),
                    // Not answered, or refused while a dependency was down: try it again later.
                    None | Some((500.., _)) => open_orders.insert(0, oid),
                    Some(_) => {}
                }
            }
        }
    }
}

async fn rows(db: &Database, sql: &str) -> Vec<String> {
    let Database::Postgres(pool) = db else { panic!("PostgreSQL only") };
    let client = pool.get().await.unwrap();
    client.query(sql, &[]).await.unwrap().iter().map(|r| format!("{:?}", r)).collect()
}

async fn count(db: &Database, sql: &str) -> i64 {
    let Database::Postgres(pool) = db else { panic!("PostgreSQL only") };
    pool.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillWalletd,
    Postgres,
    Redis,
    Broker,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_survive_a_kill_and_each_dependency_going_down() {
    let pg = PrivatePostgres::start();
    let mut redis = PrivateRedis::start();
    let mut kafka = PrivateKafka::start();
    let url = fresh_database(&pg.url()).await;
    let dir = TempDir::new();
    let (redis_url, brokers) = (redis.url(), kafka.brokers());
    let envs = [
        ("WALLETD_DATABASE_URL", url.as_str()),
        ("WALLETD_REDIS_URL", redis_url.as_str()),
        ("WALLETD_KAFKA_BROKERS", brokers.as_str()),
        ("WALLETD_RATE_LIMIT_PER_MINUTE", "0"),
        ("WALLETD_SIGNIN_RATE_LIMIT_PER_MINUTE", "0"),
        ("WALLETD_LEASE_SECS", "3"),
        ("WALLETD_HTTP_REQUEST_TIMEOUT_MS", "5000"),
    ];
    let mut one = WalletdProcess::start(BIN, &dir.0, &envs);
    let two = WalletdProcess::start(BIN, &dir.0, &envs);
    let admin = admin_token(BIN, &dir.0, &envs);
    let bases = Arc::new(RwLock::new(vec![one.base.clone(), two.base.clone()]));
    let log = Arc::new(Log::default());
    log.enter("steady");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers: Vec<_> =
        (0..6).map(|_| tokio::spawn(worker(log.clone(), bases.clone(), admin.clone(), stopped.clone()))).collect();
    let ok_grows_by = |n: u64| {
        let target = log.total(|c| c.ok) + n;
        let log = log.clone();
        wait_until(Duration::from_secs(120), move || {
            let log = log.clone();
            async move { log.total(|c| c.ok) >= target }
        })
    };
    let requests_grow_by = |n: u64| {
        let target = log.total(|c| c.requests) + n;
        let log = log.clone();
        wait_until(Duration::from_secs(60), move || {
            let log = log.clone();
            async move { log.total(|c| c.requests) >= target }
        })
    };
    assert!(ok_grows_by(100).await, "the load does not run");

    let mut recovery = Vec::new();
    for fault in [Fault::KillWalletd, Fault::Postgres, Fault::Redis, Fault::Broker] {
        log.enter(&format!("{fault:?} down"));
        match fault {
            Fault::KillWalletd => one.kill9(),
            Fault::Postgres => pg.stop(),
            Fault::Redis => redis.stop(),
            Fault::Broker => kafka.stop(),
        }
        assert!(requests_grow_by(60).await, "the load stopped during {fault:?}");
        log.enter(&format!("{fault:?} back"));
        let back = Instant::now();
        match fault {
            Fault::KillWalletd => {
                one = WalletdProcess::start(BIN, &dir.0, &envs);
                bases.write().unwrap()[0] = one.base.clone();
            }
            Fault::Postgres => pg.start_again(),
            Fault::Redis => redis.start_again(),
            Fault::Broker => kafka.start_again(),
        }
        assert!(ok_grows_by(60).await, "writes did not recover after {fault:?}");
        recovery.push((fault, back.elapsed()));
    }
    log.enter("steady again");
    assert!(ok_grows_by(60).await);
    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap();
    }

    // Everything converges: published, processed, nothing claimed and left.
    let db = Database::connect(&url, &storage::DbOptions::default()).await.unwrap();
    let http = reqwest::Client::new();
    let base = bases.read().unwrap()[1].clone();
    let converged = wait_until(Duration::from_secs(180), || async {
        events::outbox::unpublished_count(&db).await.unwrap() == 0 && processing_done(&http, &base, &admin).await
    })
    .await;

    let counts = log.counts.lock().unwrap().clone();
    eprintln!("phase: requests / 2xx / 5xx / other 4xx / no answer");
    for (phase, c) in &counts {
        eprintln!(
            "  {phase}: {} / {} / {} / {} / {}",
            c.requests, c.ok, c.server_errors, c.client_errors, c.connection_errors
        );
    }
    for (fault, took) in &recovery {
        eprintln!("  {fault:?}: writes answered 2xx again {:.2} s after it came back", took.as_secs_f64());
    }
    let (supplies, orders, claims) =
        (log.supplies.lock().unwrap().clone(), log.orders.lock().unwrap().clone(), log.claims.lock().unwrap().clone());
    eprintln!("  written (2xx): {} supplies, {} orders, {} claims", supplies.len(), orders.len(), claims.len());
    assert!(converged, "claims or events did not converge in 180 s after the faults");

    // Every write answered 2xx is there.
    let ids = |list: &[String]| list.iter().map(|i| format!("'{i}'")).collect::<Vec<_>>().join(",");
    for (table, list) in [("supplies", &supplies), ("orders", &orders), ("claims", &claims)] {
        let n = count(&db, &format!("SELECT COUNT(*) FROM {table} WHERE id IN ({})", ids(list))).await;
        assert_eq!(n, list.len() as i64, "{table} answered 201 but missing");
    }
    // No order has two live claims; no claim is left pending; no order is left claimed.
    let doubled = rows(
        &db,
        "SELECT order_id FROM claims WHERE status IN ('pending', 'processed') GROUP BY order_id HAVING COUNT(*) > 1",
    )
    .await;
    assert!(doubled.is_empty(), "orders with two live claims: {doubled:?}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM claims WHERE status = 'pending'").await, 0);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM orders WHERE status = 'claimed'").await, 0);
    // Every processed claim completed its order and consumed its reservation, once.
    let unfinished = rows(
        &db,
        "SELECT c.id FROM claims c JOIN orders o ON o.id = c.order_id
         LEFT JOIN supply_reservations r ON r.claim_id = c.id AND r.status = 'consumed'
         WHERE c.status = 'processed' AND (o.status <> 'completed' OR o.claim_id <> c.id OR r.claim_id IS NULL)",
    )
    .await;
    assert!(unfinished.is_empty(), "processed claims without their effects: {unfinished:?}");
    let undone = rows(
        &db,
        "SELECT c.id FROM claims c JOIN orders o ON o.id = c.order_id
         LEFT JOIN supply_reservations r ON r.claim_id = c.id AND r.status <> 'released'
         WHERE c.status IN ('failed', 'released') AND ((o.status <> 'pending' AND o.claim_id = c.id) OR r.claim_id IS NOT NULL)",
    )
    .await;
    assert!(undone.is_empty(), "failed or released claims not undone: {undone:?}");
    let twice =
        rows(&db, "SELECT aggregate_id FROM outbox WHERE event_type = 'claim.processed' GROUP BY aggregate_id HAVING COUNT(*) > 1")
            .await;
    assert!(twice.is_empty(), "claims processed twice: {twice:?}");
    // Every supply holds what it was created with, less what processed claims consumed.
    let off = rows(
        &db,
        &format!(
            "SELECT s.id, s.amount, s.reserved FROM supplies s
             LEFT JOIN (SELECT supply_id, SUM(amount) AS used FROM supply_reservations WHERE status = 'consumed' GROUP BY supply_id) u
               ON u.supply_id = s.id
             WHERE s.reserved <> 0 OR s.amount + COALESCE(u.used, 0) <> {SUPPLY}"
        ),
    )
    .await;
    assert!(off.is_empty(), "supplies whose amounts do not add up: {off:?}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM parked_events").await, 0, "events were parked");
    // The money: the ledger adds up, and every processed claim's hold was posted, once.
    testkit::assert_ledger_verifies(&http, &base, &admin).await;
    let unsettled = rows(
        &db,
        "SELECT c.id FROM claims c JOIN orders o ON o.id = c.order_id LEFT JOIN wallet_holds h ON h.id = o.hold_id
         WHERE c.status = 'processed' AND (h.status IS DISTINCT FROM 'posted' OR h.amount <> c.amount)",
    )
    .await;
    assert!(unsettled.is_empty(), "processed claims whose hold was not posted: {unsettled:?}");
    let processed = count(&db, "SELECT COUNT(*) FROM claims WHERE status = 'processed'").await;
    eprintln!("  in the end: {processed} claims processed, every effect once, nothing parked");
    assert!(processed > 0);
}
