//! Claim processing (DESIGN flow 4), a consumer of `order.claimed` and `claim.released`.
//!
//! Processing converges a claim to the state its status calls for, one idempotent step at a
//! time, so redelivery or a crash anywhere only repeats steps that are already done:
//! - `pending`: mark the order claimed, reserve on the supply, settle, then `processed`
//!   (or `failed` with the reason when a step is refused);
//! - `processed`: consume the reservation and complete the order;
//! - `failed` / `released`: give back the reservation and reopen the order.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{Claim, ClaimError, ClaimStatus};
use crate::service::{ClaimService, claim_event};
use crate::store::ClaimStore;
use base::Step;

use crate::ports::{OrderClient, OrderStatus, SettlementClient, SupplyClient};
use base::clock;
use base::money::AssetRegistry;
use events::EventHandler;
use events::outbox::{EventContext, EventEnvelope};

/// The consumer group of claim processing.
pub const GROUP: &str = "claim-processor";

pub struct ClaimProcessor {
    store: Arc<dyn ClaimStore>,
    cache: Arc<cache::Cache>,
    orders: Arc<dyn OrderClient>,
    supplies: Arc<dyn SupplyClient>,
    settlement: Arc<dyn SettlementClient>,
    assets: AssetRegistry,
    region: String,
}

impl ClaimService {
    /// The processor over this service's claims.
    pub fn processor(
        &self,
        orders: Arc<dyn OrderClient>,
        supplies: Arc<dyn SupplyClient>,
        settlement: Arc<dyn SettlementClient>,
    ) -> ClaimProcessor {
        ClaimProcessor {
            store: self.store.clone(),
            cache: self.cache.clone(),
            orders,
            supplies,
            settlement,
            assets: self.assets.clone(),
            region: self.region.clone(),
        }
    }
}

impl ClaimProcessor {
    /// Brings the claim to where its status says it should be.
    #[tracing::instrument(skip_all, fields(claim.id = %claim_id))]
    pub async fn converge(&self, claim_id: Uuid, correlation_id: Option<String>) -> anyhow::Result<()> {
        let ctx = EventContext {
            region: self.region.clone(),
            correlation_id,
            actor_id: None,
            traceparent: base::trace::current(),
        };
        // A claim can change under us (released while processing); each pass re-reads it.
        for _ in 0..3 {
            let Some(claim) = self.store.get(claim_id).await.map_err(anyhow::Error::new)? else {
                tracing::warn!("event for an unknown claim; nothing to do");
                return Ok(());
            };
            match claim.status {
                ClaimStatus::Pending => match self.advance(&claim, &ctx).await? {
                    None => self.leave_pending(&claim, &ctx, None).await?,
                    Some(reason) => self.leave_pending(&claim, &ctx, Some(reason)).await?,
                },
                ClaimStatus::Processed => return self.finish(&claim, &ctx).await,
                ClaimStatus::Failed | ClaimStatus::Released => return self.compensate(&claim, &ctx).await,
            }
        }
        anyhow::bail!("claim {claim_id} did not settle after three passes")
    }

    /// The pending steps; `Some(reason)` when one is refused.
    async fn advance(&self, c: &Claim, ctx: &EventContext) -> anyhow::Result<Option<String>> {
        if let Step::Refused(r) = self.mark_claimed(c, ctx).await? {
            return Ok(Some(format!("order: {r}")));
        }
        if let Step::Refused(r) = self.supplies.reserve(c.id, c.supply_id, c.amount, ctx).await? {
            return Ok(Some(format!("supply: {r}")));
        }
        // Only checked here: the money moves once the claim is processed, so a claim released
        // meanwhile never keeps a payment.
        if let Step::Refused(r) = self.settlement.check(c.order_id, c.amount, ctx).await? {
            return Ok(Some(format!("settlement: {r}")));
        }
        Ok(None)
    }

