//! The ledger in PostgreSQL: row locks taken in one order (sorted accounts, after the one hold a
//! movement resolves), so concurrent movements queue instead of deadlocking; the CHECK constraint
//! refuses a user account below zero even if the code did not.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{ACCOUNT_COLS, DEPOSIT_COLS, ENTRY_COLS, HOLD_COLS, Ledger, TRANSFER_COLS, WalletStore, unknown};
use crate::domain::{Account, Deposit, Entry, EntryKind, Hold, HoldStatus, Movement, Record, Transfer, WalletError};
use events::outbox::{self, EventContext};
use storage::is_unique_violation;

pub struct PgWalletStore {
    pool: Pool,
}

impl PgWalletStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, WalletError> {
        self.pool.get().await.map_err(|e| WalletError::Unexpected(anyhow::Error::new(e).context("PostgreSQL pool")))
    }
}

fn db_err(e: tokio_postgres::Error) -> WalletError {
    WalletError::Unexpected(anyhow::Error::new(e))
}

fn account(r: &Row) -> Account {
    Account {
        owner: r.get(0),
        currency: r.get(1),
        balance: r.get(2),
        held: r.get(3),
        version: r.get(4),
        updated_at: r.get(5),
    }
}

fn entry(r: &Row) -> Result<Entry, WalletError> {
    let kind: String = r.get(5);
    Ok(Entry {
        id: r.get(0),
        transaction_id: r.get(1),
        owner: r.get(2),
        currency: r.get(3),
        amount: r.get(4),
        kind: EntryKind::parse(&kind).ok_or_else(|| unknown("entry kind", &kind))?,
        reference: r.get(6),
        created_at: r.get(7),
    })
}

fn hold(r: &Row) -> Result<Hold, WalletError> {
    let status: String = r.get(4);
    Ok(Hold {
        id: r.get(0),
        user_id: r.get(1),
        currency: r.get(2),
        amount: r.get(3),
        status: HoldStatus::parse(&status).ok_or_else(|| unknown("hold status", &status))?,
        order_id: r.get(5),
        transaction_id: r.get(6),
        created_at: r.get(7),
        resolved_at: r.get(8),
    })
}

