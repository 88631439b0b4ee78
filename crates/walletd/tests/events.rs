//! Durable delivery on the embedded log, on both backends: retries with backoff, a poison event
//! parked after its attempts without blocking the events behind it, positions that persist.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use events::delivery::{self, ConsumerOptions, EventHandler};
use events::outbox::{self, EventContext, EventEnvelope, NewEvent};
use rstest::rstest;
use serde_json::json;
use storage::Database;
use testkit::{Backend, TempDir};
use uuid::Uuid;

struct Flaky {
    transient_failures: AtomicU32,
    handled: Mutex<Vec<String>>,
    attempts_on_poison: AtomicU32,
}

#[async_trait]
impl EventHandler for Flaky {
    fn group(&self) -> &'static str {
        "test-group"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type.starts_with("test.")
    }

    async fn handle(&self, event: &EventEnvelope) -> anyhow::Result<()> {
        let name = event.data["name"].as_str().unwrap().to_string();
        if name == "poison" {
            self.attempts_on_poison.fetch_add(1, Ordering::SeqCst);
            anyhow::bail!("cannot digest this");
        }
        if name == "flaky" && self.transient_failures.load(Ordering::SeqCst) > 0 {
            self.transient_failures.fetch_sub(1, Ordering::SeqCst);
            anyhow::bail!("temporary trouble");
        }
        self.handled.lock().unwrap().push(name);
        Ok(())
    }
}

async fn write(db: &Database, event_type: &'static str, name: &str) {
    let event = NewEvent {
        event_type,
        version: 1,
        topic: "test-events",
        aggregate_id: Uuid::now_v7(),
        data: json!({"name": name}),
    };
    let ctx = EventContext { region: "test".into(), ..Default::default() };
    match db {
        Database::Postgres(pool) => {
            let mut c = pool.get().await.unwrap();
            let tx = c.transaction().await.unwrap();
            outbox::insert_pg(&tx, &ctx, &event).await.unwrap();
            tx.commit().await.unwrap();
        }
        Database::Sqlite(pool) => {
            pool.call(move |c| {
                let tx = c.transaction()?;
                outbox::insert_sqlite(&tx, &ctx, &event)?;
                tx.commit()?;
                Ok::<_, anyhow::Error>(())
            })
            .await
            .unwrap();
        }
    }
}

