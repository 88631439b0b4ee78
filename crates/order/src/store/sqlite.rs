//! Orders in the embedded SQLite database. Amounts are stored as decimal text.

use std::str::FromStr;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params_from_iter};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{Guard, Mutation, OrderFilter, OrderStore, apply, check_guard};
use crate::domain::{Order, OrderError, OrderItem, OrderStatus};
use base::clock;
use events::outbox::{self, EventContext, NewEvent};
use storage::SqlitePool;

const COLS: &str = "id, user_id, currency, amount, status, claim_id, version, created_at, updated_at, hold_id";

pub struct SqliteOrderStore {
    pool: SqlitePool,
}

impl SqliteOrderStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn db_err(e: rusqlite::Error) -> OrderError {
    OrderError::Unexpected(anyhow::Error::new(e))
}

type RawRow = (String, String, String, String, String, Option<String>, i64, String, String, Option<String>);

fn raw(r: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
}

fn from_raw(r: RawRow) -> Result<Order, OrderError> {
    let (id, user_id, currency, amount, status, claim_id, version, created_at, updated_at, hold_id) = r;
    let parse = || -> anyhow::Result<Order> {
        Ok(Order {
            id: id.parse()?,
            user_id: user_id.parse()?,
            currency,
            amount: Decimal::from_str(&amount)?,
            status: OrderStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown order status {status}"))?,
            claim_id: claim_id.map(|c| c.parse()).transpose()?,
            version,
            created_at: clock::from_text(&created_at)?,
            updated_at: clock::from_text(&updated_at)?,
            hold_id: hold_id.map(|h| h.parse()).transpose()?,
            items: Vec::new(),
        })
    };
    parse().map_err(OrderError::Unexpected)
}

fn load_items(c: &Connection, order: &mut Order) -> Result<(), OrderError> {
    let mut st = c
        .prepare_cached(
            "SELECT id, product_id, product_name, price, quantity FROM order_items WHERE order_id = ?1 ORDER BY position",
        )
        .map_err(db_err)?;
    let rows = st
        .query_map([order.id.to_string()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get(4)?,
            ))
        })
        .map_err(db_err)?;
    order.items.clear();
    for row in rows {
        let (id, product_id, product_name, price, quantity) = row.map_err(db_err)?;
        order.items.push(OrderItem {
            id: id.parse().map_err(|e| OrderError::Unexpected(anyhow::Error::new(e)))?,
            product_id,
            product_name,
            price: Decimal::from_str(&price).map_err(|e| OrderError::Unexpected(anyhow::Error::new(e)))?,
            quantity,
        });
    }
    Ok(())
}