    /// Marks the order claimed by `c`. An order can still be held by an earlier claim that has
    /// just failed or been released but not yet been undone; the unique index guarantees that
    /// claim is no longer live, so finish undoing it first and try again.
    async fn mark_claimed(&self, c: &Claim, ctx: &EventContext) -> anyhow::Result<Step> {
        // Usually the claim request marked it already: one read says so without locking the order
        // (only this claim's own undoing can take the mark away again).
        let held_by_this = |o: &crate::ports::OrderSnapshot| {
            o.claim_id == Some(c.id) && matches!(o.status, OrderStatus::Claimed | OrderStatus::Completed)
        };
        if self.orders.get(c.order_id).await?.is_some_and(|o| held_by_this(&o)) {
            return Ok(Step::Done);
        }
        let step = self.orders.mark_claimed(c.order_id, c.id, c.order_version, ctx).await?;
        if step == Step::Done {
            return Ok(step);
        }
        let holder =
            self.orders.get(c.order_id).await?.filter(|o| o.status == OrderStatus::Claimed).and_then(|o| o.claim_id);
        match holder {
            Some(earlier) if earlier != c.id => {
                tracing::info!(claim.earlier = %earlier, "order still held by an earlier claim; undoing it first");
                Box::pin(self.converge(earlier, ctx.correlation_id.clone())).await?;
                self.orders.mark_claimed(c.order_id, c.id, c.order_version, ctx).await
            }
            _ => Ok(step),
        }
    }

    /// `pending -> processed`, or `-> failed` with a reason. Losing to a release is fine: the
    /// next pass compensates.
    async fn leave_pending(&self, c: &Claim, ctx: &EventContext, failure: Option<String>) -> anyhow::Result<()> {
        let assets = self.assets.clone();
        let failed = failure.is_some();
        let result = self
            .store
            .modify(
                c.id,
                ctx,
                Box::new(move |claim| match failure {
                    None => {
                        claim.process(clock::now())?;
                        Ok(claim_event(&assets, "claim.processed", claim)?)
                    }
                    Some(reason) => {
                        claim.fail(reason)?;
                        Ok(claim_event(&assets, "claim.failed", claim)?)
                    }
                }),
            )
            .await;
        let stale = vec![crate::keys::claim(c.id), crate::keys::claim_of_order(c.order_id)];
        self.cache.invalidate(stale).await;
        match result {
            Ok(claim) => {
                let outcome = if failed { "failed" } else { "processed" };
                metrics::counter!("claims_processed_total", "outcome" => outcome).increment(1);
                let lag = (clock::now() - claim.claimed_at).as_seconds_f64();
                metrics::histogram!("claim_processing_lag_seconds").record(lag);
                if failed {
                    tracing::warn!(reason = claim.failure_reason.as_deref().unwrap_or(""), "claim failed");
                } else {
                    tracing::info!(lag_ms = lag * 1000.0, "claim processed");
                }
                Ok(())
            }
            Err(ClaimError::NotPending(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn finish(&self, c: &Claim, ctx: &EventContext) -> anyhow::Result<()> {
        if let Step::Refused(r) = self.settlement.settle(c.id, c.order_id, c.user_id, c.amount, ctx).await? {
            anyhow::bail!("processed claim cannot be settled: {r}");
        }
        if let Step::Refused(r) = self.supplies.consume(c.id, ctx).await? {
            anyhow::bail!("processed claim cannot consume its reservation: {r}");
        }
        if let Step::Refused(r) = self.orders.complete(c.order_id, c.id, ctx).await? {
            anyhow::bail!("processed claim cannot complete its order: {r}");
        }
        Ok(())
    }

    async fn compensate(&self, c: &Claim, ctx: &EventContext) -> anyhow::Result<()> {
        if let Step::Refused(r) = self.supplies.release(c.id, ctx).await? {
            anyhow::bail!("cannot give back the reservation of a {} claim: {r}", c.status.as_str());
        }
        self.orders.reopen(c.order_id, c.id, ctx).await?;
        Ok(())
    }
}

#[async_trait]
impl EventHandler for ClaimProcessor {
    fn group(&self) -> &'static str {
        GROUP
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(event_type, "order.claimed" | "claim.released")
    }

    /// Claims are independent of each other, and processing converges on a claim's status
    /// whatever order its events arrive in.
    fn concurrency(&self) -> usize {
        16
    }

    async fn handle(&self, event: &EventEnvelope) -> anyhow::Result<()> {
        let claim_id: Uuid = event.data["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{} event {} carries no claim id", event.event_type, event.id))?;
        self.converge(claim_id, event.correlation_id.clone()).await
    }
}
