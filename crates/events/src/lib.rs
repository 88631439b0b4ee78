//! Events (DESIGN D4): the transactional outbox that every state change writes its event into, the
//! embedded event log it doubles as, and durable delivery to consumers (inbox, retries, parking).
//! The Kafka transport (crate `kafka`) reuses [`delivery::deliver_once`] and [`EventHandler`].
//!
//! The tables shared by every service (outbox, consumer positions, inbox, parked events, leases,
//! users and sign-in, idempotency keys) are migrated here as the `platform` set.

pub mod delivery;
pub mod outbox;
mod sql;

pub use delivery::{ConsumerOptions, Delivery, EventHandler, EventSource, ParkedEvent, RedriveRequest};
pub use outbox::{EventContext, EventEnvelope, NewEvent};

storage::migrations!(pub MIGRATIONS, "platform");
