//! The chain integration's use cases: deposit addresses, the deposits the watchers saw, and where
//! each watcher stands.

use std::collections::BTreeMap;
use std::sync::Arc;

use alloy::providers::RootProvider;
use serde::Serialize;
use uuid::Uuid;

use crate::address;
use crate::config::{ChainConfig, Chains};
pub use crate::deposit::DepositView;
use crate::signer::{HotKey, Signer};
use crate::store::{ChainStore, DepositStatus};
use crate::watcher::{ChainStatus, Watcher};
use crate::withdraw::{WithdrawalStatus, WithdrawalView, parse_destination};
use base::money::{AssetRegistry, format_amount, parse_positive_amount};
use events::outbox::EventContext;
use storage::Database;
use wallet::WalletService;
use wallet::domain::WithdrawalRequest;
use web::extract::RequestId;
use web::{ApiError, FieldError, Principal, cursor};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DepositAddress {
    pub chain: String,
    /// EIP-55 checksummed.
    pub address: String,
}

pub struct ChainService {
    chains: Chains,
    store: ChainStore,
    assets: AssetRegistry,
    statuses: BTreeMap<String, Arc<ChainStatus>>,
    wallet: Arc<WalletService>,
    region: String,
}

impl ChainService {
    /// `db`: the wallet's database, which holds the chain tables; `wallet`: the ledger deposits
    /// credit and withdrawals hold.
    pub fn new(chains: Chains, db: &Database, assets: AssetRegistry, wallet: Arc<WalletService>, region: &str) -> Self {
        let statuses = chains.0.iter().map(|c| (c.name.clone(), Arc::new(ChainStatus::default()))).collect();
        Self { chains, store: ChainStore::new(db.clone()), assets, statuses, wallet, region: region.to_string() }
    }

    fn provider(c: &ChainConfig) -> anyhow::Result<RootProvider> {
        let url = c.rpc_url.parse().map_err(|e| anyhow::anyhow!("chain {}: rpc_url: {e}", c.name))?;
        // Every call has a deadline: a node that hangs must not stall the watcher or the signer.
        let http = alloy::transports::http::reqwest::Client::builder()
            .timeout(c.rpc_timeout)
            .connect_timeout(c.rpc_timeout)
            .build()?;
        Ok(RootProvider::new(alloy::rpc::client::ClientBuilder::default().http_with_client(http, url)))
    }

    /// One withdrawal signer per chain, each under its own lease, holding `key`.
    pub fn signers(&self, key: &HotKey, lease: std::time::Duration) -> anyhow::Result<Vec<Signer>> {
        self.chains
            .0
            .iter()
            .map(|c| {
                Ok(Signer {
                    chain: c.clone(),
                    store: self.store.clone(),
                    wallet: self.wallet.clone(),
                    assets: self.assets.clone(),
                    provider: Self::provider(c)?,
                    key: key.clone(),
                    region: self.region.clone(),
                    lease: storage::lease::Lease::new(
                        self.store.database().clone(),
                        format!("chain-signer:{}", c.name),
                        lease,
                    ),
                })
            })
            .collect()
    }

    pub fn chains(&self) -> &Chains {
        &self.chains
    }

    /// One watcher per chain, each under its own lease.
    pub fn watchers(&self, lease: std::time::Duration) -> anyhow::Result<Vec<Watcher>> {
        self.chains
            .0
            .iter()
            .map(|c| {
                Ok(Watcher {
                    chain: c.clone(),
                    store: self.store.clone(),
                    wallet: self.wallet.clone(),
                    assets: self.assets.clone(),
                    provider: Self::provider(c)?,
                    region: self.region.clone(),
                    status: self.statuses[&c.name].clone(),
                    lease: storage::lease::Lease::new(
                        self.store.database().clone(),
                        format!("chain-watcher:{}", c.name),
                        lease,
                    ),
                })
            })
            .collect()
    }

