//! The Kafka-protocol broker for tests: the suite's (`WALLETD_TEST_KAFKA_BROKERS`), a private one
//! that keeps its messages across a stop and start, and a reader of what reached a topic.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

use crate::TempDir;

pub fn brokers() -> String {
    std::env::var("WALLETD_TEST_KAFKA_BROKERS")
        .unwrap_or_else(|_| panic!("WALLETD_TEST_KAFKA_BROKERS is not set: run the suite with scripts/test.sh"))
}

/// Settings pointing walletd at `brokers`.
pub fn settings(brokers: &str) -> kafka::KafkaSettings {
    kafka::KafkaSettings {
        brokers: brokers.to_string(),
        partitions: 3,
        replication: 1,
        compression: "lz4".into(),
        // Each test's instances form consumer groups of their own on the shared broker.
        group_prefix: format!("test-{}", uuid::Uuid::now_v7().simple()),
        fetch_wait_ms: 50,
    }
}

/// The consumer groups the broker knows.
pub fn group_names(brokers: &str) -> Vec<String> {
    let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let list = client.fetch_group_list(None, Duration::from_secs(10)).expect("the broker lists its groups");
    list.groups().iter().map(|g| g.name().to_string()).collect()
}

/// A message as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: HashMap<String, String>,
    pub payload: serde_json::Value,
}

/// Reads `topic` from the beginning until `done` says the messages suffice or `deadline` passes.
pub fn read_topic(brokers: &str, topic: &str, deadline: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", uuid::Uuid::now_v7().simple()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // tansu holds every fetch for the whole wait and answers it with one batch: at librdkafka's
        // 500 ms, a topic of a thousand small batches took longer to read than the tests' deadlines.
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < deadline && !done(&out) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| (x.key.to_string(), String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Received {
                partition: m.partition(),
                offset: m.offset(),
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                headers,
                payload: serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default(),
            });
        }
    }
    out
}

/// A broker of a test's own; its messages survive a stop and start (SQLite storage).
pub struct PrivateKafka {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl PrivateKafka {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut k = Self { port, dir: TempDir::new(), child: None };
        k.start_again();
        k
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn start_again(&mut self) {
        let bin = std::env::var("WALLETD_TEST_TANSU_BIN").unwrap_or_else(|_| "tansu".into());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(bin)
            .current_dir(&self.dir.0)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu runs");
        self.child = Some(child);
        crate::wait_for_port(self.port, Duration::from_secs(20), "tansu");
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.stop();
    }
}
