//! `/v1/supplies`: thin handlers over [`SupplyService`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::service::{ListParams, SupplyService, SupplyView};
use web::ApiError;
use web::Principal;
use web::Problem;
use web::extract::{ApiJson, ApiQuery, IdPath, RequestId, if_match, with_etag};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSupply {
    /// A configured asset code, e.g. `USDC`.
    pub currency: String,
    /// A decimal string within the asset's decimals, e.g. `"250.5"`.
    #[schema(pattern = r"^[0-9]{1,20}(\.[0-9]{1,18})?$", example = "250.5")]
    pub amount: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchSupply {
    #[schema(pattern = r"^[0-9]{1,20}(\.[0-9]{1,18})?$", example = "250.5")]
    pub amount: Option<String>,
    /// `active` or `paused`.
    #[schema(pattern = "^(active|paused)$")]
    pub status: Option<String>,
    /// The version the change is based on; `If-Match` takes precedence.
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub user_id: Option<Uuid>,
    pub currency: Option<String>,
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SupplyList {
    pub items: Vec<SupplyView>,
    pub next_cursor: Option<String>,
}

/// The supply routes (they expect the token middleware around them).
pub fn router(service: Arc<SupplyService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_supply, list_supplies))
        .routes(routes!(get_supply, patch_supply, delete_supply))
        .with_state(service)
}

/// Declare supply.
#[utoipa::path(post, path = "/v1/supplies", tag = "supplies", request_body = CreateSupply, security(("bearer" = [])),
    responses((status = 201, body = SupplyView), (status = 422, body = Problem), (status = 415, body = Problem)))]
async fn create_supply(
    State(svc): State<Arc<SupplyService>>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<CreateSupply>,
) -> Result<Response, ApiError> {
    let supply = svc.create(&who, &rid, &req.currency, &req.amount).await?;
    let mut res = {
        let view = svc.view(&supply);
        with_etag(StatusCode::CREATED, view.version, view)
    };
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/supplies/{}", supply.id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// One supply.
#[utoipa::path(get, path = "/v1/supplies/{id}", tag = "supplies", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = SupplyView), (status = 404, body = Problem)))]
async fn get_supply(
    State(svc): State<Arc<SupplyService>>,
    who: Principal,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let supply = svc.get(&who, id).await?;
    Ok({
        let view = svc.view(&supply);
        with_etag(StatusCode::OK, view.version, view)
    })
}

/// Change amount or status; honours `If-Match` (412 when stale).
#[utoipa::path(patch, path = "/v1/supplies/{id}", tag = "supplies", request_body = PatchSupply, security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = SupplyView), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 412, body = Problem), (status = 422, body = Problem)))]
async fn patch_supply(
    State(svc): State<Arc<SupplyService>>,
    who: Principal,
    rid: RequestId,
    IdPath(id): IdPath,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PatchSupply>,
) -> Result<Response, ApiError> {
    let version = if_match(&headers)?.or(req.version);
    let supply = svc.patch(&who, &rid, id, version, req.amount.as_deref(), req.status.as_deref()).await?;
    Ok({
        let view = svc.view(&supply);
        with_etag(StatusCode::OK, view.version, view)
    })
}

/// Soft-delete; 409 `SUPPLY_RESERVED` while anything is reserved.
#[utoipa::path(delete, path = "/v1/supplies/{id}", tag = "supplies", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem), (status = 412, body = Problem)))]
async fn delete_supply(
    State(svc): State<Arc<SupplyService>>,
    who: Principal,
    rid: RequestId,
    IdPath(id): IdPath,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    svc.delete(&who, &rid, id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's supplies (admins: anyone's), newest first.
#[utoipa::path(get, path = "/v1/supplies", tag = "supplies", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = SupplyList), (status = 422, body = Problem)))]
async fn list_supplies(
    State(svc): State<Arc<SupplyService>>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<SupplyList>, ApiError> {
    let params =
        ListParams { user_id: q.user_id, currency: q.currency, status: q.status, limit: q.limit, cursor: q.cursor };
    let (items, next_cursor) = svc.list(&who, params).await?;
    Ok(Json(SupplyList { items: items.iter().map(|s| svc.view(s)).collect(), next_cursor }))
}
