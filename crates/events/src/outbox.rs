//! The transactional outbox (DESIGN D4): a state change and its event are written in one
//! transaction; the outbox is also the embedded event log that admins can read.

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use base::clock;
use storage::Database;

use crate::sql::{self, Param};

/// An event about to be written with the change that caused it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `supply.created`, `order.claimed`, ...
    pub event_type: &'static str,
    pub version: i32,
    /// `supply-events`, ...
    pub topic: &'static str,
    pub aggregate_id: Uuid,
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An event whose data is `data` as JSON. A value that does not serialise is an error (and so a
    /// rolled-back change), never an event with `data: null`.
    pub fn of(
        event_type: &'static str,
        version: i32,
        topic: &'static str,
        aggregate_id: Uuid,
        data: &impl Serialize,
    ) -> anyhow::Result<Self> {
        let data =
            serde_json::to_value(data).map_err(|e| anyhow::anyhow!("serialising the data of {event_type}: {e}"))?;
        Ok(Self { event_type, version, topic, aggregate_id, data })
    }
}

/// Where an event comes from: the region, the request and the principal that caused it.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    pub region: String,
    pub correlation_id: Option<String>,
    /// The user (or service) whose request made the change: the audit trail's "who".
    pub actor_id: Option<Uuid>,
    /// The W3C trace context of the span that wrote the event (with tracing on): consumers continue
    /// that trace.
    pub traceparent: Option<String>,
}

/// The envelope every event carries, as stored and as published.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct EventEnvelope {
    /// Position in the log, for `after`.
    pub seq: i64,
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: i32,
    pub topic: String,
    pub aggregate_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub region: String,
    pub correlation_id: Option<String>,
    pub actor_id: Option<Uuid>,
    pub data: serde_json::Value,
    /// The trace the writing request belongs to (W3C `traceparent`), when tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl EventEnvelope {
    /// What travels beside the payload (Kafka headers, the `headers` of `walletd events tail`).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("event_id", self.id.to_string()),
            ("event_type", self.event_type.clone()),
            ("event_version", self.version.to_string()),
            ("region", self.region.clone()),
        ];
        if let Some(c) = &self.correlation_id {
            h.push(("correlation_id", c.clone()));
        }
        if let Some(t) = &self.traceparent {
            h.push(("traceparent", t.clone()));
        }
        h
    }
}

static WRITTEN: std::sync::LazyLock<tokio::sync::Notify> = std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Wakes in-process consumers after a transaction that wrote events has committed.
pub fn notify_written() {
    WRITTEN.notify_waiters();
}

/// Resolves at the next [`notify_written`]; register it (`enable`) before looking for events.
pub fn written() -> tokio::sync::futures::Notified<'static> {
    WRITTEN.notified()
}

/// Writes `event` inside the caller's PostgreSQL transaction, after the change it records (whose row
/// lock orders the events of one aggregate). Writers do not wait for each other: positions are
/// taken in parallel and may commit out of order; readers ([`list`], [`head`]) read only below a
/// position every writer before it has finished with ([`settled`]), so a cursor never skips an event
/// that commits late. The transaction id is taken before the position (the sub-select runs first),
/// which is what [`settled`] relies on.
pub async fn insert_pg(
    tx: &impl deadpool_postgres::GenericClient,
    ctx: &EventContext,
    event: &NewEvent,
) -> Result<(), tokio_postgres::Error> {
    storage::pg::execute(
        tx,
        "INSERT INTO outbox (seq, id, event_type, version, topic, aggregate_id, occurred_at, region, correlation_id, actor_id, data, traceparent)
         SELECT nextval('outbox_seq_seq'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
         FROM (SELECT pg_current_xact_id() OFFSET 0) AS xact_id_first",
        &[
            &Uuid::now_v7(),
            &event.event_type,
            &event.version,
            &event.topic,
            &event.aggregate_id,
            &clock::now(),
            &ctx.region,
            &ctx.correlation_id,
            &ctx.actor_id,
            &event.data,
            &ctx.traceparent,
        ],
    )
    .await
    .map(|_| ())
}

/// Writes `event` inside the caller's SQLite transaction.
pub fn insert_sqlite(tx: &rusqlite::Transaction<'_>, ctx: &EventContext, event: &NewEvent) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO outbox (id, event_type, version, topic, aggregate_id, occurred_at, region, correlation_id, actor_id, data, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        rusqlite::params![
            Uuid::now_v7().to_string(),
            event.event_type,
            event.version,
            event.topic,
            event.aggregate_id.to_string(),
            clock::to_text(clock::now()),
            ctx.region,
            ctx.correlation_id,
            ctx.actor_id.map(|a| a.to_string()),
            event.data.to_string(),
            ctx.traceparent,
        ],
    )
    .map(|_| ())
}

