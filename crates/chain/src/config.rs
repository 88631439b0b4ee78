//! Chains and their assets, from the file `WALLETD_CHAINS_FILE` names (TOML):
//!
//! ```toml
//! [[chain]]
//! name = "sepolia"              # in paths: /v1/wallet/deposit-addresses/sepolia
//! chain_id = 11155111
//! rpc_url = "https://rpc.example/..."
//! confirmations = 12            # a deposit in block b is final once the head is b + confirmations - 1
//! start_block = 7000000         # where the watcher starts on its first run
//! xpub = "xpub..."              # deposit addresses are its non-hardened children, one index per user
//! # optional: poll_interval_ms = 2000, rpc_timeout_ms = 10000, block_range = 500, keep_blocks = 128,
//! # erc20_gas_limit = 100000, replace_after_secs = 120 (a withdrawal's unmined transaction is replaced),
//! # max_fee_gwei = 500 (the most a withdrawal offers per gas, replacements included)
//!
//! [[chain.asset]]
//! currency = "ETH"              # a registered asset (WALLETD_ASSETS)
//! native = true
//!
//! [[chain.asset]]
//! currency = "USDC"
//! contract = "0x..."            # an ERC-20 contract
//! decimals = 6
//! ```
//!
//! Every mistake is refused at start, naming the chain and the field.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use alloy::primitives::Address;
use base::money::AssetRegistry;
use serde::Deserialize;

/// What an asset is on its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// The chain's own coin (18 decimals).
    Native,
    Erc20 {
        contract: Address,
        decimals: u8,
    },
}

impl Token {
    pub fn decimals(&self) -> u8 {
        match self {
            Token::Native => 18,
            Token::Erc20 { decimals, .. } => *decimals,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainAsset {
    /// The registered asset it is credited as.
    pub currency: String,
    pub token: Token,
}

#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub name: String,
    pub chain_id: u64,
    pub rpc_url: String,
    pub confirmations: u64,
    pub start_block: u64,
    pub xpub: bip32::XPub,
    pub assets: Vec<ChainAsset>,
    pub poll_interval: Duration,
    /// The deadline of each JSON-RPC call.
    pub rpc_timeout: Duration,
    /// The most blocks one scan reads (one `eth_getLogs` call).
    pub block_range: u64,
    /// How many recent block hashes are kept to find where a reorg forked.
    pub keep_blocks: u64,
    /// The gas limit of an ERC-20 `transfer` a withdrawal sends.
    pub erc20_gas_limit: u64,
    /// How long a withdrawal's transaction may stay unmined before it is replaced (same nonce,
    /// higher fees).
    pub replace_after: time::Duration,
    /// The most a withdrawal's transaction may offer per gas (wei), replacements included.
    pub max_fee_per_gas: u128,
}

impl ChainConfig {
    /// `text` with the JSON-RPC URL (which often carries a provider's API key) cut to its scheme
    /// and host, for logs and readiness.
    pub fn redact(&self, text: &str) -> String {
        let Ok(url) = alloy::transports::http::reqwest::Url::parse(&self.rpc_url) else { return text.to_string() };
        let shown = format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or("?"));
        let mut out = text.replace(url.as_str(), &shown).replace(&self.rpc_url, &shown);
        if let Some(key) = url.query().filter(|q| !q.is_empty()) {
            out = out.replace(key, "…");
        }
        if url.path().len() > 1 {
            out = out.replace(url.path(), "/…");
        }
        out
    }

    pub fn native(&self) -> Option<&ChainAsset> {
        self.assets.iter().find(|a| a.token == Token::Native)
    }

    /// The asset of an ERC-20 contract, if it is one of this chain's.
    pub fn erc20(&self, contract: Address) -> Option<&ChainAsset> {
        self.assets.iter().find(|a| matches!(a.token, Token::Erc20 { contract: c, .. } if c == contract))
    }

    pub fn asset(&self, currency: &str) -> Option<&ChainAsset> {
        self.assets.iter().find(|a| a.currency == currency)
    }

    pub fn contracts(&self) -> Vec<Address> {
        self.assets
            .iter()
            .filter_map(|a| match a.token {
                Token::Erc20 { contract, .. } => Some(contract),
                Token::Native => None,
            })
            .collect()
    }
}

impl std::fmt::Debug for Chains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|c| &c.name)).finish()
    }
}

/// Every configured chain (none: nothing of the chain integration runs).
#[derive(Clone, Default)]
pub struct Chains(pub Vec<ChainConfig>);

