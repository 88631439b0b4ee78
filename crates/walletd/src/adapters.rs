//! The claim service's ports over the co-located supply and order services (DESIGN D1): the
//! in-process adapters walletd wires when one process runs them all.

use std::sync::Arc;

use async_trait::async_trait;
use base::Step;
use claim::ports::{OrderClient, OrderSnapshot, OrderStatus, SettlementClient, SupplyClient};
use events::EventContext;
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet::domain::{HoldStatus, WalletError};

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

/// Settlement through the wallet, in process: the order's pending hold is posted to the claimer,
/// once (a hold already posted for the order is this claim's settlement, repeated).
pub struct Settlement(pub Arc<wallet::WalletService>);

/// Where an order's funds stand for a claim.
enum Funding {
    /// Posted already (this claim's settlement, repeated).
    Posted,
    /// Pending at the claim's amount.
    Held(wallet::domain::Hold),
    Refused(String),
}

impl Settlement {
    /// The order's hold, at the claim's amount. The claim holds the order at the version it read,
    /// so the order's amount is the claim's: a pending hold of another amount is a refused change of
    /// items being undone (a change moves the hold first and puts it back when the order refuses
    /// it). That undoing may still be on its way; this brings the hold to the order's amount now
    /// instead of failing the claim over it (more needs the buyer's available balance).
    async fn funding(&self, order_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<Funding> {
        for _ in 0..3 {
            let holds = self.0.holds_of_order(order_id).await?;
            if holds.iter().any(|h| h.status == HoldStatus::Posted) {
                return Ok(Funding::Posted);
            }
            let Some(pending) = holds.into_iter().find(|h| h.status == HoldStatus::Pending) else {
                return Ok(Funding::Refused("the order has no funds held".into()));
            };
            if pending.amount == amount {
                return Ok(Funding::Held(pending));
            }
            tracing::info!(hold.id = %pending.id, held = %pending.amount, %amount, "bringing the order's hold to the claim's amount");
            match self.0.adjust_hold(pending.id, amount, ctx).await {
                Ok(hold) => return Ok(Funding::Held(hold)),
                Err(WalletError::HoldNotPending(_)) => continue,
                Err(WalletError::InsufficientFunds) => {
                    return Ok(Funding::Refused(format!(
                        "the order's funds held ({}) are below the claim's amount ({amount}) and the buyer's balance does not cover it",
                        pending.amount
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("the hold of order {order_id} kept changing")
    }
}

#[async_trait]
impl SettlementClient for Settlement {
    async fn check(&self, order_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<Step> {
        Ok(match self.funding(order_id, amount, ctx).await? {
            Funding::Posted | Funding::Held(_) => Step::Done,
            Funding::Refused(r) => Step::Refused(r),
        })
    }

    async fn settle(
        &self,
        claim_id: Uuid,
        order_id: Uuid,
        shopper: Uuid,
        amount: Decimal,
        ctx: &EventContext,
    ) -> anyhow::Result<Step> {
        for _ in 0..3 {
            let pending = match self.funding(order_id, amount, ctx).await? {
                Funding::Posted => return Ok(Step::Done),
                Funding::Held(h) => h,
                Funding::Refused(r) => return Ok(Step::Refused(r)),
            };
            match self.0.post_hold(pending.id, shopper, amount, Some(claim_id.to_string()), ctx).await {
                Ok(_) => return Ok(Step::Done),
                // Posted or voided meanwhile, or moved by a refused change of items: look again.
                Err(WalletError::HoldNotPending(_) | WalletError::HoldChanged) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("the hold of order {order_id} kept changing")
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
        match self.0.place_hold(buyer, currency, amount, Some(order_id), ctx).await {
            Ok(h) => Ok(Some(h.id)),
            Err(WalletError::InsufficientFunds) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn set_amount(&self, hold_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<bool> {
        match self.0.adjust_hold(hold_id, amount, ctx).await {
            Ok(_) => Ok(true),
            Err(WalletError::InsufficientFunds) => Ok(false),
            // The order moved on (cancelled, or paid out) since the caller read it: its own change
            // will be refused under its row lock, which is where that is decided.
            Err(WalletError::HoldNotPending(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    async fn release(&self, hold_id: Uuid, ctx: &EventContext) -> anyhow::Result<()> {
        match self.0.resolve_hold(hold_id, None, None, ctx).await {
            Ok(_) | Err(WalletError::HoldNotPending(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
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