fn write_items(tx: &rusqlite::Transaction<'_>, order: &Order) -> Result<(), OrderError> {
    tx.execute("DELETE FROM order_items WHERE order_id = ?1", [order.id.to_string()]).map_err(db_err)?;
    let mut st = tx
        .prepare_cached(
            "INSERT INTO order_items (id, order_id, position, product_id, product_name, price, quantity)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(db_err)?;
    for (i, item) in order.items.iter().enumerate() {
        st.execute(rusqlite::params![
            item.id.to_string(),
            order.id.to_string(),
            i as i64,
            item.product_id,
            item.product_name,
            item.price.to_string(),
            item.quantity
        ])
        .map_err(db_err)?;
    }
    Ok(())
}

fn write_order(tx: &rusqlite::Transaction<'_>, o: &Order, insert: bool) -> Result<(), OrderError> {
    let sql = if insert {
        format!("INSERT INTO orders ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")
    } else {
        "UPDATE orders SET user_id = ?2, currency = ?3, amount = ?4, status = ?5, claim_id = ?6, version = ?7,
         created_at = ?8, updated_at = ?9, hold_id = ?10 WHERE id = ?1"
            .to_string()
    };
    tx.execute(
        &sql,
        rusqlite::params![
            o.id.to_string(),
            o.user_id.to_string(),
            o.currency,
            o.amount.to_string(),
            o.status.as_str(),
            o.claim_id.map(|c| c.to_string()),
            o.version,
            clock::to_text(o.created_at),
            clock::to_text(o.updated_at),
            o.hold_id.map(|h| h.to_string())
        ],
    )
    .map_err(db_err)?;
    Ok(())
}

/// The order's row, items left empty.
fn read_row(c: &rusqlite::Connection, id: Uuid) -> Result<Option<Order>, OrderError> {
    let row = c
        .prepare_cached(&format!("SELECT {COLS} FROM orders WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id.to_string()], raw).optional())
        .map_err(db_err)?;
    row.map(from_raw).transpose()
}
#[async_trait]
impl OrderStore for SqliteOrderStore {
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.insert"))]
    async fn insert(&self, o: &Order, event: &NewEvent, ctx: &EventContext) -> Result<(), OrderError> {
        let (o, event, ctx) = (o.clone(), event.clone(), ctx.clone());
        self.pool
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                write_order(&tx, &o, true)?;
                write_items(&tx, &o)?;
                outbox::insert_sqlite(&tx, &ctx, &event).map_err(db_err)?;
                tx.commit().map_err(db_err)
            })
            .await?;
        outbox::notify_written();
        Ok(())
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.get_row"))]
    async fn get_row(&self, id: Uuid) -> Result<Option<Order>, OrderError> {
        self.pool.call(move |c| read_row(c, id)).await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.get"))]
    async fn get(&self, id: Uuid) -> Result<Option<Order>, OrderError> {
        self.pool
            .call(move |c| {
                let Some(mut order) = read_row(c, id)? else { return Ok(None) };
                load_items(c, &mut order)?;
                Ok(Some(order))
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.modify"))]
    async fn modify(&self, id: Uuid, guard: Guard, ctx: &EventContext, change: Mutation) -> Result<Order, OrderError> {
        let ctx = ctx.clone();
        let (order, wrote) = self
            .pool
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
                let row = tx
                    .query_row(&format!("SELECT {COLS} FROM orders WHERE id = ?1"), [id.to_string()], raw)
                    .optional()
                    .map_err(db_err)?
                    .ok_or(OrderError::NotFound)?;
                let mut current = from_raw(row)?;
                load_items(&tx, &mut current)?;
                check_guard(&current, &guard)?;
                let (order, write) = apply(current, change)?;
                let Some((event, items_changed)) = write else { return Ok::<_, OrderError>((order, false)) };
                write_order(&tx, &order, false)?;
                if items_changed {
                    write_items(&tx, &order)?;
                }
                outbox::insert_sqlite(&tx, &ctx, &event).map_err(db_err)?;
                tx.commit().map_err(db_err)?;
                Ok((order, true))
            })
            .await?;
        if wrote {
            outbox::notify_written();
        }
        Ok(order)
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.get_many"))]
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<Order>, OrderError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = storage::sqlite::placeholders(1, ids.len());
        let sql = format!("SELECT {COLS} FROM orders WHERE id IN ({placeholders})");
        self.pool
            .call(move |c| {
                let rows: Vec<RawRow> = {
                    let mut st = c.prepare(&sql).map_err(db_err)?;
                    st.query_map(params_from_iter(ids.iter().map(Uuid::to_string)), raw)
                        .map_err(db_err)?
                        .collect::<Result<_, _>>()
                        .map_err(db_err)?
                };
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let mut order = from_raw(row)?;
                    load_items(c, &mut order)?;
                    out.push(order);
                }
                Ok(out)
            })
            .await
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.list_ids"))]
    async fn list_ids(&self, f: &OrderFilter) -> Result<Vec<Uuid>, OrderError> {
        let page = f.page();
        self.pool.call(move |c| page.fetch_sqlite(c)).await.map_err(OrderError::Unexpected)
    }
}
