//! Consumer groups over Kafka: each partition worked in order by a task of its own, delivery through
//! the embedded log's inbox, retries and parking, dead letters to `<topic>.dlq`, lag from statistics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use base::clock;
use events::delivery::{self, ConsumerOptions, Delivery, EventHandler, EventSource, deliver_once};
use events::outbox::{self, EventEnvelope};
use storage::{Database, Lease};

use crate::admin::group_client;
use crate::{KafkaSettings, Topics};

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
    topics: Topics,
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
        // wait short, it bounds the lag each hop adds there.
        .set("fetch.wait.max.ms", settings.fetch_wait_ms.to_string())
        .create_with_context(context)
        .context("creating the Kafka consumer")?;
    let consumer = Arc::new(consumer);
    if ephemeral {
        // No group on the broker: every partition, from the first event written since a little
        // before this start (so nothing written while the consumer got going is missed).
        let since = clock::now().unix_timestamp_nanos() / 1_000_000 - 5_000;
        let (s, since) = (settings.clone(), i64::try_from(since).unwrap_or(0));
        let start = tokio::task::spawn_blocking(move || start_positions(&s, topics, since)).await??;
        consumer.assign(&start).context("assigning the event topics' partitions")?;
    } else {
        consumer.subscribe(topics).context("subscribing to the event topics")?;
    }
    let dlq: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .context("creating the dead-letter producer")?;
    let stopping = Arc::new(AtomicBool::new(false));
    // Redrives requested by admins: one member of the group at a time (a lease), the envelope from
    // the group's dead letters.
    let redrives = (!ephemeral).then(|| {
        let source = DeadLetters {
            settings: settings.clone(),
            topics,
            group: group.clone(),
            db: db.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(redrive(db.clone(), handler.clone(), opts.clone(), source, shutdown.clone()))
    });
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
    // The redrive task gives way to shutdown at once; should it not, it is not waited for long.
    if let Some(mut redrives) = redrives
        && tokio::time::timeout(Duration::from_secs(5), &mut redrives).await.is_err()
    {
        tracing::warn!(consumer.group = %group, "the redrive task did not stop in time; aborted");
        redrives.abort();
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

/// Performs the redrives admins request for the handler's group while this process holds the
/// group's redrive lease, until `shutdown`: a pass at a request made in this process (nothing else
/// wakes it: not every outbox write), or once a second for requests made elsewhere, never two passes
/// within a second. A pass gives way to `shutdown` at once (a row cut short stays requested).
async fn redrive(
    db: Database,
    handler: Arc<dyn EventHandler>,
    opts: ConsumerOptions,
    source: DeadLetters,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let group = handler.group();
    let lease = Lease::new(db.clone(), format!("redrive:{group}"), opts.lease);
    let mut holding = false;
    while !*shutdown.borrow() {
        let requested = delivery::redrive_requested();
        tokio::pin!(requested);
        requested.as_mut().enable();
        let started = tokio::time::Instant::now();
        let pass = async {
            match lease.take().await {
                Ok(true) => {
                    holding = true;
                    if let Err(e) = delivery::redrive_pending(&db, handler.as_ref(), &opts, &source, &lease).await {
                        tracing::warn!(
                            consumer.group = group,
                            error = format!("{e:#}"),
                            "cannot redrive parked events; retrying"
                        );
                    }
                }
                Ok(false) => holding = false,
                Err(e) => {
                    holding = false;
                    tracing::warn!(
                        consumer.group = group,
                        error = format!("{e:#}"),
                        "cannot take the redrive lease; retrying"
                    );
                }
            }
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            () = pass => {}
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            () = requested => {}
            () = tokio::time::sleep_until(started + delivery::REDRIVE_EVERY) => {}
        }
        // Woken early by a request: still no more than a pass a second.
        tokio::select! {
            _ = shutdown.changed() => break,
            () = tokio::time::sleep_until(started + delivery::REDRIVE_EVERY) => {}
        }
    }
    if holding && let Err(e) = lease.release().await {
        tracing::debug!(
            consumer.group = group,
            error = format!("{e:#}"),
            "could not give up the redrive lease; it lapses"
        );
    }
}

/// A Kafka group's parked events as it dead-lettered them: the message on `<topic>.dlq` whose
/// `consumer_group` header is the group's and whose envelope has the event's id; the outbox when
/// dead-lettering failed (the event stayed parked without a copy there).
struct DeadLetters {
    settings: KafkaSettings,
    topics: Topics,
    /// The group as Kafka knows it (`{prefix}.{group}`), as the `consumer_group` header says.
    group: String,
    db: Database,
    /// A scan of the dead-letter topics stops at shutdown.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl EventSource for DeadLetters {
    fn find<'a>(
        &'a self,
        group: &'a str,
        event_id: uuid::Uuid,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<Option<EventEnvelope>>> {
        Box::pin(async move {
            let (settings, topics, kafka_group) = (self.settings.clone(), self.topics, self.group.clone());
            let shutdown = self.shutdown.clone();
            let found = tokio::task::spawn_blocking(move || {
                find_dead_letter(&settings, topics, &kafka_group, event_id, &shutdown)
            })
            .await??;
            if found.is_some() {
                return Ok(found);
            }
            tracing::warn!(
                consumer.group = group, event.id = %event_id,
                "the parked event is not in the dead-letter topics; redriving it from the outbox"
            );
            outbox::get_by_id(&self.db, event_id).await
        })
    }
    fn describe(&self) -> String {
        let dlqs: Vec<String> = self.topics.iter().map(|t| format!("{t}.dlq")).collect();
        format!("{} nor the outbox", dlqs.join(", "))
    }
}

/// Reads every `<topic>.dlq` partition from its start to its end (an assigned consumer, no group
/// offsets) for the envelope of `event_id` that `group` dead-lettered; gives up at `shutdown`.
fn find_dead_letter(
    settings: &KafkaSettings,
    topics: Topics,
    group: &str,
    event_id: uuid::Uuid,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<EventEnvelope>> {
    const WAIT: Duration = Duration::from_secs(10);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", format!("{}.redrive-scan", settings.group_prefix))
        .set("enable.auto.commit", "false")
        // Retention may move a partition's start past the offset read as its low watermark: read
        // from the new start, not from the end (which would never reach the recorded end in time).
        // (No `enable.partition.eof`: its error names the partition but not the topic.)
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating a Kafka client")?;
    let mut start = TopicPartitionList::new();
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for topic in topics {
        let dlq = format!("{topic}.dlq");
        let metadata = consumer.fetch_metadata(Some(&dlq), WAIT).context("reading topic metadata")?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) =
                    consumer.fetch_watermarks(&dlq, p.id(), WAIT).context("reading dead-letter partition ends")?;
                if high > low {
                    start.add_partition_offset(&dlq, p.id(), Offset::Offset(low))?;
                    ends.insert((dlq.clone(), p.id()), high);
                }
            }
        }
    }
    if ends.is_empty() {
        return Ok(None);
    }
    consumer.assign(&start).context("assigning the dead-letter partitions")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the dead-letter topics were not read to their end in time"
        );
        anyhow::ensure!(!*shutdown.borrow(), "stopping");
        let m = match consumer.poll(Duration::from_millis(500)) {
            None => {
                // Nothing came: a partition whose messages up to the recorded end have all been
                // deleted meanwhile has nothing left to read.
                ends.retain(|(topic, p), end| {
                    consumer.fetch_watermarks(topic, *p, WAIT).map_or(true, |(low, _)| low < *end)
                });
                continue;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "reading the dead-letter topics");
                continue;
            }
            Some(Ok(m)) => m,
        };
        let at = (m.topic().to_string(), m.partition());
        if ends.get(&at).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&at);
        }
        let ours = m
            .headers()
            .is_some_and(|h| h.iter().any(|x| x.key == "consumer_group" && x.value == Some(group.as_bytes())));
        if !ours {
            continue;
        }
        let envelope: Option<EventEnvelope> = m.payload().and_then(|p| serde_json::from_slice(p).ok());
        if let Some(e) = envelope.filter(|e| e.id == event_id) {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// Every partition of the event topics at its first event written at or after `since_ms` (Unix
/// milliseconds), or at its end when there is none (or the broker cannot say).
fn start_positions(settings: &KafkaSettings, topics: Topics, since_ms: i64) -> anyhow::Result<TopicPartitionList> {
    let (consumer, partitions) = group_client(settings, topics, "start-positions")?;
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