impl Chains {
    pub fn get(&self, name: &str) -> Option<&ChainConfig> {
        self.0.iter().find(|c| c.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads and checks the chains file.
    pub fn load(path: &Path, assets: &AssetRegistry) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("WALLETD_CHAINS_FILE: cannot read {}: {e}", path.display()))?;
        Self::parse(&text, assets).map_err(|e| anyhow::anyhow!("WALLETD_CHAINS_FILE ({}): {e}", path.display()))
    }

    pub fn parse(text: &str, assets: &AssetRegistry) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut chains = Vec::new();
        for (i, c) in file.chain.into_iter().enumerate() {
            let at = |field: &str| format!("chain {} ({}): {field}", i + 1, c.name);
            if c.name.is_empty()
                || c.name.len() > 32
                || !c.name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
            {
                return Err(format!("{}: must be 1 to 32 of a-z, 0-9 and -", at("name")));
            }
            if chains.iter().any(|x: &ChainConfig| x.name == c.name) {
                return Err(format!("{}: appears twice", at("name")));
            }
            if !(c.rpc_url.starts_with("http://") || c.rpc_url.starts_with("https://")) {
                return Err(format!("{}: must start with http:// or https://", at("rpc_url")));
            }
            alloy::transports::http::reqwest::Url::parse(&c.rpc_url).map_err(|e| format!("{}: {e}", at("rpc_url")))?;
            if c.confirmations == 0 {
                return Err(format!("{}: must be at least 1", at("confirmations")));
            }
            let xpub = bip32::XPub::from_str(c.xpub.trim())
                .map_err(|_| format!("{}: not an extended public key (xpub...)", at("xpub")))?;
            let block_range = c.block_range.unwrap_or(500);
            if !(1..=10_000).contains(&block_range) {
                return Err(format!("{}: must be 1 to 10000", at("block_range")));
            }
            let keep_blocks = c.keep_blocks.unwrap_or(128).max(c.confirmations + 1);
            let poll_ms = c.poll_interval_ms.unwrap_or(2000);
            if !(10..=600_000).contains(&poll_ms) {
                return Err(format!("{}: must be 10 to 600000", at("poll_interval_ms")));
            }
            let rpc_timeout_ms = c.rpc_timeout_ms.unwrap_or(10_000);
            if !(100..=600_000).contains(&rpc_timeout_ms) {
                return Err(format!("{}: must be 100 to 600000", at("rpc_timeout_ms")));
            }
            let erc20_gas_limit = c.erc20_gas_limit.unwrap_or(100_000);
            if !(21_000..=10_000_000).contains(&erc20_gas_limit) {
                return Err(format!("{}: must be 21000 to 10000000", at("erc20_gas_limit")));
            }
            let replace_after_secs = c.replace_after_secs.unwrap_or(120);
            if !(1..=86_400).contains(&replace_after_secs) {
                return Err(format!("{}: must be 1 to 86400", at("replace_after_secs")));
            }
            let max_fee_gwei = c.max_fee_gwei.unwrap_or(500);
            if !(1..=1_000_000).contains(&max_fee_gwei) {
                return Err(format!("{}: must be 1 to 1000000", at("max_fee_gwei")));
            }
            let mut list: Vec<ChainAsset> = Vec::new();
            for a in c.asset {
                let field = |f: &str| at(&format!("asset {}: {f}", a.currency));
                let registered = assets.get(&a.currency).ok_or_else(|| {
                    format!("{}: not a registered asset ({})", field("currency"), assets.codes().join(", "))
                })?;
                let token = match (a.native, &a.contract) {
                    (true, None) => Token::Native,
                    (false, Some(contract)) => Token::Erc20 {
                        contract: Address::from_str(contract)
                            .map_err(|_| format!("{}: not an address", field("contract")))?,
                        decimals: a
                            .decimals
                            .ok_or_else(|| format!("{}: required for a contract", field("decimals")))?,
                    },
                    _ => return Err(format!("{}: either native = true or a contract", field("native"))),
                };
                if u32::from(token.decimals()) > registered.decimals {
                    return Err(format!(
                        "{}: the token has {} decimals, the asset {}: amounts would be cut",
                        field("decimals"),
                        token.decimals(),
                        registered.decimals
                    ));
                }
                if list.iter().any(|x| x.currency == a.currency || x.token == token) {
                    return Err(format!("{}: listed twice", field("currency")));
                }
                list.push(ChainAsset { currency: registered.code.clone(), token });
            }
            if list.is_empty() {
                return Err(format!("{}: a chain needs at least one asset", at("asset")));
            }
            chains.push(ChainConfig {
                name: c.name,
                chain_id: c.chain_id,
                rpc_url: c.rpc_url,
                confirmations: c.confirmations,
                start_block: c.start_block,
                xpub,
                assets: list,
                poll_interval: Duration::from_millis(poll_ms),
                rpc_timeout: Duration::from_millis(rpc_timeout_ms),
                block_range,
                keep_blocks,
                erc20_gas_limit,
                replace_after: time::Duration::seconds(replace_after_secs as i64),
                max_fee_per_gas: u128::from(max_fee_gwei) * 1_000_000_000,
            });
        }
        Ok(Self(chains))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    chain: Vec<RawChain>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    name: String,
    chain_id: u64,
    rpc_url: String,
    confirmations: u64,
    #[serde(default)]
    start_block: u64,
    xpub: String,
    #[serde(default)]
    asset: Vec<RawAsset>,
    poll_interval_ms: Option<u64>,
    rpc_timeout_ms: Option<u64>,
    block_range: Option<u64>,
    keep_blocks: Option<u64>,
    erc20_gas_limit: Option<u64>,
    replace_after_secs: Option<u64>,
    max_fee_gwei: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsset {
    currency: String,
    #[serde(default)]
    native: bool,
    contract: Option<String>,
    decimals: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xpub() -> String {
        bip32::XPrv::new([3u8; 64]).unwrap().public_key().to_string(bip32::Prefix::XPUB)
    }

    fn file(chain: &str, assets: &str) -> String {
        format!(
            "[[chain]]\nname = \"local\"\nchain_id = 31337\nrpc_url = \"http://127.0.0.1:8545\"\nconfirmations = 3\nxpub = \"{}\"\n{chain}\n{assets}",
            xpub()
        )
    }

    const ETH: &str = "[[chain.asset]]\ncurrency = \"ETH\"\nnative = true\n";

    #[test]
    fn a_good_file_parses_with_its_defaults() {
        let usdc = "[[chain.asset]]\ncurrency = \"USDC\"\ncontract = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\ndecimals = 6\n";
        let chains = Chains::parse(&file("", &format!("{ETH}{usdc}")), &AssetRegistry::default()).unwrap();
        let c = chains.get("local").unwrap();
        assert_eq!((c.chain_id, c.confirmations, c.start_block, c.block_range), (31337, 3, 0, 500));
        assert_eq!(c.native().unwrap().currency, "ETH");
        assert_eq!(c.contracts().len(), 1);
        assert_eq!(c.erc20(c.contracts()[0]).unwrap().currency, "USDC");
        assert!(Chains::parse("", &AssetRegistry::default()).unwrap().is_empty());
    }

    #[test]
    fn the_rpc_url_is_cut_to_its_host_in_messages() {
        let text =
            file("", ETH).replace("http://127.0.0.1:8545", "https://eth.example.com/v3/SECRETKEY?apikey=OTHERSECRET");
        let chains = Chains::parse(&text, &AssetRegistry::default()).unwrap();
        let c = chains.get("local").unwrap();
        let message = "error sending request for url (https://eth.example.com/v3/SECRETKEY?apikey=OTHERSECRET)";
        let shown = c.redact(message);
        assert!(!shown.contains("SECRETKEY") && !shown.contains("OTHERSECRET"), "{shown}");
        assert!(shown.contains("eth.example.com"), "{shown}");
    }

    #[test]
    fn every_mistake_names_its_field() {
        let assets = AssetRegistry::default();
        let cases = [
            (file("", "[[chain.asset]]\ncurrency = \"XYZ\"\nnative = true\n"), "currency"),
            (file("", "[[chain.asset]]\ncurrency = \"USDC\"\ncontract = \"0x12\"\ndecimals = 6\n"), "contract"),
            (
                file(
                    "",
                    "[[chain.asset]]\ncurrency = \"USDC\"\ncontract = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\ndecimals = 18\n",
                ),
                "decimals",
            ),
            (
                file(
                    "",
                    "[[chain.asset]]\ncurrency = \"USDC\"\ncontract = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n",
                ),
                "decimals",
            ),
            (file("", "[[chain.asset]]\ncurrency = \"ETH\"\n"), "native"),
            (file("", ""), "asset"),
            (file("block_range = 0", ETH), "block_range"),
            (file("poll_interval_ms = 1", ETH), "poll_interval_ms"),
            (file("color = 1", ETH), "color"),
            (file("", ETH).replace("confirmations = 3", "confirmations = 0"), "confirmations"),
            (file("", ETH).replace("http://127.0.0.1:8545", "ws://x"), "rpc_url"),
            (file("", ETH).replace(&xpub(), "xpubnope"), "xpub"),
            (file("", ETH).replace("\"local\"", "\"Local Chain\""), "name"),
            (format!("{}\n{}", file("", ETH), file("", ETH)), "name"),
        ];
        for (text, field) in cases {
            let e = Chains::parse(&text, &assets).expect_err(field);
            assert!(e.contains(field), "{field}: {e}");
        }
    }
}
