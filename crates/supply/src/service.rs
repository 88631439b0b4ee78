//! The supply use cases that the HTTP handlers (and later gRPC) share.

use base::ErrorCode;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use base::Step;
use base::clock;
use base::money::{AssetRegistry, format_amount};
use cache::Cache;
use events::outbox::{EventContext, NewEvent};
use storage::Database;
use storage::replica::{ReadPlan, Reads, Replica};
use web::extract::RequestId;
use web::{ApiError, FieldError, Principal, cursor};

use crate::domain::{NewSupply, Supply, SupplyPatch, SupplyStatus};
use crate::keys;
use crate::reservation::ReservationOp;
use crate::store::{self, Guard, SupplyFilter, SupplyStore};

/// Topic of this service's events.
pub const TOPIC: &str = "supply-events";

/// A supply as clients and events see it: amounts as strings with the asset's decimals.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SupplyView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    #[schema(example = "1.500000")]
    pub amount: String,
    pub reserved: String,
    pub available: String,
    pub status: SupplyStatus,
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// List parameters as the handler received them.
#[derive(Debug, Default)]
pub struct ListParams {
    pub user_id: Option<Uuid>,
    pub currency: Option<String>,
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The supply service.
pub struct SupplyService {
    store: Arc<dyn SupplyStore>,
    /// Plain reads: the primary's store, or the region's replica's.
    reads: Reads<dyn SupplyStore>,
    cache: Arc<Cache>,
    assets: AssetRegistry,
    region: String,
}

impl SupplyService {
    pub fn new(db: &Database, cache: Arc<Cache>, assets: AssetRegistry, region: String) -> Self {
        let store = store::open(db);
        Self { reads: Reads::primary(store.clone()), store, cache, assets, region }
    }

    /// Plain reads (a supply, a list) from `replica_db`, a streaming replica of the primary.
    pub fn with_replica(mut self, replica_db: &Database, replica: Arc<Replica>) -> Self {
        self.reads = Reads::primary(self.store.clone()).with_replica(store::open(replica_db), replica);
        self
    }

    fn ctx(&self, who: &Principal, rid: &RequestId) -> EventContext {
        EventContext {
            region: self.region.clone(),
            correlation_id: rid.0.clone(),
            actor_id: Some(who.user_id),
            traceparent: base::trace::current(),
        }
    }

    /// Formats a supply for clients and events.
    pub fn view(&self, s: &Supply) -> SupplyView {
        view_of(&self.assets, s)
    }

    #[tracing::instrument(skip_all, fields(user.id = %who.user_id))]
    pub async fn create(
        &self,
        who: &Principal,
        rid: &RequestId,
        currency: &str,
        amount: &str,
    ) -> Result<Supply, ApiError> {
        let new = NewSupply::parse(currency, amount, &self.assets)?;
        let supply = Supply::new(who.user_id, new, clock::now());
        self.store.insert(&supply, &event_of(&self.assets, "supply.created", &supply)?, &self.ctx(who, rid)).await?;
        self.cache.invalidate(vec![keys::supply(supply.id)]).await;
        tracing::info!(supply.id = %supply.id, "supply created");
        Ok(supply)
    }

    /// A live supply the caller may see; anything else is 404.
    #[tracing::instrument(skip_all, fields(supply.id = %id))]
    pub async fn get(&self, who: &Principal, id: Uuid) -> Result<Supply, ApiError> {
        self.get_via(self.reads.plan().await, who, id).await
    }

    /// [`Self::get`] from where `plan` says (a change reads the primary).
    async fn get_via(
        &self,
        plan: ReadPlan<'_, dyn SupplyStore>,
        who: &Principal,
        id: Uuid,
    ) -> Result<Supply, ApiError> {
        let cached =
            self.cache.get_or_load_as(plan.cache, "supply", keys::supply(id), || plan.run(|s| s.get(id))).await?;
        match cached {
            Some(s) if s.status != SupplyStatus::Deleted && (who.is_privileged() || s.user_id == who.user_id) => Ok(s),
            _ => Err(ApiError::not_found("supply")),
        }
    }

    #[tracing::instrument(skip_all, fields(supply.id = %id))]
    pub async fn patch(
        &self,
        who: &Principal,
        rid: &RequestId,
        id: Uuid,
        expected_version: Option<i64>,
        amount: Option<&str>,
        status: Option<&str>,
    ) -> Result<Supply, ApiError> {
        if amount.is_none() && status.is_none() {
            return Err(ApiError::validation(vec![FieldError::new("body", "give amount or status")]));
        }
        let current = self.get_via(ReadPlan::primary(&self.store), who, id).await?;
        let asset = self.assets.get(&current.currency).ok_or_else(|| {
            ApiError::unprocessable_field(ErrorCode::UnknownAsset, "currency", "this asset is no longer configured")
        })?;
        let patch = SupplyPatch::parse(amount, status, &asset)?;
        let event_of = self.event_builder("supply.updated");
        let guard = self.guard(who, expected_version);
        let updated = self
            .store
            .modify(
                id,
                guard,
                &self.ctx(who, rid),
                Box::new(move |s| {
                    s.apply(&patch)?;
                    Ok(event_of(s)?)
                }),
            )
            .await?;
        self.cache.invalidate(vec![keys::supply(id)]).await;
        tracing::info!(supply.version = updated.version, "supply updated");
        Ok(updated)
    }

