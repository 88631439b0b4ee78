//! Settings (DESIGN D9): defaults that need no infrastructure, overridden by an optional TOML file and then
//! by `WALLETD_*` environment variables. Every setting is declared once, in [`SETTINGS`] (`table.rs`):
//! defaults, parsing, `describe()` and the README table all come from there. A bad value names its setting;
//! a misspelt setting is refused with a suggestion; any other unknown `WALLETD_*` variable is a warning.
//!
//! An empty value is applied like any other (as the `config` crate did): settings that need a value refuse
//! it (`WALLETD_REDIS_URL=` is "must start with redis:// or rediss://"), list settings take it as the
//! empty list (`WALLETD_ADMIN_ADDRESSES=` names no admin). Variable names are matched case-insensitively,
//! as before.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

mod load;
mod table;

use base::money::AssetRegistry;
use kafka::KafkaSettings;
pub use load::{Loaded, NOT_SETTINGS, near_miss};
use storage::{DbOptions, mask_url};
pub use table::{DefaultValue, SETTINGS, Setting};
use web::TrustedProxies;
use web::ratelimit::Rate;

/// The effective configuration of one process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; defaults to `sqlite://{data_dir}/walletd.db`.
    pub database_url: Option<String>,
    /// Each service's own database; unset, `database_url`.
    pub supply_database_url: Option<String>,
    pub order_database_url: Option<String>,
    pub claim_database_url: Option<String>,
    pub wallet_database_url: Option<String>,
    /// Users, nonces and refresh tokens, shared by every process of a deployment; unset, `database_url`.
    pub identity_database_url: Option<String>,
    /// The region's streaming replica, for plain reads; per service, or for all of them.
    pub read_database_url: Option<String>,
    pub supply_read_database_url: Option<String>,
    pub order_read_database_url: Option<String>,
    pub claim_read_database_url: Option<String>,
    /// How long a read with a consistency token waits for the replica before it reads the primary.
    pub read_wait: Duration,
    /// Where another service answers gRPC when this process does not run it.
    pub supply_grpc_url: Option<String>,
    pub order_grpc_url: Option<String>,
    pub wallet_grpc_url: Option<String>,
    /// Deadline of every call to another service.
    pub rpc_deadline: Duration,
    pub database_pool_size: usize,
    pub database_statement_timeout: Duration,
    pub migrate_on_start: bool,
    pub region: String,
    /// PKCS#8 PEM RSA key; defaults to `{data_dir}/jwt-signing-key.pem`, generated on first start.
    pub jwt_private_key_file: Option<PathBuf>,
    /// Keys also published in the JWKS and accepted, never signed with (a rotation's next or
    /// retired key): PEM files, private or public.
    pub jwt_published_key_files: Vec<PathBuf>,
    pub jwt_issuer: String,
    /// OTLP/HTTP endpoint spans are exported to; none: no tracing.
    pub otlp_endpoint: Option<String>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// A session's lifetime from sign-in, however often it refreshes.
    pub session_max: Duration,
    /// Addresses (any case) that sign in with the `admin` role.
    pub admin_addresses: Vec<String>,
    /// EIP-4361 domain, URI and chain id that sign-in messages must carry.
    pub siwe_domain: String,
    pub siwe_uri: String,
    pub siwe_chain_id: u64,
    pub nonce_ttl: Duration,
    pub assets: AssetRegistry,
    /// EVM chains and their assets (`chain` crate); unset: no chain integration.
    pub chains_file: Option<PathBuf>,
    /// The withdrawal signer's hot-wallet key (hex), from a file or the environment: the process
    /// that has it runs the signer.
    pub chain_signer_key_file: Option<PathBuf>,
    pub chain_signer_key: Option<Redacted>,
    pub log_format: LogFormat,
    pub shutdown_timeout: Duration,
    /// Time to send a request's headers, and the longest a keep-alive connection stays idle.
    pub http_header_timeout: Duration,
    /// Time for a request's body to arrive.
    pub http_body_timeout: Duration,
    /// Time for a whole request, body included.
    pub http_request_timeout: Duration,
    /// HTTP connections open at once.
    pub http_max_connections: usize,
    /// How often the clean-up job runs.
    pub cleanup_interval: Duration,
    /// How long handled-event ids are kept.
    pub inbox_retention: Duration,
    /// How often orders and their holds are reconciled.
    pub reconcile_interval: Duration,
    /// How old a pending hold must be before the reconciler judges it.
    pub reconcile_grace: Duration,
    /// Run the event consumers (claim processing) in this process.
    pub run_consumers: bool,
    /// Run the outbox relay to Kafka in `walletd serve` (when Kafka is set); `false` when it runs
    /// alone as `walletd relay`.
    pub run_relay: bool,
    /// Attempts at an event before it is parked (and, over Kafka, dead-lettered).
    pub event_max_attempts: u32,
    /// The first retry's delay; it doubles per attempt.
    pub event_retry_backoff: Duration,
    /// The longest wait between two attempts at an event.
    pub event_retry_backoff_max: Duration,
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
    pub rate_limit: Rate,
    /// Per client IP on sign-in (0 turns it off).
    pub signin_rate_limit: Rate,
    /// Load balancers whose `X-Forwarded-For` names the client (for per-client limits).
    pub trusted_proxies: TrustedProxies,
    /// Kafka: the outbox is published there when set; the embedded log stays the default.
    pub kafka: Option<KafkaSettings>,
}

