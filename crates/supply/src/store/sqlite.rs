//! Supplies in the embedded SQLite database. Amounts are stored as decimal text.

use std::str::FromStr;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params_from_iter};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{EventFn, Guard, Mutation, SupplyFilter, SupplyStore, apply};
use crate::domain::{Supply, SupplyError, SupplyStatus};
use crate::reservation::{Reservation, ReservationOp, ReservationStatus, plan};
use base::Step;
use base::clock;
use events::outbox::{self, EventContext, NewEvent};
use storage::SqlitePool;

const COLS: &str = "id, user_id, currency, amount, reserved, status, version, created_at, updated_at";

pub struct SqliteSupplyStore {
    pool: SqlitePool,
}

impl SqliteSupplyStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn update_supply(tx: &rusqlite::Transaction<'_>, s: &Supply) -> Result<(), SupplyError> {
    tx.execute(
        "UPDATE supplies SET amount = ?2, reserved = ?3, status = ?4, version = ?5, updated_at = ?6 WHERE id = ?1",
        rusqlite::params![
            s.id.to_string(),
            s.amount.to_string(),
            s.reserved.to_string(),
            s.status.as_str(),
            s.version,
            clock::to_text(s.updated_at)
        ],
    )
    .map_err(db_err)?;
    Ok(())
}

fn unexpected(e: impl Into<anyhow::Error>) -> SupplyError {
    SupplyError::Unexpected(e.into())
}

fn db_err(e: rusqlite::Error) -> SupplyError {
    SupplyError::Unexpected(anyhow::Error::new(e))
}

type RawRow = (String, String, String, String, String, String, i64, String, String);

fn raw(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
}

fn from_raw(r: RawRow) -> Result<Supply, SupplyError> {
    let (id, user_id, currency, amount, reserved, status, version, created_at, updated_at) = r;
    let parse = || -> anyhow::Result<Supply> {
        Ok(Supply {
            id: id.parse()?,
            user_id: user_id.parse()?,
            currency,
            amount: Decimal::from_str(&amount)?,
            reserved: Decimal::from_str(&reserved)?,
            status: SupplyStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown supply status {status}"))?,
            version,
            created_at: clock::from_text(&created_at)?,
            updated_at: clock::from_text(&updated_at)?,
        })
    };
    parse().map_err(SupplyError::Unexpected)
}

