//! `walletd.v1.SupplyService`: the REST operations one to one over [`SupplyService`], plus the
//! steps claim processing asks of supplies (role `service`).

use std::sync::Arc;

use rpc::v1::supply_service_server::{self, SupplyServiceServer};
use rpc::v1::{
    ClaimStepRequest, CreateSupplyRequest, DeleteSupplyRequest, Empty, FindAvailableRequest, FindAvailableResponse,
    GetSupplyRequest, ListSuppliesRequest, ListSuppliesResponse, ReserveRequest, StepResponse, Supply,
    UpdateSupplyRequest,
};
use rpc::{
    answer, decimal, event_context, internal, message, opt_uuid, principal, request_id, service_principal, step_answer,
    uuid,
};
use tonic::{Request, Response, Status};

use crate::service::{ListParams, SupplyService};

/// The gRPC server over the same service the REST handlers use.
pub fn server(service: Arc<SupplyService>) -> SupplyServiceServer<Rpc> {
    SupplyServiceServer::new(Rpc(service))
}

pub struct Rpc(Arc<SupplyService>);

impl Rpc {
    fn supply(&self, s: &crate::domain::Supply) -> Result<Supply, Status> {
        message(&self.0.view(s))
    }
}

#[tonic::async_trait]
impl supply_service_server::SupplyService for Rpc {
    async fn create_supply(&self, req: Request<CreateSupplyRequest>) -> Result<Response<Supply>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let r = req.into_inner();
        let s = self.0.create(&who, &rid, &r.currency, &r.amount).await.map_err(rpc::status)?;
        Ok(Response::new(self.supply(&s)?))
    }

    async fn get_supply(&self, req: Request<GetSupplyRequest>) -> Result<Response<Supply>, Status> {
        let who = principal(&req)?;
        let id = uuid("id", &req.get_ref().id)?;
        let s = self.0.get(&who, id).await.map_err(rpc::status)?;
        Ok(Response::new(self.supply(&s)?))
    }

    async fn update_supply(&self, req: Request<UpdateSupplyRequest>) -> Result<Response<Supply>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let r = req.into_inner();
        let id = uuid("id", &r.id)?;
        let s = self
            .0
            .patch(&who, &rid, id, r.version, r.amount.as_deref(), r.status.as_deref())
            .await
            .map_err(rpc::status)?;
        Ok(Response::new(self.supply(&s)?))
    }

    async fn delete_supply(&self, req: Request<DeleteSupplyRequest>) -> Result<Response<Empty>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let r = req.into_inner();
        answer(self.0.delete(&who, &rid, uuid("id", &r.id)?, r.version).await.map(|()| Empty {}))
    }

    async fn list_supplies(&self, req: Request<ListSuppliesRequest>) -> Result<Response<ListSuppliesResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let params = ListParams {
            user_id: opt_uuid("user_id", r.user_id.as_deref())?,
            currency: r.currency,
            status: r.status,
            limit: r.limit,
            cursor: r.cursor,
        };
        let (items, next_cursor) = self.0.list(&who, params).await.map_err(rpc::status)?;
        let items = items.iter().map(|s| self.supply(s)).collect::<Result<_, _>>()?;
        Ok(Response::new(ListSuppliesResponse { items, next_cursor }))
    }

    async fn find_available(
        &self,
        req: Request<FindAvailableRequest>,
    ) -> Result<Response<FindAvailableResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (user, amount) = (uuid("user_id", &r.user_id)?, decimal("amount", &r.amount)?);
        let found = self.0.find_available(user, &r.currency, amount).await.map_err(internal)?;
        Ok(Response::new(FindAvailableResponse { supply_id: found.map(|id| id.to_string()) }))
    }

    async fn reserve(&self, req: Request<ReserveRequest>) -> Result<Response<StepResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (claim, supply) = (uuid("claim_id", &r.claim_id)?, uuid("supply_id", &r.supply_id)?);
        let (amount, ctx) = (decimal("amount", &r.amount)?, event_context(r.context)?);
        step_answer(self.0.reserve(claim, supply, amount, &ctx).await)
    }

    async fn consume(&self, req: Request<ClaimStepRequest>) -> Result<Response<StepResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (claim, ctx) = (uuid("claim_id", &r.claim_id)?, event_context(r.context)?);
        step_answer(self.0.consume(claim, &ctx).await)
    }

    async fn release(&self, req: Request<ClaimStepRequest>) -> Result<Response<StepResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (claim, ctx) = (uuid("claim_id", &r.claim_id)?, event_context(r.context)?);
        step_answer(self.0.release(claim, &ctx).await)
    }
}
