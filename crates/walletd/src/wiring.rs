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
    // The recorder first: what the wiring exports at start (the breakers' closed state) is kept.
    telemetry::metrics_handle()?;
    let databases = open_databases(&settings, services).await?;
    let replicas = open_replicas(&settings, services, &databases).await?;
    let (auth, keys) = identity(&settings, &databases.identity, clock.clone())?;
    let cache = open_cache(&settings)?;
    let tokens: Arc<dyn rpc::client::TokenSource> = crate::remote::ServiceTokens::new(keys, settings.access_token_ttl);
    let wired = services_of(&settings, services, (&databases, &replicas), &cache, &tokens)?;
    let limiter = limiter(&settings)?;
    let database = databases.main.clone();
    // One breaker for both APIs: five requests in a row that could not reach the database make the
    // next second's requests answer 503 at once.
    let breaker = web::breaker::DbBreaker::new(5, std::time::Duration::from_secs(1));
    let services_http = (wired.routes, wired.chains);
    let consistency = web::consistency::Consistency::new(databases.read_primaries(services));
    let app = http_app(
        &settings,
        (&database, consistency),
        &cache,
        auth.clone(),
        limiter.clone(),
        breaker.clone(),
        services_http,
    );
    let grpc_app = grpc_app(&database, auth, limiter, breaker, wired.grpc, services).await?;
    ensure_kafka_topics(&settings).await;
    let metrics_app = metrics_app(&database)?;

    let http = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("binding WALLETD_HTTP_ADDR {}", settings.http_addr))?;
    let metrics = TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| format!("binding WALLETD_METRICS_ADDR {}", settings.metrics_addr))?;
    let grpc = TcpListener::bind(settings.grpc_addr)
        .await
        .with_context(|| format!("binding WALLETD_GRPC_ADDR {}", settings.grpc_addr))?;
    Ok(Server {
        http_addr: http.local_addr()?,
        metrics_addr: metrics.local_addr()?,
        grpc_addr: grpc.local_addr()?,
        http,
        metrics,
        grpc,
        app,
        metrics_app,
        grpc_app,
        database,
        identity: databases.identity.clone(),
        outboxes: databases.distinct(),
        consumers: wired.consumers,
        reconciler: wired.reconciler,
        watchers: wired.watchers,
        signers: wired.signers,
        settings,
        clock,
    })
}

/// The databases of a process: the main one (`WALLETD_DATABASE_URL`: idempotency keys, the admin
/// views, clean-up), identity's, and each service's own; one connection pool per distinct URL.
pub struct Databases {
    pub main: Database,
    pub identity: Database,
    /// Each service this process runs, with its database.
    services: Vec<(ServiceName, Database)>,
    /// Every distinct database, by URL.
    opened: Vec<(String, Database)>,
}

impl Databases {
    /// The database of `service` (the main one for a service this process does not run).
    pub fn of(&self, service: ServiceName) -> &Database {
        self.services.iter().find(|(s, _)| *s == service).map_or(&self.main, |(_, db)| db)
    }

    /// The distinct PostgreSQL databases of the services whose plain reads may go to a replica
    /// (here or in another region): a write to one answers with a consistency token.
    fn read_primaries(&self, services: &[ServiceName]) -> Vec<Database> {
        let mut out: Vec<Database> = Vec::new();
        for s in [ServiceName::Supply, ServiceName::Order, ServiceName::Claim] {
            let db = self.of(s);
            if services.contains(&s) && !out.iter().any(|o| o.same_as(db)) {
                out.push(db.clone());
            }
        }
        out
    }

    /// Every distinct database: each has its own outbox, and so its own relay.
    pub fn distinct(&self) -> Vec<Database> {
        self.opened.iter().map(|(_, db)| db.clone()).collect()
    }
}

/// A service's database URL: its own setting, or `WALLETD_DATABASE_URL`.
pub fn service_database_url(settings: &Settings, service: ServiceName) -> String {
    let own = match service {
        ServiceName::Supply => &settings.supply_database_url,
        ServiceName::Order => &settings.order_database_url,
        ServiceName::Claim => &settings.claim_database_url,
        ServiceName::Wallet => &settings.wallet_database_url,
    };
    own.clone().unwrap_or_else(|| settings.database_url())
}

