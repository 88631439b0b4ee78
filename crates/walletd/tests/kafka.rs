//! The outbox relay against a real Kafka-protocol broker (tansu): what reaches the topics, a broker
//! outage under writes, and the relay lease.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::collections::HashSet;
use std::time::Duration;

use rstest::rstest;
use serde_json::{Value, json};
use testkit::kafka::{PrivateKafka, brokers, read_topic, settings};
use testkit::platform::db::Database;
use testkit::platform::kafka::Relay;
use testkit::platform::outbox;
use testkit::{Backend, TestApp, wait_until};

async fn unpublished(app: &TestApp) -> i64 {
    let db = Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    outbox::unpublished_count(&db).await.unwrap()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_relay_publishes_every_event_keyed_by_aggregate_with_headers(#[case] backend: Backend) {
    let brokers = brokers();
    let app = TestApp::spawn_with(backend, |s| s.kafka = Some(settings(&brokers))).await;
    let s = app.new_user().await;
    let res = app
        .post("/v1/supplies", &s.access)
        .header("x-request-id", "kafka-req-1")
        .json(&json!({"currency": "USDC", "amount": "5"}))
        .send()
        .await
        .unwrap();
    let supply: Value = res.json().await.unwrap();
    let id = supply["id"].as_str().unwrap().to_string();
    for amount in ["6", "7"] {
        app.patch(&format!("/v1/supplies/{id}"), &s.access).json(&json!({"amount": amount})).send().await.unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(30), || async { unpublished(&app).await == 0 }).await,
        "the outbox did not drain"
    );

    let mine = |got: &[testkit::kafka::Received]| got.iter().filter(|m| m.key == id).count() >= 3;
    let got: Vec<_> = read_topic(&brokers, "supply-events", Duration::from_secs(30), mine)
        .into_iter()
        .filter(|m| m.key == id)
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    let types: Vec<&str> = got.iter().map(|m| m.headers["event_type"].as_str()).collect();
    assert_eq!(types, ["supply.created", "supply.updated", "supply.updated"], "one aggregate's events in order");
    assert!(got.iter().all(|m| m.partition == got[0].partition), "one aggregate, one partition");
    assert_eq!(got[0].headers["correlation_id"], "kafka-req-1");
    assert_eq!(got[0].headers["region"], "local");
    for m in &got {
        assert_eq!(m.headers["event_id"], m.payload["id"].as_str().unwrap());
        assert_eq!(m.payload["aggregate_id"], id.as_str());
    }
    assert_eq!(got[2].payload["data"]["amount"], "7.000000");
}

