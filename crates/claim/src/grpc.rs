//! `walletd.v1.ClaimService`: the REST claim operations one to one over [`ClaimService`].

use std::sync::Arc;

use rpc::v1::claim_service_server::{self, ClaimServiceServer};
use rpc::v1::{Claim, ClaimOrderRequest, GetClaimRequest, ListClaimsRequest, ListClaimsResponse};
use rpc::{message, opt_uuid, principal, request_id, uuid};
use tonic::{Request, Response, Status};

use crate::service::{ClaimService, ListParams};

/// The gRPC server over the same service the REST handlers use.
pub fn server(service: Arc<ClaimService>) -> ClaimServiceServer<Rpc> {
    ClaimServiceServer::new(Rpc(service))
}

pub struct Rpc(Arc<ClaimService>);

impl Rpc {
    fn claim(&self, c: &crate::domain::Claim) -> Result<Claim, Status> {
        message(&self.0.view(c))
    }
}

#[tonic::async_trait]
impl claim_service_server::ClaimService for Rpc {
    async fn claim_order(&self, req: Request<ClaimOrderRequest>) -> Result<Response<Claim>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let order_id = uuid("order_id", &req.get_ref().order_id)?;
        let c = self.0.claim(&who, &rid, order_id).await.map_err(rpc::status)?;
        Ok(Response::new(self.claim(&c)?))
    }

    async fn get_order_claim(&self, req: Request<ClaimOrderRequest>) -> Result<Response<Claim>, Status> {
        let who = principal(&req)?;
        let order_id = uuid("order_id", &req.get_ref().order_id)?;
        let c = self.0.for_order(&who, order_id).await.map_err(rpc::status)?;
        Ok(Response::new(self.claim(&c)?))
    }

    async fn get_claim(&self, req: Request<GetClaimRequest>) -> Result<Response<Claim>, Status> {
        let who = principal(&req)?;
        let id = uuid("id", &req.get_ref().id)?;
        let c = self.0.get(&who, id).await.map_err(rpc::status)?;
        Ok(Response::new(self.claim(&c)?))
    }

    async fn release_claim(&self, req: Request<GetClaimRequest>) -> Result<Response<Claim>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let id = uuid("id", &req.get_ref().id)?;
        let c = self.0.release(&who, &rid, id).await.map_err(rpc::status)?;
        Ok(Response::new(self.claim(&c)?))
    }

    async fn list_claims(&self, req: Request<ListClaimsRequest>) -> Result<Response<ListClaimsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let params = ListParams {
            user_id: opt_uuid("user_id", r.user_id.as_deref())?,
            status: r.status,
            limit: r.limit,
            cursor: r.cursor,
        };
        let (items, next_cursor) = self.0.list(&who, params).await.map_err(rpc::status)?;
        let items = items.iter().map(|c| self.claim(c)).collect::<Result<_, _>>()?;
        Ok(Response::new(ListClaimsResponse { items, next_cursor }))
    }
}
