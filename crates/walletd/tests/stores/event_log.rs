//! The outbox as event log (`head`, `list`, `unpublished`, `mark_published`) and delivery to a
//! consumer group (positions, inbox, parking, `replay`).

use std::sync::Mutex;
use std::time::Duration;

use rstest::rstest;
use serde_json::json;
use uuid::Uuid;

use events::delivery::{self, ConsumerOptions, Delivery, EventHandler};
use events::outbox;
use events::{EventContext, EventEnvelope, NewEvent};
use storage::Database;
use supply::domain::{NewSupply, Supply};
use testkit::Backend;

use crate::{assert_event, ctx, dec, fresh};

/// Writes an event the way every store does: with a change, in its transaction.
async fn write(db: &Database, event_type: &'static str, ctx: &EventContext) -> NewEvent {
    let asset = base::money::Asset { code: "ETH".into(), decimals: 18 };
    let s = Supply::new(Uuid::now_v7(), NewSupply { asset, amount: dec("1") }, base::clock::now());
    let event = NewEvent {
        event_type,
        version: 2,
        topic: "test-events",
        aggregate_id: Uuid::now_v7(),
        data: json!({"nested": {"list": [1, "two", null], "amount": "0.000000000000000001"}, "flag": true}),
    };
    supply::store::open(db).insert(&s, &event, ctx).await.unwrap();
    event
}

fn seqs(events: &[EventEnvelope]) -> Vec<i64> {
    events.iter().map(|e| e.seq).collect()
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn the_log_reads_in_order_after_a_position_and_tracks_publication(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    assert_eq!(outbox::head(&db).await.unwrap(), 0, "an empty log");
    assert!(outbox::list(&db, 0, 10).await.unwrap().is_empty());
    assert!(outbox::unpublished(&db, 10).await.unwrap().is_empty());

    let before = base::clock::now();
    let (full, bare) = (ctx(), EventContext::default());
    let mut written = Vec::new();
    for (i, event_type) in ["order.created", "supply.created", "order.claimed", "claim.processed", "order.completed"]
        .into_iter()
        .enumerate()
    {
        let ctx = if i == 1 { &bare } else { &full };
        written.push((write(&db, event_type, ctx).await, ctx.clone()));
    }
    let after = base::clock::now();

    let all = outbox::list(&db, 0, 1000).await.unwrap();
    assert_eq!(all.len(), 5);
    for (e, (event, ctx)) in all.iter().zip(&written) {
        assert_event(e, event, ctx);
        assert!(before <= e.occurred_at && e.occurred_at <= after, "occurred_at is the time of writing");
    }
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "positions grow: {:?}", seqs(&all));
    assert_eq!(all.iter().map(|e| e.id).collect::<std::collections::HashSet<_>>().len(), 5, "ids are unique");
    let s = seqs(&all);
    assert_eq!(outbox::head(&db).await.unwrap(), s[4]);
    assert_eq!(seqs(&outbox::list(&db, s[1], 2).await.unwrap()), [s[2], s[3]], "after a position, up to a limit");
    assert!(outbox::list(&db, s[4], 10).await.unwrap().is_empty());

    assert_eq!(outbox::unpublished_count(&db).await.unwrap(), 5);
    assert_eq!(seqs(&outbox::unpublished(&db, 3).await.unwrap()), s[..3].to_vec());
    outbox::mark_published(&db, vec![s[0], s[2]]).await.unwrap();
    outbox::mark_published(&db, vec![]).await.unwrap();
    assert_eq!(seqs(&outbox::unpublished(&db, 10).await.unwrap()), [s[1], s[3], s[4]]);
    assert_eq!(outbox::unpublished_count(&db).await.unwrap(), 3);
    outbox::mark_published(&db, vec![s[1], s[3], s[4]]).await.unwrap();
    assert!(outbox::unpublished(&db, 10).await.unwrap().is_empty());
    assert_eq!(outbox::unpublished_count(&db).await.unwrap(), 0);
    assert_eq!(seqs(&outbox::list(&db, 0, 1000).await.unwrap()), s, "published events stay in the log");
}

/// A consumer that records the positions it was handed, and fails every event when told to.
struct Recorder {
    group: &'static str,
    fail: bool,
    seen: Mutex<Vec<i64>>,
}

impl Recorder {
    fn new(group: &'static str, fail: bool) -> Self {
        Self { group, fail, seen: Mutex::new(Vec::new()) }
    }

