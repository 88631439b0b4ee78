//! The operator console in headless Chromium: spawns a walletd (PostgreSQL, Redis, Kafka) whose admin
//! is a key made for this run, and runs the Playwright scenario `tests/browser/console_test.py` with
//! the venv and Chromium that `scripts/test.sh` installs (`WALLETD_TEST_BROWSER_PYTHON`,
//! `WALLETD_TEST_CHROMIUM`). The scenario signs in through an injected EIP-1193 wallet; its
//! screenshots land in `<target>/console-screenshots`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use alloy::primitives::{Address, U256};
use identity::eth::{LocalWallet, to_checksum};
use serde_json::{Value, json};
use testkit::anvil::{Anvil, chains_file};
use testkit::process::place_order;
use testkit::{Backend, Session, TestApp, wait_until};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else the one holding this test binary
/// (`<target>/<profile>/deps/browser-*`).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => std::env::current_exe().unwrap().ancestors().nth(3).unwrap().to_path_buf(),
    }
}

/// Runs `command`, echoing its output line by line as it comes; returns whether it exited 0 and its
/// last lines.
fn run_streaming(mut command: Command) -> (bool, Vec<String>) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| {
        panic!("cannot start the browser scenario ({e}): run the suite with scripts/test.sh, which makes the venv")
    });
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let echo = |pipe: Box<dyn std::io::Read + Send>, lines: Arc<Mutex<Vec<String>>>| {
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                println!("browser: {line}");
                lines.lock().unwrap().push(line);
            }
        })
    };
    let out = echo(Box::new(child.stdout.take().unwrap()), lines.clone());
    let err = echo(Box::new(child.stderr.take().unwrap()), lines.clone());
    let status = child.wait().unwrap();
    out.join().unwrap();
    err.join().unwrap();
    let lines = lines.lock().unwrap();
    (status.success(), lines[lines.len().saturating_sub(40)..].to_vec())
}

async fn json(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or_default();
    assert_eq!(got, status, "{body}");
    body
}

/// An order of 1 USDC by `buyer`, claimed by `shopper`: (order id, claim id).
async fn order_and_claim(app: &TestApp, buyer: &Session, shopper: &Session) -> (String, String) {
    let order_id = place_order(&app.client, &app.base, &buyer.access, "1").await;
    let claim =
        json(app.post(&format!("/v1/orders/{order_id}/claim"), &shopper.access).send().await.unwrap(), 201).await;
    (order_id, claim["id"].as_str().unwrap().to_string())
}

