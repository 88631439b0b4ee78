//! What operators ask of Kafka: a group's committed offsets and lag, rewinding a group for a
//! replay, and tailing a topic.

use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::{KafkaSettings, Topics};

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

pub(crate) fn group_client(
    settings: &KafkaSettings,
    topics: Topics,
    group: &str,
) -> anyhow::Result<(BaseConsumer, TopicPartitionList)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", format!("{}.{group}", settings.group_prefix))
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka client")?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
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
pub async fn group_offsets(
    settings: &KafkaSettings,
    topics: Topics,
    group: &str,
) -> anyhow::Result<Vec<GroupPartition>> {
    let (settings, group) = (settings.clone(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let (consumer, tpl) = group_client(&settings, topics, &group)?;
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
pub async fn rewind_group(settings: &KafkaSettings, topics: Topics, group: &str) -> anyhow::Result<usize> {
    let (settings, group) = (settings.clone(), group.to_string());
    tokio::task::spawn_blocking(move || {
        let (consumer, tpl) = group_client(&settings, topics, &group)?;
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
        let line = events::delivery::tail_line(m.topic(), Some(m.partition()), m.offset(), &key, headers, event);
        writeln!(out, "{line}")?;
        out.flush()?;
    }
}
