//! Orders in PostgreSQL.

use std::collections::HashMap;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Guard, Mutation, OrderFilter, OrderStore, apply, check_guard};
use crate::domain::{Order, OrderError, OrderItem, OrderStatus};
use events::outbox::{self, EventContext, NewEvent};

const COLS: &str = "id, user_id, currency, amount, status, claim_id, version, created_at, updated_at, hold_id";

pub struct PgOrderStore {
    pool: Pool,
}

impl PgOrderStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, OrderError> {
        self.pool.get().await.map_err(|e| OrderError::Unexpected(anyhow::Error::new(e).context("PostgreSQL pool")))
    }
}

fn db_err(e: tokio_postgres::Error) -> OrderError {
    OrderError::Unexpected(anyhow::Error::new(e))
}

fn from_row(r: &Row) -> Result<Order, OrderError> {
    let status: String = r.get(4);
    Ok(Order {
        id: r.get(0),
        user_id: r.get(1),
        currency: r.get(2),
        amount: r.get(3),
        status: OrderStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown order status {status}"))?,
        claim_id: r.get(5),
        version: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
        hold_id: r.get(9),
        items: Vec::new(),
    })
}

async fn load_items(client: &impl deadpool_postgres::GenericClient, orders: &mut [Order]) -> Result<(), OrderError> {
    if orders.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let rows = storage::pg::query(
        client,
        "SELECT order_id, id, product_id, product_name, price, quantity FROM order_items
             WHERE order_id = ANY($1) ORDER BY order_id, position",
        &[&ids],
    )
    .await
    .map_err(db_err)?;
    let mut by_order: HashMap<Uuid, Vec<OrderItem>> = HashMap::new();
    for r in rows {
        by_order.entry(r.get(0)).or_default().push(OrderItem {
            id: r.get(1),
            product_id: r.get(2),
            product_name: r.get(3),
            price: r.get(4),
            quantity: r.get(5),
        });
    }
    for o in orders {
        o.items = by_order.remove(&o.id).unwrap_or_default();
    }
    Ok(())
}

async fn write_items(tx: &deadpool_postgres::Transaction<'_>, order: &Order) -> Result<(), OrderError> {
    storage::pg::execute(tx, "DELETE FROM order_items WHERE order_id = $1", &[&order.id]).await.map_err(db_err)?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO order_items (id, order_id, position, product_id, product_name, price, quantity)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(db_err)?;
    for (i, item) in order.items.iter().enumerate() {
        let position = i as i32;
        tx.execute(
            &stmt,
            &[&item.id, &order.id, &position, &item.product_id, &item.product_name, &item.price, &item.quantity],
        )
        .await
        .map_err(db_err)?;
    }
    Ok(())
}

#[async_trait]
impl OrderStore for PgOrderStore {
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.insert"))]
    async fn insert(&self, o: &Order, event: &NewEvent, ctx: &EventContext) -> Result<(), OrderError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        storage::pg::execute(
            &tx,
            &format!("INSERT INTO orders ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"),
            &[
                &o.id,
                &o.user_id,
                &o.currency,
                &o.amount,
                &o.status.as_str(),
                &o.claim_id,
                &o.version,
                &o.created_at,
                &o.updated_at,
                &o.hold_id,
            ],
        )
        .await
        .map_err(db_err)?;
        write_items(&tx, o).await?;
        outbox::insert_pg(&tx, ctx, event).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        outbox::notify_written();
        Ok(())
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.get_row"))]
    async fn get_row(&self, id: Uuid) -> Result<Option<Order>, OrderError> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLS} FROM orders WHERE id = $1");
        storage::pg::query_opt(&client, &sql, &[&id]).await.map_err(db_err)?.as_ref().map(from_row).transpose()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.get"))]
    async fn get(&self, id: Uuid) -> Result<Option<Order>, OrderError> {
        let client = self.client().await?;
        let Some(row) = storage::pg::query_opt(&client, &format!("SELECT {COLS} FROM orders WHERE id = $1"), &[&id])
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let mut orders = [from_row(&row)?];
        load_items(&client, &mut orders).await?;
        let [order] = orders;
        Ok(Some(order))
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.modify"))]
    async fn modify(&self, id: Uuid, guard: Guard, ctx: &EventContext, change: Mutation) -> Result<Order, OrderError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let row = storage::pg::query_opt(&tx, &format!("SELECT {COLS} FROM orders WHERE id = $1 FOR UPDATE"), &[&id])
            .await
            .map_err(db_err)?
            .ok_or(OrderError::NotFound)?;
        let mut current = [from_row(&row)?];
        load_items(&tx, &mut current).await?;
        let [current] = current;
        check_guard(&current, &guard)?;
        let (order, write) = apply(current, change)?;
        let Some((event, items_changed)) = write else { return Ok(order) };
        storage::pg::execute(
            &tx,
            "UPDATE orders SET amount = $2, status = $3, claim_id = $4, version = $5, updated_at = $6 WHERE id = $1",
            &[&order.id, &order.amount, &order.status.as_str(), &order.claim_id, &order.version, &order.updated_at],
        )
        .await
        .map_err(db_err)?;
        if items_changed {
            write_items(&tx, &order).await?;
        }
        outbox::insert_pg(&tx, ctx, &event).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        outbox::notify_written();
        Ok(order)
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.get_many"))]
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<Order>, OrderError> {
        let client = self.client().await?;
        let rows = storage::pg::query(&client, &format!("SELECT {COLS} FROM orders WHERE id = ANY($1)"), &[&ids])
            .await
            .map_err(db_err)?;
        let mut orders = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
        load_items(&client, &mut orders).await?;
        Ok(orders)
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "order.list_ids"))]
    async fn list_ids(&self, f: &OrderFilter) -> Result<Vec<Uuid>, OrderError> {
        let page = f.page();
        page.fetch_pg(&**self.client().await?).await.map_err(OrderError::Unexpected)
    }
}
