//! The order use cases shared by the HTTP handlers and the in-process [`OrderClient`].

use base::ErrorCode;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{ItemInput, NewOrder, Order, OrderError, OrderItem, OrderStatus, parse_items};
use crate::store::{self, Guard, OrderFilter, OrderStore};
use base::Step;
use cache::Cache;
use web::Principal;

use crate::keys;
use base::clock;
use base::money::{AssetRegistry, format_amount};
use events::outbox::{EventContext, NewEvent};
use storage::Database;
use storage::replica::{ReadPlan, Reads, Replica};
use web::extract::RequestId;
use web::{ApiError, FieldError, cursor};

/// Topic of this service's events.
pub const TOPIC: &str = "order-events";

/// An order line as clients see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemView {
    pub id: Uuid,
    pub product_id: String,
    pub product_name: String,
    pub price: String,
    pub quantity: i32,
}

/// An order as clients and events see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    /// Computed by the server: the sum of price × quantity.
    pub amount: String,
    pub status: OrderStatus,
    pub items: Vec<ItemView>,
    pub claim_id: Option<Uuid>,
    /// The wallet hold that funds it.
    pub hold_id: Option<Uuid>,
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// List parameters as received.
#[derive(Debug, Default)]
pub struct ListParams {
    pub user_id: Option<Uuid>,
    pub status: Option<String>,
    pub currency: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// The wallet as the order service sees it (DESIGN flow 2): the hold that funds an order.
#[async_trait::async_trait]
pub trait Funds: Send + Sync {
    /// Holds `amount` of the buyer's available balance for the order; `None` when it is short.
    async fn hold(
        &self,
        buyer: Uuid,
        currency: &str,
        amount: Decimal,
        order_id: Uuid,
        ctx: &EventContext,
    ) -> anyhow::Result<Option<Uuid>>;
    /// Sets a pending hold to `amount`; `false` when the buyer's available balance is short. A hold
    /// that is no longer pending is left as it is (`true`): the order's own change decides.
    async fn set_amount(&self, hold_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<bool>;
    /// Releases a hold that is still pending (nothing otherwise).
    async fn release(&self, hold_id: Uuid, ctx: &EventContext) -> anyhow::Result<()>;
}

/// The order service.
pub struct OrderService {
    store: Arc<dyn OrderStore>,
    /// Plain reads: the primary's store, or the region's replica's.
    reads: Reads<dyn OrderStore>,
    cache: Arc<Cache>,
    funds: Arc<dyn Funds>,
    assets: AssetRegistry,
    region: String,
}

fn insufficient_funds() -> ApiError {
    ApiError::unprocessable_field(
        ErrorCode::InsufficientFunds,
        "items",
        "your available balance does not cover the order's amount",
    )
}

impl OrderService {
    pub fn new(db: &Database, cache: Arc<Cache>, funds: Arc<dyn Funds>, assets: AssetRegistry, region: String) -> Self {
        let store = store::open(db);
        Self { reads: Reads::primary(store.clone()), store, cache, funds, assets, region }
    }

    /// Plain reads (an order, a list) from `replica_db`, a streaming replica of the primary.
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

    pub fn view(&self, o: &Order) -> OrderView {
        view_of(&self.assets, o)
    }

    pub fn item_views(&self, o: &Order) -> Vec<ItemView> {
        view_of(&self.assets, o).items
    }

