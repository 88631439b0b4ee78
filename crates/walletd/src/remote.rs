//! The ports one service uses to reach another (DESIGN D1), over gRPC to a service that another
//! process runs: claim to order, supply and wallet; order to wallet. Each call carries a service
//! token minted from the shared signing key, a deadline, and goes through the peer's breaker; reads
//! and the idempotent steps (every step is keyed by its claim or hold) retry an outage with
//! backoff, placing a hold does not (a retry could hold twice).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base::Step;
use claim::ports::{OrderClient, OrderSnapshot, SettlementClient, SupplyClient};
use events::EventContext;
use identity::TokenKeys;
use rpc::client::{Idempotent, Peer, TokenSource};
use rpc::v1::order_service_client::OrderServiceClient;
use rpc::v1::supply_service_client::SupplyServiceClient;
use rpc::v1::wallet_service_client::WalletServiceClient;
use rpc::v1::{
    CheckSettlementRequest, ClaimStepRequest, FindAvailableRequest, GetOrderRequest, MarkClaimedRequest,
    OrderClaimStepRequest, PlaceOrderHoldRequest, ReleaseHoldRequest, ReserveRequest, SetHoldAmountRequest,
    SettleRequest,
};
use rpc::{context_message, step_of};
use rust_decimal::Decimal;
use uuid::Uuid;
use web::Role;

/// Service tokens (role `service`) from the shared signing key, minted again at half their life.
pub struct ServiceTokens {
    keys: Arc<TokenKeys>,
    ttl: Duration,
    current: Mutex<Option<(String, Instant)>>,
}

impl ServiceTokens {
    pub fn new(keys: Arc<TokenKeys>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self { keys, ttl, current: Mutex::new(None) })
    }
}

impl TokenSource for ServiceTokens {
    fn token(&self) -> anyhow::Result<String> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, minted)) = current.as_ref()
            && minted.elapsed() < self.ttl / 2
        {
            return Ok(token.clone());
        }
        let token = self.keys.issue(Uuid::nil(), "service:walletd", &[Role::Service], self.ttl)?;
        *current = Some((token.clone(), Instant::now()));
        Ok(token)
    }
}

/// An order's status as the order service names it.
pub(crate) fn order_status(name: &str) -> anyhow::Result<order::domain::OrderStatus> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| anyhow::anyhow!("the order service answered an unknown status {name:?}"))
}

fn uuid_of(field: &str, v: &str) -> anyhow::Result<Uuid> {
    v.parse().map_err(|_| anyhow::anyhow!("the peer answered a {field} that is no UUID: {v:?}"))
}

/// Orders over gRPC.
pub struct RemoteOrders(pub Arc<Peer>);

impl RemoteOrders {
    /// The order's row (no items), whoever owns it.
    pub async fn row(&self, id: Uuid) -> anyhow::Result<Option<rpc::v1::Order>> {
        let p = &self.0;
        let res = p
            .call("GetOrderRow", Idempotent::Yes, |ch| {
                let req = p.request(GetOrderRequest { id: id.to_string() });
                async move { OrderServiceClient::new(ch).get_order_row(req?).await }
            })
            .await?;
        Ok(res.order)
    }
}

