//! Durable delivery of the event log to in-process consumers (DESIGN D4).
//!
//! A consumer group reads the outbox in order from its persisted position, skips events its
//! inbox already holds, retries a failing event with backoff, and parks it after
//! `max_attempts` so one poison event never blocks the log. Each handled event id goes to the
//! inbox; the position moves after a whole batch. Handlers must be idempotent: a crash between a
//! handler's effect and its inbox entry redelivers the event. The transport is the only thing the Kafka
//! consumer will replace; [`EventHandler`] stays as it is.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::BoxFuture;
use uuid::Uuid;

use base::clock;
use storage::{Database, Lease};
use time::OffsetDateTime;

use crate::outbox::{self, EventContext, EventEnvelope, NewEvent};
use crate::sql::{self, Param};

/// The clean-up job forgets handled event ids after the inbox retention (a redelivery older than
/// that is handled again, which idempotent handlers allow).
pub const INBOX_SWEEP: storage::Sweep = storage::Sweep {
    name: "inbox",
    postgres: "DELETE FROM inbox WHERE handled_at < $1",
    sqlite: "DELETE FROM inbox WHERE handled_at < ?1",
    keep: Duration::from_secs(7 * 24 * 3600),
};

/// Something that reacts to events. It must be idempotent.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// The consumer group: its position and inbox are its own.
    fn group(&self) -> &'static str;
    /// Whether this handler wants events of this type; others are skipped.
    fn wants(&self, event_type: &str) -> bool;
    async fn handle(&self, event: &EventEnvelope) -> anyhow::Result<()>;
    /// How many events of a batch may be handled at once. 1 (the default) keeps log order;
    /// more is for handlers whose events are independent of each other's order.
    fn concurrency(&self) -> usize {
        1
    }
    /// A group that belongs to one process: it only cares about events from its start on, and
    /// keeps its position in memory.
    fn ephemeral(&self) -> bool {
        false
    }
    /// Whether handled event ids are recorded (and checked) in the inbox. A handler whose effect is
    /// harmless to repeat (deleting cache keys) can skip the write per event.
    fn uses_inbox(&self) -> bool {
        true
    }
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub batch: i64,
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, up to `max_backoff`.
    pub backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// How often to look for events when nothing wakes the consumer.
    pub idle_poll: Duration,
    /// The embedded log's groups run in one process at a time, under a lease of this length.
    pub lease: Duration,
}

impl ConsumerOptions {
    /// The wait after failed attempt number `attempt` (from 1): `backoff`, doubled per attempt, never
    /// more than `max_backoff` (without the cap, 30 attempts of 50 ms would end in a wait of 300 days).
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.backoff.checked_mul(factor).map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            batch: 200,
            max_attempts: 5,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(30),
            idle_poll: Duration::from_millis(500),
            lease: Duration::from_secs(10),
        }
    }
}

/// A parked event, for admins.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ParkedEvent {
    pub group: String,
    pub event_id: Uuid,
    pub seq: i64,
    pub event_type: String,
    pub attempts: i32,
    pub last_error: String,
    /// When an admin asked for it to be sent back through its group (null when not asked, or once
    /// the redrive parked it again).
    #[serde(with = "time::serde::rfc3339::option")]
    pub redrive_requested_at: Option<OffsetDateTime>,
}

