//! The one error type at the edge: a status, a stable code and an RFC 9457 problem+json body.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base::ErrorCode;
use serde::Serialize;

/// One bad field of a request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// The problem+json body every error answers with.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// For 5xx only: the cause, logged once by the middleware and never sent.
    source: Option<anyhow::Error>,
}

/// Carried in the response extensions so the logging middleware can log a 5xx's cause once.
#[derive(Clone, Debug)]
pub struct ErrorCause(pub Arc<anyhow::Error>);

impl ApiError {
    /// An error with `code`'s status.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self { status, code, detail: detail.into(), errors: Vec::new(), source: None }
    }

    /// 422 `VALIDATION_FAILED` listing every bad field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
        Self { errors, ..Self::new(ErrorCode::ValidationFailed, detail) }
    }

    /// A domain code (422 as a rule) and the field it concerns.
    pub fn unprocessable_field(code: ErrorCode, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self { errors: vec![FieldError::new(field, message.clone())], ..Self::new(code, format!("{field}: {message}")) }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, detail)
    }

    pub fn version_mismatch() -> Self {
        Self::new(ErrorCode::VersionMismatch, "the resource changed since that version; fetch it again")
    }

    /// 500: the client sees a generic body; the cause is logged once by the middleware.
    /// A database that cannot be reached is 503 instead: the client may retry.
    pub fn internal(cause: anyhow::Error) -> Self {
        if is_unavailable(&cause) {
            return Self::unavailable(cause);
        }
        Self { source: Some(cause), ..Self::new(ErrorCode::Internal, "internal error") }
    }

    /// 503 for a dependency that does not answer.
    pub fn unavailable(cause: anyhow::Error) -> Self {
        Self { source: Some(cause), ..Self::new(ErrorCode::Unavailable, "a dependency is unavailable; retry later") }
    }

    /// For 5xx: the cause, to be logged once where the error leaves the process.
    pub fn cause(&self) -> Option<&anyhow::Error> {
        self.source.as_ref()
    }

    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("https://walletd.dev/problems/{}", self.code.as_str().to_ascii_lowercase().replace('_', "-")),
            title: self.status.canonical_reason().unwrap_or("Error").to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str().to_string(),
            errors: self.errors.clone(),
        }
    }
}

/// Whether an error means "a dependency is not reachable" rather than "something is wrong".
fn is_unavailable(cause: &anyhow::Error) -> bool {
    is_database_unreachable(cause) || cause.chain().any(|e| e.downcast_ref::<base::Unreachable>().is_some())
}

/// Whether an error means "the database is not reachable".
pub fn is_database_unreachable(cause: &anyhow::Error) -> bool {
    cause.chain().any(|e| {
        e.downcast_ref::<deadpool_postgres::PoolError>().is_some()
            || e.downcast_ref::<tokio_postgres::Error>().is_some_and(tokio_postgres::Error::is_closed)
    })
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(cause) = self.source {
            res.extensions_mut().insert(ErrorCause(Arc::new(cause)));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak() {
        let e = ApiError::internal(anyhow::anyhow!("password=hunter2 connection refused"));
        let p = serde_json::to_string(&e.problem()).unwrap_or_default();
        assert!(!p.contains("hunter2"));
        assert!(p.contains("\"code\":\"INTERNAL\""));
    }
}