/// A secret held in the settings: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redacted(****)")
    }
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

impl LogFormat {
    /// The setting's text: `auto`, `json` or `text`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Json => "json",
            Self::Text => "text",
        }
    }
}

/// A setting that could not be used; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid setting {setting}: {reason}")]
    Invalid { setting: String, reason: String },
    /// A name that is no setting but looks like a typo of one (or any unknown key given to `set`).
    #[error("unknown setting {name}{}", did_you_mean(.suggestion))]
    Unknown { name: String, suggestion: Option<String> },
    #[error("cannot read configuration file {path}: {reason}")]
    File { path: String, reason: String },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion.as_ref().map(|s| format!("; did you mean {s}?")).unwrap_or_default()
}

impl Default for Settings {
    /// The declared defaults, applied through each setting's own parser.
    fn default() -> Self {
        // Placeholders only: each is overwritten by its setting's declared default, or is the "unset"
        // state of a setting declared without one.
        let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut settings = Self {
            http_addr: nowhere,
            metrics_addr: nowhere,
            grpc_addr: nowhere,
            data_dir: PathBuf::new(),
            database_url: None,
            supply_database_url: None,
            order_database_url: None,
            claim_database_url: None,
            wallet_database_url: None,
            identity_database_url: None,
            read_database_url: None,
            supply_read_database_url: None,
            order_read_database_url: None,
            claim_read_database_url: None,
            read_wait: Duration::from_millis(250),
            supply_grpc_url: None,
            order_grpc_url: None,
            wallet_grpc_url: None,
            rpc_deadline: Duration::from_secs(5),
            database_pool_size: 0,
            database_statement_timeout: Duration::ZERO,
            migrate_on_start: false,
            region: String::new(),
            jwt_private_key_file: None,
            jwt_published_key_files: Vec::new(),
            jwt_issuer: String::new(),
            otlp_endpoint: None,
            access_token_ttl: Duration::ZERO,
            refresh_token_ttl: Duration::ZERO,
            session_max: Duration::ZERO,
            admin_addresses: Vec::new(),
            siwe_domain: String::new(),
            siwe_uri: String::new(),
            siwe_chain_id: 0,
            nonce_ttl: Duration::ZERO,
            assets: AssetRegistry::default(),
            chains_file: None,
            chain_signer_key_file: None,
            chain_signer_key: None,
            log_format: LogFormat::Auto,
            shutdown_timeout: Duration::ZERO,
            http_header_timeout: Duration::ZERO,
            http_body_timeout: Duration::ZERO,
            http_request_timeout: Duration::ZERO,
            http_max_connections: 0,
            cleanup_interval: Duration::ZERO,
            inbox_retention: Duration::ZERO,
            reconcile_interval: Duration::ZERO,
            reconcile_grace: Duration::ZERO,
            run_consumers: false,
            run_relay: false,
            event_max_attempts: 0,
            event_retry_backoff: Duration::ZERO,
            event_retry_backoff_max: Duration::ZERO,
            lease: Duration::ZERO,
            redis_url: None,
            redis_timeout: Duration::ZERO,
            cache_capacity: 0,
            cache_enabled: false,
            rate_limit: Rate { per_minute: 0, burst: 0 },
            signin_rate_limit: Rate { per_minute: 0, burst: 0 },
            trusted_proxies: TrustedProxies::default(),
            kafka: None,
        };
        settings.apply_defaults(false);
        settings
    }
}

