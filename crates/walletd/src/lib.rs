//! walletd: wires the services, the platform and the HTTP servers into one process (DESIGN D1).
//! `main.rs` is the CLI; tests use [`build`] exactly as `serve` does.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use platform::auth::store::IdentityStore;
use platform::auth::{self, AuthService, TokenKeys};
use platform::cache::{self, Cache};
use platform::clients::NoSettlement;
use platform::config::Settings;
use platform::db::{Database, mask_url};
use platform::events::{ConsumerOptions, EventHandler};
use platform::{ApiError, health, http, outbox, ratelimit, telemetry};

/// A service that `serve --services` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceName {
    Supply,
    Order,
    Claim,
    Wallet,
}

impl FromStr for ServiceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "supply" => Ok(Self::Supply),
            "order" => Ok(Self::Order),
            "claim" => Ok(Self::Claim),
            "wallet" => Ok(Self::Wallet),
            other => Err(format!("unknown service `{other}` (supply, order, claim, wallet)")),
        }
    }
}

/// Parses `supply,order,...`; services not built yet are refused by name.
pub fn parse_services(list: &str) -> anyhow::Result<Vec<ServiceName>> {
    let mut out = Vec::new();
    for name in list.split(',').filter(|s| !s.trim().is_empty()) {
        let s: ServiceName = name.parse().map_err(anyhow::Error::msg)?;
        if !all_services().contains(&s) {
            anyhow::bail!("service `{}` is not part of this build yet", name.trim());
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        anyhow::bail!("--services names no service");
    }
    Ok(out)
}

/// Every service this build has.
pub fn all_services() -> Vec<ServiceName> {
    vec![ServiceName::Supply, ServiceName::Order, ServiceName::Claim]
}

#[derive(OpenApi)]
#[openapi(info(title = "walletd", description = "Web3 wallet platform backend: supplies, orders, claims, wallet."))]
struct ApiDoc;

/// A built, bound, not yet serving process.
pub struct Server {
    http: TcpListener,
    metrics: TcpListener,
    app: Router,
    metrics_app: Router,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub database: Database,
    consumers: Vec<Arc<dyn EventHandler>>,
    settings: Settings,
}

/// Connects storage (migrating unless disabled), loads keys, binds both ports.
pub async fn build(settings: Settings, services: &[ServiceName]) -> anyhow::Result<Server> {
    let database = open_database(&settings).await?;
    let keys = Arc::new(
        TokenKeys::load_or_generate(&settings.jwt_key_path(), &settings.jwt_issuer, settings.access_token_ttl)
            .context("WALLETD_JWT_PRIVATE_KEY_FILE")?,
    );
    let auth = Arc::new(AuthService::new(IdentityStore::new(database.clone()), keys.clone(), &settings));

    let mut protected = auth::http::protected_router(auth.clone()).merge(outbox::admin_router(database.clone()));
    let (assets, region) = (settings.assets.clone(), settings.region.clone());
    let cache = match &settings.redis_url {
        _ if !settings.cache_enabled => Cache::disabled(),
        Some(url) => Cache::redis(url, settings.redis_timeout).context("WALLETD_REDIS_URL")?,
        None => Cache::local(settings.cache_capacity),
    };
    let supplies = Arc::new(supply::SupplyService::new(&database, cache.clone(), assets.clone(), region.clone()));
    let orders = Arc::new(order::OrderService::new(&database, cache.clone(), assets.clone(), region.clone()));
    if services.contains(&ServiceName::Supply) {
        protected = protected.merge(supply::http::router(supplies.clone()));
    }
    if services.contains(&ServiceName::Order) {
        protected = protected.merge(order::http::router(orders.clone()));
    }
    // Writes by other instances (and regions) reach this instance's cache through the log.
    let mut consumers: Vec<Arc<dyn EventHandler>> = vec![Arc::new(cache::Invalidator::new(cache.clone()))];
    if services.contains(&ServiceName::Claim) {
        // Co-located: the claim service reaches orders and supplies in process. (Remote clients
        // come with gRPC; until then the claim service runs in the same process as both.)
        let claims = Arc::new(claim::ClaimService::new(
            &database,
            cache.clone(),
            orders.clone(),
            supplies.clone(),
            assets,
            region,
        ));
        if settings.run_consumers {
            consumers.push(Arc::new(claims.processor(orders, supplies, Arc::new(NoSettlement))));
        }
        protected = protected.merge(claim::http::router(claims));
    }
    let limiter = ratelimit::Limiter::new(
        settings.rate_limit,
        settings.signin_rate_limit,
        settings.redis_url.as_deref(),
        settings.redis_timeout,
        settings.trusted_proxies.clone(),
    )
    .context("WALLETD_REDIS_URL")?;
    // Layers wrap what is above them: the token is checked first, then the principal's limit, then
    // the Idempotency-Key.
    let protected = protected
        .layer(axum::middleware::from_fn_with_state(database.clone(), platform::idempotency::layer))
        .layer(axum::middleware::from_fn_with_state(limiter.clone(), ratelimit::per_principal))
        .layer(axum::middleware::from_fn_with_state(keys, auth::require_token));
    let public =
        auth::http::public_router(auth).layer(axum::middleware::from_fn_with_state(limiter, ratelimit::per_ip));
    let (api, mut doc) =
        OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(public).merge(protected).split_for_parts();
    doc.components.get_or_insert_with(Default::default).add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
    );

    platform::idempotency::document(&mut doc);

    let app = api
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .merge(health::router(health::Readiness { database: database.clone(), cache: cache.clone() }))
        .fallback(|| async { ApiError::not_found("route").into_response() })
        .layer(DefaultBodyLimit::max(http::BODY_LIMIT))
        .layer(axum::middleware::from_fn(http::observe))
        .layer(PropagateRequestIdLayer::new(http::X_REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(http::X_REQUEST_ID.clone(), MakeRequestUuid));

    if let Some(kafka) = &settings.kafka {
        // Topics are created here when missing; a broker that is down now only delays publishing.
        if let Err(e) = platform::kafka::ensure_topics(kafka).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "Kafka topics not checked; the relay publishes once the broker answers"
            );
        }
    }
    let metrics_handle = telemetry::metrics_handle()?;
    let pool_db = database.clone();
    let metrics_app = Router::new().route(
        "/metrics",
        get(move || {
            let (handle, db) = (metrics_handle.clone(), pool_db.clone());
            async move {
                if let Some((size, available)) = db.pool_status() {
                    metrics::gauge!("db_pool_connections", "state" => "open").set(size as f64);
                    metrics::gauge!("db_pool_connections", "state" => "idle").set(available as f64);
                }
                handle.render()
            }
        }),
    );

    let http = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("binding WALLETD_HTTP_ADDR {}", settings.http_addr))?;
    let metrics = TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| format!("binding WALLETD_METRICS_ADDR {}", settings.metrics_addr))?;
    Ok(Server {
        http_addr: http.local_addr()?,
        metrics_addr: metrics.local_addr()?,
        http,
        metrics,
        app,
        metrics_app,
        database,
        consumers,
        settings,
    })
}