#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn retries_then_parks_a_poison_event_without_blocking_the_log(#[case] backend: Backend) {
    let dir = TempDir::new();
    let url = testkit::fresh_database_url(backend, &dir).await;
    let db = Database::connect(&url, &Default::default()).await.unwrap();
    walletd::migrate(&db).await.unwrap();
    for (ty, name) in
        [("test.a", "first"), ("other.x", "skipped"), ("test.b", "flaky"), ("test.c", "poison"), ("test.d", "last")]
    {
        write(&db, ty, name).await;
    }
    let handler = Flaky {
        transient_failures: AtomicU32::new(2),
        handled: Mutex::new(Vec::new()),
        attempts_on_poison: AtomicU32::new(0),
    };
    let opts = ConsumerOptions { max_attempts: 4, backoff: Duration::from_millis(5), ..Default::default() };

    assert_eq!(delivery::drain_once(&db, &handler, &opts).await.unwrap(), 5);
    assert_eq!(*handler.handled.lock().unwrap(), ["first", "flaky", "last"], "the flaky event got through on a retry");
    assert_eq!(handler.attempts_on_poison.load(Ordering::SeqCst), 4);
    let parked = delivery::parked(&db).await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (parked[0].group.as_str(), parked[0].event_type.as_str(), parked[0].attempts),
        ("test-group", "test.c", 4)
    );
    assert!(parked[0].last_error.contains("cannot digest"));
    let head = outbox::head(&db).await.unwrap();
    assert_eq!(delivery::load_position(&db, "test-group").await.unwrap(), head);

    // The position persists: a new drain (as after a restart) finds nothing to do.
    assert_eq!(delivery::drain_once(&db, &handler, &opts).await.unwrap(), 0);
    // A replay through the inbox re-handles nothing, the parked event included.
    delivery::replay(&db, "test-group", 0, false).await.unwrap();
    delivery::drain_once(&db, &handler, &opts).await.unwrap();
    assert_eq!(handler.handled.lock().unwrap().len(), 3);
    assert_eq!(handler.attempts_on_poison.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn events_status_and_replay_work_on_the_embedded_log() {
    use serde_json::Value;
    let app = testkit::TestApp::spawn(Backend::Sqlite).await;
    let (buyer, shopper) = (app.new_user().await, app.new_user().await);
    app.create_supply(&shopper.access, "USDC", "10").await;
    let body =
        json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": "2", "quantity": 1}]});
    let order: Value = app.post("/v1/orders", &buyer.access).json(&body).send().await.unwrap().json().await.unwrap();
    let oid = order["id"].as_str().unwrap();
    assert_eq!(app.post(&format!("/v1/orders/{oid}/claim"), &shopper.access).send().await.unwrap().status(), 201);
    let url = app.settings.database_url();
    let db = Database::connect(&url, &app.settings.db_options()).await.unwrap();
    let caught_up = || async {
        delivery::load_position(&db, "claim-processor").await.unwrap() >= outbox::head(&db).await.unwrap()
            && app.get(&format!("/v1/orders/{oid}"), &buyer.access).send().await.unwrap().json::<Value>().await.unwrap()
                ["status"]
                == "completed"
    };
    assert!(testkit::wait_until(Duration::from_secs(30), caught_up).await);
    let data = app.stop().await;

    let bin = env!("CARGO_BIN_EXE_walletd");
    let run = |args: &[&str]| {
        let out = testkit::process::command(bin, &data.0, &[("WALLETD_DATABASE_URL", url.as_str())])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let head = outbox::head(&db).await.unwrap();
    let status = run(&["events", "status"]);
    assert!(status.contains(&format!("log head: {head}")), "{status}");
    assert!(status.contains(&format!("claim-processor: position {head}, lag 0")), "{status}");
    assert!(run(&["events", "replay", "--group", "claim-processor", "--from", "0"]).contains("rewound to 0"));
    let status = run(&["events", "status"]);
    assert!(status.contains(&format!("claim-processor: position 0, lag {head}")), "{status}");
}

fn test_event(name: &str) -> NewEvent {
    NewEvent {
        event_type: "test.ordering",
        version: 1,
        topic: "test-events",
        aggregate_id: Uuid::now_v7(),
        data: json!({"name": name}),
    }
}

/// Writers on PostgreSQL commit in parallel (no global lock), and a position taken early but
/// committed late is never passed over: while the transaction holding it is open, a reader sees
/// nothing past it, not even events committed after it; once it commits, both come in position order.
#[tokio::test]
async fn writers_commit_in_parallel_and_a_reader_never_skips_an_event_that_commits_late() {
    let dir = TempDir::new();
    let url = testkit::fresh_database_url(Backend::Postgres, &dir).await;
    let db = Database::connect(&url, &Default::default()).await.unwrap();
    walletd::migrate(&db).await.unwrap();
    write(&db, "test.before", "before").await;
    let start = outbox::head(&db).await.unwrap();
    let Database::Postgres(pool) = &db else { unreachable!() };
    let ctx = EventContext { region: "test".into(), ..Default::default() };

    let mut early = pool.get().await.unwrap();
    let early = early.transaction().await.unwrap();
    outbox::insert_pg(&early, &ctx, &test_event("early")).await.unwrap();
    // A second writer takes a later position and commits while the first is open.
    let mut late = pool.get().await.unwrap();
    let late = late.transaction().await.unwrap();
    let second = async {
        outbox::insert_pg(&late, &ctx, &test_event("late")).await.unwrap();
        late.commit().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second writer waited for the first: writers are serialised");

    // The reader waits for the open writer, up to its limit, and then answers "nothing settled".
    let seen = outbox::list(&db, start, 100).await.unwrap();
    assert!(
        seen.is_empty(),
        "read past an open writer's position: {:?}",
        seen.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    assert!(outbox::head(&db).await.is_err(), "the head is not settled while a writer below it is open");

    // A reader started before the early writer commits gets both, in position order.
    let reader = tokio::spawn({
        let db = db.clone();
        async move { outbox::list(&db, start, 100).await.unwrap() }
    });
    early.commit().await.unwrap();
    let seen = reader.await.unwrap();
    let names: Vec<&str> = seen.iter().map(|e| e.data["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["early", "late"]);
    assert!(seen[0].seq < seen[1].seq);
    assert_eq!(outbox::head(&db).await.unwrap(), seen[1].seq);
}
