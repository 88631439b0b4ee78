//! Identity (DESIGN D6): sign-in with Ethereum, RS256 access tokens, rotating refresh tokens,
//! and the principal every `/v1` handler acts for.

pub mod eth;
pub mod http;
pub mod jwt;
pub mod service;
pub mod store;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
pub use jwt::TokenKeys;
pub use service::AuthService;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
    Service,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub address: String,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Admins and services act across users.
    pub fn is_privileged(&self) -> bool {
        self.roles.iter().any(|r| matches!(r, Role::Admin | Role::Service))
    }

    /// 403 unless an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() { Ok(()) } else { Err(ApiError::forbidden("admin role required")) }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("UNAUTHENTICATED", "a bearer token is required"))
    }
}

/// Middleware for protected routes: verifies the bearer token and attaches the [`Principal`].
pub async fn require_token(State(keys): State<Arc<TokenKeys>>, mut req: Request, next: Next) -> Response {
    let header = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) else {
        return ApiError::unauthorized("UNAUTHENTICATED", "a bearer token is required").into_response();
    };
    match keys.verify(token.trim()) {
        Ok(claims) => {
            req.extensions_mut().insert(Principal { user_id: claims.sub, address: claims.addr, roles: claims.roles });
            next.run(req).await
        }
        Err(reason) => ApiError::unauthorized("INVALID_TOKEN", reason).into_response(),
    }
}
