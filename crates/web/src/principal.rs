//! The authenticated caller of a request, as every `/v1` handler sees it. Identity (crate
//! `identity`) verifies the token and attaches it; services only read it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base::ErrorCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

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
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "a bearer token is required"))
    }
}
