//! The deposit watcher (DESIGN D12): follows one chain from its start block, one bounded range at a
//! time. For each range it reads the blocks (native transfers to deposit addresses, and the hashes
//! that tie each block to its parent) and the ERC-20 `Transfer` logs of the chain's contracts, and
//! records them with the cursor in one transaction. Before each step it checks that the last block
//! it processed is still on the node's chain; when it is not, it walks back over the kept hashes to
//! where the branches forked and undoes everything above (a reorg). Deposits are credited once they
//! have the configured confirmations, each exactly once: by its unique key here, and by its unique
//! ledger reference in the wallet.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use alloy::consensus::Transaction as _;
use alloy::eips::BlockNumberOrTag;
use alloy::network::TransactionResponse as _;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::{Block, Filter};
use alloy::sol_types::SolEvent;
use futures::StreamExt;
use rust_decimal::Decimal;

use crate::config::ChainConfig;
use crate::node::{self, Next};
use crate::store::{ChainDeposit, ChainStore, SeenDeposit};
use base::money::AssetRegistry;
use events::outbox::EventContext;
use wallet::WalletService;

alloy::sol! {
    event Transfer(address indexed from, address indexed to, uint256 value);
}

/// Where a watcher stands, for readiness and the API.
#[derive(Default)]
pub struct ChainStatus {
    pub head: AtomicI64,
    pub processed: AtomicI64,
    pub error: std::sync::Mutex<Option<String>>,
}

impl ChainStatus {
    pub fn report(&self) -> serde_json::Value {
        let (head, processed) = (self.head.load(Ordering::Relaxed), self.processed.load(Ordering::Relaxed));
        let error = self.error.lock().map(|e| e.clone()).unwrap_or_default();
        serde_json::json!({
            "head": head,
            "processed": processed,
            "lag": (head - processed).max(0),
            "rpc": if error.is_some() { "failing" } else { "ok" },
            "error": error,
        })
    }
}

pub struct Watcher {
    pub chain: ChainConfig,
    pub store: ChainStore,
    pub wallet: Arc<WalletService>,
    pub assets: AssetRegistry,
    pub provider: RootProvider,
    pub region: String,
    pub status: Arc<ChainStatus>,
    pub lease: storage::lease::Lease,
}

impl node::Job for Watcher {
    fn what(&self) -> &'static str {
        "deposit watcher"
    }

    fn chain(&self) -> &ChainConfig {
        &self.chain
    }

    fn lease(&self) -> &storage::lease::Lease {
        &self.lease
    }

    async fn pass(&self) -> anyhow::Result<Next> {
        Ok(match self.step().await? {
            Step::Advanced | Step::Rewound => Next::Now,
            Step::Idle => Next::Poll,
        })
    }

    /// Readiness shows the last failure until a pass goes well.
    fn outcome(&self, error: Option<&str>) {
        if let Ok(mut slot) = self.status.error.lock() {
            *slot = error.map(str::to_string);
        }
    }
}

/// What a step did.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Processed blocks; there may be more.
    Advanced,
    /// At the head.
    Idle,
    /// Went back to a fork.
    Rewound,
}

