//! The order service: buyers' orders with items, a server-computed total and a status lifecycle.

pub mod domain;
pub mod grpc;
pub mod http;
pub mod service;
pub mod store;

pub use service::OrderService;
pub use store::MIGRATIONS;

/// This service's cache keys (DESIGN D5) and the events that make them stale.
pub mod keys {
    use events::EventEnvelope;
    use uuid::Uuid;

    pub fn order(id: Uuid) -> String {
        format!("order:{id}")
    }

    /// Every `order.*` event makes its order stale.
    pub const INVALIDATION: cache::Invalidation =
        cache::Invalidation { prefix: "order.", keys: |e: &EventEnvelope| vec![order(e.aggregate_id)] };
}
