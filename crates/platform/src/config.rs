//! Settings (DESIGN D9): defaults that need no infrastructure, overridden by an optional TOML
//! file and then by `WALLETD_*` environment variables. A bad value names its setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::db::{DbOptions, mask_url};
use crate::money::AssetRegistry;

/// The effective configuration of one process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; defaults to `sqlite://{data_dir}/walletd.db`.
    pub database_url: Option<String>,
    pub database_pool_size: usize,
    pub database_statement_timeout: Duration,
    pub migrate_on_start: bool,
    pub region: String,
    /// PKCS#8 PEM RSA key; defaults to `{data_dir}/jwt-signing-key.pem`, generated on first start.
    pub jwt_private_key_file: Option<PathBuf>,
    pub jwt_issuer: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Addresses (any case) that sign in with the `admin` role.
    pub admin_addresses: Vec<String>,
    /// EIP-4361 domain, URI and chain id that sign-in messages must carry.
    pub siwe_domain: String,
    pub siwe_uri: String,
    pub siwe_chain_id: u64,
    pub nonce_ttl: Duration,
    pub assets: AssetRegistry,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    /// Run the event consumers (claim processing) in this process.
    pub run_consumers: bool,
    /// Run the outbox relay to Kafka in `walletd serve` (when Kafka is set); `false` when it runs
    /// alone as `walletd relay`.
    pub run_relay: bool,
    /// Attempts at an event before it is parked (and, over Kafka, dead-lettered).
    pub event_max_attempts: u32,
    /// The first retry's delay; it doubles per attempt.
    pub event_retry_backoff: Duration,
    /// How long a lease (the relay's, an embedded consumer group's) lasts without renewal: a process
    /// that died blocks its job for at most this long.
    pub lease: Duration,
    /// Redis for the cache (and shared rate limits); the in-process cache when unset.
    pub redis_url: Option<String>,
    pub redis_timeout: Duration,
    /// Entries of the in-process cache.
    pub cache_capacity: u64,
    /// `false` sends every read to the database.
    pub cache_enabled: bool,
    /// Per principal on `/v1` (0 turns it off).
    pub rate_limit: crate::ratelimit::Rate,
    /// Per client IP on sign-in (0 turns it off).
    pub signin_rate_limit: crate::ratelimit::Rate,
    /// Load balancers whose `X-Forwarded-For` names the client (for per-client limits).
    pub trusted_proxies: crate::http::TrustedProxies,
    /// Kafka: the outbox is published there when set; the embedded log stays the default.
    pub kafka: Option<crate::kafka::KafkaSettings>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON unless stderr is a terminal.
    Auto,
    Json,
    Text,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            database_pool_size: 16,
            database_statement_timeout: Duration::from_secs(5),
            migrate_on_start: true,
            region: "local".into(),
            jwt_private_key_file: None,
            jwt_issuer: "walletd".into(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            admin_addresses: Vec::new(),
            siwe_domain: "localhost:8080".into(),
            siwe_uri: "http://localhost:8080".into(),
            siwe_chain_id: 1,
            nonce_ttl: Duration::from_secs(300),
            assets: AssetRegistry::default(),
            log_format: LogFormat::Auto,
            shutdown_timeout: Duration::from_secs(20),
            run_consumers: true,
            run_relay: true,
            event_max_attempts: 5,
            event_retry_backoff: Duration::from_millis(50),
            lease: Duration::from_secs(10),
            redis_url: None,
            redis_timeout: Duration::from_millis(100),
            cache_capacity: 100_000,
            cache_enabled: true,
            rate_limit: crate::ratelimit::Rate { per_minute: 3000, burst: 300 },
            signin_rate_limit: crate::ratelimit::Rate { per_minute: 120, burst: 60 },
            trusted_proxies: crate::http::TrustedProxies::default(),
            kafka: None,
        }
    }
}

/// A setting that could not be used; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
    #[error("cannot read configuration file {path}: {reason}")]
    File { path: String, reason: String },
}