/// Connects every database this process uses, once per URL, and applies to each the platform's
/// migrations and those of the services it holds (unless migrations are off).
pub async fn open_databases(settings: &Settings, services: &[ServiceName]) -> anyhow::Result<Databases> {
    let main_url = settings.database_url();
    let identity_url = settings.identity_database_url.clone().unwrap_or_else(|| main_url.clone());
    let mut wanted = vec![
        ("WALLETD_DATABASE_URL".to_string(), main_url.clone()),
        ("WALLETD_IDENTITY_DATABASE_URL".to_string(), identity_url.clone()),
    ];
    for s in services {
        wanted.push((
            format!("WALLETD_{}_DATABASE_URL", s.as_str().to_ascii_uppercase()),
            service_database_url(settings, *s),
        ));
    }
    let mut opened: Vec<(String, Database)> = Vec::new();
    for (setting, url) in &wanted {
        if opened.iter().any(|(u, _)| u == url) {
            continue;
        }
        let db = Database::connect(url, &settings.db_options())
            .await
            .with_context(|| format!("{setting} {}", mask_url(url)))?;
        if settings.migrate_on_start {
            db.migrate(&events::MIGRATIONS).await?;
            for s in services.iter().filter(|s| service_database_url(settings, **s) == *url) {
                db.migrate(migrations_of(*s)).await?;
            }
        }
        opened.push((url.clone(), db));
    }
    let find = |url: &str| {
        opened.iter().find(|(u, _)| u == url).map(|(_, db)| db.clone()).context("a database was not opened")
    };
    let (main, identity) = (find(&main_url)?, find(&identity_url)?);
    let services =
        services.iter().map(|s| Ok((*s, find(&service_database_url(settings, *s))?))).collect::<anyhow::Result<_>>()?;
    if opened.len() > 1 && settings.kafka.is_none() {
        anyhow::bail!(
            "this process uses {} databases; events cross between them only through Kafka: set WALLETD_KAFKA_BROKERS, or give the services one WALLETD_DATABASE_URL",
            opened.len()
        );
    }
    Ok(Databases { main, identity, services, opened })
}

/// The read replicas of the services that have one, each opened once per (primary, replica) pair.
pub struct Replicas(Vec<(ServiceName, Database, Arc<storage::replica::Replica>)>);

impl Replicas {
    /// The replica `service` reads from, if any.
    fn of(&self, service: ServiceName) -> Option<(&Database, Arc<storage::replica::Replica>)> {
        self.0.iter().find(|(s, _, _)| *s == service).map(|(_, db, r)| (db, r.clone()))
    }
}

/// Connects the read replicas (`WALLETD_READ_DATABASE_URL` and the per-service ones). A replica
/// that is down at start is no error: reads go to the primary until it answers.
async fn open_replicas(settings: &Settings, services: &[ServiceName], dbs: &Databases) -> anyhow::Result<Replicas> {
    use ServiceName::{Claim, Order, Supply};
    let mut opened: Vec<(String, String, Database, Arc<storage::replica::Replica>)> = Vec::new();
    let mut out = Vec::new();
    for service in [Supply, Order, Claim].into_iter().filter(|s| services.contains(s)) {
        let own = match service {
            Supply => &settings.supply_read_database_url,
            Order => &settings.order_read_database_url,
            _ => &settings.claim_read_database_url,
        };
        let Some(url) = own.clone().or_else(|| settings.read_database_url.clone()) else { continue };
        let setting = format!("WALLETD_{}_READ_DATABASE_URL", service.as_str().to_ascii_uppercase());
        let primary_url = service_database_url(settings, service);
        let Database::Postgres(primary) = dbs.of(service) else {
            anyhow::bail!(
                "{setting}: the {} service's own database is SQLite; a read replica needs PostgreSQL",
                service.as_str()
            );
        };
        if let Some((_, _, db, r)) = opened.iter_mut().find(|(u, p, _, _)| *u == url && *p == primary_url) {
            out.push((service, db.clone(), r.clone()));
            continue;
        }
        let db = Database::connect(&url, &settings.db_options())
            .await
            .with_context(|| format!("{setting} {}", mask_url(&url)))?;
        let Database::Postgres(pool) = &db else { anyhow::bail!("{setting}: must be a PostgreSQL URL") };
        let name = service.as_str();
        let replica = storage::replica::Replica::start(name, primary.clone(), pool.clone(), settings.read_wait);
        tracing::info!(replica = name, url = %mask_url(&url), "plain reads of the {name} service go to a read replica");
        out.push((service, db.clone(), replica.clone()));
        opened.push((url, primary_url, db, replica));
    }
    Ok(Replicas(out))
}