/// How long a reader waits for writers that hold positions below the log's end before it answers
/// "nothing settled yet" (and tries again on its next poll).
pub const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// The highest position below which every event is settled on PostgreSQL: committed (and so
/// visible) or rolled back (and so never there). Read the sequence first, then the transactions in
/// progress in this database: every position up to the sequence's value was taken by a transaction
/// that has its id already (see [`insert_pg`]), so it has finished or is in that list; wait for the
/// list to finish. Only this database's transactions (`pg_stat_activity`, which shows them to the
/// same role): transaction ids are cluster-wide, and another database's long transaction must not
/// stall this log's readers.
/// `None` when it has not within [`SETTLE_WAIT`]. SQLite writes one transaction at a time: every
/// committed position is settled.
pub async fn settled(db: &Database) -> anyhow::Result<Option<i64>> {
    let Database::Postgres(pool) = db else { return Ok(Some(i64::MAX)) };
    let client = pool.get().await?;
    let end: i64 = client
        .query_one("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM outbox_seq_seq", &[])
        .await?
        .get(0);
    let mut open: Vec<String> = client
        .query_one(
            "SELECT COALESCE(array_agg(backend_xid::text), '{}') FROM pg_stat_activity
             WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()",
            &[],
        )
        .await?
        .get(0);
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    while !open.is_empty() {
        if started.elapsed() > SETTLE_WAIT {
            tracing::warn!(
                transactions = ?open,
                "open transactions hold positions in the event log; its readers wait for them to end"
            );
            return Ok(None);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
        open = client
            .query_one(
                "SELECT COALESCE(array_agg(x), '{}') FROM unnest($1::text[]) AS x
                 WHERE EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_xid = x::xid)",
                &[&open],
            )
            .await?
            .get(0);
    }
    Ok(Some(end))
}

/// The newest settled position in the log (0 when empty).
pub async fn head(db: &Database) -> anyhow::Result<i64> {
    match db {
        Database::Postgres(pool) => {
            let Some(end) = settled(db).await? else {
                anyhow::bail!("the event log is not settled: open transactions hold positions below its end")
            };
            Ok(pool
                .get()
                .await?
                .query_one("SELECT COALESCE(MAX(seq), 0) FROM outbox WHERE seq <= $1", &[&end])
                .await?
                .get(0))
        }
        Database::Sqlite(pool) => {
            pool.call(|c| {
                c.query_row("SELECT COALESCE(MAX(seq), 0) FROM outbox", [], |r| r.get(0)).map_err(anyhow::Error::from)
            })
            .await
        }
    }
}

/// Reads the log in order, after position `after`, up to the settled position: an event that
/// commits late is never passed over by a cursor (empty while writers below the end are open).
pub async fn list(db: &Database, after: i64, limit: i64) -> anyhow::Result<Vec<EventEnvelope>> {
    match settled(db).await? {
        Some(upto) => query(db, "seq > ", after, upto, limit).await,
        None => Ok(Vec::new()),
    }
}

/// The oldest events not yet published to Kafka, in order.
pub async fn unpublished(db: &Database, limit: i64) -> anyhow::Result<Vec<EventEnvelope>> {
    query(db, "published_at IS NULL AND seq > ", 0, i64::MAX, limit).await
}

/// How many events wait for the relay.
pub async fn unpublished_count(db: &Database) -> anyhow::Result<i64> {
    const SQL: &str = "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL";
    match db {
        Database::Postgres(pool) => Ok(pool.get().await?.query_one(SQL, &[]).await?.get(0)),
        Database::Sqlite(pool) => pool.call(|c| c.query_row(SQL, [], |r| r.get(0)).map_err(anyhow::Error::from)).await,
    }
}

/// Marks events as published.
pub async fn mark_published(db: &Database, seqs: Vec<i64>) -> anyhow::Result<()> {
    if seqs.is_empty() {
        return Ok(());
    }
    let now = clock::now();
    match db {
        Database::Postgres(pool) => {
            pool.get()
                .await?
                .execute("UPDATE outbox SET published_at = $1 WHERE seq = ANY($2)", &[&now, &seqs])
                .await?;
        }
        Database::Sqlite(pool) => {
            pool.call(move |c| {
                let placeholders = storage::sqlite::placeholders(2, seqs.len());
                let mut params: Vec<rusqlite::types::Value> = vec![clock::to_text(now).into()];
                params.extend(seqs.iter().map(|s| rusqlite::types::Value::from(*s)));
                c.execute(
                    &format!("UPDATE outbox SET published_at = ?1 WHERE seq IN ({placeholders})"),
                    rusqlite::params_from_iter(params),
                )?;
                Ok::<_, anyhow::Error>(())
            })
            .await?;
        }
    }
    Ok(())
}

