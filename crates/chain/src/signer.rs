//! The withdrawal signer (DESIGN D12): the only holder of the hot wallet's key, one per chain at a
//! time (a lease). For each requested withdrawal it takes the next nonce from its own counter, builds
//! and signs an EIP-1559 transaction (a native transfer, or an ERC-20 `transfer`), and stores the
//! signed bytes with the nonce in one transaction **before** broadcasting them: a crash at any point
//! re-broadcasts the same bytes, and no withdrawal is ever signed twice at two nonces. A transaction
//! that stays unmined past `replace_after_secs` is replaced at the same nonce with higher fees; every
//! transaction signed for a withdrawal is kept, so whichever is mined is found. After the chain's
//! confirmations the hold is posted to `@withdrawals` (`confirmed`); a reverted transaction voids
//! it (`failed`).

use std::sync::Arc;

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::{BlockNumberOrTag, Encodable2718};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolEvent};
use rust_decimal::Decimal;

use crate::config::{ChainConfig, Token};
use crate::node::{self, Next};
use crate::store::ChainStore;
use crate::withdraw::{SignedTx, Withdrawal, WithdrawalStatus, WithdrawalView};
use base::money::AssetRegistry;
use events::outbox::{EventContext, NewEvent};
use wallet::WalletService;

alloy::sol! {
    function transfer(address to, uint256 value) returns (bool);
}

/// The hot wallet's key. Never printed: `Debug` shows only its address.
#[derive(Clone)]
pub struct HotKey(pub PrivateKeySigner);

impl std::fmt::Debug for HotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HotKey({})", self.0.address())
    }
}

impl HotKey {
    /// A 32-byte secp256k1 key in hex (with or without `0x`), from the environment or a file.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let signer: PrivateKeySigner = text
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("the signer key is not a 32-byte hexadecimal secp256k1 key"))?;
        Ok(Self(signer))
    }
}

impl node::Job for Signer {
    fn what(&self) -> &'static str {
        "withdrawal signer"
    }

    fn chain(&self) -> &ChainConfig {
        &self.chain
    }

    fn lease(&self) -> &storage::lease::Lease {
        &self.lease
    }

    async fn pass(&self) -> anyhow::Result<Next> {
        self.step().await.map(|()| Next::Poll)
    }
}

pub struct Signer {
    pub chain: ChainConfig,
    pub store: ChainStore,
    pub wallet: Arc<WalletService>,
    pub assets: AssetRegistry,
    pub provider: RootProvider,
    pub key: HotKey,
    pub region: String,
    pub lease: storage::lease::Lease,
}

impl Signer {
    /// Signs and follows withdrawals until `stop` (see [`node::run`]).
    pub async fn run(self, stop: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(chain = %self.chain.name, address = %self.key.0.address(), "signing withdrawals");
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

    fn view(&self, w: &Withdrawal) -> WithdrawalView {
        WithdrawalView::of(&self.assets, w)
    }

    async fn rpc<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = Result<T, alloy::transports::TransportError>>,
    ) -> anyhow::Result<T> {
        node::call(&self.chain, method, call).await
    }

