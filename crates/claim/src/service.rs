//! The claim use cases shared by the HTTP handlers and the processor.

use base::ErrorCode;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Claim, ClaimError, ClaimStatus};
use crate::store::{self, ClaimFilter, ClaimStore};
use cache::Cache;
use web::Principal;

use crate::keys;
use crate::ports::{OrderClient, OrderSnapshot, OrderStatus, SupplyClient};
use base::Step;
use base::clock;
use base::money::{AssetRegistry, format_amount};
use events::outbox::{EventContext, NewEvent};
use storage::Database;
use storage::replica::{ReadPlan, Reads, Replica};
use web::extract::RequestId;
use web::{ApiError, FieldError, cursor};

/// Topic of claim lifecycle events; `order.claimed` goes to the order topic, keyed by the order.
pub const TOPIC: &str = "claim-events";
pub const ORDER_TOPIC: &str = "order-events";

/// A claim as clients and events see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClaimView {
    pub id: Uuid,
    pub order_id: Uuid,
    /// The claimer.
    pub user_id: Uuid,
    pub status: ClaimStatus,
    pub failure_reason: Option<String>,
    pub currency: String,
    pub amount: String,
    pub supply_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub claimed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub processed_at: Option<OffsetDateTime>,
    pub version: i64,
}

/// List parameters as received.
#[derive(Debug, Default)]
pub struct ListParams {
    pub user_id: Option<Uuid>,
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The claim service.
pub struct ClaimService {
    pub(crate) store: Arc<dyn ClaimStore>,
    /// Plain reads: the primary's store, or the region's replica's.
    reads: Reads<dyn ClaimStore>,
    pub(crate) cache: Arc<Cache>,
    orders: Arc<dyn OrderClient>,
    supplies: Arc<dyn SupplyClient>,
    pub(crate) assets: AssetRegistry,
    pub(crate) region: String,
}

impl ClaimService {
    pub fn new(
        db: &Database,
        cache: Arc<Cache>,
        orders: Arc<dyn OrderClient>,
        supplies: Arc<dyn SupplyClient>,
        assets: AssetRegistry,
        region: String,
    ) -> Self {
        let store = store::open(db);
        Self { reads: Reads::primary(store.clone()), store, cache, orders, supplies, assets, region }
    }

    /// Plain reads (a claim, a list) from `replica_db`, a streaming replica of the primary.
    pub fn with_replica(mut self, replica_db: &Database, replica: Arc<Replica>) -> Self {
        self.reads = Reads::primary(self.store.clone()).with_replica(store::open(replica_db), replica);
        self
    }

    pub fn view(&self, c: &Claim) -> ClaimView {
        view_of(&self.assets, c)
    }

