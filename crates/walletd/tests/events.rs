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
use testkit::{Backend, TempDir, wait_until};
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

async fn json(res: reqwest::Response, status: u16) -> serde_json::Value {
    let got = res.status().as_u16();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    assert_eq!(got, status, "{body}");
    body
}

/// A claim's processing fails for a reason an operator can fix (a trigger refuses its update): the
/// event is parked; once the cause is gone an admin redrives it and the claim is processed. The
/// request is audited (`event.redrive_requested` with the admin and the request id), a second one
/// while pending is refused, and the event log lists one aggregate's or one request's events.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn an_admin_redrives_a_parked_event_once_its_cause_is_fixed(#[case] backend: Backend) {
    use serde_json::Value;
    let app = testkit::TestApp::spawn_with(backend, |s| {
        s.event_max_attempts = 3;
        s.event_retry_backoff = Duration::from_millis(20);
    })
    .await;
    let admin = app.admin_token().await;
    let db = Database::connect(&app.settings.database_url(), &app.settings.db_options()).await.unwrap();
    let admin_id = identity::IdentityStore::new(db.clone(), base::clock::system())
        .upsert_user(testkit::admin_address())
        .await
        .unwrap()
        .id;
    let (buyer, shopper) = (app.new_user().await, app.new_user().await);
    app.create_supply(&shopper.access, "USDC", "10").await;
    let body =
        json!({"currency": "USDC", "items": [{"product_id": "p", "product_name": "n", "price": "2", "quantity": 1}]});
    let order = json(app.post("/v1/orders", &buyer.access).json(&body).send().await.unwrap(), 201).await;
    let oid = order["id"].as_str().unwrap().to_string();
    testkit::refuse_claim_updates(&db, &oid, true).await;
    let claim = json(app.post(&format!("/v1/orders/{oid}/claim"), &shopper.access).send().await.unwrap(), 201).await;
    let claim_path = format!("/v1/claims/{}", claim["id"].as_str().unwrap());

    // The order's events, in log order; the claim's event is the one that parks.
    let order_events =
        json(app.get(&format!("/v1/admin/events?aggregate_id={oid}"), &admin).send().await.unwrap(), 200).await;
    let items = order_events["items"].as_array().unwrap();
    assert!(items.iter().all(|e| e["aggregate_id"] == oid.as_str()), "{order_events}");
    assert!(items.windows(2).all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));
    let claimed = items.iter().find(|e| e["type"] == "order.claimed").expect("order.claimed listed by aggregate");
    let event_id = claimed["id"].as_str().unwrap().to_string();
    let page =
        json(app.get(&format!("/v1/admin/events?aggregate_id={oid}&limit=1"), &admin).send().await.unwrap(), 200).await;
    let rest = json(
        app.get(
            &format!("/v1/admin/events?aggregate_id={oid}&after={}", page["next_cursor"].as_str().unwrap()),
            &admin,
        )
        .send()
        .await
        .unwrap(),
        200,
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len() + rest["items"].as_array().unwrap().len(), items.len());
    let bad = json(app.get("/v1/admin/events?aggregate_id=nope", &admin).send().await.unwrap(), 422).await;
    assert_eq!(bad["errors"][0]["field"], "aggregate_id", "{bad}");

    let parked_item = || async {
        let list =
            json(app.get("/v1/admin/parked-events?group=claim-processor", &admin).send().await.unwrap(), 200).await;
        list["items"].as_array().unwrap().iter().find(|p| p["event_id"] == event_id.as_str()).cloned()
    };
    assert!(
        wait_until(Duration::from_secs(30), || async { parked_item().await.is_some_and(|p| p["attempts"] == 3) }).await,
        "the refused claim's event was not parked after 3 attempts"
    );
    let parked = parked_item().await.unwrap();
    assert!(parked["last_error"].as_str().unwrap().contains("refused by test trigger"), "{parked}");
    assert_eq!(parked["redrive_requested_at"], Value::Null);
    // The one parked event, as the console follows a redrive.
    let one = format!("/v1/admin/parked-events/claim-processor/{event_id}");
    assert_eq!(json(app.get(&one, &admin).send().await.unwrap(), 200).await, parked);
    json(app.get(&one, &buyer.access).send().await.unwrap(), 403).await;
    let malformed =
        json(app.get("/v1/admin/parked-events/claim-processor/nope", &admin).send().await.unwrap(), 422).await;
    assert_eq!(malformed["errors"][0]["field"], "event_id", "{malformed}");
    let absent = json(
        app.get(&format!("/v1/admin/parked-events/claim-processor/{}", Uuid::now_v7()), &admin).send().await.unwrap(),
        404,
    )
    .await;
    assert_eq!(absent["code"], "NOT_FOUND");
    assert_eq!(json(app.get(&claim_path, &shopper.access).send().await.unwrap(), 200).await["status"], "pending");

    let redrive = format!("/v1/admin/parked-events/claim-processor/{event_id}/redrive");
    json(app.post(&redrive, &buyer.access).send().await.unwrap(), 403).await;
    let unknown = Uuid::now_v7();
    let missing = json(
        app.post(&format!("/v1/admin/parked-events/claim-processor/{unknown}/redrive"), &admin).send().await.unwrap(),
        404,
    )
    .await;
    assert_eq!(missing["code"], "NOT_FOUND");
    let malformed =
        json(app.post("/v1/admin/parked-events/claim-processor/nope/redrive", &admin).send().await.unwrap(), 422).await;
    assert_eq!(malformed["errors"][0]["field"], "event_id");

    // Fixed: the redrive goes through the claim processor again.
    testkit::refuse_claim_updates(&db, &oid, false).await;
    let res = app.post(&redrive, &admin).header("x-request-id", format!("redrive-{event_id}")).send().await.unwrap();
    let accepted = json(res, 202).await;
    assert_eq!(accepted["event_id"], event_id.as_str());
    assert_eq!(accepted["event_type"], "order.claimed");
    assert!(accepted["redrive_requested_at"].is_string(), "{accepted}");
    let redriven = wait_until(Duration::from_secs(30), || async {
        parked_item().await.is_none()
            && json(app.get(&claim_path, &shopper.access).send().await.unwrap(), 200).await["status"] == "processed"
    })
    .await;
    assert!(redriven, "the redriven event was not handled: parked {:?}", parked_item().await);
    assert_eq!(app.metric("events_redriven_total", &["group=\"claim-processor\"", "outcome=\"handled\""]).await, 1.0);
    let gone = json(app.get(&one, &admin).send().await.unwrap(), 404).await;
    assert_eq!(gone["code"], "NOT_FOUND", "handled: no longer parked");

    // The audit trail, found by the request's id.
    let audit = json(
        app.get(&format!("/v1/admin/events?correlation_id=redrive-{event_id}"), &admin).send().await.unwrap(),
        200,
    )
    .await;
    let audit = audit["items"].as_array().unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["type"], "event.redrive_requested");
    assert_eq!(audit[0]["topic"], "admin-events");
    assert_eq!(audit[0]["actor_id"], admin_id.to_string());
    assert_eq!(audit[0]["correlation_id"], format!("redrive-{event_id}"));
    assert_eq!(
        audit[0]["data"],
        json!({"group": "claim-processor", "event_id": event_id, "seq": claimed["seq"], "event_type": "order.claimed"})
    );

    // A second request while one is pending is refused: a group no process runs keeps it pending.
    let Some(other) = outbox::list(&db, 0, 1).await.unwrap().pop() else { panic!("an empty log") };
    park_for(&db, "nobody-runs-this", &other).await;
    let idle = format!("/v1/admin/parked-events/nobody-runs-this/{}/redrive", other.id);
    json(app.post(&idle, &admin).send().await.unwrap(), 202).await;
    let pending = json(app.post(&idle, &admin).send().await.unwrap(), 409).await;
    assert_eq!(pending["code"], "REDRIVE_PENDING");
    let listed =
        json(app.get("/v1/admin/parked-events?group=nobody-runs-this", &admin).send().await.unwrap(), 200).await;
    assert!(listed["items"][0]["redrive_requested_at"].is_string(), "{listed}");
    let pending_one = json(
        app.get(&format!("/v1/admin/parked-events/nobody-runs-this/{}", other.id), &admin).send().await.unwrap(),
        200,
    )
    .await;
    assert_eq!(pending_one, listed["items"][0], "the one parked event is the listed one");
}