/// Runs a consumer until `shutdown` turns true, finishing the event in hand first.
pub async fn run(
    db: Database,
    handler: Arc<dyn EventHandler>,
    opts: ConsumerOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let group = handler.group();
    tracing::info!(consumer.group = group, ephemeral = handler.ephemeral(), "consumer started");
    // An ephemeral group keeps its position in memory, from the head of the log at start.
    let mut memory = None;
    // A durable group runs in one process at a time: several would work the same batches.
    let lease = (!handler.ephemeral()).then(|| Lease::new(db.clone(), format!("consumer:{group}"), opts.lease));
    let mut holding = false;
    let source = OutboxSource(db.clone());
    let mut last_redrive: Option<std::time::Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Some(lease) = &lease {
            match lease.take().await {
                Ok(true) => {
                    if !holding {
                        tracing::info!(consumer.group = group, "this process runs the consumer group");
                    }
                    holding = true;
                }
                outcome => {
                    if let Err(e) = outcome {
                        tracing::warn!(
                            consumer.group = group,
                            error = format!("{e:#}"),
                            "cannot take the lease; retrying"
                        );
                    } else if holding {
                        tracing::warn!(consumer.group = group, "lost the consumer group's lease to another process");
                    }
                    holding = false;
                    tokio::select! {
                        () = tokio::time::sleep(opts.idle_poll) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            }
        }
        let woken = outbox::written();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // Requested redrives, under the group's lease (an ephemeral group parks nothing to redrive), at
        // most once a second and a few per pass, so the drain waits little.
        if let Some(lease) = &lease
            && last_redrive.is_none_or(|t| t.elapsed() >= REDRIVE_EVERY)
        {
            last_redrive = Some(std::time::Instant::now());
            if let Err(e) = redrive_pending(&db, handler.as_ref(), &opts, &source, lease).await {
                tracing::warn!(
                    consumer.group = group,
                    error = format!("{e:#}"),
                    "cannot redrive parked events; retrying"
                );
            }
        }
        let pass = async {
            if !handler.ephemeral() {
                return drain_once(&db, handler.as_ref(), &opts).await;
            }
            let from = match memory {
                Some(p) => p,
                None => outbox::head(&db).await?,
            };
            let (n, to) = drain_from(&db, handler.as_ref(), &opts, from).await?;
            memory = Some(to);
            Ok(n)
        };
        match pass.await {
            Ok(0) => {
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep(opts.idle_poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(
                    consumer.group = group,
                    error = format!("{e:#}"),
                    "consumer cannot read the log; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
    if let Some(lease) = lease.filter(|_| holding)
        && let Err(e) = lease.release().await
    {
        tracing::warn!(consumer.group = group, error = format!("{e:#}"), "could not give up the lease; it lapses");
    }
    tracing::info!(consumer.group = group, "consumer stopped");
}

/// Handles one batch from the group's persisted position; returns how many events it moved past.
pub async fn drain_once(db: &Database, handler: &dyn EventHandler, opts: &ConsumerOptions) -> anyhow::Result<usize> {
    let group = handler.group();
    let position = load_position(db, group).await?;
    let (n, to) = drain_from(db, handler, opts, position).await?;
    if n > 0 {
        save_position(db, group, to).await?;
        let head = outbox::head(db).await?;
        metrics::gauge!("events_consumer_lag", "group" => group).set((head - to).max(0) as f64);
    } else {
        metrics::gauge!("events_consumer_lag", "group" => group).set(0.0);
    }
    Ok(n)
}

/// Handles the batch after `position`; returns how many events it moved past and the new position.
/// Each handled event is recorded in the inbox as it completes; the caller moves the position only
/// once the whole batch is through, so a crash mid-batch re-reads it and the inbox skips what was done.
async fn drain_from(
    db: &Database,
    handler: &dyn EventHandler,
    opts: &ConsumerOptions,
    position: i64,
) -> anyhow::Result<(usize, i64)> {
    let events = outbox::list(db, position, opts.batch).await?;
    let Some(last) = events.last().map(|e| e.seq) else { return Ok((0, position)) };
    let wanted: Vec<&EventEnvelope> = events.iter().filter(|e| handler.wants(&e.event_type)).collect();
    let work: Vec<_> = wanted.into_iter().map(|event| handle_one(db, handler, opts, event)).collect();
    futures::stream::iter(work)
        .buffer_unordered(handler.concurrency().max(1))
        .collect::<Vec<anyhow::Result<()>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    Ok((events.len(), last))
}

async fn handle_one(
    db: &Database,
    handler: &dyn EventHandler,
    opts: &ConsumerOptions,
    event: &EventEnvelope,
) -> anyhow::Result<()> {
    deliver_once(db, handler, opts, event).await.map(|_| ())
}

/// How the delivery of one event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Handled,
    /// Already in the group's inbox.
    Duplicate,
    /// Gave up after the retries; the last error.
    Parked(String),
}

/// Delivers one event to a handler, whatever the transport: the inbox check, the handler with its
/// retries and backoff, the inbox entry, and parking after `max_attempts`.
pub async fn deliver_once(
    db: &Database,
    handler: &dyn EventHandler,
    opts: &ConsumerOptions,
    event: &EventEnvelope,
) -> anyhow::Result<Delivery> {
    // The parked counter exists at 0 from the first event of its type the group is given (handled
    // before or not), so the first parking is an increase Prometheus sees: a series that appears
    // at 1 shows none, and the alert on parked events would miss it.
    metrics::counter!("events_parked_total", "group" => handler.group(), "type" => event.event_type.clone())
        .increment(0);
    if handler.uses_inbox() && in_inbox(db, handler.group(), event.id).await? {
        return Ok(Delivery::Duplicate);
    }
    // One span per event handled, in the trace of the request that wrote it.
    let span = tracing::info_span!(
        "event",
        consumer.group = handler.group(),
        event.id = %event.id,
        event.type = %event.event_type,
        aggregate.id = %event.aggregate_id,
        correlation.id = event.correlation_id.as_deref().unwrap_or(""),
    );
    base::trace::continue_from(&span, event.traceparent.as_deref());
    tracing::Instrument::instrument(deliver(db, handler, opts, event), span).await
}

async fn deliver(
    db: &Database,
    handler: &dyn EventHandler,
    opts: &ConsumerOptions,
    event: &EventEnvelope,
) -> anyhow::Result<Delivery> {
    let group = handler.group();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match handler.handle(event).await {
            Ok(()) => {
                if handler.uses_inbox() {
                    mark_handled(db, group, event).await?;
                }
                metrics::counter!("events_handled_total", "group" => group, "type" => event.event_type.clone(), "outcome" => "ok")
                    .increment(1);
                return Ok(Delivery::Handled);
            }
            // A service that does not answer is no fault of the event: it waits for the service
            // (the backoff grows to its maximum) instead of being parked.
            Err(e)
                if attempt >= opts.max_attempts
                    && !e.chain().any(|c| c.downcast_ref::<base::Unreachable>().is_some()) =>
            {
                tracing::error!(
                    consumer.group = group, event.id = %event.id, event.type = %event.event_type, attempts = attempt,
                    error = format!("{e:#}"), "event parked after its retries"
                );
                park(db, group, event, attempt, &format!("{e:#}")).await?;
                metrics::counter!("events_parked_total", "group" => group, "type" => event.event_type.clone())
                    .increment(1);
                return Ok(Delivery::Parked(format!("{e:#}")));
            }
            Err(e) => {
                tracing::warn!(
                    consumer.group = group, event.id = %event.id, attempt, error = format!("{e:#}"), "event failed; retrying"
                );
                metrics::counter!("events_handled_total", "group" => group, "type" => event.event_type.clone(), "outcome" => "retry")
                    .increment(1);
                tokio::time::sleep(opts.retry_delay(attempt)).await;
            }
        }
    }
}

/// The group's position (0 before its first event).
pub async fn load_position(db: &Database, group: &str) -> anyhow::Result<i64> {
    match db {
        Database::Postgres(pool) => {
            let row = pool
                .get()
                .await?
                .query_opt("SELECT position FROM consumer_offsets WHERE group_name = $1", &[&group])
                .await?;
            Ok(row.map_or(0, |r| r.get(0)))
        }
        Database::Sqlite(pool) => {
            let group = group.to_string();
            pool.call(move |c| {
                use rusqlite::OptionalExtension;
                let p = c
                    .query_row("SELECT position FROM consumer_offsets WHERE group_name = ?1", [group], |r| r.get(0))
                    .optional()?;
                Ok::<_, anyhow::Error>(p.unwrap_or(0))
            })
            .await
        }
    }
}

/// Moves the group's position (forwards or, for a replay, backwards).
pub async fn save_position(db: &Database, group: &str, position: i64) -> anyhow::Result<()> {
    let now = clock::now();
    match db {
        Database::Postgres(pool) => {
            pool.get()
                .await?
                .execute(
                    "INSERT INTO consumer_offsets (group_name, position, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (group_name) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
                    &[&group, &position, &now],
                )
                .await?;
        }
        Database::Sqlite(pool) => {
            let group = group.to_string();
            pool.call(move |c| {
                c.execute(
                    "INSERT INTO consumer_offsets (group_name, position, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (group_name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
                    rusqlite::params![group, position, clock::to_text(now)],
                )?;
                Ok::<_, anyhow::Error>(())
            })
            .await?;
        }
    }
    Ok(())
}

async fn in_inbox(db: &Database, group: &str, event_id: Uuid) -> anyhow::Result<bool> {
    match db {
        Database::Postgres(pool) => {
            let client = pool.get().await?;
            let sql = "SELECT 1 FROM inbox WHERE group_name = $1 AND event_id = $2";
            Ok(storage::pg::query_opt(&client, sql, &[&group, &event_id]).await?.is_some())
        }
        Database::Sqlite(pool) => {
            let group = group.to_string();
            pool.call(move |c| {
                use rusqlite::OptionalExtension;
                let hit = c
                    .query_row(
                        "SELECT 1 FROM inbox WHERE group_name = ?1 AND event_id = ?2",
                        [group, event_id.to_string()],
                        |_| Ok(()),
                    )
                    .optional()?;
                Ok::<_, anyhow::Error>(hit.is_some())
            })
            .await
        }
    }
}

/// Records the event as handled in the group's inbox.
async fn mark_handled(db: &Database, group: &str, event: &EventEnvelope) -> anyhow::Result<()> {
    let (now, id) = (clock::now(), event.id);
    match db {
        Database::Postgres(pool) => {
            let client = pool.get().await?;
            let sql = "INSERT INTO inbox (group_name, event_id, handled_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
            storage::pg::execute(&client, sql, &[&group, &id, &now]).await?;
        }
        Database::Sqlite(pool) => {
            let group = group.to_string();
            pool.call(move |c| {
                c.execute(
                    "INSERT INTO inbox (group_name, event_id, handled_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    rusqlite::params![group, id.to_string(), clock::to_text(now)],
                )?;
                Ok::<_, anyhow::Error>(())
            })
            .await?;
        }
    }
    Ok(())
}

/// Parks `event` for the group (again: the new attempts and error). A pending redrive request stays:
/// only the redrive clears it (a replay that parks the event again must not drop an audited request).
async fn park(db: &Database, group: &str, event: &EventEnvelope, attempts: u32, error: &str) -> anyhow::Result<()> {
    let (now, attempts) = (clock::now(), attempts as i32);
    let error: String = error.chars().take(2000).collect();
    match db {
        Database::Postgres(pool) => {
            pool.get()
                .await?
                .execute(
                    "INSERT INTO parked_events (group_name, event_id, seq, event_type, attempts, last_error, parked_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (group_name, event_id) DO UPDATE SET attempts = EXCLUDED.attempts,
                        last_error = EXCLUDED.last_error, parked_at = EXCLUDED.parked_at",
                    &[&group, &event.id, &event.seq, &event.event_type, &attempts, &error, &now],
                )
                .await?;
        }
        Database::Sqlite(pool) => {
            let (group, id, seq, ty) = (group.to_string(), event.id.to_string(), event.seq, event.event_type.clone());
            pool.call(move |c| {
                c.execute(
                    "INSERT INTO parked_events (group_name, event_id, seq, event_type, attempts, last_error, parked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (group_name, event_id) DO UPDATE SET attempts = excluded.attempts,
                        last_error = excluded.last_error, parked_at = excluded.parked_at",
                    rusqlite::params![group, id, seq, ty, attempts, error, clock::to_text(now)],
                )?;
                Ok::<_, anyhow::Error>(())
            })
            .await?;
        }
    }
    // A parked event counts as handled: a re-read batch must not retry it forever.
    mark_handled(db, group, event).await
}

/// Every parked event, oldest first.
pub async fn parked(db: &Database) -> anyhow::Result<Vec<ParkedEvent>> {
    read_parked(db, "TRUE", Vec::new(), 1000).await
}

/// The parked events of one group, oldest first.
pub async fn parked_in(db: &Database, group: &str) -> anyhow::Result<Vec<ParkedEvent>> {
    read_parked(db, "group_name = $1", vec![Param::Text(group.to_string())], 1000).await
}

/// One parked event.
pub async fn parked_event(db: &Database, group: &str, event_id: Uuid) -> anyhow::Result<Option<ParkedEvent>> {
    let params = vec![Param::Text(group.to_string()), Param::Uuid(event_id)];
    Ok(read_parked(db, "group_name = $1 AND event_id = $2", params, 1).await?.into_iter().next())
}

const PARKED_COLS: &str = "group_name, event_id, seq, event_type, attempts, last_error, redrive_requested_at";

fn parked_pg(r: &tokio_postgres::Row) -> ParkedEvent {
    ParkedEvent {
        group: r.get(0),
        event_id: r.get(1),
        seq: r.get(2),
        event_type: r.get(3),
        attempts: r.get(4),
        last_error: r.get(5),
        redrive_requested_at: r.get(6),
    }
}

fn parked_sqlite(r: &rusqlite::Row<'_>) -> anyhow::Result<ParkedEvent> {
    Ok(ParkedEvent {
        group: r.get(0)?,
        event_id: r.get::<_, String>(1)?.parse()?,
        seq: r.get(2)?,
        event_type: r.get(3)?,
        attempts: r.get(4)?,
        last_error: r.get(5)?,
        redrive_requested_at: r.get::<_, Option<String>>(6)?.map(|t| clock::from_text(&t)).transpose()?,
    })
}

/// The parked events where `condition` holds, oldest first (at most `limit`).
async fn read_parked(
    db: &Database,
    condition: &str,
    params: Vec<Param>,
    limit: i64,
) -> anyhow::Result<Vec<ParkedEvent>> {
    let query = format!("SELECT {PARKED_COLS} FROM parked_events WHERE {condition} ORDER BY seq LIMIT {limit}");
    match db {
        Database::Postgres(pool) => {
            let bound: Vec<_> = params.iter().map(Param::pg).collect();
            Ok(pool.get().await?.query(&query, &bound).await?.iter().map(parked_pg).collect())
        }
        Database::Sqlite(pool) => {
            let query = sql::for_sqlite(&query);
            let params: Vec<_> = params.into_iter().map(Param::sqlite).collect();
            pool.call(move |c| {
                let mut st = c.prepare(&query)?;
                let mut rows = st.query(rusqlite::params_from_iter(params))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(parked_sqlite(r)?);
                }
                Ok::<_, anyhow::Error>(out)
            })
            .await
        }
    }
}

/// The topic of the operators' own events (`event.redrive_requested`).
pub const ADMIN_TOPIC: &str = "admin-events";

/// How often a consumer looks for requested redrives, and the shortest time between two passes.
pub const REDRIVE_EVERY: Duration = Duration::from_secs(1);

/// The most requested redrives one pass takes on; the rest wait for the next pass, so a pass holds
/// up the embedded group's drain only briefly.
pub const REDRIVE_BATCH: i64 = 10;

static REDRIVE_REQUESTED: std::sync::LazyLock<tokio::sync::Notify> = std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Resolves at the next redrive request made in this process (register it with `enable` before
/// looking); requests from other processes are seen by the consumers' look every [`REDRIVE_EVERY`].
/// Unlike [`outbox::written`], nothing else signals it.
pub fn redrive_requested() -> tokio::sync::futures::Notified<'static> {
    REDRIVE_REQUESTED.notified()
}

/// What became of an admin's request to redrive a parked event.
#[derive(Debug, Clone)]
pub enum RedriveRequest {
    /// Marked, and the audit event written: the group's consumer will redrive it.
    Requested(ParkedEvent),
    /// A redrive was asked for already and has not finished.
    AlreadyRequested(ParkedEvent),
    /// The group has no such parked event.
    NotFound,
}

/// The audit event of a redrive request.
#[derive(serde::Serialize)]
struct RedriveRequested<'a> {
    group: &'a str,
    event_id: Uuid,
    seq: i64,
    event_type: &'a str,
}

fn redrive_event(p: &ParkedEvent) -> anyhow::Result<NewEvent> {
    let data = RedriveRequested { group: &p.group, event_id: p.event_id, seq: p.seq, event_type: &p.event_type };
    NewEvent::of("event.redrive_requested", 1, ADMIN_TOPIC, p.event_id, &data)
}

/// Asks for a parked event to be sent back through its consumer group: marks the row (the group's
/// consumer picks it up) and writes `event.redrive_requested` (the audit trail: `ctx` says who and
/// which request), in one transaction.
pub async fn request_redrive(
    db: &Database,
    group: &str,
    event_id: Uuid,
    ctx: &EventContext,
) -> anyhow::Result<RedriveRequest> {
    const MARK: &str = "UPDATE parked_events SET redrive_requested_at = $3
                        WHERE group_name = $1 AND event_id = $2 AND redrive_requested_at IS NULL";
    let select = format!("SELECT {PARKED_COLS} FROM parked_events WHERE group_name = $1 AND event_id = $2");
    let now = clock::now();
    let outcome = match db {
        Database::Postgres(pool) => {
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            // The row lock orders two requests: the second sees the first's mark.
            let marked = tx.execute(MARK, &[&group, &event_id, &now]).await? > 0;
            let row = tx.query_opt(&select, &[&group, &event_id]).await?.map(|r| parked_pg(&r));
            match row {
                None => RedriveRequest::NotFound,
                Some(p) if !marked => RedriveRequest::AlreadyRequested(p),
                Some(p) => {
                    outbox::insert_pg(&tx, ctx, &redrive_event(&p)?).await?;
                    tx.commit().await?;
                    RedriveRequest::Requested(p)
                }
            }
        }
        Database::Sqlite(pool) => {
            let (group, ctx) = (group.to_string(), ctx.clone());
            pool.call(move |c| {
                use rusqlite::OptionalExtension;
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let id = event_id.to_string();
                let marked = tx.execute(&sql::for_sqlite(MARK), rusqlite::params![group, id, clock::to_text(now)])? > 0;
                let row = tx
                    .query_row(&sql::for_sqlite(&select), rusqlite::params![group, id], |r| Ok(parked_sqlite(r)))
                    .optional()?
                    .transpose()?;
                Ok::<_, anyhow::Error>(match row {
                    None => RedriveRequest::NotFound,
                    Some(p) if !marked => RedriveRequest::AlreadyRequested(p),
                    Some(p) => {
                        outbox::insert_sqlite(&tx, &ctx, &redrive_event(&p)?)?;
                        tx.commit()?;
                        RedriveRequest::Requested(p)
                    }
                })
            })
            .await?
        }
    };
    if let RedriveRequest::Requested(p) = &outcome {
        tracing::info!(consumer.group = %p.group, event.id = %p.event_id, event.type = %p.event_type, "redrive of a parked event requested");
        outbox::notify_written();
        REDRIVE_REQUESTED.notify_waiters();
    }
    Ok(outcome)
}

/// Where a redrive finds the envelope of a parked event: the outbox (the embedded log), or the
/// group's dead-letter topic (Kafka).
pub trait EventSource: Send + Sync {
    /// The envelope of `group`'s parked event `event_id`; `None` when it is nowhere to be found.
    fn find<'a>(&'a self, group: &'a str, event_id: Uuid) -> BoxFuture<'a, anyhow::Result<Option<EventEnvelope>>>;
    /// Where it looks, for the note on an event it did not find ("the outbox").
    fn describe(&self) -> String;
}

/// The embedded log's events: the outbox, by id.
pub struct OutboxSource(pub Database);

impl EventSource for OutboxSource {
    fn find<'a>(&'a self, _group: &'a str, event_id: Uuid) -> BoxFuture<'a, anyhow::Result<Option<EventEnvelope>>> {
        Box::pin(outbox::get_by_id(&self.0, event_id))
    }
    fn describe(&self) -> String {
        "the outbox".to_string()
    }
}

/// Sends the group's parked events that an admin asked to redrive back through the handler, as
/// [`deliver_once`] delivers any event (retries, backoff, parking), at most [`REDRIVE_BATCH`] of them
/// (oldest first; the rest wait for the next pass). Handled: the parked row goes. Parked again: the
/// row keeps the new attempts and error, and the request is cleared. Not found at the source: the
/// request is cleared and a note appended to the error. The request stays until its outcome is
/// recorded, so a crash midway redrives it again (handlers are idempotent).
///
/// Only one process may redrive a group's events: each row is taken on under `lease` (renewed
/// before it and while it takes), and the pass stops once the lease is lost. A row whose redrive
/// fails (its source or the database) is logged and counted (`events_redriven_total{outcome="error"}`)
/// and stays requested for a later pass; the others go on. Returns how many had their outcome
/// recorded.
pub async fn redrive_pending(
    db: &Database,
    handler: &dyn EventHandler,
    opts: &ConsumerOptions,
    source: &dyn EventSource,
    lease: &Lease,
) -> anyhow::Result<usize> {
    if handler.ephemeral() {
        return Ok(0);
    }
    let group = handler.group();
    let requested = read_parked(
        db,
        "group_name = $1 AND redrive_requested_at IS NOT NULL",
        vec![Param::Text(group.into())],
        REDRIVE_BATCH,
    )
    .await?;
    let mut redriven = 0;
    for p in &requested {
        let outcome =
            if lease.take().await? { while_held(lease, redrive_one(db, handler, opts, source, p)).await } else { None };
        match outcome {
            None => {
                tracing::warn!(
                    consumer.group = group, event.id = %p.event_id,
                    "lost the lease during a redrive pass; another process takes the requests over"
                );
                break;
            }
            Some(Ok(())) => redriven += 1,
            Some(Err(e)) => {
                tracing::error!(
                    consumer.group = group, event.id = %p.event_id, event.type = %p.event_type, error = format!("{e:#}"),
                    "cannot redrive a parked event; it stays requested for a later pass"
                );
                metrics::counter!("events_redriven_total", "group" => group, "outcome" => "error").increment(1);
            }
        }
    }
    Ok(redriven)
}

/// Runs `work` while renewing `lease` (every third of its time); `None` when the lease is lost (or
/// cannot be renewed) first, and `work` is dropped: another process may be redriving by then.
async fn while_held<T>(lease: &Lease, work: impl std::future::Future<Output = T>) -> Option<T> {
    let renew = async {
        loop {
            tokio::time::sleep(lease.ttl() / 3).await;
            match lease.take().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "cannot renew the lease");
                    return;
                }
            }
        }
    };
    tokio::select! {
        out = work => Some(out),
        () = renew => None,
    }
}

