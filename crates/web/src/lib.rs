//! The HTTP edge every service shares: [`ApiError`] and its problem+json responses, extractors that
//! name the bad field, request ids, the per-request log line and metrics, rate limits,
//! `Idempotency-Key`, health, the [`Principal`] a handler acts for, and list cursors.

pub mod breaker;
pub mod consistency;
pub mod cursor;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod observe;
pub mod openapi;
pub mod principal;
pub mod proxies;
pub mod ratelimit;

pub use error::{ApiError, FieldError, Problem};
pub use principal::{Principal, Role};
pub use proxies::TrustedProxies;