impl Settings {
    /// Sets one setting (by its lower-case key) from its text form, which is trimmed first.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SettingsError> {
        let setting = SETTINGS.iter().find(|s| s.key == key).ok_or_else(|| SettingsError::Unknown {
            name: table::env_var(key),
            suggestion: near_miss(key).map(table::env_var),
        })?;
        (setting.apply)(self, value.trim())
            .map_err(|reason| SettingsError::Invalid { setting: setting.env_var(), reason })
    }

    /// Applies the declared defaults of the settings that do (`kafka`) or do not need Kafka.
    fn apply_defaults(&mut self, kafka: bool) {
        for setting in SETTINGS.iter().filter(|s| s.with_kafka == kafka) {
            if let DefaultValue::Text(text) = setting.default {
                let applied = (setting.apply)(self, text);
                // Declared defaults are constants, and the test `declared_defaults_apply` applies each.
                debug_assert!(applied.is_ok(), "the default of {} does not apply: {applied:?}", setting.key);
            }
        }
    }

    /// Kafka's settings, turned on (with the declared defaults of `with_kafka` settings) if they were off.
    fn kafka_mut(&mut self) -> &mut KafkaSettings {
        fn off() -> KafkaSettings {
            KafkaSettings {
                brokers: String::new(),
                partitions: 0,
                replication: 0,
                compression: String::new(),
                group_prefix: String::new(),
                fetch_wait_ms: 0,
            }
        }
        if self.kafka.is_none() {
            self.kafka = Some(off());
            self.apply_defaults(true);
        }
        self.kafka.get_or_insert_with(off)
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

    /// The database URL, `sqlite://{data_dir}/walletd.db` unless set.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("walletd.db").display()))
    }

    /// The JWT signing key's file, `{data_dir}/jwt-signing-key.pem` unless set.
    pub fn jwt_key_path(&self) -> PathBuf {
        self.jwt_private_key_file.clone().unwrap_or_else(|| self.data_dir.join("jwt-signing-key.pem"))
    }

    /// The database pool's options.
    pub fn db_options(&self) -> DbOptions {
        DbOptions {
            pool_size: self.database_pool_size,
            statement_timeout: self.database_statement_timeout,
            ..DbOptions::default()
        }
    }

    /// Every setting as (key, value), in declaration order, secrets masked.
    pub fn describe(&self) -> Vec<(String, String)> {
        SETTINGS
            .iter()
            .map(|s| {
                let value = (s.show)(self);
                let value = match () {
                    _ if !s.secret || value.is_empty() => value,
                    // A URL keeps its host (its password masked); any other secret shows nothing.
                    _ if value.contains("://") => mask_url(&value),
                    _ => "****".to_string(),
                };
                (s.key.to_string(), value)
            })
            .collect()
    }
}

/// The line before the settings table in the README.
pub const README_BEGIN: &str = "<!-- settings:begin -->";
/// The line after it.
pub const README_END: &str = "<!-- settings:end -->";

