//! Claims in PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{COLS, ClaimFilter, ClaimStore, Mutation, apply};
use crate::domain::{Claim, ClaimError, ClaimStatus};
use events::outbox::{self, EventContext, NewEvent};
use storage::is_unique_violation;

pub struct PgClaimStore {
    pool: Pool,
}

impl PgClaimStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ClaimError> {
        self.pool.get().await.map_err(|e| ClaimError::Unexpected(anyhow::Error::new(e).context("PostgreSQL pool")))
    }
}

fn db_err(e: tokio_postgres::Error) -> ClaimError {
    ClaimError::Unexpected(anyhow::Error::new(e))
}

fn from_row(r: &Row) -> Result<Claim, ClaimError> {
    let status: String = r.get(7);
    Ok(Claim {
        id: r.get(0),
        order_id: r.get(1),
        user_id: r.get(2),
        buyer_id: r.get(3),
        supply_id: r.get(4),
        currency: r.get(5),
        amount: r.get(6),
        status: ClaimStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown claim status {status}"))?,
        failure_reason: r.get(8),
        claimed_at: r.get(9),
        processed_at: r.get(10),
        updated_at: r.get(11),
        version: r.get(12),
        order_version: r.get(13),
    })
}

#[async_trait]
impl ClaimStore for PgClaimStore {
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.insert"))]
    async fn insert(&self, c: &Claim, event: &NewEvent, ctx: &EventContext) -> Result<(), ClaimError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let inserted = storage::pg::execute(
            &tx,
            &format!(
                "INSERT INTO claims ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            &[
                &c.id,
                &c.order_id,
                &c.user_id,
                &c.buyer_id,
                &c.supply_id,
                &c.currency,
                &c.amount,
                &c.status.as_str(),
                &c.failure_reason,
                &c.claimed_at,
                &c.processed_at,
                &c.updated_at,
                &c.version,
                &c.order_version,
            ],
        )
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Err(ClaimError::AlreadyClaimed),
            other => other.map_err(db_err)?,
        };
        outbox::insert_pg(&tx, ctx, event).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        outbox::notify_written();
        Ok(())
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.get"))]
    async fn get(&self, id: Uuid) -> Result<Option<Claim>, ClaimError> {
        let client = self.client().await?;
        let row = storage::pg::query_opt(&client, &format!("SELECT {COLS} FROM claims WHERE id = $1"), &[&id])
            .await
            .map_err(db_err)?;
        row.as_ref().map(from_row).transpose()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.latest_for_order"))]
    async fn latest_for_order(&self, order_id: Uuid) -> Result<Option<Claim>, ClaimError> {
        let client = self.client().await?;
        let row = storage::pg::query_opt(
            &client,
            &format!("SELECT {COLS} FROM claims WHERE order_id = $1 ORDER BY id DESC LIMIT 1"),
            &[&order_id],
        )
        .await
        .map_err(db_err)?;
        row.as_ref().map(from_row).transpose()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.modify"))]
    async fn modify(&self, id: Uuid, ctx: &EventContext, change: Mutation) -> Result<Claim, ClaimError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let row = storage::pg::query_opt(&tx, &format!("SELECT {COLS} FROM claims WHERE id = $1 FOR UPDATE"), &[&id])
            .await
            .map_err(db_err)?
            .ok_or(ClaimError::NotFound)?;
        let (c, event) = apply(from_row(&row)?, change)?;
        storage::pg::execute(
            &tx,
            "UPDATE claims SET status = $2, failure_reason = $3, processed_at = $4, updated_at = $5, version = $6
             WHERE id = $1",
            &[&c.id, &c.status.as_str(), &c.failure_reason, &c.processed_at, &c.updated_at, &c.version],
        )
        .await
        .map_err(db_err)?;
        outbox::insert_pg(&tx, ctx, &event).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        outbox::notify_written();
        Ok(c)
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.get_many"))]
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<Claim>, ClaimError> {
        let client = self.client().await?;
        let rows = storage::pg::query(&client, &format!("SELECT {COLS} FROM claims WHERE id = ANY($1)"), &[&ids])
            .await
            .map_err(db_err)?;
        rows.iter().map(from_row).collect()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "claim.list_ids"))]
    async fn list_ids(&self, f: &ClaimFilter) -> Result<Vec<Uuid>, ClaimError> {
        let page = f.page();
        page.fetch_pg(&**self.client().await?).await.map_err(ClaimError::Unexpected)
    }
}
