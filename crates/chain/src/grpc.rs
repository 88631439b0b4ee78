//! `walletd.v1.ChainService`: the REST deposit-address, deposit and withdrawal operations one to
//! one over [`ChainService`].

use std::sync::Arc;

use rpc::v1::chain_service_server::{self, ChainServiceServer};
use rpc::v1::{
    CreateWithdrawalRequest, DepositAddress, GetDepositAddressRequest, GetWithdrawalRequest, ListDepositsRequest,
    ListDepositsResponse, ListWithdrawalsRequest, ListWithdrawalsResponse, Withdrawal,
};
use rpc::{message, principal, request_id, uuid};
use tonic::{Request, Response, Status};

use crate::service::ChainService;

/// The gRPC server over the same service the REST handlers use.
pub fn server(service: Arc<ChainService>) -> ChainServiceServer<Rpc> {
    ChainServiceServer::new(Rpc(service))
}

pub struct Rpc(Arc<ChainService>);

#[tonic::async_trait]
impl chain_service_server::ChainService for Rpc {
    async fn get_deposit_address(
        &self,
        req: Request<GetDepositAddressRequest>,
    ) -> Result<Response<DepositAddress>, Status> {
        let who = principal(&req)?;
        let a = self.0.deposit_address(&who, &req.get_ref().chain).await.map_err(rpc::status)?;
        Ok(Response::new(message(&a)?))
    }

    async fn list_deposits(&self, req: Request<ListDepositsRequest>) -> Result<Response<ListDepositsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (items, next_cursor) = self
            .0
            .deposits(&who, r.user_id.as_deref(), r.status.as_deref(), r.limit, r.cursor.as_deref())
            .await
            .map_err(rpc::status)?;
        let items = items.iter().map(message).collect::<Result<_, _>>()?;
        Ok(Response::new(ListDepositsResponse { items, next_cursor }))
    }

    async fn create_withdrawal(&self, req: Request<CreateWithdrawalRequest>) -> Result<Response<Withdrawal>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let r = req.into_inner();
        let w = self
            .0
            .request_withdrawal(&who, &rid, &r.chain, &r.currency, &r.to_address, &r.amount)
            .await
            .map_err(rpc::status)?;
        Ok(Response::new(message(&w)?))
    }

    async fn get_withdrawal(&self, req: Request<GetWithdrawalRequest>) -> Result<Response<Withdrawal>, Status> {
        let who = principal(&req)?;
        let id = uuid("id", &req.get_ref().id)?;
        let w = self.0.withdrawal(&who, id).await.map_err(rpc::status)?;
        Ok(Response::new(message(&w)?))
    }

    async fn list_withdrawals(
        &self,
        req: Request<ListWithdrawalsRequest>,
    ) -> Result<Response<ListWithdrawalsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (items, next_cursor) = self
            .0
            .withdrawals(&who, r.user_id.as_deref(), r.status.as_deref(), r.limit, r.cursor.as_deref())
            .await
            .map_err(rpc::status)?;
        let items = items.iter().map(message).collect::<Result<_, _>>()?;
        Ok(Response::new(ListWithdrawalsResponse { items, next_cursor }))
    }
}
