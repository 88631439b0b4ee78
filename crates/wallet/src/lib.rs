//! The wallet service (DESIGN D11): a custodial, double-entry ledger with two-phase holds.
//! Deposits, transfers, holds for orders and their settlement to shoppers all move money only in
//! balanced journal transactions; user accounts never go below zero.

pub mod domain;
pub mod grpc;
pub mod http;
pub mod service;
pub mod settlement;
pub mod store;

pub use service::{Users, WalletService};
pub use store::MIGRATIONS;

/// This service's cache keys (DESIGN D5) and the events that make them stale.
pub mod keys {
    use events::EventEnvelope;

    use crate::domain::{WITHDRAWALS, WORLD};

    /// One owner's accounts (a user id, or a system account such as `@world`).
    pub fn accounts(owner: &str) -> String {
        format!("wallet:accounts:{owner}")
    }

    /// Every `wallet.*` event makes the accounts it moved stale: the users its data names
    /// (`user_id`, `from_user_id`, `to_user_id`), `@world` for a deposit, `@withdrawals` for a
    /// confirmed withdrawal.
    pub const INVALIDATION: cache::Invalidation = cache::Invalidation {
        prefix: "wallet.",
        keys: |e: &EventEnvelope| {
            let mut keys: Vec<String> = ["user_id", "from_user_id", "to_user_id"]
                .iter()
                .filter_map(|f| e.data[*f].as_str())
                .map(accounts)
                .collect();
            if e.event_type == "wallet.deposited" || e.event_type == "wallet.deposit_credited" {
                keys.push(accounts(WORLD));
            }
            if e.event_type == "wallet.withdrawal_confirmed" {
                keys.push(accounts(WITHDRAWALS));
            }
            keys
        },
    };
}
