//! The real `walletd` binary: the README's flow on the embedded defaults, the CLI's helpers,
//! configuration errors, and graceful shutdown on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::process::Command;
use std::time::Duration;

use identity::eth::{LocalWallet, to_checksum};
use serde_json::{Value, json};
use testkit::TempDir;
use testkit::process::{WalletdProcess, command};

const BIN: &str = env!("CARGO_BIN_EXE_walletd");

fn walletd(dir: &TempDir) -> Command {
    command(BIN, &dir.0, &[])
}

#[tokio::test]
async fn the_readme_flow_on_embedded_defaults() {
    let dir = TempDir::new();
    let admin_address = to_checksum(&LocalWallet::random().unwrap().address());
    let admins = [("WALLETD_ADMIN_ADDRESSES", admin_address.as_str())];
    let mut server = WalletdProcess::start(BIN, &dir.0, &admins);
    let base = server.base.clone();
    assert!(dir.0.join("data/walletd.db").exists(), "SQLite database under ./data");
    assert!(dir.0.join("data/jwt-signing-key.pem").exists(), "signing key under ./data");
    let http = reqwest::Client::new();

    // Sign in with a key made by `walletd keygen` and a signature from `walletd sign`.
    let key_file = dir.0.join("me.key");
    let out = walletd(&dir).args(["keygen", "--out"]).arg(&key_file).output().unwrap();
    assert!(out.status.success());
    let address = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let nonce: Value = http
        .post(format!("{base}/v1/auth/nonce"))
        .json(&json!({"address": address}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let message = nonce["message"].as_str().unwrap();
    let msg_file = dir.0.join("msg.txt");
    std::fs::write(&msg_file, message).unwrap();
    let out = walletd(&dir)
        .args(["sign", "--key-file"])
        .arg(&key_file)
        .arg("--message-file")
        .arg(&msg_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let signature = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let login: Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"message": message, "signature": signature}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().expect("login succeeded").to_string();
    assert_eq!(login["user"]["address"], address.as_str());

    let created: Value = http
        .post(format!("{base}/v1/supplies"))
        .bearer_auth(&token)
        .json(&json!({"currency": "USDC", "amount": "250.5"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = format!("{base}/v1/supplies/{}", created["id"].as_str().unwrap());
    let list: Value =
        http.get(format!("{base}/v1/supplies")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["items"][0]["id"], created["id"]);
    let res = http
        .patch(&path)
        .bearer_auth(&token)
        .header("if-match", "\"1\"")
        .json(&json!({"amount": "300"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(http.delete(&path).bearer_auth(&token).send().await.unwrap().status(), 204);

    // An admin token minted by the CLI with the server's key reads the events; the CLI mints one
    // only for an address the configuration lists.
    let out = command(BIN, &dir.0, &admins).args(["token", "--role", "admin", "--address", &address]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not in WALLETD_ADMIN_ADDRESSES"), "{stderr}");
    let out =
        command(BIN, &dir.0, &admins).args(["token", "--role", "admin", "--address", &admin_address]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let events: Value =
        http.get(format!("{base}/v1/admin/events")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    let types: Vec<&str> = events["items"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["supply.created", "supply.updated", "supply.deleted"]);

    // SIGTERM: a clean, prompt exit.
    let status = server.terminate(Duration::from_secs(20)).expect("walletd did not stop on SIGTERM");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_bad_setting_stops_the_start_naming_it() {
    let dir = TempDir::new();
    for (var, value) in [
        ("WALLETD_HTTP_ADDR", "not-an-address"),
        ("WALLETD_DATABASE_URL", "mysql://x"),
        ("WALLETD_ASSETS", "ETH:40"),
        ("WALLETD_ADMIN_ADDRESSES", "0xnope"),
        ("WALLETD_DATABASE_POOL_SIZE", "0"),
    ] {
        let out = walletd(&dir).args(["serve"]).env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}: {err}");
    }
    let out = walletd(&dir).args(["serve", "--services", "supply,bogus"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
}

#[test]
fn files_walletd_creates_are_private_and_a_readable_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = TempDir::new();
    let address = to_checksum(&LocalWallet::random().unwrap().address());
    let out = walletd(&dir).args(["token", "--address", &address]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&dir.0.join("data")), 0o700, "the data directory");
    assert_eq!(mode(&dir.0.join("data/walletd.db")), 0o600, "the SQLite database");
    assert_eq!(mode(&dir.0.join("data/jwt-signing-key.pem")), 0o600, "the signing key");

    let key = dir.0.join("data/jwt-signing-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut serve = walletd(&dir);
    serve.args(["serve"]).env("WALLETD_HTTP_ADDR", "127.0.0.1:0").env("WALLETD_METRICS_ADDR", "127.0.0.1:0");
    // It must stop by itself; one that serves is killed at the deadline and fails the test.
    let exited = testkit::process::run_to_exit(serve, Duration::from_secs(20));
    let (status, err) = exited.expect("walletd served with a key others can read");
    assert!(!status.success(), "{err}");
    assert!(err.contains("jwt-signing-key.pem") && err.contains("chmod 600"), "{err}");
}

#[test]
fn token_lifetimes_are_capped_at_seven_days() {
    let dir = TempDir::new();
    let address = to_checksum(&LocalWallet::random().unwrap().address());
    for ttl in ["604801", "18446744073709551615", "18446744073709551616", "0", "-1"] {
        let out = walletd(&dir).args(["token", "--address", &address, &format!("--ttl-secs={ttl}")]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "--ttl-secs {ttl}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--ttl-secs"), "--ttl-secs {ttl}: {err}");
        assert!(!err.contains("panicked"), "--ttl-secs {ttl}: {err}");
    }
    let out = walletd(&dir).args(["token", "--address", &address, "--ttl-secs", "604800"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_misspelt_setting_stops_the_start_and_names_the_real_one() {
    let dir = TempDir::new();
    let out = walletd(&dir).args(["serve"]).env("WALLETD_HTTP_ADR", "1").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WALLETD_HTTP_ADR") && err.contains("did you mean WALLETD_HTTP_ADDR"), "{err}");
    // A variable that only shares the prefix (Kubernetes injects WALLETD_SERVICE_HOST and friends
    // into every pod of a Service named walletd) is warned about, not refused.
    let out = walletd(&dir).args(["config"]).env("WALLETD_PORT_8080_TCP_ADDR", "10.0.0.7").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WALLETD_PORT_8080_TCP_ADDR"));
}

#[test]
fn config_lists_every_setting_of_the_readme_table() {
    let dir = TempDir::new();
    let out = walletd(&dir).args(["config"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| format!("WALLETD_{}", k.to_ascii_uppercase())))
        .collect();
    let readme = include_str!("../../../README.md");
    let listed: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `WALLETD_"))
        .filter_map(|l| l.split_once('`').map(|(k, _)| k))
        .collect();
    assert!(listed.len() >= 40, "the README's configuration table: {listed:?}");
    for key in &listed {
        assert!(printed.contains(&format!("WALLETD_{key}")), "walletd config does not print WALLETD_{key}");
    }
    assert_eq!(printed.len(), listed.len(), "walletd config prints settings the README does not list");
    // And the README's table is exactly what `walletd config --markdown` renders.
    let out = walletd(&dir).args(["config", "--markdown"]).output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(readme.contains(&table), "the README table differs from `walletd config --markdown`");
}

#[test]
fn config_prints_the_effective_settings_with_secrets_masked() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("walletd.toml"), "region = \"eu-west\"\nsiwe_chain_id = 10\n").unwrap();
    let out = walletd(&dir)
        .args(["--config", "walletd.toml", "config"])
        .env("WALLETD_DATABASE_URL", "postgres://walletd:hunter2@db.internal:5432/walletd")
        .env("WALLETD_SIWE_CHAIN_ID", "137")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("postgres://walletd:****@db.internal:5432/walletd"), "{text}");
    assert!(text.contains("region = \"eu-west\""), "file value applies: {text}");
    assert!(text.contains("siwe_chain_id = \"137\""), "environment overrides the file: {text}");
    // A signer key is shown as nothing but that it is set.
    let key = alloy::primitives::hex::encode(alloy::signers::local::PrivateKeySigner::random().to_bytes());
    let out = walletd(&dir).args(["config"]).env("WALLETD_CHAIN_SIGNER_KEY", &key).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(&key[..16]), "{text}");
    assert!(text.contains("chain_signer_key = \"****\""), "{text}");
}

#[test]
fn a_bad_chains_file_or_a_readable_signer_key_stops_the_start_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let xpub = "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8";
    let chains = dir.0.join("chains.toml");
    let good = format!(
        "[[chain]]\nname = \"local\"\nchain_id = 31337\nrpc_url = \"http://127.0.0.1:1\"\nconfirmations = 2\nxpub = \"{xpub}\"\n\n[[chain.asset]]\ncurrency = \"ETH\"\nnative = true\n"
    );
    for (bad, named) in [
        (good.replace("ETH", "DOGE"), "currency"),
        (good.replace("confirmations = 2", "confirmations = 0"), "confirmations"),
        (good.replace(xpub, "xpub-nope"), "xpub"),
    ] {
        std::fs::write(&chains, bad).unwrap();
        let mut serve = walletd(&dir);
        serve.args(["serve"]).env("WALLETD_CHAINS_FILE", &chains).env("WALLETD_HTTP_ADDR", "127.0.0.1:0");
        serve.env("WALLETD_METRICS_ADDR", "127.0.0.1:0").env("WALLETD_GRPC_ADDR", "127.0.0.1:0");
        let (status, err) = testkit::process::run_to_exit(serve, Duration::from_secs(20)).expect("walletd served");
        assert!(!status.success());
        assert!(err.contains("WALLETD_CHAINS_FILE") && err.contains(named), "{named}: {err}");
    }
    std::fs::write(&chains, &good).unwrap();
    let key = dir.0.join("hot.key");
    let secret = alloy::primitives::hex::encode(alloy::signers::local::PrivateKeySigner::random().to_bytes());
    std::fs::write(&key, &secret).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut serve = walletd(&dir);
    serve.args(["serve"]).env("WALLETD_CHAINS_FILE", &chains).env("WALLETD_CHAIN_SIGNER_KEY_FILE", &key);
    serve
        .env("WALLETD_HTTP_ADDR", "127.0.0.1:0")
        .env("WALLETD_METRICS_ADDR", "127.0.0.1:0")
        .env("WALLETD_GRPC_ADDR", "127.0.0.1:0");
    let (status, err) = testkit::process::run_to_exit(serve, Duration::from_secs(20)).expect("walletd served");
    assert!(!status.success());
    assert!(err.contains("WALLETD_CHAIN_SIGNER_KEY_FILE") && err.contains("chmod 600"), "{err}");
    assert!(!err.contains(&secret[..16]), "the key itself is never printed: {err}");
}

#[tokio::test]
async fn wallet_verify_exits_1_and_names_what_does_not_add_up() {
    let dir = TempDir::new();
    let out = walletd(&dir).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = walletd(&dir).args(["wallet", "verify"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);

    // A balance no entry explains.
    let url = format!("sqlite://{}", dir.0.join("data/walletd.db").display());
    let db = storage::Database::connect(&url, &storage::DbOptions::default()).await.unwrap();
    let storage::Database::Sqlite(pool) = db else { panic!("SQLite") };
    pool.call(|c| {
        c.execute(
            "INSERT INTO wallet_accounts (owner, currency, balance, held, version, updated_at)
             VALUES ('0199a1b2-0000-7000-8000-000000000001', 'USDC', '5', '0', 1, '2026-11-26T00:00:00.000000Z')",
            [],
        )
        .map_err(anyhow::Error::from)
    })
    .await
    .unwrap();
    let out = walletd(&dir).args(["wallet", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert!(report["mismatches"][0].as_str().unwrap().contains("balance 5 but its entries sum to 0"), "{report}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("the ledger does not add up: 1 mismatches"));
}

/// The rotation procedure of docs/operations.md, step by step with the real binary: the next key is
/// published before it signs, a token of the retired key keeps working while that key is published,
/// and stops once it is not.
#[tokio::test]
async fn the_signing_key_rotation_procedure_keeps_every_live_token_working() {
    let dir = TempDir::new();
    let http = reqwest::Client::new();
    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let out = command(BIN, &dir.0, envs).args(args).output().unwrap();
        assert!(out.status.success(), "walletd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let address = to_checksum(&LocalWallet::random().unwrap().address());
    let kid_of = |token: &str| -> String {
        use base64::Engine;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap();
        serde_json::from_slice::<Value>(&header).unwrap()["kid"].as_str().unwrap().to_string()
    };
    // Before: the generated key signs.
    let old_token = run(&[], &["token", "--address", &address]).trim().to_string();
    let old_kid = kid_of(&old_token);

    // The next key and both public halves.
    let next = dir.0.join("next.pem");
    let next_kid = run(&[], &["signing-key", "new", "--out", next.to_str().unwrap()]).trim().to_string();
    assert_ne!(next_kid, old_kid);
    let out = command(BIN, &dir.0, &[]).args(["signing-key", "new", "--out", next.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success(), "an existing key file is never overwritten");
    let next_pub = dir.0.join("next.pub.pem");
    std::fs::write(&next_pub, run(&[], &["signing-key", "public", "--key-file", next.to_str().unwrap()])).unwrap();
    let old_pub = dir.0.join("old.pub.pem");
    std::fs::write(&old_pub, run(&[], &["signing-key", "public", "--key-file", "data/jwt-signing-key.pem"])).unwrap();
    let (next, next_pub, old_pub) = (next.to_str().unwrap(), next_pub.to_str().unwrap(), old_pub.to_str().unwrap());

    // (the step, its settings, the JWKS it publishes: signing key first)
    type Step<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let steps: [Step; 3] = [
        ("1: the next key published", vec![("WALLETD_JWT_PUBLISHED_KEY_FILES", next_pub)], vec![&old_kid, &next_kid]),
        (
            "2: the next key signs, the old one published",
            vec![("WALLETD_JWT_PRIVATE_KEY_FILE", next), ("WALLETD_JWT_PUBLISHED_KEY_FILES", old_pub)],
            vec![&next_kid, &old_kid],
        ),
        ("3: the old key gone", vec![("WALLETD_JWT_PRIVATE_KEY_FILE", next)], vec![&next_kid]),
    ];
    for (step, envs, published) in steps {
        let mut server = WalletdProcess::start(BIN, &dir.0, &envs);
        let base = server.base.clone();
        let jwks: Value = http.get(format!("{base}/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
        let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, published, "step {step}: the JWKS, signing key first");
        let token = run(&envs, &["token", "--address", &address]).trim().to_string();
        assert_eq!(kid_of(&token), published[0], "step {step}: new tokens use the signing key");
        let me = |t: String| http.get(format!("{base}/v1/me")).bearer_auth(t).send();
        assert_eq!(me(token).await.unwrap().status(), 200, "step {step}: a new token");
        let old = me(old_token.clone()).await.unwrap();
        let expected = if published.contains(&old_kid.as_str()) { 200 } else { 401 };
        assert_eq!(old.status(), expected, "step {step}: the token signed before the rotation");
        server.terminate(Duration::from_secs(20)).expect("walletd stops on SIGTERM");
    }
}
