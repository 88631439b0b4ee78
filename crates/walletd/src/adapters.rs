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
        Ok(self.0.current_row(id).await?.map(|o| OrderSnapshot {
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

/// An order's status as the claim service sees it.
pub(crate) fn status_of(s: order::domain::OrderStatus) -> OrderStatus {
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

/// Settlement through the wallet, in process.
pub struct Settlement(pub Arc<wallet::WalletService>);

#[async_trait]
impl SettlementClient for Settlement {
    async fn check(&self, order_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<Step> {
        self.0.check_settlement(order_id, amount, ctx).await
    }

    async fn settle(
        &self,
        claim_id: Uuid,
        order_id: Uuid,
        shopper: Uuid,
        amount: Decimal,
        ctx: &EventContext,
    ) -> anyhow::Result<Step> {
        self.0.settle(claim_id, order_id, shopper, amount, ctx).await
    }
}

/// The order's funds through the wallet, in process.
pub struct Funds(pub Arc<wallet::WalletService>);

#[async_trait]
impl order::service::Funds for Funds {
    async fn hold(
        &self,
        buyer: Uuid,
        currency: &str,
        amount: Decimal,
        order_id: Uuid,
        ctx: &EventContext,
    ) -> anyhow::Result<Option<Uuid>> {
        self.0.hold_for_order(buyer, currency, amount, order_id, ctx).await
    }

    async fn set_amount(&self, hold_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<bool> {
        self.0.set_hold_amount(hold_id, amount, ctx).await
    }

    async fn release(&self, hold_id: Uuid, ctx: &EventContext) -> anyhow::Result<()> {
        self.0.release_hold(hold_id, ctx).await
    }
}

/// The users identity knows, for the wallet.
pub struct Users(pub identity::IdentityStore);

#[async_trait]
impl wallet::Users for Users {
    async fn exists(&self, id: Uuid) -> anyhow::Result<bool> {
        Ok(self.0.get_user(id).await?.is_some())
    }
}
