//! The supply service: a shopper's declared supply of an asset they can fulfil orders with.

pub mod domain;
pub mod grpc;
pub mod http;
pub mod reservation;
pub mod service;
pub mod store;

pub use service::SupplyService;
pub use store::MIGRATIONS;

/// This service's cache keys (DESIGN D5) and the events that make them stale.
pub mod keys {
    use events::EventEnvelope;
    use uuid::Uuid;

    pub fn supply(id: Uuid) -> String {
        format!("supply:{id}")
    }

    /// Every `supply.*` event makes its supply stale.
    pub const INVALIDATION: cache::Invalidation =
        cache::Invalidation { prefix: "supply.", keys: |e: &EventEnvelope| vec![supply(e.aggregate_id)] };
}
