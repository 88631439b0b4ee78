//! The reconciler between orders and their holds (DESIGN flow 2). Placing an order holds its amount
//! first and writes the order second, in two transactions (and, with the services apart, two
//! databases): a crash between them leaves a pending hold that no order owns. Changing or cancelling
//! an order and moving its hold are two steps as well. Every `WALLETD_RECONCILE_INTERVAL_SECS` this
//! job looks at the pending holds older than `WALLETD_RECONCILE_GRACE_SECS` (longer than a request
//! may take, so none is still being placed) and makes each follow its order: voided when the order
//! does not exist, is cancelled or deleted, or funds it with another hold; set to the order's amount
//! while the order is pending.

use std::sync::Arc;
use std::time::Duration;

use events::EventContext;
use order::OrderService;
use order::domain::OrderStatus;
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet::WalletService;
use wallet::domain::{Hold, WalletError};

/// Where the reconciler reads orders: the order service in this process, or over gRPC.
pub enum Orders {
    Local(Arc<OrderService>),
    Remote(Arc<crate::remote::RemoteOrders>),
}

/// What the reconciler needs of an order.
struct OrderFacts {
    status: OrderStatus,
    hold_id: Option<Uuid>,
    amount: Decimal,
}

impl Orders {
    async fn facts(&self, id: Uuid) -> anyhow::Result<Option<OrderFacts>> {
        match self {
            Orders::Local(orders) => Ok(orders.current_row(id).await?.map(|o| OrderFacts {
                status: o.status,
                hold_id: o.hold_id,
                amount: o.amount,
            })),
            Orders::Remote(orders) => {
                let Some(o) = orders.row(id).await? else { return Ok(None) };
                let status = crate::remote::order_status(&o.status)?;
                let hold_id = o.hold_id.as_deref().map(str::parse).transpose()?;
                Ok(Some(OrderFacts { status, hold_id, amount: o.amount.parse()? }))
            }
        }
    }
}

pub struct Reconciler {
    pub orders: Orders,
    pub wallet: Arc<WalletService>,
    pub region: String,
    pub interval: Duration,
    pub grace: Duration,
}

impl Reconciler {
    /// Passes every `interval` until `stop` turns true.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = format!("{e:#}"), "reconciling orders and holds failed; trying again later");
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                _ = stop.wait_for(|v| *v) => return,
            }
        }
    }

    /// One pass over every pending hold old enough, a page at a time; how many it repaired.
    pub async fn pass(&self) -> anyhow::Result<usize> {
        const PAGE: i64 = 500;
        let before = base::clock::now() - self.grace;
        let (mut repaired, mut after) = (0, None);
        loop {
            let page = self.wallet.pending_holds(before, after, PAGE).await?;
            for hold in &page {
                if self.repair(hold).await? {
                    repaired += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after = Some(last.id),
                _ => return Ok(repaired),
            }
        }
    }

    async fn repair(&self, hold: &Hold) -> anyhow::Result<bool> {
        let Some(order_id) = hold.order_id else { return Ok(false) };
        let ctx = EventContext {
            region: self.region.clone(),
            correlation_id: None,
            actor_id: None,
            traceparent: base::trace::current(),
        };
        let order = self.orders.facts(order_id).await?;
        let (void, amount) = match &order {
            None => (Some("its order does not exist"), None),
            Some(o) if o.hold_id != Some(hold.id) => (Some("its order is funded by another hold"), None),
            Some(o) if matches!(o.status, OrderStatus::Cancelled | OrderStatus::Deleted) => {
                (Some("its order is cancelled or deleted"), None)
            }
            Some(o) if matches!(o.status, OrderStatus::Pending | OrderStatus::Claimed) && o.amount != hold.amount => {
                (None, Some(o.amount))
            }
            Some(_) => return Ok(false),
        };
        let outcome = match (void, amount) {
            (Some(why), _) => {
                tracing::warn!(hold.id = %hold.id, order.id = %order_id, why, "voiding an orphaned hold");
                self.wallet.resolve_hold(hold.id, None, None, &ctx).await.map(|_| "voided")
            }
            (None, Some(amount)) => {
                tracing::warn!(hold.id = %hold.id, order.id = %order_id, %amount, "setting a hold to its order's amount");
                self.wallet.adjust_hold(hold.id, amount, &ctx).await.map(|_| "adjusted")
            }
            (None, None) => return Ok(false),
        };
        match outcome {
            Ok(what) => {
                metrics::counter!("wallet_holds_reconciled_total", "outcome" => what).increment(1);
                Ok(true)
            }
            // Resolved meanwhile, by the order's own step: nothing to repair.
            Err(WalletError::HoldNotPending(_)) => Ok(false),
            Err(WalletError::InsufficientFunds) => {
                metrics::counter!("wallet_holds_reconciled_total", "outcome" => "short").increment(1);
                tracing::error!(hold.id = %hold.id, order.id = %order_id, "the buyer's balance cannot cover the order's amount");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}
