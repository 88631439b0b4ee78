//! The cache (DESIGN D5) with real Redis servers: reads after writes, other instances, a cold key
//! under 1000 concurrent GETs, Redis killed under load, and wallet balances. Supply tests use unfunded
//! users: a funding deposit's own invalidations would be counted as the supply's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::{Value, json};
use testkit::redis::{PrivateRedis, server_url};
use testkit::{Backend, Session, TestApp, wait_until};

/// The value of a counter in the app's /metrics (summed over the label sets that match).
/// Waits until `writes` writes' own invalidations (the repeat and the event) have landed, so a
/// read that follows is not racing them (a load that races an invalidation is not cached).
async fn invalidations_landed(app: &TestApp, writes: usize) {
    let landed = wait_until(Duration::from_secs(10), || async {
        app.metric("cache_invalidations_total", &["source=\"second\""]).await >= writes as f64
            && app.metric("cache_invalidations_total", &["source=\"event\""]).await >= writes as f64
    })
    .await;
    assert!(landed, "invalidations did not land");
}

async fn get_supply(app: &TestApp, token: &str, id: &str) -> Value {
    let res = app.get(&format!("/v1/supplies/{id}"), token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_write_is_visible_at_once_on_the_writing_instance(#[case] backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.redis_url = Some(server_url(1))).await;
    let s = app.new_unfunded_user().await;
    let id = app.create_supply(&s.access, "USDC", "10").await["id"].as_str().unwrap().to_string();
    invalidations_landed(&app, 1).await;
    get_supply(&app, &s.access, &id).await;
    get_supply(&app, &s.access, &id).await;
    assert!(
        app.metric("cache_requests_total", &["kind=\"supply\"", "result=\"hit\""]).await >= 1.0,
        "served from Redis"
    );
    app.patch(&format!("/v1/supplies/{id}"), &s.access).json(&json!({"amount": "11"})).send().await.unwrap();
    assert_eq!(get_supply(&app, &s.access, &id).await["amount"], "11.000000");
    let ready: Value = app.client.get(app.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["checks"]["cache"], "ok");
}

#[rstest]
#[case::redis_per_instance(true, false)]
#[case::in_process(false, false)]
#[case::in_process_over_kafka(false, true)]
#[tokio::test]
async fn another_instance_sees_a_write_after_its_invalidation_event(#[case] redis: bool, #[case] kafka: bool) {
    // Two instances on one database, each with a cache of its own (two Redis databases stand for
    // two regions' Redis, or two in-process caches): only the events can tell B about A's write,
    // through the embedded log or through Kafka.
    let kafka = kafka.then(|| testkit::kafka::settings(&testkit::kafka::brokers()));
    let a = TestApp::spawn_with(Backend::Postgres, |s| {
        s.redis_url = redis.then(|| server_url(2));
        s.kafka = kafka.clone();
    })
    .await;
    let url = a.settings.database_url();
    let b = TestApp::spawn_with(Backend::Postgres, |s| {
        s.database_url = Some(url);
        s.redis_url = redis.then(|| server_url(3));
        s.kafka = kafka.clone();
    })
    .await;
    let s = a.new_unfunded_user().await;
    let id = a.create_supply(&s.access, "USDC", "10").await["id"].as_str().unwrap().to_string();
    assert_eq!(get_supply(&b, &s.access, &id).await["amount"], "10.000000");
    get_supply(&b, &s.access, &id).await;

    let res = a.patch(&format!("/v1/supplies/{id}"), &s.access).json(&json!({"amount": "12"})).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let written = Instant::now();
    assert_eq!(get_supply(&a, &s.access, &id).await["amount"], "12.000000", "at once on the writer");
    let seen =
        wait_until(Duration::from_secs(10), || async { get_supply(&b, &s.access, &id).await["amount"] == "12.000000" })
            .await;
    assert!(seen, "the other instance kept the stale value");
    if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
        eprintln!("stale window on the other instance: {} ms", written.elapsed().as_millis());
    }
}

#[tokio::test]
async fn a_thousand_concurrent_gets_of_a_cold_key_read_the_database_once() {
    // A healthy Redis: with the default 100 ms timeout, a thousand requests on two busy cores make
    // Redis calls time out, the breaker opens, and a request that comes after the first load finished
    // and finds no cache loads again (that is the breaker's job, tested with Redis down below).
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        s.redis_url = Some(server_url(4));
        s.redis_timeout = Duration::from_secs(5);
    })
    .await;
    let s = app.new_unfunded_user().await;
    let id = app.create_supply(&s.access, "USDC", "10").await["id"].as_str().unwrap().to_string();
    // The key is cold, and stays cold until the storm: no invalidation is still on its way.
    invalidations_landed(&app, 1).await;
    let before = app.metric("cache_loads_total", &["kind=\"supply\""]).await;
    let app_ref = &app;
    let statuses = futures::future::join_all((0..1000).map(|_| {
        let (token, id) = (s.access.clone(), id.clone());
        async move { app_ref.get(&format!("/v1/supplies/{id}"), &token).send().await.unwrap().status().as_u16() }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(app.metric("cache_loads_total", &["kind=\"supply\""]).await - before, 1.0, "one database read");
}

#[tokio::test]
async fn redis_down_means_slower_not_failing() {
    let mut redis = PrivateRedis::start();
    let app = TestApp::spawn_with(Backend::Postgres, |s| s.redis_url = Some(redis.url())).await;
    let s = app.new_unfunded_user().await;
    let id = app.create_supply(&s.access, "USDC", "100").await["id"].as_str().unwrap().to_string();
    get_supply(&app, &s.access, &id).await;

    redis.stop();
    // Reads and writes under Redis's absence: never a 5xx.
    let mut statuses = Vec::new();
    for i in 0..60 {
        statuses.push(app.get(&format!("/v1/supplies/{id}"), &s.access).send().await.unwrap().status().as_u16());
        let patch =
            app.patch(&format!("/v1/supplies/{id}"), &s.access).json(&json!({"amount": format!("{}", 100 + i)}));
        statuses.push(patch.send().await.unwrap().status().as_u16());
        let create = app.post("/v1/orders", &s.access).json(&json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": "1", "quantity": 1}]}));
        statuses.push(create.send().await.unwrap().status().as_u16());
    }
    assert!(statuses.iter().all(|s| *s < 500), "{statuses:?}");
    assert_eq!(get_supply(&app, &s.access, &id).await["amount"], "159.000000", "reads come from the database");
    // Readiness answers are reused for up to a second.
    let degraded = wait_until(Duration::from_secs(10), || async {
        let res = app.client.get(app.url("/health/ready")).send().await.unwrap();
        let status = res.status();
        let ready: Value = res.json().await.unwrap();
        status == 200 && ready["checks"]["cache"] == "degraded"
    })
    .await;
    assert!(degraded, "readiness did not report the cache degraded (and stay 200)");
    assert!(app.metric("cache_breaker_open", &[]).await >= 1.0, "the breaker opened");

    redis.start_again();
    let back = wait_until(Duration::from_secs(20), || async {
        let ready: Value = app.client.get(app.url("/health/ready")).send().await.unwrap().json().await.unwrap();
        ready["checks"]["cache"] == "ok"
    })
    .await;
    assert!(back, "the cache did not come back");
    let hits_before = app.metric("cache_requests_total", &["kind=\"supply\"", "result=\"hit\""]).await;
    let used = wait_until(Duration::from_secs(20), || async {
        get_supply(&app, &s.access, &id).await;
        app.metric("cache_requests_total", &["kind=\"supply\"", "result=\"hit\""]).await > hits_before
    })
    .await;
    assert!(used, "the cache is not used again after Redis returned");
}

#[rstest]
#[case::redis(true)]
#[case::in_process(false)]
#[tokio::test]
async fn lists_read_ids_from_the_database_and_entities_from_the_cache(#[case] redis: bool) {
    let app = TestApp::spawn_with(Backend::Postgres, |s| s.redis_url = redis.then(|| server_url(7))).await;
    let s = app.new_unfunded_user().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create_supply(&s.access, "USDC", &format!("{}", i + 1)).await["id"].as_str().unwrap().to_string());
    }
    invalidations_landed(&app, 5).await;
    let list = || async { app.get("/v1/supplies", &s.access).send().await.unwrap().json::<Value>().await.unwrap() };
    let first = list().await;
    let loads = app.metric("cache_loads_total", &["kind=\"supply\""]).await;
    let hits = app.metric("cache_requests_total", &["kind=\"supply\"", "result=\"hit\""]).await;
    let second = list().await;
    assert_eq!(first, second);
    assert_eq!(second["items"].as_array().unwrap().len(), 5);
    assert_eq!(app.metric("cache_loads_total", &["kind=\"supply\""]).await, loads, "no entity read from the database");
    assert_eq!(app.metric("cache_requests_total", &["kind=\"supply\"", "result=\"hit\""]).await - hits, 5.0);
    // A write shows in the next list.
    app.patch(&format!("/v1/supplies/{}", ids[0]), &s.access).json(&json!({"amount": "9"})).send().await.unwrap();
    let third = list().await;
    let changed = third["items"].as_array().unwrap().iter().find(|i| i["id"] == ids[0].as_str()).unwrap();
    assert_eq!(changed["amount"], "9.000000");
}

async fn usdc(app: &TestApp, token: &str) -> Value {
    let res = app.get("/v1/wallet/accounts/USDC", token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[rstest]
#[case::in_process(false)]
#[case::in_process_over_kafka(true)]
#[tokio::test]
async fn balances_are_cached_and_every_movement_makes_them_stale_everywhere(#[case] kafka: bool) {
    // Two instances on one database, each with its own in-process cache: B learns of A's movements
    // only from the wallet's events. Every movement kind: deposit, transfer, a hold, its posting.
    let kafka = kafka.then(|| testkit::kafka::settings(&testkit::kafka::brokers()));
    let a = TestApp::spawn_with(Backend::Postgres, |s| s.kafka = kafka.clone()).await;
    let url = a.settings.database_url();
    let b = TestApp::spawn_with(Backend::Postgres, |s| {
        s.database_url = Some(url);
        s.kafka = kafka.clone();
    })
    .await;
    let (buyer, shopper) = (a.new_unfunded_user().await, a.new_unfunded_user().await);
    let admin = a.admin_token().await;
    let sees = |app: &'static str, who: &Session, field: &'static str, want: &'static str| {
        let (target, token) = (if app == "a" { &a } else { &b }, who.access.clone());
        async move { wait_until(Duration::from_secs(10), || async { usdc(target, &token).await[field] == want }).await }
    };
    assert_eq!(usdc(&b, &buyer.access).await["balance"], "0.000000");
    assert_eq!(usdc(&b, &buyer.access).await["balance"], "0.000000");
    assert!(b.metric("cache_requests_total", &["kind=\"wallet_accounts\"", "result=\"hit\""]).await >= 1.0, "B caches");

    testkit::process::fund_at(&a.client, &a.base, &admin, &buyer.user_id.to_string(), "USDC", "100").await;
    assert_eq!(usdc(&a, &buyer.access).await["balance"], "100.000000", "at once on the writer");
    assert!(sees("b", &buyer, "balance", "100.000000").await, "B kept the balance from before the deposit");

    let res = a
        .post("/v1/wallet/transfers", &buyer.access)
        .json(&json!({"to_user_id": shopper.user_id, "currency": "USDC", "amount": "30"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert!(sees("b", &buyer, "balance", "70.000000").await, "sender on B after a transfer");
    assert!(sees("b", &shopper, "balance", "30.000000").await, "receiver on B after a transfer");

    let item = json!([{"product_id": "p", "product_name": "Mug", "price": "20", "quantity": 1}]);
    let res =
        a.post("/v1/orders", &buyer.access).json(&json!({"currency": "USDC", "items": item})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.unwrap();
    assert!(sees("b", &buyer, "held", "20.000000").await, "a hold on B");

    a.create_supply(&shopper.access, "USDC", "100").await;
    let res =
        a.post(&format!("/v1/orders/{}/claim", order["id"].as_str().unwrap()), &shopper.access).send().await.unwrap();
    assert_eq!(res.status(), 201);
    assert!(sees("b", &shopper, "balance", "50.000000").await, "the settled claim's shopper on B");
    assert!(sees("b", &buyer, "balance", "50.000000").await, "the settled claim's buyer on B");
    assert_eq!(usdc(&b, &buyer.access).await["held"], "0.000000");
}