/// Parks `event` for `group` as a consumer would have.
async fn park_for(db: &Database, group: &'static str, event: &EventEnvelope) {
    let (id, seq, ty) = (event.id, event.seq, event.event_type.clone());
    match db {
        Database::Postgres(pool) => {
            pool.get()
                .await
                .unwrap()
                .execute(
                    "INSERT INTO parked_events (group_name, event_id, seq, event_type, attempts, last_error, parked_at)
                     VALUES ($1, $2, $3, $4, 1, 'test', now())",
                    &[&group, &id, &seq, &ty],
                )
                .await
                .unwrap();
        }
        Database::Sqlite(pool) => {
            pool.call(move |c| {
                c.execute(
                    "INSERT INTO parked_events (group_name, event_id, seq, event_type, attempts, last_error, parked_at)
                     VALUES (?1, ?2, ?3, ?4, 1, 'test', '2026-01-01T00:00:00Z')",
                    (group, id.to_string(), seq, ty),
                )
                .map_err(anyhow::Error::from)
            })
            .await
            .unwrap();
        }
    }
}

/// The store's side of a redrive on both backends: the request marks the row once (a second is
/// refused while pending), a failing redrive parks it again with the new error and clears the mark,
/// and a successful one removes it.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_redrive_that_fails_again_stays_parked_and_one_that_passes_is_gone(#[case] backend: Backend) {
    let dir = TempDir::new();
    let url = testkit::fresh_database_url(backend, &dir).await;
    let db = Database::connect(&url, &Default::default()).await.unwrap();
    walletd::migrate(&db).await.unwrap();
    write(&db, "test.c", "poison").await;
    let handler = Flaky {
        transient_failures: AtomicU32::new(0),
        handled: Mutex::new(Vec::new()),
        attempts_on_poison: AtomicU32::new(0),
    };
    let opts = ConsumerOptions { max_attempts: 2, backoff: Duration::from_millis(5), ..Default::default() };
    let source = delivery::OutboxSource(db.clone());
    let lease = storage::Lease::new(db.clone(), "redrive:test-group", Duration::from_secs(10));
    delivery::drain_once(&db, &handler, &opts).await.unwrap();
    let parked = delivery::parked(&db).await.unwrap();
    assert_eq!(parked.len(), 1);
    let id = parked[0].event_id;
    assert_eq!(delivery::redrive_pending(&db, &handler, &opts, &source, &lease).await.unwrap(), 0, "nothing requested");

    let ctx = EventContext { region: "test".into(), ..Default::default() };
    let first = delivery::request_redrive(&db, "test-group", id, &ctx).await.unwrap();
    assert!(matches!(first, events::RedriveRequest::Requested(_)), "{first:?}");
    let second = delivery::request_redrive(&db, "test-group", id, &ctx).await.unwrap();
    assert!(matches!(second, events::RedriveRequest::AlreadyRequested(_)), "{second:?}");
    let other = delivery::request_redrive(&db, "other-group", id, &ctx).await.unwrap();
    assert!(matches!(other, events::RedriveRequest::NotFound), "{other:?}");

    // Parked again outside a redrive (a replay that forgets handled events): the request stays.
    delivery::replay(&db, "test-group", 0, true).await.unwrap();
    delivery::drain_once(&db, &handler, &opts).await.unwrap();
    assert_eq!(handler.attempts_on_poison.load(Ordering::SeqCst), 4);
    let reparked = delivery::parked_event(&db, "test-group", id).await.unwrap().unwrap();
    assert!(reparked.redrive_requested_at.is_some(), "a re-park dropped the pending request: {reparked:?}");

    // Another process holds the redrive lease: this one redrives nothing.
    let other_process = storage::Lease::new(db.clone(), "redrive:test-group-elsewhere", Duration::from_secs(10));
    let elsewhere = storage::Lease::new(db.clone(), "redrive:test-group-elsewhere", Duration::from_secs(10));
    assert!(other_process.take().await.unwrap());
    assert_eq!(delivery::redrive_pending(&db, &handler, &opts, &source, &elsewhere).await.unwrap(), 0);
    assert!(delivery::parked_event(&db, "test-group", id).await.unwrap().unwrap().redrive_requested_at.is_some());

    // Still poison: parked again, with this redrive's attempts, and no longer requested.
    assert_eq!(delivery::redrive_pending(&db, &handler, &opts, &source, &lease).await.unwrap(), 1);
    assert_eq!(handler.attempts_on_poison.load(Ordering::SeqCst), 6);
    let again = delivery::parked(&db).await.unwrap();
    assert_eq!((again.len(), again[0].attempts, again[0].redrive_requested_at), (1, 2, None));
    assert!(again[0].last_error.contains("cannot digest"));

    // Asked again with the cause gone (a handler that digests anything): handled, the row goes.
    struct Healthy;
    #[async_trait]
    impl EventHandler for Healthy {
        fn group(&self) -> &'static str {
            "test-group"
        }
        fn wants(&self, _: &str) -> bool {
            true
        }
        async fn handle(&self, _: &EventEnvelope) -> anyhow::Result<()> {
            Ok(())
        }
    }
    assert!(matches!(
        delivery::request_redrive(&db, "test-group", id, &ctx).await.unwrap(),
        events::RedriveRequest::Requested(_)
    ));
    assert_eq!(delivery::redrive_pending(&db, &Healthy, &opts, &source, &lease).await.unwrap(), 1);
    assert!(delivery::parked(&db).await.unwrap().is_empty());
    let audits = outbox::list(&db, 0, 100).await.unwrap();
    assert_eq!(audits.iter().filter(|e| e.event_type == "event.redrive_requested").count(), 2);

    // An event found nowhere: the request is cleared, the original error kept with a note.
    let mut lost = audits[0].clone();
    lost.id = Uuid::now_v7();
    park_for(&db, "test-group", &lost).await;
    delivery::request_redrive(&db, "test-group", lost.id, &ctx).await.unwrap();
    assert_eq!(delivery::redrive_pending(&db, &Healthy, &opts, &source, &lease).await.unwrap(), 1);
    let noted = delivery::parked_event(&db, "test-group", lost.id).await.unwrap().unwrap();
    assert_eq!(noted.last_error, "test | redrive: event not found in the outbox");
    assert_eq!(noted.redrive_requested_at, None);
}