/// Every setting, by its key (`WALLETD_` + upper case in the environment).
pub const KEYS: &[&str] = &[
    "http_addr",
    "metrics_addr",
    "grpc_addr",
    "data_dir",
    "database_url",
    "database_pool_size",
    "database_statement_timeout_ms",
    "migrate_on_start",
    "region",
    "jwt_private_key_file",
    "jwt_issuer",
    "access_token_ttl_secs",
    "refresh_token_ttl_secs",
    "admin_addresses",
    "siwe_domain",
    "siwe_uri",
    "siwe_chain_id",
    "nonce_ttl_secs",
    "assets",
    "log_format",
    "shutdown_timeout_secs",
    "run_consumers",
    "run_relay",
    "event_max_attempts",
    "event_retry_backoff_ms",
    "lease_secs",
    "redis_url",
    "redis_timeout_ms",
    "cache_capacity",
    "cache_enabled",
    "rate_limit_per_minute",
    "rate_limit_burst",
    "signin_rate_limit_per_minute",
    "signin_rate_limit_burst",
    "trusted_proxies",
    "kafka_brokers",
    "kafka_partitions",
    "kafka_replication",
    "kafka_compression",
    "kafka_group_prefix",
];

impl Settings {
    /// Defaults, then the TOML file (if any), then `WALLETD_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml).required(true));
        }
        builder = builder.add_source(config::Environment::with_prefix("WALLETD"));
        let cfg = builder.build().map_err(|e| SettingsError::File {
            path: file.map(|p| p.display().to_string()).unwrap_or_else(|| "(environment)".into()),
            reason: e.to_string(),
        })?;
        let mut settings = Self::default();
        for key in KEYS {
            let value = match cfg.get_string(key) {
                Ok(v) => v,
                Err(_) => match cfg.get_array(key) {
                    Ok(items) => items.into_iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","),
                    Err(_) => continue,
                },
            };
            settings.set(key, &value)?;
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Sets one setting from its text form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingsError> {
        let invalid =
            |reason: String| SettingsError::Invalid { setting: format!("WALLETD_{}", key.to_uppercase()), reason };
        let value = value.trim();
        let addr =
            |v: &str| v.parse::<SocketAddr>().map_err(|_| invalid(format!("`{v}` is not a HOST:PORT socket address")));
        let number = |v: &str| v.parse::<u64>().map_err(|_| invalid(format!("`{v}` is not a non-negative integer")));
        let non_empty = |v: &str| {
            if v.is_empty() { Err(invalid("must not be empty".into())) } else { Ok(v.to_string()) }
        };
        match key {
            "http_addr" => self.http_addr = addr(value)?,
            "metrics_addr" => self.metrics_addr = addr(value)?,
            "grpc_addr" => self.grpc_addr = addr(value)?,
            "data_dir" => self.data_dir = PathBuf::from(non_empty(value)?),
            "database_url" => {
                if !(value.starts_with("sqlite://")
                    || value.starts_with("postgres://")
                    || value.starts_with("postgresql://"))
                {
                    return Err(invalid("must start with sqlite://, postgres:// or postgresql://".into()));
                }
                self.database_url = Some(value.to_string());
            }
            "database_pool_size" => {
                self.database_pool_size = usize::try_from(number(value)?)
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| invalid("must be from 1 to 1000".into()))?;
            }
            "database_statement_timeout_ms" => self.database_statement_timeout = Duration::from_millis(number(value)?),
            "migrate_on_start" => {
                self.migrate_on_start =
                    boolean(value).ok_or_else(|| invalid(format!("`{value}` is not true or false")))?
            }
            "redis_url" => {
                if !(value.starts_with("redis://") || value.starts_with("rediss://")) {
                    return Err(invalid("must start with redis:// or rediss://".into()));
                }
                self.redis_url = Some(value.to_string());
            }
            "redis_timeout_ms" => {
                self.redis_timeout = Some(number(value)?)
                    .filter(|n| *n > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| invalid("must be > 0".into()))?
            }
            "cache_capacity" => self.cache_capacity = number(value)?,
            "cache_enabled" => {
                self.cache_enabled = boolean(value).ok_or_else(|| invalid(format!("`{value}` is not true or false")))?
            }
            "rate_limit_per_minute" => {
                self.rate_limit.per_minute = small(number(value)?).ok_or_else(|| invalid("too large".into()))?
            }
            "rate_limit_burst" => {
                self.rate_limit.burst =
                    small(number(value)?).filter(|b| *b > 0).ok_or_else(|| invalid("must be 1 or more".into()))?
            }
            "signin_rate_limit_per_minute" => {
                self.signin_rate_limit.per_minute = small(number(value)?).ok_or_else(|| invalid("too large".into()))?
            }
            "signin_rate_limit_burst" => {
                self.signin_rate_limit.burst =
                    small(number(value)?).filter(|b| *b > 0).ok_or_else(|| invalid("must be 1 or more".into()))?
            }
            "trusted_proxies" => self.trusted_proxies = crate::http::TrustedProxies::parse(value).map_err(invalid)?,
            "kafka_brokers" => {
                let brokers = non_empty(value)?;
                if brokers.split(',').any(|b| !b.trim().contains(':')) {
                    return Err(invalid("must be HOST:PORT[,HOST:PORT...]".into()));
                }
                self.kafka_mut().brokers = brokers;
            }
            "kafka_partitions" => {
                self.kafka_mut().partitions = i32::try_from(number(value)?)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("must be 1 or more".into()))?
            }
            "kafka_replication" => {
                self.kafka_mut().replication = i32::try_from(number(value)?)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("must be 1 or more".into()))?
            }
            "kafka_compression" => {
                if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&value) {
                    return Err(invalid("must be none, gzip, snappy, lz4 or zstd".into()));
                }
                self.kafka_mut().compression = value.to_string();
            }
            "kafka_group_prefix" => self.kafka_mut().group_prefix = non_empty(value)?,
            "run_consumers" => {
                self.run_consumers = boolean(value).ok_or_else(|| invalid(format!("`{value}` is not true or false")))?
            }
            "run_relay" => {
                self.run_relay = boolean(value).ok_or_else(|| invalid(format!("`{value}` is not true or false")))?
            }
            "event_max_attempts" => {
                self.event_max_attempts = u32::try_from(number(value)?)
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| invalid("must be 1 to 100".into()))?
            }
            "lease_secs" => self.lease = positive_secs(number(value)?).ok_or_else(|| invalid("must be > 0".into()))?,
            "event_retry_backoff_ms" => {
                self.event_retry_backoff = Duration::from_millis(number(value)?.min(60_000));
            }
            "region" => self.region = non_empty(value)?,
            "jwt_private_key_file" => self.jwt_private_key_file = Some(PathBuf::from(non_empty(value)?)),
            "jwt_issuer" => self.jwt_issuer = non_empty(value)?,
            "access_token_ttl_secs" => {
                self.access_token_ttl = positive_secs(number(value)?).ok_or_else(|| invalid("must be > 0".into()))?
            }
            "refresh_token_ttl_secs" => {
                self.refresh_token_ttl = positive_secs(number(value)?).ok_or_else(|| invalid("must be > 0".into()))?
            }
            "admin_addresses" => {
                let mut out = Vec::new();
                for a in value.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                    let parsed = crate::auth::eth::parse_address(a).map_err(|e| invalid(format!("`{a}`: {e}")))?;
                    out.push(crate::auth::eth::to_checksum(&parsed));
                }
                self.admin_addresses = out;
            }
            "siwe_domain" => self.siwe_domain = non_empty(value)?,
            "siwe_uri" => self.siwe_uri = non_empty(value)?,
            "siwe_chain_id" => self.siwe_chain_id = number(value)?,
            "nonce_ttl_secs" => {
                self.nonce_ttl = positive_secs(number(value)?).ok_or_else(|| invalid("must be > 0".into()))?
            }
            "assets" => self.assets = AssetRegistry::parse(value).map_err(invalid)?,
            "log_format" => {
                self.log_format = match value {
                    "auto" => LogFormat::Auto,
                    "json" => LogFormat::Json,
                    "text" => LogFormat::Text,
                    _ => return Err(invalid("must be auto, json or text".into())),
                }
            }
            "shutdown_timeout_secs" => self.shutdown_timeout = Duration::from_secs(number(value)?),
            _ => return Err(invalid("unknown setting".into())),
        }
        Ok(())
    }

    fn kafka_mut(&mut self) -> &mut crate::kafka::KafkaSettings {
        self.kafka.get_or_insert_with(|| crate::kafka::KafkaSettings {
            brokers: String::new(),
            partitions: 3,
            replication: 1,
            compression: "lz4".into(),
            group_prefix: "walletd".into(),
        })
    }

    /// Checks that belong to several settings at once.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.kafka.as_ref().is_some_and(|k| k.brokers.is_empty()) {
            return Err(SettingsError::Invalid {
                setting: "WALLETD_KAFKA_BROKERS".into(),
                reason: "must be set when other WALLETD_KAFKA_* settings are".into(),
            });
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("walletd.db").display()))
    }

    pub fn jwt_key_path(&self) -> PathBuf {
        self.jwt_private_key_file.clone().unwrap_or_else(|| self.data_dir.join("jwt-signing-key.pem"))
    }

    pub fn db_options(&self) -> DbOptions {
        DbOptions {
            pool_size: self.database_pool_size,
            statement_timeout: self.database_statement_timeout,
            ..DbOptions::default()
        }
    }

    /// The effective settings as printable pairs, secrets masked.
    pub fn describe(&self) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = vec![
            ("http_addr", self.http_addr.to_string()),
            ("metrics_addr", self.metrics_addr.to_string()),
            ("grpc_addr", self.grpc_addr.to_string()),
            ("data_dir", self.data_dir.display().to_string()),
            ("database_url", mask_url(&self.database_url())),
            ("database_pool_size", self.database_pool_size.to_string()),
            ("database_statement_timeout_ms", self.database_statement_timeout.as_millis().to_string()),
            ("migrate_on_start", self.migrate_on_start.to_string()),
            ("region", self.region.clone()),
            ("jwt_private_key_file", self.jwt_key_path().display().to_string()),
            ("jwt_issuer", self.jwt_issuer.clone()),
            ("access_token_ttl_secs", self.access_token_ttl.as_secs().to_string()),
            ("refresh_token_ttl_secs", self.refresh_token_ttl.as_secs().to_string()),
            ("admin_addresses", self.admin_addresses.join(",")),
            ("siwe_domain", self.siwe_domain.clone()),
            ("siwe_uri", self.siwe_uri.clone()),
            ("siwe_chain_id", self.siwe_chain_id.to_string()),
            ("nonce_ttl_secs", self.nonce_ttl.as_secs().to_string()),
            ("assets", self.assets.spec()),
            ("log_format", format!("{:?}", self.log_format).to_lowercase()),
            ("shutdown_timeout_secs", self.shutdown_timeout.as_secs().to_string()),
            ("run_consumers", self.run_consumers.to_string()),
            ("run_relay", self.run_relay.to_string()),
            ("event_max_attempts", self.event_max_attempts.to_string()),
            ("event_retry_backoff_ms", self.event_retry_backoff.as_millis().to_string()),
            ("lease_secs", self.lease.as_secs().to_string()),
            ("redis_url", self.redis_url.as_deref().map(mask_url).unwrap_or_default()),
            ("redis_timeout_ms", self.redis_timeout.as_millis().to_string()),
            ("cache_capacity", self.cache_capacity.to_string()),
            ("cache_enabled", self.cache_enabled.to_string()),
            ("rate_limit_per_minute", self.rate_limit.per_minute.to_string()),
            ("rate_limit_burst", self.rate_limit.burst.to_string()),
            ("signin_rate_limit_per_minute", self.signin_rate_limit.per_minute.to_string()),
            ("signin_rate_limit_burst", self.signin_rate_limit.burst.to_string()),
            ("trusted_proxies", self.trusted_proxies.to_string()),
            ("kafka_brokers", self.kafka.as_ref().map(|k| k.brokers.clone()).unwrap_or_default()),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

fn small(n: u64) -> Option<u32> {
    u32::try_from(n).ok().filter(|n| *n <= 1_000_000)
}

fn boolean(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn positive_secs(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_setting() {
        let mut s = Settings::default();
        let err = s.set("http_addr", "nope").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("WALLETD_HTTP_ADDR"), "{err}");
        let err = s.set("database_url", "mysql://x").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("WALLETD_DATABASE_URL"), "{err}");
        let err = s.set("admin_addresses", "0x12").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("WALLETD_ADMIN_ADDRESSES"), "{err}");
        assert!(s.set("assets", "ETH:99").is_err());
    }

    #[test]
    fn describe_masks_the_database_password() {
        let mut s = Settings::default();
        assert!(s.set("database_url", "postgres://walletd:s3cret@db/walletd").is_ok());
        let d = s.describe();
        assert!(d.iter().all(|(_, v)| !v.contains("s3cret")));
    }
}