/// Multi-threaded: the scenario runs on a blocking thread while walletd serves on this runtime.
///
/// Before the browser opens: a processed claim to look up, and a claim whose processing failed for a
/// reason since fixed (its event parked). While the browser runs: a claim load (an order claimed every
/// 150 ms), which the overview must show. Afterwards: the redrive the browser asked for had its effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_console_in_a_real_browser_and_a_user_is_refused() {
    let python = std::env::var("WALLETD_TEST_BROWSER_PYTHON").unwrap_or_else(|_| {
        panic!("WALLETD_TEST_BROWSER_PYTHON is not set: run the suite with scripts/test.sh, which installs Chromium and the Playwright venv")
    });
    let admin = LocalWallet::random().unwrap();
    let user = LocalWallet::random().unwrap();
    let admin_address = to_checksum(&admin.address());
    let brokers = testkit::kafka::brokers();
    let listed = admin_address.clone();
    // A chain whose deposits wait for 50 confirmations, and no signer: a deposit and a withdrawal
    // stay under way, for the wallet page to show.
    let anvil = Anvil::start().await;
    let funder = anvil.funded_key(1_000).await;
    let token = funder.deploy_token(6).await;
    funder.mint(token, funder.address(), U256::from(1_000_000_000u64)).await;
    let chain_dir = testkit::TempDir::new();
    let chains = chains_file(&chain_dir.0, &anvil, token, 50, "");
    let app = Arc::new(
        TestApp::spawn_with(Backend::Postgres, |s| {
            s.chains_file = Some(chains);
            s.admin_addresses.push(listed);
            s.kafka = Some(testkit::kafka::settings(&brokers));
            s.redis_url = Some(testkit::redis::server_url(8));
            // Parks quickly; and access tokens short enough that the page must refresh during the run.
            s.event_max_attempts = 3;
            s.event_retry_backoff = Duration::from_millis(20);
            s.access_token_ttl = Duration::from_secs(20);
        })
        .await,
    );
    let api_admin = app.admin_token().await;
    let (buyer, shopper) = (app.new_user().await, app.new_user().await);
    app.create_supply(&shopper.access, "USDC", "100000").await;

    // A deposit seen on the chain, awaiting its confirmations; a withdrawal requested.
    let address: Value =
        json(app.get("/v1/wallet/deposit-addresses/local", &buyer.access).send().await.unwrap(), 200).await;
    let address: Address = address["address"].as_str().unwrap().parse().unwrap();
    funder.send_tokens(token, address, U256::from(5_000_000u64)).await;
    anvil.mine(2).await;
    let to = alloy::signers::local::PrivateKeySigner::random().address();
    let withdrawal = json!({"chain": "local", "currency": "USDC", "to_address": to, "amount": "1"});
    json(app.post("/v1/wallet/withdrawals", &buyer.access).json(&withdrawal).send().await.unwrap(), 201).await;
    let seen = wait_until(Duration::from_secs(60), || async {
        let page =
            json(app.get("/v1/wallet/deposits?user_id=all&status=seen", &api_admin).send().await.unwrap(), 200).await;
        !page["items"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(seen, "the chain deposit was not seen");

    // A claim processed end to end, for the search.
    let (_, claim_id) = order_and_claim(&app, &buyer, &shopper).await;
    assert!(
        wait_until(Duration::from_secs(60), || app.processing_done(&api_admin)).await,
        "the first claim is processed"
    );

    // A claim whose processing fails: its event is parked; then the cause is fixed.
    let db = storage::Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    let parked_order = place_order(&app.client, &app.base, &buyer.access, "1").await;
    testkit::refuse_claim_updates(&db, &parked_order, true).await;
    let parked_claim = json(
        app.post(&format!("/v1/orders/{parked_order}/claim"), &shopper.access).send().await.unwrap(),
        201,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let parked_event = || async {
        let list = json(app.get("/v1/admin/parked-events", &api_admin).send().await.unwrap(), 200).await;
        let mine = |p: &&Value| p["group"] == "claim-processor" && p["event_type"] == "order.claimed";
        list["items"].as_array().unwrap().iter().find(mine).cloned()
    };
    assert!(
        wait_until(Duration::from_secs(60), || async { parked_event().await.is_some() }).await,
        "the refused claim's event was not parked"
    );
    let parked = parked_event().await.unwrap();
    testkit::refuse_claim_updates(&db, &parked_order, false).await;
    println!("parked: {parked}");

    // The claim load, until the scenario ends.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn({
        let (app, stop, buyer, shopper) = (app.clone(), stop.clone(), buyer.clone(), shopper.clone());
        async move {
            let mut claims = 0u32;
            // A steady rate (not as fast as it goes: the browser and walletd share two cores).
            let mut every = tokio::time::interval(Duration::from_millis(150));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                every.tick().await;
                order_and_claim(&app, &buyer, &shopper).await;
                claims += 1;
            }
            claims
        }
    });

    // A signature made here, which the scenario's own signing must reproduce byte for byte.
    let message = format!("walletd browser harness: {admin_address} signs this in Rust\nline two, ünïcode");
    let signature = admin.sign_message(&message).unwrap();
    let screenshots = target_dir().join("console-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    println!("screenshots in {}", screenshots.display());

    let root = repo_root();
    let mut command = Command::new(&python);
    command
        .current_dir(&root)
        .arg("-u")
        .arg(root.join("crates/walletd/tests/browser/console_test.py"))
        .env("BASE_URL", &app.base)
        .env("ADMIN_KEY", format!("0x{}", admin.to_hex()))
        .env("USER_KEY", format!("0x{}", user.to_hex()))
        .env("ADMIN_ADDRESS", &admin_address)
        .env("RUST_MESSAGE", &message)
        .env("RUST_SIGNATURE", &signature)
        .env("CLAIM_ID", &claim_id)
        .env("PARKED_GROUP", parked["group"].as_str().unwrap())
        .env("PARKED_EVENT_ID", parked["event_id"].as_str().unwrap())
        .env("BUYER_ID", buyer.user_id.to_string())
        .env("WALLETD_BROWSER_SCREENSHOTS", &screenshots);
    let (passed, tail) = tokio::task::spawn_blocking(move || run_streaming(command)).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let claims = load.await.unwrap();
    println!("claim load: {claims} orders claimed while the browser ran");
    assert!(passed, "the browser scenario failed; its last lines:\n{}", tail.join("\n"));

    // What the browser did, seen through the API: the redriven claim was processed, the redrive audited.
    let status = json(app.get(&format!("/v1/claims/{parked_claim}"), &shopper.access).send().await.unwrap(), 200).await;
    assert_eq!(status["status"], "processed", "the redriven claim: {status}");
    let audit = json(
        app.get(&format!("/v1/admin/events?aggregate_id={}", parked["event_id"].as_str().unwrap()), &api_admin)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let audited = audit["items"].as_array().unwrap().iter().find(|e| e["type"] == "event.redrive_requested");
    assert!(audited.is_some_and(|e| e["actor_id"].is_string()), "no audit event of the redrive: {audit}");
    assert!(wait_until(Duration::from_secs(60), || app.processing_done(&api_admin)).await);
    app.assert_ledger_verifies(&api_admin).await;
}
