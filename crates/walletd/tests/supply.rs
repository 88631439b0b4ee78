//! The supply service end to end, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use rstest::rstest;
use serde_json::{Value, json};
use testkit::{Backend, TestApp, assert_problem};

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn create_get_patch_list_delete(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_user().await;

    let res =
        app.post("/v1/supplies", &s.access).json(&json!({"currency": "eth", "amount": "1.5"})).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(res.headers()["etag"], "\"1\"");
    let created: Value = res.json().await.unwrap();
    assert_eq!(location, format!("/v1/supplies/{}", created["id"].as_str().unwrap()));
    assert_eq!(created["currency"], "ETH");
    assert_eq!(created["amount"], "1.500000000000000000");
    assert_eq!(created["reserved"], "0.000000000000000000");
    assert_eq!(created["available"], "1.500000000000000000");
    assert_eq!(created["status"], "active");
    assert_eq!(created["version"], 1);
    assert_eq!(created["user_id"], s.user_id.to_string());

    let got: Value = app.get(&location, &s.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(got, created);

    let res = app
        .patch(&location, &s.access)
        .header("if-match", "\"1\"")
        .json(&json!({"amount": "2", "status": "paused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let patched: Value = res.json().await.unwrap();
    assert_eq!(patched["amount"], "2.000000000000000000");
    assert_eq!(patched["status"], "paused");
    assert_eq!(patched["version"], 2);

    // A stale version is 412, by header or by body.
    let res =
        app.patch(&location, &s.access).header("if-match", "\"1\"").json(&json!({"amount": "3"})).send().await.unwrap();
    assert_problem(res, 412, "VERSION_MISMATCH").await;
    let res = app.patch(&location, &s.access).json(&json!({"amount": "3", "version": 1})).send().await.unwrap();
    assert_problem(res, 412, "VERSION_MISMATCH").await;

    let list: Value = app.get("/v1/supplies", &s.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["next_cursor"], Value::Null);

    let res = app.delete(&location, &s.access).header("if-match", "\"1\"").send().await.unwrap();
    assert_problem(res, 412, "VERSION_MISMATCH").await;
    assert_eq!(app.delete(&location, &s.access).header("if-match", "\"2\"").send().await.unwrap().status(), 204);
    assert_problem(app.get(&location, &s.access).send().await.unwrap(), 404, "NOT_FOUND").await;
    assert_problem(app.delete(&location, &s.access).send().await.unwrap(), 404, "NOT_FOUND").await;
    let list: Value = app.get("/v1/supplies", &s.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"], json!([]));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn status_rules_hold(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_user().await;
    let supply = app.create_supply(&s.access, "USDC", "10").await;
    let path = format!("/v1/supplies/{}", supply["id"].as_str().unwrap());

    let res = app.patch(&path, &s.access).json(&json!({"status": "deleted"})).send().await.unwrap();
    assert_eq!(testkit::problem_fields(&assert_problem(res, 422, "VALIDATION_FAILED").await), vec!["status"]);
    let res = app.patch(&path, &s.access).json(&json!({"amount": "0"})).send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "depleted");
    assert_eq!(body["available"], "0.000000");
    let res = app.patch(&path, &s.access).json(&json!({"status": "paused"})).send().await.unwrap();
    assert_problem(res, 409, "INVALID_STATUS_TRANSITION").await;
    let res = app.patch(&path, &s.access).json(&json!({"amount": "5"})).send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "active");
    let res = app.patch(&path, &s.access).json(&json!({})).send().await.unwrap();
    assert_problem(res, 422, "VALIDATION_FAILED").await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn others_supplies_are_404_and_admins_see_all(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, other) = (app.new_user().await, app.new_user().await);
    let admin = app.admin_token().await;
    let supply = app.create_supply(&owner.access, "BTC", "0.5").await;
    let path = format!("/v1/supplies/{}", supply["id"].as_str().unwrap());

    assert_problem(app.get(&path, &other.access).send().await.unwrap(), 404, "NOT_FOUND").await;
    let res = app.patch(&path, &other.access).json(&json!({"amount": "9"})).send().await.unwrap();
    assert_problem(res, 404, "NOT_FOUND").await;
    assert_problem(app.delete(&path, &other.access).send().await.unwrap(), 404, "NOT_FOUND").await;
    let list: Value = app.get("/v1/supplies", &other.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"], json!([]));
    let res = app.get(&format!("/v1/supplies?user_id={}", owner.user_id), &other.access).send().await.unwrap();
    assert_problem(res, 403, "FORBIDDEN").await;

    // Unchanged by the attempts.
    let got: Value = app.get(&path, &owner.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["version"], 1);

    assert_eq!(app.get(&path, &admin).send().await.unwrap().status(), 200);
    let list: Value =
        app.get(&format!("/v1/supplies?user_id={}", owner.user_id), &admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"][0]["id"], supply["id"]);
    let res = app.patch(&path, &admin).json(&json!({"amount": "0.75"})).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.delete(&path, &admin).send().await.unwrap().status(), 204);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn lists_page_newest_first_with_filters(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_user().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let currency = if i % 2 == 0 { "USDC" } else { "SOL" };
        ids.push(
            app.create_supply(&s.access, currency, &format!("{}", i + 1)).await["id"].as_str().unwrap().to_string(),
        );
    }
    ids.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/supplies?limit=2&cursor={c}"),
            None => "/v1/supplies?limit=2".to_string(),
        };
        let page: Value = app.get(&path, &s.access).send().await.unwrap().json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let usdc: Value = app.get("/v1/supplies?currency=usdc", &s.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(usdc["items"].as_array().unwrap().len(), 3);
    app.patch(&format!("/v1/supplies/{}", ids[0]), &s.access).json(&json!({"status": "paused"})).send().await.unwrap();
    let paused: Value = app.get("/v1/supplies?status=paused", &s.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(paused["items"].as_array().unwrap().len(), 1);
    assert_eq!(paused["items"][0]["id"], ids[0].as_str());
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn concurrent_patches_with_one_if_match_admit_exactly_one(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_user().await;
    let supply = app.create_supply(&s.access, "USDT", "100").await;
    let path = format!("/v1/supplies/{}", supply["id"].as_str().unwrap());
    let statuses = futures::future::join_all((0..16).map(|i| {
        let req =
            app.patch(&path, &s.access).header("if-match", "\"1\"").json(&json!({"amount": format!("{}", 200 + i)}));
        async move { req.send().await.unwrap().status().as_u16() }
    }))
    .await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 15, "{statuses:?}");
    let got: Value = app.get(&path, &s.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["version"], 2);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn every_change_is_in_the_event_log(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_unfunded_user().await;
    let res = app
        .post("/v1/supplies", &s.access)
        .header("x-request-id", "req-create-1")
        .json(&json!({"currency": "SOL", "amount": "3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-create-1");
    let supply: Value = res.json().await.unwrap();
    let path = format!("/v1/supplies/{}", supply["id"].as_str().unwrap());
    app.patch(&path, &s.access).json(&json!({"amount": "4"})).send().await.unwrap();
    app.delete(&path, &s.access).send().await.unwrap();
    // A refused change writes no event.
    app.patch(&path, &s.access).json(&json!({"amount": "5"})).send().await.unwrap();

    assert_problem(app.get("/v1/admin/events", &s.access).send().await.unwrap(), 403, "FORBIDDEN").await;
    let admin = app.admin_token().await;
    let page: Value = app.get("/v1/admin/events?limit=10", &admin).send().await.unwrap().json().await.unwrap();
    let events = page["items"].as_array().unwrap();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["supply.created", "supply.updated", "supply.deleted"]);
    for e in events {
        assert_eq!(e["aggregate_id"], supply["id"]);
        assert_eq!(e["topic"], "supply-events");
        assert_eq!(e["version"], 1);
        assert_eq!(e["region"], "local");
        assert!(e["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap().get_version_num() == 7);
    }
    assert_eq!(events[0]["correlation_id"], "req-create-1");
    assert!(events.iter().all(|e| e["actor_id"] == s.user_id.to_string()), "the audit trail names who acted");
    assert_eq!(events[0]["data"]["amount"], "3.000000000");
    assert_eq!(events[1]["data"]["amount"], "4.000000000");
    assert_eq!(events[2]["data"]["status"], "deleted");

    let after = events[0]["seq"].as_i64().unwrap();
    let page: Value =
        app.get(&format!("/v1/admin/events?after={after}&limit=1"), &admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(page["items"][0]["type"], "supply.updated");
    assert!(page["next_cursor"].is_string());
}
