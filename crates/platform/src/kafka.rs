//! Kafka (DESIGN D4): topic set-up and the relay that publishes the outbox.
//!
//! The relay reads unpublished outbox rows in order and produces them with an idempotent producer
//! (`acks=all`, compression, key = aggregate id so an aggregate's events stay in one partition, in
//! order), with the event id, type, correlation id and region as headers. A row is marked published
//! only after the broker acknowledged it and every row before it in the batch: while the broker is
//! down rows wait (nothing is lost) and drain on recovery. A relay crash between publishing and
//! marking republishes those rows; consumers' inboxes make that harmless. At most one relay is
//! active per outbox: it holds a lease in the database that another process takes over when it
//! expires.

use std::time::Duration;

use anyhow::Context;
use std::sync::Arc;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::clock;
use crate::db::Database;
use crate::events::{ConsumerOptions, Delivery, EventHandler, deliver_once};
use crate::outbox::{self, EventEnvelope};

/// The topics of DESIGN D4.
pub const TOPICS: [&str; 4] = ["supply-events", "order-events", "claim-events", "wallet-events"];

/// How the process reaches Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub brokers: String,
    pub partitions: i32,
    pub replication: i32,
    pub compression: String,
    /// Consumer groups are named `{group_prefix}.{group}`.
    pub group_prefix: String,
}

/// Creates the topics that are missing.
pub async fn ensure_topics(settings: &KafkaSettings) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let names: Vec<String> = TOPICS.iter().flat_map(|t| [t.to_string(), format!("{t}.dlq")]).collect();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|t| NewTopic::new(t, settings.partitions, TopicReplication::Fixed(settings.replication)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &opts).await.context("creating Kafka topics")? {
        match result {
            Ok(topic) => tracing::info!(topic, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating Kafka topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// The outbox relay.
pub struct Relay {
    db: Database,
    producer: FutureProducer,
    holder: String,
    batch: i64,
    lease: Duration,
}

impl Relay {
    pub fn new(db: Database, settings: &KafkaSettings) -> anyhow::Result<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &settings.compression)
            .set("linger.ms", "5")
            .set("message.timeout.ms", "10000")
            .create()
            .context("creating the Kafka producer")?;
        Ok(Self { db, producer, holder: uuid::Uuid::now_v7().to_string(), batch: 500, lease: Duration::from_secs(10) })
    }

    /// How long a lease lasts without renewal (another relay takes over after it).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Publishes until `shutdown` turns true, then drains what it can.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(relay.holder = %self.holder, "outbox relay started");
        loop {
            let woken = outbox::written();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let stopping = *shutdown.borrow();
            let published = match self.publish_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "outbox relay cannot publish; events wait in the outbox");
                    0
                }
            };
            if let Ok(waiting) = outbox::unpublished_count(&self.db).await {
                metrics::gauge!("outbox_unpublished").set(waiting as f64);
            }
            if stopping {
                break;
            }
            if published == 0 {
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// One batch, if this process holds the lease; returns how many events it published.
    pub async fn publish_once(&self) -> anyhow::Result<usize> {
        if !self.take_lease().await? {
            return Ok(0);
        }
        let events = outbox::unpublished(&self.db, self.batch).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let payloads: Vec<(String, String)> =
            events.iter().map(|e| (e.aggregate_id.to_string(), serde_json::to_string(e).unwrap_or_default())).collect();
        // Sends are queued in log order; the idempotent producer keeps that order per partition.
        let sends = events.iter().zip(&payloads).map(|(e, (key, payload))| {
            let record = FutureRecord::to(&e.topic).key(key).payload(payload).headers(headers(e));
            self.producer.send(record, Duration::from_secs(0))
        });
        let results = futures::future::join_all(sends).await;
        let delivered: Vec<i64> =
            events.iter().zip(&results).take_while(|(_, r)| r.is_ok()).map(|(e, _)| e.seq).collect();
        let n = delivered.len();
        if let Some((e, Err((err, _)))) = events.iter().zip(&results).find(|(_, r)| r.is_err()) {
            tracing::warn!(event.seq = e.seq, error = %err, "Kafka did not take an event; it and the ones after it wait");
        }
        outbox::mark_published(&self.db, delivered).await?;
        metrics::counter!("outbox_published_total").increment(n as u64);
        // A batch can outlast the lease (a slow broker): renew it so no second relay starts meanwhile.
        self.take_lease().await?;
        Ok(n)
    }

    /// Takes or renews the relay lease; false while another live relay holds it.
    async fn take_lease(&self) -> anyhow::Result<bool> {
        let (now, until) = (clock::now(), clock::now() + self.lease);
        let held = match &self.db {
            Database::Postgres(pool) => pool
                .get()
                .await?
                .query_opt(
                    "INSERT INTO relay_leases (name, holder, expires_at) VALUES ('outbox', $1, $2)
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
                     WHERE relay_leases.holder = EXCLUDED.holder OR relay_leases.expires_at < $3
                     RETURNING holder",
                    &[&self.holder, &until, &now],
                )
                .await?
                .is_some(),
            Database::Sqlite(pool) => {
                let holder = self.holder.clone();
                pool.call(move |c| {
                    use rusqlite::OptionalExtension;
                    let row: Option<String> = c
                        .query_row(
                            "INSERT INTO relay_leases (name, holder, expires_at) VALUES ('outbox', ?1, ?2)
                             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                             WHERE relay_leases.holder = excluded.holder OR relay_leases.expires_at < ?3
                             RETURNING holder",
                            rusqlite::params![holder, clock::to_text(until), clock::to_text(now)],
                            |r| r.get(0),
                        )
                        .optional()?;
                    Ok::<_, anyhow::Error>(row.is_some())
                })
                .await?
            }
        };
        Ok(held)
    }
}

