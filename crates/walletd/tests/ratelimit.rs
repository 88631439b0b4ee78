//! Rate limits: per principal, per IP on sign-in, and one combined limit across two instances
//! sharing Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use identity::eth::{LocalWallet, to_checksum};
use serde_json::json;
use testkit::redis::server_url;
use testkit::{Backend, TestApp, assert_problem};
use web::ratelimit::Rate;

#[tokio::test]
async fn a_principal_gets_its_burst_then_429_with_retry_after() {
    // 6 a minute: nothing refills during the test.
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.rate_limit = Rate { per_minute: 6, burst: 5 }).await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    for left in (0..5).rev() {
        let res = app.get("/v1/me", &a.access).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["ratelimit-limit"], "5");
        assert_eq!(res.headers()["ratelimit-remaining"], left.to_string().as_str());
    }
    let res = app.get("/v1/supplies", &a.access).send().await.unwrap();
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(res.headers()["ratelimit-remaining"], "0");
    assert_problem(res, 429, "RATE_LIMITED").await;
    // Another principal has a budget of its own.
    assert_eq!(app.get("/v1/me", &b.access).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn sign_in_is_limited_per_address() {
    let app = TestApp::spawn_with(Backend::Sqlite, |s| s.signin_rate_limit = Rate { per_minute: 6, burst: 4 }).await;
    let body = json!({"address": to_checksum(&LocalWallet::random().unwrap().address())});
    for _ in 0..4 {
        assert_eq!(app.client.post(app.url("/v1/auth/nonce")).json(&body).send().await.unwrap().status(), 200);
    }
    let res = app.client.post(app.url("/v1/auth/nonce")).json(&body).send().await.unwrap();
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, 429, "RATE_LIMITED").await;
}

#[tokio::test]
async fn two_instances_sharing_redis_enforce_one_combined_limit() {
    let limits = |s: &mut settings::Settings| {
        s.redis_url = Some(server_url(6));
        s.rate_limit = Rate { per_minute: 6, burst: 10 };
    };
    let a = TestApp::spawn_with(Backend::Postgres, limits).await;
    let url = a.settings.database_url();
    let b = TestApp::spawn_with(Backend::Postgres, |s| {
        limits(s);
        s.database_url = Some(url);
    })
    .await;
    let user = a.new_user().await;
    let mut ok = 0;
    for i in 0..20 {
        let app = if i % 2 == 0 { &a } else { &b };
        let status = app.get("/v1/me", &user.access).send().await.unwrap().status().as_u16();
        assert!(status == 200 || status == 429, "{status}");
        ok += usize::from(status == 200);
    }
    assert_eq!(ok, 10, "one budget of 10 across both instances, not 10 each");
}

#[tokio::test]
async fn behind_a_trusted_proxy_sign_in_is_limited_per_forwarded_client() {
    let limited = |trusted: &'static str| {
        move |s: &mut settings::Settings| {
            s.signin_rate_limit = Rate { per_minute: 6, burst: 2 };
            s.trusted_proxies = web::TrustedProxies::parse(trusted).unwrap();
        }
    };
    let nonce = |app: &TestApp, client: &str| {
        let body = json!({"address": to_checksum(&LocalWallet::random().unwrap().address())});
        app.client.post(app.url("/v1/auth/nonce")).header("x-forwarded-for", client).json(&body).send()
    };
    // The test talks from 127.0.0.1: as a trusted proxy, its X-Forwarded-For names the client.
    let app = TestApp::spawn_with(Backend::Sqlite, limited("127.0.0.0/8")).await;
    for _ in 0..2 {
        assert_eq!(nonce(&app, "198.51.100.1").await.unwrap().status(), 200);
    }
    assert_problem(nonce(&app, "198.51.100.1").await.unwrap(), 429, "RATE_LIMITED").await;
    assert_eq!(nonce(&app, "198.51.100.2").await.unwrap().status(), 200, "another client, its own budget");

    // Not trusted: the header is the caller's word and changes nothing.
    let app = TestApp::spawn_with(Backend::Sqlite, limited("")).await;
    for client in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(nonce(&app, client).await.unwrap().status(), 200);
    }
    assert_problem(nonce(&app, "198.51.100.3").await.unwrap(), 429, "RATE_LIMITED").await;
}
