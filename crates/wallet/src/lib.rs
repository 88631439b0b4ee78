//! The wallet service (DESIGN D11): a custodial, double-entry ledger with two-phase holds.
//! Deposits, transfers, holds for orders and their settlement to shoppers all move money only in
//! balanced journal transactions; user accounts never go below zero.

pub mod domain;
pub mod http;
pub mod service;
pub mod store;

pub use service::{Users, WalletService};
pub use store::MIGRATIONS;
