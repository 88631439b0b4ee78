//! `walletd.v1.OrderService`: the REST operations one to one over [`OrderService`], plus the
//! steps claim processing asks of orders (role `service`).

use std::sync::Arc;

use rpc::v1::order_service_server::{self, OrderServiceServer};
use rpc::v1::{
    CreateOrderRequest, DeleteOrderRequest, Empty, GetOrderRequest, ListOrderItemsResponse, ListOrdersRequest,
    ListOrdersResponse, MarkClaimedRequest, Order, OrderClaimStepRequest, OrderRowResponse, StepResponse,
    UpdateOrderRequest,
};
use rpc::{
    answer, event_context, internal, message, opt_uuid, principal, request_id, service_principal, step_answer, uuid,
};
use tonic::{Request, Response, Status};

use crate::domain::ItemInput;
use crate::service::{ListParams, OrderService};

/// The gRPC server over the same service the REST handlers use.
pub fn server(service: Arc<OrderService>) -> OrderServiceServer<Rpc> {
    OrderServiceServer::new(Rpc(service))
}

pub struct Rpc(Arc<OrderService>);

impl Rpc {
    fn order(&self, o: &crate::domain::Order) -> Result<Order, Status> {
        message(&self.0.view(o))
    }
}

/// The items of a request as the domain takes them (a protobuf `int32` quantity always fits the
/// domain's `i64`; the domain checks its range and names `items[i].quantity`).
fn items(items: Vec<rpc::v1::ItemInput>) -> Vec<ItemInput> {
    items
        .into_iter()
        .map(|i| ItemInput {
            product_id: i.product_id,
            product_name: i.product_name,
            price: i.price,
            quantity: i64::from(i.quantity),
        })
        .collect()
}

#[tonic::async_trait]
impl order_service_server::OrderService for Rpc {
    async fn create_order(&self, req: Request<CreateOrderRequest>) -> Result<Response<Order>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let r = req.into_inner();
        let o = self.0.create(&who, &rid, &r.currency, &items(r.items)).await.map_err(rpc::status)?;
        Ok(Response::new(self.order(&o)?))
    }

    async fn get_order(&self, req: Request<GetOrderRequest>) -> Result<Response<Order>, Status> {
        let who = principal(&req)?;
        let id = uuid("id", &req.get_ref().id)?;
        let o = self.0.get(&who, id).await.map_err(rpc::status)?;
        Ok(Response::new(self.order(&o)?))
    }

    async fn list_order_items(
        &self,
        req: Request<GetOrderRequest>,
    ) -> Result<Response<ListOrderItemsResponse>, Status> {
        let who = principal(&req)?;
        let id = uuid("id", &req.get_ref().id)?;
        let o = self.0.get(&who, id).await.map_err(rpc::status)?;
        let items = self.0.item_views(&o).iter().map(message).collect::<Result<_, _>>()?;
        Ok(Response::new(ListOrderItemsResponse { items }))
    }

    async fn update_order(&self, req: Request<UpdateOrderRequest>) -> Result<Response<Order>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let r = req.into_inner();
        let id = uuid("id", &r.id)?;
        // Empty means no change of items (proto3 cannot tell an empty list from none).
        let new_items = (!r.items.is_empty()).then(|| items(r.items));
        let o = self
            .0
            .patch(&who, &rid, id, r.version, new_items.as_deref(), r.status.as_deref())
            .await
            .map_err(rpc::status)?;
        Ok(Response::new(self.order(&o)?))
    }

    async fn delete_order(&self, req: Request<DeleteOrderRequest>) -> Result<Response<Empty>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let r = req.into_inner();
        answer(self.0.delete(&who, &rid, uuid("id", &r.id)?, r.version).await.map(|()| Empty {}))
    }

    async fn list_orders(&self, req: Request<ListOrdersRequest>) -> Result<Response<ListOrdersResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let params = ListParams {
            user_id: opt_uuid("user_id", r.user_id.as_deref())?,
            status: r.status,
            currency: r.currency,
            limit: r.limit,
            cursor: r.cursor,
        };
        let (items, next_cursor) = self.0.list(&who, params).await.map_err(rpc::status)?;
        let items = items.iter().map(|o| self.order(o)).collect::<Result<_, _>>()?;
        Ok(Response::new(ListOrdersResponse { items, next_cursor }))
    }

    async fn get_order_row(&self, req: Request<GetOrderRequest>) -> Result<Response<OrderRowResponse>, Status> {
        service_principal(&req)?;
        let id = uuid("id", &req.get_ref().id)?;
        let row = self.0.current_row(id).await.map_err(internal)?;
        let order = row.map(|o| self.order(&o)).transpose()?;
        Ok(Response::new(OrderRowResponse { order }))
    }

    async fn mark_claimed(&self, req: Request<MarkClaimedRequest>) -> Result<Response<StepResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (order, claim) = (uuid("order_id", &r.order_id)?, uuid("claim_id", &r.claim_id)?);
        let ctx = event_context(r.context)?;
        step_answer(self.0.mark_claimed(order, claim, r.at_version, &ctx).await)
    }

    async fn complete_order(&self, req: Request<OrderClaimStepRequest>) -> Result<Response<StepResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (order, claim) = (uuid("order_id", &r.order_id)?, uuid("claim_id", &r.claim_id)?);
        let ctx = event_context(r.context)?;
        step_answer(self.0.complete(order, claim, &ctx).await)
    }

    async fn reopen_order(&self, req: Request<OrderClaimStepRequest>) -> Result<Response<StepResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (order, claim) = (uuid("order_id", &r.order_id)?, uuid("claim_id", &r.claim_id)?);
        let ctx = event_context(r.context)?;
        step_answer(self.0.reopen(order, claim, &ctx).await)
    }
}
