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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::clock;
use crate::db::Database;
use crate::events::{ConsumerOptions, Delivery, EventHandler, deliver_once};
use crate::lease::Lease;
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
    // An existing topic keeps its partitions: growing them moves keys between partitions (and so
    // breaks per-aggregate order for a moment), which is an operator's call, not walletd's.
    let s = settings.clone();
    let (_, partitions) = tokio::task::spawn_blocking(move || group_client(&s, "topic-check")).await??;
    for topic in TOPICS {
        let n = partitions.elements_for_topic(topic).len();
        if n != usize::try_from(settings.partitions).unwrap_or(0) {
            tracing::warn!(
                topic,
                partitions = n,
                configured = settings.partitions,
                "the topic has another partition count than WALLETD_KAFKA_PARTITIONS; walletd leaves it as it is"
            );
        }
    }
    Ok(())
}

/// The outbox relay.
pub struct Relay {
    db: Database,
    producer: FutureProducer,
    batch: i64,
    lease: Lease,
}

impl Relay {
    /// `lease`: how long the relay's lease lasts without renewal (another relay takes over after it).
    pub fn new(db: Database, settings: &KafkaSettings, lease: Duration) -> anyhow::Result<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &settings.compression)
            .set("linger.ms", "5")
            .set("message.timeout.ms", "10000")
            .create()
            .context("creating the Kafka producer")?;
        let lease = Lease::new(db.clone(), "outbox", lease);
        Ok(Self { db, producer, batch: 500, lease })
    }

    /// Publishes until `shutdown` turns true, then drains what it can.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(relay.holder = %self.lease.holder(), "outbox relay started");
        let mut counted: Option<std::time::Instant> = None;
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
            // The backlog gauge, at most once a second: a count per batch would cost a query each.
            if counted.is_none_or(|c| c.elapsed() >= Duration::from_secs(1)) || stopping {
                counted = Some(std::time::Instant::now());
                if let Ok(waiting) = outbox::unpublished_count(&self.db).await {
                    metrics::gauge!("outbox_unpublished").set(waiting as f64);
                }
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
        if let Err(e) = self.lease.release().await {
            tracing::warn!(error = format!("{e:#}"), "could not give up the relay lease; it lapses by itself");
        }
        tracing::info!("outbox relay stopped");
    }

    /// One batch, if this process holds the lease; returns how many events it published.
    pub async fn publish_once(&self) -> anyhow::Result<usize> {
        if !self.lease.take().await? {
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
        if failpoint("relay-before-mark") {
            tracing::error!(published = n, "failpoint relay-before-mark: stalling between publish and mark");
            std::future::pending::<()>().await;
        }
        outbox::mark_published(&self.db, delivered).await?;
        metrics::counter!("outbox_published_total").increment(n as u64);
        // A batch can outlast the lease (a slow broker): renew it so no second relay starts meanwhile.
        self.lease.take().await?;
        Ok(n)
    }
}

/// Whether a named failpoint is set in `WALLETD_FAILPOINTS` (comma-separated). Tests use it to stop
/// a process at a precise step before killing it; nothing sets it in production.
fn failpoint(name: &str) -> bool {
    static SET: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        std::env::var("WALLETD_FAILPOINTS").unwrap_or_default().split(',').map(|s| s.trim().to_string()).collect()
    })
    .iter()
    .any(|f| f == name)
}

fn headers(e: &EventEnvelope) -> OwnedHeaders {
    e.headers()
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value.as_str()) }))
}

/// Publishes the consumer's lag (messages behind the partition's end) from librdkafka's statistics:
/// `kafka_consumer_lag{group,topic,partition}` per partition (0 for the ones another member holds, so
/// the sum over members is the group's lag) and `events_consumer_lag{group}` summed, the same gauge
/// the embedded log sets.
struct LagContext {
    group: String,
    base: String,
}