    /// Each chain's head, processed block and lag, for readiness (never failing it).
    pub fn report(&self) -> serde_json::Value {
        serde_json::Value::Object(self.statuses.iter().map(|(name, s)| (name.clone(), s.report())).collect())
    }

    fn processed(&self, chain: &str) -> Option<i64> {
        self.statuses.get(chain).map(|s| s.processed.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The caller's deposit address on a chain: the same every time.
    pub async fn deposit_address(&self, who: &Principal, chain: &str) -> Result<DepositAddress, ApiError> {
        let config = self.chains.get(chain).ok_or_else(|| ApiError::not_found("chain"))?;
        let index = self.store.user_index(who.user_id).await?;
        let address = address::derive(&config.xpub, index)?;
        self.store.save_address(&config.name, &format!("{address:#x}"), who.user_id, index).await?;
        Ok(DepositAddress { chain: config.name.clone(), address: address.to_checksum(None) })
    }

    /// Deposits from chains, newest first: the caller's; admins may ask for anyone's (`user_id`)
    /// or everyone's (`all`).
    pub async fn deposits(
        &self,
        who: &Principal,
        user_id: Option<&str>,
        status: Option<&str>,
        limit: Option<i64>,
        cursor_text: Option<&str>,
    ) -> Result<(Vec<DepositView>, Option<String>), ApiError> {
        let limit = cursor::limit(limit)?;
        let before = cursor_text.map(cursor::decode).transpose()?;
        let owner = owner_of(who, user_id)?;
        let status = status
            .map(|s| {
                DepositStatus::parse(s).ok_or_else(|| {
                    ApiError::validation(vec![FieldError::new("status", "must be seen, credited, dropped or reorged")])
                })
            })
            .transpose()?;
        let mut items = self.store.list(owner, status, before, limit + 1).await?;
        let mut ids: Vec<Uuid> = items.iter().map(|d| d.id).collect();
        let next = cursor::next_page(&mut ids, limit);
        items.truncate(ids.len());
        Ok((items.iter().map(|d| DepositView::of(&self.assets, d, self.processed(&d.chain))).collect(), next))
    }
}

impl ChainService {
    /// Holds the amount and records the withdrawal (`requested`), for the signer to send.
    pub async fn request_withdrawal(
        &self,
        who: &Principal,
        rid: &RequestId,
        chain: &str,
        currency: &str,
        to_address: &str,
        amount: &str,
    ) -> Result<WithdrawalView, ApiError> {
        let mut errors = Vec::new();
        let config = self.chains.get(chain);
        if config.is_none() {
            errors.push(FieldError::new("chain", format!("unknown chain; one of {}", self.chains.names().join(", "))));
        }
        let asset = config.and_then(|c| c.asset(currency));
        if config.is_some() && asset.is_none() {
            let listed: Vec<&str> =
                config.map(|c| c.assets.iter().map(|a| a.currency.as_str()).collect()).unwrap_or_default();
            errors.push(FieldError::new(
                "currency",
                format!("not withdrawable on this chain; one of {}", listed.join(", ")),
            ));
        }
        let to = parse_destination(to_address).map_err(|why| FieldError::new("to_address", why));
        if let Err(e) = &to {
            errors.push(e.clone());
        }
        let parsed = match (self.assets.get(currency), asset) {
            (Some(registered), Some(on_chain)) => match parse_positive_amount(amount, &registered) {
                Ok(a) if a.normalize().scale() > u32::from(on_chain.token.decimals()) => {
                    errors.push(FieldError::new(
                        "amount",
                        format!("the token has {} decimals", on_chain.token.decimals()),
                    ));
                    None
                }
                Ok(a) => Some(a),
                Err(e) => {
                    errors.push(FieldError::new("amount", e.to_string()));
                    None
                }
            },
            _ => None,
        };
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        let (Some(config), Some(asset), Ok(to), Some(amount)) = (config, asset, to, parsed) else {
            return Err(ApiError::validation(vec![FieldError::new("amount", "invalid")]));
        };
        let request = WithdrawalRequest {
            id: Uuid::now_v7(),
            hold_id: Uuid::now_v7(),
            chain: config.name.clone(),
            to_address: format!("{to:#x}"),
        };
        let now = base::clock::now();
        let view = WithdrawalView {
            id: request.id,
            user_id: who.user_id,
            chain: config.name.clone(),
            currency: asset.currency.clone(),
            to_address: to.to_checksum(None),
            amount: format_amount(amount, self.assets.get(&asset.currency).map_or(amount.scale(), |a| a.decimals)),
            status: WithdrawalStatus::Requested,
            tx_hash: None,
            nonce: None,
            replacements: 0,
            block_number: None,
            failure_reason: None,
            hold_id: request.hold_id,
            created_at: now,
            updated_at: now,
        };
        let ctx = EventContext {
            region: self.region.clone(),
            correlation_id: rid.0.clone(),
            actor_id: Some(who.user_id),
            traceparent: base::trace::current(),
        };
        let data = view.clone();
        self.wallet.request_withdrawal(who.user_id, &asset.currency, amount, request, &data, &ctx).await?;
        metrics::counter!("chain_withdrawals_requested_total", "chain" => config.name.clone(), "currency" => asset.currency.clone())
            .increment(1);
        tracing::info!(withdrawal.id = %view.id, user.id = %who.user_id, chain = %config.name, currency = %asset.currency,
            amount = %view.amount, "withdrawal requested");
        Ok(view)
    }

    /// A withdrawal its owner or an admin may see; anyone else gets 404.
    pub async fn withdrawal(&self, who: &Principal, id: Uuid) -> Result<WithdrawalView, ApiError> {
        self.store
            .withdrawal(id)
            .await?
            .filter(|w| who.is_privileged() || w.user_id == who.user_id)
            .map(|w| WithdrawalView::of(&self.assets, &w))
            .ok_or_else(|| ApiError::not_found("withdrawal"))
    }

    /// Withdrawals, newest first: the caller's; admins may ask for anyone's (`user_id`) or
    /// everyone's (`all`).
    pub async fn withdrawals(
        &self,
        who: &Principal,
        user_id: Option<&str>,
        status: Option<&str>,
        limit: Option<i64>,
        cursor_text: Option<&str>,
    ) -> Result<(Vec<WithdrawalView>, Option<String>), ApiError> {
        let limit = cursor::limit(limit)?;
        let before = cursor_text.map(cursor::decode).transpose()?;
        let owner = owner_of(who, user_id)?;
        let status = status
            .map(|s| {
                WithdrawalStatus::parse(s).ok_or_else(|| {
                    ApiError::validation(vec![FieldError::new(
                        "status",
                        "must be requested, signed, broadcast, confirmed or failed",
                    )])
                })
            })
            .transpose()?;
        let mut items = self.store.withdrawals(owner, status, before, limit + 1).await?;
        let mut ids: Vec<Uuid> = items.iter().map(|w| w.id).collect();
        let next = cursor::next_page(&mut ids, limit);
        items.truncate(ids.len());
        Ok((items.iter().map(|w| WithdrawalView::of(&self.assets, w)).collect(), next))
    }
}

/// Whose list: the caller's; an admin's choice of a user (`user_id`) or everyone (`all`).
fn owner_of(who: &Principal, user_id: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    match user_id {
        None => Ok(Some(who.user_id)),
        Some(_) if !who.is_admin() => Err(ApiError::forbidden("users see their own")),
        Some("all") => Ok(None),
        Some(u) => u
            .parse::<Uuid>()
            .map(Some)
            .map_err(|_| ApiError::validation(vec![FieldError::new("user_id", "must be a user id or `all`")])),
    }
}

impl web::health::Detail for ChainService {
    fn detail(&self) -> serde_json::Value {
        self.report()
    }
}
