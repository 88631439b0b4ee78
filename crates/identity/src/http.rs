//! Sign-in routes (`/v1/auth/*`), `/v1/me` and the JWKS document.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use web::extract::ApiJson;
use web::{ApiError, Principal, Problem};

use crate::AuthService;
use crate::service::{NonceResponse, TokenResponse, UserView};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NonceRequest {
    /// `0x`-prefixed address; mixed case must be a valid EIP-55 checksum.
    #[schema(pattern = "^0x[0-9a-fA-F]{40}$", example = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")]
    pub address: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The EIP-4361 message from `/v1/auth/nonce`, exactly as signed.
    pub message: String,
    /// `0x` + 65 bytes hex (EIP-191 `personal_sign`).
    pub signature: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Routes that need no token.
pub fn public_router(auth: Arc<AuthService>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(nonce))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .with_state(auth.clone())
        .route("/.well-known/jwks.json", axum::routing::get(move || async move { Json(auth.keys().jwks()) }))
}

/// Routes behind the token middleware.
pub fn protected_router(auth: Arc<AuthService>) -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(me)).with_state(auth)
}

/// Issue a sign-in nonce and the EIP-4361 message to sign.
#[utoipa::path(post, path = "/v1/auth/nonce", tag = "auth", request_body = NonceRequest,
    responses((status = 200, body = NonceResponse), (status = 422, body = Problem)))]
async fn nonce(
    State(auth): State<Arc<AuthService>>,
    ApiJson(req): ApiJson<NonceRequest>,
) -> Result<Json<NonceResponse>, ApiError> {
    Ok(Json(auth.nonce(&req.address).await?))
}

/// Sign in with a signed message.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem), (status = 422, body = Problem)))]
async fn login(
    State(auth): State<Arc<AuthService>>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    Ok(Json(auth.login(&req.message, &req.signature).await?))
}

/// Exchange a refresh token for a new pair; the old one stops working.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = Problem)))]
async fn refresh(
    State(auth): State<Arc<AuthService>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    Ok(Json(auth.refresh(&req.refresh_token).await?))
}

/// Revoke a refresh token and its whole family.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest, responses((status = 204)))]
async fn logout(
    State(auth): State<Arc<AuthService>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    auth.logout(&req.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = Problem)))]
async fn me(State(auth): State<Arc<AuthService>>, principal: Principal) -> Result<Json<UserView>, ApiError> {
    let user = auth.store().get_user(principal.user_id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(UserView { id: user.id, address: user.address, roles: principal.roles }))
}
