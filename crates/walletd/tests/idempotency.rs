//! `Idempotency-Key` on POST (API.md), on both backends: a retry gets the first answer, another
//! request under the same key is refused, a key still running is refused, concurrent retries of a
//! claim make one claim.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use rstest::rstest;
use serde_json::{Value, json};
use storage::Database;
use testkit::{Backend, TestApp, assert_problem};

fn order_body(price: &str) -> Value {
    json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": price, "quantity": 1}]})
}

async fn count_orders(app: &TestApp, token: &str) -> usize {
    let list: Value = app.get("/v1/orders?limit=500", token).send().await.unwrap().json().await.unwrap();
    list["items"].as_array().unwrap().len()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_retry_gets_the_first_answer_and_another_request_is_refused(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let buyer = app.new_user().await;
    let post = |key: &str, price: &str| {
        app.post("/v1/orders", &buyer.access).header("idempotency-key", key).json(&order_body(price)).send()
    };
    let first = post("order-1", "5").await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].clone();
    let first: Value = first.json().await.unwrap();

    let again = post("order-1", "5").await.unwrap();
    assert_eq!(again.status(), 201, "the first status again");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.json::<Value>().await.unwrap(), first, "the first body again");
    assert_eq!(count_orders(&app, &buyer.access).await, 1, "one order, however many retries");

    let other = post("order-1", "6").await.unwrap();
    let problem = assert_problem(other, 422, "IDEMPOTENCY_KEY_REUSED").await;
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");

    // Keys are the principal's own: another user's same key is a new request.
    let someone = app.new_user().await;
    let theirs = app
        .post("/v1/orders", &someone.access)
        .header("idempotency-key", "order-1")
        .json(&order_body("5"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 201);
    assert_ne!(theirs.json::<Value>().await.unwrap()["id"], first["id"]);

    // Without a key, each POST is its own.
    let plain = app.post("/v1/orders", &buyer.access).json(&order_body("5")).send().await.unwrap();
    assert_eq!(plain.status(), 201);
    assert_eq!(count_orders(&app, &buyer.access).await, 2);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_refusal_is_replayed_too_and_a_bad_key_is_named(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let shopper = app.new_user().await;
    let missing = uuid::Uuid::now_v7();
    let claim =
        || app.post(&format!("/v1/orders/{missing}/claim"), &shopper.access).header("idempotency-key", "c-1").send();
    let first = claim().await.unwrap();
    assert_eq!(first.status(), 404);
    let first: Value = first.json().await.unwrap();
    let again = claim().await.unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    for bad in ["x".repeat(256), "has space".to_string()] {
        let res = app
            .post("/v1/orders", &shopper.access)
            .header("idempotency-key", bad)
            .json(&order_body("1"))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(res, 422, "VALIDATION_FAILED").await;
        assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    }
    assert_eq!(count_orders(&app, &shopper.access).await, 0, "a refused key runs nothing");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_key_still_running_is_refused(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let buyer = app.new_user().await;
    // A request under this key is in progress (as another instance would have recorded it).
    let db = Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    let now = base::clock::now();
    match &db {
        Database::Postgres(pool) => {
            pool.get()
                .await
                .unwrap()
                .execute(
                    "INSERT INTO idempotency_keys (principal_id, key, fingerprint, created_at) VALUES ($1, 'busy', 'f', $2)",
                    &[&buyer.user_id, &now],
                )
                .await
                .unwrap();
        }
        Database::Sqlite(pool) => {
            let (user, at) = (buyer.user_id.to_string(), base::clock::to_text(now));
            pool.call(move |c| {
                c.execute(
                    "INSERT INTO idempotency_keys (principal_id, key, fingerprint, created_at) VALUES (?1, 'busy', 'f', ?2)",
                    [user, at],
                )
                .map_err(anyhow::Error::from)
            })
            .await
            .unwrap();
        }
    }
    let res = app
        .post("/v1/orders", &buyer.access)
        .header("idempotency-key", "busy")
        .json(&order_body("1"))
        .send()
        .await
        .unwrap();
    assert_problem(res, 409, "IDEMPOTENCY_KEY_IN_USE").await;
    assert_eq!(count_orders(&app, &buyer.access).await, 0);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn concurrent_retries_of_a_claim_make_one_claim(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (buyer, shopper) = (app.new_user().await, app.new_user().await);
    app.create_supply(&shopper.access, "USDC", "100").await;
    let order: Value =
        app.post("/v1/orders", &buyer.access).json(&order_body("3")).send().await.unwrap().json().await.unwrap();
    let oid = order["id"].as_str().unwrap();
    let (app_ref, token) = (&app, shopper.access.as_str());
    let answers = futures::future::join_all((0..20).map(|_| async move {
        let res = app_ref
            .post(&format!("/v1/orders/{oid}/claim"), token)
            .header("idempotency-key", "claim-once")
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap())
    }))
    .await;
    let won: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b).collect();
    assert!(!won.is_empty(), "{answers:?}");
    assert!(won.iter().all(|b| b["id"] == won[0]["id"]), "every 201 is the same claim");
    for (status, body) in &answers {
        assert!(*status == 201 || (*status == 409 && body["code"] == "IDEMPOTENCY_KEY_IN_USE"), "{status} {body}");
    }
    let claims: Value = app.get("/v1/claims?limit=500", &shopper.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(claims["items"].as_array().unwrap().len(), 1, "one claim");
}