impl Watcher {
    /// Follows the chain until `stop` (see [`node::run`]).
    pub async fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(chain = %self.chain.name, chain_id = self.chain.chain_id, confirmations = self.chain.confirmations,
            start_block = self.chain.start_block, "following the chain");
        node::run(self, stop).await;
    }

    fn ctx(&self) -> EventContext {
        EventContext {
            region: self.region.clone(),
            correlation_id: None,
            actor_id: None,
            traceparent: base::trace::current(),
        }
    }

    async fn rpc<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = Result<T, alloy::transports::TransportError>>,
    ) -> anyhow::Result<T> {
        node::call(&self.chain, method, call).await
    }

    async fn block(&self, number: u64, full: bool) -> anyhow::Result<Option<Block>> {
        let call = self.provider.get_block_by_number(BlockNumberOrTag::Number(number));
        if full {
            self.rpc("eth_getBlockByNumber", async { call.full().await }).await
        } else {
            self.rpc("eth_getBlockByNumber", async { call.hashes().await }).await
        }
    }

    /// One step: check for a reorg, scan the next range, credit what is final.
    async fn step(&self) -> anyhow::Result<Step> {
        let chain = &self.chain.name;
        let head = self.rpc("eth_blockNumber", async { self.provider.get_block_number().await }).await?;
        let head = i64::try_from(head)?;
        self.status.head.store(head, Ordering::Relaxed);
        metrics::gauge!("chain_head_block", "chain" => chain.clone()).set(head as f64);
        let cursor = self.store.cursor(chain).await?;
        if let Some((number, hash)) = &cursor {
            self.status.processed.store(*number, Ordering::Relaxed);
            if *number > head {
                // The node is behind where the watcher is (a lagging node, or a chain cut back that
                // has not grown again): wait for it; its block at this height tells then.
                return Ok(Step::Idle);
            }
            let on_node = self.block(*number as u64, false).await?;
            if on_node.map(|b| b.header.hash.to_string()) != Some(hash.clone()) {
                self.rewind(*number).await?;
                return Ok(Step::Rewound);
            }
        }
        let processed = cursor.as_ref().map_or(self.chain.start_block as i64 - 1, |c| c.0);
        self.status.processed.store(processed, Ordering::Relaxed);
        metrics::gauge!("chain_blocks_behind", "chain" => chain.clone()).set((head - processed).max(0) as f64);
        metrics::gauge!("chain_processed_block", "chain" => chain.clone()).set(processed as f64);
        if processed >= head {
            self.credit(processed).await?;
            return Ok(Step::Idle);
        }
        let from = (processed + 1) as u64;
        let to = (head as u64).min(from + self.chain.block_range - 1);
        let Some(scanned) = self.scan(from, to, cursor.as_ref().map(|c| c.1.as_str())).await? else {
            // The chain changed under the scan: the next step finds where.
            return Ok(Step::Advanced);
        };
        let (blocks, deposits) = scanned;
        let found = deposits.len();
        let assets = self.assets.clone();
        let data = move |d: &ChainDeposit| deposit_event(&assets, d, None);
        let fresh =
            self.store.advance(chain, blocks, deposits, self.chain.keep_blocks as i64, &self.ctx(), &data).await?;
        for d in &fresh {
            metrics::counter!("chain_deposits_seen_total", "chain" => chain.clone(), "currency" => d.seen.currency.clone())
                .increment(1);
            tracing::info!(chain = %chain, deposit.id = %d.id, user.id = %d.seen.user_id, tx_hash = %d.seen.tx_hash,
                block = d.seen.block_number, currency = %d.seen.currency, amount = %d.seen.amount, "deposit seen");
        }
        tracing::debug!(chain = %chain, from, to, found, "scanned");
        if found > 0 {
            // A flagged deposit mined again on the new branch is credited again (not twice).
            self.refresh_flagged().await;
        }
        self.status.processed.store(to as i64, Ordering::Relaxed);
        metrics::gauge!("chain_processed_block", "chain" => chain.clone()).set(to as f64);
        metrics::gauge!("chain_blocks_behind", "chain" => chain.clone()).set((head - to as i64).max(0) as f64);
        self.credit(to as i64).await?;
        Ok(Step::Advanced)
    }

    /// Reads blocks `from..=to` and the token transfers in them: the blocks' numbers and hashes and
    /// the deposits, or `None` when they do not form one chain from `parent` (a reorg under way).
    async fn scan(
        &self,
        from: u64,
        to: u64,
        parent: Option<&str>,
    ) -> anyhow::Result<Option<(Vec<(i64, String)>, Vec<SeenDeposit>)>> {
        let addresses: HashMap<Address, uuid::Uuid> = self
            .store
            .addresses(&self.chain.name)
            .await?
            .into_iter()
            .filter_map(|(a, u)| a.parse::<Address>().ok().map(|a| (a, u)))
            .collect();
        let native = self.chain.native().cloned();
        let full = native.is_some() && !addresses.is_empty();
        let fetched: Vec<anyhow::Result<Option<Block>>> =
            futures::stream::iter(from..=to).map(|n| self.block(n, full)).buffered(16).collect().await;
        let mut blocks = Vec::with_capacity(fetched.len());
        for b in fetched {
            match b? {
                Some(b) => blocks.push(b),
                None => return Ok(None),
            }
        }
        let mut expected_parent = parent.map(str::to_string);
        for b in &blocks {
            if expected_parent.as_ref().is_some_and(|p| *p != b.header.parent_hash.to_string()) {
                return Ok(None);
            }
            expected_parent = Some(b.header.hash.to_string());
        }
        let hash_of: HashMap<u64, B256> = blocks.iter().map(|b| (b.header.number, b.header.hash)).collect();
        let mut deposits = Vec::new();
        if let Some(asset) = native.filter(|_| full) {
            for b in &blocks {
                for tx in b.transactions.txns() {
                    let Some(to) = tx.to() else { continue };
                    let Some(user_id) = addresses.get(&to) else { continue };
                    if tx.value().is_zero() {
                        continue;
                    }
                    let Some(amount) = self.amount(tx.value(), asset.token.decimals(), &asset.currency, &tx.tx_hash())
                    else {
                        continue;
                    };
                    deposits.push(SeenDeposit {
                        tx_hash: tx.tx_hash().to_string(),
                        transfer_index: -1,
                        log_index: -1,
                        block_number: b.header.number as i64,
                        block_hash: b.header.hash.to_string(),
                        address: format!("{to:#x}"),
                        user_id: *user_id,
                        currency: asset.currency.clone(),
                        amount,
                    });
                }
            }
        }
        let contracts = self.chain.contracts();
        if !contracts.is_empty() && !addresses.is_empty() {
            let filter = Filter::new()
                .from_block(from)
                .to_block(to)
                .address(contracts)
                .event_signature(Transfer::SIGNATURE_HASH);
            let logs = self.rpc("eth_getLogs", async { self.provider.get_logs(&filter).await }).await?;
            // Each log's place among its transaction's matching logs (they come in block order).
            let mut places: HashMap<B256, i64> = HashMap::new();
            for log in logs {
                let place = log.transaction_hash.map(|h| {
                    let n = places.entry(h).or_insert(0);
                    *n += 1;
                    *n - 1
                });
                let (Some(number), Some(block_hash), Some(tx_hash), Some(index), Some(place)) =
                    (log.block_number, log.block_hash, log.transaction_hash, log.log_index, place)
                else {
                    continue;
                };
                if hash_of.get(&number) != Some(&block_hash) {
                    return Ok(None);
                }
                let Ok(event) = Transfer::decode_log(&log.inner) else { continue };
                let Some(user_id) = addresses.get(&event.to) else { continue };
                let Some(asset) = self.chain.erc20(log.inner.address) else { continue };
                if event.value.is_zero() {
                    continue;
                }
                let Some(amount) = self.amount(event.value, asset.token.decimals(), &asset.currency, &tx_hash) else {
                    continue;
                };
                deposits.push(SeenDeposit {
                    tx_hash: tx_hash.to_string(),
                    transfer_index: place,
                    log_index: index as i64,
                    block_number: number as i64,
                    block_hash: block_hash.to_string(),
                    address: format!("{:#x}", event.to),
                    user_id: *user_id,
                    currency: asset.currency.clone(),
                    amount,
                });
            }
        }
        let numbered = blocks.iter().map(|b| (b.header.number as i64, b.header.hash.to_string())).collect();
        Ok(Some((numbered, deposits)))
    }

    /// A token amount as a decimal of `currency`; `None` (logged) when it does not fit the ledger's
    /// numbers (above the asset's largest amount, where sums could round).
    fn amount(&self, value: U256, decimals: u8, currency: &str, tx: &B256) -> Option<Decimal> {
        let amount = i128::try_from(value)
            .ok()
            .and_then(|v| Decimal::try_from_i128_with_scale(v, u32::from(decimals)).ok())
            .filter(|a| self.assets.get(currency).is_some_and(|asset| base::money::within_max(*a, &asset)));
        if amount.is_none() {
            tracing::error!(chain = %self.chain.name, tx_hash = %tx, value = %value,
                "a transfer to a deposit address is too large for the ledger; not recorded");
        }
        amount
    }

    /// The chain the watcher followed was replaced above some block: find the highest kept block
    /// the node still has, and undo everything above it.
    async fn rewind(&self, from: i64) -> anyhow::Result<()> {
        let chain = &self.chain.name;
        let mut fork = None;
        for (number, hash) in self.store.recent_blocks(chain).await? {
            if number >= from {
                continue;
            }
            if let Some(b) = self.block(number as u64, false).await?
                && b.header.hash.to_string() == hash
            {
                fork = Some((number, hash));
                break;
            }
        }
        let (number, hash) = match fork {
            Some(f) => f,
            None => {
                // Deeper than the kept hashes (or nothing kept): rescan from the start block.
                tracing::error!(chain = %chain, from, "reorg deeper than the kept block hashes; rescanning from the start block");
                (self.chain.start_block as i64 - 1, String::new())
            }
        };
        let rewound = self.store.rewind(chain, number, &hash).await?;
        metrics::counter!("chain_reorgs_total", "chain" => chain.clone()).increment(1);
        tracing::warn!(chain = %chain, processed = from, fork = number, dropped = rewound.dropped.len(),
            flagged = rewound.flagged.len(), "reorg: rewound to the last shared block");
        for d in &rewound.dropped {
            metrics::counter!("chain_deposits_dropped_total", "chain" => chain.clone()).increment(1);
            tracing::info!(chain = %chain, deposit.id = %d.id, tx_hash = %d.seen.tx_hash, "deposit dropped by a reorg before it was final");
        }
        for d in &rewound.flagged {
            tracing::error!(chain = %chain, deposit.id = %d.id, user.id = %d.seen.user_id, tx_hash = %d.seen.tx_hash,
                amount = %d.seen.amount, currency = %d.seen.currency,
                "a credited deposit was removed by a reorg deeper than its confirmations: flagged for an admin");
        }
        self.refresh_flagged().await;
        Ok(())
    }

    async fn refresh_flagged(&self) {
        if let Ok(n) = self.store.count(crate::store::DepositStatus::Reorged).await {
            metrics::gauge!("chain_deposits_flagged").set(n as f64);
        }
    }

    /// Credits every seen deposit that has the configured confirmations at `processed`.
    async fn credit(&self, processed: i64) -> anyhow::Result<()> {
        let chain = &self.chain.name;
        let last_final = processed - self.chain.confirmations as i64 + 1;
        for d in self.store.creditable(chain, last_final).await? {
            let confirmations = processed - d.seen.block_number + 1;
            let details = serde_json::json!({
                "chain": chain,
                "tx_hash": d.seen.tx_hash,
                "transfer_index": d.seen.transfer_index,
                "log_index": d.seen.log_index,
                "block_number": d.seen.block_number,
                "confirmations": confirmations,
                "chain_deposit_id": d.id,
            });
            let reference = format!("chain:{chain}:{}:{}", d.seen.tx_hash, d.seen.transfer_index);
            let (deposit, new) = self
                .wallet
                .credit_chain_deposit(d.seen.user_id, &d.seen.currency, d.seen.amount, reference, details, &self.ctx())
                .await
                .map_err(|e| anyhow::anyhow!("crediting deposit {}: {e}", d.id))?;
            self.store.mark_credited(d.id, deposit.id).await?;
            metrics::counter!("chain_deposits_credited_total", "chain" => chain.clone(), "currency" => d.seen.currency.clone())
                .increment(1);
            tracing::info!(chain = %chain, deposit.id = %d.id, ledger_deposit.id = %deposit.id, user.id = %d.seen.user_id,
                confirmations, new, "deposit credited");
        }
        Ok(())
    }
}

/// A chain deposit as clients and events see it.
pub fn deposit_event(assets: &AssetRegistry, d: &ChainDeposit, processed: Option<i64>) -> serde_json::Value {
    serde_json::to_value(crate::deposit::DepositView::of(assets, d, processed)).unwrap_or_default()
}
