//! The wallet use cases: deposits, transfers, holds, reads and `verify`. Every decision reads the
//! database under the accounts' row locks (the store), never a cache; account reads go through the
//! cache (DESIGN D5), made stale by every movement here and by the wallet's events elsewhere.

use std::sync::Arc;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{
    Account, Deposit, Entry, EntryKind, Hold, HoldStatus, Journal, Line, Movement, Record, Transfer, Verification,
    WITHDRAWALS, WORLD, WalletError, WithdrawalRequest, verify,
};
use crate::keys;
use crate::store::{self, WalletStore};
use base::ErrorCode;
use base::clock;
use base::money::{Asset, AssetRegistry, format_amount, parse_positive_amount};
use cache::Cache;
use events::outbox::{EventContext, NewEvent};
use storage::Database;
use web::extract::RequestId;
use web::{ApiError, FieldError, Principal, cursor};

/// Topic of the wallet's events.
pub const TOPIC: &str = "wallet-events";

/// Who the wallet can pay: the users identity knows.
#[async_trait]
pub trait Users: Send + Sync {
    async fn exists(&self, id: Uuid) -> anyhow::Result<bool>;
}

/// An account as clients see it (`user_id` is the owner: a user id, or `@world` for admins).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub user_id: String,
    pub currency: String,
    pub balance: String,
    pub held: String,
    pub available: String,
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntryView {
    pub id: Uuid,
    pub transaction_id: Uuid,
    pub user_id: String,
    pub currency: String,
    /// Signed: negative leaves the account.
    pub amount: String,
    pub kind: EntryKind,
    pub reference: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HoldView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    pub amount: String,
    pub status: HoldStatus,
    pub order_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
}

