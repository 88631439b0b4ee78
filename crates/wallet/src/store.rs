//! The wallet store: a trait with a PostgreSQL and a SQLite implementation. Every movement locks
//! the accounts it touches in one order (sorted by owner and asset), applies the domain's rules to
//! them, and writes entries, balances, its record and its event in one transaction.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::{Account, Deposit, Entry, Hold, HoldStatus, Movement, Transfer, WalletError};
use events::outbox::EventContext;
use storage::Database;

storage::migrations!(pub MIGRATIONS, "wallet");

/// Everything `verify` recomputes: accounts, every entry `(transaction, owner, asset, amount)`, the
/// pending holds.
pub struct Ledger {
    pub accounts: Vec<Account>,
    pub entries: Vec<(Uuid, String, String, Decimal)>,
    pub pending: Vec<Hold>,
}

#[async_trait]
pub trait WalletStore: Send + Sync {
    /// Applies a movement atomically; the accounts it changed, as written.
    async fn apply(&self, m: &Movement, ctx: &EventContext) -> Result<Vec<Account>, WalletError>;
    /// The owner's accounts that have seen activity.
    async fn accounts(&self, owner: &str) -> Result<Vec<Account>, WalletError>;
    /// The owner's entries (in one asset, or all), newest first, before an entry id.
    async fn entries(
        &self,
        owner: &str,
        currency: Option<&str>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Entry>, WalletError>;
    /// A user's holds (of one status, or all), newest first.
    async fn holds(
        &self,
        user_id: Uuid,
        status: Option<HoldStatus>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Hold>, WalletError>;
    async fn hold(&self, id: Uuid) -> Result<Option<Hold>, WalletError>;
    /// The holds placed for an order, newest first.
    async fn holds_of_order(&self, order_id: Uuid) -> Result<Vec<Hold>, WalletError>;
    /// Pending holds placed before `before`, by id, after the id `after` (a page).
    async fn pending_holds(
        &self,
        before: time::OffsetDateTime,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Hold>, WalletError>;
    async fn transfer(&self, id: Uuid) -> Result<Option<Transfer>, WalletError>;
    async fn deposit_by_reference(&self, reference: &str) -> Result<Option<Deposit>, WalletError>;
    /// The whole ledger, for `verify`.
    async fn ledger(&self) -> Result<Ledger, WalletError>;
}

pub fn open(db: &Database) -> Arc<dyn WalletStore> {
    match db {
        Database::Postgres(pool) => Arc::new(postgres::PgWalletStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(sqlite::SqliteWalletStore::new(pool.clone())),
    }
}

const ACCOUNT_COLS: &str = "owner, currency, balance, held, version, updated_at";
const ENTRY_COLS: &str = "id, transaction_id, owner, currency, amount, kind, reference, created_at";
const HOLD_COLS: &str = "id, user_id, currency, amount, status, order_id, transaction_id, created_at, resolved_at";
const DEPOSIT_COLS: &str = "id, user_id, currency, amount, reference, source, transaction_id, created_at";
const TRANSFER_COLS: &str = "id, from_user_id, to_user_id, currency, amount, transaction_id, created_at";

fn unknown(what: &str, value: &str) -> WalletError {
    WalletError::Unexpected(anyhow::anyhow!("unknown {what} {value}"))
}
