//! A deposit from a chain as clients and events see it.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{ChainDeposit, DepositStatus};
use base::money::{AssetRegistry, format_amount};

/// A deposit from a chain, from when it is first seen.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DepositView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub chain: String,
    pub currency: String,
    pub amount: String,
    /// `seen` (waiting for confirmations), `credited`, `dropped` (its block left the chain before it
    /// was final), `reorged` (credited, then removed by a deeper reorg: flagged for admins).
    pub status: DepositStatus,
    pub address: String,
    pub tx_hash: String,
    /// Its place among its transaction's `Transfer` logs of the chain's tokens; -1 for the value of
    /// a plain transaction. With `tx_hash`, what makes it unique (a reorg does not change it).
    pub transfer_index: i64,
    /// Its log's place in its block (-1 for a plain transaction).
    pub log_index: i64,
    pub block_number: i64,
    pub block_hash: String,
    /// Blocks on top of (and including) its block, as far as the watcher has processed.
    pub confirmations: Option<i64>,
    /// The ledger deposit, once credited.
    pub deposit_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl DepositView {
    pub fn of(assets: &AssetRegistry, d: &ChainDeposit, processed: Option<i64>) -> Self {
        let decimals = assets.get(&d.seen.currency).map_or(d.seen.amount.scale(), |a| a.decimals);
        Self {
            id: d.id,
            user_id: d.seen.user_id,
            chain: d.chain.clone(),
            currency: d.seen.currency.clone(),
            amount: format_amount(d.seen.amount, decimals),
            status: d.status,
            address: d.seen.address.clone(),
            tx_hash: d.seen.tx_hash.clone(),
            transfer_index: d.seen.transfer_index,
            log_index: d.seen.log_index,
            block_number: d.seen.block_number,
            block_hash: d.seen.block_hash.clone(),
            confirmations: processed.map(|p| (p - d.seen.block_number + 1).max(0)),
            deposit_id: d.deposit_id,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}