/// `wallet.hold_posted`'s data: the hold and who it was paid to.
#[derive(Debug, Clone, Serialize)]
pub struct HoldPostedView {
    #[serde(flatten)]
    pub hold: HoldView,
    pub to_user_id: Uuid,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TransferView {
    pub id: Uuid,
    pub from_user_id: Uuid,
    pub to_user_id: Uuid,
    pub currency: String,
    pub amount: String,
    pub transaction_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DepositView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    pub amount: String,
    pub reference: String,
    /// `admin` (or `chain`, later).
    pub source: String,
    pub transaction_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The wallet service.
pub struct WalletService {
    store: Arc<dyn WalletStore>,
    cache: Arc<Cache>,
    users: Arc<dyn Users>,
    assets: AssetRegistry,
    region: String,
}

impl WalletService {
    pub fn new(db: &Database, cache: Arc<Cache>, users: Arc<dyn Users>, assets: AssetRegistry, region: String) -> Self {
        Self { store: store::open(db), cache, users, assets, region }
    }

    /// Applies a movement, then makes the cached accounts of every owner it touched stale.
    async fn apply(&self, m: &Movement, ctx: &EventContext) -> Result<Vec<Account>, WalletError> {
        let written = self.store.apply(m, ctx).await?;
        let mut owners: Vec<String> = m.accounts().into_iter().map(|(owner, _)| keys::accounts(&owner)).collect();
        owners.dedup();
        self.cache.invalidate(owners).await;
        Ok(written)
    }

    /// The owner's accounts that have seen activity, through the cache (reads only: no decision
    /// is taken on them).
    async fn stored_accounts(&self, owner: &str) -> Result<Vec<Account>, WalletError> {
        let cached = self
            .cache
            .get_or_load("wallet_accounts", keys::accounts(owner), || async {
                self.store.accounts(owner).await.map(Some)
            })
            .await?;
        Ok(cached.unwrap_or_default())
    }

    fn ctx(&self, actor: Option<Uuid>, rid: Option<&RequestId>) -> EventContext {
        EventContext {
            region: self.region.clone(),
            correlation_id: rid.and_then(|r| r.0.clone()),
            actor_id: actor,
            traceparent: base::trace::current(),
        }
    }

    fn asset(&self, field: &str, currency: &str) -> Result<Asset, ApiError> {
        self.assets.get(currency).ok_or_else(|| {
            ApiError::validation(vec![FieldError::new(
                field,
                format!("unknown asset; one of {}", self.assets.codes().join(", ")),
            )])
        })
    }

    fn amount(&self, asset: &Asset, amount: &str) -> Result<Decimal, ApiError> {
        parse_positive_amount(amount, asset)
            .map_err(|e| ApiError::validation(vec![FieldError::new("amount", e.to_string())]))
    }

    fn fmt(&self, currency: &str, amount: Decimal) -> String {
        format_amount(amount, self.assets.get(currency).map_or(amount.scale(), |a| a.decimals))
    }

    /// Credits a user from `@world`, once per `reference`: the same reference with the same body
    /// again answers the first deposit (`false`: not new); with another body, 409.
    #[tracing::instrument(skip_all, fields(user.id = %user_id))]
    pub async fn deposit(
        &self,
        who: &Principal,
        rid: &RequestId,
        user_id: Uuid,
        currency: &str,
        amount: &str,
        reference: &str,
    ) -> Result<(Deposit, bool), ApiError> {
        who.require_admin()?;
        let asset = self.asset("currency", currency)?;
        let amount = self.amount(&asset, amount)?;
        let reference = reference.trim();
        if reference.is_empty() || reference.chars().count() > 128 || reference.chars().any(char::is_control) {
            return Err(ApiError::validation(vec![FieldError::new(
                "reference",
                "must be 1 to 128 characters, no control characters",
            )]));
        }
        if !self.users.exists(user_id).await? {
            return Err(ApiError::validation(vec![FieldError::new("user_id", "no such user")]));
        }
        let now = clock::now();
        let journal = Journal::new(
            EntryKind::Deposit,
            Some(reference.to_string()),
            vec![Line::new(WORLD, &asset.code, -amount), Line::new(user_id.to_string(), &asset.code, amount)],
        );
        let deposit = Deposit {
            id: Uuid::now_v7(),
            user_id,
            currency: asset.code.clone(),
            amount,
            reference: reference.to_string(),
            source: "admin".into(),
            transaction_id: journal.id,
            created_at: now,
        };
        let event = NewEvent::of("wallet.deposited", 1, TOPIC, deposit.id, &self.deposit_view(&deposit))?;
        let m = Movement { journal: Some(journal), held: vec![], record: Record::Deposit(deposit.clone()), event, now };
        match self.apply(&m, &self.ctx(Some(who.user_id), Some(rid))).await {
            Ok(_) => {
                tracing::info!(deposit.id = %deposit.id, "deposited");
                Ok((deposit, true))
            }
            Err(WalletError::DuplicateReference) => {
                let first = self.store.deposit_by_reference(reference).await?.ok_or(WalletError::DuplicateReference)?;
                if (first.user_id, first.currency.as_str(), first.amount) == (user_id, asset.code.as_str(), amount) {
                    Ok((first, false))
                } else {
                    Err(ApiError::new(
                        ErrorCode::DepositReferenceConflict,
                        "a deposit with this reference exists with another user, asset or amount",
                    ))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Credits a deposit that arrived on a chain, once per `reference`
    /// (`chain:{chain}:{tx_hash}:{log_index}`): the same reference again answers the first deposit
    /// (`false`: not new), so a watcher that crashed between crediting and recording it credits
    /// nothing twice. `details` (chain, tx hash, block, ...) go into `wallet.deposit_credited`.
    pub async fn credit_chain_deposit(
        &self,
        user_id: Uuid,
        currency: &str,
        amount: Decimal,
        reference: String,
        details: serde_json::Value,
        ctx: &EventContext,
    ) -> Result<(Deposit, bool), WalletError> {
        let now = clock::now();
        let journal = Journal::new(
            EntryKind::Deposit,
            Some(reference.clone()),
            vec![Line::new(WORLD, currency, -amount), Line::new(user_id.to_string(), currency, amount)],
        );
        let deposit = Deposit {
            id: Uuid::now_v7(),
            user_id,
            currency: currency.to_string(),
            amount,
            reference: reference.clone(),
            source: "chain".into(),
            transaction_id: journal.id,
            created_at: now,
        };
        let mut data = serde_json::to_value(self.deposit_view(&deposit))
            .map_err(|e| WalletError::Unexpected(anyhow::anyhow!("deposit view: {e}")))?;
        if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), details) {
            data.extend(extra);
        }
        let event = NewEvent::of("wallet.deposit_credited", 1, TOPIC, deposit.id, &data)?;
        let m = Movement { journal: Some(journal), held: vec![], record: Record::Deposit(deposit.clone()), event, now };
        match self.apply(&m, ctx).await {
            Ok(_) => Ok((deposit, true)),
            Err(WalletError::DuplicateReference) => {
                let first =
                    self.store.deposit_by_reference(&reference).await?.ok_or(WalletError::DuplicateReference)?;
                Ok((first, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Moves money from the caller to another user.
    #[tracing::instrument(skip_all, fields(user.id = %who.user_id))]
    pub async fn transfer(
        &self,
        who: &Principal,
        rid: &RequestId,
        to_user_id: Uuid,
        currency: &str,
        amount: &str,
    ) -> Result<Transfer, ApiError> {
        let asset = self.asset("currency", currency)?;
        let amount = self.amount(&asset, amount)?;
        if to_user_id == who.user_id {
            return Err(ApiError::validation(vec![FieldError::new("to_user_id", "you cannot transfer to yourself")]));
        }
        if !self.users.exists(to_user_id).await? {
            return Err(ApiError::validation(vec![FieldError::new("to_user_id", "no such user")]));
        }
        let now = clock::now();
        let journal = Journal::new(
            EntryKind::Transfer,
            None,
            vec![
                Line::new(who.user_id.to_string(), &asset.code, -amount),
                Line::new(to_user_id.to_string(), &asset.code, amount),
            ],
        );
        let transfer = Transfer {
            id: Uuid::now_v7(),
            from_user_id: who.user_id,
            to_user_id,
            currency: asset.code.clone(),
            amount,
            transaction_id: journal.id,
            created_at: now,
        };
        let event = NewEvent::of("wallet.transferred", 1, TOPIC, transfer.id, &self.transfer_view(&transfer))?;
        let m =
            Movement { journal: Some(journal), held: vec![], record: Record::Transfer(transfer.clone()), event, now };
        match self.apply(&m, &self.ctx(Some(who.user_id), Some(rid))).await {
            Ok(_) => {
                metrics::counter!("wallet_transfers_total", "outcome" => "done").increment(1);
                Ok(transfer)
            }
            Err(e) => {
                metrics::counter!("wallet_transfers_total", "outcome" => "refused").increment(1);
                Err(e.into())
            }
        }
    }

    /// Reserves `amount` of the user's available balance (for an order).
    pub async fn place_hold(
        &self,
        user_id: Uuid,
        currency: &str,
        amount: Decimal,
        order_id: Option<Uuid>,
        ctx: &EventContext,
    ) -> Result<Hold, WalletError> {
        let now = clock::now();
        let hold = Hold {
            id: Uuid::now_v7(),
            user_id,
            currency: currency.to_string(),
            amount,
            status: HoldStatus::Pending,
            order_id,
            transaction_id: None,
            created_at: now,
            resolved_at: None,
        };
        let event = NewEvent::of("wallet.hold_placed", 1, TOPIC, hold.id, &self.hold_view(&hold))?;
        let held = vec![Line::new(user_id.to_string(), currency, amount)];
        let m = Movement { journal: None, held, record: Record::PlaceHold(hold.clone()), event, now };
        self.apply(&m, ctx).await?;
        Ok(hold)
    }

    /// Pays a pending hold out to `to_user_id` (settlement), or releases it (`to_user_id` none).
    pub async fn resolve_hold(
        &self,
        id: Uuid,
        to_user_id: Option<Uuid>,
        reference: Option<String>,
        ctx: &EventContext,
    ) -> Result<Hold, WalletError> {
        self.resolve(id, to_user_id, None, reference, ctx).await
    }

    /// Pays a pending hold of exactly `amount` out to `to_user_id`; [`WalletError::HoldChanged`]
    /// when, under its lock, the hold is of another amount.
    pub async fn post_hold(
        &self,
        id: Uuid,
        to_user_id: Uuid,
        amount: Decimal,
        reference: Option<String>,
        ctx: &EventContext,
    ) -> Result<Hold, WalletError> {
        self.resolve(id, Some(to_user_id), Some(amount), reference, ctx).await
    }

    async fn resolve(
        &self,
        id: Uuid,
        to_user_id: Option<Uuid>,
        expected: Option<Decimal>,
        reference: Option<String>,
        ctx: &EventContext,
    ) -> Result<Hold, WalletError> {
        let to = to_user_id.map(|u| (u.to_string(), EntryKind::Settlement));
        self.resolve_to(id, to, expected, reference, None, ctx).await.map(|(hold, _)| hold)
    }

    /// Posts a pending hold to an owner (`to`, with the entries' kind) or voids it (`to` none), with
    /// `event` instead of `wallet.hold_posted`/`wallet.hold_voided` when given. The hold as resolved,
    /// and the event written.
    async fn resolve_to(
        &self,
        id: Uuid,
        to: Option<(String, EntryKind)>,
        expected: Option<Decimal>,
        reference: Option<String>,
        event: Option<NewEvent>,
        ctx: &EventContext,
    ) -> Result<(Hold, NewEvent), WalletError> {
        let mut hold = self.store.hold(id).await?.ok_or(WalletError::NotFound("hold"))?;
        if hold.status != HoldStatus::Pending {
            return Err(WalletError::HoldNotPending(hold.status.as_str()));
        }
        if expected.is_some_and(|amount| amount != hold.amount) {
            return Err(WalletError::HoldChanged);
        }
        let now = clock::now();
        let owner = hold.user_id.to_string();
        let held = vec![Line::new(owner.clone(), &hold.currency, -hold.amount)];
        let journal = to.as_ref().map(|(to, kind)| {
            let lines = vec![
                Line::new(owner.clone(), &hold.currency, -hold.amount),
                Line::new(to.clone(), &hold.currency, hold.amount),
            ];
            Journal::new(*kind, reference, lines)
        });
        hold.status = if journal.is_some() { HoldStatus::Posted } else { HoldStatus::Voided };
        hold.transaction_id = journal.as_ref().map(|j| j.id);
        hold.resolved_at = Some(now);
        let event = match (event, &to) {
            (Some(event), _) => event,
            (None, Some((to, _))) => {
                let to_user_id =
                    to.parse().map_err(|_| WalletError::Unexpected(anyhow::anyhow!("{to} is not a user")))?;
                let posted = HoldPostedView { hold: self.hold_view(&hold), to_user_id };
                NewEvent::of("wallet.hold_posted", 1, TOPIC, hold.id, &posted)?
            }
            (None, None) => NewEvent::of("wallet.hold_voided", 1, TOPIC, hold.id, &self.hold_view(&hold))?,
        };
        let record = Record::ResolveHold { id, status: hold.status, transaction_id: hold.transaction_id, expected };
        self.apply(&Movement { journal, held, record, event: event.clone(), now }, ctx).await?;
        Ok((hold, event))
    }

    /// Holds `amount` of the user's available balance for a withdrawal and records the withdrawal
    /// (`requested`), in one transaction, with `wallet.withdrawal_requested` (`data`).
    pub async fn request_withdrawal(
        &self,
        user_id: Uuid,
        currency: &str,
        amount: Decimal,
        request: WithdrawalRequest,
        data: &impl Serialize,
        ctx: &EventContext,
    ) -> Result<Hold, WalletError> {
        let now = clock::now();
        let hold = Hold {
            id: request.hold_id,
            user_id,
            currency: currency.to_string(),
            amount,
            status: HoldStatus::Pending,
            order_id: None,
            transaction_id: None,
            created_at: now,
            resolved_at: None,
        };
        let event = NewEvent::of("wallet.withdrawal_requested", 1, TOPIC, request.id, data)?;
        let held = vec![Line::new(user_id.to_string(), currency, amount)];
        let m = Movement { journal: None, held, record: Record::Withdraw(hold.clone(), request), event, now };
        self.apply(&m, ctx).await?;
        Ok(hold)
    }

    /// Ends a withdrawal's hold: posted to `@withdrawals` when its transaction is final
    /// (`confirmed`), voided when it failed, with `event`. `false` when the hold was already
    /// resolved that way (a repeat after a crash); an error when it was resolved the other way.
    pub async fn finish_withdrawal(
        &self,
        hold_id: Uuid,
        confirmed: bool,
        reference: String,
        event: NewEvent,
        ctx: &EventContext,
    ) -> Result<bool, WalletError> {
        let to = confirmed.then(|| (WITHDRAWALS.to_string(), EntryKind::Withdrawal));
        match self.resolve_to(hold_id, to, None, Some(reference), Some(event), ctx).await {
            Ok(_) => Ok(true),
            Err(WalletError::HoldNotPending(status)) if (status == "posted") == confirmed => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets a pending hold to `amount` (more needs the buyer's available balance).
    pub async fn adjust_hold(&self, id: Uuid, amount: Decimal, ctx: &EventContext) -> Result<Hold, WalletError> {
        let mut hold = self.store.hold(id).await?.ok_or(WalletError::NotFound("hold"))?;
        if hold.status != HoldStatus::Pending {
            return Err(WalletError::HoldNotPending(hold.status.as_str()));
        }
        if hold.amount == amount {
            return Ok(hold);
        }
        let held = vec![Line::new(hold.user_id.to_string(), &hold.currency, amount - hold.amount)];
        hold.amount = amount;
        let event = NewEvent::of("wallet.hold_adjusted", 1, TOPIC, hold.id, &self.hold_view(&hold))?;
        let m = Movement { journal: None, held, record: Record::AdjustHold { id, amount }, event, now: clock::now() };
        self.apply(&m, ctx).await?;
        Ok(hold)
    }

    /// The holds placed for an order, newest first.
    pub async fn holds_of_order(&self, order_id: Uuid) -> Result<Vec<Hold>, WalletError> {
        self.store.holds_of_order(order_id).await
    }

    /// A page of the pending holds placed before `before`, by id after `after` (for the reconciler).
    pub async fn pending_holds(
        &self,
        before: OffsetDateTime,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Hold>, WalletError> {
        self.store.pending_holds(before, after, limit).await
    }

    /// The caller's accounts, one per registered asset (admins: anyone's, `@world` included).
    pub async fn accounts(&self, who: &Principal, user_id: Option<&str>) -> Result<Vec<Account>, ApiError> {
        let owner = owner_of(who, user_id)?;
        let stored = self.stored_accounts(&owner).await?;
        let now = clock::now();
        let mut codes: Vec<String> = self.assets.codes().into_iter().map(str::to_string).collect();
        codes.sort();
        Ok(codes
            .iter()
            .map(|c| {
                stored.iter().find(|a| &a.currency == c).cloned().unwrap_or_else(|| Account::empty(&owner, c, now))
            })
            .collect())
    }

    /// The caller's account in one asset (zero when it has seen no activity).
    pub async fn account(&self, who: &Principal, currency: &str) -> Result<Account, ApiError> {
        let asset = self
            .assets
            .get(currency)
            .ok_or_else(|| ApiError::unprocessable_field(ErrorCode::UnknownAsset, "currency", "unknown asset"))?;
        let owner = who.user_id.to_string();
        let stored = self.stored_accounts(&owner).await?;
        Ok(stored
            .into_iter()
            .find(|a| a.currency == asset.code)
            .unwrap_or_else(|| Account::empty(&owner, &asset.code, clock::now())))
    }

    /// The caller's ledger entries, newest first (admins: anyone's, with `user_id`).
    pub async fn entries(
        &self,
        who: &Principal,
        user_id: Option<&str>,
        currency: Option<&str>,
        limit: Option<i64>,
        cursor_text: Option<&str>,
    ) -> Result<(Vec<Entry>, Option<String>), ApiError> {
        let limit = cursor::limit(limit)?;
        let before = cursor_text.map(cursor::decode).transpose()?;
        if let Some(c) = currency {
            self.asset("currency", c)?;
        }
        let owner = owner_of(who, user_id)?;
        let mut items = self.store.entries(&owner, currency, before, limit + 1).await?;
        let mut ids: Vec<Uuid> = items.iter().map(|e| e.id).collect();
        let next = cursor::next_page(&mut ids, limit);
        items.truncate(ids.len());
        Ok((items, next))
    }

    /// The caller's holds, newest first (admins: a user's, with `user_id`).
    pub async fn holds(
        &self,
        who: &Principal,
        user_id: Option<&str>,
        status: Option<&str>,
        limit: Option<i64>,
        cursor_text: Option<&str>,
    ) -> Result<(Vec<Hold>, Option<String>), ApiError> {
        let limit = cursor::limit(limit)?;
        let before = cursor_text.map(cursor::decode).transpose()?;
        let status = status
            .map(|s| {
                HoldStatus::parse(s).ok_or_else(|| {
                    ApiError::validation(vec![FieldError::new("status", "must be pending, posted or voided")])
                })
            })
            .transpose()?;
        // Holds belong to users, never to system accounts.
        let owner = owner_of(who, user_id)?.parse::<Uuid>().map_err(|_| {
            ApiError::validation(vec![FieldError::new("user_id", "must be a user id (holds belong to users)")])
        })?;
        let mut items = self.store.holds(owner, status, before, limit + 1).await?;
        let mut ids: Vec<Uuid> = items.iter().map(|h| h.id).collect();
        let next = cursor::next_page(&mut ids, limit);
        items.truncate(ids.len());
        Ok((items, next))
    }

    /// A transfer its sender, its receiver or an admin may see; anyone else gets 404.
    pub async fn get_transfer(&self, who: &Principal, id: Uuid) -> Result<Transfer, ApiError> {
        self.store
            .transfer(id)
            .await?
            .filter(|t| who.is_privileged() || t.from_user_id == who.user_id || t.to_user_id == who.user_id)
            .ok_or_else(|| ApiError::not_found("transfer"))
    }

    /// Recomputes the whole ledger (admins).
    pub async fn verify(&self) -> anyhow::Result<Verification> {
        let ledger = self.store.ledger().await.map_err(|e| anyhow::anyhow!(e))?;
        Ok(verify(&ledger.accounts, &ledger.entries, &ledger.pending))
    }

    pub fn account_view(&self, a: &Account) -> AccountView {
        AccountView {
            user_id: a.owner.clone(),
            currency: a.currency.clone(),
            balance: self.fmt(&a.currency, a.balance),
            held: self.fmt(&a.currency, a.held),
            available: self.fmt(&a.currency, a.available()),
            version: a.version,
            updated_at: a.updated_at,
        }
    }

    pub fn entry_view(&self, e: &Entry) -> EntryView {
        EntryView {
            id: e.id,
            transaction_id: e.transaction_id,
            user_id: e.owner.clone(),
            currency: e.currency.clone(),
            amount: self.fmt(&e.currency, e.amount),
            kind: e.kind,
            reference: e.reference.clone(),
            created_at: e.created_at,
        }
    }

    pub fn hold_view(&self, h: &Hold) -> HoldView {
        HoldView {
            id: h.id,
            user_id: h.user_id,
            currency: h.currency.clone(),
            amount: self.fmt(&h.currency, h.amount),
            status: h.status,
            order_id: h.order_id,
            created_at: h.created_at,
            resolved_at: h.resolved_at,
        }
    }

    pub fn transfer_view(&self, t: &Transfer) -> TransferView {
        TransferView {
            id: t.id,
            from_user_id: t.from_user_id,
            to_user_id: t.to_user_id,
            currency: t.currency.clone(),
            amount: self.fmt(&t.currency, t.amount),
            transaction_id: t.transaction_id,
            created_at: t.created_at,
        }
    }

    pub fn deposit_view(&self, d: &Deposit) -> DepositView {
        DepositView {
            id: d.id,
            user_id: d.user_id,
            currency: d.currency.clone(),
            amount: self.fmt(&d.currency, d.amount),
            reference: d.reference.clone(),
            source: d.source.clone(),
            transaction_id: d.transaction_id,
            created_at: d.created_at,
        }
    }
}

/// Whose wallet a read is about: the caller's own, or (admins only) the `user_id` asked for.
fn owner_of(who: &Principal, user_id: Option<&str>) -> Result<String, ApiError> {
    match user_id {
        Some(u) if who.is_admin() => Ok(u.to_string()),
        Some(u) if u != who.user_id.to_string() => Err(ApiError::forbidden("users see their own wallet")),
        _ => Ok(who.user_id.to_string()),
    }
}
