//! The wallet: deposits once per reference, transfers that move money exactly and never below
//! zero (also 200 at once from an account funded for 50), holds posted or voided once, and a
//! ledger that `verify` finds consistent, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use rstest::rstest;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use testkit::workload::{Actor, Workload, mismatched_holds, unreflected};
use testkit::{Backend, Session, TestApp, assert_problem, problem_fields};
use uuid::Uuid;
use wallet::domain::{HoldStatus, WalletError};

async fn deposit(app: &TestApp, admin: &str, user: Uuid, amount: &str, reference: &str) -> reqwest::Response {
    let body = json!({"user_id": user, "currency": "USDC", "amount": amount, "reference": reference});
    app.post("/v1/admin/deposits", admin).json(&body).send().await.unwrap()
}

async fn transfer(app: &TestApp, from: &Session, to: Uuid, amount: &str) -> reqwest::Response {
    let body = json!({"to_user_id": to, "currency": "USDC", "amount": amount});
    app.post("/v1/wallet/transfers", &from.access).json(&body).send().await.unwrap()
}

async fn usdc(app: &TestApp, who: &Session) -> Value {
    app.get("/v1/wallet/accounts/USDC", &who.access).send().await.unwrap().json().await.unwrap()
}

/// The account once `field` reads `want`, or as it stands after 10 s. For movements made past the
/// app's own service: its cached account goes stale when the movement's event is consumed.
async fn usdc_once(app: &TestApp, who: &Session, field: &str, want: &str) -> Value {
    testkit::wait_until(std::time::Duration::from_secs(10), || async { usdc(app, who).await[field] == want }).await;
    usdc(app, who).await
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn deposits_count_once_and_transfers_move_money_exactly(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let (a, b, stranger) =
        (app.new_unfunded_user().await, app.new_unfunded_user().await, app.new_unfunded_user().await);

    let res = deposit(&app, &admin, a.user_id, "100", "bank-1").await;
    assert_eq!(res.status(), 201);
    let first: Value = res.json().await.unwrap();
    assert_eq!((first["amount"].as_str(), first["source"].as_str()), (Some("100.000000"), Some("admin")));
    let res = deposit(&app, &admin, a.user_id, "100", "bank-1").await;
    assert_eq!(res.status(), 200, "the same deposit again");
    assert_eq!(res.json::<Value>().await.unwrap()["id"], first["id"]);
    assert_problem(deposit(&app, &admin, a.user_id, "101", "bank-1").await, 409, "DEPOSIT_REFERENCE_CONFLICT").await;
    assert_problem(deposit(&app, &a.access, a.user_id, "1", "bank-2").await, 403, "FORBIDDEN").await;
    let body =
        assert_problem(deposit(&app, &admin, Uuid::now_v7(), "1", "bank-3").await, 422, "VALIDATION_FAILED").await;
    assert_eq!(problem_fields(&body), ["user_id"]);

    let res = transfer(&app, &a, b.user_id, "30.5").await;
    assert_eq!(res.status(), 201);
    let t: Value = res.json().await.unwrap();
    assert_eq!(usdc(&app, &a).await["balance"], "69.500000");
    assert_eq!(usdc(&app, &b).await["available"], "30.500000");
    for (to, amount, field) in [
        (a.user_id, "1", "to_user_id"),
        (Uuid::now_v7(), "1", "to_user_id"),
        (b.user_id, "0", "amount"),
        (b.user_id, "-1", "amount"),
        (b.user_id, "0.0000001", "amount"),
    ] {
        let body = assert_problem(transfer(&app, &a, to, amount).await, 422, "VALIDATION_FAILED").await;
        assert_eq!(problem_fields(&body), [field], "{to} {amount}");
    }
    let body = assert_problem(transfer(&app, &a, b.user_id, "69.500001").await, 422, "INSUFFICIENT_FUNDS").await;
    assert_eq!(problem_fields(&body), ["amount"]);
    assert_eq!(usdc(&app, &a).await["balance"], "69.500000", "a refusal moves nothing");

    let path = format!("/v1/wallet/transfers/{}", t["id"].as_str().unwrap());
    assert_eq!(app.get(&path, &b.access).send().await.unwrap().status(), 200);
    assert_problem(app.get(&path, &stranger.access).send().await.unwrap(), 404, "NOT_FOUND").await;
    let entries: Value = app.get("/v1/wallet/entries", &a.access).send().await.unwrap().json().await.unwrap();
    let amounts: Vec<&str> =
        entries["items"].as_array().unwrap().iter().map(|e| e["amount"].as_str().unwrap()).collect();
    assert_eq!(amounts, ["-30.500000", "100.000000"], "newest first");
    let accounts: Value = app.get("/v1/wallet/accounts", &stranger.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(accounts["items"].as_array().unwrap().len(), 5, "one per asset, zero without activity");
    assert_problem(app.get("/v1/wallet/accounts/XYZ", &a.access).send().await.unwrap(), 422, "UNKNOWN_ASSET").await;
    let world: Value =
        app.get("/v1/wallet/accounts?user_id=@world", &admin).send().await.unwrap().json().await.unwrap();
    let world_usdc = world["items"].as_array().unwrap().iter().find(|x| x["currency"] == "USDC").unwrap().clone();
    assert_eq!(world_usdc["balance"], "-100.000000", "money entered from @world");
    let v = app.assert_ledger_verifies(&admin).await;
    assert_eq!(v["transactions_checked"], 2);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_200_concurrent_transfers_funded_for_50_exactly_50_succeed(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let (a, b) = (app.new_unfunded_user().await, app.new_unfunded_user().await);
    assert_eq!(deposit(&app, &admin, a.user_id, "50", "fund-50").await.status(), 201);
    let (app_ref, a_ref) = (&app, &a);
    let statuses = futures::future::join_all((0..200).map(|_| async move {
        let res = transfer(app_ref, a_ref, b.user_id, "1").await;
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap())
    }))
    .await;
    assert_eq!(statuses.iter().filter(|(s, _)| *s == 201).count(), 50);
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s != 201).collect();
    assert_eq!(refused.len(), 150);
    assert!(refused.iter().all(|(s, b)| *s == 422 && b["code"] == "INSUFFICIENT_FUNDS"), "{refused:?}");
    assert_eq!(usdc(&app, &a).await["balance"], "0.000000");
    assert_eq!(usdc(&app, &b).await["balance"], "50.000000");
    app.assert_ledger_verifies(&admin).await;
}

/// Transfers crossing between four funded users in both directions at once: no update lost, no
/// deadlock answered as a 500, the total unchanged.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossing_transfers_neither_deadlock_nor_lose_money(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let users = futures::future::join_all((0..4).map(|_| app.new_unfunded_user())).await;
    for (i, u) in users.iter().enumerate() {
        assert_eq!(deposit(&app, &admin, u.user_id, "1000", &format!("cross-{i}")).await.status(), 201);
    }
    let users_ref = &users;
    let app_ref = &app;
    let statuses = futures::future::join_all((0..240).map(|i| async move {
        let (from, to) = (&users_ref[i % 4], &users_ref[(i / 4 + i + 1) % 4]);
        if from.user_id == to.user_id {
            return 201;
        }
        transfer(app_ref, from, to.user_id, &format!("{}.25", i % 7)).await.status().as_u16()
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let mut total = Decimal::ZERO;
    for u in &users {
        total += usdc(&app, u).await["balance"].as_str().unwrap().parse::<Decimal>().unwrap();
    }
    assert_eq!(total, Decimal::from(4000));
    app.assert_ledger_verifies(&admin).await;
}

/// Everyone exists, for the service-level test of holds.
struct Anyone;

#[async_trait::async_trait]
impl wallet::Users for Anyone {
    async fn exists(&self, _: Uuid) -> anyhow::Result<bool> {
        Ok(true)
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_hold_reserves_available_and_is_posted_or_voided_once(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let (buyer, shopper) = (app.new_unfunded_user().await, app.new_unfunded_user().await);
    assert_eq!(deposit(&app, &admin, buyer.user_id, "50", "hold-fund").await.status(), 201);
    let db = storage::Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    let svc = wallet::WalletService::new(
        &db,
        cache::Cache::disabled(),
        Arc::new(Anyone),
        app.settings.assets.clone(),
        "test".into(),
    );
    let ctx = events::outbox::EventContext { region: "test".into(), ..Default::default() };
    let d = |s: &str| s.parse::<Decimal>().unwrap();

    let too_much = svc.place_hold(buyer.user_id, "USDC", d("50.000001"), None, &ctx).await;
    assert!(matches!(too_much, Err(WalletError::InsufficientFunds)));
    let hold = svc.place_hold(buyer.user_id, "USDC", d("30"), Some(Uuid::now_v7()), &ctx).await.unwrap();
    let account = usdc(&app, &buyer).await;
    assert_eq!(
        (account["balance"].as_str(), account["held"].as_str(), account["available"].as_str()),
        (Some("50.000000"), Some("30.000000"), Some("20.000000"))
    );
    assert_problem(transfer(&app, &buyer, shopper.user_id, "20.000001").await, 422, "INSUFFICIENT_FUNDS").await;

    let posted = svc.resolve_hold(hold.id, Some(shopper.user_id), Some("claim-1".into()), &ctx).await.unwrap();
    assert_eq!(posted.status, HoldStatus::Posted);
    assert!(matches!(svc.resolve_hold(hold.id, None, None, &ctx).await, Err(WalletError::HoldNotPending("posted"))));
    let account = usdc_once(&app, &buyer, "balance", "20.000000").await;
    assert_eq!((account["balance"].as_str(), account["held"].as_str()), (Some("20.000000"), Some("0.000000")));
    assert_eq!(usdc_once(&app, &shopper, "balance", "30.000000").await["balance"], "30.000000");

    let second = svc.place_hold(buyer.user_id, "USDC", d("20"), None, &ctx).await.unwrap();
    svc.resolve_hold(second.id, None, None, &ctx).await.unwrap();
    let account = usdc_once(&app, &buyer, "available", "20.000000").await;
    assert_eq!(account["available"], "20.000000", "a voided hold gives it back");
    let holds: Value =
        app.get("/v1/wallet/holds?status=voided", &buyer.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(holds["items"][0]["id"], second.id.to_string());
    app.assert_ledger_verifies(&admin).await;
}

/// 64 clients, 5,120 random operations (deposits, transfers, orders, item changes, cancels, claims,
/// releases) at once; then: no 5xx, every 2xx is reflected, the ledger verifies, and every order's
/// hold matches its state. (`kill::a_kill_9_in_a_random_workload_loses_no_acknowledged_money` runs it
/// with a `kill -9` in the middle.)
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_random_concurrent_workload_leaves_a_ledger_that_adds_up(#[case] backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.reconcile_interval = std::time::Duration::from_secs(1);
        s.reconcile_grace = std::time::Duration::from_secs(1);
    })
    .await;
    let admin = app.admin_token().await;
    let users = futures::future::join_all((0..16).map(|_| app.new_user())).await;
    for u in &users {
        app.create_supply(&u.access, "USDC", "1000000").await;
    }
    let actors: Vec<Actor> = users.iter().map(Actor::from).collect();
    let done = AtomicUsize::new(0);
    let (_tx, base) = tokio::sync::watch::channel(app.base.clone());
    let workload =
        Workload { http: &app.client, base, admin: &admin, users: &actors, clients: 64, steps: 80, done: &done };
    let outcome = workload.run().await;
    eprintln!("{}", outcome.summary());
    assert!(outcome.statuses.len() >= 5_000, "{}", outcome.summary());
    assert_eq!(outcome.count(500..600) + outcome.unanswered, 0, "{}", outcome.summary());

    let done = testkit::wait_until(std::time::Duration::from_secs(60), || app.processing_done(&admin)).await;
    assert!(done, "claims did not settle");
    app.assert_ledger_verifies(&admin).await;
    // Every order's hold matches its state (the reconciler repairs what concurrent changes left).
    let db = storage::Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    let matches =
        testkit::wait_until(std::time::Duration::from_secs(30), || async { mismatched_holds(&db).await.is_empty() })
            .await;
    assert!(matches, "orders whose hold does not match: {:?}", mismatched_holds(&db).await);
    let missing = unreflected(&app.client, &app.base, &actors, &db, &outcome.acked).await;
    assert!(missing.is_empty(), "2xx answers not reflected: {missing:?}");
    app.assert_ledger_verifies(&admin).await;
}
