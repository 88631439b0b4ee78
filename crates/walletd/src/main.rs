//! The `walletd` command line: serve, migrate, config, token, and two helpers for trying
//! sign-in by hand (keygen, sign).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use base::clock;
use events::delivery;
use identity::eth::{self, LocalWallet};
use identity::{IdentityStore, TokenKeys};
use settings::Settings;
use walletd::telemetry;
use web::Role;

/// The longest lifetime `walletd token --ttl-secs` mints.
const MAX_TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

#[derive(Parser)]
#[command(name = "walletd", version, about = "Web3 wallet platform backend")]
struct Cli {
    /// Optional TOML file with the same keys as the WALLETD_* variables (lower case).
    #[arg(long, global = true, env = "WALLETD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the services (all by default).
    Serve {
        /// Comma-separated subset: supply,order,claim,wallet.
        #[arg(long)]
        services: Option<String>,
    },
    /// Run only the outbox relay to Kafka (WALLETD_KAFKA_BROKERS), until SIGTERM.
    Relay,
    /// Apply every migration and exit.
    Migrate,
    /// Print the effective configuration, secrets masked.
    Config {
        /// Print the README's table of every setting (variable, default, meaning) instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Mint an access token with the server's signing key (bootstrap an admin).
    Token {
        #[arg(long)]
        address: String,
        #[arg(long, default_value = "user", value_parser = ["user", "admin", "service"])]
        role: String,
        /// Lifetime in seconds, 1 to 604800 (7 days); default: the access-token TTL. A longer-lived
        /// token would outlive any rotation of admins or keys.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_TTL_SECS))]
        ttl_secs: Option<u64>,
    },
    /// Operate on the event log's consumers.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The wallet's ledger.
    Wallet {
        #[command(subcommand)]
        command: WalletCommand,
    },
    /// The JWT signing key: make the next one, print a key's public half (docs/operations.md, "Rotating
    /// the signing key").
    SigningKey {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
    /// Generate an Ethereum key for trying sign-in; writes the private key (hex) to FILE and prints the address.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// EIP-191-sign a message (stdin, or --message-file) with a key file from `keygen`; prints the signature.
    Sign {
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        message_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SigningKeyCommand {
    /// Write a new 2048-bit RSA key (PKCS#8 PEM, mode 0600) to a file that must not exist yet; prints
    /// its `kid`.
    New {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public half (PEM) of a private key file, for WALLETD_JWT_PUBLISHED_KEY_FILES.
    Public {
        #[arg(long)]
        key_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Recompute the ledger (every journal sums to zero per asset, every balance equals its entries,
    /// every `held` its pending holds); prints the result as JSON and exits 1 when anything is off.
    Verify,
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Rewind a consumer group to redeliver the log from a position (handlers are idempotent). With
    /// Kafka, the group goes back to the start of every topic; stop its consumers first.
    Replay {
        #[arg(long, default_value = "claim-processor")]
        group: String,
        #[arg(long, default_value_t = 0)]
        from: i64,
        /// Also clear the group's inbox, so handlers see already-handled events again.
        #[arg(long)]
        forget_handled: bool,
    },
    /// Show each consumer group's position, the head of the log, and parked events.
    Status,
    /// Send a parked event back through its consumer group (as `POST
    /// /v1/admin/parked-events/{group}/{event_id}/redrive`): a running walletd redelivers it.
    Redrive { group: String, event_id: uuid::Uuid },
    /// Print events as they reach a topic (Kafka's, or the embedded log's), one JSON object per line,
    /// until interrupted.
    Tail {
        #[arg(long)]
        topic: String,
        /// Start at the topic's beginning instead of its end.
        #[arg(long)]
        from_beginning: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let loaded = match Settings::load(cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("walletd: {e}");
            std::process::exit(2);
        }
    };
    let settings = loaded.settings;
    let traces = settings
        .otlp_endpoint
        .clone()
        .map(|endpoint| telemetry::TraceExport { endpoint, region: settings.region.clone() });
    telemetry::init_logging(settings.log_format, traces);
    for warning in loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            telemetry::flush_logs();
            eprintln!("walletd: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(cli.command, settings));
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "walletd failed");
    }
    // The logs first (a collector that does not answer must not hold them back), then the spans.
    telemetry::flush_logs();
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    telemetry::shutdown_traces();
    telemetry::flush_logs();
    if let Err(e) = result {
        eprintln!("walletd: {e:#}");
        std::process::exit(1);
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve { services } => serve(settings, services).await,
        Command::Relay => relay(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Config { markdown } => {
            config(&settings, markdown);
            Ok(())
        }
        Command::Token { address, role, ttl_secs } => token(settings, &address, &role, ttl_secs).await,
        Command::Events { command: EventsCommand::Replay { group, from, forget_handled } } => {
            events_replay(settings, &group, from, forget_handled).await
        }
        Command::Events { command: EventsCommand::Status } => events_status(settings).await,
        Command::Events { command: EventsCommand::Redrive { group, event_id } } => {
            events_redrive(settings, &group, event_id).await
        }
        Command::Events { command: EventsCommand::Tail { topic, from_beginning } } => {
            events_tail(settings, &topic, from_beginning).await
        }
        Command::Wallet { command: WalletCommand::Verify } => wallet_verify(settings).await,
        Command::SigningKey { command: SigningKeyCommand::New { out } } => signing_key_new(&settings, &out),
        Command::SigningKey { command: SigningKeyCommand::Public { key_file } } => {
            let pem = std::fs::read_to_string(&key_file).with_context(|| format!("reading {}", key_file.display()))?;
            print!("{}", TokenKeys::public_pem(&pem).with_context(|| key_file.display().to_string())?);
            Ok(())
        }
        Command::Keygen { out } => keygen(&out),
        Command::Sign { key_file, message_file } => sign(&key_file, message_file.as_deref()),
    }
}

async fn serve(settings: Settings, services: Option<String>) -> anyhow::Result<()> {
    let services = match services {
        Some(list) => walletd::parse_services(&list)?,
        None => walletd::all_services(),
    };
    let server = walletd::build(settings, &services).await?;
    server.run(walletd::shutdown_signal()).await
}

/// The outbox relay alone, with its own metrics (`outbox_unpublished`, `outbox_published_total`).
async fn relay(settings: Settings) -> anyhow::Result<()> {
    let kafka = settings.kafka.clone().context("WALLETD_KAFKA_BROKERS is not set")?;
    let db = walletd::open_database(&settings).await?;
    kafka::ensure_topics(&kafka, walletd::TOPICS).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let handle = telemetry::metrics_handle()?;
    let metrics = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| format!("binding WALLETD_METRICS_ADDR {}", settings.metrics_addr))?;
    tracing::info!(metrics.addr = %metrics.local_addr()?, "outbox relay metrics");
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || std::future::ready(handle.render())));
    let mut stop_metrics = rx.clone();
    let served = tokio::spawn(async move {
        axum::serve(metrics, app)
            .with_graceful_shutdown(async move {
                let _ = stop_metrics.changed().await;
            })
            .await
    });
    let relay = tokio::spawn(kafka::Relay::new(db, &kafka, settings.lease)?.run(rx));
    walletd::shutdown_signal().await;
    let _ = tx.send(true);
    relay.await?;
    served.await??;
    Ok(())
}

async fn migrate(mut settings: Settings) -> anyhow::Result<()> {
    settings.migrate_on_start = true;
    walletd::open_database(&settings).await?;
    println!("migrations applied");
    Ok(())
}

fn config(settings: &Settings, markdown: bool) {
    if markdown {
        print!("{}", settings::markdown_table());
        return;
    }
    for (k, v) in settings.describe() {
        println!("{k} = {v:?}");
    }
}

async fn token(settings: Settings, address: &str, role: &str, ttl_secs: Option<u64>) -> anyhow::Result<()> {
    let parsed = eth::parse_address(address).map_err(|e| anyhow::anyhow!("--address: {e}"))?;
    let address = eth::to_checksum(&parsed);
    // The server grants admin per request from its list, whatever a token says.
    anyhow::ensure!(
        role != "admin" || settings.admin_addresses.contains(&address),
        "--address: {address} is not in WALLETD_ADMIN_ADDRESSES; the server gives the admin role only to \
         addresses listed there, so add it to that list (and to the server's configuration) first"
    );
    // The user lives where identity does (a database of its own when the services run apart).
    let identity = Settings {
        database_url: settings.identity_database_url.clone().or(settings.database_url.clone()),
        ..settings.clone()
    };
    let db = walletd::open_database(&identity).await?;
    let user = IdentityStore::new(db, clock::system()).upsert_user(&address).await?;
    let keys = walletd::wiring::token_keys(&settings, clock::system())?;
    let roles = match role {
        "admin" => vec![Role::User, Role::Admin],
        "service" => vec![Role::Service],
        _ => vec![Role::User],
    };
    let ttl = ttl_secs.map_or(settings.access_token_ttl, std::time::Duration::from_secs);
    println!("{}", keys.issue(user.id, &address, &roles, ttl)?);
    Ok(())
}

async fn events_replay(settings: Settings, group: &str, from: i64, forget_handled: bool) -> anyhow::Result<()> {
    let db = walletd::open_database(&settings).await?;
    match &settings.kafka {
        Some(kafka) => {
            anyhow::ensure!(from == 0, "--from: with Kafka a group goes back to the start of every topic");
            let partitions = kafka::rewind_group(kafka, walletd::TOPICS, group).await?;
            if forget_handled {
                delivery::forget_handled_events(&db, group).await?;
            }
            println!("{}.{group} rewound to the start of {partitions} partitions", kafka.group_prefix);
        }
        None => {
            delivery::replay(&db, group, from, forget_handled).await?;
            println!("{group} rewound to {from}; a running walletd redelivers within a poll interval");
        }
    }
    Ok(())
}

async fn events_redrive(settings: Settings, group: &str, event_id: uuid::Uuid) -> anyhow::Result<()> {
    let db = walletd::open_database(&settings).await?;
    // No signed-in user: the audit event's actor is null; its correlation id tells CLI requests apart.
    let ctx = events::EventContext {
        region: settings.region.clone(),
        correlation_id: Some(format!("cli-{}", uuid::Uuid::new_v4())),
        ..Default::default()
    };
    match delivery::request_redrive(&db, group, event_id, &ctx).await? {
        events::RedriveRequest::Requested(p) => {
            println!(
                "redrive of {} ({}, seq {}) requested; {group}'s consumer redelivers it",
                p.event_id, p.event_type, p.seq
            );
            Ok(())
        }
        events::RedriveRequest::AlreadyRequested(_) => anyhow::bail!("a redrive of {event_id} is already pending"),
        events::RedriveRequest::NotFound => anyhow::bail!("{group} has no parked event {event_id}"),
    }
}

async fn wallet_verify(settings: Settings) -> anyhow::Result<()> {
    let db = walletd::open_database(&settings).await?;
    let users = Arc::new(walletd::adapters::Users(IdentityStore::new(db.clone(), clock::system())));
    let wallet = wallet::WalletService::new(
        &db,
        cache::Cache::disabled(),
        users,
        settings.assets.clone(),
        settings.region.clone(),
    );
    let v = wallet.verify().await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    anyhow::ensure!(v.ok, "the ledger does not add up: {} mismatches (listed above)", v.mismatches.len());
    Ok(())
}

async fn events_status(settings: Settings) -> anyhow::Result<()> {
    let db = walletd::open_database(&settings).await?;
    if let Some(kafka) = &settings.kafka {
        for p in kafka::group_offsets(kafka, walletd::TOPICS, "claim-processor").await? {
            let committed = p.committed.map_or("-".to_string(), |c| c.to_string());
            let (prefix, lag) = (&kafka.group_prefix, p.lag());
            println!(
                "{prefix}.claim-processor {}[{}]: committed {committed}, end {}, lag {lag}",
                p.topic, p.partition, p.high
            );
        }
    } else {
        let head = events::outbox::head(&db).await?;
        println!("log head: {head}");
        for (group, position) in delivery::positions(&db).await? {
            println!("{group}: position {position}, lag {}", head - position);
        }
    }
    for p in delivery::parked(&db).await? {
        let redrive = p.redrive_requested_at.map(|t| format!(" redrive_requested_at={}", clock::to_text(t)));
        println!(
            "parked: group={} id={} seq={} type={} attempts={} error={}{}",
            p.group,
            p.event_id,
            p.seq,
            p.event_type,
            p.attempts,
            p.last_error,
            redrive.unwrap_or_default()
        );
    }
    Ok(())
}

async fn events_tail(settings: Settings, topic: &str, from_beginning: bool) -> anyhow::Result<()> {
    let known = walletd::TOPICS.iter().any(|t| topic == *t || topic == format!("{t}.dlq"));
    anyhow::ensure!(known, "--topic: `{topic}` is not an event topic ({})", walletd::TOPICS.join(", "));
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        walletd::shutdown_signal().await;
        let _ = tx.send(true);
    });
    let out = std::io::stdout().lock();
    match &settings.kafka {
        Some(kafka) => kafka::tail(kafka, topic, from_beginning, out, rx).await,
        None => {
            let db = walletd::open_database(&settings).await?;
            delivery::tail(&db, topic, from_beginning, out, rx).await
        }
    }
}

fn signing_key_new(settings: &Settings, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        anyhow::bail!("{} exists; a new key goes to a new file", out.display());
    }
    let keys = TokenKeys::load_or_generate(out, &settings.jwt_issuer, settings.access_token_ttl, clock::system())?;
    println!("{}", keys.signing_kid());
    Ok(())
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    let wallet = LocalWallet::random()?;
    identity::jwt::write_private(out, &wallet.to_hex())?;
    println!("{}", eth::to_checksum(&wallet.address()));
    Ok(())
}

fn sign(key_file: &Path, message_file: Option<&Path>) -> anyhow::Result<()> {
    let key = std::fs::read_to_string(key_file).with_context(|| format!("reading {}", key_file.display()))?;
    let wallet = LocalWallet::from_hex(&key).context("the key file must hold 32 bytes of hex")?;
    let message = match message_file {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
    };
    println!("{}", wallet.sign_message(&message)?);
    Ok(())
}
