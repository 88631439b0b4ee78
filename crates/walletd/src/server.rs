//! A built process serving: HTTP and metrics, the event consumers and the outbox relay, and a
//! graceful stop on SIGTERM that drains requests and finishes the event in hand.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use events::delivery::{self, ConsumerOptions, EventHandler};
use settings::Settings;
use storage::{Database, mask_url};
use tokio::net::TcpListener;

/// A built, bound, not yet serving process.
pub struct Server {
    pub(crate) http: TcpListener,
    pub(crate) metrics: TcpListener,
    pub(crate) app: Router,
    pub(crate) metrics_app: Router,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub database: Database,
    pub(crate) consumers: Vec<Arc<dyn EventHandler>>,
    pub(crate) settings: Settings,
}

impl Server {
    /// Serves until `shutdown` resolves, then drains in-flight requests (bounded by the shutdown timeout).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(
            http.addr = %self.http_addr,
            metrics.addr = %self.metrics_addr,
            database = %mask_url(&self.settings.database_url()),
            region = %self.settings.region,
            "walletd ready"
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut rx_metrics = rx.clone();
        let mut rx_http = rx;
        let (stop_consumers, consumers_rx) = tokio::sync::watch::channel(false);
        // The embedded log by default; Kafka consumer groups when Kafka is configured.
        let kafka = self.settings.kafka.clone();
        let opts = ConsumerOptions {
            max_attempts: self.settings.event_max_attempts,
            backoff: self.settings.event_retry_backoff,
            max_backoff: self.settings.event_retry_backoff_max,
            lease: self.settings.lease,
            ..ConsumerOptions::default()
        };
        let consumer_tasks: Vec<_> = self
            .consumers
            .into_iter()
            .map(|h| {
                let (db, rx, opts) = (self.database.clone(), consumers_rx.clone(), opts.clone());
                match kafka.clone() {
                    Some(k) => tokio::spawn(async move {
                        if let Err(e) = kafka::consume(k, crate::TOPICS, db, h, opts, rx).await {
                            tracing::error!(error = format!("{e:#}"), "Kafka consumer failed");
                        }
                    }),
                    None => tokio::spawn(delivery::run(db, h, opts, rx)),
                }
            })
            .collect();
        let relay = match &self.settings.kafka {
            Some(kafka) if self.settings.run_relay => Some(tokio::spawn(
                kafka::Relay::new(self.database.clone(), kafka, self.settings.lease)?.run(consumers_rx.clone()),
            )),
            _ => None,
        };
        let metrics = tokio::spawn(async move {
            axum::serve(self.metrics, self.metrics_app)
                .with_graceful_shutdown(async move {
                    let _ = rx_metrics.wait_for(|v| *v).await;
                })
                .await
        });
        let timeout = self.settings.shutdown_timeout;
        let app = self.app.into_make_service_with_connect_info::<SocketAddr>();
        let http = axum::serve(self.http, app).with_graceful_shutdown(async move {
            let _ = rx_http.wait_for(|v| *v).await;
        });
        let http = tokio::spawn(async move { http.await });
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = tx.send(true);
        match tokio::time::timeout(timeout, http).await {
            Ok(joined) => joined.context("HTTP server task")?.context("HTTP server")?,
            Err(_) => tracing::warn!(timeout_s = timeout.as_secs(), "in-flight requests did not finish in time"),
        }
        // Consumers finish the event in hand; an unfinished one is redelivered after restart.
        let _ = stop_consumers.send(true);
        if tokio::time::timeout(timeout, futures::future::join_all(consumer_tasks)).await.is_err() {
            tracing::warn!("consumers did not stop in time");
        }
        if let Some(relay) = relay
            && tokio::time::timeout(timeout, relay).await.is_err()
        {
            tracing::warn!("the outbox relay did not stop in time");
        }
        metrics.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