fn headers(e: &EventEnvelope) -> OwnedHeaders {
    let (id, version) = (e.id.to_string(), e.version.to_string());
    let mut h = OwnedHeaders::new()
        .insert(Header { key: "event_id", value: Some(id.as_str()) })
        .insert(Header { key: "event_type", value: Some(e.event_type.as_str()) })
        .insert(Header { key: "event_version", value: Some(version.as_str()) })
        .insert(Header { key: "region", value: Some(e.region.as_str()) });
    if let Some(c) = &e.correlation_id {
        h = h.insert(Header { key: "correlation_id", value: Some(c.as_str()) });
    }
    h
}

/// Runs `handler` over Kafka until `shutdown`: a consumer group named after the handler's group
/// (an ephemeral group gets a name of its own and starts at the end), the same delivery as the
/// embedded log (inbox, retries, parking), offsets committed only after the event's effect, and an
/// event that keeps failing copied to `<topic>.dlq` so the partition moves on.
pub async fn consume(
    settings: KafkaSettings,
    db: Database,
    handler: Arc<dyn EventHandler>,
    opts: ConsumerOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ephemeral = handler.ephemeral();
    let base = format!("{}.{}", settings.group_prefix, handler.group());
    let group = if ephemeral { format!("{base}-{}", uuid::Uuid::now_v7().simple()) } else { base };
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", if ephemeral { "latest" } else { "earliest" })
        // A member that died (kill -9) keeps its partitions until its session expires: keep that short.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .context("creating the Kafka consumer")?;
    consumer.subscribe(&TOPICS).context("subscribing to the event topics")?;
    let dlq: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .context("creating the dead-letter producer")?;
    tracing::info!(consumer.group = %group, "Kafka consumer started");
    loop {
        let message = tokio::select! {
            _ = shutdown.changed() => break,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(consumer.group = %group, error = %e, "Kafka consumer error; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let envelope: Option<EventEnvelope> = message.payload().and_then(|p| serde_json::from_slice(p).ok());
        let failure = match &envelope {
            None => Some("not an event envelope".to_string()),
            Some(e) if !handler.wants(&e.event_type) => None,
            Some(e) => loop {
                // A failure of our own infrastructure (the database) is not the event's fault:
                // keep the partition here until it passes.
                match deliver_once(&db, handler.as_ref(), &opts, e).await {
                    Ok(Delivery::Parked(error)) => break Some(error),
                    Ok(_) => break None,
                    Err(err) => {
                        tracing::warn!(consumer.group = %group, error = format!("{err:#}"), "cannot deliver; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            },
        };
        if let Some(error) = failure {
            let topic = format!("{}.dlq", message.topic());
            let key = message.key().unwrap_or_default().to_vec();
            let payload = message.payload().unwrap_or_default().to_vec();
            let headers = OwnedHeaders::new()
                .insert(Header { key: "error", value: Some(error.as_str()) })
                .insert(Header { key: "consumer_group", value: Some(group.as_str()) });
            let record = FutureRecord::to(&topic).key(&key).payload(&payload).headers(headers);
            match dlq.send(record, Duration::from_secs(10)).await {
                Ok(_) => metrics::counter!("events_dead_lettered_total", "topic" => topic.clone()).increment(1),
                Err((e, _)) => tracing::error!(topic, error = %e, "could not dead-letter an event; it stays parked"),
            }
        }
        if let Err(e) = consumer.commit_message(&message, CommitMode::Async) {
            tracing::warn!(consumer.group = %group, error = %e, "offset commit failed; the event may be redelivered");
        }
    }
    tracing::info!(consumer.group = %group, "Kafka consumer stopped");
    Ok(())
}
