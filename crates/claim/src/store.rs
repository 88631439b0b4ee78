//! The claim store: a trait with a PostgreSQL and a SQLite implementation. The partial unique
//! index on live claims is the guard; a violation becomes [`ClaimError::AlreadyClaimed`] here,
//! where the query is made.

mod postgres;
mod sqlite;

use std::sync::Arc;
use storage::IdPage;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{Claim, ClaimError, ClaimStatus};
use events::outbox::{EventContext, NewEvent};
use storage::Database;

storage::migrations!(pub MIGRATIONS, "claim");

/// Which claims a list returns (newest first).
#[derive(Debug, Clone, Default)]
pub struct ClaimFilter {
    pub user_id: Option<Uuid>,
    pub status: Option<ClaimStatus>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

impl ClaimFilter {
    /// The page of ids it selects, on either backend.
    pub fn page(&self) -> IdPage {
        IdPage::new("claims", "true")
            .eq("user_id", self.user_id)
            .eq("status", self.status.map(|s| s.as_str()))
            .page(self.before, self.limit)
    }
}

/// A change to a locked claim, with the event it records.
pub type Mutation = Box<dyn FnOnce(&mut Claim) -> Result<NewEvent, ClaimError> + Send>;

#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Inserts a pending claim with its event; a live claim on the order already is `AlreadyClaimed`.
    async fn insert(&self, claim: &Claim, event: &NewEvent, ctx: &EventContext) -> Result<(), ClaimError>;
    async fn get(&self, id: Uuid) -> Result<Option<Claim>, ClaimError>;
    /// The newest claim on an order.
    async fn latest_for_order(&self, order_id: Uuid) -> Result<Option<Claim>, ClaimError>;
    /// Locks the claim, applies `change`, bumps the version, writes it with the event.
    async fn modify(&self, id: Uuid, ctx: &EventContext, change: Mutation) -> Result<Claim, ClaimError>;
    /// Ids of claims matching the filter, newest first.
    async fn list_ids(&self, filter: &ClaimFilter) -> Result<Vec<Uuid>, ClaimError>;
    /// Claims by id, in any order; unknown ids are left out.
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<Claim>, ClaimError>;
}

pub fn open(db: &Database) -> Arc<dyn ClaimStore> {
    match db {
        Database::Postgres(pool) => Arc::new(postgres::PgClaimStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(sqlite::SqliteClaimStore::new(pool.clone())),
    }
}

const COLS: &str = "id, order_id, user_id, buyer_id, supply_id, currency, amount, status, failure_reason, \
                    claimed_at, processed_at, updated_at, version, order_version";

/// What every backend does to a locked claim before writing it back: the change (which yields the
/// event to record with it) and the version bump.
fn apply(mut c: Claim, change: Mutation) -> Result<(Claim, NewEvent), ClaimError> {
    let event = change(&mut c)?;
    c.version += 1;
    c.updated_at = base::clock::now();
    Ok((c, event))
}
