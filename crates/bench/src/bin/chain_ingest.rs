//! The deposit watcher's ingestion rate: a chain with `--transfers` ERC-20 transfers to deposit
//! addresses pre-mined on anvil (`--per-block` in each block), then a walletd started on it from
//! block 0; prints how long it took to reach the head (blocks/s) and to credit every deposit
//! (deposits/s), and walletd's peak memory. Run by scripts/bench-chain.sh, which starts anvil and
//! PostgreSQL and compiles the test token.

use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::Encodable2718;
use alloy::primitives::{Address, Bytes, TxKind, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolValue};
use anyhow::{Context, ensure};
use bench::{Api, peak_memory};
use clap::Parser;
use serde_json::{Value, json};

alloy::sol! {
    function mint(address to, uint256 value);
    function transferMany(address[] to, uint256[] value);
}

#[derive(Parser)]
struct Args {
    /// The walletd binary.
    #[arg(long)]
    walletd: String,
    /// anvil's JSON-RPC URL.
    #[arg(long)]
    anvil: String,
    /// The test token's bytecode (hex), as solc wrote it.
    #[arg(long)]
    token_bin: String,
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value_t = 10_000)]
    transfers: usize,
    #[arg(long, default_value_t = 10)]
    per_block: usize,
    #[arg(long, default_value_t = 100)]
    users: usize,
    #[arg(long, default_value_t = 500)]
    block_range: u64,
    /// Where walletd keeps its signing key and the chains file.
    #[arg(long)]
    dir: String,
}

struct Node {
    url: String,
    http: reqwest::Client,
}