impl rdkafka::ClientContext for LagContext {
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(stats) = serde_json::from_slice::<serde_json::Value>(statistics) else { return };
        let mut total = 0i64;
        for (topic, t) in stats["topics"].as_object().into_iter().flatten() {
            for (partition, p) in t["partitions"].as_object().into_iter().flatten() {
                if partition.starts_with('-') {
                    continue;
                }
                // A partition this member does not fetch (another member holds it since a rebalance)
                // keeps a stale lag in the statistics: it lags nothing here.
                let fetching = p["fetch_state"].as_str().is_some_and(|s| s != "none" && s != "stopped");
                let lag = if fetching { p["consumer_lag"].as_i64().unwrap_or(0).max(0) } else { 0 };
                total += lag;
                metrics::gauge!("kafka_consumer_lag", "group" => self.group.clone(), "topic" => topic.clone(), "partition" => partition.clone())
                    .set(lag as f64);
            }
        }
        metrics::gauge!("events_consumer_lag", "group" => self.base.clone()).set(total as f64);
    }
}

impl rdkafka::consumer::ConsumerContext for LagContext {}

type GroupConsumer = StreamConsumer<LagContext>;

/// Runs `handler` over Kafka until `shutdown`: a consumer group named after the handler's group
/// (an ephemeral group reads every partition itself, from its start, and commits nothing), the same delivery as the
/// embedded log (inbox, retries, parking), and an event that keeps failing copied to `<topic>.dlq`
/// so the partition moves on.
///
/// Partitions are worked on at once, each by a task of its own that takes its events in order (so
/// one aggregate's events, which share a partition, are handled in order), unless the handler says
/// its events are independent (`concurrency() > 1`). A partition's offset is
/// stored only after its event's effect committed, and stored offsets are committed every second and
/// when partitions are revoked or the consumer stops: a crash redelivers at most that last second,
/// which the inbox turns away.
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
    let context = LagContext { group: group.clone(), base: handler.group().to_string() };
    let consumer: GroupConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", if ephemeral { "false" } else { "true" })
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", if ephemeral { "latest" } else { "earliest" })
        // A member that died (kill -9) keeps its partitions until its session expires: keep that short.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("statistics.interval.ms", "5000")
        // A broker may hold a fetch for its whole wait although data arrived (tansu does): keep the
        // wait short, it bounds the lag an idle partition adds.
        .set("fetch.wait.max.ms", "50")
        .create_with_context(context)
        .context("creating the Kafka consumer")?;
    let consumer = Arc::new(consumer);
    if ephemeral {
        // No group on the broker: every partition, from the first event written since a little
        // before this start (so nothing written while the consumer got going is missed).
        let since = clock::now().unix_timestamp_nanos() / 1_000_000 - 5_000;
        let (s, since) = (settings.clone(), i64::try_from(since).unwrap_or(0));
        let start = tokio::task::spawn_blocking(move || start_positions(&s, since)).await??;
        consumer.assign(&start).context("assigning the event topics' partitions")?;
    } else {
        consumer.subscribe(&TOPICS).context("subscribing to the event topics")?;
    }
    let dlq: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .context("creating the dead-letter producer")?;
    let stopping = Arc::new(AtomicBool::new(false));
    let worker = PartitionWorker {
        consumer: consumer.clone(),
        db,
        handler,
        opts,
        dlq,
        group: group.clone(),
        stopping: stopping.clone(),
    };
    tracing::info!(consumer.group = %group, "Kafka consumer started");
    let mut partitions: HashMap<(String, i32), tokio::sync::mpsc::Sender<OwnedMessage>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let message = tokio::select! {
            _ = shutdown.changed() => break,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(consumer.group = %group, error = %e, "Kafka consumer error; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let key = (message.topic().to_string(), message.partition());
        let queue = partitions.entry(key).or_insert_with(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            tasks.spawn(worker.clone().run(rx));
            tx
        });
        // A full queue holds the reader back: the partitions are then worked off at their own pace.
        tokio::select! {
            _ = shutdown.changed() => break,
            sent = queue.send(message) => if sent.is_err() { break },
        }
    }
    // Finish the events in hand, drop the queued ones (their offsets were not stored), commit.
    drop(partitions);
    stopping.store(true, Ordering::SeqCst);
    while tasks.join_next().await.is_some() {}
    // A process-local consumer commits nothing: the broker keeps no group for it.
    if !ephemeral && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(consumer.group = %group, error = %e, "no offsets to commit at stop");
    }
    tracing::info!(consumer.group = %group, "Kafka consumer stopped");
    Ok(())
}