#[async_trait]
impl OrderClient for RemoteOrders {
    async fn get(&self, id: Uuid) -> anyhow::Result<Option<OrderSnapshot>> {
        let Some(o) = self.row(id).await? else { return Ok(None) };
        let status = crate::adapters::status_of(order_status(&o.status)?);
        Ok(Some(OrderSnapshot {
            id: uuid_of("id", &o.id)?,
            user_id: uuid_of("user_id", &o.user_id)?,
            currency: o.currency,
            amount: o
                .amount
                .parse()
                .map_err(|_| anyhow::anyhow!("the order service answered amount {:?}", o.amount))?,
            status,
            claim_id: o.claim_id.as_deref().map(|c| uuid_of("claim_id", c)).transpose()?,
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
        let p = &self.0;
        let msg = MarkClaimedRequest {
            order_id: order_id.to_string(),
            claim_id: claim_id.to_string(),
            at_version,
            context: Some(context_message(ctx)),
        };
        let res = p
            .call("MarkClaimed", Idempotent::Yes, |ch| {
                let req = p.request(msg.clone());
                async move { OrderServiceClient::new(ch).mark_claimed(req?).await }
            })
            .await?;
        Ok(step_of(res))
    }

    async fn complete(&self, order_id: Uuid, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        let p = &self.0;
        let msg = step_request(order_id, claim_id, ctx);
        let res = p
            .call("CompleteOrder", Idempotent::Yes, |ch| {
                let req = p.request(msg.clone());
                async move { OrderServiceClient::new(ch).complete_order(req?).await }
            })
            .await?;
        Ok(step_of(res))
    }

    async fn reopen(&self, order_id: Uuid, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        let p = &self.0;
        let msg = step_request(order_id, claim_id, ctx);
        let res = p
            .call("ReopenOrder", Idempotent::Yes, |ch| {
                let req = p.request(msg.clone());
                async move { OrderServiceClient::new(ch).reopen_order(req?).await }
            })
            .await?;
        Ok(step_of(res))
    }
}

fn step_request(order_id: Uuid, claim_id: Uuid, ctx: &EventContext) -> OrderClaimStepRequest {
    OrderClaimStepRequest {
        order_id: order_id.to_string(),
        claim_id: claim_id.to_string(),
        context: Some(context_message(ctx)),
    }
}

/// Supplies over gRPC.
pub struct RemoteSupplies(pub Arc<Peer>);

impl RemoteSupplies {
    async fn claim_step(&self, method: &'static str, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        let p = &self.0;
        let msg = ClaimStepRequest { claim_id: claim_id.to_string(), context: Some(context_message(ctx)) };
        let res = p
            .call(method, Idempotent::Yes, |ch| {
                let req = p.request(msg.clone());
                async move {
                    let mut c = SupplyServiceClient::new(ch);
                    if method == "Consume" { c.consume(req?).await } else { c.release(req?).await }
                }
            })
            .await?;
        Ok(step_of(res))
    }
}

#[async_trait]
impl SupplyClient for RemoteSupplies {
    async fn find_available(&self, user_id: Uuid, currency: &str, amount: Decimal) -> anyhow::Result<Option<Uuid>> {
        let p = &self.0;
        let msg = FindAvailableRequest {
            user_id: user_id.to_string(),
            currency: currency.to_string(),
            amount: amount.to_string(),
        };
        let res = p
            .call("FindAvailable", Idempotent::Yes, |ch| {
                let req = p.request(msg.clone());
                async move { SupplyServiceClient::new(ch).find_available(req?).await }
            })
            .await?;
        res.supply_id.as_deref().map(|s| uuid_of("supply_id", s)).transpose()
    }

    async fn reserve(
        &self,
        claim_id: Uuid,
        supply_id: Uuid,
        amount: Decimal,
        ctx: &EventContext,
    ) -> anyhow::Result<Step> {
        let p = &self.0;
        let msg = ReserveRequest {
            claim_id: claim_id.to_string(),
            supply_id: supply_id.to_string(),
            amount: amount.to_string(),
            context: Some(context_message(ctx)),
        };
        let res = p
            .call("Reserve", Idempotent::Yes, |ch| {
                let req = p.request(msg.clone());
                async move { SupplyServiceClient::new(ch).reserve(req?).await }
            })
            .await?;
        Ok(step_of(res))
    }

    async fn consume(&self, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        self.claim_step("Consume", claim_id, ctx).await
    }

    async fn release(&self, claim_id: Uuid, ctx: &EventContext) -> anyhow::Result<Step> {
        self.claim_step("Release", claim_id, ctx).await
    }
}

/// The wallet over gRPC: settlement for claims, funds for orders.
pub struct RemoteWallet(pub Arc<Peer>);

#[async_trait]
impl SettlementClient for RemoteWallet {
    async fn check(&self, order_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<Step> {
        let p = &self.0;
        let msg = CheckSettlementRequest {
            order_id: order_id.to_string(),
            amount: amount.to_string(),
            context: Some(context_message(ctx)),
        };
        let res = p
            .call("CheckSettlement", Idempotent::Yes, |ch| {
                let req = p.request(msg.clone());
                async move { WalletServiceClient::new(ch).check_settlement(req?).await }
            })
            .await?;
        Ok(step_of(res))
    }

    async fn settle(
        &self,
        claim_id: Uuid,
        order_id: Uuid,
        shopper_id: Uuid,
        amount: Decimal,
        ctx: &EventContext,
    ) -> anyhow::Result<Step> {
        let p = &self.0;
        let msg = SettleRequest {
            claim_id: claim_id.to_string(),
            order_id: order_id.to_string(),
            shopper_id: shopper_id.to_string(),
            amount: amount.to_string(),
            context: Some(context_message(ctx)),
        };
        let res = p
            .call("Settle", Idempotent::Yes, |ch| {
                let req = p.request(msg.clone());
                async move { WalletServiceClient::new(ch).settle(req?).await }
            })
            .await?;
        Ok(step_of(res))
    }
}

#[async_trait]
impl order::service::Funds for RemoteWallet {
    async fn hold(
        &self,
        buyer: Uuid,
        currency: &str,
        amount: Decimal,
        order_id: Uuid,
        ctx: &EventContext,
    ) -> anyhow::Result<Option<Uuid>> {
        let p = &self.0;
        let msg = PlaceOrderHoldRequest {
            user_id: buyer.to_string(),
            currency: currency.to_string(),
            amount: amount.to_string(),
            order_id: order_id.to_string(),
            context: Some(context_message(ctx)),
        };
        let res = p
            .call("PlaceOrderHold", Idempotent::No, |ch| {
                let req = p.request(msg.clone());
                async move { WalletServiceClient::new(ch).place_order_hold(req?).await }
            })
            .await?;
        res.hold_id.as_deref().map(|h| uuid_of("hold_id", h)).transpose()
    }

    async fn set_amount(&self, hold_id: Uuid, amount: Decimal, ctx: &EventContext) -> anyhow::Result<bool> {
        let p = &self.0;
        let msg = SetHoldAmountRequest {
            hold_id: hold_id.to_string(),
            amount: amount.to_string(),
            context: Some(context_message(ctx)),
        };
        let res = p
            .call("SetHoldAmount", Idempotent::Yes, |ch| {
                let req = p.request(msg.clone());
                async move { WalletServiceClient::new(ch).set_hold_amount(req?).await }
            })
            .await?;
        Ok(res.refused.is_none())
    }

    async fn release(&self, hold_id: Uuid, ctx: &EventContext) -> anyhow::Result<()> {
        let p = &self.0;
        let msg = ReleaseHoldRequest { hold_id: hold_id.to_string(), context: Some(context_message(ctx)) };
        p.call("ReleaseHold", Idempotent::Yes, |ch| {
            let req = p.request(msg.clone());
            async move { WalletServiceClient::new(ch).release_hold(req?).await }
        })
        .await?;
        Ok(())
    }
}