/// What the admin's event log may be narrowed to.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// One aggregate's events (a claim, an order...).
    pub aggregate_id: Option<Uuid>,
    /// The events one request caused (its `X-Request-Id`).
    pub correlation_id: Option<String>,
}

/// Reads the log in order after position `after`, up to the settled position (as [`list`]), keeping
/// only the events that match `filter`.
pub async fn search(db: &Database, filter: &EventFilter, after: i64, limit: i64) -> anyhow::Result<Vec<EventEnvelope>> {
    let Some(upto) = settled(db).await? else { return Ok(Vec::new()) };
    let mut sql = "seq > $1 AND seq <= $2".to_string();
    let mut params = vec![Param::Int(after), Param::Int(upto)];
    if let Some(a) = filter.aggregate_id {
        params.push(Param::Uuid(a));
        sql.push_str(&format!(" AND aggregate_id = ${}", params.len()));
    }
    if let Some(c) = &filter.correlation_id {
        params.push(Param::Text(c.clone()));
        sql.push_str(&format!(" AND correlation_id = ${}", params.len()));
    }
    params.push(Param::Int(limit));
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", params.len()));
    select(db, &sql, params).await
}

/// The event with this id, wherever it is in the log.
pub async fn get_by_id(db: &Database, id: Uuid) -> anyhow::Result<Option<EventEnvelope>> {
    Ok(select(db, "id = $1", vec![Param::Uuid(id)]).await?.into_iter().next())
}

/// Events where `{condition}{after}` holds, in order.
async fn query(
    db: &Database,
    condition: &'static str,
    after: i64,
    upto: i64,
    limit: i64,
) -> anyhow::Result<Vec<EventEnvelope>> {
    let sql = format!("{condition}$1 AND seq <= $3 ORDER BY seq LIMIT $2");
    select(db, &sql, vec![Param::Int(after), Param::Int(limit), Param::Int(upto)]).await
}

/// The events where `condition` (PostgreSQL's `$n` placeholders; SQLite gets `?n`) holds.
async fn select(db: &Database, condition: &str, params: Vec<Param>) -> anyhow::Result<Vec<EventEnvelope>> {
    const COLS: &str = "seq, id, event_type, version, topic, aggregate_id, occurred_at, region, correlation_id, data, actor_id, traceparent";
    match db {
        Database::Postgres(pool) => {
            let client = pool.get().await?;
            let bound: Vec<_> = params.iter().map(Param::pg).collect();
            let rows = client.query(&format!("SELECT {COLS} FROM outbox WHERE {condition}"), &bound).await?;
            Ok(rows
                .iter()
                .map(|r| EventEnvelope {
                    seq: r.get(0),
                    id: r.get(1),
                    event_type: r.get(2),
                    version: r.get(3),
                    topic: r.get(4),
                    aggregate_id: r.get(5),
                    occurred_at: r.get(6),
                    region: r.get(7),
                    correlation_id: r.get(8),
                    data: r.get(9),
                    actor_id: r.get(10),
                    traceparent: r.get(11),
                })
                .collect())
        }
        Database::Sqlite(pool) => {
            let sql = sql::for_sqlite(&format!("SELECT {COLS} FROM outbox WHERE {condition}"));
            let params: Vec<_> = params.into_iter().map(Param::sqlite).collect();
            pool.call(move |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i32>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, Option<String>>(8)?,
                        r.get::<_, String>(9)?,
                        r.get::<_, Option<String>>(10)?,
                        r.get::<_, Option<String>>(11)?,
                    ))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (seq, id, event_type, version, topic, agg, at, region, corr, data, actor, traceparent) = row?;
                    out.push(EventEnvelope {
                        seq,
                        id: id.parse()?,
                        event_type,
                        version,
                        topic,
                        aggregate_id: agg.parse()?,
                        occurred_at: clock::from_text(&at)?,
                        region,
                        correlation_id: corr,
                        actor_id: actor.map(|a| a.parse()).transpose()?,
                        data: serde_json::from_str(&data)?,
                        traceparent,
                    });
                }
                Ok::<_, anyhow::Error>(out)
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value whose serialisation fails.
    struct Unserialisable;

    impl Serialize for Unserialisable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot"))
        }
    }

    #[test]
    fn an_event_whose_data_does_not_serialise_is_an_error_not_null() {
        let id = Uuid::now_v7();
        let failed = NewEvent::of("thing.created", 1, "thing-events", id, &Unserialisable);
        assert!(failed.is_err_and(|e| e.to_string().contains("thing.created")));
        let ok = NewEvent::of("thing.created", 1, "thing-events", id, &serde_json::json!({"a": 1}));
        assert!(ok.is_ok_and(|e| e.data["a"] == 1));
    }
}
