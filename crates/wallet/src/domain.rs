//! The ledger's rules, without I/O (DESIGN D11): accounts, journal transactions whose entries sum to
//! zero per asset, two-phase holds, and the one rule every movement obeys: no user account ends
//! below zero (`balance >= 0`, `held >= 0`, `available = balance - held >= 0`). System accounts
//! (owners starting with `@`) may.

use std::collections::BTreeMap;

use base::ErrorCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use events::outbox::NewEvent;
use web::ApiError;

/// Money entering or leaving the system, per asset.
pub const WORLD: &str = "@world";
/// Where a withdrawal's money goes once its transaction is final on its chain.
pub const WITHDRAWALS: &str = "@withdrawals";

/// System accounts may go below zero; user accounts never.
pub fn is_system(owner: &str) -> bool {
    owner.starts_with('@')
}

/// One account: a user's (the owner is the user id) or a system account, in one asset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub owner: String,
    pub currency: String,
    pub balance: Decimal,
    pub held: Decimal,
    pub version: i64,
    pub updated_at: OffsetDateTime,
}

impl Account {
    /// An account with no activity: it reads as zero.
    pub fn empty(owner: &str, currency: &str, now: OffsetDateTime) -> Self {
        Self {
            owner: owner.to_string(),
            currency: currency.to_string(),
            balance: Decimal::ZERO,
            held: Decimal::ZERO,
            version: 0,
            updated_at: now,
        }
    }

    pub fn available(&self) -> Decimal {
        self.balance - self.held
    }

    fn key(&self) -> (String, String) {
        (self.owner.clone(), self.currency.clone())
    }
}

/// What kind of movement an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Deposit,
    Transfer,
    Settlement,
    Withdrawal,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::Transfer => "transfer",
            Self::Settlement => "settlement",
            Self::Withdrawal => "withdrawal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Deposit, Self::Transfer, Self::Settlement, Self::Withdrawal].into_iter().find(|k| k.as_str() == s)
    }
}

/// A signed amount on one account: what an entry records, or a change of `held`.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub owner: String,
    pub currency: String,
    pub amount: Decimal,
}

impl Line {
    pub fn new(owner: impl Into<String>, currency: &str, amount: Decimal) -> Self {
        Self { owner: owner.into(), currency: currency.to_string(), amount }
    }
}

/// A ledger entry as stored: never updated or deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: Uuid,
    pub transaction_id: Uuid,
    pub owner: String,
    pub currency: String,
    pub amount: Decimal,
    pub kind: EntryKind,
    pub reference: Option<String>,
    pub created_at: OffsetDateTime,
}

/// A journal transaction: two or more lines summing to zero per asset.
#[derive(Debug, Clone)]
pub struct Journal {
    pub id: Uuid,
    pub kind: EntryKind,
    pub reference: Option<String>,
    pub lines: Vec<Line>,
}

impl Journal {
    pub fn new(kind: EntryKind, reference: Option<String>, lines: Vec<Line>) -> Self {
        Self { id: Uuid::now_v7(), kind, reference, lines }
    }

    /// The entries it writes.
    pub fn entries(&self, now: OffsetDateTime) -> Vec<Entry> {
        self.lines
            .iter()
            .map(|l| Entry {
                id: Uuid::now_v7(),
                transaction_id: self.id,
                owner: l.owner.clone(),
                currency: l.currency.clone(),
                amount: l.amount,
                kind: self.kind,
                reference: self.reference.clone(),
                created_at: now,
            })
            .collect()
    }
}

/// Where a hold is: pending reserves `available`; posted paid it out; voided released it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HoldStatus {
    Pending,
    Posted,
    Voided,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Posted => "posted",
            Self::Voided => "voided",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Posted, Self::Voided].into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    pub amount: Decimal,
    pub status: HoldStatus,
    pub order_id: Option<Uuid>,
    /// The journal transaction that posted it.
    pub transaction_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub resolved_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deposit {
    pub id: Uuid,
    pub user_id: Uuid,
    pub currency: String,
    pub amount: Decimal,
    pub reference: String,
    pub source: String,
    pub transaction_id: Uuid,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: Uuid,
    pub from_user_id: Uuid,
    pub to_user_id: Uuid,
    pub currency: String,
    pub amount: Decimal,
    pub transaction_id: Uuid,
    pub created_at: OffsetDateTime,
}

