//! The relay that publishes the outbox to Kafka.
//!
//! It reads unpublished outbox rows in order and produces them with an idempotent producer
//! (`acks=all`, compression, key = aggregate id so an aggregate's events stay in one partition, in
//! order), with the event id, type, correlation id and region as headers. A row is marked published
//! only after the broker acknowledged it and every row before it in the batch: while the broker is
//! down rows wait (nothing is lost) and drain on recovery. A relay crash between publishing and
//! marking republishes those rows; consumers' inboxes make that harmless. At most one relay is
//! active per outbox: it holds a lease in the database that another process takes over when it
//! expires.

use std::time::Duration;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use events::outbox::{self, EventEnvelope};
use storage::{Database, Lease};

use crate::KafkaSettings;

/// The outbox relay.
pub struct Relay {
    db: Database,
    producer: FutureProducer,
    settings: KafkaSettings,
    batch: i64,
    lease: Lease,
    /// A send of the last batch timed out (see [`Relay::replace_producer_if_broken`]).
    timed_out: std::sync::atomic::AtomicBool,
}

impl Relay {
    /// `lease`: how long the relay's lease lasts without renewal (another relay takes over after it).
    pub fn new(db: Database, settings: &KafkaSettings, lease: Duration) -> anyhow::Result<Self> {
        let lease = Lease::new(db.clone(), "outbox", lease);
        Ok(Self {
            db,
            producer: producer(settings)?,
            settings: settings.clone(),
            batch: 500,
            lease,
            timed_out: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A producer that cannot deliver any more is replaced; the events it did not deliver are sent
    /// again by the new one. Two ways to get there: a fatal error (librdkafka raises one when the
    /// broker lost the idempotent producer's state, as after some restarts), and a send that timed
    /// out (librdkafka then bumps the idempotent producer's epoch by itself, an epoch the broker was
    /// never told of; tansu fails every later produce of that producer, and no fatal error comes).
    /// A new producer asks the broker for a fresh id.
    fn replace_producer_if_broken(&mut self) {
        let timed_out = self.timed_out.swap(false, std::sync::atomic::Ordering::Relaxed);
        let fatal = self.producer.client().fatal_error();
        if fatal.is_none() && !timed_out {
            return;
        }
        match &fatal {
            Some((code, reason)) => {
                tracing::warn!(error.code = ?code, error = %reason, "the Kafka producer hit a fatal error; making a new one");
            }
            None => tracing::warn!("a send to Kafka timed out; making a new producer (a fresh producer id and epoch)"),
        }
        match producer(&self.settings) {
            Ok(p) => {
                let old = std::mem::replace(&mut self.producer, p);
                // Dropping a producer purges its queue and joins its thread: not on the runtime.
                drop(tokio::task::spawn_blocking(move || drop(old)));
                metrics::counter!("outbox_producer_restarts_total").increment(1);
            }
            Err(e) => tracing::error!(error = format!("{e:#}"), "could not make a new Kafka producer; trying again"),
        }
    }

    /// Publishes until `shutdown` turns true, then drains what it can.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
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
            self.replace_producer_if_broken();
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
        // An event that does not serialise stops the batch (and waits, logged) rather than going out empty.
        let payloads = events
            .iter()
            .map(|e| Ok((e.aggregate_id.to_string(), serde_json::to_string(e)?)))
            .collect::<Result<Vec<(String, String)>, serde_json::Error>>()
            .context("serialising an outbox event for Kafka")?;
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
        let timed_out = results
            .iter()
            .any(|r| matches!(r, Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), _))));
        if timed_out {
            self.timed_out.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if base::failpoint("relay-before-mark") {
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

fn producer(settings: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &settings.compression)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "10000")
        .create()
        .context("creating the Kafka producer")
}

fn headers(e: &EventEnvelope) -> OwnedHeaders {
    e.headers()
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value.as_str()) }))
}
