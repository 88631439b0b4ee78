//! The order service: buyers' orders with items, a server-computed total and a status lifecycle.

pub mod domain;
pub mod http;
pub mod service;
pub mod store;

pub use service::OrderService;
pub use store::MIGRATIONS;
