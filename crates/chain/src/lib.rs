//! The wallet on EVM chains (DESIGN D12): chains and assets as configuration, deposit addresses
//! derived from an extended public key (the service can watch them, never spend), and the deposit
//! watcher that credits the ledger once a transfer has its confirmations, surviving reorgs and
//! restarts; withdrawals, signed by one signer per chain with its own nonce counter, stored before
//! they are broadcast, replaced when stuck. Nothing here runs unless a chain is configured.

pub mod address;
pub mod config;
pub mod deposit;
pub mod grpc;
pub mod http;
pub mod node;
pub mod service;
pub mod signer;
pub mod store;
pub mod watcher;
pub mod withdraw;

pub use config::Chains;
pub use service::ChainService;
