//! The one declaration of every setting: key, default, meaning, secrecy, parser and printer. Adding a
//! setting means adding a field to `Settings` and one entry to `SETTINGS`; nothing else lists them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{LogFormat, Settings};
use base::money::AssetRegistry;
use identity::eth::{parse_address, to_checksum};
use web::TrustedProxies;

/// A setting's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// Text that `Settings::default()` applies through the setting's own parser.
    Text(&'static str),
    /// Unset, and computed from other settings when read (`{data_dir}` stands for that setting).
    Derived(&'static str),
    /// Unset: the feature it turns on is off.
    None,
}

/// One setting. `WALLETD_` + the key in upper case is its environment variable; the key itself is its
/// name in the TOML file.
#[derive(Debug)]
pub struct Setting {
    /// Lower case, e.g. `http_addr`.
    pub key: &'static str,
    pub default: DefaultValue,
    /// One line for the README table (Markdown).
    pub meaning: &'static str,
    /// Shown through `mask_url`.
    pub secret: bool,
    /// Takes effect only with `kafka_brokers`: setting it turns Kafka on (and `validate` then demands
    /// brokers), and its default is applied when Kafka is turned on rather than by `Settings::default()`.
    pub with_kafka: bool,
    /// Stores a trimmed text value, or says why it cannot (the caller adds the setting's name).
    pub apply: fn(&mut Settings, &str) -> Result<(), String>,
    /// The current value as text (unmasked); `apply` accepts it back.
    pub show: fn(&Settings) -> String,
}

impl Setting {
    /// The environment variable: `WALLETD_HTTP_ADDR`.
    pub fn env_var(&self) -> String {
        env_var(self.key)
    }

    const fn secret(self) -> Self {
        Self { secret: true, ..self }
    }

    const fn with_kafka(self) -> Self {
        Self { with_kafka: true, ..self }
    }
}

pub(crate) fn env_var(key: &str) -> String {
    format!("WALLETD_{}", key.to_ascii_uppercase())
}

const fn setting(
    key: &'static str,
    default: DefaultValue,
    meaning: &'static str,
    apply: fn(&mut Settings, &str) -> Result<(), String>,
    show: fn(&Settings) -> String,
) -> Setting {
    Setting { key, default, meaning, secret: false, with_kafka: false, apply, show }
}

use DefaultValue::{Derived, None as Unset, Text};

/// Every setting, in the order `describe()` and the README list them. Each entry reads:
/// key, default, meaning; then how a text value is applied, and how the current value is shown.
#[rustfmt::skip]
pub static SETTINGS: &[Setting] = &[
    setting("http_addr", Text("127.0.0.1:8080"), "REST API",
        |s, v| addr(v).map(|a| s.http_addr = a), |s| s.http_addr.to_string()),
    setting("metrics_addr", Text("127.0.0.1:9464"), "Prometheus `/metrics`",
        |s, v| addr(v).map(|a| s.metrics_addr = a), |s| s.metrics_addr.to_string()),
    setting("grpc_addr", Text("127.0.0.1:50051"), "gRPC API (`walletd.v1`, health checking, reflection)",
        |s, v| addr(v).map(|a| s.grpc_addr = a), |s| s.grpc_addr.to_string()),
    setting("data_dir", Text("data"), "where the default database and signing key live",
        |s, v| text(v).map(|t| s.data_dir = PathBuf::from(t)), |s| s.data_dir.display().to_string()),
    setting("database_url", Derived("sqlite://{data_dir}/walletd.db"),
        "`sqlite://PATH` or `postgres://...`; multi-host URLs with `target_session_attrs=read-write` follow the primary through failover",
        |s, v| url(v, &["sqlite://", "postgres://", "postgresql://"]).map(|u| s.database_url = Some(u)),
        |s| s.database_url()).secret(),
    setting("supply_database_url", Derived("{database_url}"), "the supply service's own database (its tables, migrations and outbox)",
        |s, v| url(v, &["sqlite://", "postgres://", "postgresql://"]).map(|u| s.supply_database_url = Some(u)),
        |s| s.supply_database_url.clone().unwrap_or_else(|| s.database_url())).secret(),
    setting("order_database_url", Derived("{database_url}"), "the order service's own database",
        |s, v| url(v, &["sqlite://", "postgres://", "postgresql://"]).map(|u| s.order_database_url = Some(u)),
        |s| s.order_database_url.clone().unwrap_or_else(|| s.database_url())).secret(),
    setting("claim_database_url", Derived("{database_url}"), "the claim service's own database",
        |s, v| url(v, &["sqlite://", "postgres://", "postgresql://"]).map(|u| s.claim_database_url = Some(u)),
        |s| s.claim_database_url.clone().unwrap_or_else(|| s.database_url())).secret(),
    setting("wallet_database_url", Derived("{database_url}"), "the wallet service's own database",
        |s, v| url(v, &["sqlite://", "postgres://", "postgresql://"]).map(|u| s.wallet_database_url = Some(u)),
        |s| s.wallet_database_url.clone().unwrap_or_else(|| s.database_url())).secret(),
    setting("identity_database_url", Derived("{database_url}"), "users, sign-in nonces and refresh tokens: one database that every process of a deployment shares",
        |s, v| url(v, &["sqlite://", "postgres://", "postgresql://"]).map(|u| s.identity_database_url = Some(u)),
        |s| s.identity_database_url.clone().unwrap_or_else(|| s.database_url())).secret(),
    setting("read_database_url", Unset, "the region's streaming replica (`postgres://...`): plain reads of supplies, orders and claims go there, decisions and writes to the primary; reads sent with a write's `X-Consistency-Token` see that write",
        |s, v| url(v, &["postgres://", "postgresql://"]).map(|u| s.read_database_url = Some(u)),
        |s| s.read_database_url.clone().unwrap_or_default()).secret(),
    setting("supply_read_database_url", Derived("{read_database_url}"), "the supply service's read replica",
        |s, v| url(v, &["postgres://", "postgresql://"]).map(|u| s.supply_read_database_url = Some(u)),
        |s| s.supply_read_database_url.clone().or_else(|| s.read_database_url.clone()).unwrap_or_default()).secret(),
    setting("order_read_database_url", Derived("{read_database_url}"), "the order service's read replica",
        |s, v| url(v, &["postgres://", "postgresql://"]).map(|u| s.order_read_database_url = Some(u)),
        |s| s.order_read_database_url.clone().or_else(|| s.read_database_url.clone()).unwrap_or_default()).secret(),
    setting("claim_read_database_url", Derived("{read_database_url}"), "the claim service's read replica",
        |s, v| url(v, &["postgres://", "postgresql://"]).map(|u| s.claim_read_database_url = Some(u)),
        |s| s.claim_read_database_url.clone().or_else(|| s.read_database_url.clone()).unwrap_or_default()).secret(),
    setting("read_wait_ms", Text("250"), "how long a read with a consistency token waits for the replica to replay that write before it reads the primary",
        |s, v| within(v, 0, 10_000, "must be 0 to 10000").map(|n: u64| s.read_wait = Duration::from_millis(n)),
        |s| s.read_wait.as_millis().to_string()),
    setting("supply_grpc_url", Unset, "where the supply service answers gRPC (`http://host:port`, plaintext: a private network) when this process does not run it",
        |s, v| url(v, &["http://"]).map(|u| s.supply_grpc_url = Some(u)), |s| s.supply_grpc_url.clone().unwrap_or_default()),
    setting("order_grpc_url", Unset, "where the order service answers gRPC when this process does not run it",
        |s, v| url(v, &["http://"]).map(|u| s.order_grpc_url = Some(u)), |s| s.order_grpc_url.clone().unwrap_or_default()),
    setting("wallet_grpc_url", Unset, "where the wallet service answers gRPC when this process does not run it",
        |s, v| url(v, &["http://"]).map(|u| s.wallet_grpc_url = Some(u)), |s| s.wallet_grpc_url.clone().unwrap_or_default()),
    setting("rpc_deadline_ms", Text("5000"), "deadline of every call to another service over gRPC (idempotent calls retry within 3 attempts; 5 failures in a row open the circuit for 2 s)",
        |s, v| millis(v).map(|d| s.rpc_deadline = d), |s| s.rpc_deadline.as_millis().to_string()),
    setting("database_pool_size", Text("16"), "PostgreSQL pool size",
        |s, v| within(v, 1, 1000, "must be from 1 to 1000").map(|n| s.database_pool_size = n),
        |s| s.database_pool_size.to_string()),
    setting("database_statement_timeout_ms", Text("5000"), "PostgreSQL `statement_timeout`",
        |s, v| millis(v).map(|d| s.database_statement_timeout = d),
        |s| s.database_statement_timeout.as_millis().to_string()),
    setting("migrate_on_start", Text("true"), "apply migrations at start",
        |s, v| boolean(v).map(|b| s.migrate_on_start = b), |s| s.migrate_on_start.to_string()),
    setting("region", Text("local"), "stamped on every event",
        |s, v| text(v).map(|t| s.region = t), |s| s.region.clone()),
    setting("jwt_private_key_file", Derived("{data_dir}/jwt-signing-key.pem"),
        "PKCS#8 PEM RSA key; generated (mode 0600) if absent",
        |s, v| text(v).map(|t| s.jwt_private_key_file = Some(PathBuf::from(t))),
        |s| s.jwt_key_path().display().to_string()),
    setting("jwt_published_key_files", Unset,
        "comma-separated PEM files (public or private RSA keys) also published in the JWKS and accepted, never signed with: a rotation's next key, then the retired one (docs/operations.md)",
        |s, v| paths(v).map(|p| s.jwt_published_key_files = p),
        |s| s.jwt_published_key_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")),
    setting("jwt_issuer", Text("walletd"), "`iss` of access tokens",
        |s, v| text(v).map(|t| s.jwt_issuer = t), |s| s.jwt_issuer.clone()),
    setting("access_token_ttl_secs", Text("900"), "access-token lifetime",
        |s, v| positive_secs(v).map(|d| s.access_token_ttl = d), |s| s.access_token_ttl.as_secs().to_string()),
    setting("refresh_token_ttl_secs", Text("2592000"), "refresh-token lifetime",
        |s, v| positive_secs(v).map(|d| s.refresh_token_ttl = d), |s| s.refresh_token_ttl.as_secs().to_string()),
    setting("session_max_secs", Text("2592000"),
        "a session's lifetime from sign-in, however often its refresh token rotates (1 to 31536000)",
        |s, v| within(v, 1, 31_536_000, "must be 1 to 31536000").map(|n: u64| s.session_max = Duration::from_secs(n)),
        |s| s.session_max.as_secs().to_string()),
    setting("admin_addresses", Unset, "comma-separated addresses given the admin role (checked on every request, whatever a token says)",
        |s, v| addresses(v).map(|a| s.admin_addresses = a), |s| s.admin_addresses.join(",")),
    setting("siwe_domain", Text("localhost:8080"), "EIP-4361 domain sign-in messages must carry",
        |s, v| text(v).map(|t| s.siwe_domain = t), |s| s.siwe_domain.clone()),
    setting("siwe_uri", Text("http://localhost:8080"), "EIP-4361 URI",
        |s, v| text(v).map(|t| s.siwe_uri = t), |s| s.siwe_uri.clone()),
    setting("siwe_chain_id", Text("1"), "EIP-155 chain id",
        |s, v| number(v).map(|n| s.siwe_chain_id = n), |s| s.siwe_chain_id.to_string()),
    setting("nonce_ttl_secs", Text("300"), "how long a sign-in nonce (and its message) is valid",
        |s, v| positive_secs(v).map(|d| s.nonce_ttl = d), |s| s.nonce_ttl.as_secs().to_string()),
    setting("assets", Text("BTC:8,ETH:18,USDC:6,USDT:6,SOL:9"), "accepted assets and their decimals",
        |s, v| AssetRegistry::parse(v).map(|a| s.assets = a), |s| s.assets.spec()),
    setting("chains_file", Unset, "TOML file of the EVM chains deposits and withdrawals use, with their assets (README, \"Chains\"); unset: no chain integration",
        |s, v| text(v).map(|t| s.chains_file = Some(PathBuf::from(t))),
        |s| s.chains_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
    setting("chain_signer_key_file", Unset, "file (mode 0600 or 0400) holding the hot wallet's private key in hex: the process that has a key runs the withdrawal signer (one per chain at a time, under a lease)",
        |s, v| text(v).map(|t| s.chain_signer_key_file = Some(PathBuf::from(t))),
        |s| s.chain_signer_key_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
    setting("chain_signer_key", Unset, "the same key in the environment, when no file is set",
        |s, v| text(v).map(|t| s.chain_signer_key = Some(crate::Redacted(t))),
        |s| s.chain_signer_key.as_ref().map(|k| k.0.clone()).unwrap_or_default()).secret(),
    setting("otlp_endpoint", Unset,
        "OpenTelemetry: the OTLP/HTTP endpoint spans are exported to (`http://collector:4318`; `/v1/traces` is added); unset: no tracing",
        |s, v| url(v, &["http://", "https://"]).map(|u| s.otlp_endpoint = Some(u)), |s| s.otlp_endpoint.clone().unwrap_or_default()),
    setting("log_format", Text("auto"), "`auto` (JSON unless a terminal), `json`, `text`",
        |s, v| log_format(v).map(|f| s.log_format = f), |s| s.log_format.as_str().to_string()),
    setting("shutdown_timeout_secs", Text("20"), "how long SIGTERM waits for in-flight requests and the event in hand",
        |s, v| secs(v).map(|d| s.shutdown_timeout = d), |s| s.shutdown_timeout.as_secs().to_string()),
    setting("http_header_timeout_ms", Text("10000"),
        "how long a connection may take to send a request's headers, or sit idle between requests, before it is closed (1 to 600000)",
        |s, v| timeout_ms(v).map(|d| s.http_header_timeout = d),
        |s| s.http_header_timeout.as_millis().to_string()),
    setting("http_body_timeout_ms", Text("10000"),
        "how long a request's body may take to arrive; later is 408 `REQUEST_TIMEOUT` (1 to 600000)",
        |s, v| timeout_ms(v).map(|d| s.http_body_timeout = d),
        |s| s.http_body_timeout.as_millis().to_string()),
    setting("http_request_timeout_ms", Text("30000"),
        "how long a request may take in all; later is 503 `UNAVAILABLE` with `Retry-After` (1 to 600000)",
        |s, v| timeout_ms(v).map(|d| s.http_request_timeout = d),
        |s| s.http_request_timeout.as_millis().to_string()),
    setting("http_max_connections", Text("1024"),
        "open HTTP connections at once; one more is answered 503 `UNAVAILABLE` with `Retry-After` and closed (keep it below `ulimit -n`)",
        |s, v| within(v, 1, 1_000_000, "must be 1 to 1000000").map(|n| s.http_max_connections = n),
        |s| s.http_max_connections.to_string()),
    setting("cleanup_interval_secs", Text("300"),
        "how often expired nonces, sessions and idempotency keys and old inbox rows are deleted (1 to 86400)",
        |s, v| within(v, 1, 86_400, "must be 1 to 86400").map(|n: u64| s.cleanup_interval = Duration::from_secs(n)),
        |s| s.cleanup_interval.as_secs().to_string()),
    setting("inbox_retention_secs", Text("604800"),
        "how long a consumer remembers the ids of events it handled (redeliveries within it are skipped)",
        |s, v| within(v, 1, u64::MAX, "must be > 0").map(|n: u64| s.inbox_retention = Duration::from_secs(n)),
        |s| s.inbox_retention.as_secs().to_string()),
    setting("reconcile_interval_secs", Text("30"),
        "how often orders and their wallet holds are reconciled (a crash between the two steps is repaired) (1 to 86400)",
        |s, v| within(v, 1, 86_400, "must be 1 to 86400").map(|n: u64| s.reconcile_interval = Duration::from_secs(n)),
        |s| s.reconcile_interval.as_secs().to_string()),
    setting("reconcile_grace_secs", Text("60"),
        "how old a pending hold must be before the reconciler judges it; keep it above the request timeout (1 to 86400)",
        |s, v| within(v, 1, 86_400, "must be 1 to 86400").map(|n: u64| s.reconcile_grace = Duration::from_secs(n)),
        |s| s.reconcile_grace.as_secs().to_string()),
    setting("run_consumers", Text("true"), "run claim processing in this process (`false` for API-only instances)",
        |s, v| boolean(v).map(|b| s.run_consumers = b), |s| s.run_consumers.to_string()),
    setting("event_max_attempts", Text("5"),
        "attempts at an event before it is parked (and, over Kafka, copied to `<topic>.dlq`)",
        |s, v| within(v, 1, 100, "must be 1 to 100").map(|n| s.event_max_attempts = n),
        |s| s.event_max_attempts.to_string()),
    // Capped rather than refused, as before: a longer first delay is never useful.
    setting("event_retry_backoff_ms", Text("50"), "first retry delay; doubles per attempt, up to `WALLETD_EVENT_RETRY_BACKOFF_MAX_MS`",
        |s, v| number(v).map(|n| s.event_retry_backoff = Duration::from_millis(n.min(60_000))),
        |s| s.event_retry_backoff.as_millis().to_string()),
    setting("event_retry_backoff_max_ms", Text("30000"), "the longest wait between two attempts at an event (1 to 3600000)",
        |s, v| within(v, 1, 3_600_000, "must be 1 to 3600000").map(|n: u64| s.event_retry_backoff_max = Duration::from_millis(n)),
        |s| s.event_retry_backoff_max.as_millis().to_string()),
    setting("lease_secs", Text("10"),
        "how long a process that stopped renewing keeps a lease (the relay's, each embedded consumer group's) before another takes over",
        |s, v| positive_secs(v).map(|d| s.lease = d), |s| s.lease.as_secs().to_string()),
    setting("run_relay", Text("true"),
        "with Kafka, run the outbox relay inside `walletd serve` (`false` when `walletd relay` runs alone)",
        |s, v| boolean(v).map(|b| s.run_relay = b), |s| s.run_relay.to_string()),
    setting("redis_url", Unset,
        "`redis://host:port/db`: the cache and shared rate limits; in-process without it",
        |s, v| url(v, &["redis://", "rediss://"]).map(|u| s.redis_url = Some(u)),
        |s| s.redis_url.clone().unwrap_or_default()).secret(),
    setting("redis_timeout_ms", Text("100"), "timeout of every Redis call",
        |s, v| within(v, 1, u64::MAX, "must be > 0").map(|n| s.redis_timeout = Duration::from_millis(n)),
        |s| s.redis_timeout.as_millis().to_string()),
    setting("cache_enabled", Text("true"), "`false` sends every read to the database",
        |s, v| boolean(v).map(|b| s.cache_enabled = b), |s| s.cache_enabled.to_string()),
    setting("cache_capacity", Text("100000"), "entries of the in-process cache",
        |s, v| number(v).map(|n| s.cache_capacity = n), |s| s.cache_capacity.to_string()),
    setting("rate_limit_per_minute", Text("3000"), "requests per minute per principal on `/v1` (0 turns it off)",
        |s, v| within(v, 0, MAX_RATE, "too large").map(|n| s.rate_limit.per_minute = n),
        |s| s.rate_limit.per_minute.to_string()),
    setting("rate_limit_burst", Text("300"), "requests a principal may send at once on `/v1`",
        |s, v| within(v, 1, MAX_RATE, ONE_OR_MORE).map(|n| s.rate_limit.burst = n),
        |s| s.rate_limit.burst.to_string()),
    setting("signin_rate_limit_per_minute", Text("120"),
        "requests per minute per client address on `/v1/auth/*` (0 turns it off)",
        |s, v| within(v, 0, MAX_RATE, "too large").map(|n| s.signin_rate_limit.per_minute = n),
        |s| s.signin_rate_limit.per_minute.to_string()),
    setting("signin_rate_limit_burst", Text("60"), "requests a client address may send at once on `/v1/auth/*`",
        |s, v| within(v, 1, MAX_RATE, ONE_OR_MORE).map(|n| s.signin_rate_limit.burst = n),
        |s| s.signin_rate_limit.burst.to_string()),
    setting("trusted_proxies", Unset,
        "CIDR blocks of load balancers (`10.0.0.0/8,192.168.1.7`): behind them the client is the nearest untrusted address in `X-Forwarded-For`",
        |s, v| TrustedProxies::parse(v).map(|t| s.trusted_proxies = t), |s| s.trusted_proxies.to_string()),
    setting("kafka_brokers", Unset, "Kafka bootstrap servers; the embedded event log without it",
        |s, v| brokers(v).map(|b| s.kafka_mut().brokers = b),
        |s| s.kafka.as_ref().map(|k| k.brokers.clone()).unwrap_or_default()),
    setting("kafka_partitions", Text("3"), "partitions of the topics walletd creates",
        |s, v| within(v, 1, u64::MAX, ONE_OR_MORE).map(|n| s.kafka_mut().partitions = n),
        |s| s.kafka.as_ref().map(|k| k.partitions.to_string()).unwrap_or_default()).with_kafka(),
    setting("kafka_replication", Text("1"), "replication factor of the topics walletd creates",
        |s, v| within(v, 1, u64::MAX, ONE_OR_MORE).map(|n| s.kafka_mut().replication = n),
        |s| s.kafka.as_ref().map(|k| k.replication.to_string()).unwrap_or_default()).with_kafka(),
    setting("kafka_compression", Text("lz4"), "`none`, `gzip`, `snappy`, `lz4`, `zstd`",
        |s, v| compression(v).map(|c| s.kafka_mut().compression = c),
        |s| s.kafka.as_ref().map(|k| k.compression.clone()).unwrap_or_default()).with_kafka(),
    setting("kafka_group_prefix", Text("walletd"),
        "consumer groups are `{prefix}.{group}` (one prefix per deployment)",
        |s, v| text(v).map(|t| s.kafka_mut().group_prefix = t),
        |s| s.kafka.as_ref().map(|k| k.group_prefix.clone()).unwrap_or_default()).with_kafka(),
    setting("kafka_fetch_wait_ms", Text("50"),
        "the longest a consumer's fetch waits at the broker for new events; a broker that holds every fetch for this long (tansu does) adds up to it to each hop",
        |s, v| within(v, 1, 10_000, ONE_OR_MORE).map(|n| s.kafka_mut().fetch_wait_ms = n),
        |s| s.kafka.as_ref().map(|k| k.fetch_wait_ms.to_string()).unwrap_or_default()).with_kafka(),
];

// The parsers: the rules and messages of every setting, shared where settings share a rule.

const MAX_RATE: u64 = 1_000_000;
const ONE_OR_MORE: &str = "must be 1 or more";

fn addr(v: &str) -> Result<SocketAddr, String> {
    v.parse().map_err(|_| format!("`{v}` is not a HOST:PORT socket address"))
}

fn number(v: &str) -> Result<u64, String> {
    v.parse().map_err(|_| format!("`{v}` is not a non-negative integer"))
}

/// A number from `low` to `high` that fits `T`; `reason` otherwise.
fn within<T: TryFrom<u64>>(v: &str, low: u64, high: u64, reason: &str) -> Result<T, String> {
    let n = number(v)?;
    T::try_from(n).ok().filter(|_| (low..=high).contains(&n)).ok_or_else(|| reason.to_string())
}

fn secs(v: &str) -> Result<Duration, String> {
    number(v).map(Duration::from_secs)
}

fn positive_secs(v: &str) -> Result<Duration, String> {
    within(v, 1, u64::MAX, "must be > 0").map(Duration::from_secs)
}

fn millis(v: &str) -> Result<Duration, String> {
    number(v).map(Duration::from_millis)
}

/// An HTTP timeout: 1 ms to 10 minutes.
fn timeout_ms(v: &str) -> Result<Duration, String> {
    within(v, 1, 600_000, "must be 1 to 600000").map(Duration::from_millis)
}

fn text(v: &str) -> Result<String, String> {
    if v.is_empty() { Err("must not be empty".into()) } else { Ok(v.to_string()) }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("`{v}` is not true or false")),
    }
}

fn url(v: &str, schemes: &[&str]) -> Result<String, String> {
    if schemes.iter().any(|s| v.starts_with(s)) {
        Ok(v.to_string())
    } else {
        Err(format!("must start with {}", or_list(schemes)))
    }
}

/// `a, b or c`, for messages.
fn or_list(items: &[&str]) -> String {
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => items.concat(),
    }
}

fn paths(v: &str) -> Result<Vec<PathBuf>, String> {
    Ok(v.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect())
}

fn addresses(v: &str) -> Result<Vec<String>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| parse_address(a).map(|p| to_checksum(&p)).map_err(|e| format!("`{a}`: {e}")))
        .collect()
}

fn log_format(v: &str) -> Result<LogFormat, String> {
    match v {
        "auto" => Ok(LogFormat::Auto),
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err("must be auto, json or text".into()),
    }
}

fn brokers(v: &str) -> Result<String, String> {
    let list = text(v)?;
    if list.split(',').any(|b| !b.trim().contains(':')) {
        return Err("must be HOST:PORT[,HOST:PORT...]".into());
    }
    Ok(list)
}

fn compression(v: &str) -> Result<String, String> {
    const CODECS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];
    if CODECS.contains(&v) { Ok(v.to_string()) } else { Err(format!("must be {}", or_list(CODECS))) }
}