    /// One pass: broadcast what is signed (after a crash), follow what is broadcast, sign what is
    /// requested. One withdrawal that fails does not hold up the others: each failure is logged,
    /// and the pass reports them at its end (so the next one backs off).
    async fn step(&self) -> anyhow::Result<()> {
        let chain = &self.chain.name;
        let mut failed = 0usize;
        let mut note = |w: &Withdrawal, what: &str, e: anyhow::Error| {
            failed += 1;
            tracing::warn!(chain = %chain, withdrawal.id = %w.id, error = %format!("{e:#}"), "{what} failed; retrying");
        };
        for w in self.store.open_withdrawals(chain, WithdrawalStatus::Signed, 100).await? {
            if let Err(e) = self.broadcast(&w).await {
                note(&w, "broadcasting a signed withdrawal", e);
                // Refused for long (its fees below what the chain takes now, say): sign it again at
                // the same nonce with current fees; the next pass broadcasts that.
                if base::clock::now() - w.updated_at > self.chain.replace_after
                    && let Err(e) = self.replace(&w).await
                {
                    note(&w, "replacing a withdrawal the node refused", e);
                }
            }
        }
        let head = self.rpc("eth_blockNumber", async { self.provider.get_block_number().await }).await?;
        // The key's transactions mined so far: the next nonce the chain will take.
        let mined = self.mined_nonce(None).await?;
        for w in self.store.open_withdrawals(chain, WithdrawalStatus::Broadcast, 500).await? {
            if let Err(e) = self.follow(&w, head, mined).await {
                note(&w, "following a withdrawal", e);
            }
        }
        for w in self.store.open_withdrawals(chain, WithdrawalStatus::Requested, 50).await? {
            if let Err(e) = self.sign_and_send(&w).await {
                // Not the next ones: they would queue behind it at later nonces.
                note(&w, "signing a withdrawal", e);
                break;
            }
        }
        for (status, n) in self.store.withdrawal_counts(chain).await? {
            metrics::gauge!("chain_withdrawals", "chain" => chain.clone(), "status" => status).set(n as f64);
        }
        anyhow::ensure!(failed == 0, "{failed} withdrawal(s) could not be handled in this pass");
        Ok(())
    }

    /// How many of the key's transactions the chain has mined (at `block`, or the latest).
    async fn mined_nonce(&self, block: Option<u64>) -> anyhow::Result<u64> {
        let address = self.key.0.address();
        self.rpc("eth_getTransactionCount", async {
            match block {
                Some(n) => self.provider.get_transaction_count(address).number(n).await,
                None => self.provider.get_transaction_count(address).latest().await,
            }
        })
        .await
    }

    /// The transaction a withdrawal asks for, at `nonce`, with fees.
    fn build(&self, w: &Withdrawal, nonce: u64, max_fee: u128, priority: u128) -> anyhow::Result<TxEip1559> {
        let asset = self
            .chain
            .asset(&w.currency)
            .ok_or_else(|| anyhow::anyhow!("{} is not an asset of chain {}", w.currency, self.chain.name))?;
        let to: Address = w.to_address.parse()?;
        let units = units(w.amount, asset.token.decimals())?;
        let (kind, value, input, gas_limit) = match &asset.token {
            Token::Native => (TxKind::Call(to), units, Bytes::new(), 21_000),
            Token::Erc20 { contract, .. } => (
                TxKind::Call(*contract),
                U256::ZERO,
                Bytes::from(transferCall { to, value: units }.abi_encode()),
                self.chain.erc20_gas_limit,
            ),
        };
        Ok(TxEip1559 {
            chain_id: self.chain.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
            to: kind,
            value,
            access_list: Default::default(),
            input,
        })
    }

    fn sign(&self, tx: TxEip1559) -> anyhow::Result<SignedTx> {
        let signature = self.key.0.sign_hash_sync(&tx.signature_hash())?;
        let (nonce, max_fee, priority) = (tx.nonce, tx.max_fee_per_gas, tx.max_priority_fee_per_gas);
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        Ok(SignedTx {
            nonce: i64::try_from(nonce)?,
            tx_hash: envelope.tx_hash().to_string(),
            raw: alloy::primitives::hex::encode_prefixed(envelope.encoded_2718()),
            max_fee_per_gas: max_fee,
            priority_fee: priority,
        })
    }

    /// Fees for a new transaction: the node's suggested tip, and twice the latest base fee on top.
    async fn fees(&self) -> anyhow::Result<(u128, u128)> {
        let priority = self
            .rpc("eth_maxPriorityFeePerGas", async { self.provider.get_max_priority_fee_per_gas().await })
            .await
            .unwrap_or(1_000_000_000)
            .max(1);
        let latest = self
            .rpc("eth_getBlockByNumber", async { self.provider.get_block_by_number(BlockNumberOrTag::Latest).await })
            .await?;
        let base = latest.and_then(|b| b.header.base_fee_per_gas).map_or(1_000_000_000, u128::from);
        let cap = self.chain.max_fee_per_gas;
        let max_fee = base.saturating_mul(2).saturating_add(priority).min(cap);
        Ok((max_fee, priority.min(max_fee)))
    }

