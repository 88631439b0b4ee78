//! Supplies in PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio_postgres::Row;
use uuid::Uuid;

use rust_decimal::Decimal;

use super::{EventFn, Guard, Mutation, SupplyFilter, SupplyStore, apply};
use crate::domain::{Supply, SupplyError, SupplyStatus};
use crate::reservation::{Reservation, ReservationOp, ReservationStatus, plan};
use base::Step;
use events::outbox::{self, EventContext, NewEvent};

const COLS: &str = "id, user_id, currency, amount, reserved, status, version, created_at, updated_at";

pub struct PgSupplyStore {
    pool: Pool,
}

impl PgSupplyStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, SupplyError> {
        self.pool.get().await.map_err(|e| SupplyError::Unexpected(anyhow::Error::new(e).context("PostgreSQL pool")))
    }
}

fn db_err(e: tokio_postgres::Error) -> SupplyError {
    SupplyError::Unexpected(anyhow::Error::new(e))
}

fn from_row(r: &Row) -> Result<Supply, SupplyError> {
    let status: String = r.get(5);
    Ok(Supply {
        id: r.get(0),
        user_id: r.get(1),
        currency: r.get(2),
        amount: r.get(3),
        reserved: r.get(4),
        status: SupplyStatus::parse(&status).ok_or_else(|| anyhow::anyhow!("unknown supply status {status}"))?,
        version: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
    })
}

#[async_trait]
impl SupplyStore for PgSupplyStore {
    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.insert"))]
    async fn insert(&self, s: &Supply, event: &NewEvent, ctx: &EventContext) -> Result<(), SupplyError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        storage::pg::execute(
            &tx,
            &format!("INSERT INTO supplies ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
            &[
                &s.id,
                &s.user_id,
                &s.currency,
                &s.amount,
                &s.reserved,
                &s.status.as_str(),
                &s.version,
                &s.created_at,
                &s.updated_at,
            ],
        )
        .await
        .map_err(db_err)?;
        outbox::insert_pg(&tx, ctx, event).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        outbox::notify_written();
        Ok(())
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.get"))]
    async fn get(&self, id: Uuid) -> Result<Option<Supply>, SupplyError> {
        let client = self.client().await?;
        let row = storage::pg::query_opt(&client, &format!("SELECT {COLS} FROM supplies WHERE id = $1"), &[&id])
            .await
            .map_err(db_err)?;
        row.as_ref().map(from_row).transpose()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.modify"))]
    async fn modify(
        &self,
        id: Uuid,
        guard: Guard,
        ctx: &EventContext,
        change: Mutation,
    ) -> Result<Supply, SupplyError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let row = storage::pg::query_opt(&tx, &format!("SELECT {COLS} FROM supplies WHERE id = $1 FOR UPDATE"), &[&id])
            .await
            .map_err(db_err)?
            .ok_or(SupplyError::NotFound)?;
        let (s, event) = apply(from_row(&row)?, &guard, change)?;
        storage::pg::execute(
            &tx,
            "UPDATE supplies SET amount = $2, reserved = $3, status = $4, version = $5, updated_at = $6 WHERE id = $1",
            &[&s.id, &s.amount, &s.reserved, &s.status.as_str(), &s.version, &s.updated_at],
        )
        .await
        .map_err(db_err)?;
        outbox::insert_pg(&tx, ctx, &event).await.map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        outbox::notify_written();
        Ok(s)
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.get_many"))]
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<Supply>, SupplyError> {
        let client = self.client().await?;
        let rows = storage::pg::query(&client, &format!("SELECT {COLS} FROM supplies WHERE id = ANY($1)"), &[&ids])
            .await
            .map_err(db_err)?;
        rows.iter().map(from_row).collect()
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.list_ids"))]
    async fn list_ids(&self, f: &SupplyFilter) -> Result<Vec<Uuid>, SupplyError> {
        let page = f.page();
        page.fetch_pg(&**self.client().await?).await.map_err(SupplyError::Unexpected)
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.find_available"))]
    async fn find_available(
        &self,
        user_id: Uuid,
        currency: &str,
        amount: Decimal,
    ) -> Result<Option<Uuid>, SupplyError> {
        let client = self.client().await?;
        let row = storage::pg::query_opt(
            &client,
            "SELECT id FROM supplies WHERE user_id = $1 AND currency = $2 AND status = 'active'
                 AND amount - reserved >= $3 ORDER BY amount - reserved DESC, id LIMIT 1",
            &[&user_id, &currency, &amount],
        )
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| r.get(0)))
    }

    #[tracing::instrument(target = "store", name = "store", skip_all, fields(db.operation = "supply.reservation_step"))]
    async fn reservation_step(
        &self,
        claim_id: Uuid,
        op: ReservationOp,
        ctx: &EventContext,
        event_of: EventFn,
    ) -> Result<(Step, Option<Uuid>), SupplyError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        let current = storage::pg::query_opt(
            &tx,
            "SELECT supply_id, amount, status, created_at, updated_at FROM supply_reservations
                 WHERE claim_id = $1 FOR UPDATE",
            &[&claim_id],
        )
        .await
        .map_err(db_err)?
        .map(|r| -> Result<Reservation, SupplyError> {
            let status: String = r.get(2);
            Ok(Reservation {
                claim_id,
                supply_id: r.get(0),
                amount: r.get(1),
                status: ReservationStatus::parse(&status)
                    .ok_or_else(|| anyhow::anyhow!("unknown reservation status {status}"))?,
                created_at: r.get(3),
                updated_at: r.get(4),
            })
        })
        .transpose()?;
        let supply_id = match op {
            ReservationOp::Reserve { supply_id, .. } => Some(supply_id),
            _ => current.as_ref().and_then(|r| r.supply_id),
        };
        let supply = match supply_id {
            Some(id) => {
                storage::pg::query_opt(&tx, &format!("SELECT {COLS} FROM supplies WHERE id = $1 FOR UPDATE"), &[&id])
                    .await
                    .map_err(db_err)?
                    .as_ref()
                    .map(from_row)
                    .transpose()?
            }
            None => None,
        };
        let p = plan(claim_id, op, current, supply, base::clock::now());
        if let Some(s) = &p.supply {
            storage::pg::execute(&tx,
                "UPDATE supplies SET amount = $2, reserved = $3, status = $4, version = $5, updated_at = $6 WHERE id = $1",
                &[&s.id, &s.amount, &s.reserved, &s.status.as_str(), &s.version, &s.updated_at],
            )
            .await
            .map_err(db_err)?;
        }
        if let Some((r, insert)) = &p.reservation {
            let sql = if *insert {
                "INSERT INTO supply_reservations (claim_id, supply_id, amount, status, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)"
            } else {
                "UPDATE supply_reservations SET supply_id = $2, amount = $3, status = $4, created_at = $5, updated_at = $6
                 WHERE claim_id = $1"
            };
            tx.execute(sql, &[&r.claim_id, &r.supply_id, &r.amount, &r.status.as_str(), &r.created_at, &r.updated_at])
                .await
                .map_err(db_err)?;
        }
        if let Some(s) = &p.supply {
            outbox::insert_pg(&tx, ctx, &event_of(s)?).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        if p.supply.is_some() {
            outbox::notify_written();
        }
        Ok((p.outcome, p.supply.map(|s| s.id)))
    }
}
