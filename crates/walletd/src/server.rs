//! A built process serving: HTTP and metrics, the event consumers and the outbox relay, and a
//! graceful stop on SIGTERM that drains requests and finishes the event in hand.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use events::delivery::{self, ConsumerOptions, EventHandler};
use settings::Settings;
use storage::{Database, mask_url};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// A built, bound, not yet serving process.
pub struct Server {
    pub(crate) http: TcpListener,
    pub(crate) metrics: TcpListener,
    pub(crate) grpc: TcpListener,
    pub(crate) app: Router,
    pub(crate) metrics_app: Router,
    pub(crate) grpc_app: Router,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// The main database (`WALLETD_DATABASE_URL`).
    pub database: Database,
    /// Users, nonces and refresh tokens (the main database unless set apart).
    pub(crate) identity: Database,
    /// Every distinct database of this process: each outbox has its relay.
    pub(crate) outboxes: Vec<Database>,
    pub(crate) consumers: Vec<(Database, Arc<dyn EventHandler>)>,
    pub(crate) reconciler: Option<crate::reconcile::Reconciler>,
    pub(crate) watchers: Vec<chain::watcher::Watcher>,
    pub(crate) signers: Vec<chain::signer::Signer>,
    pub(crate) settings: Settings,
    /// What the clean-up job measures "expired" against.
    pub(crate) clock: Arc<dyn base::Clock>,
}

