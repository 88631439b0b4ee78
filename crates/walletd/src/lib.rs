//! walletd: wires the services and the shared crates into one process (DESIGN D1). `main.rs` is
//! the CLI; tests use [`build`] exactly as `serve` does.
//!
//! - [`wiring`]: storage, identity, cache, the services and their HTTP stack, step by step;
//! - [`server`]: serving, the consumers and the relay, and a graceful stop;
//! - [`adapters`]: the claim service's ports over the co-located services;
//! - [`admin`]: the operator's routes over the event log.

pub mod adapters;
pub mod admin;
pub mod cleanup;
pub mod console;
pub mod reconcile;
pub mod remote;
pub mod server;
pub mod telemetry;
pub mod wiring;

use std::str::FromStr;

pub use server::{Server, shutdown_signal};
pub use wiring::{build, build_with_clock, migrate, open_database};

/// A service that `serve --services` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceName {
    Supply,
    Order,
    Claim,
    Wallet,
}

impl ServiceName {
    /// The name `--services` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Supply => "supply",
            Self::Order => "order",
            Self::Claim => "claim",
            Self::Wallet => "wallet",
        }
    }

    /// The service's full gRPC name, as health checking and reflection list it.
    pub fn grpc_name(self) -> &'static str {
        match self {
            Self::Supply => "walletd.v1.SupplyService",
            Self::Order => "walletd.v1.OrderService",
            Self::Claim => "walletd.v1.ClaimService",
            Self::Wallet => "walletd.v1.WalletService",
        }
    }
}

impl FromStr for ServiceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "supply" => Ok(Self::Supply),
            "order" => Ok(Self::Order),
            "claim" => Ok(Self::Claim),
            "wallet" => Ok(Self::Wallet),
            other => Err(format!("unknown service `{other}` (supply, order, claim, wallet)")),
        }
    }
}

/// Parses `supply,order,...`; services not built yet are refused by name.
pub fn parse_services(list: &str) -> anyhow::Result<Vec<ServiceName>> {
    let mut out = Vec::new();
    for name in list.split(',').filter(|s| !s.trim().is_empty()) {
        let s: ServiceName = name.parse().map_err(anyhow::Error::msg)?;
        if !all_services().contains(&s) {
            anyhow::bail!("service `{}` is not part of this build yet", name.trim());
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        anyhow::bail!("--services names no service");
    }
    Ok(out)
}

/// The event topics (DESIGN D4), as each service declares its own, and the operators' own
/// (`admin-events`: redrive requests).
pub const TOPICS: kafka::Topics = &[
    supply::service::TOPIC,
    order::service::TOPIC,
    claim::service::TOPIC,
    wallet::service::TOPIC,
    events::delivery::ADMIN_TOPIC,
];

/// Every service this build has.
pub fn all_services() -> Vec<ServiceName> {
    vec![ServiceName::Supply, ServiceName::Order, ServiceName::Claim, ServiceName::Wallet]
}
