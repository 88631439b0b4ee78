//! The supply service: a shopper's declared supply of an asset they can fulfil orders with.

pub mod domain;
pub mod http;
pub mod reservation;
pub mod service;
pub mod store;

pub use service::SupplyService;
pub use store::MIGRATIONS;
