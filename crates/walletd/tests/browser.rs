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

use identity::eth::{LocalWallet, to_checksum};
use testkit::{Backend, TestApp};

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

/// Multi-threaded: the scenario runs on a blocking thread while walletd serves on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_an_admin_and_a_user_in_a_real_browser() {
    let python = std::env::var("WALLETD_TEST_BROWSER_PYTHON").unwrap_or_else(|_| {
        panic!("WALLETD_TEST_BROWSER_PYTHON is not set: run the suite with scripts/test.sh, which installs Chromium and the Playwright venv")
    });
    let admin = LocalWallet::random().unwrap();
    let user = LocalWallet::random().unwrap();
    let admin_address = to_checksum(&admin.address());
    let brokers = testkit::kafka::brokers();
    let listed = admin_address.clone();
    let app = TestApp::spawn_with(Backend::Postgres, |s| {
        s.admin_addresses.push(listed);
        s.kafka = Some(testkit::kafka::settings(&brokers));
        s.redis_url = Some(testkit::redis::server_url(8));
    })
    .await;

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
        .env("WALLETD_BROWSER_SCREENSHOTS", &screenshots);
    let (passed, tail) = tokio::task::spawn_blocking(move || run_streaming(command)).await.unwrap();
    assert!(passed, "the browser scenario failed; its last lines:\n{}", tail.join("\n"));
}
