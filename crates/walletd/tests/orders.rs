//! The order service end to end, on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use rstest::rstest;
use serde_json::{Value, json};
use testkit::{Backend, TestApp, assert_problem, problem_fields};

fn item(price: &str, quantity: i64) -> Value {
    json!({"product_id": "sku-1", "product_name": "Widget", "price": price, "quantity": quantity})
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn orders_total_their_items_and_follow_the_lifecycle(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let buyer = app.new_user().await;
    let res = app
        .post("/v1/orders", &buyer.access)
        .json(&json!({"currency": "USDC", "items": [item("1.25", 4), item("0.000001", 3)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_string();
    let order: Value = res.json().await.unwrap();
    assert_eq!(order["amount"], "5.000003");
    assert_eq!(order["status"], "pending");
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(order["items"][0]["price"], "1.250000");
    assert_eq!(order["claim_id"], Value::Null);

    let items: Value = app.get(&format!("{location}/items"), &buyer.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(items["items"], order["items"]);

    let res =
        app.patch(&location, &buyer.access).header("if-match", "\"1\"").json(&json!({"items": [item("2", 2)]})).send();
    let patched: Value = res.await.unwrap().json().await.unwrap();
    assert_eq!(patched["amount"], "4.000000");
    assert_eq!(patched["version"], 2);
    let res =
        app.patch(&location, &buyer.access).header("if-match", "\"1\"").json(&json!({"status": "cancelled"})).send();
    assert_problem(res.await.unwrap(), 412, "VERSION_MISMATCH").await;

    let cancelled: Value = app
        .patch(&location, &buyer.access)
        .json(&json!({"status": "cancelled"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let res = app.patch(&location, &buyer.access).json(&json!({"items": [item("1", 1)]})).send();
    assert_problem(res.await.unwrap(), 409, "ORDER_NOT_PENDING").await;
    assert_eq!(app.delete(&location, &buyer.access).send().await.unwrap().status(), 204);
    assert_problem(app.get(&location, &buyer.access).send().await.unwrap(), 404, "NOT_FOUND").await;

    let admin = app.admin_token().await;
    let events: Value = app.get("/v1/admin/events", &admin).send().await.unwrap().json().await.unwrap();
    let types: Vec<&str> = events["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    let orders: Vec<&str> = types.iter().copied().filter(|t| t.starts_with("order.")).collect();
    assert_eq!(orders, ["order.created", "order.updated", "order.cancelled", "order.deleted"]);
    let holds: Vec<&str> = types.iter().copied().filter(|t| t.starts_with("wallet.hold")).collect();
    assert_eq!(
        holds,
        ["wallet.hold_placed", "wallet.hold_adjusted", "wallet.hold_voided"],
        "the hold follows the order"
    );
}

/// No funds, no order: creating one holds its amount on the buyer's account in the same step, a
/// change of items moves the hold (or is refused when it cannot grow), and cancelling releases it.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn orders_are_funded_by_a_hold_that_follows_them(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let buyer = app.new_unfunded_user().await;
    let usdc = || async {
        let a: Value = app.get("/v1/wallet/accounts/USDC", &buyer.access).send().await.unwrap().json().await.unwrap();
        (a["balance"].as_str().unwrap().to_string(), a["held"].as_str().unwrap().to_string())
    };
    let order = |price: &str| json!({"currency": "USDC", "items": [item(price, 2)]});

    let body = assert_problem(
        app.post("/v1/orders", &buyer.access).json(&order("1")).send().await.unwrap(),
        422,
        "INSUFFICIENT_FUNDS",
    )
    .await;
    assert_eq!(testkit::problem_fields(&body), ["items"]);
    let mine: Value = app.get("/v1/orders", &buyer.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(mine["items"], json!([]), "nothing left behind");

    let deposit = json!({"user_id": buyer.user_id, "currency": "USDC", "amount": "10", "reference": "funds-1"});
    assert_eq!(app.post("/v1/admin/deposits", &admin).json(&deposit).send().await.unwrap().status(), 201);
    let res = app.post("/v1/orders", &buyer.access).json(&order("3")).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert!(created["hold_id"].is_string());
    assert_eq!(usdc().await, ("10.000000".into(), "6.000000".into()));
    let path = format!("/v1/orders/{}", created["id"].as_str().unwrap());

    let grown = app.patch(&path, &buyer.access).json(&json!({"items": [item("5.000001", 2)]})).send().await.unwrap();
    assert_problem(grown, 422, "INSUFFICIENT_FUNDS").await;
    assert_eq!(usdc().await.1, "6.000000", "a refused change holds what it held");
    let res = app.patch(&path, &buyer.access).json(&json!({"items": [item("5", 2)]})).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(usdc().await.1, "10.000000");
    let res = app.patch(&path, &buyer.access).json(&json!({"status": "cancelled"})).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(usdc().await, ("10.000000".into(), "0.000000".into()), "cancelled: released, nothing spent");
    app.assert_ledger_verifies(&admin).await;
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn bad_orders_are_refused_naming_the_field(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let s = app.new_user().await;
    let cases = [
        (json!({"currency": "USDC", "items": []}), vec!["items"]),
        (json!({"currency": "DOGE", "items": [item("1", 1)]}), vec!["currency"]),
        (json!({"currency": "USDC", "items": [item("1.0000001", 1)]}), vec!["items[0].price"]),
        (json!({"currency": "USDC", "items": [item("0", 1)]}), vec!["items[0].price"]),
        (
            json!({"currency": "USDC", "items": [item("1", 0), item("-1", 10001)]}),
            vec!["items[0].quantity", "items[1].price", "items[1].quantity"],
        ),
        (json!({"currency": "USDC", "items": [item("1", 1)], "amount": "0.01"}), vec!["amount"]),
        (
            json!({"currency": "USDC", "items": [{"product_id": "a", "product_name": "b", "price": 1, "quantity": 1}]}),
            vec!["items[0].price"],
        ),
        // Control characters (a NUL was a 500 on PostgreSQL and stored on SQLite).
        (
            json!({"currency": "USDC", "items": [{"product_id": "a\u{7}b", "product_name": "Mug\u{0}", "price": "1", "quantity": 1}]}),
            vec!["items[0].product_id", "items[0].product_name"],
        ),
        // A total that a 96-bit decimal would round (nine times the largest price), or that passes the
        // asset's maximum: refused, not rounded.
        (json!({"currency": "ETH", "items": [item("9999999999.999999999999999999", 9)]}), vec!["items[0].price"]),
        (json!({"currency": "ETH", "items": [item("9999999999.999999999999999999", 3)]}), vec!["items[0].price"]),
        (
            json!({"currency": "ETH", "items": [item("9999999999.999999999999999999", 1), item("0.000000000000000001", 1)]}),
            vec!["items[1].price"],
        ),
    ];
    for (body, fields) in cases {
        let res = app.post("/v1/orders", &s.access).json(&body).send().await.unwrap();
        let problem = assert_problem(res, 422, "VALIDATION_FAILED").await;
        assert_eq!(problem_fields(&problem), fields, "{body}");
    }
    let many: Vec<Value> = (0..101).map(|_| item("1", 1)).collect();
    let res = app.post("/v1/orders", &s.access).json(&json!({"currency": "USDC", "items": many})).send().await.unwrap();
    assert_eq!(problem_fields(&assert_problem(res, 422, "VALIDATION_FAILED").await), vec!["items"]);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn shoppers_see_pending_orders_of_others_but_not_the_rest(#[case] backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (buyer, shopper) = (app.new_user().await, app.new_user().await);
    let open =
        app.post("/v1/orders", &buyer.access).json(&json!({"currency": "ETH", "items": [item("0.5", 1)]})).send();
    let open: Value = open.await.unwrap().json().await.unwrap();
    let closed =
        app.post("/v1/orders", &buyer.access).json(&json!({"currency": "ETH", "items": [item("1", 1)]})).send();
    let closed: Value = closed.await.unwrap().json().await.unwrap();
    let closed_path = format!("/v1/orders/{}", closed["id"].as_str().unwrap());
    app.patch(&closed_path, &buyer.access).json(&json!({"status": "cancelled"})).send().await.unwrap();
    let own = app.post("/v1/orders", &shopper.access).json(&json!({"currency": "ETH", "items": [item("2", 1)]})).send();
    let own: Value = own.await.unwrap().json().await.unwrap();

    let claimable: Value =
        app.get("/v1/orders?status=pending", &shopper.access).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&Value> = claimable["items"].as_array().unwrap().iter().map(|o| &o["id"]).collect();
    assert_eq!(ids, [&open["id"]], "others' pending orders only");
    let mine: Value = app.get("/v1/orders", &shopper.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0]["id"], own["id"]);

    let open_path = format!("/v1/orders/{}", open["id"].as_str().unwrap());
    assert_eq!(app.get(&open_path, &shopper.access).send().await.unwrap().status(), 200);
    assert_problem(app.get(&closed_path, &shopper.access).send().await.unwrap(), 404, "NOT_FOUND").await;
    let res = app.patch(&open_path, &shopper.access).json(&json!({"status": "cancelled"})).send().await.unwrap();
    assert_problem(res, 404, "NOT_FOUND").await;
    assert_problem(app.delete(&open_path, &shopper.access).send().await.unwrap(), 404, "NOT_FOUND").await;
    let res = app.get(&format!("/v1/orders?user_id={}", buyer.user_id), &shopper.access).send().await.unwrap();
    assert_problem(res, 403, "FORBIDDEN").await;
}
