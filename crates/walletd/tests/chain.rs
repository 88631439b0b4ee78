//! The wallet on chain, against a real node (anvil, started per test): native and ERC-20 deposits
//! credited after exactly their confirmations, reorgs before and after crediting, a `kill -9` in the
//! middle of a scan, and a node that stops answering.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::Duration;

use alloy::primitives::{Address, U256};
use rstest::rstest;
use serde_json::{Value, json};
use testkit::anvil::{Anvil, Funder, chains_file};
use testkit::process::WalletdProcess;
use testkit::{Backend, Session, TempDir, TestApp, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn usdc(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000u64)
}

/// Where the watcher stands, as readiness reports it.
async fn chain_status(http: &reqwest::Client, base: &str) -> Value {
    let body: Value = http.get(format!("{base}/health/ready")).send().await.unwrap().json().await.unwrap();
    body["chains"]["local"].clone()
}

/// Waits until the watcher has processed the node's head.
async fn caught_up(http: &reqwest::Client, base: &str, anvil: &Anvil) {
    let head = anvil.head().await as i64;
    let ok = wait_until(WAIT, || async { chain_status(http, base).await["processed"].as_i64() >= Some(head) }).await;
    assert!(ok, "the watcher did not reach block {head}: {}", chain_status(http, base).await);
}

async fn deposits(http: &reqwest::Client, base: &str, token: &str, query: &str) -> Vec<Value> {
    let res = http.get(format!("{base}/v1/wallet/deposits?limit=500{query}")).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
}

async fn wait_deposits(app: &TestApp, who: &Session, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let ok = wait_until(WAIT, || async { want(&deposits(&app.client, &app.base, &who.access, "").await) }).await;
    let items = deposits(&app.client, &app.base, &who.access, "").await;
    assert!(ok, "deposits never matched: {items:#?}");
    items
}

async fn balance(app: &TestApp, who: &Session, currency: &str) -> String {
    let account: Value =
        app.get(&format!("/v1/wallet/accounts/{currency}"), &who.access).send().await.unwrap().json().await.unwrap();
    account["balance"].as_str().unwrap().to_string()
}

async fn deposit_address(app: &TestApp, who: &Session) -> Address {
    let res = app.get("/v1/wallet/deposit-addresses/local", &who.access).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["chain"], "local");
    body["address"].as_str().unwrap().parse().unwrap()
}

/// A chain with a token: anvil, a funded key holding 1,000,000 tokens, the token's address.
async fn chain_with_token() -> (Anvil, Funder, Address) {
    let anvil = Anvil::start().await;
    let funder = anvil.funded_key(1_000).await;
    let token = funder.deploy_token(6).await;
    funder.mint(token, funder.address(), usdc(1_000_000)).await;
    (anvil, funder, token)
}