    #[tracing::instrument(skip_all, fields(user.id = %who.user_id))]
    pub async fn create(
        &self,
        who: &Principal,
        rid: &RequestId,
        currency: &str,
        items: &[ItemInput],
    ) -> Result<Order, ApiError> {
        let mut order = Order::new(who.user_id, NewOrder::parse(currency, items, &self.assets)?, clock::now());
        let ctx = self.ctx(who, rid);
        // The hold first: a crash before the order leaves a hold without an order, which is money
        // reserved for nothing but never an order that is not funded.
        let hold = self.funds.hold(who.user_id, &order.currency, order.amount, order.id, &ctx).await?;
        order.hold_id = Some(hold.ok_or_else(insufficient_funds)?);
        if base::failpoint("order-after-hold") {
            tracing::error!(order.id = %order.id, "failpoint order-after-hold: stalling between the hold and the order");
            std::future::pending::<()>().await;
        }
        let inserted = match event_of(&self.assets, "order.created", &order) {
            Ok(event) => self.store.insert(&order, &event, &ctx).await.map_err(ApiError::from),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = inserted {
            if let Some(hold_id) = order.hold_id
                && let Err(r) = self.funds.release(hold_id, &ctx).await
            {
                tracing::error!(hold.id = %hold_id, error = format!("{r:#}"), "the order failed and its hold stays");
            }
            return Err(e);
        }
        self.cache.invalidate(vec![keys::order(order.id)]).await;
        tracing::info!(order.id = %order.id, "order created");
        Ok(order)
    }

    /// An order the caller may see: their own, any (admins), or any pending one (shoppers browse
    /// claimable orders). Anything else is 404.
    pub async fn get(&self, who: &Principal, id: Uuid) -> Result<Order, ApiError> {
        self.get_via(self.reads.plan().await, who, id).await
    }

    /// [`Self::get`] from where `plan` says (a change reads the primary).
    async fn get_via(&self, plan: ReadPlan<'_, dyn OrderStore>, who: &Principal, id: Uuid) -> Result<Order, ApiError> {
        let cached =
            self.cache.get_or_load_as(plan.cache, "order", keys::order(id), || plan.run(|s| s.get(id))).await?;
        match cached {
            Some(o)
                if o.status != OrderStatus::Deleted
                    && (who.is_privileged() || o.user_id == who.user_id || o.status == OrderStatus::Pending) =>
            {
                Ok(o)
            }
            _ => Err(ApiError::not_found("order")),
        }
    }

    #[tracing::instrument(skip_all, fields(order.id = %id))]
    pub async fn patch(
        &self,
        who: &Principal,
        rid: &RequestId,
        id: Uuid,
        expected_version: Option<i64>,
        items: Option<&[ItemInput]>,
        status: Option<&str>,
    ) -> Result<Order, ApiError> {
        let cancel = match status {
            None => false,
            Some("cancelled") => true,
            Some(_) => return Err(ApiError::validation(vec![FieldError::new("status", "only cancelled can be set")])),
        };
        if items.is_none() && !cancel {
            return Err(ApiError::validation(vec![FieldError::new("body", "give items or status")]));
        }
        let current = self.get_via(ReadPlan::primary(&self.store), who, id).await?;
        if current.user_id != who.user_id && !who.is_privileged() {
            return Err(ApiError::not_found("order"));
        }
        let asset = self.assets.get(&current.currency).ok_or_else(|| {
            ApiError::unprocessable_field(ErrorCode::UnknownAsset, "currency", "this asset is no longer configured")
        })?;
        let new_items = items.map(|i| parse_items(i, &asset)).transpose().map_err(ApiError::validation)?;
        let ctx = self.ctx(who, rid);
        // New items: the hold grows (or shrinks) first, so the order never has more than is held.
        let new_amount = new_items.as_ref().map(|(_, amount)| *amount);
        if let (Some(amount), Some(hold_id)) = (new_amount, current.hold_id)
            && current.status == OrderStatus::Pending
            && !self.funds.set_amount(hold_id, amount, &ctx).await?
        {
            return Err(insufficient_funds());
        }
        let assets = self.assets.clone();
        let result = self
            .store
            .modify(
                id,
                self.guard(who, expected_version),
                &ctx,
                Box::new(move |o| {
                    if let Some((items, amount)) = new_items {
                        o.replace_items(items, amount)?;
                    }
                    if cancel {
                        o.cancel()?;
                    }
                    Ok(Some(event_of(&assets, if cancel { "order.cancelled" } else { "order.updated" }, o)?))
                }),
            )
            .await;
        self.cache.invalidate(vec![keys::order(id)]).await;
        // The hold follows what the order now is: released with a cancel that happened; after new
        // items (applied or refused), set to the order's amount as stored now.
        if let Some(hold_id) = current.hold_id {
            let synced = match &result {
                Ok(o) if o.status == OrderStatus::Cancelled => self.funds.release(hold_id, &ctx).await,
                Ok(o) if new_amount.is_some() => self.funds.set_amount(hold_id, o.amount, &ctx).await.map(|_| ()),
                Err(_) if new_amount.is_some() => match self.store.get(id).await {
                    Ok(Some(o)) => self.funds.set_amount(hold_id, o.amount, &ctx).await.map(|_| ()),
                    Ok(None) => Ok(()),
                    Err(e) => Err(anyhow::anyhow!(e)),
                },
                _ => Ok(()),
            };
            if let Err(e) = synced {
                tracing::error!(hold.id = %hold_id, error = format!("{e:#}"), "the order's hold does not follow it yet");
            }
        }
        let updated = result?;
        tracing::info!(order.status = updated.status.as_str(), "order updated");
        Ok(updated)
    }

    #[tracing::instrument(skip_all, fields(order.id = %id))]
    pub async fn delete(
        &self,
        who: &Principal,
        rid: &RequestId,
        id: Uuid,
        expected_version: Option<i64>,
    ) -> Result<(), ApiError> {
        let assets = self.assets.clone();
        let ctx = self.ctx(who, rid);
        let deleted = self
            .store
            .modify(
                id,
                self.guard(who, expected_version),
                &ctx,
                Box::new(move |o| {
                    o.delete()?;
                    Ok(Some(event_of(&assets, "order.deleted", o)?))
                }),
            )
            .await?;
        self.cache.invalidate(vec![keys::order(id)]).await;
        if let Some(hold_id) = deleted.hold_id
            && let Err(e) = self.funds.release(hold_id, &ctx).await
        {
            tracing::error!(hold.id = %hold_id, error = format!("{e:#}"), "the deleted order's hold stays for now");
        }
        tracing::info!("order deleted");
        Ok(())
    }

    /// A page of orders, newest first. Users list their own; `status=pending` without `user_id`
    /// lists the claimable orders of others; admins list anyone's.
    pub async fn list(&self, who: &Principal, p: ListParams) -> Result<(Vec<Order>, Option<String>), ApiError> {
        let limit = cursor::limit(p.limit)?;
        let before = p.cursor.as_deref().map(cursor::decode).transpose()?;
        let mut errors = Vec::new();
        let status = p.status.as_deref().and_then(|s| match OrderStatus::parse(s) {
            Some(OrderStatus::Deleted) | None => {
                errors.push(FieldError::new("status", "must be pending, claimed, completed or cancelled"));
                None
            }
            st => st,
        });
        let currency = p.currency.as_deref().and_then(|c| match self.assets.get(c) {
            Some(a) => Some(a.code),
            None => {
                errors.push(FieldError::new("currency", "unknown asset"));
                None
            }
        });
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let (user_id, not_user_id) = match (who.is_privileged(), p.user_id, status) {
            (true, u, _) => (u, None),
            (false, None, Some(OrderStatus::Pending)) => (None, Some(who.user_id)),
            (false, Some(u), Some(OrderStatus::Pending)) => (Some(u), None),
            (false, Some(u), _) if u != who.user_id => {
                return Err(ApiError::forbidden("users list their own orders, or pending ones"));
            }
            (false, _, _) => (Some(who.user_id), None),
        };
        let filter = OrderFilter { user_id, not_user_id, currency, status, before, limit: limit + 1 };
        let plan = self.reads.plan().await;
        let mut ids = plan.run(|s| s.list_ids(&filter)).await?;
        let next = cursor::next_page(&mut ids, limit);
        let items = self
            .cache
            .get_many_or_load_as(plan.cache, "order", &ids, (keys::order, |o: &Order| o.id), |missing| {
                plan.run(move |s| s.get_many(missing.clone()))
            })
            .await?;
        Ok((items, next))
    }

    fn guard(&self, who: &Principal, expected_version: Option<i64>) -> Guard {
        Guard { owner: (!who.is_privileged()).then_some(who.user_id), expected_version }
    }

    /// A claim-flow transition, idempotent: already in the target state for this claim is `Done`.
    async fn claim_step(
        &self,
        order_id: Uuid,
        ctx: &EventContext,
        event_type: &'static str,
        step: impl FnOnce(&mut Order) -> Result<bool, OrderError> + Send + 'static,
    ) -> anyhow::Result<Step> {
        let assets = self.assets.clone();
        let result = self
            .store
            .modify(
                order_id,
                Guard::default(),
                ctx,
                Box::new(move |o| Ok(step(o)?.then(|| event_of(&assets, event_type, o)).transpose()?)),
            )
            .await;
        self.cache.invalidate(vec![keys::order(order_id)]).await;
        match result {
            Ok(_) => Ok(Step::Done),
            Err(OrderError::Unexpected(e)) => Err(e),
            Err(e) => Ok(Step::Refused(e.to_string())),
        }
    }
}

/// What claim processing asks of orders (the claim service's `OrderClient` port, wired in
/// walletd). Every step is idempotent, keyed by the claim it serves.
impl OrderService {
    /// The order as stored now, whatever its status (no cache: decisions read the database).
    pub async fn current(&self, id: Uuid) -> anyhow::Result<Option<Order>> {
        self.store.get(id).await.map_err(|e| anyhow::anyhow!(e))
    }