/// The README's settings table: `| variable | default | meaning |`, one row per setting.
pub fn markdown_table() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for s in SETTINGS {
        let default = match s.default {
            DefaultValue::Text(text) | DefaultValue::Derived(text) => format!("`{text}`"),
            DefaultValue::None => "(none)".to_string(),
        };
        out.push_str(&format!("| `{}` | {default} | {} |\n", s.env_var(), s.meaning));
    }
    out
}

/// Whether the table between the README's markers is [`markdown_table`]; if not, where it first differs.
pub fn check_readme(readme: &str) -> Result<(), String> {
    const HINT: &str = "run `walletd config --markdown` and paste it between the markers";
    let lines: Vec<&str> = readme.lines().map(str::trim_end).collect();
    let begin = lines.iter().position(|l| *l == README_BEGIN);
    let rest = begin.map_or(&[][..], |b| &lines[b + 1..]);
    let Some(end) = rest.iter().position(|l| *l == README_END) else {
        return Err(format!("the README lacks the lines `{README_BEGIN}` and, after it, `{README_END}`; {HINT}"));
    };
    let found = &rest[..end];
    let table = markdown_table();
    let wanted: Vec<&str> = table.lines().collect();
    if found == wanted.as_slice() {
        return Ok(());
    }
    let at = found.iter().zip(&wanted).take_while(|(a, b)| a == b).count();
    let line = |l: Option<&&str>| l.map_or_else(|| "(the end of the table)".to_string(), |l| l.to_string());
    Err(format!(
        "the README's settings table differs from the declared settings at its line {}:\n  README:   {}\n  \
         declared: {}\n{HINT}",
        at + 1,
        line(found.get(at)),
        line(wanted.get(at)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn error_of<T>(r: Result<T, SettingsError>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    /// A TOML file in a directory of its own, removed when dropped.
    struct TempToml(PathBuf);

    impl TempToml {
        fn new(name: &str, text: &str) -> std::io::Result<Self> {
            let dir = std::env::temp_dir().join(format!("settings-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("walletd.toml"), text)?;
            Ok(Self(dir))
        }

        fn path(&self) -> PathBuf {
            self.0.join("walletd.toml")
        }
    }

    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn bad_values_name_their_setting() {
        let mut s = Settings::default();
        let err = error_of(s.set("http_addr", "nope"));
        assert!(err.contains("WALLETD_HTTP_ADDR"), "{err}");
        let err = error_of(s.set("database_url", "mysql://x"));
        assert_eq!(
            err,
            "invalid setting WALLETD_DATABASE_URL: must start with sqlite://, postgres:// or postgresql://"
        );
        let err = error_of(s.set("admin_addresses", "0x12"));
        assert!(err.contains("WALLETD_ADMIN_ADDRESSES"), "{err}");
        assert!(s.set("assets", "ETH:99").is_err());
        let err = error_of(s.set("kafka_compression", "brotli"));
        assert_eq!(err, "invalid setting WALLETD_KAFKA_COMPRESSION: must be none, gzip, snappy, lz4 or zstd");
        assert!(s.set("redis_url", "http://cache").is_err());
        assert!(s.set("log_format", "xml").is_err());
        assert!(s.set("kafka_brokers", "nohost").is_err());
        assert!(s.set("event_retry_backoff_ms", "999999").is_ok());
        assert_eq!(s.event_retry_backoff, Duration::from_secs(60));
    }

    #[test]
    fn describe_masks_the_passwords() -> Result<(), SettingsError> {
        let mut s = Settings::default();
        s.set("database_url", "postgres://walletd:s3cret@db/walletd")?;
        s.set("redis_url", "redis://:t0ken@cache:6379/0")?;
        let d = s.describe();
        assert!(d.iter().all(|(_, v)| !v.contains("s3cret") && !v.contains("t0ken")), "{d:?}");
        assert!(d.contains(&("database_url".into(), "postgres://walletd:****@db/walletd".into())));
        Ok(())
    }

    #[test]
    fn describe_lists_every_declared_setting_in_order() {
        let keys: Vec<String> = Settings::default().describe().into_iter().map(|(k, _)| k).collect();
        let declared: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        assert_eq!(keys, declared);
        for kafka in [
            "kafka_brokers",
            "kafka_partitions",
            "kafka_replication",
            "kafka_compression",
            "kafka_group_prefix",
            "kafka_fetch_wait_ms",
        ] {
            assert!(keys.iter().any(|k| k == kafka), "{kafka}");
        }
        assert_eq!(keys.len(), 70);
    }

    #[test]
    fn keys_are_unique_lower_case_and_meanings_fit_a_table_row() {
        let mut keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SETTINGS.len());
        for s in SETTINGS {
            assert!(s.key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{}", s.key);
            assert!(!s.meaning.is_empty() && !s.meaning.contains(['|', '\n']), "{}", s.key);
        }
    }

    #[test]
    fn declared_defaults_apply() {
        for s in SETTINGS {
            if let DefaultValue::Text(text) = s.default {
                let mut settings = Settings::default();
                assert_eq!((s.apply)(&mut settings, text), Ok(()), "{}", s.key);
            }
        }
    }

    #[test]
    fn declared_defaults_agree_with_settings_default() -> Result<(), SettingsError> {
        let s = Settings::default();
        assert_eq!(s.http_addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(s.database_url(), "sqlite://data/walletd.db");
        assert_eq!(s.jwt_key_path(), PathBuf::from("data/jwt-signing-key.pem"));
        assert_eq!(s.refresh_token_ttl, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(s.assets, AssetRegistry::default());
        assert_eq!(
            (s.rate_limit, s.signin_rate_limit),
            (Rate { per_minute: 3000, burst: 300 }, Rate { per_minute: 120, burst: 60 })
        );
        assert_eq!((s.db_options().pool_size, s.db_options().statement_timeout), (16, Duration::from_secs(5)));
        assert!(s.kafka.is_none() && s.redis_url.is_none() && s.admin_addresses.is_empty());
        s.validate()?;
        // Every value shown is its declared default (modulo the registry's normal form) and applies back.
        for (setting, (key, shown)) in SETTINGS.iter().zip(s.describe()) {
            if let DefaultValue::Text(text) = setting.default
                && !setting.with_kafka
                && key != "assets"
            {
                assert_eq!(shown, text, "{key}");
            }
            let mut again = Settings::default();
            if !shown.is_empty() {
                again.set(&key, &shown)?;
            }
            assert_eq!(again.describe(), s.describe(), "{key}");
        }
        Ok(())
    }

    #[test]
    fn kafka_settings_need_brokers_and_default_as_declared() -> Result<(), SettingsError> {
        let mut s = Settings::default();
        s.set("kafka_partitions", "6")?;
        assert!(error_of(s.validate()).contains("WALLETD_KAFKA_BROKERS"));
        s.set("kafka_brokers", "k1:9092,k2:9092")?;
        s.validate()?;
        let declared = KafkaSettings {
            brokers: "k1:9092,k2:9092".into(),
            partitions: 6,
            replication: 1,
            compression: "lz4".into(),
            group_prefix: "walletd".into(),
            fetch_wait_ms: 50,
        };
        assert_eq!(s.kafka, Some(declared));
        Ok(())
    }

    #[test]
    fn a_misspelt_variable_is_refused_with_a_suggestion() {
        let err = error_of(Settings::load_from(None, env(&[("WALLETD_HTTP_ADR", "0.0.0.0:1")])));
        assert_eq!(err, "unknown setting WALLETD_HTTP_ADR; did you mean WALLETD_HTTP_ADDR?");
        let err = error_of(Settings::load_from(None, env(&[("WALLETD_REIGON", "eu")])));
        assert!(err.contains("did you mean WALLETD_REGION?"), "{err}");
        let err = error_of(Settings::default().set("http_adr", "0.0.0.0:1"));
        assert_eq!(err, "unknown setting WALLETD_HTTP_ADR; did you mean WALLETD_HTTP_ADDR?");
        assert_eq!(error_of(Settings::default().set("nothing", "1")), "unknown setting WALLETD_NOTHING");
    }

    #[test]
    fn kubernetes_service_variables_only_warn() -> Result<(), SettingsError> {
        let injected = [
            ("WALLETD_SERVICE_HOST", "10.0.0.1"),
            ("WALLETD_SERVICE_PORT", "8080"),
            ("WALLETD_SERVICE_PORT_HTTP", "8080"),
            ("WALLETD_PORT", "tcp://10.0.0.1:8080"),
            ("WALLETD_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
            ("WALLETD_PORT_8080_TCP_ADDR", "10.0.0.1"),
            ("WALLETD_PORT_8080_TCP_PORT", "8080"),
            ("WALLETD_PORT_8080_TCP_PROTO", "tcp"),
        ];
        let loaded = Settings::load_from(None, env(&injected))?;
        assert_eq!(loaded.warnings.len(), injected.len());
        for ((name, _), warning) in injected.iter().zip(&loaded.warnings) {
            assert!(warning.contains(name), "{warning}");
        }
        Ok(())
    }

    #[test]
    fn walletds_own_and_the_harness_variables_are_silent() -> Result<(), SettingsError> {
        let loaded = Settings::load_from(
            None,
            env(&[
                ("WALLETD_CONFIG", "/etc/walletd.toml"),
                ("WALLETD_FAILPOINTS", "relay-before-mark"),
                ("WALLETD_TEST_PG_URL", "postgres://x"),
                ("WALLETD_TEST_REDIS_URL", "redis://x"),
                ("WALLETD_TEST_KAFKA_BROKERS", "k:9092"),
                ("WALLETD_BENCH_ADMIN_TOKEN", "t"),
                ("PATH", "/usr/bin"),
                ("WALLETD_REGION", "eu-west"),
            ]),
        )?;
        assert_eq!(loaded.warnings, Vec::<String>::new());
        assert_eq!(loaded.settings.region, "eu-west");
        Ok(())
    }

    #[test]
    fn empty_values_go_through_the_parser() -> Result<(), SettingsError> {
        let err = error_of(Settings::load_from(None, env(&[("WALLETD_REDIS_URL", "")])));
        assert_eq!(err, "invalid setting WALLETD_REDIS_URL: must start with redis:// or rediss://");
        assert!(error_of(Settings::load_from(None, env(&[("WALLETD_REGION", " ")]))).contains("must not be empty"));
        let loaded = Settings::load_from(None, env(&[("WALLETD_ADMIN_ADDRESSES", "")]))?;
        assert!(loaded.settings.admin_addresses.is_empty());
        Ok(())
    }

    #[test]
    fn the_file_is_applied_and_the_environment_wins() -> Result<(), Box<dyn std::error::Error>> {
        let file = TempToml::new(
            "applied",
            r#"
region = "eu-west"
http_addr = "0.0.0.0:9000"
cache_capacity = 7
cache_enabled = false
admin_addresses = ["0x00000000000000000000000000000000000000aa", "0x00000000000000000000000000000000000000bb"]
extra = 1
"#,
        )?;
        let loaded = Settings::load_from(Some(&file.path()), env(&[("WALLETD_HTTP_ADDR", "0.0.0.0:9001")]))?;
        let s = &loaded.settings;
        assert_eq!((s.region.as_str(), s.cache_capacity, s.cache_enabled), ("eu-west", 7, false));
        assert_eq!(s.http_addr, SocketAddr::from(([0, 0, 0, 0], 9001)));
        // Stored in their EIP-55 checksummed form.
        assert_eq!(
            s.admin_addresses,
            ["0x00000000000000000000000000000000000000AA", "0x00000000000000000000000000000000000000bb"]
        );
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings.iter().all(|w| w.contains("`extra`")), "{:?}", loaded.warnings);
        Ok(())
    }

    #[test]
    fn a_misspelt_or_bad_file_key_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let file = TempToml::new("misspelt", "regoin = \"eu-west\"\n")?;
        let err = error_of(Settings::load_from(Some(&file.path()), env(&[])));
        assert!(err.starts_with("unknown setting `regoin` in ") && err.ends_with("; did you mean region?"), "{err}");
        let file = TempToml::new("table", "[region]\nname = \"eu\"\n")?;
        let err = error_of(Settings::load_from(Some(&file.path()), env(&[])));
        assert!(err.starts_with("invalid setting WALLETD_REGION: is a table"), "{err}");
        let file = TempToml::new("syntax", "region = \n")?;
        assert!(matches!(Settings::load_from(Some(&file.path()), env(&[])), Err(SettingsError::File { .. })));
        let missing = std::env::temp_dir().join("settings-no-such-dir/walletd.toml");
        assert!(matches!(Settings::load_from(Some(&missing), env(&[])), Err(SettingsError::File { .. })));
        Ok(())
    }

    #[test]
    fn numeric_extremes_are_refused_or_accepted_without_panicking() -> Result<(), SettingsError> {
        let max = u64::MAX.to_string();
        for setting in SETTINGS {
            for value in ["0", max.as_str(), "18446744073709551616", "-1", "1.5", "x", ""] {
                let mut s = Settings::default();
                if s.set(setting.key, value).is_ok() {
                    let _ = s.describe();
                }
            }
        }
        let mut s = Settings::default();
        assert!(s.set("database_pool_size", "0").is_err() && s.set("database_pool_size", &max).is_err());
        assert!(s.set("redis_timeout_ms", "0").is_err() && s.set("access_token_ttl_secs", "0").is_err());
        assert!(s.set("rate_limit_burst", "0").is_err() && s.set("kafka_partitions", &max).is_err());
        assert!(error_of(s.set("cache_capacity", "x")).contains("`x` is not a non-negative integer"));
        for http in
            ["http_header_timeout_ms", "http_body_timeout_ms", "http_request_timeout_ms", "http_max_connections"]
        {
            assert!(s.set(http, "0").is_err() && s.set(http, &max).is_err(), "{http}");
        }
        s.set("rate_limit_per_minute", "0")?;
        s.set("shutdown_timeout_secs", &max)?;
        s.set("cache_capacity", &max)?;
        assert_eq!(s.cache_capacity, u64::MAX);
        Ok(())
    }

    #[test]
    fn the_readme_check_accepts_the_table_and_rejects_a_change() {
        let readme = format!("# walletd\n\n{README_BEGIN}\n{}{README_END}\n\nmore\n", markdown_table());
        assert_eq!(check_readme(&readme), Ok(()));
        let changed = readme.replace("| REST API |", "| the REST API |");
        let err = check_readme(&changed).err().unwrap_or_default();
        assert!(
            err.contains("line 3") && err.contains("the REST API") && err.contains("walletd config --markdown"),
            "{err}"
        );
        let shorter = readme.replace(
            "| `WALLETD_GRPC_ADDR` | `127.0.0.1:50051` | gRPC API (`walletd.v1`, health checking, reflection) |\n",
            "",
        );
        assert!(check_readme(&shorter).is_err());
        assert!(check_readme("no markers").is_err());
        assert!(markdown_table().contains("| `WALLETD_HTTP_ADDR` | `127.0.0.1:8080` | REST API |\n"));
        assert!(markdown_table().contains("| `WALLETD_REDIS_URL` | (none) | "));
    }

    /// The README's configuration table is the one declaration, rendered.
    #[test]
    fn the_readme_lists_every_setting_as_declared() {
        assert_eq!(check_readme(include_str!("../../../README.md")), Ok(()));
    }
}