async fn app_on(backend: Backend, anvil: &Anvil, token: Address, dir: &TempDir, confirmations: u64) -> TestApp {
    let file = chains_file(&dir.0, anvil, token, confirmations, "");
    TestApp::spawn_with(backend, |s| s.chains_file = Some(file)).await
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn native_and_token_deposits_are_credited_after_exactly_their_confirmations(#[case] backend: Backend) {
    let (anvil, funder, token) = chain_with_token().await;
    let dir = TempDir::new();
    let app = app_on(backend, &anvil, token, &dir, 3).await;
    let admin = app.admin_token().await;
    let (user, other) = (app.new_unfunded_user().await, app.new_unfunded_user().await);

    let address = deposit_address(&app, &user).await;
    assert_eq!(deposit_address(&app, &user).await, address, "the same address every time");
    assert_ne!(deposit_address(&app, &other).await, address, "one address per user");
    let res = app.get("/v1/wallet/deposit-addresses/", &user.access).send().await.unwrap();
    assert_eq!(res.status(), 404);
    testkit::assert_problem(
        app.get("/v1/wallet/deposit-addresses/nope", &user.access).send().await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;

    // 1.5 ETH in block b, 25.5 tokens in block b + 1.
    let wei = U256::from(15u64) * U256::from(10u64).pow(U256::from(17));
    funder.send_eth(address, wei).await;
    let eth_block = anvil.head().await;
    funder.send_tokens(token, address, U256::from(25_500_000u64)).await;
    caught_up(&app.client, &app.base, &anvil).await;
    let seen = wait_deposits(&app, &user, |d| d.len() == 2).await;
    assert!(seen.iter().all(|d| d["status"] == "seen"), "{seen:#?}");
    assert_eq!(balance(&app, &user, "ETH").await, "0.000000000000000000");
    assert_eq!(balance(&app, &user, "USDC").await, "0.000000");

    // Head b + 2: the ether has 3 confirmations, the tokens 2.
    anvil.mine(1).await;
    assert_eq!(anvil.head().await, eth_block + 2);
    caught_up(&app.client, &app.base, &anvil).await;
    let items =
        wait_deposits(&app, &user, |d| d.iter().any(|d| d["currency"] == "ETH" && d["status"] == "credited")).await;
    let tokens = items.iter().find(|d| d["currency"] == "USDC").unwrap();
    assert_eq!(tokens["status"], "seen", "2 confirmations are not 3: {tokens}");
    assert_eq!(tokens["confirmations"], 2);
    assert_eq!(balance(&app, &user, "ETH").await, "1.500000000000000000");
    assert_eq!(balance(&app, &user, "USDC").await, "0.000000");

    anvil.mine(1).await;
    let items = wait_deposits(&app, &user, |d| d.iter().all(|d| d["status"] == "credited")).await;
    assert_eq!(items.len(), 2);
    for d in &items {
        assert!(d["deposit_id"].is_string(), "{d}");
        assert_eq!(d["address"].as_str().unwrap(), format!("{address:#x}"));
    }
    assert_eq!(balance(&app, &user, "USDC").await, "25.500000");
    assert_eq!(balance(&app, &user, "ETH").await, "1.500000000000000000");

    // More blocks credit nothing again.
    anvil.mine(5).await;
    caught_up(&app.client, &app.base, &anvil).await;
    assert_eq!(balance(&app, &user, "USDC").await, "25.500000");
    let entries: Value =
        app.get("/v1/wallet/entries?limit=50", &user.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(entries["items"].as_array().unwrap().len(), 2, "one ledger entry per deposit: {entries:#}");
    // The other user's list is empty; admins see everyone's.
    assert!(deposits(&app.client, &app.base, &other.access, "").await.is_empty());
    assert_eq!(deposits(&app.client, &app.base, &admin, "&user_id=all").await.len(), 2);
    testkit::assert_problem(
        app.get("/v1/wallet/deposits?user_id=all", &user.access).send().await.unwrap(),
        403,
        "FORBIDDEN",
    )
    .await;
    app.assert_ledger_verifies(&admin).await;
    assert_eq!(app.metric("chain_deposits_credited_total", &["chain=\"local\"", "currency=\"USDC\""]).await, 1.0);
}

#[tokio::test]
async fn a_reorg_drops_an_uncredited_deposit_and_flags_a_credited_one() {
    let (anvil, funder, token) = chain_with_token().await;
    let dir = TempDir::new();
    let app = app_on(Backend::Postgres, &anvil, token, &dir, 3).await;
    let admin = app.admin_token().await;
    let user = app.new_unfunded_user().await;
    let address = deposit_address(&app, &user).await;
    anvil.mine(2).await;
    caught_up(&app.client, &app.base, &anvil).await;

    // A transfer mined in block h + 1, seen, then that block leaves the chain.
    let fork = anvil.snapshot().await;
    let raw = funder.sign(Funder::token_transfer(token, address, usdc(7))).await;
    anvil.rpc("eth_sendRawTransaction", json!([raw])).await.unwrap();
    let items = wait_deposits(&app, &user, |d| d.len() == 1).await;
    assert_eq!(items[0]["status"], "seen");
    anvil.revert(&fork).await;
    anvil.mine(3).await;
    caught_up(&app.client, &app.base, &anvil).await;
    let items = wait_deposits(&app, &user, |d| d.first().is_some_and(|d| d["status"] == "dropped")).await;
    anvil.mine(5).await;
    caught_up(&app.client, &app.base, &anvil).await;
    assert_eq!(deposits(&app.client, &app.base, &user.access, "").await[0]["status"], "dropped");
    assert_eq!(balance(&app, &user, "USDC").await, "0.000000", "a dropped deposit is never credited");

    // The same signed transfer mined on the new branch: credited once, on the same record.
    anvil.rpc("eth_sendRawTransaction", json!([raw])).await.unwrap();
    anvil.mine(2).await;
    let credited = wait_deposits(&app, &user, |d| d.len() == 1 && d[0]["status"] == "credited").await;
    assert_eq!(credited[0]["id"], items[0]["id"]);
    assert_eq!(balance(&app, &user, "USDC").await, "7.000000");

    // A credited deposit that a deeper reorg removes is flagged, not silently kept.
    let other = anvil.funded_key(1).await;
    funder.mint(token, other.address(), usdc(1)).await;
    let fork = anvil.snapshot().await;
    let raw = funder.sign(Funder::token_transfer(token, address, usdc(3))).await;
    anvil.rpc("eth_sendRawTransaction", json!([raw])).await.unwrap();
    anvil.mine(3).await;
    wait_deposits(&app, &user, |d| d.len() == 2 && d.iter().all(|d| d["status"] == "credited")).await;
    anvil.revert(&fork).await;
    anvil.mine(6).await;
    caught_up(&app.client, &app.base, &anvil).await;
    let ok = wait_until(WAIT, || async {
        deposits(&app.client, &app.base, &admin, "&user_id=all&status=reorged").await.len() == 1
    })
    .await;
    assert!(
        ok,
        "the credited deposit was not flagged: {:#?}",
        deposits(&app.client, &app.base, &admin, "&user_id=all").await
    );
    assert_eq!(app.metric("chain_deposits_flagged", &[]).await, 1.0);
    assert!(app.metric("chain_reorgs_total", &["chain=\"local\""]).await >= 2.0);
    assert_eq!(balance(&app, &user, "USDC").await, "10.000000", "the money stays credited: a person decides");

    // The same transfer mined again, now second in its block (another transfer pays a higher tip):
    // its log index changes, its place in its transaction does not. Back to credited, not credited twice.
    anvil.automine(false).await;
    let mut first = Funder::token_transfer(token, funder.address(), usdc(1));
    first.max_fee_per_gas = Some(50_000_000_000);
    first.max_priority_fee_per_gas = Some(10_000_000_000);
    let first = other.sign(first).await;
    anvil.rpc("eth_sendRawTransaction", json!([first])).await.unwrap();
    anvil.rpc("eth_sendRawTransaction", json!([raw])).await.unwrap();
    anvil.mine(1).await;
    anvil.automine(true).await;
    anvil.mine(3).await;
    let back = wait_deposits(&app, &user, |d| d.len() == 2 && d.iter().all(|d| d["status"] == "credited")).await;
    let again = back.iter().find(|d| d["amount"] == "3.000000").unwrap();
    assert_eq!(again["log_index"], 1, "the scenario needs the transfer at another place in its block: {again}");
    assert_eq!(again["transfer_index"], 0);
    assert_eq!(balance(&app, &user, "USDC").await, "10.000000", "credited once, whatever its block");
    assert_eq!(app.metric("chain_deposits_flagged", &[]).await, 0.0);
    app.assert_ledger_verifies(&admin).await;
}

#[tokio::test]
async fn a_kill_9_in_the_middle_of_a_scan_credits_every_deposit_once() {
    let (anvil, funder, token) = chain_with_token().await;
    let dir = TempDir::new();
    let file = chains_file(&dir.0, &anvil, token, 2, "block_range = 2");
    let db = testkit::fresh_database_url(Backend::Postgres, &dir).await;
    let key = testkit::shared_jwt_key().display().to_string();
    let envs = [
        ("WALLETD_DATABASE_URL", db.as_str()),
        ("WALLETD_CHAINS_FILE", file.to_str().unwrap()),
        ("WALLETD_JWT_PRIVATE_KEY_FILE", key.as_str()),
        ("WALLETD_LEASE_SECS", "1"),
        ("WALLETD_RATE_LIMIT_PER_MINUTE", "0"),
        ("WALLETD_SIGNIN_RATE_LIMIT_PER_MINUTE", "0"),
    ];
    let bin = env!("CARGO_BIN_EXE_walletd");
    let http = reqwest::Client::new();
    let mut first = WalletdProcess::start(bin, &dir.0, &envs);
    let mut users = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..10 {
        let (token, _) = testkit::process::sign_in(&http, &first.base).await;
        let res = http
            .get(format!("{}/v1/wallet/deposit-addresses/local", first.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        addresses.push(body["address"].as_str().unwrap().parse::<Address>().unwrap());
        users.push(token);
    }
    // 120 transfers in 60 blocks: user i gets i + 1 tokens in each of its 12.
    let first_nonce = funder.nonce().await;
    for round in 0..60u64 {
        let to: Vec<Address> = (0..2).map(|k| addresses[((round * 2 + k) % 10) as usize]).collect();
        let value: Vec<U256> =
            to.iter().map(|a| usdc(addresses.iter().position(|x| x == a).unwrap() as u64 + 1)).collect();
        let raw = funder.sign_at(Funder::token_transfer_many(token, to, value), first_nonce + round).await;
        anvil.rpc("eth_sendRawTransaction", json!([raw])).await.unwrap();
    }
    let head = anvil.head().await as f64;

    // Killed part way through (a step reads 2 blocks, records them and credits what is final).
    let ok =
        wait_until(WAIT, || async { first.metric("chain_processed_block", &["chain=\"local\""]).await >= head / 3.0 })
            .await;
    assert!(ok, "the watcher did not start");
    let at = first.metric("chain_processed_block", &["chain=\"local\""]).await;
    first.kill9();
    assert!(at < head, "the kill came after the watcher had finished ({at} of {head})");
    let second = WalletdProcess::start(bin, &dir.0, &envs);
    let admin = testkit::process::admin_token(bin, &dir.0, &envs);
    anvil.mine(2).await;
    let done = wait_until(Duration::from_secs(60), || async {
        deposits(&http, &second.base, &admin, "&user_id=all&status=credited").await.len() == 120
    })
    .await;
    assert!(
        done,
        "not every deposit was credited: {:?}",
        deposits(&http, &second.base, &admin, "&user_id=all").await.len()
    );
    for (i, token) in users.iter().enumerate() {
        let account: Value = http
            .get(format!("{}/v1/wallet/accounts/USDC", second.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(account["balance"], format!("{}.000000", 12 * (i + 1)), "user {i}");
    }
    assert_eq!(deposits(&http, &second.base, &admin, "&user_id=all").await.len(), 120);
    testkit::assert_ledger_verifies(&http, &second.base, &admin).await;
}

#[tokio::test]
async fn a_node_that_hangs_leaves_the_api_serving_and_the_watcher_resumes() {
    let (anvil, funder, token) = chain_with_token().await;
    let dir = TempDir::new();
    let app = app_on(Backend::Sqlite, &anvil, token, &dir, 1).await;
    let user = app.new_unfunded_user().await;
    let address = deposit_address(&app, &user).await;
    caught_up(&app.client, &app.base, &anvil).await;

    anvil.pause();
    let failing = wait_until(WAIT, || async { chain_status(&app.client, &app.base).await["rpc"] == "failing" }).await;
    let res = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200, "a chain never fails readiness");
    assert!(failing, "readiness does not show the chain failing: {}", chain_status(&app.client, &app.base).await);
    assert_eq!(balance(&app, &user, "USDC").await, "0.000000", "the API keeps serving");
    assert_eq!(app.get("/v1/wallet/deposit-addresses/local", &user.access).send().await.unwrap().status(), 200);

    anvil.resume();
    funder.send_tokens(token, address, usdc(4)).await;
    anvil.mine(3).await;
    let ok = wait_until(WAIT, || async { balance(&app, &user, "USDC").await == "4.000000" }).await;
    assert!(ok, "the watcher did not resume: {}", chain_status(&app.client, &app.base).await);
    let ok = wait_until(WAIT, || async { chain_status(&app.client, &app.base).await["rpc"] == "ok" }).await;
    assert!(ok, "readiness still shows the chain failing");
}

/// A hot wallet (a key generated now) with ether for gas and 1,000,000 tokens to pay out.
async fn hot_wallet(anvil: &Anvil, funder: &Funder, token: Address) -> alloy::signers::local::PrivateKeySigner {
    let key = alloy::signers::local::PrivateKeySigner::random();
    anvil.rpc("anvil_setBalance", json!([key.address(), "0x8ac7230489e80000"])).await.unwrap();
    funder.mint(token, key.address(), usdc(1_000_000)).await;
    key
}

fn key_hex(key: &alloy::signers::local::PrivateKeySigner) -> String {
    alloy::primitives::hex::encode(key.to_bytes())
}

/// walletd on the chain with `hot` as its signer's key; `extra` goes into the chain's settings.
async fn app_signing(
    backend: Backend,
    anvil: &Anvil,
    token: Address,
    dir: &TempDir,
    confirmations: u64,
    extra: &str,
    hot: &alloy::signers::local::PrivateKeySigner,
) -> TestApp {
    let file = chains_file(&dir.0, anvil, token, confirmations, extra);
    let hex = key_hex(hot);
    TestApp::spawn_with(backend, |s| {
        s.chains_file = Some(file);
        s.chain_signer_key = Some(settings::Redacted(hex));
    })
    .await
}

async fn withdraw(http: &reqwest::Client, base: &str, token: &str, body: Value) -> reqwest::Response {
    http.post(format!("{base}/v1/wallet/withdrawals")).bearer_auth(token).json(&body).send().await.unwrap()
}

async fn withdrawal(http: &reqwest::Client, base: &str, token: &str, id: &str) -> Value {
    let res = http.get(format!("{base}/v1/wallet/withdrawals/{id}")).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Waits until the withdrawal reads `status`, mining a block now and then (for its confirmations).
async fn wait_withdrawal(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    status: &str,
    anvil: &Anvil,
    mine: bool,
) -> Value {
    let ok = wait_until(WAIT, || async {
        if mine {
            anvil.mine(1).await;
        }
        withdrawal(http, base, token, id).await["status"] == status
    })
    .await;
    let w = withdrawal(http, base, token, id).await;
    assert!(ok, "the withdrawal never became {status}: {w:#}");
    w
}

async fn nonce_on_node(anvil: &Anvil, who: Address) -> u64 {
    let n = anvil.rpc("eth_getTransactionCount", json!([who, "pending"])).await.unwrap();
    u64::from_str_radix(n.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[tokio::test]
async fn a_withdrawal_pays_out_on_chain_and_posts_its_hold() {
    let (anvil, funder, token) = chain_with_token().await;
    let hot = hot_wallet(&anvil, &funder, token).await;
    let dir = TempDir::new();
    let app = app_signing(Backend::Postgres, &anvil, token, &dir, 2, "", &hot).await;
    let admin = app.admin_token().await;
    let (user, other) = (app.new_unfunded_user().await, app.new_unfunded_user().await);
    for (currency, amount) in [("USDC", "100"), ("ETH", "2")] {
        testkit::process::fund_at(&app.client, &app.base, &admin, &user.user_id.to_string(), currency, amount).await;
    }
    let recipient = alloy::signers::local::PrivateKeySigner::random().address();
    let to = recipient.to_checksum(None);

    // Refusals name their field.
    // One letter's case flipped: the checksum no longer holds.
    let at = to[2..].find(|c: char| c.is_ascii_alphabetic()).unwrap() + 2;
    let letter = to[at..=at].chars().next().unwrap();
    let swapped = if letter.is_ascii_uppercase() { letter.to_ascii_lowercase() } else { letter.to_ascii_uppercase() };
    let flipped = format!("{}{swapped}{}", &to[..at], &to[at + 1..]);
    let cases = [
        (json!({"chain": "local", "currency": "USDC", "to_address": flipped, "amount": "1"}), "to_address"),
        (json!({"chain": "local", "currency": "USDC", "to_address": "0x12", "amount": "1"}), "to_address"),
        (json!({"chain": "mars", "currency": "USDC", "to_address": to, "amount": "1"}), "chain"),
        (json!({"chain": "local", "currency": "BTC", "to_address": to, "amount": "1"}), "currency"),
        (json!({"chain": "local", "currency": "USDC", "to_address": to, "amount": "0.0000001"}), "amount"),
        (json!({"chain": "local", "currency": "USDC", "to_address": to, "amount": "0"}), "amount"),
    ];
    for (body, field) in cases {
        let problem = testkit::assert_problem(
            withdraw(&app.client, &app.base, &user.access, body).await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(testkit::problem_fields(&problem), [field]);
    }
    let too_much = json!({"chain": "local", "currency": "USDC", "to_address": to, "amount": "100.000001"});
    testkit::assert_problem(withdraw(&app.client, &app.base, &user.access, too_much).await, 422, "INSUFFICIENT_FUNDS")
        .await;

    let res = withdraw(
        &app.client,
        &app.base,
        &user.access,
        json!({"chain": "local", "currency": "USDC", "to_address": to, "amount": "12.5"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let tokens: Value = res.json().await.unwrap();
    assert_eq!((tokens["status"].as_str(), tokens["amount"].as_str()), (Some("requested"), Some("12.500000")));
    let lower = format!("{recipient:#x}");
    let res = withdraw(
        &app.client,
        &app.base,
        &user.access,
        json!({"chain": "local", "currency": "ETH", "to_address": lower, "amount": "0.25"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let ether: Value = res.json().await.unwrap();
    assert_eq!(ether["to_address"], to, "shown checksummed");

    let t = tokens["id"].as_str().unwrap().to_string();
    let t = t.as_str();
    let e = ether["id"].as_str().unwrap();
    let done_t = wait_withdrawal(&app.client, &app.base, &user.access, t, "confirmed", &anvil, true).await;
    let done_e = wait_withdrawal(&app.client, &app.base, &user.access, e, "confirmed", &anvil, true).await;
    assert_ne!(done_t["nonce"], done_e["nonce"]);
    assert_eq!(anvil.token_balance(token, recipient).await, U256::from(12_500_000u64));
    assert_eq!(anvil.balance(recipient).await, U256::from(250_000_000_000_000_000u64));
    assert_eq!(balance(&app, &user, "USDC").await, "87.500000");
    assert_eq!(balance(&app, &user, "ETH").await, "1.750000000000000000");
    let account: Value = app.get("/v1/wallet/accounts/USDC", &user.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(account["held"], "0.000000");
    let holds: Value =
        app.get("/v1/wallet/holds?status=posted", &user.access).send().await.unwrap().json().await.unwrap();
    let posted: Vec<&Value> = holds["items"].as_array().unwrap().iter().map(|h| &h["id"]).collect();
    assert!(posted.contains(&&done_t["hold_id"]) && posted.contains(&&done_e["hold_id"]), "{holds:#}");
    let out: Value =
        app.get("/v1/wallet/accounts?user_id=@withdrawals", &admin).send().await.unwrap().json().await.unwrap();
    let usdc_out = out["items"].as_array().unwrap().iter().find(|a| a["currency"] == "USDC").unwrap();
    assert_eq!(usdc_out["balance"], "12.500000");

    // The same over gRPC: a refusal names its field; a withdrawal reads as over REST.
    let channel = tonic::transport::Endpoint::from_shared(app.grpc_base.clone()).unwrap().connect().await.unwrap();
    let mut rpc = rpc::v1::chain_service_client::ChainServiceClient::new(channel);
    fn authed<M>(token: &str, m: M) -> tonic::Request<M> {
        let mut req = tonic::Request::new(m);
        req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    }
    let bad = rpc::v1::CreateWithdrawalRequest {
        chain: "local".into(),
        currency: "USDC".into(),
        to_address: "0x1".into(),
        amount: "1".into(),
    };
    let refused = rpc.create_withdrawal(authed(&user.access, bad)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let over_grpc = rpc
        .get_withdrawal(authed(&user.access, rpc::v1::GetWithdrawalRequest { id: t.to_string() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((over_grpc.status.as_str(), over_grpc.tx_hash.as_deref()), ("confirmed", done_t["tx_hash"].as_str()));

    // Only its owner (and admins) see it.
    let res = app.get(&format!("/v1/wallet/withdrawals/{t}"), &other.access).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let listed: Value =
        app.get("/v1/wallet/withdrawals?status=confirmed", &user.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    app.assert_ledger_verifies(&admin).await;
    assert_eq!(nonce_on_node(&anvil, hot.address()).await, 2, "two withdrawals, two transactions");
}

#[tokio::test]
async fn a_kill_9_between_signing_and_broadcast_sends_one_transaction() {
    let (anvil, funder, token) = chain_with_token().await;
    let hot = hot_wallet(&anvil, &funder, token).await;
    let dir = TempDir::new();
    let file = chains_file(&dir.0, &anvil, token, 1, "");
    let db = testkit::fresh_database_url(Backend::Postgres, &dir).await;
    let key = testkit::shared_jwt_key().display().to_string();
    let hex = key_hex(&hot);
    let envs = [
        ("WALLETD_DATABASE_URL", db.as_str()),
        ("WALLETD_CHAINS_FILE", file.to_str().unwrap()),
        ("WALLETD_JWT_PRIVATE_KEY_FILE", key.as_str()),
        ("WALLETD_CHAIN_SIGNER_KEY", hex.as_str()),
        ("WALLETD_LEASE_SECS", "1"),
    ];
    let mut stalling = envs.to_vec();
    stalling.push(("WALLETD_FAILPOINTS", "signer-after-sign"));
    let bin = env!("CARGO_BIN_EXE_walletd");
    let http = reqwest::Client::new();
    let mut first = WalletdProcess::start(bin, &dir.0, &stalling);
    let admin = testkit::process::admin_token(bin, &dir.0, &envs);
    let (user, user_id) = testkit::process::sign_in(&http, &first.base).await;
    testkit::process::fund_at(&http, &first.base, &admin, &user_id, "USDC", "50").await;
    let to = alloy::signers::local::PrivateKeySigner::random().address();
    let body = json!({"chain": "local", "currency": "USDC", "to_address": to, "amount": "5"});
    let res = withdraw(&http, &first.base, &user, body.clone()).await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let signed = wait_withdrawal(&http, &first.base, &user, &id, "signed", &anvil, false).await;
    assert_eq!(nonce_on_node(&anvil, hot.address()).await, 0, "nothing was broadcast before the kill");
    first.kill9();

    let second = WalletdProcess::start(bin, &dir.0, &envs);
    let done = wait_withdrawal(&http, &second.base, &user, &id, "confirmed", &anvil, true).await;
    assert_eq!(done["tx_hash"], signed["tx_hash"], "the stored bytes were sent, not a second signature");
    assert_eq!((done["nonce"].as_i64(), done["replacements"].as_i64()), (Some(0), Some(0)));
    assert_eq!(nonce_on_node(&anvil, hot.address()).await, 1, "one transaction on chain");
    assert_eq!(anvil.token_balance(token, to).await, usdc(5));

    // The next withdrawal takes the next nonce: none skipped, none reused.
    let res = withdraw(&http, &second.base, &user, body).await;
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let next = wait_withdrawal(&http, &second.base, &user, &id, "confirmed", &anvil, true).await;
    assert_eq!(next["nonce"].as_i64(), Some(1));
    assert_eq!(nonce_on_node(&anvil, hot.address()).await, 2);
    assert_eq!(anvil.token_balance(token, to).await, usdc(10));
    testkit::assert_ledger_verifies(&http, &second.base, &admin).await;
}

#[tokio::test]
async fn a_stuck_withdrawal_is_replaced_at_the_same_nonce_and_mined_once() {
    let (anvil, funder, token) = chain_with_token().await;
    let hot = hot_wallet(&anvil, &funder, token).await;
    let dir = TempDir::new();
    let app = app_signing(Backend::Sqlite, &anvil, token, &dir, 1, "replace_after_secs = 1", &hot).await;
    let admin = app.admin_token().await;
    let user = app.new_unfunded_user().await;
    testkit::process::fund_at(&app.client, &app.base, &admin, &user.user_id.to_string(), "ETH", "3").await;
    let to = alloy::signers::local::PrivateKeySigner::random().address();

    anvil.automine(false).await;
    let body = json!({"chain": "local", "currency": "ETH", "to_address": to, "amount": "1.5"});
    let res = withdraw(&app.client, &app.base, &user.access, body).await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let first = wait_withdrawal(&app.client, &app.base, &user.access, &id, "broadcast", &anvil, false).await;
    let ok = wait_until(WAIT, || async {
        withdrawal(&app.client, &app.base, &user.access, &id).await["replacements"].as_i64() >= Some(1)
    })
    .await;
    let replaced = withdrawal(&app.client, &app.base, &user.access, &id).await;
    assert!(ok, "a stuck transaction was not replaced: {replaced:#}");
    assert_ne!(replaced["tx_hash"], first["tx_hash"]);
    assert_eq!(replaced["nonce"], first["nonce"], "a replacement takes the same nonce");

    anvil.automine(true).await;
    let done = wait_withdrawal(&app.client, &app.base, &user.access, &id, "confirmed", &anvil, true).await;
    assert_eq!(nonce_on_node(&anvil, hot.address()).await, 1, "only one of them was mined");
    assert_eq!(anvil.balance(to).await, U256::from(1_500_000_000_000_000_000u64), "paid once");
    let first_hash = first["tx_hash"].as_str().unwrap();
    if done["tx_hash"] != first["tx_hash"] {
        let receipt = anvil.rpc("eth_getTransactionReceipt", json!([first_hash])).await.unwrap();
        assert!(receipt.is_null(), "the replaced transaction was mined too: {receipt}");
    }
    assert_eq!(balance(&app, &user, "ETH").await, "1.500000000000000000");
    app.assert_ledger_verifies(&admin).await;
}

#[tokio::test]
async fn a_reverted_withdrawal_fails_and_gives_the_money_back() {
    let (anvil, _funder, token) = chain_with_token().await;
    // A hot wallet with gas but none of the token: its transfer reverts on chain.
    let hot = alloy::signers::local::PrivateKeySigner::random();
    anvil.rpc("anvil_setBalance", json!([hot.address(), "0x8ac7230489e80000"])).await.unwrap();
    let dir = TempDir::new();
    let app = app_signing(Backend::Sqlite, &anvil, token, &dir, 1, "", &hot).await;
    let admin = app.admin_token().await;
    let user = app.new_unfunded_user().await;
    testkit::process::fund_at(&app.client, &app.base, &admin, &user.user_id.to_string(), "USDC", "20").await;
    let to = alloy::signers::local::PrivateKeySigner::random().address();
    let body = json!({"chain": "local", "currency": "USDC", "to_address": to, "amount": "8"});
    let res = withdraw(&app.client, &app.base, &user.access, body).await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let failed = wait_withdrawal(&app.client, &app.base, &user.access, &id, "failed", &anvil, true).await;
    assert_eq!(failed["failure_reason"], "the transaction reverted");
    assert!(failed["block_number"].is_i64());
    let account: Value = app.get("/v1/wallet/accounts/USDC", &user.access).send().await.unwrap().json().await.unwrap();
    assert_eq!((account["balance"].as_str(), account["held"].as_str()), (Some("20.000000"), Some("0.000000")));
    let holds: Value =
        app.get("/v1/wallet/holds?status=voided", &user.access).send().await.unwrap().json().await.unwrap();
    assert_eq!(holds["items"][0]["id"], failed["hold_id"]);
    app.assert_ledger_verifies(&admin).await;
}