/// Works off one partition's events in order.
#[derive(Clone)]
struct PartitionWorker {
    consumer: Arc<GroupConsumer>,
    db: Database,
    handler: Arc<dyn EventHandler>,
    opts: ConsumerOptions,
    dlq: FutureProducer,
    group: String,
    stopping: Arc<AtomicBool>,
}

impl PartitionWorker {
    /// Handles the partition's events in order, or up to the handler's concurrency at once for a
    /// handler whose events do not depend on each other's order; offsets are stored in order either way.
    async fn run(self, mut queue: tokio::sync::mpsc::Receiver<OwnedMessage>) {
        use futures::StreamExt;
        let stopping = self.stopping.clone();
        // Once stopping, take no new event; the ones in hand finish.
        let source = futures::stream::poll_fn(move |cx| {
            if stopping.load(Ordering::SeqCst) { std::task::Poll::Ready(None) } else { queue.poll_recv(cx) }
        });
        let mut done = source
            .map(|message| async {
                let outcome = self.deliver(&message).await;
                (message, outcome)
            })
            .buffered(self.handler.concurrency().max(1));
        while let Some((message, outcome)) = done.next().await {
            let Some(failure) = outcome else { return };
            if let Some(error) = failure {
                self.dead_letter(&message, &error).await;
            }
            if let Err(e) = self.consumer.store_offset(message.topic(), message.partition(), message.offset()) {
                // The partition went to another member meanwhile: it redelivers, the inbox dedupes.
                tracing::debug!(consumer.group = %self.group, error = %e, "offset not stored");
            }
        }
    }

    /// Delivers one message: `Some(None)` when done with it, `Some(Some(error))` when it must be
    /// dead-lettered, `None` when the consumer stops before it could be delivered.
    async fn deliver(&self, message: &OwnedMessage) -> Option<Option<String>> {
        let envelope: Option<EventEnvelope> = message.payload().and_then(|p| serde_json::from_slice(p).ok());
        let e = match &envelope {
            None => return Some(Some("not an event envelope".to_string())),
            Some(e) if !self.handler.wants(&e.event_type) => return Some(None),
            Some(e) => e,
        };
        // A failure of our own infrastructure (the database) is not the event's fault: keep the
        // partition here until it passes.
        loop {
            match deliver_once(&self.db, self.handler.as_ref(), &self.opts, e).await {
                Ok(Delivery::Parked(error)) => return Some(Some(error)),
                Ok(_) => return Some(None),
                Err(err) => {
                    tracing::warn!(consumer.group = %self.group, event.id = %e.id, error = format!("{err:#}"), "cannot deliver; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if self.stopping.load(Ordering::SeqCst) {
                        return None;
                    }
                }
            }
        }
    }

    async fn dead_letter(&self, message: &OwnedMessage, error: &str) {
        let topic = format!("{}.dlq", message.topic());
        let key = message.key().unwrap_or_default();
        let payload = message.payload().unwrap_or_default();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "error", value: Some(error) })
            .insert(Header { key: "consumer_group", value: Some(self.group.as_str()) });
        let record = FutureRecord::to(&topic).key(key).payload(payload).headers(headers);
        match self.dlq.send(record, Duration::from_secs(10)).await {
            Ok(_) => metrics::counter!("events_dead_lettered_total", "topic" => topic).increment(1),
            Err((e, _)) => tracing::error!(topic, error = %e, "could not dead-letter an event; it stays parked"),
        }
    }
}

/// Every partition of the event topics at its first event written at or after `since_ms` (Unix
/// milliseconds), or at its end when there is none (or the broker cannot say).
fn start_positions(settings: &KafkaSettings, since_ms: i64) -> anyhow::Result<TopicPartitionList> {
    let (consumer, partitions) = group_client(settings, "start-positions")?;
    let mut wanted = TopicPartitionList::new();
    for e in partitions.elements() {
        wanted.add_partition_offset(e.topic(), e.partition(), Offset::Offset(since_ms))?;
    }
    let found = consumer.offsets_for_times(wanted, Duration::from_secs(10)).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the broker cannot look offsets up by time; reading from the end");
        partitions.clone()
    });
    let mut start = TopicPartitionList::new();
    for e in found.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) if o >= 0 => Offset::Offset(o),
            _ => Offset::End,
        };
        start.add_partition_offset(e.topic(), e.partition(), offset)?;
    }
    Ok(start)
}

