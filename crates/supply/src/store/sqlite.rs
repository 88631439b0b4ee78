//! Supplies in the embedded SQLite database. Amounts are stored as decimal text.

use std::str::FromStr;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params_from_iter};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{Guard, Mutation, SupplyFilter, SupplyStore, check_guard};
use crate::domain::{Supply, SupplyError, SupplyStatus};
use platform::clock;
use platform::outbox::{self, EventContext, NewEvent};
use platform::sqlite::SqlitePool;

const COLS: &str = "id, user_id, currency, amount, reserved, status, version, created_at, updated_at";

pub struct SqliteSupplyStore {
    pool: SqlitePool,
}

impl SqliteSupplyStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
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
            .await
    }

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
                let mut s = from_raw(row)?;
                check_guard(&s, &guard)?;
                s.version += 1;
                s.updated_at = clock::now();
                let event = change(&mut s)?;
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
                outbox::insert_sqlite(&tx, &ctx, &event).map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok(s)
            })
            .await
    }

    async fn list(&self, f: &SupplyFilter) -> Result<Vec<Supply>, SupplyError> {
        let mut sql = format!("SELECT {COLS} FROM supplies WHERE status <> 'deleted'");
        let mut params: Vec<String> = Vec::new();
        let mut add = |clause: &str, value: String| {
            params.push(value);
            sql.push_str(&format!(" AND {clause} ?{}", params.len()));
        };
        if let Some(u) = f.user_id {
            add("user_id =", u.to_string());
        }
        if let Some(c) = &f.currency {
            add("currency =", c.clone());
        }
        if let Some(s) = f.status {
            add("status =", s.as_str().to_string());
        }
        if let Some(b) = f.before {
            add("id <", b.to_string());
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", f.limit.clamp(1, 1000)));
        self.pool
            .call(move |c| {
                let mut st = c.prepare_cached(&sql).map_err(db_err)?;
                let rows = st.query_map(params_from_iter(params.iter()), raw).map_err(db_err)?;
                rows.map(|r| r.map_err(db_err).and_then(from_raw)).collect()
            })
            .await
    }
}