    async fn sign_and_send(&self, w: &Withdrawal) -> anyhow::Result<()> {
        let address = format!("{:#x}", self.key.0.address());
        let nonce = self
            .store
            .next_nonce(&self.chain.name, &address, async || {
                // Only to start the counter: the key's transactions the node knows of, mined or pending.
                let known = self
                    .rpc("eth_getTransactionCount", async {
                        self.provider.get_transaction_count(self.key.0.address()).pending().await
                    })
                    .await?;
                Ok(known)
            })
            .await?;
        let (max_fee, priority) = self.fees().await?;
        let tx = match self.build(w, u64::try_from(nonce)?, max_fee, priority) {
            Ok(tx) => tx,
            Err(e) => {
                // Nothing can be sent for it: refuse it and give the money back.
                return self.fail(w, &format!("cannot build the transaction: {e:#}"), None, None).await;
            }
        };
        let signed = self.sign(tx)?;
        self.store.record_signed(w, &signed).await?;
        metrics::gauge!("chain_signer_nonce", "chain" => self.chain.name.clone()).set((nonce + 1) as f64);
        tracing::info!(chain = %self.chain.name, withdrawal.id = %w.id, nonce, tx_hash = %signed.tx_hash, "withdrawal signed");
        if base::failpoint("signer-after-sign") {
            tracing::error!(withdrawal.id = %w.id, "failpoint signer-after-sign: stalling between signing and broadcasting");
            std::future::pending::<()>().await;
        }
        let stored =
            self.store.withdrawal(w.id).await?.ok_or_else(|| anyhow::anyhow!("withdrawal {} vanished", w.id))?;
        self.broadcast(&stored).await
    }

