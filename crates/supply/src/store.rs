//! The supply store: a trait with a PostgreSQL and a SQLite implementation, chosen by the
//! database in use. Every change writes its outbox event in the same transaction.

mod postgres;
mod sqlite;

use std::sync::Arc;
use storage::IdPage;

use async_trait::async_trait;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::domain::{Supply, SupplyError, SupplyStatus};
use crate::reservation::ReservationOp;
use base::Step;
use events::outbox::{EventContext, NewEvent};
use storage::Database;

storage::migrations!(pub MIGRATIONS, "supply");

/// Which supplies a list returns (newest first), and where a page starts.
#[derive(Debug, Clone, Default)]
pub struct SupplyFilter {
    pub user_id: Option<Uuid>,
    pub currency: Option<String>,
    pub status: Option<SupplyStatus>,
    /// Only ids before this one (the cursor).
    pub before: Option<Uuid>,
    pub limit: i64,
}

impl SupplyFilter {
    /// The page of ids it selects, on either backend.
    pub fn page(&self) -> IdPage {
        IdPage::new("supplies", "status <> 'deleted'")
            .eq("user_id", self.user_id)
            .eq("currency", self.currency.clone())
            .eq("status", self.status.map(|s| s.as_str()))
            .page(self.before, self.limit)
    }
}

/// Who may change a supply, and at which version.
#[derive(Debug, Clone, Copy, Default)]
pub struct Guard {
    /// `Some(user)` for a user acting on their own supply; `None` for admins.
    pub owner: Option<Uuid>,
    pub expected_version: Option<i64>,
}

/// A change to a locked supply; returns the event to record with it.
pub type Mutation = Box<dyn FnOnce(&mut Supply) -> Result<NewEvent, SupplyError> + Send>;

/// Builds the event for a supply a reservation step changed.
pub type EventFn = Box<dyn Fn(&Supply) -> anyhow::Result<NewEvent> + Send>;

/// Storage of supplies.
#[async_trait]
pub trait SupplyStore: Send + Sync {
    /// Inserts a new supply with its event.
    async fn insert(&self, supply: &Supply, event: &NewEvent, ctx: &EventContext) -> Result<(), SupplyError>;

    /// A supply by id, deleted ones included.
    async fn get(&self, id: Uuid) -> Result<Option<Supply>, SupplyError>;

    /// Locks a live supply, checks the guard, applies `change`, bumps the version and writes the
    /// row and its event, in one transaction.
    async fn modify(&self, id: Uuid, guard: Guard, ctx: &EventContext, change: Mutation)
    -> Result<Supply, SupplyError>;

    /// Ids of live supplies matching the filter, newest first.
    async fn list_ids(&self, filter: &SupplyFilter) -> Result<Vec<Uuid>, SupplyError>;

    /// Supplies by id, in any order; unknown ids are left out.
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<Supply>, SupplyError>;

    /// An active supply of the user in the currency with at least `amount` available: the one with
    /// the most available, and of equals the oldest.
    async fn find_available(&self, user_id: Uuid, currency: &str, amount: Decimal)
    -> Result<Option<Uuid>, SupplyError>;

    /// Runs one reservation step for a claim (see [`crate::reservation::plan`]) in one transaction,
    /// with the supply's event when the supply changes; returns the outcome and the changed supply.
    async fn reservation_step(
        &self,
        claim_id: Uuid,
        op: ReservationOp,
        ctx: &EventContext,
        event_of: EventFn,
    ) -> Result<(Step, Option<Uuid>), SupplyError>;
}

/// The store for the process's database.
pub fn open(db: &Database) -> Arc<dyn SupplyStore> {
    match db {
        Database::Postgres(pool) => Arc::new(postgres::PgSupplyStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(sqlite::SqliteSupplyStore::new(pool.clone())),
    }
}

/// What every backend does to a locked supply before writing it back: the guard, the version bump
/// and the change, which yields the event to record with it.
fn apply(mut s: Supply, guard: &Guard, change: Mutation) -> Result<(Supply, NewEvent), SupplyError> {
    check_guard(&s, guard)?;
    s.version += 1;
    s.updated_at = base::clock::now();
    let event = change(&mut s)?;
    Ok((s, event))
}

/// The checks every backend makes on a locked row before changing it.
fn check_guard(supply: &Supply, guard: &Guard) -> Result<(), SupplyError> {
    if supply.status == SupplyStatus::Deleted || guard.owner.is_some_and(|o| o != supply.user_id) {
        return Err(SupplyError::NotFound);
    }
    if guard.expected_version.is_some_and(|v| v != supply.version) {
        return Err(SupplyError::VersionMismatch);
    }
    Ok(())
}
