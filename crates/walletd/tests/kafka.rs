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