#[async_trait]
impl WalletStore for PgWalletStore {
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.apply"))]
    async fn apply(&self, m: &Movement, ctx: &EventContext) -> Result<Vec<Account>, WalletError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        // The hold first (one per movement), then the accounts in sorted order.
        let mut m = m.clone();
        if let Some(id) = m.record.hold_id() {
            let row =
                storage::pg::query_opt(&tx, "SELECT status, amount FROM wallet_holds WHERE id = $1 FOR UPDATE", &[&id])
                    .await
                    .map_err(db_err)?
                    .ok_or(WalletError::NotFound("hold"))?;
            let status: String = row.get(0);
            let status = HoldStatus::parse(&status).ok_or_else(|| unknown("hold status", &status))?;
            if status != HoldStatus::Pending {
                return Err(WalletError::HoldNotPending(status.as_str()));
            }
            m.on_locked_hold(row.get(1))?;
        }
        let m = &m;
        let keys = m.accounts();
        let mut accounts = Vec::with_capacity(keys.len());
        let lock = format!("SELECT {ACCOUNT_COLS} FROM wallet_accounts WHERE owner = $1 AND currency = $2 FOR UPDATE");
        for (owner, currency) in &keys {
            // The account is there but for its first movement: lock it, and create it only if absent.
            let row = match storage::pg::query_opt(&tx, &lock, &[owner, currency]).await.map_err(db_err)? {
                Some(row) => row,
                None => {
                    storage::pg::execute(
                        &tx,
                        "INSERT INTO wallet_accounts (owner, currency, updated_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[owner, currency, &m.now],
                    )
                    .await
                    .map_err(db_err)?;
                    storage::pg::query_one(&tx, &lock, &[owner, currency]).await.map_err(db_err)?
                }
            };
            accounts.push(account(&row));
        }
        let entries = m.apply_to(&mut accounts)?;
        if let Some(j) = &m.journal {
            storage::pg::execute(
                &tx,
                "INSERT INTO wallet_transactions (id, kind, reference, created_at) VALUES ($1, $2, $3, $4)",
                &[&j.id, &j.kind.as_str(), &j.reference, &m.now],
            )
            .await
            .map_err(db_err)?;
        }
        for e in &entries {
            storage::pg::execute(
                &tx,
                &format!("INSERT INTO wallet_entries ({ENTRY_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
                &[
                    &e.id,
                    &e.transaction_id,
                    &e.owner,
                    &e.currency,
                    &e.amount,
                    &e.kind.as_str(),
                    &e.reference,
                    &e.created_at,
                ],
            )
            .await
            .map_err(db_err)?;
        }
        for a in &accounts {
            storage::pg::execute(
                &tx,
                "UPDATE wallet_accounts SET balance = $3, held = $4, version = $5, updated_at = $6
                 WHERE owner = $1 AND currency = $2",
                &[&a.owner, &a.currency, &a.balance, &a.held, &a.version, &a.updated_at],
            )
            .await
            .map_err(db_err)?;
        }
        write_record(&tx, &m.record, m.now).await?;
        outbox::insert_pg(&tx, ctx, &m.event).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        outbox::notify_written();
        Ok(accounts)
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.accounts"))]
    async fn accounts(&self, owner: &str) -> Result<Vec<Account>, WalletError> {
        let rows = self
            .client()
            .await?
            .query(&format!("SELECT {ACCOUNT_COLS} FROM wallet_accounts WHERE owner = $1 ORDER BY currency"), &[&owner])
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(account).collect())
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.entries"))]
    async fn entries(
        &self,
        owner: &str,
        currency: Option<&str>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Entry>, WalletError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {ENTRY_COLS} FROM wallet_entries WHERE owner = $1 AND ($2::text IS NULL OR currency = $2)
                     AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
                ),
                &[&owner, &currency, &before, &limit],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(entry).collect()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.holds"))]
    async fn holds(
        &self,
        user_id: Uuid,
        status: Option<HoldStatus>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Hold>, WalletError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {HOLD_COLS} FROM wallet_holds WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
                     AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
                ),
                &[&user_id, &status.map(HoldStatus::as_str), &before, &limit],
            )
            .await
            .map_err(db_err)?;
        rows.iter().map(hold).collect()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.hold"))]
    async fn hold(&self, id: Uuid) -> Result<Option<Hold>, WalletError> {
        let client = self.client().await?;
        let row =
            storage::pg::query_opt(&client, &format!("SELECT {HOLD_COLS} FROM wallet_holds WHERE id = $1"), &[&id])
                .await;
        row.map_err(db_err)?.as_ref().map(hold).transpose()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.holds_of_order"))]
    async fn holds_of_order(&self, order_id: Uuid) -> Result<Vec<Hold>, WalletError> {
        let client = self.client().await?;
        let sql = format!("SELECT {HOLD_COLS} FROM wallet_holds WHERE order_id = $1 ORDER BY id DESC");
        storage::pg::query(&client, &sql, &[&order_id]).await.map_err(db_err)?.iter().map(hold).collect()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.pending_holds"))]
    async fn pending_holds(
        &self,
        before: time::OffsetDateTime,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Hold>, WalletError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {HOLD_COLS} FROM wallet_holds WHERE status = 'pending' AND created_at < $1
             AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        );
        client.query(&sql, &[&before, &after, &limit]).await.map_err(db_err)?.iter().map(hold).collect()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.transfer"))]
    async fn transfer(&self, id: Uuid) -> Result<Option<Transfer>, WalletError> {
        let client = self.client().await?;
        let row =
            client.query_opt(&format!("SELECT {TRANSFER_COLS} FROM wallet_transfers WHERE id = $1"), &[&id]).await;
        Ok(row.map_err(db_err)?.map(|r| Transfer {
            id: r.get(0),
            from_user_id: r.get(1),
            to_user_id: r.get(2),
            currency: r.get(3),
            amount: r.get(4),
            transaction_id: r.get(5),
            created_at: r.get(6),
        }))
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.deposit_by_reference"))]
    async fn deposit_by_reference(&self, reference: &str) -> Result<Option<Deposit>, WalletError> {
        let client = self.client().await?;
        let sql = format!("SELECT {DEPOSIT_COLS} FROM wallet_deposits WHERE reference = $1");
        let row = client.query_opt(&sql, &[&reference]).await.map_err(db_err)?;
        Ok(row.map(|r| Deposit {
            id: r.get(0),
            user_id: r.get(1),
            currency: r.get(2),
            amount: r.get(3),
            reference: r.get(4),
            source: r.get(5),
            transaction_id: r.get(6),
            created_at: r.get(7),
        }))
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.ledger"))]
    async fn ledger(&self) -> Result<Ledger, WalletError> {
        let mut client = self.client().await?;
        // One snapshot of all three.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db_err)?;
        let accounts = tx.query(&format!("SELECT {ACCOUNT_COLS} FROM wallet_accounts"), &[]).await.map_err(db_err)?;
        let entries = tx
            .query("SELECT transaction_id, owner, currency, amount FROM wallet_entries", &[])
            .await
            .map_err(db_err)?;
        let pending = tx
            .query(&format!("SELECT {HOLD_COLS} FROM wallet_holds WHERE status = 'pending'"), &[])
            .await
            .map_err(db_err)?;
        Ok(Ledger {
            accounts: accounts.iter().map(account).collect(),
            entries: entries.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect(),
            pending: pending.iter().map(hold).collect::<Result<_, _>>()?,
        })
    }
}

async fn write_record(tx: &impl GenericClient, record: &Record, now: time::OffsetDateTime) -> Result<(), WalletError> {
    let result = match record {
        Record::Deposit(d) => {
            storage::pg::execute(
                tx,
                &format!("INSERT INTO wallet_deposits ({DEPOSIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
                &[&d.id, &d.user_id, &d.currency, &d.amount, &d.reference, &d.source, &d.transaction_id, &d.created_at],
            )
            .await
        }
        Record::Transfer(t) => {
            storage::pg::execute(
                tx,
                &format!("INSERT INTO wallet_transfers ({TRANSFER_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                &[&t.id, &t.from_user_id, &t.to_user_id, &t.currency, &t.amount, &t.transaction_id, &t.created_at],
            )
            .await
        }
        Record::PlaceHold(h) => {
            storage::pg::execute(
                tx,
                &format!("INSERT INTO wallet_holds ({HOLD_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
                &[
                    &h.id,
                    &h.user_id,
                    &h.currency,
                    &h.amount,
                    &h.status.as_str(),
                    &h.order_id,
                    &h.transaction_id,
                    &h.created_at,
                    &h.resolved_at,
                ],
            )
            .await
        }
        Record::Withdraw(h, w) => {
            Box::pin(write_record(tx, &Record::PlaceHold(h.clone()), now)).await?;
            storage::pg::execute(
                tx,
                "INSERT INTO chain_withdrawals (id, user_id, chain, currency, to_address, amount, hold_id, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'requested', $8, $8)",
                &[&w.id, &h.user_id, &w.chain, &h.currency, &w.to_address, &h.amount, &h.id, &now],
            )
            .await
        }
        Record::ResolveHold { id, status, transaction_id, .. } => {
            storage::pg::execute(
                tx,
                "UPDATE wallet_holds SET status = $2, transaction_id = $3, resolved_at = $4 WHERE id = $1",
                &[id, &status.as_str(), transaction_id, &now],
            )
            .await
        }
        Record::AdjustHold { id, amount } => {
            storage::pg::execute(tx, "UPDATE wallet_holds SET amount = $2 WHERE id = $1", &[id, amount]).await
        }
    };
    match result {
        Err(e) if is_unique_violation(&e) && matches!(record, Record::Deposit(_)) => {
            Err(WalletError::DuplicateReference)
        }
        other => other.map(|_| ()).map_err(db_err),
    }
}
