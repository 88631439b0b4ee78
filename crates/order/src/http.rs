//! `/v1/orders`: thin handlers over [`OrderService`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::ItemInput;
use crate::service::{ItemView, ListParams, OrderService, OrderView};
use web::ApiError;
use web::Principal;
use web::Problem;
use web::extract::{ApiJson, ApiQuery, IdPath, RequestId, if_match, with_etag};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    pub currency: String,
    /// 1 to 100 items. The total is computed by the server; sending one is refused.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ItemInput>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchOrder {
    #[schema(min_items = 1, max_items = 100)]
    pub items: Option<Vec<ItemInput>>,
    /// Only `cancelled`.
    #[schema(pattern = "^cancelled$")]
    pub status: Option<String>,
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub user_id: Option<Uuid>,
    pub status: Option<String>,
    pub currency: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderList {
    pub items: Vec<OrderView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ItemList {
    pub items: Vec<ItemView>,
}

/// The order routes (behind the token middleware).
pub fn router(service: Arc<OrderService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_order, list_orders))
        .routes(routes!(get_order, patch_order, delete_order))
        .routes(routes!(order_items))
        .with_state(service)
}

/// Place an order.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = CreateOrder, security(("bearer" = [])),
    responses((status = 201, body = OrderView), (status = 422, body = Problem)))]
async fn create_order(
    State(svc): State<Arc<OrderService>>,
    who: Principal,
    rid: RequestId,
    ApiJson(req): ApiJson<CreateOrder>,
) -> Result<Response, ApiError> {
    let order = svc.create(&who, &rid, &req.currency, &req.items).await?;
    let mut res = {
        let view = svc.view(&order);
        with_etag(StatusCode::CREATED, view.version, view)
    };
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/orders/{}", order.id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// One order (yours, or any pending one).
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = OrderView), (status = 404, body = Problem)))]
async fn get_order(
    State(svc): State<Arc<OrderService>>,
    who: Principal,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let order = svc.get(&who, id).await?;
    Ok({
        let view = svc.view(&order);
        with_etag(StatusCode::OK, view.version, view)
    })
}

/// An order's items.
#[utoipa::path(get, path = "/v1/orders/{id}/items", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = ItemList), (status = 404, body = Problem)))]
async fn order_items(
    State(svc): State<Arc<OrderService>>,
    who: Principal,
    IdPath(id): IdPath,
) -> Result<Json<ItemList>, ApiError> {
    let order = svc.get(&who, id).await?;
    Ok(Json(ItemList { items: svc.item_views(&order) }))
}

/// Replace the items or cancel, only while pending (409 `ORDER_NOT_PENDING`).
#[utoipa::path(patch, path = "/v1/orders/{id}", tag = "orders", request_body = PatchOrder, security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 409, body = Problem), (status = 412, body = Problem),
        (status = 422, body = Problem)))]
async fn patch_order(
    State(svc): State<Arc<OrderService>>,
    who: Principal,
    rid: RequestId,
    IdPath(id): IdPath,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PatchOrder>,
) -> Result<Response, ApiError> {
    let version = if_match(&headers)?.or(req.version);
    let order = svc.patch(&who, &rid, id, version, req.items.as_deref(), req.status.as_deref()).await?;
    Ok({
        let view = svc.view(&order);
        with_etag(StatusCode::OK, view.version, view)
    })
}

/// Delete a pending or cancelled order.
#[utoipa::path(delete, path = "/v1/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem), (status = 412, body = Problem)))]
async fn delete_order(
    State(svc): State<Arc<OrderService>>,
    who: Principal,
    rid: RequestId,
    IdPath(id): IdPath,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    svc.delete(&who, &rid, id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Your orders; with `status=pending`, the claimable orders of others.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = OrderList), (status = 422, body = Problem)))]
async fn list_orders(
    State(svc): State<Arc<OrderService>>,
    who: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<OrderList>, ApiError> {
    let params =
        ListParams { user_id: q.user_id, status: q.status, currency: q.currency, limit: q.limit, cursor: q.cursor };
    let (items, next_cursor) = svc.list(&who, params).await?;
    Ok(Json(OrderList { items: items.iter().map(|o| svc.view(o)).collect(), next_cursor }))
}