    /// The order's row as stored now, without its items (`items` empty): what the claim path
    /// decides on, in one statement.
    pub async fn current_row(&self, id: Uuid) -> anyhow::Result<Option<Order>> {
        self.store.get_row(id).await.map_err(|e| anyhow::anyhow!(e))
    }

    /// `pending -> claimed` for this claim; with `at_version`, only while the order is at the
    /// version the claim was made against. Under the order's row lock, so a buyer's change either
    /// lands before (and the claim is refused) or after (and is refused itself).
    pub async fn mark_claimed(
        &self,
        order_id: Uuid,
        claim_id: Uuid,
        at_version: Option<i64>,
        ctx: &EventContext,
    ) -> anyhow::Result<Step> {
        self.claim_step(order_id, ctx, "order.updated", move |o| {
            // Processing may have got there first, and even completed the order for this claim.
            if matches!(o.status, OrderStatus::Claimed | OrderStatus::Completed) && o.claim_id == Some(claim_id) {
                return Ok(false);
            }
            o.require_pending()?;
            if at_version.is_some_and(|v| v != o.version) {
                return Err(OrderError::Changed);
            }
            o.mark_claimed(claim_id).map(|()| true)
        })
        .await
    }

    /// `claimed -> completed` for this claim.
    pub async fn complete(&self, order_id: Uuid, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        self.claim_step(order_id, ctx, "order.completed", move |o| {
            if o.status == OrderStatus::Completed && o.claim_id == Some(claim_id) {
                return Ok(false);
            }
            o.complete(claim_id).map(|()| true)
        })
        .await
    }