#[tokio::test]
async fn a_broker_outage_loses_nothing() {
    let mut kafka = PrivateKafka::start();
    let app = TestApp::spawn_with(Backend::Postgres, |s| s.kafka = Some(settings(&kafka.brokers()))).await;
    let s = app.new_user().await;
    app.create_supply(&s.access, "USDC", "1").await;
    assert!(wait_until(Duration::from_secs(30), || async { unpublished(&app).await == 0 }).await);

    kafka.stop();
    let mut ids = HashSet::new();
    for i in 0..20 {
        let res = app
            .post("/v1/supplies", &s.access)
            .json(&json!({"currency": "USDC", "amount": format!("{}", i + 2)}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "writes keep answering while the broker is down");
        ids.insert(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    assert!(unpublished(&app).await >= 20, "the events wait in the outbox");

    kafka.start_again();
    assert!(
        wait_until(Duration::from_secs(60), || async { unpublished(&app).await == 0 }).await,
        "the outbox did not drain"
    );
    let seen = |got: &[testkit::kafka::Received]| ids.iter().all(|id| got.iter().any(|m| &m.key == id));
    let got = read_topic(&kafka.brokers(), "supply-events", Duration::from_secs(30), seen);
    assert!(seen(&got), "events lost in the outage");
}

#[tokio::test]
async fn one_relay_holds_the_lease_and_another_takes_over_when_it_lapses() {
    let brokers = brokers();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let s = app.new_user().await;
    app.create_supply(&s.access, "USDC", "1").await;
    let db = Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    let first = Relay::new(db.clone(), &settings(&brokers)).unwrap().with_lease(Duration::from_secs(2));
    let second = Relay::new(db.clone(), &settings(&brokers)).unwrap().with_lease(Duration::from_secs(2));
    assert!(first.publish_once().await.unwrap() >= 1);
    app.create_supply(&s.access, "USDC", "2").await;
    assert_eq!(second.publish_once().await.unwrap(), 0, "the first relay holds the lease");
    // The first relay stops renewing (as if it died): the second takes over once the lease lapses.
    let took_over = wait_until(Duration::from_secs(10), || async { second.publish_once().await.unwrap() >= 1 }).await;
    assert!(took_over);
    assert_eq!(outbox::unpublished_count(&db).await.unwrap(), 0);
}

async fn json_of(app: &TestApp, path: &str, token: &str) -> Value {
    app.get(path, token).send().await.unwrap().json().await.unwrap()
}

async fn order(app: &TestApp, token: &str, price: &str) -> String {
    let body =
        json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": price, "quantity": 1}]});
    let o: Value = app.post("/v1/orders", token).json(&body).send().await.unwrap().json().await.unwrap();
    o["id"].as_str().unwrap().to_string()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn claims_are_processed_over_kafka(#[case] backend: Backend) {
    let brokers = brokers();
    let kafka = settings(&brokers);
    let app = TestApp::spawn_with(backend, |s| s.kafka = Some(kafka)).await;
    let admin = app.admin_token().await;
    let buyer = app.new_user().await;
    let shoppers = futures::future::join_all((0..5).map(|_| app.new_user())).await;
    let mut supplies = Vec::new();
    for s in &shoppers {
        supplies.push(app.create_supply(&s.access, "USDC", "100").await["id"].as_str().unwrap().to_string());
    }
    let mut orders = Vec::new();
    for i in 0..10 {
        orders.push(order(&app, &buyer.access, &format!("{}", i + 1)).await);
    }
    let app_ref = &app;
    let statuses = futures::future::join_all(orders.iter().enumerate().map(|(i, o)| {
        let token = shoppers[i % 5].access.clone();
        async move { app_ref.post(&format!("/v1/orders/{o}/claim"), &token).send().await.unwrap().status().as_u16() }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let done = wait_until(Duration::from_secs(60), || async {
        let mut all = true;
        for o in &orders {
            all &= json_of(&app, &format!("/v1/orders/{o}"), &admin).await["status"] == "completed";
        }
        all
    })
    .await;
    assert!(done, "orders not completed through Kafka");
    let db = Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    let positions = testkit::platform::events::positions(&db).await.unwrap();
    assert!(positions.iter().all(|(g, _)| g != "claim-processor"), "the embedded log was used: {positions:?}");
    let log = outbox::list(&db, 0, 10_000).await.unwrap();
    assert_eq!(log.iter().filter(|e| e.event_type == "claim.processed").count(), 10, "each claim processed once");
    let mut consumed = rust_decimal::Decimal::ZERO;
    for sid in &supplies {
        let s = json_of(&app, &format!("/v1/supplies/{sid}"), &admin).await;
        assert_eq!(s["reserved"], "0.000000");
        consumed +=
            rust_decimal::Decimal::from(100) - s["amount"].as_str().unwrap().parse::<rust_decimal::Decimal>().unwrap();
    }
    assert_eq!(consumed, rust_decimal::Decimal::from(55));
}

#[tokio::test]
async fn a_poison_event_goes_to_the_dead_letter_topic_and_later_events_flow() {
    // A broker of its own: the poison must not reach other tests' consumers on the shared one.
    let kafka = PrivateKafka::start();
    let brokers = kafka.brokers();
    let app = TestApp::spawn_with(Backend::Postgres, |s| s.kafka = Some(settings(&brokers))).await;
    let admin = app.admin_token().await;
    // An order.claimed event without a claim: the processor cannot handle it, ever.
    let db = Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    let poison_order = uuid::Uuid::now_v7();
    let Database::Postgres(pool) = &db else { unreachable!() };
    {
        let mut c = pool.get().await.unwrap();
        let tx = c.transaction().await.unwrap();
        let event = outbox::NewEvent {
            event_type: "order.claimed",
            version: 1,
            topic: "order-events",
            aggregate_id: poison_order,
            data: json!({"no": "claim id"}),
        };
        outbox::insert_pg(&tx, &outbox::EventContext { region: "local".into(), ..Default::default() }, &event)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        outbox::notify_written();
    }
    // A real claim after it is still processed.
    let (buyer, shopper) = (app.new_user().await, app.new_user().await);
    app.create_supply(&shopper.access, "USDC", "10").await;
    let oid = order(&app, &buyer.access, "3").await;
    assert_eq!(app.post(&format!("/v1/orders/{oid}/claim"), &shopper.access).send().await.unwrap().status(), 201);
    let processed = wait_until(Duration::from_secs(60), || async {
        json_of(&app, &format!("/v1/orders/{oid}"), &admin).await["status"] == "completed"
    })
    .await;
    assert!(processed, "a poison event blocked the events after it");
    // Parked for admins once its retries are spent (it may sit on another partition than the claim).
    let parked = wait_until(Duration::from_secs(30), || async {
        let parked = json_of(&app, "/v1/admin/parked-events", &admin).await;
        parked["items"].as_array().unwrap().iter().any(|p| p["event_type"] == "order.claimed")
    })
    .await;
    assert!(parked, "the poison event is not parked");
    // Wait for our own parking first: then our instance has dead-lettered it too.
    let key = poison_order.to_string();
    let dead =
        read_topic(&brokers, "order-events.dlq", Duration::from_secs(30), |got| got.iter().any(|m| m.key == key));
    let dead = dead.iter().find(|m| m.key == key).expect("the poison event reached order-events.dlq");
    assert!(dead.headers["error"].contains("no claim id"), "{:?}", dead.headers);
}
