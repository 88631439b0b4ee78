//! Chain routes: `/v1/wallet/deposit-addresses/{chain}` and `/v1/wallet/deposits`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::service::{ChainService, DepositAddress, DepositView};
use crate::withdraw::WithdrawalView;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use web::extract::{ApiJson, ApiQuery, IdPath, RequestId};
use web::{ApiError, Principal, Problem};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DepositsQuery {
    /// Admins: a user id, or `all`.
    pub user_id: Option<String>,
    /// `seen`, `credited`, `dropped` or `reorged` (credited, then removed by a reorg: to look at).
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DepositList {
    pub items: Vec<DepositView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWithdrawal {
    /// A configured chain's name.
    pub chain: String,
    /// An asset withdrawable on that chain.
    pub currency: String,
    /// `0x` and 40 hex digits; EIP-55 checksummed when it mixes cases.
    #[schema(pattern = "^0x[0-9a-fA-F]{40}$")]
    pub to_address: String,
    /// Above zero, within the asset's and the token's decimals.
    #[schema(pattern = r"^[0-9]{1,20}(\.[0-9]{1,18})?$", example = "12.5")]
    pub amount: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalsQuery {
    /// Admins: a user id, or `all`.
    pub user_id: Option<String>,
    /// `requested`, `signed`, `broadcast`, `confirmed` or `failed`.
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WithdrawalList {
    pub items: Vec<WithdrawalView>,
    pub next_cursor: Option<String>,
}

/// The chain routes (they expect the token middleware around them).
pub fn router(service: Arc<ChainService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(deposit_address))
        .routes(routes!(list_deposits))
        .routes(routes!(create_withdrawal, list_withdrawals))
        .routes(routes!(get_withdrawal))
        .with_state(service)
}

/// Send money out to an address on a chain: the amount is held now, and paid out once the
/// transaction is final.
#[utoipa::path(post, path = "/v1/wallet/withdrawals", tag = "wallet", request_body = CreateWithdrawal,
    security(("bearer" = [])),
    responses((status = 201, body = WithdrawalView),
        (status = 422, body = Problem, description = "INSUFFICIENT_FUNDS, or VALIDATION_FAILED naming the field")))]
async fn create_withdrawal(
    State(svc): State<Arc<ChainService>>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<CreateWithdrawal>,
) -> Result<Response, ApiError> {
    let w = svc.request_withdrawal(&who, &rid, &req.chain, &req.currency, &req.to_address, &req.amount).await?;
    let mut res = (StatusCode::CREATED, Json(w.clone())).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/wallet/withdrawals/{}", w.id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// Your withdrawals, newest first (admins: `?user_id=`, or `all`).
#[utoipa::path(get, path = "/v1/wallet/withdrawals", tag = "wallet", security(("bearer" = [])), params(WithdrawalsQuery),
    responses((status = 200, body = WithdrawalList), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_withdrawals(
    State(svc): State<Arc<ChainService>>,
    who: Principal,
    ApiQuery(q): ApiQuery<WithdrawalsQuery>,
) -> Result<Json<WithdrawalList>, ApiError> {
    let (items, next_cursor) =
        svc.withdrawals(&who, q.user_id.as_deref(), q.status.as_deref(), q.limit, q.cursor.as_deref()).await?;
    Ok(Json(WithdrawalList { items, next_cursor }))
}

/// One withdrawal (its owner, or an admin).
#[utoipa::path(get, path = "/v1/wallet/withdrawals/{id}", tag = "wallet", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = WithdrawalView), (status = 404, body = Problem)))]
async fn get_withdrawal(
    State(svc): State<Arc<ChainService>>,
    who: Principal,
    IdPath(id): IdPath,
) -> Result<Json<WithdrawalView>, ApiError> {
    Ok(Json(svc.withdrawal(&who, id).await?))
}

/// Your deposit address on a chain: the same every time.
#[utoipa::path(get, path = "/v1/wallet/deposit-addresses/{chain}", tag = "wallet", security(("bearer" = [])),
    params(("chain" = String, Path)), responses((status = 200, body = DepositAddress), (status = 404, body = Problem)))]
async fn deposit_address(
    State(svc): State<Arc<ChainService>>,
    who: Principal,
    Path(chain): Path<String>,
) -> Result<Json<DepositAddress>, ApiError> {
    Ok(Json(svc.deposit_address(&who, &chain).await?))
}

/// Deposits from chains, newest first, from when they are first seen (admins: `?user_id=`, or `all`).
#[utoipa::path(get, path = "/v1/wallet/deposits", tag = "wallet", security(("bearer" = [])), params(DepositsQuery),
    responses((status = 200, body = DepositList), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_deposits(
    State(svc): State<Arc<ChainService>>,
    who: Principal,
    ApiQuery(q): ApiQuery<DepositsQuery>,
) -> Result<Json<DepositList>, ApiError> {
    let (items, next_cursor) =
        svc.deposits(&who, q.user_id.as_deref(), q.status.as_deref(), q.limit, q.cursor.as_deref()).await?;
    Ok(Json(DepositList { items, next_cursor }))
}
