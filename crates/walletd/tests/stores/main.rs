//! Store contract suite: what each store promises (supply, order, claim, identity, leases, the event
//! log and its delivery), called directly rather than through HTTP, each test written once and run on
//! SQLite and PostgreSQL so the twin SQL is held to one behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod claims;
mod event_log;
mod leases;
mod orders;
mod sign_in;
mod supplies;

use rust_decimal::Decimal;
use uuid::Uuid;

use events::{EventContext, EventEnvelope};
use storage::Database;
use testkit::{Backend, TempDir};

/// A fresh, migrated database of its own; the directory must live as long as the database.
async fn fresh(backend: Backend) -> (TempDir, Database) {
    let dir = TempDir::new();
    let db = Database::connect(&testkit::fresh_database_url(backend, &dir).await, &Default::default()).await.unwrap();
    walletd::migrate(&db).await.unwrap();
    (dir, db)
}

/// Where the test's changes say they come from; every field is checked on the stored events.
fn ctx() -> EventContext {
    EventContext {
        region: "eu-test".into(),
        correlation_id: Some(format!("req-{}", Uuid::now_v7().simple())),
        actor_id: Some(Uuid::now_v7()),
        traceparent: Some(format!("00-{}-00f067aa0ba902b7-01", Uuid::now_v7().simple())),
    }
}

/// The whole event log, oldest first.
async fn log(db: &Database) -> Vec<EventEnvelope> {
    events::outbox::list(db, 0, 1000).await.unwrap()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Asserts that an event is the one a change recorded, with the context it was written in.
fn assert_event(e: &EventEnvelope, expected: &events::NewEvent, ctx: &EventContext) {
    assert_eq!(e.event_type, expected.event_type);
    assert_eq!(e.version, expected.version);
    assert_eq!(e.topic, expected.topic);
    assert_eq!(e.aggregate_id, expected.aggregate_id);
    assert_eq!(e.data, expected.data);
    assert_eq!(e.region, ctx.region);
    assert_eq!(e.correlation_id, ctx.correlation_id);
    assert_eq!(e.actor_id, ctx.actor_id);
    assert_eq!(e.traceparent, ctx.traceparent);
}
