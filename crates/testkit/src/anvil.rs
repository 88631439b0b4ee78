//! A test's own EVM node: anvil (npm `@foundry-rs/anvil`, installed by scripts/test-infra.sh) on a
//! free loopback port, with the JSON-RPC calls tests use to mine, reorg and stop it, and a funded
//! key (generated here, at test time) that sends transfers and deploys the test ERC-20.

use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use serde_json::{Value, json};

alloy::sol! {
    function mint(address to, uint256 value);
    function transfer(address to, uint256 value) returns (bool);
    function transferMany(address[] to, uint256[] value);
    function balanceOf(address who) returns (uint256);
}

pub struct Anvil {
    pub port: u16,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Anvil {
    /// Starts anvil (chain id 31337, a block per transaction) and waits until it answers.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut a = Self { port, child: None, http: reqwest::Client::new() };
        a.spawn();
        a.wait_ready().await;
        a
    }

    fn spawn(&mut self) {
        let bin = std::env::var("WALLETD_TEST_ANVIL_BIN")
            .expect("WALLETD_TEST_ANVIL_BIN is not set: run the tests with scripts/test.sh, which installs anvil");
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--chain-id", "31337", "--silent"])
            .args(["--accounts", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("anvil runs");
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let ok =
            crate::wait_until(Duration::from_secs(30), || async { self.rpc("eth_chainId", json!([])).await.is_ok() })
                .await;
        assert!(ok, "anvil did not answer on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One JSON-RPC call; an error answer is an `Err`.
    pub async fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let res: Value =
            self.http.post(self.url()).timeout(Duration::from_secs(10)).json(&body).send().await?.json().await?;
        if let Some(e) = res.get("error") {
            anyhow::bail!("{method}: {e}");
        }
        Ok(res["result"].clone())
    }

    pub async fn head(&self) -> u64 {
        let n = self.rpc("eth_blockNumber", json!([])).await.unwrap();
        u64::from_str_radix(n.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    /// Mines `n` empty blocks (or with the pending transactions, when mining is paused).
    pub async fn mine(&self, n: u64) {
        self.rpc("anvil_mine", json!([format!("{n:#x}")])).await.unwrap();
    }

    pub async fn snapshot(&self) -> Value {
        self.rpc("evm_snapshot", json!([])).await.unwrap()
    }

    /// Back to a snapshot: the blocks after it leave the chain.
    pub async fn revert(&self, id: &Value) {
        let ok = self.rpc("evm_revert", json!([id])).await.unwrap();
        assert_eq!(ok, json!(true), "evm_revert");
    }

    /// Turns automatic mining (a block per transaction) on or off.
    pub async fn automine(&self, on: bool) {
        self.rpc("evm_setAutomine", json!([on])).await.unwrap();
    }

    /// SIGSTOP: the node hangs (every call times out) until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("anvil runs").id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    /// A new key (generated now) with `eth` ether on this chain.
    pub async fn funded_key(&self, eth: u64) -> Funder {
        let signer = PrivateKeySigner::random();
        let wei = U256::from(eth) * U256::from(10u64).pow(U256::from(18));
        self.rpc("anvil_setBalance", json!([signer.address(), format!("{wei:#x}")])).await.unwrap();
        Funder { signer, url: self.url() }
    }

    /// The ether balance of an address, in wei.
    pub async fn balance(&self, address: Address) -> U256 {
        let v = self.rpc("eth_getBalance", json!([address, "latest"])).await.unwrap();
        U256::from_str(v.as_str().unwrap()).unwrap()
    }

    /// The test token's balance of an address.
    pub async fn token_balance(&self, token: Address, who: Address) -> U256 {
        let data = Bytes::from(balanceOfCall { who }.abi_encode());
        let v = self.rpc("eth_call", json!([{"to": token, "input": data}, "latest"])).await.unwrap();
        U256::from_str(v.as_str().unwrap()).unwrap()
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A funded key that sends transactions (nonces, gas and chain id filled by alloy).
pub struct Funder {
    pub signer: PrivateKeySigner,
    url: String,
}

impl Funder {
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    fn provider(&self) -> impl Provider {
        ProviderBuilder::new().wallet(EthereumWallet::from(self.signer.clone())).connect_http(self.url.parse().unwrap())
    }

    /// Sends a transaction and waits for its receipt; its hash.
    pub async fn send(&self, tx: TransactionRequest) -> alloy::primitives::B256 {
        let pending = self.provider().send_transaction(tx).await.expect("transaction accepted");
        let receipt = pending.get_receipt().await.expect("transaction mined");
        assert!(receipt.status(), "transaction reverted: {receipt:?}");
        receipt.transaction_hash
    }

    /// The key's next nonce, as the node counts it.
    pub async fn nonce(&self) -> u64 {
        self.provider().get_transaction_count(self.address()).await.unwrap()
    }

    /// Signs a transaction without sending it: its raw bytes (to send now, and again on another branch).
    pub async fn sign(&self, tx: TransactionRequest) -> Bytes {
        let nonce = self.nonce().await;
        self.sign_at(tx, nonce).await
    }

    /// [`Self::sign`] at a given nonce (many transactions signed ahead).
    pub async fn sign_at(&self, tx: TransactionRequest, nonce: u64) -> Bytes {
        use alloy::eips::Encodable2718;
        let gas = tx.gas.unwrap_or(300_000);
        let (max_fee, tip) =
            (tx.max_fee_per_gas.unwrap_or(20_000_000_000), tx.max_priority_fee_per_gas.unwrap_or(1_000_000_000));
        let tx = tx
            .with_from(self.address())
            .with_nonce(nonce)
            .with_chain_id(31337)
            .with_gas_limit(gas)
            .with_max_fee_per_gas(max_fee)
            .with_max_priority_fee_per_gas(tip);
        let envelope = alloy::network::NetworkTransactionBuilder::<alloy::network::Ethereum>::build(
            tx,
            &EthereumWallet::from(self.signer.clone()),
        )
        .await
        .expect("signed");
        Bytes::from(envelope.encoded_2718())
    }

    /// Deploys the test ERC-20 (compiled by scripts/test-infra.sh) with `decimals`; its address.
    pub async fn deploy_token(&self, decimals: u8) -> Address {
        let path = std::env::var("WALLETD_TEST_TOKEN_BIN").expect(
            "WALLETD_TEST_TOKEN_BIN is not set: run the tests with scripts/test.sh, which compiles the test token",
        );
        let code = std::fs::read_to_string(path).unwrap();
        let mut input = alloy::primitives::hex::decode(code.trim()).unwrap();
        input.extend(alloy::sol_types::SolValue::abi_encode_params(&(
            "Test Token".to_string(),
            "TT".to_string(),
            U256::from(decimals),
        )));
        let tx = TransactionRequest::default().with_deploy_code(input);
        let pending = self.provider().send_transaction(tx).await.expect("deploy accepted");
        let receipt = pending.get_receipt().await.expect("deploy mined");
        assert!(receipt.status());
        receipt.contract_address.expect("a contract address")
    }

    /// Sends `wei` ether to `to`; the transaction hash.
    pub async fn send_eth(&self, to: Address, wei: U256) -> alloy::primitives::B256 {
        self.send(TransactionRequest::default().with_to(to).with_value(wei)).await
    }

    pub fn eth_transfer(to: Address, wei: U256) -> TransactionRequest {
        TransactionRequest::default().with_to(to).with_value(wei)
    }

    pub fn token_transfer(token: Address, to: Address, value: U256) -> TransactionRequest {
        TransactionRequest::default().with_to(token).with_input(transferCall { to, value }.abi_encode())
    }

    pub async fn mint(&self, token: Address, to: Address, value: U256) {
        self.send(TransactionRequest::default().with_to(token).with_input(mintCall { to, value }.abi_encode())).await;
    }

    pub async fn send_tokens(&self, token: Address, to: Address, value: U256) -> alloy::primitives::B256 {
        self.send(Self::token_transfer(token, to, value)).await
    }

    /// Many token transfers in one transaction.
    pub fn token_transfer_many(token: Address, to: Vec<Address>, value: Vec<U256>) -> TransactionRequest {
        let gas = 60_000 + 40_000 * to.len() as u64;
        TransactionRequest::default()
            .with_to(token)
            .with_input(transferManyCall { to, value }.abi_encode())
            .with_gas_limit(gas)
    }
}

/// An extended key pair generated now: the public half configures walletd, the private half lets a
/// test check that a deposit address is the one its index derives.
pub fn test_xpub() -> String {
    let mut seed = [0u8; 64];
    for chunk in seed.chunks_mut(16) {
        chunk.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    let xprv = bip32::XPrv::new(seed).unwrap();
    xprv.public_key().to_string(bip32::Prefix::XPUB)
}

/// A chains file for walletd with one chain `local` on `anvil`: ETH native, `TT` tokens at
/// `token` credited as USDC (6 decimals), `confirmations` to be final.
pub fn chains_file(
    dir: &std::path::Path,
    anvil: &Anvil,
    token: Address,
    confirmations: u64,
    extra: &str,
) -> std::path::PathBuf {
    let text = format!(
        r#"[[chain]]
name = "local"
chain_id = 31337
rpc_url = "{url}"
confirmations = {confirmations}
start_block = 0
xpub = "{xpub}"
poll_interval_ms = 50
rpc_timeout_ms = 1000
{extra}

[[chain.asset]]
currency = "ETH"
native = true

[[chain.asset]]
currency = "USDC"
contract = "{token}"
decimals = 6
"#,
        url = anvil.url(),
        xpub = test_xpub(),
    );
    let path = dir.join("chains.toml");
    std::fs::write(&path, text).unwrap();
    path
}