impl Node {
    async fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let res: Value = self.http.post(&self.url).json(&body).send().await?.json().await?;
        if let Some(e) = res.get("error") {
            anyhow::bail!("{method}: {e}");
        }
        Ok(res["result"].clone())
    }

    async fn send(
        &self,
        key: &PrivateKeySigner,
        nonce: u64,
        to: TxKind,
        input: Vec<u8>,
        gas: u64,
    ) -> anyhow::Result<()> {
        let tx = TxEip1559 {
            chain_id: 31337,
            nonce,
            gas_limit: gas,
            max_fee_per_gas: 50_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to,
            value: U256::ZERO,
            access_list: Default::default(),
            input: Bytes::from(input),
        };
        let signature = key.sign_hash_sync(&tx.signature_hash())?;
        let raw = TxEnvelope::from(tx.into_signed(signature)).encoded_2718();
        self.rpc("eth_sendRawTransaction", json!([Bytes::from(raw)])).await?;
        Ok(())
    }

    async fn head(&self) -> anyhow::Result<u64> {
        let n = self.rpc("eth_blockNumber", json!([])).await?;
        Ok(u64::from_str_radix(n.as_str().context("block number")?.trim_start_matches("0x"), 16)?)
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Walletd {
    child: Child,
    base: String,
    metrics: String,
}

impl Drop for Walletd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_walletd(args: &Args, chains: &str, consumers: bool) -> anyhow::Result<Walletd> {
    let (http, metrics, grpc) = (free_port()?, free_port()?, free_port()?);
    let child = Command::new(&args.walletd)
        .arg("serve")
        .current_dir(&args.dir)
        .env("WALLETD_DATABASE_URL", &args.database_url)
        .env("WALLETD_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("WALLETD_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("WALLETD_GRPC_ADDR", format!("127.0.0.1:{grpc}"))
        .env("WALLETD_CHAINS_FILE", chains)
        .env("WALLETD_RUN_CONSUMERS", consumers.to_string())
        .env("WALLETD_RATE_LIMIT_PER_MINUTE", "0")
        .env("WALLETD_SIGNIN_RATE_LIMIT_PER_MINUTE", "0")
        .env("WALLETD_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let w = Walletd { child, base: format!("http://127.0.0.1:{http}"), metrics: format!("http://127.0.0.1:{metrics}") };
    let started = Instant::now();
    while reqwest::get(format!("{}/health/live", w.base)).await.is_err() {
        ensure!(started.elapsed() < Duration::from_secs(60), "walletd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(w)
}

/// The sum of a metric's series whose labels contain every one of `labels`.
async fn metric(metrics: &str, name: &str) -> f64 {
    let Ok(res) = reqwest::get(format!("{metrics}/metrics")).await else { return 0.0 };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let node = Node { url: args.anvil.clone(), http: reqwest::Client::new() };
    let funder = PrivateKeySigner::random();
    node.rpc("anvil_setBalance", json!([funder.address(), "0x21e19e0c9bab2400000"])).await?;
    let code = std::fs::read_to_string(&args.token_bin)?;
    let mut deploy = alloy::primitives::hex::decode(code.trim())?;
    deploy.extend(("Bench Token".to_string(), "BT".to_string(), U256::from(6u8)).abi_encode_params());
    node.send(&funder, 0, TxKind::Create, deploy, 3_000_000).await?;
    let token = funder.address().create(0);
    node.send(
        &funder,
        1,
        TxKind::Call(token),
        mintCall { to: funder.address(), value: U256::MAX >> 4 }.abi_encode(),
        200_000,
    )
    .await?;

    let mut seed = [0u8; 64];
    for chunk in seed.chunks_mut(16) {
        chunk.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    let xpub = bip32::XPrv::new(seed).map_err(|e| anyhow::anyhow!("{e}"))?.public_key().to_string(bip32::Prefix::XPUB);
    let chains = format!("{}/chains.toml", args.dir);
    std::fs::write(
        &chains,
        format!(
            "[[chain]]\nname = \"bench\"\nchain_id = 31337\nrpc_url = \"{}\"\nconfirmations = 1\nxpub = \"{xpub}\"\npoll_interval_ms = 100\nblock_range = {}\n\n[[chain.asset]]\ncurrency = \"USDC\"\ncontract = \"{token}\"\ndecimals = 6\n",
            args.anvil, args.block_range
        ),
    )?;

    // Deposit addresses, with no watcher running.
    let first = start_walletd(&args, &chains, false).await?;
    let api = Api { http: reqwest::Client::new(), base: first.base.clone() };
    let tokens = api.sign_in_many(args.users).await?;
    let mut addresses = Vec::new();
    for t in &tokens {
        let body = api.get("/v1/wallet/deposit-addresses/bench", t).await?;
        addresses.push(Address::from_str(body["address"].as_str().context("address")?)?);
    }
    drop(first);

    // The chain: `per_block` transfers in one transaction per block.
    let started = Instant::now();
    node.rpc("evm_setAutomine", json!([false])).await?;
    let blocks = args.transfers.div_ceil(args.per_block);
    for b in 0..blocks {
        let n = args.per_block.min(args.transfers - b * args.per_block);
        let to: Vec<Address> = (0..n).map(|i| addresses[(b * args.per_block + i) % addresses.len()]).collect();
        let value = vec![U256::from(1_000_000u64); n];
        let gas = 60_000 + 40_000 * n as u64;
        node.send(&funder, 2 + b as u64, TxKind::Call(token), transferManyCall { to, value }.abi_encode(), gas).await?;
        node.rpc("anvil_mine", json!(["0x1"])).await?;
    }
    node.rpc("evm_setAutomine", json!([true])).await?;
    let head = node.head().await?;
    println!(
        "chain: {} ERC-20 transfers to {} deposit addresses in {blocks} blocks ({} per block), head {head}, pre-mined in {:.1} s",
        args.transfers,
        addresses.len(),
        args.per_block,
        started.elapsed().as_secs_f64()
    );

    // The watcher, from block 0.
    let second = start_walletd(&args, &chains, true).await?;
    let started = Instant::now();
    let (mut at_head, mut all_credited) = (None, None);
    while all_credited.is_none() {
        ensure!(started.elapsed() < Duration::from_secs(1800), "not every deposit was credited in 30 minutes");
        if at_head.is_none() && metric(&second.metrics, "chain_processed_block").await >= head as f64 {
            at_head = Some(started.elapsed());
        }
        if metric(&second.metrics, "chain_deposits_credited_total").await >= args.transfers as f64 {
            all_credited = Some(started.elapsed());
            at_head.get_or_insert(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (at_head, all_credited) = (at_head.unwrap_or_default(), all_credited.unwrap_or_default());
    let seen = metric(&second.metrics, "chain_deposits_seen_total").await;
    let calls = metric(&second.metrics, "chain_rpc_requests_total").await;
    println!(
        "watcher: reached the head in {:.2} s ({:.0} blocks/s); {seen} deposits seen; all {} credited in {:.2} s ({:.0} deposits/s); {calls} JSON-RPC calls; block_range {}",
        at_head.as_secs_f64(),
        head as f64 / at_head.as_secs_f64(),
        args.transfers,
        all_credited.as_secs_f64(),
        args.transfers as f64 / all_credited.as_secs_f64(),
        args.block_range
    );
    println!("walletd peak memory: {}", peak_memory(second.child.id()));
    Ok(())
}
