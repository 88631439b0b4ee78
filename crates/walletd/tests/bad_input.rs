//! Bad input gets a 4xx problem+json with a stable code naming the field; never a 500.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use rstest::rstest;
use serde_json::json;
use testkit::{Backend, TestApp, assert_problem, problem_fields};

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn bad_supply_bodies_are_refused_with_the_field_named(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_user().await;
    let post = |body: serde_json::Value| app.post("/v1/supplies", &s.access).json(&body).send();

    let cases = [
        (json!({"currency": "DOGE", "amount": "1"}), vec!["currency"]),
        (json!({"currency": "USDC", "amount": "1.0000001"}), vec!["amount"]),
        (json!({"currency": "USDC", "amount": "-5"}), vec!["amount"]),
        (json!({"currency": "USDC", "amount": 5}), vec!["amount"]),
        (json!({"currency": "USDC", "amount": 5.5}), vec!["amount"]),
        (json!({"currency": "USDC", "amount": "1e3"}), vec!["amount"]),
        (json!({"currency": "USDC", "amount": "0"}), vec!["amount"]),
        (json!({"currency": "USDC"}), vec!["amount"]),
        (json!({"currency": "USDC", "amount": "1", "owner": "x"}), vec!["owner"]),
        (json!({"currency": "USDC", "amount": "99999999999999999999999999"}), vec!["amount"]),
    ];
    for (body, fields) in cases {
        let problem = assert_problem(post(body.clone()).await.unwrap(), 422, "VALIDATION_FAILED").await;
        assert_eq!(problem_fields(&problem), fields, "{body}");
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn malformed_requests_get_the_right_status(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_user().await;

    let res =
        app.post("/v1/supplies", &s.access).header("content-type", "application/json").body("{\"currency\":").send();
    assert_problem(res.await.unwrap(), 400, "MALFORMED_JSON").await;

    let res = app.post("/v1/supplies", &s.access).header("content-type", "text/plain").body("{}").send();
    assert_problem(res.await.unwrap(), 415, "UNSUPPORTED_MEDIA_TYPE").await;
    let res = app.post("/v1/supplies", &s.access).body("{}").send();
    assert_problem(res.await.unwrap(), 415, "UNSUPPORTED_MEDIA_TYPE").await;

    let big = format!("{{\"currency\":\"USDC\",\"amount\":\"1\",\"pad\":\"{}\"}}", "x".repeat(1024 * 1024 + 1));
    let res = app.post("/v1/supplies", &s.access).header("content-type", "application/json").body(big).send();
    assert_problem(res.await.unwrap(), 413, "PAYLOAD_TOO_LARGE").await;

    let problem =
        assert_problem(app.get("/v1/supplies/not-a-uuid", &s.access).send().await.unwrap(), 422, "VALIDATION_FAILED")
            .await;
    assert_eq!(problem_fields(&problem), vec!["id"]);
    let res = app.patch("/v1/supplies/123", &s.access).json(&json!({"amount": "1"})).send();
    assert_problem(res.await.unwrap(), 422, "VALIDATION_FAILED").await;
    let res = app.delete("/v1/supplies/zzz", &s.access).send();
    assert_problem(res.await.unwrap(), 422, "VALIDATION_FAILED").await;

    for forged in ["garbage", "d2MxAAAAAAAAAAAAAAAAAAAAAAA", "AAAA", "%00"] {
        let res = app.get(&format!("/v1/supplies?cursor={forged}"), &s.access).send().await.unwrap();
        let problem = assert_problem(res, 422, "VALIDATION_FAILED").await;
        assert_eq!(problem_fields(&problem), vec!["cursor"], "{forged}");
    }
    let problem =
        assert_problem(app.get("/v1/supplies?limit=0", &s.access).send().await.unwrap(), 422, "VALIDATION_FAILED")
            .await;
    assert_eq!(problem_fields(&problem), vec!["limit"]);
    let problem =
        assert_problem(app.get("/v1/supplies?limit=abc", &s.access).send().await.unwrap(), 422, "VALIDATION_FAILED")
            .await;
    assert_eq!(problem_fields(&problem), vec!["limit"]);
    let problem =
        assert_problem(app.get("/v1/supplies?user_id=nope", &s.access).send().await.unwrap(), 422, "VALIDATION_FAILED")
            .await;
    assert_eq!(problem_fields(&problem), vec!["user_id"]);
    let problem =
        assert_problem(app.get("/v1/supplies?status=gone", &s.access).send().await.unwrap(), 422, "VALIDATION_FAILED")
            .await;
    assert_eq!(problem_fields(&problem), vec!["status"]);

    let supply = app.create_supply(&s.access, "ETH", "1").await;
    let path = format!("/v1/supplies/{}", supply["id"].as_str().unwrap());
    let res = app.patch(&path, &s.access).header("if-match", "banana").json(&json!({"amount": "2"})).send();
    assert_problem(res.await.unwrap(), 422, "VALIDATION_FAILED").await;
    let problem = assert_problem(
        app.patch(&path, &s.access).json(&json!({"amount": "1.0000000000000000001"})).send().await.unwrap(),
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(problem_fields(&problem), vec!["amount"]);

    assert_problem(app.get("/v1/nowhere", &s.access).send().await.unwrap(), 404, "NOT_FOUND").await;
}
