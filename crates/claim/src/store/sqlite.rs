//! Claims in the embedded SQLite database.

use std::str::FromStr;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params_from_iter};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{COLS, ClaimFilter, ClaimStore, Mutation, apply};
use crate::domain::{Claim, ClaimError, ClaimStatus};
use base::clock;
use events::outbox::{self, EventContext, NewEvent};
use storage::SqlitePool;

pub struct SqliteClaimStore {
    pool: SqlitePool,
}

impl SqliteClaimStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn db_err(e: rusqlite::Error) -> ClaimError {
    ClaimError::Unexpected(anyhow::Error::new(e))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

fn read(r: &Row<'_>) -> rusqlite::Result<Result<Claim, anyhow::Error>> {
    let text = |i: usize| r.get::<_, String>(i);
    let opt = |i: usize| r.get::<_, Option<String>>(i);
    let (id, order_id, user_id, buyer_id, supply_id) = (text(0)?, text(1)?, text(2)?, text(3)?, text(4)?);
    let (currency, amount, status, failure_reason) = (text(5)?, text(6)?, text(7)?, opt(8)?);
    let (claimed_at, processed_at, updated_at, version) = (text(9)?, opt(10)?, text(11)?, r.get::<_, i64>(12)?);
    let order_version = r.get::<_, Option<i64>>(13)?;
    Ok((|| {
        Ok(Claim {
            id: id.parse()?,
            order_id: order_id.parse()?,
            user_id: user_id.parse()?,
            buyer_id: buyer_id.parse()?,
            supply_id: supply_id.parse()?,
            currency,
            amount: Decimal::from_str(&amount)?,
            status: ClaimStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown claim status {status}"))?,
            failure_reason,
            claimed_at: clock::from_text(&claimed_at)?,
            processed_at: processed_at.map(|p| clock::from_text(&p)).transpose()?,
            updated_at: clock::from_text(&updated_at)?,
            version,
            order_version,
        })
    })())
}

fn one(c: &rusqlite::Connection, sql: &str, param: String) -> Result<Option<Claim>, ClaimError> {
    let row = c.query_row(sql, [param], read).optional().map_err(db_err)?;
    row.map(|r| r.map_err(ClaimError::Unexpected)).transpose()
}

#[async_trait]
impl ClaimStore for SqliteClaimStore {
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.insert"))]
    async fn insert(&self, c: &Claim, event: &NewEvent, ctx: &EventContext) -> Result<(), ClaimError> {
        let (c, event, ctx) = (c.clone(), event.clone(), ctx.clone());
        self.pool
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let inserted = tx.execute(
                    &format!(
                        "INSERT INTO claims ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                    ),
                    rusqlite::params![
                        c.id.to_string(),
                        c.order_id.to_string(),
                        c.user_id.to_string(),
                        c.buyer_id.to_string(),
                        c.supply_id.to_string(),
                        c.currency,
                        c.amount.to_string(),
                        c.status.as_str(),
                        c.failure_reason,
                        clock::to_text(c.claimed_at),
                        c.processed_at.map(clock::to_text),
                        clock::to_text(c.updated_at),
                        c.version,
                        c.order_version
                    ],
                );
                match inserted {
                    Err(e) if is_unique_violation(&e) => return Err(ClaimError::AlreadyClaimed),
                    other => other.map_err(db_err)?,
                };
                outbox::insert_sqlite(&tx, &ctx, &event).map_err(db_err)?;
                tx.commit().map_err(db_err)
            })
            .await?;
        outbox::notify_written();
        Ok(())
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.get"))]
    async fn get(&self, id: Uuid) -> Result<Option<Claim>, ClaimError> {
        self.pool.call(move |c| one(c, &format!("SELECT {COLS} FROM claims WHERE id = ?1"), id.to_string())).await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.latest_for_order"))]
    async fn latest_for_order(&self, order_id: Uuid) -> Result<Option<Claim>, ClaimError> {
        self.pool
            .call(move |c| {
                one(
                    c,
                    &format!("SELECT {COLS} FROM claims WHERE order_id = ?1 ORDER BY id DESC LIMIT 1"),
                    order_id.to_string(),
                )
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.modify"))]
    async fn modify(&self, id: Uuid, ctx: &EventContext, change: Mutation) -> Result<Claim, ClaimError> {
        let ctx = ctx.clone();
        let claim = self
            .pool
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let row = one(&tx, &format!("SELECT {COLS} FROM claims WHERE id = ?1"), id.to_string())?
                    .ok_or(ClaimError::NotFound)?;
                let (c, event) = apply(row, change)?;
                tx.execute(
                    "UPDATE claims SET status = ?2, failure_reason = ?3, processed_at = ?4, updated_at = ?5, version = ?6
                     WHERE id = ?1",
                    rusqlite::params![
                        c.id.to_string(),
                        c.status.as_str(),
                        c.failure_reason,
                        c.processed_at.map(clock::to_text),
                        clock::to_text(c.updated_at),
                        c.version
                    ],
                )
                .map_err(db_err)?;
                outbox::insert_sqlite(&tx, &ctx, &event).map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok::<_, ClaimError>(c)
            })
            .await?;
        outbox::notify_written();
        Ok(claim)
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.get_many"))]
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<Claim>, ClaimError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = storage::sqlite::placeholders(1, ids.len());
        let sql = format!("SELECT {COLS} FROM claims WHERE id IN ({placeholders})");
        self.pool
            .call(move |c| {
                let mut st = c.prepare(&sql).map_err(db_err)?;
                let rows = st.query_map(params_from_iter(ids.iter().map(Uuid::to_string)), read).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err).and_then(|c| c.map_err(ClaimError::Unexpected))).collect()
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.list_ids"))]
    async fn list_ids(&self, f: &ClaimFilter) -> Result<Vec<Uuid>, ClaimError> {
        let page = f.page();
        self.pool.call(move |c| page.fetch_sqlite(c)).await.map_err(ClaimError::Unexpected)
    }
}
