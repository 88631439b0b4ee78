//! walletd-drill: the measuring client of the multi-region drills (`scripts/multiregion.sh drill`).
//! Each subcommand drives real requests, prints what it saw and, with `--out`, writes its figures
//! (and the ids of acknowledged writes) as one JSON object. A failed assertion is written too, then
//! makes the exit non-zero.

mod load;
mod reads;
mod verify;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::{Value, json};

use bench::{Api, percentile};

/// The header a write answers with and a read may send back (read-your-writes).
pub const CONSISTENCY_TOKEN: &str = "x-consistency-token";

#[derive(Parser, Debug)]
#[command(name = "walletd-drill", about = "Measuring client of the multi-region drills")]
struct Cli {
    #[command(subcommand)]
    drill: Drill,
    /// Write the figures as one JSON object to this file.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Drill {
    /// Write-then-read pairs through the load balancer; counts reads older than the write.
    Ryw(reads::Ryw),
    /// How long a write in one region takes to reach the cached entity in others.
    Invalidation(reads::Invalidation),
    /// A steady open-loop load of order writes and reads; the error window and acknowledged ids.
    Load(load::Load),
    /// A steady load of claims, two shoppers racing for each order; every 201 recorded.
    Claims(load::Claims),
    /// Checks acknowledged ids against a PostgreSQL database, and that no order has two live claims.
    Verify(verify::Verify),
}

/// What a drill measured, and the assertion it failed, if any.
pub struct Report {
    figures: Value,
    failure: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match cli.drill {
        Drill::Ryw(args) => args.run().await?,
        Drill::Invalidation(args) => args.run().await?,
        Drill::Load(args) => args.run().await?,
        Drill::Claims(args) => args.run().await?,
        Drill::Verify(args) => args.run().await?,
    };
    if let Some(path) = &cli.out {
        let mut figures = report.figures;
        figures["failure"] = json!(report.failure);
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(failure) = report.failure {
        bail!("{failure}");
    }
    Ok(())
}

/// A client for one base URL; every request has `timeout`.
pub fn api(base: &str, timeout: Duration) -> anyhow::Result<Api> {
    let http = reqwest::Client::builder().timeout(timeout).pool_max_idle_per_host(256).build()?;
    Ok(Api { http, base: base.trim_end_matches('/').to_string() })
}

/// An answer with the consistency token a write carries.
pub struct Answer {
    pub status: u16,
    pub token: Option<String>,
    pub body: Value,
}

pub async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
    let res = req.send().await?;
    let status = res.status().as_u16();
    let token = res.headers().get(CONSISTENCY_TOKEN).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = res.json().await.unwrap_or(Value::Null);
    Ok(Answer { status, token, body })
}

pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Milliseconds since the Unix epoch: records line up with the harness's own timestamps.
pub fn epoch_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// p50, p99 and max of a set of milliseconds.
pub fn spread(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({"p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99), "max_ms": ms.last().copied().unwrap_or(0.0)})
}

pub fn id_of(body: &Value) -> anyhow::Result<String> {
    Ok(body["id"].as_str().context("no id in the answer")?.to_string())
}

/// `n` users signed in, each given `amount` USDC by an admin deposit; their access tokens.
pub async fn funded_users(api: &Api, admin: &str, n: usize, amount: &str) -> anyhow::Result<Vec<String>> {
    let run = std::process::id();
    futures::stream::iter(0..n)
        .map(|i| async move {
            let token = api.sign_in().await?;
            let me = api.get("/v1/me", &token).await?;
            let body = json!({"user_id": me["id"], "currency": "USDC", "amount": amount,
                "reference": format!("drill-{run}-{}-{i}", epoch_ms())});
            let (status, body) = api.post("/v1/admin/deposits", admin, &body).await?;
            ensure!(status == 201, "deposit: {status} {body}");
            Ok(token)
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// A one-item USDC order at `price`.
pub fn order_body(price: &str) -> Value {
    json!({"currency": "USDC", "items": [{"product_id": "drill", "product_name": "drill", "price": price, "quantity": 1}]})
}
