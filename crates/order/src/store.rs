//! The order store: a trait with a PostgreSQL and a SQLite implementation. Every change writes
//! its outbox event in the same transaction.

mod postgres;
mod sqlite;

use std::sync::Arc;
use storage::IdPage;

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{Order, OrderError, OrderStatus};
use events::outbox::{EventContext, NewEvent};
use storage::Database;

storage::migrations!(pub MIGRATIONS, "order");

/// Which orders a list returns (newest first).
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub user_id: Option<Uuid>,
    /// Exclude this user's orders (shoppers browsing claimable orders).
    pub not_user_id: Option<Uuid>,
    pub currency: Option<String>,
    pub status: Option<OrderStatus>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

impl OrderFilter {
    /// The page of ids it selects, on either backend.
    pub fn page(&self) -> IdPage {
        IdPage::new("orders", "status <> 'deleted'")
            .eq("user_id", self.user_id)
            .ne("user_id", self.not_user_id)
            .eq("currency", self.currency.clone())
            .eq("status", self.status.map(|s| s.as_str()))
            .page(self.before, self.limit)
    }
}

/// Who may change an order, and at which version.
#[derive(Debug, Clone, Copy, Default)]
pub struct Guard {
    pub owner: Option<Uuid>,
    pub expected_version: Option<i64>,
}

/// A change to a locked order; `None` means "nothing to do" (an idempotent repeat).
pub type Mutation = Box<dyn FnOnce(&mut Order) -> Result<Option<NewEvent>, OrderError> + Send>;

/// Storage of orders and their items.
#[async_trait]
pub trait OrderStore: Send + Sync {
    async fn insert(&self, order: &Order, event: &NewEvent, ctx: &EventContext) -> Result<(), OrderError>;

    /// An order with its items, deleted ones included.
    async fn get(&self, id: Uuid) -> Result<Option<Order>, OrderError>;

    /// An order's row without its items (`items` left empty), deleted ones included: one statement,
    /// for the decisions that need only its status, amount and version (the claim path).
    async fn get_row(&self, id: Uuid) -> Result<Option<Order>, OrderError>;

    /// Locks a live order, checks the guard, applies `change`; when it yields an event, bumps the
    /// version and writes the row (and the items, if they changed) with the event, in one transaction.
    async fn modify(&self, id: Uuid, guard: Guard, ctx: &EventContext, change: Mutation) -> Result<Order, OrderError>;

    /// Ids of live orders matching the filter, newest first.
    async fn list_ids(&self, filter: &OrderFilter) -> Result<Vec<Uuid>, OrderError>;

    /// Orders with their items by id, in any order; unknown ids are left out.
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<Order>, OrderError>;
}

pub fn open(db: &Database) -> Arc<dyn OrderStore> {
    match db {
        Database::Postgres(pool) => Arc::new(postgres::PgOrderStore::new(pool.clone())),
        Database::Sqlite(pool) => Arc::new(sqlite::SqliteOrderStore::new(pool.clone())),
    }
}

fn check_guard(order: &Order, guard: &Guard) -> Result<(), OrderError> {
    if order.status == OrderStatus::Deleted || guard.owner.is_some_and(|o| o != order.user_id) {
        return Err(OrderError::NotFound);
    }
    if guard.expected_version.is_some_and(|v| v != order.version) {
        return Err(OrderError::VersionMismatch);
    }
    Ok(())
}

/// Runs a mutation on a copy: `Some((order, event, items_changed))` when there is something to write.
fn apply(before: Order, change: Mutation) -> Result<(Order, Option<(NewEvent, bool)>), OrderError> {
    let mut after = before.clone();
    match change(&mut after)? {
        None => Ok((before, None)),
        Some(event) => {
            let items_changed = after.items != before.items;
            after.version += 1;
            after.updated_at = base::clock::now();
            Ok((after, Some((event, items_changed))))
        }
    }
}