impl Server {
    /// Serves until `shutdown` resolves, then drains in-flight requests (bounded by the shutdown timeout).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        tracing::info!(
            http.addr = %self.http_addr,
            metrics.addr = %self.metrics_addr,
            grpc.addr = %self.grpc_addr,
            database = %mask_url(&self.settings.database_url()),
            region = %self.settings.region,
            "walletd ready"
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut rx_metrics = rx.clone();
        let mut rx_grpc = rx.clone();
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
        let consumer_dbs: Vec<Database> = self.consumers.iter().map(|(db, _)| db.clone()).collect();
        let consumer_tasks: Vec<_> = self
            .consumers
            .into_iter()
            .map(|(db, h)| {
                let (rx, opts) = (consumers_rx.clone(), opts.clone());
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
        let mut relays = Vec::new();
        if let Some(kafka) = &self.settings.kafka
            && self.settings.run_relay
        {
            for db in &self.outboxes {
                let relay = kafka::Relay::new(db.clone(), kafka, self.settings.lease)?;
                relays.push(tokio::spawn(relay.run(consumers_rx.clone())));
            }
        }
        let reconciler = self.reconciler.map(|r| tokio::spawn(r.run(consumers_rx.clone())));
        let mut watchers: Vec<_> =
            self.watchers.into_iter().map(|w| tokio::spawn(w.run(consumers_rx.clone()))).collect();
        watchers.extend(self.signers.into_iter().map(|s| tokio::spawn(s.run(consumers_rx.clone()))));
        let inboxes: Vec<Database> = consumer_dbs;
        let cleanups: Vec<_> = crate::cleanup::sweeps(&self.settings, &self.database, &self.identity, &inboxes)
            .into_iter()
            .map(|(db, sweeps)| {
                tokio::spawn(crate::cleanup::run(
                    db,
                    sweeps,
                    self.settings.cleanup_interval,
                    self.clock.clone(),
                    consumers_rx.clone(),
                ))
            })
            .collect();
        let metrics = tokio::spawn(async move {
            axum::serve(self.metrics, self.metrics_app)
                .with_graceful_shutdown(async move {
                    let _ = rx_metrics.wait_for(|v| *v).await;
                })
                .await
        });
        let timeout = self.settings.shutdown_timeout;
        let limits = ConnectionLimits {
            header_timeout: self.settings.http_header_timeout,
            max_connections: self.settings.http_max_connections,
        };
        let http = tokio::spawn(serve_http(self.http, self.app, limits, async move {
            let _ = rx_http.wait_for(|v| *v).await;
        }));
        let grpc = tokio::spawn(async move {
            // Nagle's algorithm would hold back an answer's last small frame for the client's
            // delayed ACK (about 40 ms on every call); gRPC writes many small frames.
            use axum::serve::ListenerExt;
            let listener = self.grpc.tap_io(|stream| {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY on a gRPC connection");
                }
            });
            axum::serve(listener, self.grpc_app)
                .with_graceful_shutdown(async move {
                    let _ = rx_grpc.wait_for(|v| *v).await;
                })
                .await
        });
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = tx.send(true);
        match tokio::time::timeout(timeout, http).await {
            Ok(joined) => joined.context("HTTP server task")?,
            Err(_) => tracing::warn!(timeout_s = timeout.as_secs(), "in-flight requests did not finish in time"),
        }
        match tokio::time::timeout(timeout, grpc).await {
            Ok(joined) => joined.context("gRPC server task")??,
            Err(_) => tracing::warn!(timeout_s = timeout.as_secs(), "in-flight gRPC calls did not finish in time"),
        }
        // Consumers finish the event in hand; an unfinished one is redelivered after restart.
        let _ = stop_consumers.send(true);
        if tokio::time::timeout(timeout, futures::future::join_all(consumer_tasks)).await.is_err() {
            tracing::warn!("consumers did not stop in time");
        }
        if tokio::time::timeout(timeout, futures::future::join_all(relays)).await.is_err() {
            tracing::warn!("the outbox relay did not stop in time");
        }
        if tokio::time::timeout(timeout, futures::future::join_all(watchers)).await.is_err() {
            tracing::warn!("the deposit watchers and withdrawal signers did not stop in time");
        }
        for cleanup in cleanups {
            cleanup.abort();
        }
        if let Some(r) = reconciler {
            r.abort();
        }
        metrics.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

/// What one HTTP connection may hold: the time to send a request's headers (and to sit idle between
/// requests: hyper starts that clock as soon as it waits for the next request), and how many
/// connections may be open at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves HTTP/1.1 until `stop` resolves, then lets every open connection finish the request in
/// hand and returns once they are closed. Each connection is a task that holds a permit of the
/// connection cap; one more is answered 503 and closed, so a flood of connections (or of slow
/// ones) cannot exhaust the process's file descriptors and stall everyone.
async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let (close, closing) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: let connections close before trying again.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    metrics::counter!("http_accept_errors_total").increment(1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream, refusing.clone()));
            continue;
        };
        let (app, mut closing) = (app.clone(), closing.clone());
        connections.spawn(async move {
            let _permit = permit;
            metrics::gauge!("http_connections_open").increment(1.0);
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => log_connection_end(result),
                () = async { drop(closing.wait_for(|v| *v).await) } => {
                    conn.as_mut().graceful_shutdown();
                    log_connection_end(conn.await);
                }
            }
            metrics::gauge!("http_connections_open").decrement(1.0);
        });
    }
    drop(listener);
    let _ = close.send(true);
    while connections.join_next().await.is_some() {}
}

/// A connection over the cap: its one request is answered 503 problem+json with `Retry-After` and
/// the connection closed, within a second. At most [`REFUSING`] are answered at once; past that a
/// connection is closed unanswered, so a flood costs nothing that lasts.
async fn refuse(stream: tokio::net::TcpStream, refusing: Arc<Semaphore>) {
    let Ok(_permit) = refusing.try_acquire_owned() else { return };
    let service = hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
        let mut res =
            web::ApiError::new(base::ErrorCode::Unavailable, "too many connections; retry later").into_response();
        res.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        Ok::<_, std::convert::Infallible>(res)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(1))
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
}

/// Connections over the cap answered at once.
const REFUSING: usize = 64;

/// A connection's end: clients going away and slow ones timed out are routine (debug); anything
/// else is worth a look.
fn log_connection_end(result: Result<(), hyper::Error>) {
    match result {
        Ok(()) => {}
        Err(e) if e.is_timeout() => {
            metrics::counter!("http_timeouts_total", "kind" => "header").increment(1);
            tracing::debug!(error = %e, "closed a connection that sent no complete request headers in time");
        }
        Err(e) if e.is_incomplete_message() || e.is_closed() || e.is_canceled() => {
            tracing::debug!(error = %e, "the client closed the connection");
        }
        Err(e) => tracing::debug!(error = %e, "connection error"),
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
