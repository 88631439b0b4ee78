//! The claim service: shoppers claim open orders (at most one live claim per order, guarded by
//! a partial unique index), and claims are processed through events.

pub mod domain;
pub mod grpc;
pub mod http;
pub mod ports;
pub mod processor;
pub mod service;
pub mod store;

pub use processor::ClaimProcessor;
pub use service::ClaimService;
pub use store::MIGRATIONS;

/// This service's cache keys (DESIGN D5) and the events that make them stale.
pub mod keys {
    use events::EventEnvelope;
    use uuid::Uuid;

    pub fn claim(id: Uuid) -> String {
        format!("claim:{id}")
    }

    pub fn claim_of_order(order_id: Uuid) -> String {
        format!("claim:order:{order_id}")
    }

    fn data_id(e: &EventEnvelope, field: &str) -> Option<Uuid> {
        e.data[field].as_str().and_then(|s| s.parse().ok())
    }

    /// `order.claimed` (a new claim, on the order's stream) and every `claim.*` event make the claim
    /// and the order's claim stale.
    pub const INVALIDATION: [cache::Invalidation; 2] = [
        cache::Invalidation {
            prefix: "order.claimed",
            keys: |e: &EventEnvelope| {
                let mut keys = vec![claim_of_order(e.aggregate_id)];
                keys.extend(data_id(e, "id").map(claim));
                keys
            },
        },
        cache::Invalidation {
            prefix: "claim.",
            keys: |e: &EventEnvelope| {
                let mut keys = vec![claim(e.aggregate_id)];
                keys.extend(data_id(e, "order_id").map(claim_of_order));
                keys
            },
        },
    ];
}
