//! `docs/events.md` against the code: every event type the services write, with its version, topic,
//! envelope and data fields, is documented there, and nothing documented is missing from the code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use events::outbox;
use serde_json::{Value, json};
use storage::Database;
use testkit::{Backend, TestApp, wait_until};

/// What the page says about one event type.
#[derive(Debug)]
struct Documented {
    version: i64,
    topic: String,
    shape: String,
}

/// The cells of the markdown table rows under `## {section}` (header and rule rows left out).
fn table(page: &str, section: &str) -> Vec<Vec<String>> {
    let start = page.find(&format!("\n{section}\n")).unwrap_or_else(|| panic!("docs/events.md has no {section}"));
    page[start + section.len() + 2..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().trim_matches('`').to_string()).collect())
        .collect()
}

fn field_names(page: &str, section: &str) -> BTreeSet<String> {
    table(page, section).into_iter().map(|row| row[0].clone()).collect()
}

async fn send(req: reqwest::RequestBuilder, status: u16) -> Value {
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), status);
    res.json().await.unwrap_or(Value::Null)
}

/// Makes every kind of event happen: the lifecycle of supplies and orders, a claim processed, one
/// failed (its supply deleted before processing) and one released, a deposit from a chain.
async fn every_event(backend: Backend) -> Vec<outbox::EventEnvelope> {
    let anvil = testkit::anvil::Anvil::start().await;
    let funder = anvil.funded_key(10).await;
    let token = funder.deploy_token(6).await;
    funder.mint(token, funder.address(), alloy::primitives::U256::from(1_000_000u64)).await;
    let dir = testkit::TempDir::new();
    let chains = testkit::anvil::chains_file(&dir.0, &anvil, token, 1, "");
    let file = chains.clone();
    let first = TestApp::spawn_with(backend, |s| {
        s.run_consumers = false;
        s.chains_file = Some(file);
    })
    .await;
    let admin = first.admin_token().await;
    let (buyer, shopper, other) = (first.new_user().await, first.new_user().await, first.new_user().await);
    let supply = first.create_supply(&shopper.access, "USDC", "100").await["id"].as_str().unwrap().to_string();
    send(first.patch(&format!("/v1/supplies/{supply}"), &shopper.access).json(&json!({"amount": "90"})), 200).await;
    let gone = first.create_supply(&shopper.access, "ETH", "1").await["id"].as_str().unwrap().to_string();
    send(first.delete(&format!("/v1/supplies/{gone}"), &shopper.access), 204).await;
    let doomed = first.create_supply(&other.access, "USDC", "5").await["id"].as_str().unwrap().to_string();

    let mut orders = Vec::new();
    for _ in 0..6 {
        let body = json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": "3", "quantity": 1}]});
        orders.push(
            send(first.post("/v1/orders", &buyer.access).json(&body), 201).await["id"].as_str().unwrap().to_string(),
        );
    }
    let items = json!({"items": [{"product_id": "q", "product_name": "m", "price": "2", "quantity": 2}]});
    send(first.patch(&format!("/v1/orders/{}", orders[0]), &buyer.access).json(&items), 200).await;
    send(first.patch(&format!("/v1/orders/{}", orders[1]), &buyer.access).json(&json!({"status": "cancelled"})), 200)
        .await;
    send(first.delete(&format!("/v1/orders/{}", orders[2]), &buyer.access), 204).await;
    // Processed, failed (its supply gone before processing), released.
    send(first.post(&format!("/v1/orders/{}/claim", orders[3]), &shopper.access), 201).await;
    send(first.post(&format!("/v1/orders/{}/claim", orders[4]), &other.access), 201).await;
    send(first.delete(&format!("/v1/supplies/{doomed}"), &other.access), 204).await;
    let released = send(first.post(&format!("/v1/orders/{}/claim", orders[5]), &shopper.access), 201).await;
    let rid = released["id"].as_str().unwrap();
    send(first.post(&format!("/v1/claims/{rid}/release"), &shopper.access), 200).await;
    // Money: a deposit, and a transfer of part of it.
    let deposit = json!({"user_id": buyer.user_id, "currency": "USDC", "amount": "10", "reference": "docs-1"});
    send(first.post("/v1/admin/deposits", &admin).json(&deposit), 201).await;
    let transfer = json!({"to_user_id": shopper.user_id, "currency": "USDC", "amount": "4"});
    send(first.post("/v1/wallet/transfers", &buyer.access).json(&transfer), 201).await;
    // Withdrawals: ether goes out (confirmed); tokens the hot wallet does not have revert (failed).
    let to = alloy::signers::local::PrivateKeySigner::random().address();
    for currency in ["ETH", "USDC"] {
        let body = json!({"chain": "local", "currency": currency, "to_address": to, "amount": "1"});
        send(first.post("/v1/wallet/withdrawals", &buyer.access).json(&body), 201).await;
    }
    let address = send(first.get("/v1/wallet/deposit-addresses/local", &buyer.access), 200).await;
    let address = address["address"].as_str().unwrap().parse().unwrap();
    funder.send_tokens(token, address, alloy::primitives::U256::from(1_000_000u64)).await;
    // An operator redrives a parked event (of a group that no process here runs, so it stays parked).
    let url = first.settings.database_url();
    let db = Database::connect(&url, &first.settings.db_options()).await.unwrap();
    let claimed =
        outbox::list(&db, 0, 10_000).await.unwrap().into_iter().find(|e| e.event_type == "order.claimed").unwrap();
    let (id, seq) = (claimed.id, claimed.seq);
    let park = "INSERT INTO parked_events (group_name, event_id, seq, event_type, attempts, last_error, parked_at)
                VALUES ('docs', $1, $2, 'order.claimed', 5, 'docs', '2026-01-01T00:00:00Z')";
    match &db {
        Database::Postgres(pool) => {
            let park = park.replace("'2026-01-01T00:00:00Z'", "now()");
            pool.get().await.unwrap().execute(&park, &[&id, &seq]).await.unwrap();
        }
        Database::Sqlite(pool) => {
            let park = park.replace('$', "?");
            pool.call(move |c| c.execute(&park, (id.to_string(), seq)).map_err(anyhow::Error::from)).await.unwrap();
        }
    }
    send(first.post(&format!("/v1/admin/parked-events/docs/{}/redrive", claimed.id), &admin), 202).await;
    let _data = first.stop().await;

    // Processing.
    let hot = alloy::signers::local::PrivateKeySigner::random();
    anvil.rpc("anvil_setBalance", json!([hot.address(), "0x8ac7230489e80000"])).await.unwrap();
    let key = alloy::primitives::hex::encode(hot.to_bytes());
    let app = TestApp::spawn_with(backend, |s| {
        s.database_url = Some(url.clone());
        s.chains_file = Some(chains);
        s.chain_signer_key = Some(settings::Redacted(key));
    })
    .await;
    let db = Database::connect(&url, &app.settings.db_options()).await.unwrap();
    let done = wait_until(Duration::from_secs(30), || app.processing_done(&admin)).await;
    assert!(done, "the claims were not processed");
    let credited = wait_until(Duration::from_secs(30), || async {
        let listed = send(app.get("/v1/wallet/deposits", &buyer.access), 200).await;
        listed["items"][0]["status"] == "credited"
    })
    .await;
    assert!(credited, "the chain deposit was not credited");
    let finished = wait_until(Duration::from_secs(30), || async {
        anvil.mine(1).await;
        let listed = send(app.get("/v1/wallet/withdrawals", &buyer.access), 200).await;
        let statuses: BTreeSet<String> =
            listed["items"].as_array().unwrap().iter().map(|w| w["status"].as_str().unwrap().to_string()).collect();
        statuses == BTreeSet::from(["confirmed".to_string(), "failed".to_string()])
    })
    .await;
    assert!(
        finished,
        "the withdrawals did not finish: {}",
        send(app.get("/v1/wallet/withdrawals", &buyer.access), 200).await
    );
    outbox::list(&db, 0, 10_000).await.unwrap()
}

