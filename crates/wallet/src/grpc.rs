//! `walletd.v1.WalletService`: the REST wallet and wallet admin operations one to one over
//! [`WalletService`], plus the hold and settlement steps orders and claims ask of the wallet
//! (role `service`).

use std::sync::Arc;

use rpc::v1::wallet_service_server::{self, WalletServiceServer};
use rpc::v1::{
    Account, CheckSettlementRequest, CreateDepositRequest, CreateTransferRequest, Deposit, GetAccountRequest,
    GetTransferRequest, ListAccountsRequest, ListAccountsResponse, ListEntriesRequest, ListEntriesResponse,
    ListHoldsRequest, ListHoldsResponse, PlaceOrderHoldRequest, PlaceOrderHoldResponse, ReleaseHoldRequest,
    SetHoldAmountRequest, SettleRequest, StepResponse, Transfer, VerifyLedgerRequest, VerifyLedgerResponse,
};
use rpc::{decimal, event_context, internal, message, principal, request_id, service_principal, step_answer, uuid};
use tonic::{Request, Response, Status};

use base::Step;

use crate::service::WalletService;

/// The gRPC server over the same service the REST handlers use.
pub fn server(service: Arc<WalletService>) -> WalletServiceServer<Rpc> {
    WalletServiceServer::new(Rpc(service))
}

pub struct Rpc(Arc<WalletService>);

/// A count of the ledger check as its message's `int64`.
fn count(n: usize) -> Result<i64, Status> {
    i64::try_from(n).map_err(|_| internal(anyhow::anyhow!("a ledger count ({n}) does not fit an int64")))
}

#[tonic::async_trait]
impl wallet_service_server::WalletService for Rpc {
    async fn list_accounts(&self, req: Request<ListAccountsRequest>) -> Result<Response<ListAccountsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let accounts = self.0.accounts(&who, r.user_id.as_deref()).await.map_err(rpc::status)?;
        let items = accounts.iter().map(|a| message(&self.0.account_view(a))).collect::<Result<_, _>>()?;
        Ok(Response::new(ListAccountsResponse { items }))
    }

    async fn get_account(&self, req: Request<GetAccountRequest>) -> Result<Response<Account>, Status> {
        let who = principal(&req)?;
        let a = self.0.account(&who, &req.get_ref().currency).await.map_err(rpc::status)?;
        Ok(Response::new(message(&self.0.account_view(&a))?))
    }

    async fn list_entries(&self, req: Request<ListEntriesRequest>) -> Result<Response<ListEntriesResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (items, next_cursor) = self
            .0
            .entries(&who, None, r.currency.as_deref(), r.limit, r.cursor.as_deref())
            .await
            .map_err(rpc::status)?;
        let items = items.iter().map(|e| message(&self.0.entry_view(e))).collect::<Result<_, _>>()?;
        Ok(Response::new(ListEntriesResponse { items, next_cursor }))
    }

    async fn list_holds(&self, req: Request<ListHoldsRequest>) -> Result<Response<ListHoldsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (items, next_cursor) =
            self.0.holds(&who, None, r.status.as_deref(), r.limit, r.cursor.as_deref()).await.map_err(rpc::status)?;
        let items = items.iter().map(|h| message(&self.0.hold_view(h))).collect::<Result<_, _>>()?;
        Ok(Response::new(ListHoldsResponse { items, next_cursor }))
    }

    async fn create_transfer(&self, req: Request<CreateTransferRequest>) -> Result<Response<Transfer>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let r = req.into_inner();
        let to = uuid("to_user_id", &r.to_user_id)?;
        let t = self.0.transfer(&who, &rid, to, &r.currency, &r.amount).await.map_err(rpc::status)?;
        Ok(Response::new(message(&self.0.transfer_view(&t))?))
    }

    async fn get_transfer(&self, req: Request<GetTransferRequest>) -> Result<Response<Transfer>, Status> {
        let who = principal(&req)?;
        let id = uuid("id", &req.get_ref().id)?;
        let t = self.0.get_transfer(&who, id).await.map_err(rpc::status)?;
        Ok(Response::new(message(&self.0.transfer_view(&t))?))
    }

    /// Admins only (the service checks, as for REST); a repeated deposit answers the first one.
    async fn create_deposit(&self, req: Request<CreateDepositRequest>) -> Result<Response<Deposit>, Status> {
        let (who, rid) = (principal(&req)?, request_id(&req));
        let r = req.into_inner();
        let user = uuid("user_id", &r.user_id)?;
        let (d, _new) =
            self.0.deposit(&who, &rid, user, &r.currency, &r.amount, &r.reference).await.map_err(rpc::status)?;
        Ok(Response::new(message(&self.0.deposit_view(&d))?))
    }

    async fn verify_ledger(&self, req: Request<VerifyLedgerRequest>) -> Result<Response<VerifyLedgerResponse>, Status> {
        let who = principal(&req)?;
        who.require_admin().map_err(rpc::status)?;
        let v = self.0.verify().await.map_err(internal)?;
        Ok(Response::new(VerifyLedgerResponse {
            ok: v.ok,
            accounts_checked: count(v.accounts_checked)?,
            transactions_checked: count(v.transactions_checked)?,
            mismatches: v.mismatches,
        }))
    }

    async fn place_order_hold(
        &self,
        req: Request<PlaceOrderHoldRequest>,
    ) -> Result<Response<PlaceOrderHoldResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (buyer, order) = (uuid("user_id", &r.user_id)?, uuid("order_id", &r.order_id)?);
        let (amount, ctx) = (decimal("amount", &r.amount)?, event_context(r.context)?);
        let hold = self.0.hold_for_order(buyer, &r.currency, amount, order, &ctx).await.map_err(internal)?;
        Ok(Response::new(PlaceOrderHoldResponse { hold_id: hold.map(|id| id.to_string()) }))
    }

    async fn set_hold_amount(&self, req: Request<SetHoldAmountRequest>) -> Result<Response<StepResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (hold, amount) = (uuid("hold_id", &r.hold_id)?, decimal("amount", &r.amount)?);
        let ctx = event_context(r.context)?;
        let set = self.0.set_hold_amount(hold, amount, &ctx).await;
        step_answer(set.map(|ok| if ok { Step::Done } else { Step::Refused("insufficient funds".into()) }))
    }

    async fn release_hold(&self, req: Request<ReleaseHoldRequest>) -> Result<Response<StepResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (hold, ctx) = (uuid("hold_id", &r.hold_id)?, event_context(r.context)?);
        step_answer(self.0.release_hold(hold, &ctx).await.map(|()| Step::Done))
    }

    async fn check_settlement(&self, req: Request<CheckSettlementRequest>) -> Result<Response<StepResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (order, amount) = (uuid("order_id", &r.order_id)?, decimal("amount", &r.amount)?);
        let ctx = event_context(r.context)?;
        step_answer(self.0.check_settlement(order, amount, &ctx).await)
    }

    async fn settle(&self, req: Request<SettleRequest>) -> Result<Response<StepResponse>, Status> {
        service_principal(&req)?;
        let r = req.into_inner();
        let (claim, order) = (uuid("claim_id", &r.claim_id)?, uuid("order_id", &r.order_id)?);
        let (shopper, amount) = (uuid("shopper_id", &r.shopper_id)?, decimal("amount", &r.amount)?);
        let ctx = event_context(r.context)?;
        step_answer(self.0.settle(claim, order, shopper, amount, &ctx).await)
    }
}
