//! The claim service's ports over the co-located supply and order services (DESIGN D1): the
//! in-process adapters walletd wires when one process runs them all.

use std::sync::Arc;

use async_trait::async_trait;
use base::Step;
use claim::ports::{OrderClient, OrderSnapshot, OrderStatus, SettlementClient, SupplyClient};
use events::EventContext;
use rust_decimal::Decimal;
use uuid::Uuid;

/// Orders, in process.
pub struct Orders(pub Arc<order::OrderService>);

#[async_trait]
impl OrderClient for Orders {
    async fn get(&self, id: Uuid) -> anyhow::Result<Option<OrderSnapshot>> {
        Ok(self.0.current(id).await?.map(|o| OrderSnapshot {
            id: o.id,
            user_id: o.user_id,
            currency: o.currency,
            amount: o.amount,
            status: status_of(o.status),
            claim_id: o.claim_id,
            version: o.version,
        }))
    }

    async fn mark_claimed(
        &self,
        order_id: Uuid,
        claim_id: Uuid,
        at_version: Option<i64>,
        ctx: &EventContext,
    ) -> anyhow::Result<Step> {
        self.0.mark_claimed(order_id, claim_id, at_version, ctx).await
    }

    async fn complete(&self, order_id: Uuid, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        self.0.complete(order_id, claim_id, ctx).await
    }

    async fn reopen(&self, order_id: Uuid, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        self.0.reopen(order_id, claim_id, ctx).await
    }
}

fn status_of(s: order::domain::OrderStatus) -> OrderStatus {
    use order::domain::OrderStatus as O;
    match s {
        O::Pending => OrderStatus::Pending,
        O::Claimed => OrderStatus::Claimed,
        O::Completed => OrderStatus::Completed,
        O::Cancelled => OrderStatus::Cancelled,
        O::Deleted => OrderStatus::Deleted,
    }
}

/// Supplies, in process.
pub struct Supplies(pub Arc<supply::SupplyService>);

#[async_trait]
impl SupplyClient for Supplies {
    async fn find_available(&self, user_id: Uuid, currency: &str, amount: Decimal) -> anyhow::Result<Option<Uuid>> {
        self.0.find_available(user_id, currency, amount).await
    }

    async fn reserve(
        &self,
        claim_id: Uuid,
        supply_id: Uuid,
        amount: Decimal,
        ctx: &EventContext,
    ) -> anyhow::Result<Step> {
        self.0.reserve(claim_id, supply_id, amount, ctx).await
    }

    async fn consume(&self, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        self.0.consume(claim_id, ctx).await
    }

    async fn release(&self, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        self.0.release(claim_id, ctx).await
    }
}

/// Settlement while the wallet service does not exist yet: nothing to move.
pub struct NoSettlement;

#[async_trait]
impl SettlementClient for NoSettlement {
    async fn settle(&self, _: Uuid, _: Uuid, _: Uuid, _: &str, _: Decimal, _: &EventContext) -> anyhow::Result<Step> {
        Ok(Step::Done)
    }
}