    /// Claims a pending order for the caller. Every loser of a race gets 409 and nothing else.
    ///
    /// The claim row is the guard against two live claims (a unique index); the order is then
    /// marked claimed, at the version read here, before the 201: from then on the buyer can neither
    /// change nor cancel it until the claim fails or is released, whether or not this instance runs
    /// the processor. A buyer's change that slips in between fails the claim (409 `ORDER_CHANGED`).
    #[tracing::instrument(skip_all, fields(order.id = %order_id, user.id = %who.user_id))]
    pub async fn claim(&self, who: &Principal, rid: &RequestId, order_id: Uuid) -> Result<Claim, ApiError> {
        let order = self.orders.get(order_id).await?;
        let order = claimable(who, order)?;
        let Some(supply_id) = self.supplies.find_available(who.user_id, &order.currency, order.amount).await? else {
            return Err(ApiError::unprocessable_field(
                ErrorCode::InsufficientSupply,
                "order_id",
                format!("you have no active {} supply with {} available", order.currency, order.amount),
            ));
        };
        let claim =
            Claim::new(order.id, who.user_id, order.user_id, supply_id, order.currency, order.amount, clock::now())
                .at_order_version(order.version);
        let event = NewEvent::of("order.claimed", 1, ORDER_TOPIC, order.id, &self.view(&claim))?;
        let ctx = EventContext {
            region: self.region.clone(),
            correlation_id: rid.0.clone(),
            actor_id: Some(who.user_id),
            traceparent: base::trace::current(),
        };
        if let Err(e) = self.store.insert(&claim, &event, &ctx).await {
            metrics::counter!("claims_total", "outcome" => "lost").increment(1);
            return Err(e.into());
        }
        self.cache.invalidate(vec![keys::claim_of_order(order.id), keys::claim(claim.id)]).await;
        let marked = self.orders.mark_claimed(order.id, claim.id, Some(order.version), &ctx).await;
        match marked {
            Ok(Step::Done) => {
                metrics::counter!("claims_total", "outcome" => "won").increment(1);
                tracing::info!(claim.id = %claim.id, "order claimed");
                Ok(claim)
            }
            Ok(Step::Refused(reason)) => {
                metrics::counter!("claims_total", "outcome" => "lost").increment(1);
                tracing::info!(claim.id = %claim.id, %reason, "the order moved on before the claim held it");
                match self.fail(claim.id, format!("order: {reason}"), &ctx).await {
                    // Processing met the same refusal and failed it first.
                    Ok(_) | Err(ClaimError::NotPending(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                // Answer as a fresh look at the order would: claimed by another, gone, or changed.
                claimable(who, self.orders.get(order_id).await?)?;
                Err(ApiError::new(ErrorCode::OrderChanged, "the order changed while you claimed it; read it again"))
            }
            Err(e) => {
                // The order may or may not be marked: failing the claim lets processing reopen it
                // if it was. If even that fails, the processor settles the pending claim later.
                tracing::warn!(claim.id = %claim.id, error = %e, "could not mark the order claimed; failing the claim");
                if let Err(f) = self.fail(claim.id, "order: unreachable when claimed".into(), &ctx).await {
                    tracing::error!(claim.id = %claim.id, error = %f, "could not fail the claim; processing will settle it");
                }
                Err(ApiError::internal(e))
            }
        }
    }

    /// `pending -> failed` with the reason and its event (processing then undoes what it must).
    async fn fail(&self, id: Uuid, reason: String, ctx: &EventContext) -> Result<Claim, ClaimError> {
        let assets = self.assets.clone();
        let failed = self
            .store
            .modify(
                id,
                ctx,
                Box::new(move |c| {
                    c.fail(reason)?;
                    Ok(claim_event(&assets, "claim.failed", c)?)
                }),
            )
            .await?;
        self.cache.invalidate(vec![keys::claim(id), keys::claim_of_order(failed.order_id)]).await;
        Ok(failed)
    }

    /// A claim its claimer, the order's buyer or an admin may see; anyone else gets 404.
    pub async fn get(&self, who: &Principal, id: Uuid) -> Result<Claim, ApiError> {
        self.get_via(self.reads.plan().await, who, id).await
    }

    /// [`Self::get`] from where `plan` says (a change reads the primary).
    async fn get_via(&self, plan: ReadPlan<'_, dyn ClaimStore>, who: &Principal, id: Uuid) -> Result<Claim, ApiError> {
        let cached =
            self.cache.get_or_load_as(plan.cache, "claim", keys::claim(id), || plan.run(|s| s.get(id))).await?;
        cached.filter(|c| visible(who, c)).ok_or_else(|| ApiError::not_found("claim"))
    }

    /// The newest claim on an order, under the same visibility.
    pub async fn for_order(&self, who: &Principal, order_id: Uuid) -> Result<Claim, ApiError> {
        let plan = self.reads.plan().await;
        plan.run(|s| s.latest_for_order(order_id))
            .await?
            .filter(|c| visible(who, c))
            .ok_or_else(|| ApiError::not_found("claim"))
    }

    /// The claimer gives up a pending claim; the processor then frees the order.
    #[tracing::instrument(skip_all, fields(claim.id = %id))]
    pub async fn release(&self, who: &Principal, rid: &RequestId, id: Uuid) -> Result<Claim, ApiError> {
        let claim = self.get_via(ReadPlan::primary(&self.store), who, id).await?;
        if claim.user_id != who.user_id && !who.is_admin() {
            return Err(ApiError::forbidden("only the claimer can release a claim"));
        }
        let ctx = EventContext {
            region: self.region.clone(),
            correlation_id: rid.0.clone(),
            actor_id: Some(who.user_id),
            traceparent: base::trace::current(),
        };
        let assets = self.assets.clone();
        let released = self
            .store
            .modify(
                id,
                &ctx,
                Box::new(move |c| {
                    c.release()?;
                    Ok(claim_event(&assets, "claim.released", c)?)
                }),
            )
            .await?;
        self.cache.invalidate(vec![keys::claim(id), keys::claim_of_order(released.order_id)]).await;
        tracing::info!("claim released");
        Ok(released)
    }

    /// The caller's claims (admins: anyone's), newest first.
    pub async fn list(&self, who: &Principal, p: ListParams) -> Result<(Vec<Claim>, Option<String>), ApiError> {
        let limit = cursor::limit(p.limit)?;
        let before = p.cursor.as_deref().map(cursor::decode).transpose()?;
        let status = match p.status.as_deref() {
            None => None,
            Some(s) => Some(ClaimStatus::parse(s).ok_or_else(|| {
                ApiError::validation(vec![FieldError::new("status", "must be pending, processed, failed or released")])
            })?),
        };
        let user_id = match (who.is_privileged(), p.user_id) {
            (true, u) => u,
            (false, Some(u)) if u != who.user_id => return Err(ApiError::forbidden("users list their own claims")),
            (false, _) => Some(who.user_id),
        };
        let filter = ClaimFilter { user_id, status, before, limit: limit + 1 };
        let plan = self.reads.plan().await;
        let mut ids = plan.run(|s| s.list_ids(&filter)).await?;
        let next = cursor::next_page(&mut ids, limit);
        let items = self
            .cache
            .get_many_or_load_as(plan.cache, "claim", &ids, (keys::claim, |c: &Claim| c.id), |missing| {
                plan.run(move |s| s.get_many(missing.clone()))
            })
            .await?;
        Ok((items, next))
    }
}

/// The order if the caller may claim it now. What the refusal says follows the order's visibility
/// (a `GET` of it): an order the caller may not see is 404, except that a claimed (or completed)
/// one is 409 `ORDER_ALREADY_CLAIMED`, which every loser of a race learns anyway.
fn claimable(who: &Principal, order: Option<OrderSnapshot>) -> Result<OrderSnapshot, ApiError> {
    let Some(order) = order.filter(|o| o.status != OrderStatus::Deleted) else {
        return Err(ApiError::not_found("order"));
    };
    if order.user_id == who.user_id {
        return Err(ApiError::unprocessable_field(
            ErrorCode::CannotClaimOwnOrder,
            "order_id",
            "you cannot claim your own order",
        ));
    }
    match order.status {
        OrderStatus::Pending => Ok(order),
        OrderStatus::Claimed | OrderStatus::Completed => {
            Err(ApiError::new(ErrorCode::OrderAlreadyClaimed, "the order is already claimed"))
        }
        _ if !who.is_privileged() => Err(ApiError::not_found("order")),
        other => {
            let status = format!("{other:?}").to_lowercase();
            Err(ApiError::unprocessable_field(
                ErrorCode::OrderNotClaimable,
                "order_id",
                format!("the order is {status}, not pending"),
            ))
        }
    }
}

fn visible(who: &Principal, c: &Claim) -> bool {
    who.is_privileged() || c.user_id == who.user_id || c.buyer_id == who.user_id
}

pub(crate) fn view_of(assets: &AssetRegistry, c: &Claim) -> ClaimView {
    let decimals = assets.get(&c.currency).map_or(c.amount.scale(), |a| a.decimals);
    ClaimView {
        id: c.id,
        order_id: c.order_id,
        user_id: c.user_id,
        status: c.status,
        failure_reason: c.failure_reason.clone(),
        currency: c.currency.clone(),
        amount: format_amount(c.amount, decimals),
        supply_id: c.supply_id,
        claimed_at: c.claimed_at,
        processed_at: c.processed_at,
        version: c.version,
    }
}

pub(crate) fn claim_event(assets: &AssetRegistry, event_type: &'static str, c: &Claim) -> anyhow::Result<NewEvent> {
    NewEvent::of(event_type, 1, TOPIC, c.id, &view_of(assets, c))
}
