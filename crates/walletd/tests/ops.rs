//! Operations: metrics per route pattern, health, readiness that follows PostgreSQL, OpenAPI, request ids.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::Duration;

use serde_json::Value;
use testkit::pg::{PrivatePostgres, fresh_database};
use testkit::{Backend, TestApp, wait_until};

#[tokio::test]
async fn metrics_show_latency_histograms_per_route_pattern() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let s = app.new_user().await;
    let supply = app.create_supply(&s.access, "USDC", "1").await;
    let path = format!("/v1/supplies/{}", supply["id"].as_str().unwrap());
    for _ in 0..3 {
        assert_eq!(app.get(&path, &s.access).send().await.unwrap().status(), 200);
    }
    let text = app.client.get(format!("{}/metrics", app.metrics_base)).send().await.unwrap().text().await.unwrap();
    let bucket = text
        .lines()
        .find(|l| {
            l.starts_with("http_request_duration_seconds_bucket")
                && l.contains("route=\"/v1/supplies/{id}\"")
                && l.contains("method=\"GET\"")
                && l.contains("le=\"+Inf\"")
        })
        .unwrap_or_else(|| panic!("no histogram for the route pattern in:\n{text}"));
    assert!(bucket.ends_with(" 3"), "{bucket}");
    assert!(text.contains("walletd_build_info"), "build info missing");
    assert!(!text.contains(supply["id"].as_str().unwrap()), "ids must not become labels");
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let res = app.client.get(app.url("/health/live")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app.client.get(app.url("/health/live")).send().await.unwrap();
    assert!(res.headers()["x-request-id"].to_str().unwrap().parse::<uuid::Uuid>().is_ok());
    // Errors carry it too.
    let res = app.client.get(app.url("/v1/me")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("x-request-id"));
    // Only a short token is taken as it is; anything else gets an id of ours.
    for bad in ["x".repeat(65), "has space".into(), "semi;colon".into(), "quote\"".into()] {
        let res = app.client.get(app.url("/health/live")).header("x-request-id", bad.as_str()).send().await.unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap();
        assert!(id.parse::<uuid::Uuid>().is_ok(), "{bad:?} was kept as {id:?}");
    }
    let longest = "a".repeat(64);
    let res = app.client.get(app.url("/health/live")).header("x-request-id", longest.as_str()).send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], longest.as_str());
}

#[tokio::test]
async fn a_method_a_client_invents_is_one_metrics_label() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for name in ["FOOBAR", "BAZQUUX", "X-ANYTHING"] {
        let method = reqwest::Method::from_bytes(name.as_bytes()).unwrap();
        let res = app.client.request(method, app.url("/health/live")).send().await.unwrap();
        assert!(res.status().is_client_error(), "{name}: {}", res.status());
    }
    let text = app.client.get(format!("{}/metrics", app.metrics_base)).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("FOOBAR") && !text.contains("BAZQUUX") && !text.contains("X-ANYTHING"), "{text}");
    let other = text.lines().find(|l| l.starts_with("http_requests_total") && l.contains("method=\"other\""));
    assert!(other.is_some_and(|l| l.ends_with(" 3")), "three requests counted as method=\"other\": {other:?}");
}

#[tokio::test]
async fn openapi_and_docs_are_served() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/supplies",
        "/v1/supplies/{id}",
        "/v1/auth/nonce",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/me",
        "/v1/admin/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let header = |path: &str| {
        doc["paths"][path]["post"]["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"))
    };
    assert!(header("/v1/orders") && header("/v1/orders/{id}/claim"), "authenticated POSTs take Idempotency-Key");
    assert!(!header("/v1/auth/login"), "sign-in ignores it");
    let res = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("swagger"));
}

/// `/health/ready` is unauthenticated: a flood of it checks the database at most once a second.
#[tokio::test]
async fn a_flood_of_readiness_probes_checks_the_dependencies_once_a_second() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let start = std::time::Instant::now();
    let statuses = futures::future::join_all(
        (0..500).map(|_| async { app.client.get(app.url("/health/ready")).send().await.unwrap().status().as_u16() }),
    )
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let checks = app.metric("health_ready_checks_total", &[]).await;
    eprintln!("500 probes in {elapsed:.2} s made {checks} checks");
    assert!(checks >= 1.0 && checks <= elapsed.ceil() + 1.0, "{checks} checks in {elapsed:.2} s");
}

#[tokio::test]
async fn readiness_follows_postgres_down_and_back_without_a_restart() {
    let pg = PrivatePostgres::start();
    let url = fresh_database(&pg.url()).await;
    let app = TestApp::spawn_with(Backend::Postgres, |s| s.database_url = Some(url)).await;
    let ready = || async { app.client.get(app.url("/health/ready")).send().await.unwrap().status().as_u16() };
    assert_eq!(ready().await, 200);
    assert_eq!(app.client.get(app.url("/health/live")).send().await.unwrap().status(), 200);

    pg.stop();
    assert!(
        wait_until(Duration::from_secs(20), || async { ready().await == 503 }).await,
        "ready stayed 200 with PostgreSQL down"
    );
    let body: Value = app.client.get(app.url("/health/ready")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["failing"], serde_json::json!(["database"]));
    assert_eq!(app.client.get(app.url("/health/live")).send().await.unwrap().status(), 200);
    // A request that needs the database fails cleanly and retryably, without leaking why.
    let res = app
        .client
        .post(app.url("/v1/auth/nonce"))
        .json(&serde_json::json!({"address": "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    let body = testkit::assert_problem(res, 503, "UNAVAILABLE").await;
    assert!(!body.to_string().contains("127.0.0.1"), "{body}");

    pg.start_again();
    assert!(wait_until(Duration::from_secs(30), || async { ready().await == 200 }).await, "ready did not recover");
    // And real work resumes.
    let s = app.new_user().await;
    app.create_supply(&s.access, "ETH", "1").await;
}

/// With PostgreSQL unreachable, requests that wait out the pool's acquire timeout open the database
/// breaker: the next requests are answered 503 `UNAVAILABLE` at once (counted), not queued behind the
/// same wait; with PostgreSQL back, requests go through again by themselves.
#[tokio::test]
async fn an_unreachable_database_opens_the_breaker_and_its_return_closes_it() {
    let pg = PrivatePostgres::start();
    let url = fresh_database(&pg.url()).await;
    let app = TestApp::spawn_with(Backend::Postgres, |s| s.database_url = Some(url)).await;
    let user = app.new_user().await;
    let list = || async { app.get("/v1/supplies", &user.access).send().await.unwrap() };
    assert_eq!(list().await.status(), 200);

    pg.stop();
    let opened = wait_until(Duration::from_secs(60), || async {
        let res = list().await;
        assert_eq!(res.status(), 503, "a database that cannot be reached is 503");
        app.metric("db_breaker_open", &[]).await == 1.0
    })
    .await;
    assert!(opened, "the breaker did not open");
    let answered = wait_until(Duration::from_secs(30), || async {
        let res = list().await;
        assert_eq!(res.headers()["retry-after"], "1");
        testkit::assert_problem(res, 503, "UNAVAILABLE").await;
        app.metric("db_breaker_rejections_total", &[]).await >= 1.0
    })
    .await;
    assert!(answered, "no request was answered by the breaker");

    pg.start_again();
    let back = wait_until(Duration::from_secs(30), || async { list().await.status() == 200 }).await;
    assert!(back, "requests did not go through again");
    assert_eq!(app.metric("db_breaker_open", &[]).await, 0.0);
}
