//! Identity (DESIGN D6): sign-in with Ethereum, RS256 access tokens, rotating refresh tokens,
//! and the middleware that turns a bearer token into the [`Principal`] every `/v1` handler acts for.

pub mod db;
pub mod eth;
pub mod http;
pub mod jwt;
pub mod service;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base::ErrorCode;
use web::ApiError;

pub use db::IdentityStore;
pub use jwt::TokenKeys;
pub use service::{AuthService, SignInOptions};

/// Middleware for protected routes: verifies the bearer token and attaches the [`Principal`],
/// with the roles the configuration gives its address now (see [`AuthService::principal`]).
pub async fn require_token(State(auth): State<Arc<AuthService>>, mut req: Request, next: Next) -> Response {
    let header = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) else {
        return ApiError::new(ErrorCode::Unauthenticated, "a bearer token is required").into_response();
    };
    match auth.principal(token.trim()) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(reason) => ApiError::new(ErrorCode::InvalidToken, reason).into_response(),
    }
}
