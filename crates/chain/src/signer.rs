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
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::{BlockNumberOrTag, Encodable2718};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use rust_decimal::Decimal;

use crate::config::{ChainConfig, Token};
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
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let name = self.chain.name.clone();
        tracing::info!(chain = %name, address = %self.key.0.address(), "withdrawal signer started");
        let max_backoff = (self.chain.poll_interval * 50).min(Duration::from_secs(30));
        let mut backoff = self.chain.poll_interval;
        loop {
            let wait = match self.lease.take().await {
                Ok(false) => self.chain.poll_interval * 5,
                Ok(true) => match self.step().await {
                    Ok(()) => {
                        backoff = self.chain.poll_interval;
                        self.chain.poll_interval
                    }
                    Err(e) => {
                        metrics::counter!("chain_signer_errors_total", "chain" => name.clone()).increment(1);
                        tracing::warn!(chain = %name, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64,
                            "withdrawal signer step failed; retrying");
                        let wait = backoff;
                        backoff = (backoff * 2).min(max_backoff);
                        wait
                    }
                },
                Err(e) => {
                    tracing::warn!(chain = %name, error = %format!("{e:#}"), "cannot take the signer's lease");
                    backoff
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        if let Err(e) = self.lease.release().await {
            tracing::warn!(chain = %name, error = %format!("{e:#}"), "releasing the signer's lease");
        }
        tracing::info!(chain = %name, "withdrawal signer stopped");
    }

    fn ctx(&self) -> EventContext {
        EventContext { region: self.region.clone(), correlation_id: None, actor_id: None }
    }

    fn view(&self, w: &Withdrawal) -> WithdrawalView {
        WithdrawalView::of(&self.assets, w)
    }

    async fn rpc<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = Result<T, alloy::transports::TransportError>>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        let result = call.await;
        let chain = self.chain.name.clone();
        metrics::histogram!("chain_rpc_request_duration_seconds", "chain" => chain.clone(), "method" => method)
            .record(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!("chain_rpc_requests_total", "chain" => chain, "method" => method, "outcome" => outcome)
            .increment(1);
        result.map_err(|e| anyhow::anyhow!("{method}: {e}"))
    }

    /// One pass: broadcast what is signed (after a crash), follow what is broadcast, sign what is
    /// requested.
    async fn step(&self) -> anyhow::Result<()> {
        let chain = &self.chain.name;
        for w in self.store.open_withdrawals(chain, WithdrawalStatus::Signed, 100).await? {
            self.broadcast(&w).await?;
        }
        let head = self.rpc("eth_blockNumber", async { self.provider.get_block_number().await }).await?;
        for w in self.store.open_withdrawals(chain, WithdrawalStatus::Broadcast, 500).await? {
            self.follow(&w, head).await?;
        }
        for w in self.store.open_withdrawals(chain, WithdrawalStatus::Requested, 50).await? {
            self.sign_and_send(&w).await?;
        }
        for (status, n) in self.store.withdrawal_counts(chain).await? {
            metrics::gauge!("chain_withdrawals", "chain" => chain.clone(), "status" => status).set(n as f64);
        }
        Ok(())
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
        Ok((base * 2 + priority, priority))
    }

    async fn sign_and_send(&self, w: &Withdrawal) -> anyhow::Result<()> {
        let address = format!("{:#x}", self.key.0.address());
        let nonce = self
            .store
            .next_nonce(&self.chain.name, &address, async || {
                let mined = self
                    .rpc("eth_getTransactionCount", async {
                        self.provider.get_transaction_count(self.key.0.address()).latest().await
                    })
                    .await?;
                Ok(mined)
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

    /// A broadcast withdrawal: confirmed or failed once mined with the confirmations, replaced when
    /// stuck.
    async fn follow(&self, w: &Withdrawal, head: u64) -> anyhow::Result<()> {
        for hash in self.store.withdrawal_txs(w.id).await? {
            let h: B256 = hash.parse()?;
            let receipt =
                self.rpc("eth_getTransactionReceipt", async { self.provider.get_transaction_receipt(h).await }).await?;
            let Some(receipt) = receipt else { continue };
            let Some(block) = receipt.block_number else { continue };
            if head + 1 < block + self.chain.confirmations {
                return Ok(());
            }
            if receipt.status() {
                return self.confirm(w, &hash, block as i64).await;
            }
            return self.fail(w, "the transaction reverted", Some(&hash), Some(block as i64)).await;
        }
        let stuck = w.broadcast_at.is_some_and(|at| base::clock::now() - at > self.chain.replace_after);
        if stuck { self.replace(w).await } else { Ok(()) }
    }

    async fn replace(&self, w: &Withdrawal) -> anyhow::Result<()> {
        let nonce = w.nonce.ok_or_else(|| anyhow::anyhow!("withdrawal {} has no nonce", w.id))?;
        let old_max: u128 = w.max_fee_per_gas.as_deref().unwrap_or("0").parse()?;
        let old_tip: u128 = w.priority_fee.as_deref().unwrap_or("0").parse()?;
        let (now_max, now_tip) = self.fees().await?;
        // Nodes take a replacement only with both fees at least 10 % higher: 25 %.
        let tip = now_tip.max(old_tip + old_tip / 4 + 1);
        let max_fee = now_max.max(old_max + old_max / 4 + 1).max(tip);
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