#[async_trait]
impl SupplyStore for SqliteSupplyStore {
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.insert"))]
    async fn insert(&self, s: &Supply, event: &NewEvent, ctx: &EventContext) -> Result<(), SupplyError> {
        let (s, event, ctx) = (s.clone(), event.clone(), ctx.clone());
        self.pool
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                tx.execute(
                    &format!("INSERT INTO supplies ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                    rusqlite::params![
                        s.id.to_string(),
                        s.user_id.to_string(),
                        s.currency,
                        s.amount.to_string(),
                        s.reserved.to_string(),
                        s.status.as_str(),
                        s.version,
                        clock::to_text(s.created_at),
                        clock::to_text(s.updated_at)
                    ],
                )
                .map_err(db_err)?;
                outbox::insert_sqlite(&tx, &ctx, &event).map_err(db_err)?;
                tx.commit().map_err(db_err)
            })
            .await?;
        outbox::notify_written();
        Ok(())
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.get"))]
    async fn get(&self, id: Uuid) -> Result<Option<Supply>, SupplyError> {
        self.pool
            .call(move |c| {
                let row = c
                    .prepare_cached(&format!("SELECT {COLS} FROM supplies WHERE id = ?1"))
                    .and_then(|mut st| st.query_row([id.to_string()], raw).optional())
                    .map_err(db_err)?;
                row.map(from_raw).transpose()
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.modify"))]
    async fn modify(
        &self,
        id: Uuid,
        guard: Guard,
        ctx: &EventContext,
        change: Mutation,
    ) -> Result<Supply, SupplyError> {
        let ctx = ctx.clone();
        self.pool
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let row = tx
                    .query_row(&format!("SELECT {COLS} FROM supplies WHERE id = ?1"), [id.to_string()], raw)
                    .optional()
                    .map_err(db_err)?
                    .ok_or(SupplyError::NotFound)?;
                let (s, event) = apply(from_raw(row)?, &guard, change)?;
                update_supply(&tx, &s)?;
                outbox::insert_sqlite(&tx, &ctx, &event).map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(s)
            })
            .await
            .inspect(|_| outbox::notify_written())
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.get_many"))]
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<Supply>, SupplyError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = storage::sqlite::placeholders(1, ids.len());
        let sql = format!("SELECT {COLS} FROM supplies WHERE id IN ({placeholders})");
        self.pool
            .call(move |c| {
                let mut st = c.prepare(&sql).map_err(db_err)?;
                let rows = st.query_map(params_from_iter(ids.iter().map(Uuid::to_string)), raw).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err).and_then(from_raw)).collect()
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.list_ids"))]
    async fn list_ids(&self, f: &SupplyFilter) -> Result<Vec<Uuid>, SupplyError> {
        let page = f.page();
        self.pool.call(move |c| page.fetch_sqlite(c)).await.map_err(SupplyError::Unexpected)
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.find_available"))]
    async fn find_available(
        &self,
        user_id: Uuid,
        currency: &str,
        amount: Decimal,
    ) -> Result<Option<Uuid>, SupplyError> {
        let currency = currency.to_string();
        let candidates = self
            .pool
            .call(move |c| {
                let mut st = c
                    .prepare_cached(&format!(
                        "SELECT {COLS} FROM supplies WHERE user_id = ?1 AND currency = ?2 AND status = 'active'"
                    ))
                    .map_err(db_err)?;
                let rows = st.query_map([user_id.to_string(), currency], raw).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err).and_then(from_raw)).collect::<Result<Vec<_>, _>>()
            })
            .await?;
        // Amounts are text here: compare them as decimals, not in SQL. The most available wins; of
        // equals the oldest (smallest UUIDv7), as on PostgreSQL.
        let best = candidates
            .into_iter()
            .filter(|s| s.available() >= amount)
            .max_by(|a, b| a.available().cmp(&b.available()).then(b.id.cmp(&a.id)));
        Ok(best.map(|s| s.id))
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.reservation_step"))]
    async fn reservation_step(
        &self,
        claim_id: Uuid,
        op: ReservationOp,
        ctx: &EventContext,
        event_of: EventFn,
    ) -> Result<(Step, Option<Uuid>), SupplyError> {
        let ctx = ctx.clone();
        let (outcome, changed) = self
            .pool
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let current = tx
                    .query_row(
                        "SELECT supply_id, amount, status, created_at, updated_at FROM supply_reservations WHERE claim_id = ?1",
                        [claim_id.to_string()],
                        |r| {
                            Ok((
                                r.get::<_, Option<String>>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, String>(3)?,
                                r.get::<_, String>(4)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(db_err)?
                    .map(|(supply_id, amount, status, created, updated)| -> Result<Reservation, SupplyError> {
                        Ok(Reservation {
                            claim_id,
                            supply_id: supply_id.map(|s| s.parse()).transpose().map_err(unexpected)?,
                            amount: Decimal::from_str(&amount).map_err(unexpected)?,
                            status: ReservationStatus::parse(&status)
                                .ok_or_else(|| anyhow::anyhow!("unknown reservation status {status}"))?,
                            created_at: clock::from_text(&created).map_err(unexpected)?,
                            updated_at: clock::from_text(&updated).map_err(unexpected)?,
                        })
                    })
                    .transpose()?;
                let supply_id = match op {
                    ReservationOp::Reserve { supply_id, .. } => Some(supply_id),
                    _ => current.as_ref().and_then(|r| r.supply_id),
                };
                let supply = match supply_id {
                    Some(id) => tx
                        .query_row(&format!("SELECT {COLS} FROM supplies WHERE id = ?1"), [id.to_string()], raw)
                        .optional()
                        .map_err(db_err)?
                        .map(from_raw)
                        .transpose()?,
                    None => None,
                };
                let p = plan(claim_id, op, current, supply, clock::now());
                if let Some(s) = &p.supply {
                    update_supply(&tx, s)?;
                }
                if let Some((r, insert)) = &p.reservation {
                    let sql = if *insert {
                        "INSERT INTO supply_reservations (claim_id, supply_id, amount, status, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                    } else {
                        "UPDATE supply_reservations SET supply_id = ?2, amount = ?3, status = ?4, created_at = ?5,
                         updated_at = ?6 WHERE claim_id = ?1"
                    };
                    tx.execute(
                        sql,
                        rusqlite::params![
                            r.claim_id.to_string(),
                            r.supply_id.map(|s| s.to_string()),
                            r.amount.to_string(),
                            r.status.as_str(),
                            clock::to_text(r.created_at),
                            clock::to_text(r.updated_at)
                        ],
                    )
                    .map_err(db_err)?;
                }
                if let Some(s) = &p.supply {
                    outbox::insert_sqlite(&tx, &ctx, &event_of(s)?).map_err(db_err)?;
                }
                tx.commit().map_err(db_err)?;
                Ok::<_, SupplyError>((p.outcome, p.supply.map(|s| s.id)))
            })
            .await?;
        if changed.is_some() {
            outbox::notify_written();
        }
        Ok((outcome, changed))
    }
}