/// A source that cannot read one event (a broker error, say) and finds the others in the outbox.
struct FailsFor(Uuid, delivery::OutboxSource);

impl delivery::EventSource for FailsFor {
    fn find<'a>(
        &'a self,
        group: &'a str,
        event_id: Uuid,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<Option<EventEnvelope>>> {
        if event_id == self.0 {
            return Box::pin(async { anyhow::bail!("the broker is unreachable") });
        }
        self.1.find(group, event_id)
    }
    fn describe(&self) -> String {
        self.1.describe()
    }
}

/// Many requested redrives: a pass takes on at most 10, oldest first, and one whose source fails is
/// counted and stays requested while the others go on; the next pass takes the rest.
#[rstest]
#[case::sqlite(Backend::Sqlite)]
#[case::postgres(Backend::Postgres)]
#[tokio::test]
async fn a_redrive_pass_takes_ten_requests_and_one_failure_does_not_stop_it(#[case] backend: Backend) {
    let dir = TempDir::new();
    let url = testkit::fresh_database_url(backend, &dir).await;
    let db = Database::connect(&url, &Default::default()).await.unwrap();
    walletd::migrate(&db).await.unwrap();
    for _ in 0..12 {
        write(&db, "test.c", "poison").await;
    }
    let handler = Flaky {
        transient_failures: AtomicU32::new(0),
        handled: Mutex::new(Vec::new()),
        attempts_on_poison: AtomicU32::new(0),
    };
    let opts = ConsumerOptions { max_attempts: 1, backoff: Duration::from_millis(1), ..Default::default() };
    delivery::drain_once(&db, &handler, &opts).await.unwrap();
    let parked = delivery::parked(&db).await.unwrap();
    assert_eq!(parked.len(), 12);
    let ctx = EventContext { region: "test".into(), ..Default::default() };
    for p in &parked {
        delivery::request_redrive(&db, "test-group", p.event_id, &ctx).await.unwrap();
    }
    // The poison is digestible now (the name is not looked at): every redrive that runs is handled.
    struct Healthy;
    #[async_trait]
    impl EventHandler for Healthy {
        fn group(&self) -> &'static str {
            "test-group"
        }
        fn wants(&self, _: &str) -> bool {
            true
        }
        async fn handle(&self, _: &EventEnvelope) -> anyhow::Result<()> {
            Ok(())
        }
    }
    let broken = parked[3].event_id;
    let source = FailsFor(broken, delivery::OutboxSource(db.clone()));
    let lease = storage::Lease::new(db.clone(), "redrive:test-group", Duration::from_secs(10));
    assert_eq!(delivery::redrive_pending(&db, &Healthy, &opts, &source, &lease).await.unwrap(), 9);
    let left: Vec<Uuid> = delivery::parked(&db).await.unwrap().iter().map(|p| p.event_id).collect();
    assert_eq!(left, [broken, parked[10].event_id, parked[11].event_id], "the failed one and the two past the cap");
    assert_eq!(delivery::redrive_pending(&db, &Healthy, &opts, &source, &lease).await.unwrap(), 2);
    let still = delivery::parked(&db).await.unwrap();
    assert_eq!(still.len(), 1);
    assert_eq!(still[0].event_id, broken);
    assert!(still[0].redrive_requested_at.is_some(), "a failed redrive stays requested");
    assert_eq!(
        delivery::redrive_pending(&db, &Healthy, &opts, &delivery::OutboxSource(db.clone()), &lease).await.unwrap(),
        1
    );
    assert!(delivery::parked(&db).await.unwrap().is_empty());
}