fn migrations_of(service: ServiceName) -> &'static storage::Migrations {
    match service {
        ServiceName::Supply => &supply::MIGRATIONS,
        ServiceName::Order => &order::MIGRATIONS,
        ServiceName::Claim => &claim::MIGRATIONS,
        ServiceName::Wallet => &wallet::MIGRATIONS,
    }
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
fn identity(
    settings: &Settings,
    database: &Database,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<AuthService>, Arc<TokenKeys>)> {
    let keys = Arc::new(token_keys(settings, clock.clone())?);
    let store = IdentityStore::new(database.clone(), clock.clone());
    Ok((Arc::new(AuthService::new(store, keys.clone(), sign_in_options(settings), clock)), keys))
}

/// The signing key (generated on first start) and the keys only published beside it (rotation).
pub fn token_keys(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<TokenKeys> {
    let keys =
        TokenKeys::load_or_generate(&settings.jwt_key_path(), &settings.jwt_issuer, settings.access_token_ttl, clock)
            .context("WALLETD_JWT_PRIVATE_KEY_FILE")?;
    keys.with_published(&settings.jwt_published_key_files).context("WALLETD_JWT_PUBLISHED_KEY_FILES")
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

/// The services' protected routes and gRPC servers, the event consumers (each with the database
/// its inbox lives in) and the reconciler this process runs.
struct Wired {
    routes: OpenApiRouter,
    grpc: tonic::service::Routes,
    consumers: Vec<(Database, Arc<dyn EventHandler>)>,
    reconciler: Option<crate::reconcile::Reconciler>,
    /// The chain integration, when chains are configured (with the wallet).
    chains: Option<Arc<chain::ChainService>>,
    /// One deposit watcher per chain, when this process runs background work.
    watchers: Vec<chain::watcher::Watcher>,
    /// One withdrawal signer per chain, when this process has the hot wallet's key.
    signers: Vec<chain::signer::Signer>,
}

/// The hot wallet's key: from `WALLETD_CHAIN_SIGNER_KEY_FILE` (which others must not be able to
/// read), else `WALLETD_CHAIN_SIGNER_KEY`; none: this process signs nothing.
fn signer_key(settings: &Settings) -> anyhow::Result<Option<chain::signer::HotKey>> {
    let text = match (&settings.chain_signer_key_file, &settings.chain_signer_key) {
        (Some(path), _) => {
            identity::jwt::refuse_if_others_can_read(path).context("WALLETD_CHAIN_SIGNER_KEY_FILE")?;
            std::fs::read_to_string(path)
                .with_context(|| format!("WALLETD_CHAIN_SIGNER_KEY_FILE: cannot read {}", path.display()))?
        }
        (None, Some(key)) => key.0.clone(),
        (None, None) => return Ok(None),
    };
    let key = chain::signer::HotKey::parse(&text).context("WALLETD_CHAIN_SIGNER_KEY(_FILE)")?;
    Ok(Some(key))
}

/// Another service: in process when this process runs it, over gRPC when its address is set,
/// otherwise the start stops naming the setting.
fn peer(
    settings: &Settings,
    needed_by: &str,
    service: ServiceName,
    tokens: &Arc<dyn rpc::client::TokenSource>,
) -> anyhow::Result<Arc<rpc::client::Peer>> {
    let (url, setting) = match service {
        ServiceName::Supply => (&settings.supply_grpc_url, "WALLETD_SUPPLY_GRPC_URL"),
        ServiceName::Order => (&settings.order_grpc_url, "WALLETD_ORDER_GRPC_URL"),
        ServiceName::Wallet => (&settings.wallet_grpc_url, "WALLETD_WALLET_GRPC_URL"),
        ServiceName::Claim => (&None, "WALLETD_CLAIM_GRPC_URL"),
    };
    let name = service.as_str();
    let Some(url) = url else {
        anyhow::bail!(
            "the {needed_by} service needs the {name} service: run it in this process (--services {needed_by},{name}) or set {setting} to where it answers gRPC"
        );
    };
    let opts = rpc::client::PeerOptions { deadline: settings.rpc_deadline, ..Default::default() };
    tracing::info!(peer = name, url = %url, "reaching the {name} service over gRPC");
    Ok(Arc::new(rpc::client::Peer::new(name, url, tokens.clone(), opts)?))
}

fn services_of(
    settings: &Settings,
    services: &[ServiceName],
    (dbs, replicas): (&Databases, &Replicas),
    cache: &Arc<Cache>,
    tokens: &Arc<dyn rpc::client::TokenSource>,
) -> anyhow::Result<Wired> {
    use ServiceName::{Claim, Order, Supply, Wallet};
    let (assets, region) = (settings.assets.clone(), settings.region.clone());
    let runs = |s: ServiceName| services.contains(&s);
    let mut routes = OpenApiRouter::new();
    let mut grpc = tonic::service::Routes::default();
    let supplies = runs(Supply).then(|| {
        let s = supply::SupplyService::new(dbs.of(Supply), cache.clone(), assets.clone(), region.clone());
        Arc::new(match replicas.of(Supply) {
            Some((db, r)) => s.with_replica(db, r),
            None => s,
        })
    });
    let wallet = runs(Wallet).then(|| {
        let users = Arc::new(crate::adapters::Users(IdentityStore::new(dbs.identity.clone(), base::clock::system())));
        Arc::new(wallet::WalletService::new(dbs.of(Wallet), cache.clone(), users, assets.clone(), region.clone()))
    });
    // Order needs the wallet's funds; claim needs orders, supplies and (to process) settlement.
    let remote_wallet = |needed_by: &str| -> anyhow::Result<Arc<crate::remote::RemoteWallet>> {
        Ok(Arc::new(crate::remote::RemoteWallet(peer(settings, needed_by, Wallet, tokens)?)))
    };
    let orders = if runs(Order) {
        let funds: Arc<dyn order::service::Funds> = match &wallet {
            Some(w) => Arc::new(crate::adapters::Funds(w.clone())),
            None => remote_wallet("order")?,
        };
        let o = order::OrderService::new(dbs.of(Order), cache.clone(), funds, assets.clone(), region.clone());
        Some(Arc::new(match replicas.of(Order) {
            Some((db, r)) => o.with_replica(db, r),
            None => o,
        }))
    } else {
        None
    };
    if let Some(s) = &supplies {
        routes = routes.merge(supply::http::router(s.clone()));
        grpc = grpc.add_service(supply::grpc::server(s.clone()));
    }
    if let Some(o) = &orders {
        routes = routes.merge(order::http::router(o.clone()));
        grpc = grpc.add_service(order::grpc::server(o.clone()));
    }
    if let Some(w) = &wallet {
        routes = routes.merge(wallet::http::router(w.clone()));
        grpc = grpc.add_service(wallet::grpc::server(w.clone()));
    }
    // The chains, with the wallet whose ledger they credit (a bad chains file stops the start).
    let chains = match (&wallet, &settings.chains_file) {
        (Some(w), Some(path)) => Some(chain::Chains::load(path, &assets)?)
            .filter(|c| !c.is_empty())
            .map(|c| Arc::new(chain::ChainService::new(c, dbs.of(Wallet), assets.clone(), w.clone(), &region))),
        _ => None,
    };
    let mut watchers = Vec::new();
    let mut watchers_signers = Vec::new();
    if let Some(c) = &chains {
        tracing::info!(chains = ?c.chains(), "chain integration on");
        routes = routes.merge(chain::http::router(c.clone()));
        grpc = grpc.add_service(chain::grpc::server(c.clone()));
        if settings.run_consumers {
            watchers = c.watchers(settings.lease)?;
        }
        if let Some(key) = signer_key(settings)? {
            tracing::info!(address = %key.0.address(), "this process signs withdrawals");
            watchers_signers = c.signers(&key, settings.lease)?;
        }
    }
    // Writes by other instances (and regions) reach this instance's cache through the log; each
    // service declares which events make which of its keys stale.
    let mut rules = vec![supply::keys::INVALIDATION, order::keys::INVALIDATION, wallet::keys::INVALIDATION];
    rules.extend(claim::keys::INVALIDATION);
    let mut consumers: Vec<(Database, Arc<dyn EventHandler>)> =
        vec![(dbs.main.clone(), Arc::new(cache::Invalidator::new(cache.clone(), rules)))];
    if runs(Claim) {
        let order_port: Arc<dyn claim::ports::OrderClient> = match &orders {
            Some(o) => Arc::new(Orders(o.clone())),
            None => Arc::new(crate::remote::RemoteOrders(peer(settings, "claim", Order, tokens)?)),
        };
        let supply_port: Arc<dyn claim::ports::SupplyClient> = match &supplies {
            Some(s) => Arc::new(Supplies(s.clone())),
            None => Arc::new(crate::remote::RemoteSupplies(peer(settings, "claim", Supply, tokens)?)),
        };
        let claims = claim::ClaimService::new(
            dbs.of(Claim),
            cache.clone(),
            order_port.clone(),
            supply_port.clone(),
            assets,
            region,
        );
        let claims = Arc::new(match replicas.of(Claim) {
            Some((db, r)) => claims.with_replica(db, r),
            None => claims,
        });
        if settings.run_consumers {
            let settlement: Arc<dyn claim::ports::SettlementClient> = match &wallet {
                Some(w) => Arc::new(Settlement(w.clone())),
                None => remote_wallet("claim")?,
            };
            consumers.push((dbs.of(Claim).clone(), Arc::new(claims.processor(order_port, supply_port, settlement))));
        }
        routes = routes.merge(claim::http::router(claims.clone()));
        grpc = grpc.add_service(claim::grpc::server(claims));
    }
    // The reconciler makes the wallet's holds follow their orders: it runs with the wallet, reading
    // orders in process or over gRPC.
    let reconciler = match &wallet {
        Some(wallet) if settings.run_consumers => {
            let orders = match &orders {
                Some(o) => Some(crate::reconcile::Orders::Local(o.clone())),
                None if settings.order_grpc_url.is_some() => Some(crate::reconcile::Orders::Remote(Arc::new(
                    crate::remote::RemoteOrders(peer(settings, "wallet", Order, tokens)?),
                ))),
                None => {
                    tracing::warn!(
                        "holds are not reconciled with their orders in this process: set WALLETD_ORDER_GRPC_URL so the wallet's reconciler can read orders"
                    );
                    None
                }
            };
            orders.map(|orders| crate::reconcile::Reconciler {
                orders,
                wallet: wallet.clone(),
                region: settings.region.clone(),
                interval: settings.reconcile_interval,
                grace: settings.reconcile_grace,
            })
        }
        _ => None,
    };
    Ok(Wired { routes, grpc, consumers, reconciler, chains, watchers, signers: watchers_signers })
}

/// The per-principal and sign-in limits, shared through Redis when it is configured.
fn limiter(settings: &Settings) -> anyhow::Result<Arc<Limiter>> {
    let shared = match &settings.redis_url {
        Some(url) => {
            Some(Box::new(redis_backend::RedisLimiter::open(url, settings.redis_timeout).context("WALLETD_REDIS_URL")?)
                as Box<dyn ratelimit::SharedLimiter>)
        }
        None => None,
    };
    Ok(Limiter::new(settings.rate_limit, settings.signin_rate_limit, shared, settings.trusted_proxies.clone()))
}

/// The gRPC API: every service this process runs, behind the same token check, per-principal
/// limit and `idempotency-key` as REST (their refusals turned into gRPC statuses), plus health
/// checking and reflection, which need no token. Each call is logged and counted like a REST
/// request, and per RPC with its gRPC code.
async fn grpc_app(
    database: &Database,
    auth: Arc<AuthService>,
    limiter: Arc<Limiter>,
    breaker: Arc<web::breaker::DbBreaker>,
    services: tonic::service::Routes,
    names: &[ServiceName],
) -> anyhow::Result<Router> {
    // No body deadline here: reflection and health watching are streams whose request body stays open.
    let served: Vec<&str> = names.iter().map(|s| s.grpc_name()).collect();
    let (reflection_v1, reflection_v1alpha) = rpc::reflection()?;
    let routes =
        services.add_service(rpc::health(&served).await).add_service(reflection_v1).add_service(reflection_v1alpha);
    Ok(routes
        .prepare()
        .into_axum_router()
        .layer(from_fn_with_state(database.clone(), idempotency::layer))
        .layer(from_fn_with_state(limiter, ratelimit::per_principal))
        .layer(from_fn_with_state(auth, grpc_token))
        .layer(from_fn_with_state(breaker, web::breaker::layer))
        .layer(observe::catch_panic())
        .layer(axum::middleware::from_fn(rpc::problem_as_status))
        .layer(axum::middleware::from_fn(rpc::metered))
        .layer(axum::middleware::from_fn(observe::observe))
        .layer(PropagateRequestIdLayer::new(extract::X_REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(extract::X_REQUEST_ID.clone(), observe::RequestIds::new()))
        .layer(axum::middleware::from_fn(observe::drop_bad_request_id)))
}

/// The token check of REST, for every gRPC service but health checking and reflection.
async fn grpc_token(
    state: axum::extract::State<Arc<AuthService>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
        return next.run(req).await;
    }
    identity::require_token(state, req, next).await
}

/// The public and protected routes with their middleware, the OpenAPI document, health and the
/// request-wide layers.
fn http_app(
    settings: &Settings,
    (database, consistency): (&Database, Arc<web::consistency::Consistency>),
    cache: &Arc<Cache>,
    auth: Arc<AuthService>,
    limiter: Arc<Limiter>,
    breaker: Arc<web::breaker::DbBreaker>,
    (services, chains): (OpenApiRouter, Option<Arc<chain::ChainService>>),
) -> Router {
    // Layers wrap what is above them: the token is checked first, then the principal's limit, then
    // the Idempotency-Key.
    let protected = identity::http::protected_router(auth.clone())
        .merge(admin::router(database.clone(), settings.region.clone()))
        .merge(services)
        .layer(from_fn_with_state(database.clone(), idempotency::layer))
        .layer(from_fn_with_state(limiter.clone(), ratelimit::per_principal))
        .layer(from_fn_with_state(auth.clone(), identity::require_token));
    let public = identity::http::public_router(auth).layer(from_fn_with_state(limiter, ratelimit::per_ip));
    let (api, mut doc) =
        OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(public).merge(protected).split_for_parts();
    let api = api
        .layer(from_fn_with_state(consistency, web::consistency::layer))
        .layer(from_fn_with_state(breaker, web::breaker::layer));
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
    let mut readiness = health::Readiness::new(database.clone(), Arc::new(CacheStatus(cache.clone())));
    if let Some(c) = chains {
        readiness = readiness.with_detail("chains", c);
    }
    let health = health::router(readiness);
    // The operator console reads the REST API and health as any client does (in process).
    let console = match crate::console::router(api.clone().merge(health.clone())) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "the operator console is off");
            Router::new()
        }
    };
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .merge(health)
        .merge(console)
        .fallback(|| async { ApiError::not_found("route").into_response() })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(observe::catch_panic())
        .layer(from_fn_with_state(deadlines, deadline::deadlines))
        .layer(axum::middleware::from_fn(observe::observe))
        .layer(PropagateRequestIdLayer::new(extract::X_REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(extract::X_REQUEST_ID.clone(), observe::RequestIds::new()))
        .layer(axum::middleware::from_fn(observe::drop_bad_request_id))
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
