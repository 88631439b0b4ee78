//! The claim service's ports (DESIGN D1): what it asks of orders, supplies and the wallet, as small
//! traits. walletd wires adapters over the in-process services when co-located (and gRPC clients
//! when not, later). Every step is idempotent, keyed by the claim it serves, so a redelivered event
//! has one effect.

use async_trait::async_trait;
use base::Step;
use events::EventContext;
use rust_decimal::Decimal;
use uuid::Uuid;

/// An order's status as the claim service sees it (shown in messages as its name in lower case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Pending,
    Claimed,
    Completed,
    Cancelled,
    Deleted,
}

/// What the claim service needs to know about an order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderSnapshot {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    pub amount: Decimal,
    pub status: OrderStatus,
    pub claim_id: Option<Uuid>,
    pub version: i64,
}

/// The order service as the claim service sees it.
#[async_trait]
pub trait OrderClient: Send + Sync {
    async fn get(&self, id: Uuid) -> anyhow::Result<Option<OrderSnapshot>>;
    /// `pending -> claimed` for this claim; with `at_version`, only if the order is still at that
    /// version (the one the claim was made against).
    async fn mark_claimed(
        &self,
        order_id: Uuid,
        claim_id: Uuid,
        at_version: Option<i64>,
        ctx: &EventContext,
    ) -> anyhow::Result<Step>;
    /// `claimed -> completed` for this claim.
    async fn complete(&self, order_id: Uuid, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step>;
    /// `claimed -> pending` if this claim holds the order; otherwise nothing.
    async fn reopen(&self, order_id: Uuid, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step>;
}

/// The supply service as the claim service sees it.
#[async_trait]
pub trait SupplyClient: Send + Sync {
    /// An active supply of `user_id` in `currency` with at least `amount` available.
    async fn find_available(&self, user_id: Uuid, currency: &str, amount: Decimal) -> anyhow::Result<Option<Uuid>>;
    /// Reserves `amount` on the supply for the claim, only if available suffices.
    async fn reserve(
        &self,
        claim_id: Uuid,
        supply_id: Uuid,
        amount: Decimal,
        ctx: &EventContext,
    ) -> anyhow::Result<Step>;
    /// Turns the claim's reservation into consumption: `amount` and `reserved` both drop.
    async fn consume(&self, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step>;
    /// Gives back the claim's reservation, if it has one that is not consumed.
    async fn release(&self, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step>;
}

/// Moves the buyer's held funds to the shopper when a claim is processed (the wallet service): the
/// order's hold, of exactly the claim's amount, is posted to the claimer, once per claim.
#[async_trait]
pub trait SettlementClient: Send + Sync {
    /// Whether the order's funds are held for exactly `amount` (before the claim is processed);
    /// a hold left at another amount by a refused change of items is brought to it.
    async fn check(&self, order_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<Step>;
    /// Posts the hold to the shopper; done when it was posted before.
    async fn settle(
        &self,
        claim_id: Uuid,
        order_id: Uuid,
        shopper_id: Uuid,
        amount: Decimal,
        ctx: &EventContext,
    ) -> anyhow::Result<Step>;
}