/// What a movement records beside its entries.
#[derive(Debug, Clone)]
pub enum Record {
    Deposit(Deposit),
    Transfer(Transfer),
    PlaceHold(Hold),
    /// A hold for a withdrawal to a chain, with the withdrawal's row (the `chain` crate's table in
    /// this database), so there is never one without the other.
    Withdraw(Hold, WithdrawalRequest),
    /// `pending -> status`, only from pending (the store checks under the hold's lock). With
    /// `expected`, only while the hold is of that amount (a settlement pays exactly its claim).
    ResolveHold {
        id: Uuid,
        status: HoldStatus,
        transaction_id: Option<Uuid>,
        expected: Option<Decimal>,
    },
    /// A pending hold's new amount (an order's items changed).
    AdjustHold {
        id: Uuid,
        amount: Decimal,
    },
}

impl Record {
    /// The hold a movement changes, locked (before any account) and checked pending by the store.
    pub fn hold_id(&self) -> Option<Uuid> {
        match self {
            Self::ResolveHold { id, .. } | Self::AdjustHold { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// A withdrawal as requested: where the held amount is to go.
#[derive(Debug, Clone, PartialEq)]
pub struct WithdrawalRequest {
    pub id: Uuid,
    /// The id its hold is given.
    pub hold_id: Uuid,
    pub chain: String,
    /// Lower-case hex.
    pub to_address: String,
}

/// One atomic change of the ledger: an optional journal transaction, changes of `held`, the record
/// and the event, written in one database transaction.
#[derive(Debug, Clone)]
pub struct Movement {
    pub journal: Option<Journal>,
    pub held: Vec<Line>,
    pub record: Record,
    pub event: NewEvent,
    pub now: OffsetDateTime,
}

impl Movement {
    /// Sets the amounts of a movement on a hold from the hold's amount as locked: it may have
    /// changed between the read the movement was built from and the lock.
    pub fn on_locked_hold(&mut self, locked: Decimal) -> Result<(), WalletError> {
        match &self.record {
            Record::ResolveHold { expected: Some(expected), .. } if *expected != locked => {
                return Err(WalletError::HoldChanged);
            }
            Record::ResolveHold { .. } => {
                for l in &mut self.held {
                    l.amount = -locked;
                }
                for l in self.journal.iter_mut().flat_map(|j| j.lines.iter_mut()) {
                    l.amount = if l.amount.is_sign_negative() { -locked } else { locked };
                }
            }
            Record::AdjustHold { amount, .. } => {
                let amount = *amount;
                for l in &mut self.held {
                    l.amount = amount - locked;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The accounts it touches, sorted: the order their rows are locked in, so two movements never
    /// wait for each other in a cycle.
    pub fn accounts(&self) -> Vec<(String, String)> {
        let lines = self.journal.iter().flat_map(|j| j.lines.iter()).chain(self.held.iter());
        let mut keys: Vec<(String, String)> = lines.map(|l| (l.owner.clone(), l.currency.clone())).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Applies the movement to its locked accounts (one per [`Movement::accounts`] key, created empty
    /// when new); returns the entries to write. Refused when a journal does not sum to zero per
    /// asset, or when a user account would end below zero.
    pub fn apply_to(&self, accounts: &mut [Account]) -> Result<Vec<Entry>, WalletError> {
        let mut entries = Vec::new();
        if let Some(journal) = &self.journal {
            let mut sums: BTreeMap<&str, Decimal> = BTreeMap::new();
            for l in &journal.lines {
                *sums.entry(l.currency.as_str()).or_default() += l.amount;
            }
            if journal.lines.len() < 2 || sums.values().any(|s| !s.is_zero()) {
                return Err(WalletError::Unexpected(anyhow::anyhow!("an unbalanced journal: {:?}", journal.lines)));
            }
            entries = journal.entries(self.now);
        }
        let changes = self.journal.iter().flat_map(|j| j.lines.iter().map(|l| (l, false)));
        for (line, is_held) in changes.chain(self.held.iter().map(|l| (l, true))) {
            let account = accounts
                .iter_mut()
                .find(|a| a.owner == line.owner && a.currency == line.currency)
                .ok_or_else(|| WalletError::Unexpected(anyhow::anyhow!("account {} not locked", line.owner)))?;
            if is_held {
                account.held += line.amount;
            } else {
                account.balance += line.amount;
            }
            account.version += 1;
            account.updated_at = self.now;
        }
        if accounts.iter().any(|a| {
            !is_system(&a.owner)
                && (a.balance < Decimal::ZERO || a.held < Decimal::ZERO || a.available() < Decimal::ZERO)
        }) {
            return Err(WalletError::InsufficientFunds);
        }
        Ok(entries)
    }
}

/// Why a wallet operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("a deposit with this reference exists")]
    DuplicateReference,
    #[error("the hold is {0}, not pending")]
    HoldNotPending(&'static str),
    #[error("the hold's amount changed")]
    HoldChanged,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<WalletError> for ApiError {
    fn from(e: WalletError) -> Self {
        match e {
            WalletError::InsufficientFunds => ApiError::unprocessable_field(
                ErrorCode::InsufficientFunds,
                "amount",
                "the available balance does not cover the amount",
            ),
            WalletError::NotFound(what) => ApiError::not_found(what),
            e @ WalletError::DuplicateReference => ApiError::new(ErrorCode::DepositReferenceConflict, e.to_string()),
            e @ (WalletError::HoldNotPending(_) | WalletError::HoldChanged) => {
                ApiError::new(ErrorCode::InvalidStatusTransition, e.to_string())
            }
            WalletError::Unexpected(e) => ApiError::internal(e),
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Verification {
    pub ok: bool,
    pub accounts_checked: usize,
    pub transactions_checked: usize,
    pub mismatches: Vec<String>,
}

/// Recomputes the ledger: every journal sums to zero per asset, every balance is the sum of its
/// entries, every `held` is the sum of its pending holds, no user account is below zero.
pub fn verify(accounts: &[Account], entries: &[(Uuid, String, String, Decimal)], pending: &[Hold]) -> Verification {
    let mut mismatches = Vec::new();
    let mut per_tx: BTreeMap<(Uuid, &str), Decimal> = BTreeMap::new();
    let mut per_account: BTreeMap<(&str, &str), Decimal> = BTreeMap::new();
    for (tx, owner, currency, amount) in entries {
        *per_tx.entry((*tx, currency.as_str())).or_default() += amount;
        *per_account.entry((owner.as_str(), currency.as_str())).or_default() += amount;
    }
    for ((tx, currency), sum) in &per_tx {
        if !sum.is_zero() {
            mismatches.push(format!("transaction {tx} sums to {sum} {currency}, not zero"));
        }
    }
    let mut held: BTreeMap<(String, &str), Decimal> = BTreeMap::new();
    for h in pending {
        *held.entry((h.user_id.to_string(), h.currency.as_str())).or_default() += h.amount;
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in accounts {
        seen.insert(a.key());
        let from_entries = per_account.get(&(a.owner.as_str(), a.currency.as_str())).copied().unwrap_or_default();
        if from_entries != a.balance {
            mismatches.push(format!(
                "{} {}: balance {} but its entries sum to {from_entries}",
                a.owner, a.currency, a.balance
            ));
        }
        let from_holds = held.get(&(a.owner.clone(), a.currency.as_str())).copied().unwrap_or_default();
        if from_holds != a.held {
            mismatches
                .push(format!("{} {}: held {} but its pending holds sum to {from_holds}", a.owner, a.currency, a.held));
        }
        if !is_system(&a.owner) && (a.balance < Decimal::ZERO || a.available() < Decimal::ZERO) {
            mismatches.push(format!("{} {}: below zero (balance {}, held {})", a.owner, a.currency, a.balance, a.held));
        }
    }
    for ((owner, currency), sum) in &per_account {
        if !seen.contains(&(owner.to_string(), currency.to_string())) {
            mismatches.push(format!("{owner} {currency}: entries summing to {sum} but no account"));
        }
    }
    for ((owner, currency), sum) in &held {
        if !seen.contains(&(owner.clone(), currency.to_string())) {
            mismatches.push(format!("{owner} {currency}: pending holds of {sum} but no account"));
        }
    }
    Verification {
        ok: mismatches.is_empty(),
        accounts_checked: accounts.len(),
        transactions_checked: per_tx.keys().map(|(tx, _)| tx).collect::<std::collections::BTreeSet<_>>().len(),
        mismatches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn movement(lines: Vec<Line>, held: Vec<Line>) -> Movement {
        let journal = (!lines.is_empty()).then(|| Journal::new(EntryKind::Transfer, None, lines));
        let event = NewEvent::of("wallet.transferred", 1, "wallet-events", Uuid::now_v7(), &1).unwrap();
        let hold = Record::ResolveHold {
            id: Uuid::now_v7(),
            status: HoldStatus::Voided,
            transaction_id: None,
            expected: None,
        };
        Movement { journal, held, record: hold, event, now: base::clock::now() }
    }

    #[test]
    fn a_settlement_pays_exactly_its_amount_or_nothing() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let lines = vec![Line::new("buyer", "USDC", d("-10")), Line::new("shopper", "USDC", d("10"))];
        let mut post = movement(lines, vec![Line::new("buyer", "USDC", d("-10"))]);
        post.record = Record::ResolveHold {
            id: Uuid::now_v7(),
            status: HoldStatus::Posted,
            transaction_id: None,
            expected: Some(d("10")),
        };
        // The hold moved to 20 (a change of items) between the read and the lock: refused, not 20 paid.
        assert!(matches!(post.clone().on_locked_hold(d("20")), Err(WalletError::HoldChanged)));
        post.on_locked_hold(d("10")).unwrap();
        let amounts: Vec<Decimal> = post.journal.iter().flat_map(|j| j.lines.iter().map(|l| l.amount)).collect();
        assert_eq!(amounts, [d("-10"), d("10")]);
        // A release takes whatever is held under the lock.
        let mut void = movement(vec![], vec![Line::new("buyer", "USDC", d("-10"))]);
        void.on_locked_hold(d("20")).unwrap();
        assert_eq!(void.held[0].amount, d("-20"));
    }

    fn accounts(m: &Movement) -> Vec<Account> {
        m.accounts().iter().map(|(o, c)| Account::empty(o, c, base::clock::now())).collect()
    }

    #[test]
    fn money_moves_only_in_balanced_journals_and_never_below_zero_for_users() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let deposit = movement(vec![Line::new(WORLD, "USDC", d("-5")), Line::new("u1", "USDC", d("5"))], vec![]);
        let mut acc = accounts(&deposit);
        assert_eq!(deposit.apply_to(&mut acc).unwrap().len(), 2);
        assert_eq!(acc.iter().map(|a| a.balance).collect::<Vec<_>>(), [d("-5"), d("5")], "@world sorts first");

        let unbalanced = movement(vec![Line::new("u1", "USDC", d("-1")), Line::new("u2", "USDC", d("2"))], vec![]);
        assert!(matches!(unbalanced.apply_to(&mut accounts(&unbalanced)), Err(WalletError::Unexpected(_))));
        let overdraft = movement(vec![Line::new("u1", "USDC", d("-1")), Line::new("u2", "USDC", d("1"))], vec![]);
        assert!(matches!(overdraft.apply_to(&mut accounts(&overdraft)), Err(WalletError::InsufficientFunds)));
        let hold_beyond = movement(vec![], vec![Line::new("u1", "USDC", d("0.000001"))]);
        assert!(matches!(hold_beyond.apply_to(&mut accounts(&hold_beyond)), Err(WalletError::InsufficientFunds)));
    }

    #[test]
    fn verify_finds_what_does_not_add_up() {
        let now = base::clock::now();
        let tx = Uuid::now_v7();
        let mut a = Account::empty("u1", "USDC", now);
        a.balance = Decimal::from(5);
        let world = Account { balance: Decimal::from(-5), ..Account::empty(WORLD, "USDC", now) };
        let entries = vec![
            (tx, WORLD.to_string(), "USDC".to_string(), Decimal::from(-5)),
            (tx, "u1".into(), "USDC".into(), Decimal::from(5)),
        ];
        assert!(verify(&[world.clone(), a.clone()], &entries, &[]).ok);
        a.balance = Decimal::from(6);
        let v = verify(&[world, a], &entries[..1], &[]);
        assert!(!v.ok);
        assert_eq!(v.mismatches.len(), 2, "{:?}", v.mismatches);
    }
}