/// Connects the configured database and applies migrations unless disabled.
pub async fn open_database(settings: &Settings) -> anyhow::Result<Database> {
    let url = settings.database_url();
    let database = Database::connect(&url, &settings.db_options())
        .await
        .with_context(|| format!("WALLETD_DATABASE_URL {}", mask_url(&url)))?;
    if settings.migrate_on_start {
        migrate(&database).await?;
    }
    Ok(database)
}

/// Applies every migration set of this build.
pub async fn migrate(database: &Database) -> anyhow::Result<()> {
    database.migrate(&outbox::MIGRATIONS).await?;
    database.migrate(&supply::MIGRATIONS).await?;
    database.migrate(&order::MIGRATIONS).await?;
    database.migrate(&claim::MIGRATIONS).await?;
    Ok(())
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
                        if let Err(e) = platform::kafka::consume(k, db, h, opts, rx).await {
                            tracing::error!(error = format!("{e:#}"), "Kafka consumer failed");
                        }
                    }),
                    None => tokio::spawn(platform::events::run(db, h, opts, rx)),
                }
            })
            .collect();
        let relay = match &self.settings.kafka {
            Some(kafka) if self.settings.run_relay => Some(tokio::spawn(
                platform::kafka::Relay::new(self.database.clone(), kafka, self.settings.lease)?
                    .run(consumers_rx.clone()),
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