/// Where a consumer group stands on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartition {
    pub topic: String,
    pub partition: i32,
    /// The next offset the group will read (`None` before its first commit).
    pub committed: Option<i64>,
    /// The partition's end.
    pub high: i64,
}

impl GroupPartition {
    pub fn lag(&self) -> i64 {
        (self.high - self.committed.unwrap_or(0)).max(0)
    }
}

fn group_client(settings: &KafkaSettings, group: &str) -> anyhow::Result<(BaseConsumer, TopicPartitionList)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", format!("{}.{group}", settings.group_prefix))
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka client")?;
    let mut tpl = TopicPartitionList::new();
    for topic in TOPICS {
        let metadata =
            consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).context("reading topic metadata")?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    Ok((consumer, tpl))
}

/// A consumer group's committed offsets and the partitions' ends, over every event topic.
pub async fn group_offsets(settings: &KafkaSettings, group: &str) -> anyhow::Result<Vec<GroupPartition>> {
    let (settings, group) = (settings.clone(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let (consumer, tpl) = group_client(&settings, &group)?;
        let committed =
            consumer.committed_offsets(tpl, Duration::from_secs(10)).context("reading committed offsets")?;
        let mut out = Vec::new();
        for e in committed.elements() {
            let (_, high) = consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                .context("reading partition ends")?;
            let committed = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            out.push(GroupPartition { topic: e.topic().to_string(), partition: e.partition(), committed, high });
        }
        Ok(out)
    })
    .await?
}

/// Moves a consumer group back to the start of every event topic, so its next member redelivers
/// everything still retained. Kafka only takes this while the group has no live member: stop the
/// consumers first.
pub async fn rewind_group(settings: &KafkaSettings, group: &str) -> anyhow::Result<usize> {
    let (settings, group) = (settings.clone(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let (consumer, tpl) = group_client(&settings, &group)?;
        let mut start = TopicPartitionList::new();
        for e in tpl.elements() {
            let (low, _) = consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                .context("reading partition starts")?;
            start.add_partition_offset(e.topic(), e.partition(), Offset::Offset(low)).context("building offsets")?;
        }
        consumer
            .commit(&start, CommitMode::Sync)
            .context("committing the rewound offsets (is a consumer of the group still running?)")?;
        tracing::warn!(consumer.group = %group, partitions = start.count(), "Kafka consumer group rewound for a replay");
        Ok(start.count())
    })
    .await?
}

/// Prints every event reaching `topic` (one JSON object per line: topic, partition, offset, key,
/// headers, event) until `shutdown`; from the topic's start with `from_beginning`. It reads in a
/// group of its own and commits nothing.
pub async fn tail(
    settings: &KafkaSettings,
    topic: &str,
    from_beginning: bool,
    mut out: impl std::io::Write,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", format!("{}.tail-{}", settings.group_prefix, uuid::Uuid::now_v7().simple()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", if from_beginning { "earliest" } else { "latest" })
        .create()
        .context("creating the Kafka consumer")?;
    consumer.subscribe(&[topic]).with_context(|| format!("subscribing to {topic}"))?;
    loop {
        let m = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            m = consumer.recv() => m,
        };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic, error = %e, "Kafka consumer error; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let headers: serde_json::Map<String, serde_json::Value> = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (x.key.to_string(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned().into())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let payload = m.payload().unwrap_or_default();
        let event = serde_json::from_slice::<serde_json::Value>(payload)
            .unwrap_or_else(|_| String::from_utf8_lossy(payload).into_owned().into());
        let key = String::from_utf8_lossy(m.key().unwrap_or_default());
        let line = crate::events::tail_line(m.topic(), Some(m.partition()), m.offset(), &key, headers, event);
        writeln!(out, "{line}")?;
        out.flush()?;
    }
}