    /// `claimed -> pending` if this claim holds the order; otherwise nothing.
    pub async fn reopen(&self, order_id: Uuid, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        // Only the claim that holds the order reopens it; anything else is nothing to undo.
        self.claim_step(order_id, ctx, "order.reopened", move |o| {
            Ok(o.status == OrderStatus::Claimed && o.claim_id == Some(claim_id) && o.reopen(claim_id).is_ok())
        })
        .await
    }
}

fn view_of(assets: &AssetRegistry, o: &Order) -> OrderView {
    let decimals = assets.get(&o.currency).map_or(o.amount.scale(), |a| a.decimals);
    OrderView {
        id: o.id,
        user_id: o.user_id,
        currency: o.currency.clone(),
        amount: format_amount(o.amount, decimals),
        status: o.status,
        items: o.items.iter().map(|i| item_view(i, decimals)).collect(),
        claim_id: o.claim_id,
        hold_id: o.hold_id,
        version: o.version,
        created_at: o.created_at,
        updated_at: o.updated_at,
    }
}

fn item_view(i: &OrderItem, decimals: u32) -> ItemView {
    ItemView {
        id: i.id,
        product_id: i.product_id.clone(),
        product_name: i.product_name.clone(),
        price: format_amount(i.price, decimals),
        quantity: i.quantity,
    }
}

fn event_of(assets: &AssetRegistry, event_type: &'static str, o: &Order) -> anyhow::Result<NewEvent> {
    NewEvent::of(event_type, 1, TOPIC, o.id, &view_of(assets, o))
}
