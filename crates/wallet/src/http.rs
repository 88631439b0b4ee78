//! Wallet routes: `/v1/wallet/...` and the admin's deposits and `verify`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::Verification;
use crate::service::{AccountView, DepositView, EntryView, HoldView, TransferView, WalletService};
use web::extract::{ApiJson, ApiQuery, IdPath, RequestId};
use web::{ApiError, Principal, Problem};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTransfer {
    pub to_user_id: Uuid,
    pub currency: String,
    /// Above zero, within the asset's decimals.
    #[schema(pattern = r"^[0-9]{1,20}(\.[0-9]{1,18})?$", example = "12.5")]
    pub amount: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeposit {
    pub user_id: Uuid,
    pub currency: String,
    #[schema(pattern = r"^[0-9]{1,20}(\.[0-9]{1,18})?$", example = "100")]
    pub amount: String,
    /// Unique across all deposits: a repeat with the same body answers the first deposit.
    #[schema(min_length = 1, max_length = 128)]
    pub reference: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccountsQuery {
    /// Admins: another owner (a user id, or `@world`).
    pub user_id: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    /// Admins: another owner (a user id, or `@world`).
    pub user_id: Option<String>,
    pub currency: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HoldsQuery {
    /// Admins: another user.
    pub user_id: Option<String>,
    /// `pending`, `posted` or `voided`.
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountList {
    pub items: Vec<AccountView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntryList {
    pub items: Vec<EntryView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HoldList {
    pub items: Vec<HoldView>,
    pub next_cursor: Option<String>,
}

/// The wallet routes (they expect the token middleware around them).
pub fn router(service: Arc<WalletService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(list_accounts))
        .routes(routes!(get_account))
        .routes(routes!(list_entries))
        .routes(routes!(list_holds))
        .routes(routes!(create_transfer))
        .routes(routes!(get_transfer))
        .routes(routes!(create_deposit))
        .routes(routes!(verify_ledger))
        .with_state(service)
}

/// Your accounts, one per registered asset (admins: `?user_id=`).
#[utoipa::path(get, path = "/v1/wallet/accounts", tag = "wallet", security(("bearer" = [])), params(AccountsQuery),
    responses((status = 200, body = AccountList), (status = 403, body = Problem)))]
async fn list_accounts(
    State(svc): State<Arc<WalletService>>,
    who: Principal,
    ApiQuery(q): ApiQuery<AccountsQuery>,
) -> Result<Json<AccountList>, ApiError> {
    let accounts = svc.accounts(&who, q.user_id.as_deref()).await?;
    Ok(Json(AccountList { items: accounts.iter().map(|a| svc.account_view(a)).collect() }))
}

/// Your account in one asset.
#[utoipa::path(get, path = "/v1/wallet/accounts/{currency}", tag = "wallet", security(("bearer" = [])),
    params(("currency" = String, Path)), responses((status = 200, body = AccountView), (status = 422, body = Problem)))]
async fn get_account(
    State(svc): State<Arc<WalletService>>,
    who: Principal,
    Path(currency): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(svc.account_view(&svc.account(&who, &currency).await?)))
}

/// Your ledger entries, newest first (admins: `?user_id=`).
#[utoipa::path(get, path = "/v1/wallet/entries", tag = "wallet", security(("bearer" = [])), params(EntriesQuery),
    responses((status = 200, body = EntryList), (status = 422, body = Problem)))]
async fn list_entries(
    State(svc): State<Arc<WalletService>>,
    who: Principal,
    ApiQuery(q): ApiQuery<EntriesQuery>,
) -> Result<Json<EntryList>, ApiError> {
    let (items, next_cursor) =
        svc.entries(&who, q.user_id.as_deref(), q.currency.as_deref(), q.limit, q.cursor.as_deref()).await?;
    Ok(Json(EntryList { items: items.iter().map(|e| svc.entry_view(e)).collect(), next_cursor }))
}

/// Your holds, newest first (admins: `?user_id=`).
#[utoipa::path(get, path = "/v1/wallet/holds", tag = "wallet", security(("bearer" = [])), params(HoldsQuery),
    responses((status = 200, body = HoldList), (status = 422, body = Problem)))]
async fn list_holds(
    State(svc): State<Arc<WalletService>>,
    who: Principal,
    ApiQuery(q): ApiQuery<HoldsQuery>,
) -> Result<Json<HoldList>, ApiError> {
    let (items, next_cursor) =
        svc.holds(&who, q.user_id.as_deref(), q.status.as_deref(), q.limit, q.cursor.as_deref()).await?;
    Ok(Json(HoldList { items: items.iter().map(|h| svc.hold_view(h)).collect(), next_cursor }))
}

/// Send money to another user.
#[utoipa::path(post, path = "/v1/wallet/transfers", tag = "wallet", request_body = CreateTransfer,
    security(("bearer" = [])),
    responses((status = 201, body = TransferView),
        (status = 422, body = Problem, description = "INSUFFICIENT_FUNDS, or VALIDATION_FAILED naming the field")))]
async fn create_transfer(
    State(svc): State<Arc<WalletService>>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<CreateTransfer>,
) -> Result<Response, ApiError> {
    let t = svc.transfer(&who, &rid, req.to_user_id, &req.currency, &req.amount).await?;
    let mut res = (StatusCode::CREATED, Json(svc.transfer_view(&t))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/wallet/transfers/{}", t.id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// One transfer (its sender, its receiver, or an admin).
#[utoipa::path(get, path = "/v1/wallet/transfers/{id}", tag = "wallet", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = TransferView), (status = 404, body = Problem)))]
async fn get_transfer(
    State(svc): State<Arc<WalletService>>,
    who: Principal,
    IdPath(id): IdPath,
) -> Result<Json<TransferView>, ApiError> {
    Ok(Json(svc.transfer_view(&svc.get_transfer(&who, id).await?)))
}

/// Credit a user (admins). A repeat of a reference with the same body answers 200 and the first deposit.
#[utoipa::path(post, path = "/v1/admin/deposits", tag = "wallet", request_body = CreateDeposit,
    security(("bearer" = [])),
    responses((status = 201, body = DepositView), (status = 200, body = DepositView), (status = 403, body = Problem),
        (status = 409, body = Problem, description = "DEPOSIT_REFERENCE_CONFLICT")))]
async fn create_deposit(
    State(svc): State<Arc<WalletService>>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<CreateDeposit>,
) -> Result<Response, ApiError> {
    let (d, new) = svc.deposit(&who, &rid, req.user_id, &req.currency, &req.amount, &req.reference).await?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(svc.deposit_view(&d))).into_response())
}

/// Recompute the ledger: journals sum to zero, balances equal their entries, `held` its pending holds.
#[utoipa::path(get, path = "/v1/admin/wallet/verify", tag = "wallet", security(("bearer" = [])),
    responses((status = 200, body = Verification), (status = 403, body = Problem)))]
async fn verify_ledger(State(svc): State<Arc<WalletService>>, who: Principal) -> Result<Json<Verification>, ApiError> {
    who.require_admin()?;
    Ok(Json(svc.verify().await?))
}