/// Redrives one requested parked event and records the outcome.
async fn redrive_one(
    db: &Database,
    handler: &dyn EventHandler,
    opts: &ConsumerOptions,
    source: &dyn EventSource,
    p: &ParkedEvent,
) -> anyhow::Result<()> {
    let group = handler.group();
    let key = || vec![Param::Text(p.group.clone()), Param::Uuid(p.event_id)];
    let Some(event) = source.find(group, p.event_id).await? else {
        let place = source.describe();
        tracing::error!(
            consumer.group = group, event.id = %p.event_id, event.type = %p.event_type, place,
            "cannot redrive a parked event: it is nowhere to be found; it stays parked"
        );
        // The original error stays: it is why the event was parked.
        let note = format!(" | redrive: event not found in {place}");
        sql::execute(
            db,
            "UPDATE parked_events SET redrive_requested_at = NULL, last_error = last_error || $3
             WHERE group_name = $1 AND event_id = $2",
            [key(), vec![Param::Text(note)]].concat(),
        )
        .await?;
        metrics::counter!("events_redriven_total", "group" => group, "outcome" => "not_found").increment(1);
        return Ok(());
    };
    // Parking put the event in the inbox (so a re-read batch skips it): take it out, or the
    // delivery would find it done.
    sql::execute(db, "DELETE FROM inbox WHERE group_name = $1 AND event_id = $2", key()).await?;
    match deliver_once(db, handler, opts, &event).await? {
        Delivery::Parked(error) => {
            // Parking again keeps a request (see [`park`]): this one has its outcome, so it goes.
            sql::execute(
                db,
                "UPDATE parked_events SET redrive_requested_at = NULL WHERE group_name = $1 AND event_id = $2",
                key(),
            )
            .await?;
            tracing::warn!(
                consumer.group = group, event.id = %p.event_id, event.type = %p.event_type, error,
                "parked event redriven and parked again"
            );
            metrics::counter!("events_redriven_total", "group" => group, "outcome" => "parked").increment(1);
        }
        Delivery::Handled | Delivery::Duplicate => {
            sql::execute(db, "DELETE FROM parked_events WHERE group_name = $1 AND event_id = $2", key()).await?;
            tracing::info!(
                consumer.group = group, event.id = %p.event_id, event.type = %p.event_type,
                "parked event redriven and handled"
            );
            metrics::counter!("events_redriven_total", "group" => group, "outcome" => "handled").increment(1);
        }
    }
    Ok(())
}