    /// Sends a withdrawal's stored bytes; a node that already has them (or has mined its nonce) is
    /// fine.
    async fn send_raw(&self, raw: &str) -> anyhow::Result<()> {
        let bytes = alloy::primitives::hex::decode(raw)?;
        match self
            .rpc("eth_sendRawTransaction", async { self.provider.send_raw_transaction(&bytes).await.map(|_| ()) })
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                let text = e.to_string().to_lowercase();
                if ["already known", "nonce too low", "already imported", "known transaction"]
                    .iter()
                    .any(|k| text.contains(k))
                {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn broadcast(&self, w: &Withdrawal) -> anyhow::Result<()> {
        let raw =
            w.raw_tx.as_deref().ok_or_else(|| anyhow::anyhow!("withdrawal {} has no signed transaction", w.id))?;
        self.send_raw(raw).await?;
        let mut sent = w.clone();
        sent.status = WithdrawalStatus::Broadcast;
        let event = NewEvent::of("wallet.withdrawal_broadcast", 1, wallet::service::TOPIC, w.id, &self.view(&sent))?;
        self.store.mark_broadcast(w, event, &self.ctx()).await?;
        metrics::counter!("chain_withdrawals_broadcast_total", "chain" => self.chain.name.clone()).increment(1);
        tracing::info!(chain = %self.chain.name, withdrawal.id = %w.id, tx_hash = ?w.tx_hash, "withdrawal broadcast");
        Ok(())
    }

    /// A broadcast withdrawal: confirmed or failed once mined with the confirmations; replaced when
    /// stuck and next in line; failed when another transaction took its nonce.
    async fn follow(&self, w: &Withdrawal, head: u64, mined: u64) -> anyhow::Result<()> {
        if let Some(done) = self.mined_receipt(w).await? {
            let (hash, receipt, block) = done;
            if head + 1 < block + self.chain.confirmations {
                return Ok(());
            }
            if !receipt.status() {
                return self.fail(w, "the transaction reverted", Some(&hash), Some(block as i64)).await;
            }
            if !self.moved_the_tokens(w, &receipt)? {
                return self
                    .fail(w, "the token reported success but moved nothing", Some(&hash), Some(block as i64))
                    .await;
            }
            return self.confirm(w, &hash, block as i64).await;
        }
        let nonce = u64::try_from(w.nonce.ok_or_else(|| anyhow::anyhow!("withdrawal {} has no nonce", w.id))?)?;
        if mined > nonce {
            // The nonce is used, and not by one of ours (no receipt): once that is final, and still
            // no receipt of ours (asked again after), nothing of this withdrawal can be mined.
            let final_block = (head + 1).saturating_sub(self.chain.confirmations);
            if self.mined_nonce(Some(final_block)).await? > nonce && self.mined_receipt(w).await?.is_none() {
                return self.fail(w, "another transaction took its nonce", None, None).await;
            }
            return Ok(());
        }
        let stuck = w.broadcast_at.is_some_and(|at| base::clock::now() - at > self.chain.replace_after);
        // Only the next nonce the chain will take is worth a higher fee: later ones wait for it.
        if stuck && mined == nonce { self.replace(w).await } else { Ok(()) }
    }

    /// The first of the withdrawal's transactions that was mined: its hash, receipt and block.
    async fn mined_receipt(
        &self,
        w: &Withdrawal,
    ) -> anyhow::Result<Option<(String, alloy::rpc::types::TransactionReceipt, u64)>> {
        for hash in self.store.withdrawal_txs(w.id).await? {
            let h: B256 = hash.parse()?;
            let receipt =
                self.rpc("eth_getTransactionReceipt", async { self.provider.get_transaction_receipt(h).await }).await?;
            if let Some(receipt) = receipt
                && let Some(block) = receipt.block_number
            {
                return Ok(Some((hash, receipt, block)));
            }
        }
        Ok(None)
    }

    /// Whether an ERC-20 withdrawal's receipt holds the token's `Transfer` of the amount to the
    /// destination (some tokens answer `false` instead of reverting); a native one moved its value.
    fn moved_the_tokens(
        &self,
        w: &Withdrawal,
        receipt: &alloy::rpc::types::TransactionReceipt,
    ) -> anyhow::Result<bool> {
        let Some(asset) = self.chain.asset(&w.currency) else { return Ok(false) };
        let Token::Erc20 { contract, decimals } = asset.token else { return Ok(true) };
        let (to, value): (Address, U256) = (w.to_address.parse()?, units(w.amount, decimals)?);
        let from = self.key.0.address();
        Ok(receipt.inner.logs().iter().any(|log| {
            log.address() == contract
                && crate::watcher::Transfer::decode_log(&log.inner)
                    .is_ok_and(|e| e.from == from && e.to == to && e.value == value)
        }))
    }

    async fn replace(&self, w: &Withdrawal) -> anyhow::Result<()> {
        let nonce = w.nonce.ok_or_else(|| anyhow::anyhow!("withdrawal {} has no nonce", w.id))?;
        let old_max: u128 = w.max_fee_per_gas.as_deref().unwrap_or("0").parse()?;
        let old_tip: u128 = w.priority_fee.as_deref().unwrap_or("0").parse()?;
        let cap = self.chain.max_fee_per_gas;
        if old_max >= cap {
            tracing::warn!(chain = %self.chain.name, withdrawal.id = %w.id, nonce, max_fee = old_max,
                "withdrawal transaction stuck at the fee cap (max_fee_gwei): not replaced again");
            return Ok(());
        }
        let (now_max, now_tip) = self.fees().await?;
        // Nodes take a replacement only with both fees at least 10 % higher: 25 %, within the cap.
        let max_fee = now_max.max(old_max.saturating_add(old_max / 4 + 1)).min(cap);
        let tip = now_tip.max(old_tip.saturating_add(old_tip / 4 + 1)).min(max_fee);
        let signed = self.sign(self.build(w, u64::try_from(nonce)?, max_fee, tip)?)?;
        self.store.record_replacement(w, &signed).await?;
        metrics::counter!("chain_withdrawal_replacements_total", "chain" => self.chain.name.clone()).increment(1);
        tracing::warn!(chain = %self.chain.name, withdrawal.id = %w.id, nonce, old = ?w.tx_hash, new = %signed.tx_hash,
            max_fee, tip, "withdrawal transaction stuck: replaced at the same nonce with higher fees");
        self.send_raw(&signed.raw).await
    }

    async fn confirm(&self, w: &Withdrawal, tx_hash: &str, block: i64) -> anyhow::Result<()> {
        let mut done = w.clone();
        done.status = WithdrawalStatus::Confirmed;
        done.tx_hash = Some(tx_hash.to_string());
        done.block_number = Some(block);
        let event = NewEvent::of("wallet.withdrawal_confirmed", 1, wallet::service::TOPIC, w.id, &self.view(&done))?;
        let reference = format!("withdrawal:{}", w.id);
        self.wallet
            .finish_withdrawal(w.hold_id, true, reference, event, &self.ctx())
            .await
            .map_err(|e| anyhow::anyhow!("posting the hold of withdrawal {}: {e}", w.id))?;
        self.store.mark_finished(w.id, WithdrawalStatus::Confirmed, Some(tx_hash), Some(block), None).await?;
        metrics::counter!("chain_withdrawals_finished_total", "chain" => self.chain.name.clone(), "status" => "confirmed")
            .increment(1);
        tracing::info!(chain = %self.chain.name, withdrawal.id = %w.id, tx_hash, block, "withdrawal confirmed");
        Ok(())
    }

    async fn fail(
        &self,
        w: &Withdrawal,
        reason: &str,
        tx_hash: Option<&str>,
        block: Option<i64>,
    ) -> anyhow::Result<()> {
        let mut done = w.clone();
        done.status = WithdrawalStatus::Failed;
        done.failure_reason = Some(reason.to_string());
        done.block_number = block;
        if let Some(h) = tx_hash {
            done.tx_hash = Some(h.to_string());
        }
        let event = NewEvent::of("wallet.withdrawal_failed", 1, wallet::service::TOPIC, w.id, &self.view(&done))?;
        self.wallet
            .finish_withdrawal(w.hold_id, false, format!("withdrawal:{}", w.id), event, &self.ctx())
            .await
            .map_err(|e| anyhow::anyhow!("voiding the hold of withdrawal {}: {e}", w.id))?;
        self.store.mark_finished(w.id, WithdrawalStatus::Failed, tx_hash, block, Some(reason)).await?;
        metrics::counter!("chain_withdrawals_finished_total", "chain" => self.chain.name.clone(), "status" => "failed")
            .increment(1);
        tracing::error!(chain = %self.chain.name, withdrawal.id = %w.id, reason, "withdrawal failed; its hold is voided");
        Ok(())
    }
}

/// An amount in the token's smallest units; refused when it has more decimals than the token.
pub fn units(amount: Decimal, decimals: u8) -> anyhow::Result<U256> {
    let scaled = amount * Decimal::from(10u64.pow(u32::from(decimals)));
    anyhow::ensure!(scaled.fract().is_zero(), "{amount} has more than {decimals} decimals");
    let integer = scaled.trunc().normalize().to_string();
    Ok(U256::from_str_radix(&integer, 10)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_become_exact_token_units() {
        assert_eq!(units("1.5".parse().unwrap(), 18).unwrap(), U256::from(1_500_000_000_000_000_000u128));
        assert_eq!(units("25.000001".parse().unwrap(), 6).unwrap(), U256::from(25_000_001u64));
        assert!(units("0.0000001".parse().unwrap(), 6).is_err());
    }

    #[test]
    fn the_key_is_never_printed() {
        let key = PrivateKeySigner::random();
        let hex = alloy::primitives::hex::encode(key.to_bytes());
        let parsed = HotKey::parse(&format!("0x{hex}")).unwrap();
        assert_eq!(parsed.0.address(), key.address());
        assert!(!format!("{parsed:?}").contains(&hex));
        assert!(HotKey::parse("nope").unwrap_err().to_string().contains("not a 32-byte"));
    }
}