    #[tracing::instrument(skip_all, fields(supply.id = %id))]
    pub async fn delete(
        &self,
        who: &Principal,
        rid: &RequestId,
        id: Uuid,
        expected_version: Option<i64>,
    ) -> Result<(), ApiError> {
        let event_of = self.event_builder("supply.deleted");
        self.store
            .modify(
                id,
                self.guard(who, expected_version),
                &self.ctx(who, rid),
                Box::new(move |s| {
                    s.delete()?;
                    Ok(event_of(s)?)
                }),
            )
            .await?;
        self.cache.invalidate(vec![keys::supply(id)]).await;
        tracing::info!("supply deleted");
        Ok(())
    }

    /// A page of supplies, newest first, and the cursor of the next page.
    pub async fn list(&self, who: &Principal, p: ListParams) -> Result<(Vec<Supply>, Option<String>), ApiError> {
        let limit = cursor::limit(p.limit)?;
        let before = p.cursor.as_deref().map(cursor::decode).transpose()?;
        let user_id = match (who.is_privileged(), p.user_id) {
            (true, u) => u,
            (false, Some(u)) if u != who.user_id => {
                return Err(ApiError::forbidden("users list only their own supplies"));
            }
            (false, _) => Some(who.user_id),
        };
        let mut errors = Vec::new();
        let currency = p.currency.as_deref().and_then(|c| match self.assets.get(c) {
            Some(a) => Some(a.code),
            None => {
                errors.push(FieldError::new("currency", "unknown asset"));
                None
            }
        });
        let status = p.status.as_deref().and_then(|s| match SupplyStatus::parse(s) {
            Some(SupplyStatus::Deleted) | None => {
                errors.push(FieldError::new("status", "must be active, paused or depleted"));
                None
            }
            st => st,
        });
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let filter = SupplyFilter { user_id, currency, status, before, limit: limit + 1 };
        let plan = self.reads.plan().await;
        let mut ids = plan.run(|s| s.list_ids(&filter)).await?;
        let next = cursor::next_page(&mut ids, limit);
        let items = self
            .cache
            .get_many_or_load_as(plan.cache, "supply", &ids, (keys::supply, |s: &Supply| s.id), |missing| {
                plan.run(move |s| s.get_many(missing.clone()))
            })
            .await?;
        Ok((items, next))
    }

    fn guard(&self, who: &Principal, expected_version: Option<i64>) -> Guard {
        Guard { owner: (!who.is_privileged()).then_some(who.user_id), expected_version }
    }

    /// Builds events inside a store transaction, where `self` cannot go.
    fn event_builder(&self, event_type: &'static str) -> impl Fn(&Supply) -> anyhow::Result<NewEvent> + Send + 'static {
        let assets = self.assets.clone();
        move |s| event_of(&assets, event_type, s)
    }
}

impl SupplyService {
    async fn step(&self, claim_id: Uuid, op: ReservationOp, ctx: &EventContext) -> anyhow::Result<Step> {
        let (outcome, changed) = self
            .store
            .reservation_step(claim_id, op, ctx, Box::new(self.event_builder("supply.updated")))
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        if let Some(id) = changed {
            self.cache.invalidate(vec![keys::supply(id)]).await;
        }
        tracing::debug!(claim.id = %claim_id, op = ?op, outcome = ?outcome, "reservation step");
        Ok(outcome)
    }
}

/// What claim processing asks of supplies (the claim service's `SupplyClient` port, wired in
/// walletd). Every step is idempotent, keyed by the claim it serves.
impl SupplyService {
    /// An active supply of `user_id` in `currency` with at least `amount` available.
    pub async fn find_available(&self, user_id: Uuid, currency: &str, amount: Decimal) -> anyhow::Result<Option<Uuid>> {
        self.store.find_available(user_id, currency, amount).await.map_err(|e| anyhow::anyhow!(e))
    }

    /// Reserves `amount` on the supply for the claim, only if available suffices.
    pub async fn reserve(
        &self,
        claim_id: Uuid,
        supply_id: Uuid,
        amount: Decimal,
        ctx: &EventContext,
    ) -> anyhow::Result<Step> {
        self.step(claim_id, ReservationOp::Reserve { supply_id, amount }, ctx).await
    }

    /// Turns the claim's reservation into consumption: `amount` and `reserved` both drop.
    pub async fn consume(&self, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        self.step(claim_id, ReservationOp::Consume, ctx).await
    }

    /// Gives back the claim's reservation, if it has one that is not consumed.
    pub async fn release(&self, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        self.step(claim_id, ReservationOp::Release, ctx).await
    }
}

fn view_of(assets: &AssetRegistry, s: &Supply) -> SupplyView {
    let decimals = assets.get(&s.currency).map_or(s.amount.scale().max(s.reserved.scale()), |a| a.decimals);
    SupplyView {
        id: s.id,
        user_id: s.user_id,
        currency: s.currency.clone(),
        amount: format_amount(s.amount, decimals),
        reserved: format_amount(s.reserved, decimals),
        available: format_amount(s.available(), decimals),
        status: s.status,
        version: s.version,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

fn event_of(assets: &AssetRegistry, event_type: &'static str, s: &Supply) -> anyhow::Result<NewEvent> {
    NewEvent::of(event_type, 1, TOPIC, s.id, &view_of(assets, s))
}
