//! What orders and claims ask of the wallet, as steps (the same whether they call in process or
//! over gRPC): an order's hold placed, moved and released; a claim's settlement checked and posted.

use base::Step;
use events::EventContext;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::WalletService;
use crate::domain::{Hold, HoldStatus, WalletError};

/// Where an order's funds stand for a claim.
enum Funding {
    /// Posted already (this claim's settlement, repeated).
    Posted,
    /// Pending at the claim's amount.
    Held(Hold),
    Refused(String),
}

impl WalletService {
    /// Holds the buyer's funds for an order; `None` when the available balance does not cover it.
    pub async fn hold_for_order(
        &self,
        buyer: Uuid,
        currency: &str,
        amount: Decimal,
        order_id: Uuid,
        ctx: &EventContext,
    ) -> anyhow::Result<Option<Uuid>> {
        match self.place_hold(buyer, currency, amount, Some(order_id), ctx).await {
            Ok(h) => Ok(Some(h.id)),
            Err(WalletError::InsufficientFunds) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets a pending hold's amount; `false` when the buyer's available balance does not cover it.
    pub async fn set_hold_amount(&self, hold_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<bool> {
        match self.adjust_hold(hold_id, amount, ctx).await {
            Ok(_) => Ok(true),
            Err(WalletError::InsufficientFunds) => Ok(false),
            // The order moved on (cancelled, or paid out) since the caller read it: its own change
            // will be refused under its row lock, which is where that is decided.
            Err(WalletError::HoldNotPending(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Voids a pending hold; done when it is no longer pending.
    pub async fn release_hold(&self, hold_id: Uuid, ctx: &EventContext) -> anyhow::Result<()> {
        match self.resolve_hold(hold_id, None, None, ctx).await {
            Ok(_) | Err(WalletError::HoldNotPending(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the order's funds are held for exactly `amount` (a hold left at another amount by
    /// a refused change of items is brought to it), or posted already.
    pub async fn check_settlement(&self, order_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<Step> {
        Ok(match self.funding(order_id, amount, ctx).await? {
            Funding::Posted | Funding::Held(_) => Step::Done,
            Funding::Refused(r) => Step::Refused(r),
        })
    }

    /// Posts the order's hold, of exactly the claim's amount, to the shopper, once per claim (a hold
    /// already posted for the order is this claim's settlement, repeated).
    pub async fn settle(
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
            match self.post_hold(pending.id, shopper, amount, Some(claim_id.to_string()), ctx).await {
                Ok(_) => return Ok(Step::Done),
                // Posted or voided meanwhile, or moved by a refused change of items: look again.
                Err(WalletError::HoldNotPending(_) | WalletError::HoldChanged) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("the hold of order {order_id} kept changing")
    }

    /// The order's hold, at the claim's amount. The claim holds the order at the version it read,
    /// so the order's amount is the claim's: a pending hold of another amount is a refused change of
    /// items being undone (a change moves the hold first and puts it back when the order refuses
    /// it). That undoing may still be on its way; this brings the hold to the order's amount now
    /// instead of failing the claim over it (more needs the buyer's available balance).
    async fn funding(&self, order_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<Funding> {
        for _ in 0..3 {
            let holds = self.holds_of_order(order_id).await?;
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
            match self.adjust_hold(pending.id, amount, ctx).await {
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
