//! Kafka as the event transport (DESIGN D4): topic set-up here, the outbox relay ([`relay`]),
//! consumer groups that deliver through the same inbox, retries and parking as the embedded log
//! ([`consumer`]), and what operators ask of groups and topics ([`admin`]).

pub mod admin;
pub mod consumer;
pub mod relay;

pub use admin::{GroupPartition, group_offsets, rewind_group, tail};
pub use consumer::consume;
pub use relay::Relay;

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

/// The event topics (DESIGN D4) are the services' own: each declares its `TOPIC`, and the caller
/// passes the list in (`walletd::TOPICS`). Every topic has a dead-letter twin, `<topic>.dlq`.
pub type Topics = &'static [&'static str];

/// How the process reaches Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    pub brokers: String,
    pub partitions: i32,
    pub replication: i32,
    pub compression: String,
    /// Consumer groups are named `{group_prefix}.{group}`.
    pub group_prefix: String,
    /// The longest a consumer's fetch waits at the broker (`fetch.wait.max.ms`).
    pub fetch_wait_ms: u32,
}

/// Creates the topics (and their `.dlq`s) that are missing.
pub async fn ensure_topics(settings: &KafkaSettings, topics: Topics) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()
        .context("creating the Kafka admin client")?;
    let names: Vec<String> = topics.iter().flat_map(|t| [t.to_string(), format!("{t}.dlq")]).collect();
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|t| NewTopic::new(t, settings.partitions, TopicReplication::Fixed(settings.replication)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &opts).await.context("creating Kafka topics")? {
        match result {
            Ok(topic) => tracing::info!(topic, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating Kafka topic {topic}: {code}"),
        }
    }
    // An existing topic keeps its partitions: growing them moves keys between partitions (and so
    // breaks per-aggregate order for a moment), which is an operator's call, not walletd's.
    let s = settings.clone();
    let (_, partitions) = tokio::task::spawn_blocking(move || admin::group_client(&s, topics, "topic-check")).await??;
    for topic in topics {
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
