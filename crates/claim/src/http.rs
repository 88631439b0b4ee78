//! Claim routes: `POST/GET /v1/orders/{id}/claim`, `/v1/claims...`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::service::{ClaimService, ClaimView, ListParams};
use web::ApiError;
use web::Principal;
use web::Problem;
use web::extract::{ApiQuery, IdPath, RequestId};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub user_id: Option<Uuid>,
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimList {
    pub items: Vec<ClaimView>,
    pub next_cursor: Option<String>,
}

pub fn router(service: Arc<ClaimService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(claim_order, order_claim))
        .routes(routes!(get_claim))
        .routes(routes!(release_claim))
        .routes(routes!(list_claims))
        .with_state(service)
}

/// Claim a pending order. Exactly one concurrent claimer wins; every other gets 409.
#[utoipa::path(post, path = "/v1/orders/{id}/claim", tag = "claims", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 201, body = ClaimView), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "ORDER_ALREADY_CLAIMED, or ORDER_CHANGED when the buyer changed it meanwhile"),
        (status = 422, body = Problem)))]
async fn claim_order(
    State(svc): State<Arc<ClaimService>>,
    who: Principal,
    rid: RequestId,
    IdPath(order_id): IdPath,
) -> Result<Response, ApiError> {
    let claim = svc.claim(&who, &rid, order_id).await?;
    let mut res = (StatusCode::CREATED, Json(svc.view(&claim))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/claims/{}", claim.id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// The order's newest claim.
#[utoipa::path(get, path = "/v1/orders/{id}/claim", tag = "claims", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = ClaimView), (status = 404, body = Problem)))]
async fn order_claim(
    State(svc): State<Arc<ClaimService>>,
    who: Principal,
    IdPath(order_id): IdPath,
) -> Result<Json<ClaimView>, ApiError> {
    Ok(Json(svc.view(&svc.for_order(&who, order_id).await?)))
}

/// One claim (its claimer, the order's buyer, or an admin).
#[utoipa::path(get, path = "/v1/claims/{id}", tag = "claims", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = ClaimView), (status = 404, body = Problem)))]
async fn get_claim(
    State(svc): State<Arc<ClaimService>>,
    who: Principal,
    IdPath(id): IdPath,
) -> Result<Json<ClaimView>, ApiError> {
    Ok(Json(svc.view(&svc.get(&who, id).await?)))
}

/// Give up a pending claim (the claimer only); the order becomes claimable again.
#[utoipa::path(post, path = "/v1/claims/{id}/release", tag = "claims", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ClaimView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
async fn release_claim(
    State(svc): State<Arc<ClaimService>>,
    who: Principal,
    rid: RequestId,
    IdPath(id): IdPath,
) -> Result<Json<ClaimView>, ApiError> {
    Ok(Json(svc.view(&svc.release(&who, &rid, id).await?)))
}

/// Your claims (admins: anyone's), newest first.
#[utoipa::path(get, path = "/v1/claims", tag = "claims", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = ClaimList), (status = 422, body = Problem)))]
async fn list_claims(
    State(svc): State<Arc<ClaimService>>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ClaimList>, ApiError> {
    let (items, next_cursor) =
        svc.list(&who, ListParams { user_id: q.user_id, status: q.status, limit: q.limit, cursor: q.cursor }).await?;
    Ok(Json(ClaimList { items: items.iter().map(|c| svc.view(c)).collect(), next_cursor }))
}