/// Rewinds a group to `from` for a replay. With `forget_handled`, its inbox is cleared too, so
/// handlers see the events again (they must be idempotent); without, the inbox skips them.
pub async fn replay(db: &Database, group: &str, from: i64, forget_handled: bool) -> anyhow::Result<()> {
    if forget_handled {
        forget_handled_events(db, group).await?;
    }
    save_position(db, group, from).await?;
    tracing::warn!(consumer.group = group, from, forget_handled, "consumer group rewound for a replay");
    outbox::notify_written();
    Ok(())
}

/// Clears a group's inbox, so its handler sees already-handled events again when they are redelivered.
pub async fn forget_handled_events(db: &Database, group: &str) -> anyhow::Result<()> {
    match db {
        Database::Postgres(pool) => {
            pool.get().await?.execute("DELETE FROM inbox WHERE group_name = $1", &[&group]).await?;
        }
        Database::Sqlite(pool) => {
            let group = group.to_string();
            pool.call(move |c| {
                c.execute("DELETE FROM inbox WHERE group_name = ?1", [group]).map_err(anyhow::Error::from)
            })
            .await?;
        }
    }
    Ok(())
}

/// Every consumer group's position.
pub async fn positions(db: &Database) -> anyhow::Result<Vec<(String, i64)>> {
    const SQL: &str = "SELECT group_name, position FROM consumer_offsets ORDER BY group_name";
    match db {
        Database::Postgres(pool) => {
            Ok(pool.get().await?.query(SQL, &[]).await?.iter().map(|r| (r.get(0), r.get(1))).collect())
        }
        Database::Sqlite(pool) => {
            pool.call(|c| {
                let mut st = c.prepare(SQL)?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok::<_, anyhow::Error>(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
        }
    }
}

/// One line of `walletd events tail`, whatever the transport.
pub fn tail_line(
    topic: &str,
    partition: Option<i32>,
    offset: i64,
    key: &str,
    headers: serde_json::Map<String, serde_json::Value>,
    event: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "topic": topic, "partition": partition, "offset": offset, "key": key, "headers": headers, "event": event,
    })
}

/// Prints the embedded log's events of `topic` as they are written (offset = the outbox position,
/// no partition), from its start with `from_beginning`, until `shutdown`.
pub async fn tail(
    db: &Database,
    topic: &str,
    from_beginning: bool,
    mut out: impl std::io::Write,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut position = if from_beginning { 0 } else { outbox::head(db).await? };
    loop {
        let events = outbox::list(db, position, 500).await?;
        for e in &events {
            position = e.seq;
            if e.topic != topic {
                continue;
            }
            let headers = e.headers().into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
            let line = tail_line(topic, None, e.seq, &e.aggregate_id.to_string(), headers, serde_json::to_value(e)?);
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        if events.is_empty() {
            // Another process writes the log: poll it.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let opts = ConsumerOptions {
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(30),
            ..Default::default()
        };
        let delays: Vec<u128> = (1..=6).map(|a| opts.retry_delay(a).as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600]);
        assert_eq!(opts.retry_delay(11), Duration::from_secs(30), "51.2 s is capped");
        assert_eq!(opts.retry_delay(100), Duration::from_secs(30));
        assert_eq!(opts.retry_delay(u32::MAX), Duration::from_secs(30));
        let slow = ConsumerOptions { backoff: Duration::from_secs(60), max_backoff: Duration::from_secs(600), ..opts };
        assert_eq!(slow.retry_delay(100), Duration::from_secs(600), "no overflow at the largest settings");
    }
}
