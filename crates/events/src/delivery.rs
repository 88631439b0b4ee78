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
use uuid::Uuid;

use base::clock;
use storage::{Database, Lease};

use crate::outbox::{self, EventEnvelope};

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

async fn park(db: &Database, group: &str, event: &EventEnvelope, attempts: u32, error: &str) -> anyhow::Result<()> {
    let (now, attempts) = (clock::now(), attempts as i32);
    let error: String = error.chars().take(2000).collect();
    match db {
        Database::Postgres(pool) => {
            pool.get()
                .await?
                .execute(
                    "INSERT INTO parked_events (group_name, event_id, seq, event_type, attempts, last_error, parked_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    &[&group, &event.id, &event.seq, &event.event_type, &attempts, &error, &now],
                )
                .await?;
        }
        Database::Sqlite(pool) => {
            let (group, id, seq, ty) = (group.to_string(), event.id.to_string(), event.seq, event.event_type.clone());
            pool.call(move |c| {
                c.execute(
                    "INSERT INTO parked_events (group_name, event_id, seq, event_type, attempts, last_error, parked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
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
    const SQL: &str =
        "SELECT group_name, event_id, seq, event_type, attempts, last_error FROM parked_events ORDER BY seq LIMIT 1000";
    match db {
        Database::Postgres(pool) => Ok(pool
            .get()
            .await?
            .query(SQL, &[])
            .await?
            .iter()
            .map(|r| ParkedEvent {
                group: r.get(0),
                event_id: r.get(1),
                seq: r.get(2),
                event_type: r.get(3),
                attempts: r.get(4),
                last_error: r.get(5),
            })
            .collect()),
        Database::Sqlite(pool) => {
            pool.call(|c| {
                let mut st = c.prepare(SQL)?;
                let rows = st.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (group, id, seq, event_type, attempts, last_error) = row?;
                    out.push(ParkedEvent { group, event_id: id.parse()?, seq, event_type, attempts, last_error });
                }
                Ok::<_, anyhow::Error>(out)
            })
            .await
        }
    }
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
