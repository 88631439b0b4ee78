//! The ledger in the embedded SQLite database: one IMMEDIATE transaction per movement (SQLite has
//! one writer, so movements queue), exact decimals computed in Rust and stored as text.

use std::str::FromStr;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{ACCOUNT_COLS, DEPOSIT_COLS, ENTRY_COLS, HOLD_COLS, Ledger, TRANSFER_COLS, WalletStore, unknown};
use crate::domain::{Account, Deposit, Entry, EntryKind, Hold, HoldStatus, Movement, Record, Transfer, WalletError};
use base::clock::{from_text, to_text};
use events::outbox::{self, EventContext};
use storage::SqlitePool;

pub struct SqliteWalletStore {
    pool: SqlitePool,
}

impl SqliteWalletStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn db_err(e: rusqlite::Error) -> WalletError {
    WalletError::Unexpected(anyhow::Error::new(e))
}

/// A column read as text and parsed, or an error naming what it was.
fn parsed<T: FromStr>(r: &Row<'_>, i: usize) -> Result<T, WalletError>
where
    T::Err: std::fmt::Display,
{
    let text: String = r.get(i).map_err(db_err)?;
    text.parse().map_err(|e| WalletError::Unexpected(anyhow::anyhow!("column {i}: `{text}`: {e}")))
}

fn parsed_opt<T: FromStr>(r: &Row<'_>, i: usize) -> Result<Option<T>, WalletError>
where
    T::Err: std::fmt::Display,
{
    let text: Option<String> = r.get(i).map_err(db_err)?;
    text.map(|t| t.parse().map_err(|e| WalletError::Unexpected(anyhow::anyhow!("column {i}: `{t}`: {e}")))).transpose()
}

fn time(r: &Row<'_>, i: usize) -> Result<time::OffsetDateTime, WalletError> {
    let text: String = r.get(i).map_err(db_err)?;
    from_text(&text).map_err(|e| WalletError::Unexpected(anyhow::anyhow!("column {i}: {e}")))
}

fn account(r: &Row<'_>) -> Result<Account, WalletError> {
    Ok(Account {
        owner: r.get(0).map_err(db_err)?,
        currency: r.get(1).map_err(db_err)?,
        balance: parsed::<Decimal>(r, 2)?,
        held: parsed::<Decimal>(r, 3)?,
        version: r.get(4).map_err(db_err)?,
        updated_at: time(r, 5)?,
    })
}

fn entry(r: &Row<'_>) -> Result<Entry, WalletError> {
    let kind: String = r.get(5).map_err(db_err)?;
    Ok(Entry {
        id: parsed(r, 0)?,
        transaction_id: parsed(r, 1)?,
        owner: r.get(2).map_err(db_err)?,
        currency: r.get(3).map_err(db_err)?,
        amount: parsed(r, 4)?,
        kind: EntryKind::parse(&kind).ok_or_else(|| unknown("entry kind", &kind))?,
        reference: r.get(6).map_err(db_err)?,
        created_at: time(r, 7)?,
    })
}

fn hold(r: &Row<'_>) -> Result<Hold, WalletError> {
    let status: String = r.get(4).map_err(db_err)?;
    let resolved: Option<String> = r.get(8).map_err(db_err)?;
    Ok(Hold {
        id: parsed(r, 0)?,
        user_id: parsed(r, 1)?,
        currency: r.get(2).map_err(db_err)?,
        amount: parsed(r, 3)?,
        status: HoldStatus::parse(&status).ok_or_else(|| unknown("hold status", &status))?,
        order_id: parsed_opt(r, 5)?,
        transaction_id: parsed_opt(r, 6)?,
        created_at: time(r, 7)?,
        resolved_at: resolved
            .map(|t| from_text(&t))
            .transpose()
            .map_err(|e| WalletError::Unexpected(anyhow::anyhow!("{e}")))?,
    })
}

/// Runs `sql` with `params` and maps every row (the mapping may fail).
fn query<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: fn(&Row<'_>) -> Result<T, WalletError>,
) -> Result<Vec<T>, WalletError> {
    let mut stmt = c.prepare(sql).map_err(db_err)?;
    let mut rows = stmt.query(params).map_err(db_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        out.push(map(row)?);
    }
    Ok(out)
}

fn apply(c: &mut Connection, m: &Movement, ctx: &EventContext) -> Result<Vec<Account>, WalletError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let mut m = m.clone();
    if let Some(id) = m.record.hold_id() {
        let (status, amount): (String, String) = tx
            .query_row("SELECT status, amount FROM wallet_holds WHERE id = ?1", [id.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(db_err)?
            .ok_or(WalletError::NotFound("hold"))?;
        let status = HoldStatus::parse(&status).ok_or_else(|| unknown("hold status", &status))?;
        if status != HoldStatus::Pending {
            return Err(WalletError::HoldNotPending(status.as_str()));
        }
        m.on_locked_hold(amount.parse().map_err(|e| WalletError::Unexpected(anyhow::anyhow!("hold amount: {e}")))?)?;
    }
    let m = &m;
    let now = to_text(m.now);
    let mut accounts = Vec::new();
    for (owner, currency) in m.accounts() {
        tx.execute(
            "INSERT OR IGNORE INTO wallet_accounts (owner, currency, updated_at) VALUES (?1, ?2, ?3)",
            params![owner, currency, now],
        )
        .map_err(db_err)?;
        let sql = format!("SELECT {ACCOUNT_COLS} FROM wallet_accounts WHERE owner = ?1 AND currency = ?2");
        accounts.extend(query(&tx, &sql, params![owner, currency], account)?);
    }
    let entries = m.apply_to(&mut accounts)?;
    if let Some(j) = &m.journal {
        tx.execute(
            "INSERT INTO wallet_transactions (id, kind, reference, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![j.id.to_string(), j.kind.as_str(), j.reference, now],
        )
        .map_err(db_err)?;
    }
    for e in &entries {
        tx.execute(
            &format!("INSERT INTO wallet_entries ({ENTRY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                e.id.to_string(),
                e.transaction_id.to_string(),
                e.owner,
                e.currency,
                e.amount.to_string(),
                e.kind.as_str(),
                e.reference,
                to_text(e.created_at)
            ],
        )
        .map_err(db_err)?;
    }
    for a in &accounts {
        tx.execute(
            "UPDATE wallet_accounts SET balance = ?3, held = ?4, version = ?5, updated_at = ?6 WHERE owner = ?1 AND currency = ?2",
            params![a.owner, a.currency, a.balance.to_string(), a.held.to_string(), a.version, to_text(a.updated_at)],
        )
        .map_err(db_err)?;
    }
    let written = match &m.record {
        Record::Deposit(d) => tx.execute(
            &format!("INSERT INTO wallet_deposits ({DEPOSIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                d.id.to_string(),
                d.user_id.to_string(),
                d.currency,
                d.amount.to_string(),
                d.reference,
                d.source,
                d.transaction_id.to_string(),
                to_text(d.created_at)
            ],
        ),
        Record::Transfer(t) => tx.execute(
            &format!("INSERT INTO wallet_transfers ({TRANSFER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                t.id.to_string(),
                t.from_user_id.to_string(),
                t.to_user_id.to_string(),
                t.currency,
                t.amount.to_string(),
                t.transaction_id.to_string(),
                to_text(t.created_at)
            ],
        ),
        Record::PlaceHold(h) => tx.execute(
            &format!("INSERT INTO wallet_holds ({HOLD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![
                h.id.to_string(),
                h.user_id.to_string(),
                h.currency,
                h.amount.to_string(),
                h.status.as_str(),
                h.order_id.map(|o| o.to_string()),
                h.transaction_id.map(|t| t.to_string()),
                to_text(h.created_at),
                h.resolved_at.map(to_text)
            ],
        ),
        Record::Withdraw(h, w) => {
            tx.execute(
                &format!("INSERT INTO wallet_holds ({HOLD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    h.id.to_string(),
                    h.user_id.to_string(),
                    h.currency,
                    h.amount.to_string(),
                    h.status.as_str(),
                    h.order_id.map(|o| o.to_string()),
                    h.transaction_id.map(|t| t.to_string()),
                    to_text(h.created_at),
                    h.resolved_at.map(to_text)
                ],
            )
            .map_err(db_err)?;
            tx.execute(
                "INSERT INTO chain_withdrawals (id, user_id, chain, currency, to_address, amount, hold_id, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'requested', ?8, ?8)",
                params![
                    w.id.to_string(),
                    h.user_id.to_string(),
                    w.chain,
                    h.currency,
                    w.to_address,
                    h.amount.to_string(),
                    h.id.to_string(),
                    to_text(m.now)
                ],
            )
        }
        Record::ResolveHold { id, status, transaction_id, .. } => tx.execute(
            "UPDATE wallet_holds SET status = ?2, transaction_id = ?3, resolved_at = ?4 WHERE id = ?1",
            params![id.to_string(), status.as_str(), transaction_id.map(|t| t.to_string()), now],
        ),
        Record::AdjustHold { id, amount } => {
            tx.execute("UPDATE wallet_holds SET amount = ?2 WHERE id = ?1", params![id.to_string(), amount.to_string()])
        }
    };
    match written {
        Err(rusqlite::Error::SqliteFailure(f, _))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE && matches!(m.record, Record::Deposit(_)) =>
        {
            return Err(WalletError::DuplicateReference);
        }
        other => other.map_err(db_err)?,
    };
    outbox::insert_sqlite(&tx, ctx, &m.event).map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(accounts)
}

#[async_trait]
impl WalletStore for SqliteWalletStore {
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.apply"))]
    async fn apply(&self, m: &Movement, ctx: &EventContext) -> Result<Vec<Account>, WalletError> {
        let (m, ctx) = (m.clone(), ctx.clone());
        let accounts = self.pool.call(move |c| apply(c, &m, &ctx)).await?;
        outbox::notify_written();
        Ok(accounts)
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.accounts"))]
    async fn accounts(&self, owner: &str) -> Result<Vec<Account>, WalletError> {
        let owner = owner.to_string();
        self.pool
            .call(move |c| {
                let sql = format!("SELECT {ACCOUNT_COLS} FROM wallet_accounts WHERE owner = ?1 ORDER BY currency");
                query(c, &sql, [owner], account)
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.entries"))]
    async fn entries(
        &self,
        owner: &str,
        currency: Option<&str>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Entry>, WalletError> {
        let (owner, currency, before) =
            (owner.to_string(), currency.map(str::to_string), before.map(|b| b.to_string()));
        self.pool
            .call(move |c| {
                let sql = format!(
                    "SELECT {ENTRY_COLS} FROM wallet_entries WHERE owner = ?1 AND (?2 IS NULL OR currency = ?2)
                     AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
                );
                query(c, &sql, params![owner, currency, before, limit], entry)
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.holds"))]
    async fn holds(
        &self,
        user_id: Uuid,
        status: Option<HoldStatus>,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Hold>, WalletError> {
        let (status, before) = (status.map(HoldStatus::as_str), before.map(|b| b.to_string()));
        self.pool
            .call(move |c| {
                let sql = format!(
                    "SELECT {HOLD_COLS} FROM wallet_holds WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2)
                     AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
                );
                query(c, &sql, params![user_id.to_string(), status, before, limit], hold)
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.hold"))]
    async fn hold(&self, id: Uuid) -> Result<Option<Hold>, WalletError> {
        self.pool
            .call(move |c| {
                let sql = format!("SELECT {HOLD_COLS} FROM wallet_holds WHERE id = ?1");
                Ok(query(c, &sql, [id.to_string()], hold)?.pop())
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.holds_of_order"))]
    async fn holds_of_order(&self, order_id: Uuid) -> Result<Vec<Hold>, WalletError> {
        self.pool
            .call(move |c| {
                let sql = format!("SELECT {HOLD_COLS} FROM wallet_holds WHERE order_id = ?1 ORDER BY id DESC");
                query(c, &sql, [order_id.to_string()], hold)
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.pending_holds"))]
    async fn pending_holds(
        &self,
        before: time::OffsetDateTime,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Hold>, WalletError> {
        let (before, after) = (to_text(before), after.map(|a| a.to_string()));
        self.pool
            .call(move |c| {
                let sql = format!(
                    "SELECT {HOLD_COLS} FROM wallet_holds WHERE status = 'pending' AND created_at < ?1
                     AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3"
                );
                query(c, &sql, params![before, after, limit], hold)
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.transfer"))]
    async fn transfer(&self, id: Uuid) -> Result<Option<Transfer>, WalletError> {
        self.pool
            .call(move |c| {
                let sql = format!("SELECT {TRANSFER_COLS} FROM wallet_transfers WHERE id = ?1");
                let map = |r: &Row<'_>| -> Result<Transfer, WalletError> {
                    Ok(Transfer {
                        id: parsed(r, 0)?,
                        from_user_id: parsed(r, 1)?,
                        to_user_id: parsed(r, 2)?,
                        currency: r.get(3).map_err(db_err)?,
                        amount: parsed(r, 4)?,
                        transaction_id: parsed(r, 5)?,
                        created_at: time(r, 6)?,
                    })
                };
                Ok(query(c, &sql, [id.to_string()], map)?.pop())
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.deposit_by_reference"))]
    async fn deposit_by_reference(&self, reference: &str) -> Result<Option<Deposit>, WalletError> {
        let reference = reference.to_string();
        self.pool
            .call(move |c| {
                let sql = format!("SELECT {DEPOSIT_COLS} FROM wallet_deposits WHERE reference = ?1");
                let map = |r: &Row<'_>| -> Result<Deposit, WalletError> {
                    Ok(Deposit {
                        id: parsed(r, 0)?,
                        user_id: parsed(r, 1)?,
                        currency: r.get(2).map_err(db_err)?,
                        amount: parsed(r, 3)?,
                        reference: r.get(4).map_err(db_err)?,
                        source: r.get(5).map_err(db_err)?,
                        transaction_id: parsed(r, 6)?,
                        created_at: time(r, 7)?,
                    })
                };
                Ok(query(c, &sql, [reference], map)?.pop())
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "wallet.ledger"))]
    async fn ledger(&self) -> Result<Ledger, WalletError> {
        self.pool
            .call(|c| {
                let tx = c.transaction().map_err(db_err)?;
                let accounts = query(&tx, &format!("SELECT {ACCOUNT_COLS} FROM wallet_accounts"), [], account)?;
                let line = |r: &Row<'_>| -> Result<(Uuid, String, String, Decimal), WalletError> {
                    Ok((parsed(r, 0)?, r.get(1).map_err(db_err)?, r.get(2).map_err(db_err)?, parsed(r, 3)?))
                };
                let entries =
                    query(&tx, "SELECT transaction_id, owner, currency, amount FROM wallet_entries", [], line)?;
                let sql = format!("SELECT {HOLD_COLS} FROM wallet_holds WHERE status = 'pending'");
                let pending = query(&tx, &sql, [], hold)?;
                Ok(Ledger { accounts, entries, pending })
            })
            .await
    }
}
