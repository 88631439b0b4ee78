//! Sign-in with Ethereum and tokens, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::Duration;

use base::Clock;
use base::clock::ManualClock;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use identity::eth::{LocalWallet, to_checksum};
use rstest::rstest;
use serde_json::{Value, json};
use testkit::{Backend, TestApp, assert_problem, session_from};

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn sign_in_issues_tokens_that_work(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let wallet = LocalWallet::random().unwrap();
    let session = app.login(&wallet).await;
    assert_eq!(session.address, to_checksum(&wallet.address()));

    let me: Value = app.get("/v1/me", &session.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["id"], session.user_id.to_string());
    assert_eq!(me["roles"], json!(["user"]));

    // The same address signs in as the same user.
    assert_eq!(app.login(&wallet).await.user_id, session.user_id);

    let jwks: Value = app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let header = session.access.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn admin_addresses_sign_in_as_admins(#[case] backend: Backend) {
    let wallet = LocalWallet::random().unwrap();
    let address = to_checksum(&wallet.address()).to_lowercase();
    let app = TestApp::spawn_with(backend, |s| s.set("admin_addresses", &address).unwrap()).await;
    let session = app.login(&wallet).await;
    let me: Value = app.get("/v1/me", &session.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["roles"], json!(["user", "admin"]));
}

/// The admin role follows the configuration on every request, not the token: an address taken
/// off the list loses it at once, and a token claiming it for an unlisted address gets nothing.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_admin_role_follows_the_configuration_not_the_token(#[case] backend: Backend) {
    let wallet = LocalWallet::random().unwrap();
    let address = to_checksum(&wallet.address());
    let listed = TestApp::spawn_with(backend, |s| s.set("admin_addresses", &address).unwrap()).await;
    let admin = listed.login(&wallet).await;
    assert_eq!(listed.get("/v1/admin/consumers", &admin.access).send().await.unwrap().status(), 200);

    // The same database and signing key, the address no longer listed: the unexpired token is a user's.
    let url = listed.settings.database_url();
    let unlisted = TestApp::spawn_with(backend, |s| {
        s.database_url = Some(url);
        s.admin_addresses = Vec::new();
    })
    .await;
    let res = unlisted.get("/v1/admin/consumers", &admin.access).send().await.unwrap();
    assert_problem(res, 403, "FORBIDDEN").await;
    let me: Value = unlisted.get("/v1/me", &admin.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["roles"], json!(["user"]));

    // A token minted with the server's key claiming admin for an address that is not listed.
    let user = listed.new_unfunded_user().await;
    let keys = identity::TokenKeys::load_or_generate(
        &listed.settings.jwt_key_path(),
        &listed.settings.jwt_issuer,
        Duration::from_secs(60),
        base::clock::system(),
    )
    .unwrap();
    let roles = [web::Role::User, web::Role::Admin];
    let claimed = keys.issue(user.user_id, &user.address, &roles, Duration::from_secs(60)).unwrap();
    let res = listed.get("/v1/admin/consumers", &claimed).send().await.unwrap();
    assert_problem(res, 403, "FORBIDDEN").await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_signature_from_another_key_is_refused(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, thief) = (LocalWallet::random().unwrap(), LocalWallet::random().unwrap());
    let message = app.nonce_message(&owner).await;
    let res = app.login_raw(&message, &thief.sign_message(&message).unwrap()).await;
    assert_problem(res, 401, "INVALID_SIGNATURE").await;
    // The nonce is still good for its owner.
    let res = app.login_raw(&message, &owner.sign_message(&message).unwrap()).await;
    assert_eq!(res.status(), 200);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_replayed_nonce_is_refused(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let wallet = LocalWallet::random().unwrap();
    let message = app.nonce_message(&wallet).await;
    let signature = wallet.sign_message(&message).unwrap();
    assert_eq!(app.login_raw(&message, &signature).await.status(), 200);
    assert_problem(app.login_raw(&message, &signature).await, 401, "NONCE_INVALID").await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn racing_logins_with_one_nonce_admit_exactly_one(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let wallet = LocalWallet::random().unwrap();
    let message = app.nonce_message(&wallet).await;
    let signature = wallet.sign_message(&message).unwrap();
    let results = futures::future::join_all(
        (0..16).map(|_| async { app.login_raw(&message, &signature).await.status().as_u16() }),
    )
    .await;
    assert_eq!(results.iter().filter(|s| **s == 200).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|s| **s == 401).count(), 15, "{results:?}");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_expired_message_is_refused(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let wallet = LocalWallet::random().unwrap();
    let message = app.nonce_message(&wallet).await;
    let (head, _) = message.split_once("Expiration Time: ").unwrap();
    let past = (time::OffsetDateTime::now_utc() - time::Duration::minutes(1))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let expired = format!("{head}Expiration Time: {past}");
    let res = app.login_raw(&expired, &wallet.sign_message(&expired).unwrap()).await;
    assert_problem(res, 401, "SIWE_MESSAGE_EXPIRED").await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn only_the_exact_message_issued_with_the_nonce_signs_in(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let wallet = LocalWallet::random().unwrap();
    let message = app.nonce_message(&wallet).await;
    let (head, expiration) = message.rsplit_once("\nExpiration Time: ").unwrap();
    // Each parses as EIP-4361 with the same domain, URI, chain, nonce and a valid expiry, and each is
    // signed by the right key: only the text differs from what the server issued.
    let forged = [
        message.replace("Sign in to walletd.", "Transfer everything."),
        format!("{message}\nResources:\n- https://evil.example/grant"),
        head.to_string(),
        message.replace("\n\nURI:", "\n \nURI:"),
    ];
    for text in &forged {
        assert_ne!(text, &message);
        let res = app.login_raw(text, &wallet.sign_message(text).unwrap()).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert!(status == 401 || status == 422, "{text:?} was accepted: {status} {body}");
        if status == 401 {
            assert_eq!(body["code"], "NONCE_INVALID", "{text:?}");
        }
    }
    assert!(!expiration.is_empty());
    // The refusals did not spend the nonce: the issued text still signs in.
    let res = app.login_raw(&message, &wallet.sign_message(&message).unwrap()).await;
    assert_eq!(res.status(), 200);
}

#[rstest]
#[case::domain("localhost:8080", "evil.example:443", "SIWE_DOMAIN_MISMATCH")]
#[case::chain("Chain ID: 1", "Chain ID: 5", "SIWE_CHAIN_MISMATCH")]
#[tokio::test]
async fn a_message_for_another_domain_or_chain_is_refused(#[case] from: &str, #[case] to: &str, #[case] code: &str) {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let wallet = LocalWallet::random().unwrap();
    let message = app.nonce_message(&wallet).await.replace(from, to);
    let res = app.login_raw(&message, &wallet.sign_message(&message).unwrap()).await;
    assert_problem(res, 401, code).await;
}

#[tokio::test]
async fn malformed_sign_in_input_is_422_naming_the_field() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let res = app.client.post(app.url("/v1/auth/nonce")).json(&json!({"address": "0x1234"})).send().await.unwrap();
    let body = assert_problem(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(testkit::problem_fields(&body), vec!["address"]);
    let res = app.login_raw("not a siwe message", "0x00").await;
    let body = assert_problem(res, 422, "VALIDATION_FAILED").await;
    assert_eq!(testkit::problem_fields(&body), vec!["message"]);
    let wallet = LocalWallet::random().unwrap();
    let message = app.nonce_message(&wallet).await;
    let body = assert_problem(app.login_raw(&message, "0xzz").await, 422, "VALIDATION_FAILED").await;
    assert_eq!(testkit::problem_fields(&body), vec!["signature"]);
}

fn forge(header: Value, claims: Value, signature: &[u8]) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!("{}.{}.{}", enc(&header), enc(&claims), URL_SAFE_NO_PAD.encode(signature))
}

fn claims_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let session = app.new_user().await;
    let mut claims = claims_of(&session.access);
    claims["roles"] = json!(["user", "admin"]);
    let kid =
        app.client.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json::<Value>().await.unwrap()["keys"]
            [0]["kid"]
            .clone();

    // alg: none
    let none = forge(json!({"alg": "none", "typ": "JWT", "kid": kid}), claims.clone(), b"");
    // HS256 keyed with the public modulus (the classic algorithm confusion)
    let hs_header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
    let hs = {
        let key = jsonwebtoken::EncodingKey::from_secret(b"public-key-bytes");
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = hs_header["kid"].as_str().map(str::to_string);
        jsonwebtoken::encode(&h, &claims, &key).unwrap()
    };
    // RS256 signed by another key, with and without our kid
    let other_dir = testkit::TempDir::new();
    let other = identity::TokenKeys::load_or_generate(
        &other_dir.0.join("k.pem"),
        "walletd",
        Duration::from_secs(60),
        base::clock::system(),
    )
    .unwrap();
    let roles = [web::Role::User, web::Role::Admin];
    let other_token = other.issue(session.user_id, &session.address, &roles, Duration::from_secs(60)).unwrap();
    let mut parts: Vec<&str> = other_token.split('.').collect();
    let our_header =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json!({"alg": "RS256", "typ": "JWT", "kid": kid})).unwrap());
    parts[0] = &our_header;
    let other_with_our_kid = parts.join(".");
    // our token with its claims changed
    let tampered = {
        let p: Vec<&str> = session.access.split('.').collect();
        format!("{}.{}.{}", p[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()), p[2])
    };

    for (name, token) in [
        ("alg none", none),
        ("hs256", hs),
        ("another key", other_token),
        ("another key, our kid", other_with_our_kid),
        ("tampered claims", tampered),
        ("garbage", "abc.def.ghi".to_string()),
    ] {
        let res = app.get("/v1/me", &token).send().await.unwrap();
        assert_eq!(res.status(), 401, "{name}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], "INVALID_TOKEN", "{name}");
    }
    assert_problem(app.client.get(app.url("/v1/me")).send().await.unwrap(), 401, "UNAUTHENTICATED").await;
    // and the genuine token still works
    assert_eq!(app.get("/v1/me", &session.access).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    // The server reads a clock the test moves: no waiting for the token to run out.
    let clock = ManualClock::new();
    let app = TestApp::spawn_at(Backend::Sqlite, clock.clone(), |s| s.access_token_ttl = Duration::from_secs(60)).await;
    let session = app.new_user().await;
    assert_eq!(app.get("/v1/me", &session.access).send().await.unwrap().status(), 200);
    // exp is 60 s after issue, with 5 s of leeway: still good at 64 s, refused after 66 s.
    clock.advance(time::Duration::seconds(64));
    assert_eq!(app.get("/v1/me", &session.access).send().await.unwrap().status(), 200, "within the leeway");
    clock.advance(time::Duration::seconds(2));
    let body = assert_problem(app.get("/v1/me", &session.access).send().await.unwrap(), 401, "INVALID_TOKEN").await;
    assert_eq!(body["detail"], "token expired");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_sign_in_message_signed_after_its_nonce_expired_is_refused(#[case] backend: Backend) {
    let clock = ManualClock::new();
    let app = TestApp::spawn_at(backend, clock.clone(), |s| s.nonce_ttl = Duration::from_secs(300)).await;
    let wallet = LocalWallet::random().unwrap();
    let message = app.nonce_message(&wallet).await;
    clock.advance(time::Duration::seconds(301));
    let res = app.login_raw(&message, &wallet.sign_message(&message).unwrap()).await;
    assert_problem(res, 401, "SIWE_MESSAGE_EXPIRED").await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_expired_nonce_cannot_be_spent(#[case] backend: Backend) {
    let dir = testkit::TempDir::new();
    let db = storage::Database::connect(&testkit::fresh_database_url(backend, &dir).await, &Default::default())
        .await
        .unwrap();
    walletd::migrate(&db).await.unwrap();
    let clock = ManualClock::new();
    let store = identity::IdentityStore::new(db, clock.clone());
    let address = to_checksum(&LocalWallet::random().unwrap().address());
    let expires = clock.now() + time::Duration::seconds(300);
    store.create_nonce("fresh", &address, "m", expires).await.unwrap();
    store.create_nonce("stale", &address, "m", expires).await.unwrap();
    assert!(store.consume_nonce("fresh", &address, "m").await.unwrap(), "a live nonce is spent once");
    clock.advance(time::Duration::seconds(301));
    assert!(!store.consume_nonce("stale", &address, "m").await.unwrap(), "an expired nonce was accepted");
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_rotated_refresh_token_presented_again_revokes_its_family(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.new_user().await;
    let refresh = |token: String| {
        let app = &app;
        async move {
            app.client.post(app.url("/v1/auth/refresh")).json(&json!({"refresh_token": token})).send().await.unwrap()
        }
    };
    let res = refresh(first.refresh.clone()).await;
    assert_eq!(res.status(), 200);
    let second = session_from(res.json().await.unwrap());
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(second.user_id, first.user_id);
    assert_eq!(app.get("/v1/me", &second.access).send().await.unwrap().status(), 200);

    assert_problem(refresh(first.refresh.clone()).await, 401, "REFRESH_TOKEN_REUSED").await;
    // The successor was revoked with the family.
    assert_problem(refresh(second.refresh.clone()).await, 401, "REFRESH_TOKEN_REUSED").await;
    assert_problem(refresh("never-issued".into()).await, 401, "INVALID_REFRESH_TOKEN").await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn logout_revokes_the_refresh_token(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_user().await;
    let res =
        app.client.post(app.url("/v1/auth/logout")).json(&json!({"refresh_token": s.refresh})).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let res =
        app.client.post(app.url("/v1/auth/refresh")).json(&json!({"refresh_token": s.refresh})).send().await.unwrap();
    assert_eq!(res.status(), 401);
}

async fn rows(db: &storage::Database, table: &'static str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    match db {
        storage::Database::Postgres(pool) => pool.get().await.unwrap().query_one(&sql, &[]).await.unwrap().get(0),
        storage::Database::Sqlite(pool) => {
            pool.call(move |c| c.query_row(&sql, [], |r| r.get(0)).map_err(anyhow::Error::from)).await.unwrap()
        }
    }
}

/// A session ends `WALLETD_SESSION_MAX_SECS` after its sign-in however often it refreshes; the
/// clean-up job then deletes it, with expired nonces, idempotency keys past their day and inbox rows
/// past their retention, and counts what it removed.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn sessions_end_and_the_clean_up_job_deletes_what_expired(#[case] backend: Backend) {
    let day = time::Duration::days(1);
    let clock = ManualClock::new();
    let app = TestApp::spawn_at(backend, clock.clone(), |s| {
        s.session_max = Duration::from_secs(30 * 86_400);
        s.refresh_token_ttl = Duration::from_secs(20 * 86_400);
        s.cleanup_interval = Duration::from_secs(1);
    })
    .await;
    let refresh = |token: String| {
        let req = app.client.post(app.url("/v1/auth/refresh")).json(&json!({"refresh_token": token}));
        async move { req.send().await.unwrap() }
    };
    // Something of every kind the job deletes: a nonce never used, an idempotency key, a handled
    // event (made first, while the admin token that funds the buyer is valid on this clock).
    let (fresh, shopper) = (app.new_user().await, app.new_user().await);
    app.nonce_message(&LocalWallet::random().unwrap()).await;
    app.create_supply(&shopper.access, "USDC", "10").await;
    let order =
        json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": "1", "quantity": 1}]});
    let res = app.post("/v1/orders", &fresh.access).header("idempotency-key", "k1").json(&order).send().await.unwrap();
    let order: Value = res.json().await.unwrap();
    let res = app.post(&format!("/v1/orders/{}/claim", order["id"].as_str().unwrap()), &shopper.access).send().await;
    assert_eq!(res.unwrap().status(), 201);
    let db = storage::Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    let tables = ["auth_nonces", "refresh_tokens", "idempotency_keys", "inbox"];
    let handled = testkit::wait_until(Duration::from_secs(30), || async { rows(&db, "inbox").await > 0 }).await;
    assert!(handled, "the claim's events were not handled");
    for table in tables {
        assert!(rows(&db, table).await > 0, "{table} is empty before the clean-up");
    }

    let buyer = app.new_unfunded_user().await;

    // Day 15 and day 29: each refresh gets a fresh token, but none outlives day 30.
    clock.advance(15 * day);
    let res = refresh(buyer.refresh.clone()).await;
    assert_eq!(res.status(), 200);
    let second = session_from(res.json().await.unwrap());
    clock.advance(14 * day);
    let res = refresh(second.refresh.clone()).await;
    assert_eq!(res.status(), 200, "day 29, within the session");
    let third = session_from(res.json().await.unwrap());
    clock.advance(2 * day);
    assert_problem(refresh(third.refresh.clone()).await, 401, "INVALID_REFRESH_TOKEN").await;

    // Past every retention, nothing of it is left.
    clock.advance(40 * day);
    let swept = testkit::wait_until(Duration::from_secs(30), || async {
        let mut left = 0;
        for table in tables {
            left += rows(&db, table).await;
        }
        left == 0
    })
    .await;
    let mut counts = Vec::new();
    for table in tables {
        counts.push((
            table,
            rows(&db, table).await,
            app.metric("cleanup_removed_total", &[&format!("table=\"{table}\"")]).await,
        ));
    }
    assert!(swept, "rows left (table, rows, removed): {counts:?}");
    assert!(counts.iter().all(|(_, _, removed)| *removed >= 1.0), "{counts:?}");
}