    fn seen(&self) -> Vec<i64> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl EventHandler for Recorder {
    fn group(&self) -> &'static str {
        self.group
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type.starts_with("order.")
    }

    async fn handle(&self, event: &EventEnvelope) -> anyhow::Result<()> {
        self.seen.lock().unwrap().push(event.seq);
        anyhow::ensure!(!self.fail, "cannot handle {}", event.event_type);
        Ok(())
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_group_handles_each_wanted_event_once_from_its_saved_position_and_replays(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let opts = ConsumerOptions::default();
    let handler = Recorder::new("recorder", false);
    for event_type in ["order.created", "supply.created", "order.cancelled"] {
        write(&db, event_type, &ctx()).await;
    }
    let s = seqs(&outbox::list(&db, 0, 1000).await.unwrap());
    assert_eq!(delivery::load_position(&db, "recorder").await.unwrap(), 0, "a new group starts at the beginning");

    assert_eq!(delivery::drain_once(&db, &handler, &opts).await.unwrap(), 3, "moves past every event");
    assert_eq!(handler.seen(), [s[0], s[2]], "handles the wanted ones, in order");
    assert_eq!(delivery::load_position(&db, "recorder").await.unwrap(), s[2], "the position is saved");
    assert_eq!(delivery::drain_once(&db, &handler, &opts).await.unwrap(), 0);

    write(&db, "order.deleted", &ctx()).await;
    let s3 = outbox::head(&db).await.unwrap();
    assert_eq!(delivery::drain_once(&db, &handler, &opts).await.unwrap(), 1, "only what is new");
    assert_eq!(handler.seen(), [s[0], s[2], s3]);

    delivery::replay(&db, "recorder", 0, false).await.unwrap();
    assert_eq!(delivery::load_position(&db, "recorder").await.unwrap(), 0, "rewound");
    assert_eq!(delivery::drain_once(&db, &handler, &opts).await.unwrap(), 4);
    assert_eq!(handler.seen(), [s[0], s[2], s3], "the inbox turns handled events away");
    assert_eq!(delivery::load_position(&db, "recorder").await.unwrap(), s3);

    delivery::replay(&db, "recorder", s[0], true).await.unwrap();
    assert_eq!(delivery::drain_once(&db, &handler, &opts).await.unwrap(), 3);
    assert_eq!(handler.seen(), [s[0], s[2], s3, s[2], s3], "forgetting the inbox hands them over again");

    delivery::save_position(&db, "another", 42).await.unwrap();
    assert_eq!(delivery::load_position(&db, "another").await.unwrap(), 42);
    let positions = delivery::positions(&db).await.unwrap();
    assert_eq!(positions, [("another".to_string(), 42), ("recorder".to_string(), s3)]);
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_event_that_keeps_failing_is_parked_and_counts_as_handled(#[case] backend: Backend) {
    let (_dir, db) = fresh(backend).await;
    let opts = ConsumerOptions { max_attempts: 3, backoff: Duration::from_millis(1), ..Default::default() };
    let failing = Recorder::new("failing", true);
    write(&db, "order.created", &ctx()).await;
    let event = outbox::list(&db, 0, 10).await.unwrap().remove(0);

    assert_eq!(delivery::drain_once(&db, &failing, &opts).await.unwrap(), 1, "a poison event does not block the log");
    assert_eq!(failing.seen(), [event.seq; 3], "tried max_attempts times");
    let parked = delivery::parked(&db).await.unwrap();
    assert_eq!(parked.len(), 1);
    let p = &parked[0];
    assert_eq!(
        (p.group.as_str(), p.event_id, p.seq, p.event_type.as_str()),
        ("failing", event.id, event.seq, "order.created")
    );
    assert_eq!(p.attempts, 3);
    assert!(p.last_error.contains("cannot handle order.created"), "{}", p.last_error);

    assert_eq!(delivery::deliver_once(&db, &failing, &opts, &event).await.unwrap(), Delivery::Duplicate);
    delivery::replay(&db, "failing", 0, false).await.unwrap();
    delivery::drain_once(&db, &failing, &opts).await.unwrap();
    assert_eq!(failing.seen().len(), 3, "a parked event is not retried by a replay");

    let other = Recorder::new("other", false);
    assert_eq!(delivery::deliver_once(&db, &other, &opts, &event).await.unwrap(), Delivery::Handled);
    assert_eq!(
        delivery::deliver_once(&db, &other, &opts, &event).await.unwrap(),
        Delivery::Duplicate,
        "inboxes are per group"
    );
    assert_eq!(other.seen(), [event.seq]);
}
