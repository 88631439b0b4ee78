//! The operator console's server side (the browser tests are in `browser.rs`): the page and its
//! assets served offline with a same-origin CSP, fragments that follow the API's rules (admin only,
//! a refusal page otherwise), live figures that follow the metrics, bad input named, and admins
//! reading another user's entries and holds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::Duration;

use rstest::rstest;
use testkit::process::place_order;
use testkit::{Backend, TestApp, wait_until};

async fn fragment(app: &TestApp, path: &str, token: Option<&str>) -> (u16, String) {
    let mut req = app.client.get(app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_assets_are_served_offline_under_a_same_origin_policy() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let res = app.client.get(app.url("/admin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let page = res.text().await.unwrap();
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in page.split(attr).skip(1) {
            let link = part.split('"').next().unwrap();
            assert!(link.starts_with('/') || link.starts_with('#'), "the page links outside its origin: {link}");
            if link.starts_with("/admin/assets/") {
                assets.push(link.to_string());
            }
        }
    }
    assert_eq!(assets.len(), 3, "htmx, console.js and console.css: {assets:?}");
    for asset in assets {
        let res = app.client.get(app.url(&asset)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        let kind = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(kind.starts_with("text/javascript") || kind.starts_with("text/css"), "{asset}: {kind}");
        assert!(res.text().await.unwrap().len() > 500, "{asset} is served whole");
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn fragments_follow_the_api_rules_and_the_overview_follows_the_claims(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let (buyer, shopper) = (app.new_user().await, app.new_user().await);
    app.create_supply(&shopper.access, "USDC", "100").await;

    // Without a token: the sign-in prompt; a user: the refusal page, on every page.
    assert_eq!(fragment(&app, "/admin/ui/overview", None).await.0, 401);
    // (Also the pages whose API calls a user may make about themselves: the console is for operators.)
    let own = [
        format!("/admin/ui/claims/search?q={}", shopper.user_id),
        format!("/admin/ui/wallet/user?user_id={}", shopper.user_id),
    ];
    let pages =
        ["/admin/ui/overview", "/admin/ui/overview/live", "/admin/ui/claims", "/admin/ui/events", "/admin/ui/wallet"];
    for page in pages.iter().map(|p| p.to_string()).chain(own) {
        let page = page.as_str();
        let (status, body) = fragment(&app, page, Some(&shopper.access)).await;
        assert_eq!(status, 403, "{page}");
        assert!(body.contains("id=\"refusal\""), "{page}: {body}");
    }

    // A claim, processed: the overview's totals count it (the metrics are process-wide, so at least).
    let won_total = |body: &str| -> f64 {
        let tile = body.split("id=\"claims-won\"").nth(1).unwrap();
        let note = tile.split("class=\"note\">").nth(1).unwrap();
        note.split(' ').next().unwrap().parse().unwrap()
    };
    let (status, before) = fragment(&app, "/admin/ui/overview/live", Some(&admin)).await;
    assert_eq!(status, 200, "{before}");
    assert!(before.contains("id=\"readiness-state\"") && before.contains("<svg"), "{before}");
    let order_id = place_order(&app.client, &app.base, &buyer.access, "5").await;
    let res = app.post(&format!("/v1/orders/{order_id}/claim"), &shopper.access).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let claim: serde_json::Value = res.json().await.unwrap();
    let claim_id = claim["id"].as_str().unwrap().to_string();
    let (_, after) = fragment(&app, "/admin/ui/overview/live", Some(&admin)).await;
    assert!(won_total(&after) >= won_total(&before) + 1.0, "won before {before}\nafter {after}");
    assert!(wait_until(Duration::from_secs(30), || app.processing_done(&admin)).await);

    // The claim by its id, and by its order's id: its timeline, in log order.
    for q in [&claim_id, &order_id] {
        let (status, body) = fragment(&app, &format!("/admin/ui/claims/search?q={q}"), Some(&admin)).await;
        assert_eq!(status, 200, "{body}");
        let timeline = body.split("id=\"timeline\"").nth(1).expect("a timeline");
        let order_created = timeline.find("order.created").expect("the order's creation is on the timeline");
        let claimed = timeline.find("order.claimed").expect("the claim is on the timeline");
        assert!(order_created < claimed, "log order: {timeline}");
        let status = body.split("id=\"claim-status\"").nth(1).unwrap().split("</dd>").next().unwrap();
        assert!(status.contains(">processed<"), "the claim's status: {status}");
    }
    // The shopper's claims, as a user search.
    let (status, body) = fragment(&app, &format!("/admin/ui/claims/search?q={}", shopper.user_id), Some(&admin)).await;
    assert_eq!(status, 200);
    assert!(body.contains(&claim_id), "{body}");

    // Bad input is named.
    let (status, body) = fragment(&app, "/admin/ui/claims/search?q=not-an-id", Some(&admin)).await;
    assert_eq!(status, 422);
    assert!(body.contains("<code>q</code>"), "{body}");
    let (status, body) = fragment(&app, "/admin/ui/wallet/user?user_id=nope", Some(&admin)).await;
    assert_eq!(status, 422);
    assert!(body.contains("<code>user_id</code>"), "{body}");
    // What the extractors refuse is shown as a fragment naming the field, not as plain text.
    for (path, field) in [
        ("/admin/ui/events/confirm?group=claim-processor&event_id=nope", "event_id"),
        ("/admin/ui/events?page=-1", "page"),
        ("/admin/ui/claims/nope", "UUID"),
    ] {
        let (status, body) = fragment(&app, path, Some(&admin)).await;
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(body.contains("Check the input") && body.contains(field), "{path}: {body}");
    }

    // The wallet page: the buyer's accounts, entries and holds; the verify.
    let (status, body) =
        fragment(&app, &format!("/admin/ui/wallet/user?user_id={}", buyer.user_id), Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("id=\"entries\"") && body.contains("deposit") && body.contains("posted"), "{body}");
    let res = app.client.post(app.url("/admin/ui/wallet/verify")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("data-ok=\"true\""));
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test(flavor = "multi_thread")]
async fn admins_read_another_users_entries_and_holds_and_users_do_not(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let (alice, bob) = (app.new_user().await, app.new_user().await);
    // An order of alice's: a hold on her account (bob has none).
    let order_id = place_order(&app.client, &app.base, &alice.access, "5").await;
    let order: serde_json::Value =
        app.get(&format!("/v1/orders/{order_id}"), &alice.access).send().await.unwrap().json().await.unwrap();
    let hold_id = order["hold_id"].as_str().expect("a funded order has a hold").to_string();
    for path in ["/v1/wallet/entries", "/v1/wallet/holds"] {
        let res = app.get(&format!("{path}?user_id={}", alice.user_id), &admin).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let page: serde_json::Value = res.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        if path.ends_with("entries") {
            assert!(!items.is_empty(), "alice's deposits: {page}");
        } else {
            assert!(items.iter().any(|h| h["id"] == hold_id.as_str()), "alice's hold, seen by an admin: {page}");
            let admins_own: serde_json::Value = app.get(path, &admin).send().await.unwrap().json().await.unwrap();
            assert!(
                admins_own["items"].as_array().unwrap().is_empty(),
                "without user_id, the admin's own: {admins_own}"
            );
        }
        let res = app.get(&format!("{path}?user_id={}", alice.user_id), &bob.access).send().await.unwrap();
        assert_eq!(res.status(), 403, "{path}: bob reads alice's");
        let res = app.get(&format!("{path}?user_id={}", bob.user_id), &bob.access).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}: bob names himself");
    }
    let res = app.get("/v1/wallet/holds?user_id=@world", &admin).send().await.unwrap();
    testkit::assert_problem(res, 422, "VALIDATION_FAILED").await;
}