#[tokio::test]
async fn docs_events_md_matches_the_events_the_code_writes() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/events.md")).unwrap();
    let documented: BTreeMap<String, Documented> = table(&page, "## Types")
        .into_iter()
        .map(|row| {
            (
                row[0].clone(),
                Documented { version: row[1].parse().unwrap(), topic: row[2].clone(), shape: row[4].clone() },
            )
        })
        .collect();
    let envelope = field_names(&page, "## Envelope");

    let events = every_event(Backend::Sqlite).await;
    let mut seen = BTreeSet::new();
    for e in &events {
        let doc = documented.get(&e.event_type).unwrap_or_else(|| panic!("{} is not in docs/events.md", e.event_type));
        assert_eq!(i64::from(e.version), doc.version, "{}: version", e.event_type);
        assert_eq!(e.topic, doc.topic, "{}: topic", e.event_type);
        let wire = serde_json::to_value(e).unwrap();
        let keys: BTreeSet<String> = wire.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, envelope, "the envelope of {}", e.event_type);
        let data: BTreeSet<String> = e.data.as_object().unwrap().keys().cloned().collect();
        assert_eq!(data, field_names(&page, &format!("### {}", doc.shape)), "the data of {}", e.event_type);
        seen.insert(e.event_type.clone());
    }
    let documented_types: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(seen, documented_types, "documented types the scenario did not write (or the reverse)");
}
