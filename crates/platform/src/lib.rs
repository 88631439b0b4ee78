//! What every walletd service shares: configuration, storage pools and migrations, the
//! transactional outbox, identity (sign-in with Ethereum, JWT), the error model, HTTP plumbing
//! and telemetry.

pub mod auth;
pub mod cache;
pub mod clients;
pub mod clock;
pub mod config;
pub mod cursor;
pub mod db;
pub mod error;
pub mod events;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod kafka;
pub mod lease;
pub mod money;
pub mod outbox;
pub mod ratelimit;
pub mod sqlite;
pub mod telemetry;

pub use error::{ApiError, FieldError};
