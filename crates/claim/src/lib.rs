//! The claim service: shoppers claim open orders (at most one live claim per order, guarded by
//! a partial unique index), and claims are processed through events.

pub mod domain;
pub mod http;
pub mod processor;
pub mod service;
pub mod store;

pub use processor::ClaimProcessor;
pub use service::ClaimService;
pub use store::MIGRATIONS;
