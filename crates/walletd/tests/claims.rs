//! Claims: every refusal, processing end to end, release, and races with real concurrency, on
//! both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::collections::HashMap;
use std::time::Duration;

use kafka::KafkaSettings;
use rstest::rstest;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use testkit::{Backend, Session, TestApp, assert_problem, wait_until};

/// Claim processing over the embedded log or over Kafka.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Log,
    Kafka,
}

async fn spawn(backend: Backend, transport: Transport) -> TestApp {
    TestApp::spawn_with(backend, |s| {
        if let Transport::Kafka = transport {
            s.kafka = Some(testkit::kafka::settings(&testkit::kafka::brokers()));
        }
    })
    .await
}

async fn order(app: &TestApp, buyer: &Session, price: &str) -> Value {
    let body = json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "Thing", "price": price, "quantity": 1}]});
    let res = app.post("/v1/orders", &buyer.access).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

async fn claim(app: &TestApp, who: &Session, order_id: &str) -> reqwest::Response {
    app.post(&format!("/v1/orders/{order_id}/claim"), &who.access).send().await.unwrap()
}

async fn json_of(app: &TestApp, path: &str, token: &str) -> Value {
    app.get(path, token).send().await.unwrap().json().await.unwrap()
}

fn dec(v: &Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

/// Waits until processing is done, whatever the transport.
async fn settle(app: &TestApp, admin: &str) {
    let done = wait_until(Duration::from_secs(60), || app.processing_done(admin)).await;
    assert!(done, "claims still pending, or orders still claimed, after 60 s");
}

async fn event_types(app: &TestApp, admin: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = "0".to_string();
    loop {
        let page = json_of(app, &format!("/v1/admin/events?after={after}&limit=500"), admin).await;
        out.extend(page["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => after = c.to_string(),
            None => return out,
        }
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite, Transport::Log)]
#[case::postgres(Backend::Postgres, Transport::Log)]
#[case::sqlite_kafka(Backend::Sqlite, Transport::Kafka)]
#[case::postgres_kafka(Backend::Postgres, Transport::Kafka)]
#[tokio::test]
async fn a_claim_is_processed_end_to_end(#[case] backend: Backend, #[case] transport: Transport) {
    let app = spawn(backend, transport).await;
    let admin = app.admin_token().await;
    let (buyer, shopper) = (app.new_user().await, app.new_user().await);
    let o = order(&app, &buyer, "10").await;
    let oid = o["id"].as_str().unwrap();
    let supply = app.create_supply(&shopper.access, "USDC", "25").await;

    let res = claim(&app, &shopper, oid).await;
    assert_eq!(res.status(), 201);
    let c: Value = res.json().await.unwrap();
    assert_eq!(c["user_id"], shopper.user_id.to_string());
    assert_eq!(c["amount"], "10.000000");
    settle(&app, &admin).await;

    let c = json_of(&app, &format!("/v1/claims/{}", c["id"].as_str().unwrap()), &shopper.access).await;
    assert_eq!(c["status"], "processed");
    assert!(c["processed_at"].is_string());
    let o = json_of(&app, &format!("/v1/orders/{oid}"), &buyer.access).await;
    assert_eq!(o["status"], "completed");
    assert_eq!(o["claim_id"], c["id"]);
    let s = json_of(&app, &format!("/v1/supplies/{}", supply["id"].as_str().unwrap()), &shopper.access).await;
    assert_eq!((s["amount"].as_str(), s["reserved"].as_str()), (Some("15.000000"), Some("0.000000")));
    // Settled: the buyer's hold was posted to the shopper.
    let buyer_usdc = json_of(&app, "/v1/wallet/accounts/USDC", &buyer.access).await;
    assert_eq!(
        (buyer_usdc["balance"].as_str(), buyer_usdc["held"].as_str()),
        (Some("999990.000000"), Some("0.000000"))
    );
    let shopper_usdc = json_of(&app, "/v1/wallet/accounts/USDC", &shopper.access).await;
    assert_eq!(shopper_usdc["balance"], "1000010.000000");
    app.assert_ledger_verifies(&admin).await;
    // The buyer sees the claim too, by id and through the order.
    assert_eq!(json_of(&app, &format!("/v1/orders/{oid}/claim"), &buyer.access).await["id"], c["id"]);
    let stranger = app.new_user().await;
    assert_problem(
        app.get(&format!("/v1/claims/{}", c["id"].as_str().unwrap()), &stranger.access).send().await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;

    // A completed order can be neither changed nor deleted.
    let res = app
        .patch(&format!("/v1/orders/{oid}"), &buyer.access)
        .json(&json!({"status": "cancelled"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 409, "ORDER_NOT_PENDING").await;
    assert_problem(
        app.delete(&format!("/v1/orders/{oid}"), &buyer.access).send().await.unwrap(),
        409,
        "ORDER_NOT_DELETABLE",
    )
    .await;

    let types = event_types(&app, &admin).await;
    for t in
        ["order.claimed", "order.updated", "supply.updated", "claim.processed", "order.completed", "wallet.hold_posted"]
    {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }
    assert_eq!(types.iter().filter(|t| *t == "claim.processed").count(), 1);
}

#[rstest]
#[case::sqlite(Backend::Sqlite, Transport::Log)]
#[case::postgres(Backend::Postgres, Transport::Log)]
#[case::sqlite_kafka(Backend::Sqlite, Transport::Kafka)]
#[case::postgres_kafka(Backend::Postgres, Transport::Kafka)]
#[tokio::test]
async fn every_refusal_has_its_code(#[case] backend: Backend, #[case] transport: Transport) {
    let app = spawn(backend, transport).await;
    let admin = app.admin_token().await;
    let (buyer, shopper, poor) = (app.new_user().await, app.new_user().await, app.new_user().await);
    let o = order(&app, &buyer, "10").await;
    let oid = o["id"].as_str().unwrap().to_string();
    app.create_supply(&shopper.access, "USDC", "100").await;
    app.create_supply(&poor.access, "USDC", "9.999999").await;
    app.create_supply(&poor.access, "ETH", "1000").await;

    assert_problem(claim(&app, &buyer, &oid).await, 422, "CANNOT_CLAIM_OWN_ORDER").await;
    assert_problem(claim(&app, &poor, &oid).await, 422, "INSUFFICIENT_SUPPLY").await;
    let nobody = app.new_user().await;
    assert_problem(claim(&app, &nobody, &oid).await, 422, "INSUFFICIENT_SUPPLY").await;
    assert_problem(claim(&app, &shopper, &uuid::Uuid::now_v7().to_string()).await, 404, "NOT_FOUND").await;
    assert_problem(claim(&app, &shopper, "not-an-id").await, 422, "VALIDATION_FAILED").await;

    // A paused supply does not count.
    let paused_owner = app.new_user().await;
    let paused = app.create_supply(&paused_owner.access, "USDC", "50").await;
    let path = format!("/v1/supplies/{}", paused["id"].as_str().unwrap());
    app.patch(&path, &paused_owner.access).json(&json!({"status": "paused"})).send().await.unwrap();
    assert_problem(claim(&app, &paused_owner, &oid).await, 422, "INSUFFICIENT_SUPPLY").await;

    // A cancelled order cannot be claimed; to anyone who may not see it (GET is 404) it is not found.
    let cancelled = order(&app, &buyer, "1").await;
    let cid = cancelled["id"].as_str().unwrap();
    app.patch(&format!("/v1/orders/{cid}"), &buyer.access).json(&json!({"status": "cancelled"})).send().await.unwrap();
    assert_problem(app.get(&format!("/v1/orders/{cid}"), &shopper.access).send().await.unwrap(), 404, "NOT_FOUND")
        .await;
    assert_problem(claim(&app, &shopper, cid).await, 404, "NOT_FOUND").await;
    let res = app.post(&format!("/v1/orders/{cid}/claim"), &admin).send().await.unwrap();
    assert_problem(res, 422, "ORDER_NOT_CLAIMABLE").await;

    assert_eq!(claim(&app, &shopper, &oid).await.status(), 201);
    let loser = app.new_user().await;
    app.create_supply(&loser.access, "USDC", "100").await;
    let body = assert_problem(claim(&app, &loser, &oid).await, 409, "ORDER_ALREADY_CLAIMED").await;
    assert!(!body.to_string().contains(&shopper.user_id.to_string()), "a loser learns nothing about the winner");
    settle(&app, &admin).await;
    assert_problem(claim(&app, &loser, &oid).await, 409, "ORDER_ALREADY_CLAIMED").await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn only_the_claimer_releases_and_only_while_pending(#[case] backend: Backend) {
    // An API-only instance: claims stay pending until a processing instance starts.
    let api = TestApp::spawn_with(backend, |s| s.run_consumers = false).await;
    let admin = api.admin_token().await;
    let (buyer, shopper, stranger) = (api.new_user().await, api.new_user().await, api.new_user().await);
    let o = order(&api, &buyer, "5").await;
    let oid = o["id"].as_str().unwrap();
    api.create_supply(&shopper.access, "USDC", "5").await;
    let c: Value = claim(&api, &shopper, oid).await.json().await.unwrap();
    let release = format!("/v1/claims/{}/release", c["id"].as_str().unwrap());

    assert_problem(api.post(&release, &stranger.access).send().await.unwrap(), 404, "NOT_FOUND").await;
    assert_problem(api.post(&release, &buyer.access).send().await.unwrap(), 403, "FORBIDDEN").await;
    let released: Value = api.post(&release, &shopper.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(released["status"], "released");
    assert_problem(api.post(&release, &shopper.access).send().await.unwrap(), 409, "CLAIM_NOT_PENDING").await;

    // A processing instance on the same database picks up the log from the start.
    let url = api.settings.database_url();
    let worker = TestApp::spawn_with(backend, |s| s.database_url = Some(url)).await;
    settle(&worker, &admin).await;
    let reopened = wait_until(Duration::from_secs(30), || async {
        json_of(&worker, &format!("/v1/orders/{oid}"), &buyer.access).await["status"] == "pending"
    })
    .await;
    assert!(reopened, "the order was not claimable again");
    // And someone else can now claim it.
    let next = worker.new_user().await;
    worker.create_supply(&next.access, "USDC", "5").await;
    assert_eq!(claim(&worker, &next, oid).await.status(), 201);
    settle(&worker, &admin).await;
    let done = json_of(&worker, &format!("/v1/orders/{oid}"), &buyer.access).await;
    assert_eq!(done["status"], "completed");
    // The claim's 201 marked the order claimed; processing the release reopened it.
    let types = event_types(&worker, &admin).await;
    assert_eq!(types.iter().filter(|t| *t == "claim.released").count(), 1);
    assert_eq!(types.iter().filter(|t| *t == "claim.processed").count(), 1);
}

/// From a claim's 201 the buyer can neither change nor cancel nor delete the order: on an API-only
/// instance (nothing processes the claim) and with processing over Kafka. Raced with real
/// concurrency, a buyer's change either lands before the claim reads the order (the claim carries
/// the new amount), or between its read and its mark (the claim fails with `ORDER_CHANGED`), or is
/// refused: a claim never settles an amount its order no longer has.
#[rstest]
#[case::sqlite_api_only(Backend::Sqlite, Transport::Log, false)]
#[case::postgres_api_only(Backend::Postgres, Transport::Log, false)]
#[case::postgres_kafka(Backend::Postgres, Transport::Kafka, true)]
#[tokio::test]
async fn from_a_claims_201_the_order_does_not_change(
    #[case] backend: Backend,
    #[case] transport: Transport,
    #[case] consumers: bool,
) {
    let app = TestApp::spawn_with(backend, |s| {
        s.run_consumers = consumers;
        if let Transport::Kafka = transport {
            s.kafka = Some(testkit::kafka::settings(&testkit::kafka::brokers()));
        }
    })
    .await;
    let admin = app.admin_token().await;
    let (buyer, shopper) = (app.new_user().await, app.new_user().await);
    app.create_supply(&shopper.access, "USDC", "1000").await;
    let dearer = json!({"items": [{"product_id": "p", "product_name": "Dearer", "price": "20", "quantity": 1}]});

    let o = order(&app, &buyer, "10").await;
    let path = format!("/v1/orders/{}", o["id"].as_str().unwrap());
    assert_eq!(claim(&app, &shopper, o["id"].as_str().unwrap()).await.status(), 201);
    let res = app.patch(&path, &buyer.access).json(&dearer).send().await.unwrap();
    assert_problem(res, 409, "ORDER_NOT_PENDING").await;
    let res = app.patch(&path, &buyer.access).json(&json!({"status": "cancelled"})).send().await.unwrap();
    assert_problem(res, 409, "ORDER_NOT_PENDING").await;
    assert_problem(app.delete(&path, &buyer.access).send().await.unwrap(), 409, "ORDER_NOT_DELETABLE").await;
    assert_eq!(json_of(&app, &path, &buyer.access).await["amount"], "10.000000");

    // The race: the buyer changes the price of order k up to k % 5 times (until refused) while the
    // shopper claims it once.
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(order(&app, &buyer, "10").await["id"].as_str().unwrap().to_string());
    }
    let (app_ref, buyer_ref, shopper_ref) = (&app, &buyer, &shopper);
    let outcomes = futures::future::join_all(ids.iter().enumerate().map(|(k, oid)| async move {
        let changes = async {
            let mut last = (200, "10.000000".to_string());
            for i in 0..k % 5 {
                let price = if i % 2 == 0 { "20" } else { "30" };
                let body =
                    json!({"items": [{"product_id": "p", "product_name": "Dearer", "price": price, "quantity": 1}]});
                let res = app_ref.patch(&format!("/v1/orders/{oid}"), &buyer_ref.access).json(&body).send().await;
                let res = res.unwrap();
                let status = res.status().as_u16();
                let body: Value = res.json().await.unwrap();
                if status != 200 {
                    assert_eq!((status, body["code"].as_str()), (409, Some("ORDER_NOT_PENDING")), "{body}");
                    return (409, last.1);
                }
                last = (200, body["amount"].as_str().unwrap().to_string());
            }
            last
        };
        let take = async {
            let res = claim(app_ref, shopper_ref, oid).await;
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        };
        let ((changes_end, last_amount), claimed) = tokio::join!(changes, take);
        (oid.clone(), changes_end, last_amount, claimed)
    }))
    .await;
    let mut seen = HashMap::new();
    for (oid, changes_end, last_amount, (claim_status, claim_body)) in &outcomes {
        let kind = match (*claim_status, *changes_end) {
            (201, 409) => "claimed amid the changes, the next change refused",
            (201, _) => "claimed after the last change",
            (409, 200) => {
                assert_eq!(claim_body["code"], "ORDER_CHANGED", "{claim_body}");
                "a change landed between the claim's read and its mark"
            }
            other => panic!("order {oid}: claim and changes ended {other:?}: {claim_body}"),
        };
        *seen.entry(kind).or_insert(0) += 1;
        if *claim_status == 201 {
            // Frozen from the 201, at the amount the claim carries: the last change that passed.
            assert_eq!(&claim_body["amount"], last_amount.as_str(), "order {oid}");
            let o = json_of(&app, &format!("/v1/orders/{oid}"), &buyer.access).await;
            assert_eq!(o["amount"], claim_body["amount"], "order {oid}");
            assert_eq!(o["claim_id"], claim_body["id"], "order {oid}");
        }
    }
    eprintln!("outcomes of 40 races: {seen:?}");
    if consumers {
        settle(&app, &admin).await;
        for (oid, _, _, (claim_status, claim_body)) in &outcomes {
            let o = json_of(&app, &format!("/v1/orders/{oid}"), &buyer.access).await;
            let expected = if *claim_status == 201 { "completed" } else { "pending" };
            assert_eq!(o["status"], expected, "order {oid}");
            if *claim_status == 201 {
                assert_eq!(o["amount"], claim_body["amount"]);
            }
        }
        assert_nothing_parked(&app, &admin).await;
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite, Transport::Log)]
#[case::postgres(Backend::Postgres, Transport::Log)]
#[case::sqlite_kafka(Backend::Sqlite, Transport::Kafka)]
#[case::postgres_kafka(Backend::Postgres, Transport::Kafka)]
#[tokio::test]
async fn five_hundred_concurrent_claims_over_fifty_orders(#[case] backend: Backend, #[case] transport: Transport) {
    let app = spawn(backend, transport).await;
    let admin = app.admin_token().await;
    let buyers = futures::future::join_all((0..5).map(|_| app.new_user())).await;
    let shoppers = futures::future::join_all((0..100).map(|_| app.new_user())).await;
    let mut orders = Vec::new();
    for i in 0..50 {
        let o = order(&app, &buyers[i % 5], &format!("{}.5", i + 1)).await;
        orders.push((o["id"].as_str().unwrap().to_string(), dec(&o["amount"])));
    }
    let mut supplies = Vec::new();
    for s in &shoppers {
        supplies.push(app.create_supply(&s.access, "USDC", "1000").await["id"].as_str().unwrap().to_string());
    }

    let app_ref = &app;
    let statuses = futures::future::join_all((0..500).map(|i| {
        let (who, (oid, _)) = (&shoppers[i % 100], &orders[(i * 7) % 50]);
        async move {
            let res = claim(app_ref, who, oid).await;
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, body)
        }
    }))
    .await;
    let won = statuses.iter().filter(|(s, _)| *s == 201).count();
    let lost: Vec<_> = statuses.iter().filter(|(s, _)| *s == 409).collect();
    assert_eq!(won, 50, "exactly one claim per order");
    assert_eq!(lost.len(), 450);
    assert!(lost.iter().all(|(_, b)| b["code"] == "ORDER_ALREADY_CLAIMED"));

    settle(&app, &admin).await;
    let completed = wait_until(Duration::from_secs(60), || async {
        let mut all = true;
        for (oid, _) in &orders {
            all &= json_of(&app, &format!("/v1/orders/{oid}"), &admin).await["status"] == "completed";
        }
        all
    })
    .await;
    assert!(completed, "every order ends completed");

    assert_nothing_parked(&app, &admin).await;
    let processed = json_of(&app, "/v1/claims?status=processed&limit=500", &admin).await;
    assert_eq!(processed["items"].as_array().unwrap().len(), 50);
    let types = event_types(&app, &admin).await;
    assert_eq!(types.iter().filter(|t| *t == "claim.processed").count(), 50, "each claim processed exactly once");
    assert_eq!(types.iter().filter(|t| *t == "order.completed").count(), 50);

    let mut consumed = Decimal::ZERO;
    for sid in &supplies {
        let s = json_of(&app, &format!("/v1/supplies/{sid}"), &admin).await;
        assert!(dec(&s["available"]) >= Decimal::ZERO && dec(&s["amount"]) >= Decimal::ZERO);
        assert_eq!(dec(&s["reserved"]), Decimal::ZERO);
        consumed += Decimal::from(1000) - dec(&s["amount"]);
    }
    let ordered: Decimal = orders.iter().map(|(_, a)| *a).sum();
    assert_eq!(consumed, ordered, "consumed supply equals the sum of order amounts");
}

#[rstest]
#[case::sqlite(Backend::Sqlite, Transport::Log)]
#[case::postgres(Backend::Postgres, Transport::Log)]
#[case::sqlite_kafka(Backend::Sqlite, Transport::Kafka)]
#[case::postgres_kafka(Backend::Postgres, Transport::Kafka)]
#[tokio::test]
async fn shoppers_who_can_afford_one_order_race_for_many(#[case] backend: Backend, #[case] transport: Transport) {
    let app = spawn(backend, transport).await;
    let admin = app.admin_token().await;
    let buyer = app.new_user().await;
    let shoppers = futures::future::join_all((0..10).map(|_| app.new_user())).await;
    let mut orders = Vec::new();
    for _ in 0..20 {
        orders.push(order(&app, &buyer, "10").await["id"].as_str().unwrap().to_string());
    }
    let mut supplies = HashMap::new();
    for s in &shoppers {
        supplies
            .insert(s.user_id, app.create_supply(&s.access, "USDC", "10").await["id"].as_str().unwrap().to_string());
    }
    let app_ref = &app;
    let results = futures::future::join_all(
        shoppers
            .iter()
            .flat_map(|s| orders.iter().map(move |o| (s, o)))
            .map(|(s, o)| async move { claim(app_ref, s, o).await.status().as_u16() }),
    )
    .await;
    assert!(results.iter().all(|s| [201, 409, 422].contains(s)), "{results:?}");
    assert!(results.iter().filter(|s| **s == 201).count() >= 10);
    settle(&app, &admin).await;

    assert_nothing_parked(&app, &admin).await;
    let claims = json_of(&app, "/v1/claims?limit=500", &admin).await;
    let claims = claims["items"].as_array().unwrap();
    let mut processed_per_shopper: HashMap<String, usize> = HashMap::new();
    for c in claims {
        match c["status"].as_str().unwrap() {
            "processed" => *processed_per_shopper.entry(c["user_id"].as_str().unwrap().to_string()).or_default() += 1,
            // Refused in processing (the shopper could afford only one), or at the claim itself (it
            // lost to a claim that had just failed and not yet given the order back: answered 409).
            "failed" => assert!(
                c["failure_reason"].as_str().is_some_and(|r| r.starts_with("supply:") || r.starts_with("order:")),
                "{c}"
            ),
            other => panic!("claim left {other}: {c}"),
        }
    }
    assert!(processed_per_shopper.values().all(|n| *n == 1), "{processed_per_shopper:?}");
    let refused_in_processing = |c: &&Value| c["failure_reason"].as_str().is_some_and(|r| r.starts_with("supply:"));
    assert!(claims.iter().any(|c| refused_in_processing(&c)), "some shoppers won more than they could afford");
    let types = event_types(&app, &admin).await;
    let failed = claims.iter().filter(|c| c["status"] == "failed").count();
    assert_eq!(types.iter().filter(|t| *t == "claim.failed").count(), failed);
    // A claim refused in processing had marked its order and reopens it; one refused at the claim never held it.
    let held_then_failed = claims.iter().filter(|c| refused_in_processing(c)).count();
    assert_eq!(
        types.iter().filter(|t| *t == "order.reopened").count(),
        held_then_failed,
        "each claim that failed in processing reopened its order"
    );

    // Orders of failed claims are claimable again; completed ones have their processed claim.
    let mut completed = 0;
    for oid in &orders {
        let status = json_of(&app, &format!("/v1/orders/{oid}"), &admin).await["status"].as_str().unwrap().to_string();
        assert!(status == "completed" || status == "pending", "{status}");
        completed += usize::from(status == "completed");
    }
    assert_eq!(completed, processed_per_shopper.len());
    for (user, sid) in &supplies {
        let s = json_of(&app, &format!("/v1/supplies/{sid}"), &admin).await;
        assert_eq!(dec(&s["reserved"]), Decimal::ZERO);
        let spent = processed_per_shopper.contains_key(&user.to_string());
        assert_eq!(dec(&s["amount"]), if spent { Decimal::ZERO } else { Decimal::from(10) }, "{s}");
    }
    let rich = app.new_user().await;
    app.create_supply(&rich.access, "USDC", "1000").await;
    let mut claimed_again = false;
    for oid in &orders {
        if json_of(&app, &format!("/v1/orders/{oid}"), &admin).await["status"] == "pending" {
            assert_eq!(claim(&app, &rich, oid).await.status(), 201);
            claimed_again = true;
            break;
        }
    }
    assert!(claimed_again || completed == orders.len(), "a reopened order can be claimed");
}

/// Everything a redelivery could disturb, as the API shows it.
async fn snapshot(app: &TestApp, admin: &str, orders: &[String], supplies: &[String]) -> Value {
    let mut out = Vec::new();
    for oid in orders {
        out.push(json_of(app, &format!("/v1/orders/{oid}"), admin).await);
    }
    for sid in supplies {
        out.push(json_of(app, &format!("/v1/supplies/{sid}"), admin).await);
    }
    out.push(json_of(app, "/v1/claims?limit=500", admin).await);
    out.push(json!(event_types(app, admin).await));
    Value::Array(out)
}

/// Whether the claim processor has caught up with everything written so far.
async fn caught_up(db: &storage::Database, kafka: Option<&KafkaSettings>) -> bool {
    use events::{delivery, outbox};
    match kafka {
        None => delivery::load_position(db, "claim-processor").await.unwrap() >= outbox::head(db).await.unwrap(),
        Some(settings) => ::kafka::group_offsets(settings, walletd::TOPICS, "claim-processor")
            .await
            .unwrap()
            .iter()
            .all(|p| p.lag() == 0),
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite, Transport::Log)]
#[case::postgres(Backend::Postgres, Transport::Log)]
#[case::postgres_kafka(Backend::Postgres, Transport::Kafka)]
#[tokio::test]
async fn redelivered_events_and_a_restarted_consumer_change_nothing(
    #[case] backend: Backend,
    #[case] transport: Transport,
) {
    use events::delivery;
    use kafka as k;
    use storage::Database;
    // Over Kafka, a broker of its own: "caught up" means every partition's end, which other tests
    // would keep moving.
    let broker = matches!(transport, Transport::Kafka).then(testkit::kafka::PrivateKafka::start);
    let kafka = broker.as_ref().map(|b| testkit::kafka::settings(&b.brokers()));
    let spawn_on = |url: Option<String>| {
        let kafka = kafka.clone();
        TestApp::spawn_with(backend, move |s| {
            s.database_url = url.or(s.database_url.take());
            s.kafka = kafka;
        })
    };
    let first = spawn_on(None).await;
    let admin = first.admin_token().await;
    let buyer = first.new_user().await;
    let mut orders = Vec::new();
    let mut supplies = Vec::new();
    let mut shoppers = Vec::new();
    for i in 0..12 {
        orders.push(order(&first, &buyer, &format!("{}", i + 1)).await["id"].as_str().unwrap().to_string());
        let s = first.new_user().await;
        supplies.push(first.create_supply(&s.access, "USDC", "20").await["id"].as_str().unwrap().to_string());
        shoppers.push(s);
    }
    // Claim, and stop the processing instance while it works through them.
    let first_ref = &first;
    let statuses = futures::future::join_all(
        orders.iter().zip(&shoppers).map(|(o, s)| async move { claim(first_ref, s, o).await.status() }),
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 201));
    let url = first.settings.database_url();
    let _data = first.stop().await;

    // A new instance resumes from the group's persisted position (or committed offsets).
    let mut app = spawn_on(Some(url.clone())).await;
    settle(&app, &admin).await;
    let db = Database::connect(&url, &app.settings.db_options()).await.unwrap();
    assert!(wait_until(Duration::from_secs(30), || caught_up(&db, kafka.as_ref())).await);
    let before = snapshot(&app, &admin, &orders, &supplies).await;
    let types = before.as_array().unwrap().last().unwrap().as_array().unwrap().clone();
    assert_eq!(types.iter().filter(|t| *t == "claim.processed").count(), 12, "each claim processed exactly once");

    // The whole log again: first the inbox turns every event away, then the handler itself sees
    // every event a second time.
    for forget in [false, true] {
        match &kafka {
            None => delivery::replay(&db, "claim-processor", 0, forget).await.unwrap(),
            Some(settings) => {
                // Kafka moves a group's offsets only while it has no member.
                let _data = app.stop().await;
                assert!(k::rewind_group(settings, walletd::TOPICS, "claim-processor").await.unwrap() > 0);
                assert!(!caught_up(&db, Some(settings)).await, "the rewind moved nothing back");
                if forget {
                    delivery::forget_handled_events(&db, "claim-processor").await.unwrap();
                }
                app = spawn_on(Some(url.clone())).await;
            }
        }
        assert!(wait_until(Duration::from_secs(30), || caught_up(&db, kafka.as_ref())).await, "replay did not finish");
        assert_eq!(snapshot(&app, &admin, &orders, &supplies).await, before, "a redelivery changed something");
        assert_nothing_parked(&app, &admin).await;
    }
}

async fn assert_nothing_parked(app: &TestApp, admin: &str) {
    let parked = json_of(app, "/v1/admin/parked-events", admin).await;
    assert_eq!(parked["items"], json!([]), "events were parked");
}
