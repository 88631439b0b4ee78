//! Withdrawals (DESIGN D12): requested with a hold on the user's account (one transaction, in the
//! wallet), then signed, broadcast and confirmed by the signer (`signer.rs`). Their rows, and the
//! signer's nonce counter, in the wallet's database.

use std::str::FromStr;

use alloy::primitives::Address;
use rust_decimal::Decimal;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{ChainStore, Param, Row, Statement};
use base::clock;
use base::money::{AssetRegistry, format_amount};
use events::outbox::{EventContext, NewEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WithdrawalStatus {
    /// Held, waiting for the signer.
    Requested,
    /// Signed and stored; being broadcast.
    Signed,
    /// Sent to the node; waiting to be mined and confirmed.
    Broadcast,
    /// Final on the chain: the hold was posted to `@withdrawals`.
    Confirmed,
    /// Reverted (or could not be built): the hold was voided.
    Failed,
}

impl WithdrawalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Signed => "signed",
            Self::Broadcast => "broadcast",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
        }
    }

    pub const ALL: [Self; 5] = [Self::Requested, Self::Signed, Self::Broadcast, Self::Confirmed, Self::Failed];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone)]
pub struct Withdrawal {
    pub id: Uuid,
    pub user_id: Uuid,
    pub chain: String,
    pub currency: String,
    /// Lower-case hex.
    pub to_address: String,
    pub amount: Decimal,
    pub hold_id: Uuid,
    pub status: WithdrawalStatus,
    pub nonce: Option<i64>,
    pub tx_hash: Option<String>,
    pub raw_tx: Option<String>,
    pub max_fee_per_gas: Option<String>,
    pub priority_fee: Option<String>,
    pub replacements: i64,
    pub block_number: Option<i64>,
    pub failure_reason: Option<String>,
    pub broadcast_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COLS: &str = "id, user_id, chain, currency, to_address, amount, hold_id, status, nonce, tx_hash, raw_tx, max_fee_per_gas, priority_fee, replacements, block_number, failure_reason, broadcast_at, created_at, updated_at";
const NCOLS: usize = 19;

fn withdrawal(r: &Row) -> anyhow::Result<Withdrawal> {
    let status = r.text(7)?;
    Ok(Withdrawal {
        id: r.uuid(0)?,
        user_id: r.uuid(1)?,
        chain: r.text(2)?,
        currency: r.text(3)?,
        to_address: r.text(4)?,
        amount: r.decimal(5)?,
        hold_id: r.uuid(6)?,
        status: WithdrawalStatus::parse(&status)
            .ok_or_else(|| anyhow::anyhow!("unknown withdrawal status {status}"))?,
        nonce: r.opt_int(8)?,
        tx_hash: r.opt_text(9),
        raw_tx: r.opt_text(10),
        max_fee_per_gas: r.opt_text(11),
        priority_fee: r.opt_text(12),
        replacements: r.int(13)?,
        block_number: r.opt_int(14)?,
        failure_reason: r.opt_text(15),
        broadcast_at: r.opt_time(16)?,
        created_at: r.time(17)?,
        updated_at: r.time(18)?,
    })
}

/// A withdrawal as clients and events see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WithdrawalView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub chain: String,
    pub currency: String,
    /// EIP-55 checksummed.
    pub to_address: String,
    pub amount: String,
    pub status: WithdrawalStatus,
    /// The transaction (the latest, after a replacement), once signed.
    pub tx_hash: Option<String>,
    pub nonce: Option<i64>,
    /// How many times a stuck transaction was replaced by one with a higher fee.
    pub replacements: i64,
    /// The block its transaction was mined in, once confirmed or failed on chain.
    pub block_number: Option<i64>,
    pub failure_reason: Option<String>,
    pub hold_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl WithdrawalView {
    pub fn of(assets: &AssetRegistry, w: &Withdrawal) -> Self {
        let decimals = assets.get(&w.currency).map_or(w.amount.scale(), |a| a.decimals);
        Self {
            id: w.id,
            user_id: w.user_id,
            chain: w.chain.clone(),
            currency: w.currency.clone(),
            to_address: Address::from_str(&w.to_address).map_or_else(|_| w.to_address.clone(), |a| a.to_checksum(None)),
            amount: format_amount(w.amount, decimals),
            status: w.status,
            tx_hash: w.tx_hash.clone(),
            nonce: w.nonce,
            replacements: w.replacements,
            block_number: w.block_number,
            failure_reason: w.failure_reason.clone(),
            hold_id: w.hold_id,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A transaction signed for a withdrawal: its hash, its bytes (hex) and its fees.
#[derive(Debug, Clone)]
pub struct SignedTx {
    pub nonce: i64,
    pub tx_hash: String,
    pub raw: String,
    pub max_fee_per_gas: u128,
    pub priority_fee: u128,
}

impl ChainStore {
    pub async fn withdrawal(&self, id: Uuid) -> anyhow::Result<Option<Withdrawal>> {
        let rows = self
            .select(format!("SELECT {COLS} FROM chain_withdrawals WHERE id = $1"), vec![Param::Uuid(id)], NCOLS)
            .await?;
        rows.first().map(withdrawal).transpose()
    }

    /// A page of withdrawals, newest first: a user's or everyone's, of one status or all.
    pub async fn withdrawals(
        &self,
        user_id: Option<Uuid>,
        status: Option<WithdrawalStatus>,
        before: Option<Uuid>,
        limit: i64,
    ) -> anyhow::Result<Vec<Withdrawal>> {
        let mut conditions = vec!["1 = 1".to_string()];
        let mut params = Vec::new();
        if let Some(u) = user_id {
            params.push(Param::Uuid(u));
            conditions.push(format!("user_id = ${}", params.len()));
        }
        if let Some(s) = status {
            params.push(Param::text(s.as_str()));
            conditions.push(format!("status = ${}", params.len()));
        }
        if let Some(b) = before {
            params.push(Param::Uuid(b));
            conditions.push(format!("id < ${}", params.len()));
        }
        let sql = format!(
            "SELECT {COLS} FROM chain_withdrawals WHERE {} ORDER BY id DESC LIMIT {limit}",
            conditions.join(" AND ")
        );
        self.select(sql, params, NCOLS).await?.iter().map(withdrawal).collect()
    }

    /// A chain's withdrawals in a status, oldest first (by nonce once signed).
    pub async fn open_withdrawals(
        &self,
        chain: &str,
        status: WithdrawalStatus,
        limit: i64,
    ) -> anyhow::Result<Vec<Withdrawal>> {
        let sql = format!(
            "SELECT {COLS} FROM chain_withdrawals WHERE chain = $1 AND status = $2 ORDER BY nonce, id LIMIT {limit}"
        );
        let rows = self.select(sql, vec![Param::text(chain), Param::text(status.as_str())], NCOLS).await?;
        rows.iter().map(withdrawal).collect()
    }

    /// How many withdrawals of a chain are in each status.
    pub async fn withdrawal_counts(&self, chain: &str) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = self
            .select(
                "SELECT status, COUNT(*) FROM chain_withdrawals WHERE chain = $1 GROUP BY status".into(),
                vec![Param::text(chain)],
                2,
            )
            .await?;
        rows.iter().map(|r| Ok((r.text(0)?, r.int(1)?))).collect()
    }

    /// Every transaction hash signed for a withdrawal.
    pub async fn withdrawal_txs(&self, id: Uuid) -> anyhow::Result<Vec<String>> {
        let rows = self
            .select(
                "SELECT tx_hash FROM chain_withdrawal_txs WHERE withdrawal_id = $1".into(),
                vec![Param::Uuid(id)],
                1,
            )
            .await?;
        rows.iter().map(|r| r.text(0)).collect()
    }

    /// The signer's next nonce on a chain, starting the counter at `start` (the node's count of
    /// mined transactions) the first time.
    pub async fn next_nonce(
        &self,
        chain: &str,
        address: &str,
        start: impl AsyncFnOnce() -> anyhow::Result<u64>,
    ) -> anyhow::Result<i64> {
        let sql = "SELECT next_nonce, address FROM chain_signers WHERE chain = $1".to_string();
        if let Some(r) = self.select(sql.clone(), vec![Param::text(chain)], 2).await?.first() {
            let known = r.text(1)?;
            anyhow::ensure!(
                known == address,
                "the signer's key changed on chain {chain}: the nonce counter belongs to {known}, the key is {address}"
            );
            return r.int(0);
        }
        let first = i64::try_from(start().await?)?;
        self.transaction(
            vec![Statement::new(
                "INSERT INTO chain_signers (chain, address, next_nonce, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                vec![Param::text(chain), Param::text(address), Param::Int(Some(first)), Param::Time(clock::now())],
            )],
            vec![],
            &EventContext::default(),
        )
        .await?;
        let rows = self.select(sql, vec![Param::text(chain)], 2).await?;
        rows.first().ok_or_else(|| anyhow::anyhow!("no nonce counter for chain {chain}"))?.int(0)
    }

    /// Stores a withdrawal's first signed transaction, taking its nonce from the counter (which
    /// must still be at it), before anything is broadcast.
    pub async fn record_signed(&self, w: &Withdrawal, tx: &SignedTx) -> anyhow::Result<()> {
        let now = clock::now();
        self.transaction(
            vec![
                Statement::new(
                    "UPDATE chain_signers SET next_nonce = $2 + 1, updated_at = $3 WHERE chain = $1 AND next_nonce = $2",
                    vec![Param::text(&w.chain), Param::Int(Some(tx.nonce)), Param::Time(now)],
                )
                .expecting(1),
                Statement::new(
                    "UPDATE chain_withdrawals SET status = 'signed', nonce = $2, tx_hash = $3, raw_tx = $4, max_fee_per_gas = $5,
                     priority_fee = $6, updated_at = $7 WHERE id = $1 AND status = 'requested'",
                    vec![
                        Param::Uuid(w.id),
                        Param::Int(Some(tx.nonce)),
                        Param::text(&tx.tx_hash),
                        Param::text(&tx.raw),
                        Param::text(tx.max_fee_per_gas.to_string()),
                        Param::text(tx.priority_fee.to_string()),
                        Param::Time(now),
                    ],
                )
                .expecting(1),
                insert_tx(w.id, tx, now),
            ],
            vec![],
            &EventContext::default(),
        )
        .await
    }

    /// Stores a replacement (same nonce, higher fees) before it is broadcast (a `signed` one the
    /// node kept refusing, or a `broadcast` one that stays unmined).
    pub async fn record_replacement(&self, w: &Withdrawal, tx: &SignedTx) -> anyhow::Result<()> {
        let now = clock::now();
        self.transaction(
            vec![
                Statement::new(
                    "UPDATE chain_withdrawals SET tx_hash = $2, raw_tx = $3, max_fee_per_gas = $4, priority_fee = $5,
                     replacements = replacements + 1, broadcast_at = $6, updated_at = $6 WHERE id = $1 AND status IN ('signed', 'broadcast')",
                    vec![
                        Param::Uuid(w.id),
                        Param::text(&tx.tx_hash),
                        Param::text(&tx.raw),
                        Param::text(tx.max_fee_per_gas.to_string()),
                        Param::text(tx.priority_fee.to_string()),
                        Param::Time(now),
                    ],
                )
                .expecting(1),
                insert_tx(w.id, tx, now),
            ],
            vec![],
            &EventContext::default(),
        )
        .await
    }

    /// `signed -> broadcast`, with `wallet.withdrawal_broadcast`.
    pub async fn mark_broadcast(&self, w: &Withdrawal, event: NewEvent, ctx: &EventContext) -> anyhow::Result<()> {
        let now = clock::now();
        self.transaction(
            vec![Statement::new(
                "UPDATE chain_withdrawals SET status = 'broadcast', broadcast_at = $2, updated_at = $2 WHERE id = $1 AND status = 'signed'",
                vec![Param::Uuid(w.id), Param::Time(now)],
            )],
            vec![event],
            ctx,
        )
        .await
    }

    /// Records the end of a withdrawal (its hold is already posted or voided).
    pub async fn mark_finished(
        &self,
        id: Uuid,
        status: WithdrawalStatus,
        tx_hash: Option<&str>,
        block_number: Option<i64>,
        reason: Option<&str>,
    ) -> anyhow::Result<()> {
        self.transaction(
            vec![Statement::new(
                "UPDATE chain_withdrawals SET status = $2, tx_hash = COALESCE($3, tx_hash), block_number = $4, failure_reason = $5,
                 updated_at = $6 WHERE id = $1 AND status IN ('requested', 'signed', 'broadcast')",
                vec![
                    Param::Uuid(id),
                    Param::text(status.as_str()),
                    Param::Text(tx_hash.map(str::to_string)),
                    Param::Int(block_number),
                    Param::Text(reason.map(str::to_string)),
                    Param::Time(clock::now()),
                ],
            )],
            vec![],
            &EventContext::default(),
        )
        .await
    }
}

fn insert_tx(id: Uuid, tx: &SignedTx, now: OffsetDateTime) -> Statement {
    Statement::new(
        "INSERT INTO chain_withdrawal_txs (tx_hash, withdrawal_id, raw_tx, created_at) VALUES ($1, $2, $3, $4)",
        vec![Param::text(&tx.tx_hash), Param::Uuid(id), Param::text(&tx.raw), Param::Time(now)],
    )
}

/// A destination address: `0x` and 40 hex digits; when it mixes cases, its EIP-55 checksum must hold.
pub fn parse_destination(text: &str) -> Result<Address, &'static str> {
    let hex = text.strip_prefix("0x").ok_or("must start with 0x")?;
    if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("must be 0x and 40 hexadecimal digits");
    }
    let mixed = hex.chars().any(|c| c.is_ascii_lowercase()) && hex.chars().any(|c| c.is_ascii_uppercase());
    let address = if mixed {
        Address::parse_checksummed(text, None).map_err(|_| "the EIP-55 checksum (its mix of cases) does not match")?
    } else {
        Address::from_str(text).map_err(|_| "not an address")?
    };
    if address == Address::ZERO {
        return Err("the zero address burns what it receives");
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_checked_as_eip_55_says() {
        let good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        assert!(parse_destination(good).is_ok());
        assert!(parse_destination(&good.to_lowercase()).is_ok(), "all lower case has no checksum");
        assert!(parse_destination(&format!("0x{}", good[2..].to_uppercase())).is_ok(), "all upper case neither");
        assert!(parse_destination("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_err(), "one case flipped");
        for bad in [
            "",
            "0x",
            "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",
            "0xZZ",
            "0x0000000000000000000000000000000000000000",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad}");
        }
    }
}
