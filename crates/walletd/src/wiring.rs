//! How [`build`] puts a process together, one step each: storage, identity, the cache, the services
//! (their routes and event consumers), the HTTP stack around them, Kafka topics, metrics, and the
//! two bound ports.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::get;
use base::clock::{self, Clock};
use cache::Cache;
use events::EventHandler;
use identity::{AuthService, IdentityStore, SignInOptions, TokenKeys};
use settings::Settings;
use storage::{Database, mask_url};
use tokio::net::TcpListener;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;
use web::ratelimit::{self, Limiter};
use web::{ApiError, deadline, extract, health, idempotency, observe};

use crate::adapters::{Orders, Settlement, Supplies};
use crate::{Server, ServiceName, admin, telemetry};

#[derive(OpenApi)]
#[openapi(info(title = "walletd", description = "Web3 wallet platform backend: supplies, orders, claims, wallet."))]
struct ApiDoc;

/// Connects storage (migrating unless disabled), loads keys, binds both ports; time from the system.
pub async fn build(settings: Settings, services: &[ServiceName]) -> anyhow::Result<Server> {
    build_with_clock(settings, services, clock::system()).await
}

/// [`build`] with the clock that sign-in and tokens read (tests move it instead of waiting).
pub async fn build_with_clock(
    settings: Settings,
    services: &[ServiceName],
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Server> {
    let database = open_database(&settings).await?;
    let auth = identity(&settings, &database, clock.clone())?;
    let cache = open_cache(&settings)?;
    let wired = services_of(&settings, services, &database, &cache);
    let app = http_app(&settings, &database, &cache, auth, wired.routes)?;
    ensure_kafka_topics(&settings).await;
    let metrics_app = metrics_app(&database)?;

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
        consumers: wired.consumers,
        reconciler: wired.reconciler,
        settings,
        clock,
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
    database.migrate(&events::MIGRATIONS).await?;
    database.migrate(&supply::MIGRATIONS).await?;
    database.migrate(&order::MIGRATIONS).await?;
    database.migrate(&claim::MIGRATIONS).await?;
    database.migrate(&wallet::MIGRATIONS).await?;
    Ok(())
}

/// The signing key (generated on first start) and sign-in.
fn identity(settings: &Settings, database: &Database, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<AuthService>> {
    let keys = Arc::new(
        TokenKeys::load_or_generate(
            &settings.jwt_key_path(),
            &settings.jwt_issuer,
            settings.access_token_ttl,
            clock.clone(),
        )
        .context("WALLETD_JWT_PRIVATE_KEY_FILE")?,
    );
    let store = IdentityStore::new(database.clone(), clock.clone());
    Ok(Arc::new(AuthService::new(store, keys, sign_in_options(settings), clock)))
}

/// What sign-in takes from the settings.
pub fn sign_in_options(settings: &Settings) -> SignInOptions {
    SignInOptions {
        domain: settings.siwe_domain.clone(),
        uri: settings.siwe_uri.clone(),
        chain_id: settings.siwe_chain_id,
        nonce_ttl: settings.nonce_ttl,
        refresh_ttl: settings.refresh_token_ttl,
        session_max: settings.session_max,
        admins: settings.admin_addresses.clone(),
    }
}

/// Redis when configured, in-process otherwise, or none.
fn open_cache(settings: &Settings) -> anyhow::Result<Arc<Cache>> {
    Ok(match &settings.redis_url {
        _ if !settings.cache_enabled => Cache::disabled(),
        Some(url) => redis_backend::RedisCache::open(url, settings.redis_timeout).context("WALLETD_REDIS_URL")?,
        None => Cache::local(settings.cache_capacity),
    })
}

/// The services' protected routes, the event consumers and the reconciler this process runs.
struct Wired {
    routes: OpenApiRouter,
    consumers: Vec<Arc<dyn EventHandler>>,
    reconciler: Option<crate::reconcile::Reconciler>,
}

fn services_of(settings: &Settings, services: &[ServiceName], database: &Database, cache: &Arc<Cache>) -> Wired {
    let (assets, region) = (settings.assets.clone(), settings.region.clone());
    let supplies = Arc::new(supply::SupplyService::new(database, cache.clone(), assets.clone(), region.clone()));
    let users = Arc::new(crate::adapters::Users(identity::IdentityStore::new(database.clone(), base::clock::system())));
    let wallet = Arc::new(wallet::WalletService::new(database, cache.clone(), users, assets.clone(), region.clone()));
    let funds = Arc::new(crate::adapters::Funds(wallet.clone()));
    let orders = Arc::new(order::OrderService::new(database, cache.clone(), funds, assets.clone(), region.clone()));
    let mut routes = OpenApiRouter::new();
    if services.contains(&ServiceName::Supply) {
        routes = routes.merge(supply::http::router(supplies.clone()));
    }
    if services.contains(&ServiceName::Order) {
        routes = routes.merge(order::http::router(orders.clone()));
    }
    if services.contains(&ServiceName::Wallet) {
        routes = routes.merge(wallet::http::router(wallet.clone()));
    }
    // Writes by other instances (and regions) reach this instance's cache through the log; each
    // service declares which events make which of its keys stale.
    let mut rules = vec![supply::keys::INVALIDATION, order::keys::INVALIDATION, wallet::keys::INVALIDATION];
    rules.extend(claim::keys::INVALIDATION);
    let mut consumers: Vec<Arc<dyn EventHandler>> = vec![Arc::new(cache::Invalidator::new(cache.clone(), rules))];
    if services.contains(&ServiceName::Claim) {
        // Co-located: the claim service reaches orders and supplies in process. (Remote clients
        // come with gRPC; until then the claim service runs in the same process as both.)
        let (order_port, supply_port) = (Arc::new(Orders(orders.clone())), Arc::new(Supplies(supplies)));
        let claims = Arc::new(claim::ClaimService::new(
            database,
            cache.clone(),
            order_port.clone(),
            supply_port.clone(),
            assets,
            region,
        ));
        if settings.run_consumers {
            consumers.push(Arc::new(claims.processor(order_port, supply_port, Arc::new(Settlement(wallet.clone())))));
        }
        routes = routes.merge(claim::http::router(claims));
    }
    let reconciler = settings.run_consumers.then(|| crate::reconcile::Reconciler {
        orders: orders.clone(),
        wallet: wallet.clone(),
        region: settings.region.clone(),
        interval: settings.reconcile_interval,
        grace: settings.reconcile_grace,
    });
    Wired { routes, consumers, reconciler }
}

/// The public and protected routes with their middleware, the OpenAPI document, health and the
/// request-wide layers.
fn http_app(
    settings: &Settings,
    database: &Database,
    cache: &Arc<Cache>,
    auth: Arc<AuthService>,
    services: OpenApiRouter,
) -> anyhow::Result<Router> {
    let shared = match &settings.redis_url {
        Some(url) => {
            Some(Box::new(redis_backend::RedisLimiter::open(url, settings.redis_timeout).context("WALLETD_REDIS_URL")?)
                as Box<dyn ratelimit::SharedLimiter>)
        }
        None => None,
    };
    let limiter =
        Limiter::new(settings.rate_limit, settings.signin_rate_limit, shared, settings.trusted_proxies.clone());
    // Layers wrap what is above them: the token is checked first, then the principal's limit, then
    // the Idempotency-Key.
    let protected = identity::http::protected_router(auth.clone())
        .merge(admin::router(database.clone()))
        .merge(services)
        .layer(from_fn_with_state(database.clone(), idempotency::layer))
        .layer(from_fn_with_state(limiter.clone(), ratelimit::per_principal))
        .layer(from_fn_with_state(auth.clone(), identity::require_token));
    let public = identity::http::public_router(auth).layer(from_fn_with_state(limiter, ratelimit::per_ip));
    let (api, mut doc) =
        OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(public).merge(protected).split_for_parts();
    doc.components.get_or_insert_with(Default::default).add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
    );
    idempotency::document(&mut doc);
    web::openapi::document_problems(&mut doc);
    web::openapi::document_assets(&mut doc, &settings.assets.codes());
    for (from, to) in [
        ("/v1/supplies", "/v1/supplies/{id}"),
        ("/v1/orders", "/v1/orders/{id}"),
        ("/v1/orders/{id}/claim", "/v1/claims/{id}"),
    ] {
        web::openapi::link_created(&mut doc, from, to);
    }

    let deadlines = deadline::Deadlines { body: settings.http_body_timeout, request: settings.http_request_timeout };
    let readiness = health::Readiness::new(database.clone(), Arc::new(CacheStatus(cache.clone())));
    Ok(api
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .merge(health::router(readiness))
        .fallback(|| async { ApiError::not_found("route").into_response() })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(observe::catch_panic())
        .layer(from_fn_with_state(deadlines, deadline::deadlines))
        .layer(axum::middleware::from_fn(observe::observe))
        .layer(PropagateRequestIdLayer::new(extract::X_REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(extract::X_REQUEST_ID.clone(), observe::RequestIds::new()))
        .layer(axum::middleware::from_fn(observe::drop_bad_request_id)))
}

/// The cache as readiness reports it.
struct CacheStatus(Arc<Cache>);

#[async_trait::async_trait]
impl health::Reported for CacheStatus {
    async fn status(&self) -> &'static str {
        self.0.status().await
    }
}

/// Creates missing topics; a broker that is down now only delays publishing.
async fn ensure_kafka_topics(settings: &Settings) {
    if let Some(kafka) = &settings.kafka
        && let Err(e) = kafka::ensure_topics(kafka, crate::TOPICS).await
    {
        tracing::warn!(
            error = format!("{e:#}"),
            "Kafka topics not checked; the relay publishes once the broker answers"
        );
    }
}

/// `/metrics`, with the database pool's gauges read at scrape time.
fn metrics_app(database: &Database) -> anyhow::Result<Router> {
    let handle = telemetry::metrics_handle()?;
    let db = database.clone();
    Ok(Router::new().route(
        "/metrics",
        get(move || {
            let (handle, db) = (handle.clone(), db.clone());
            async move {
                if let Some((size, available)) = db.pool_status() {
                    metrics::gauge!("db_pool_connections", "state" => "open").set(size as f64);
                    metrics::gauge!("db_pool_connections", "state" => "idle").set(available as f64);
                }
                handle.render()
            }
        }),
    ))
}
