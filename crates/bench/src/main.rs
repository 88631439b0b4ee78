//! walletd-bench: N buyers, M shoppers, K orders, C concurrent claimers against a running
//! walletd. Prints claims/s, claim request latency (p50/p99/max), processing lag (claimed to
//! processed, p50/p99), and checks the invariants at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use futures::StreamExt;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use bench::{Api, peak_memory, percentile};

#[derive(Parser, Debug)]
#[command(name = "walletd-bench", about = "Claim benchmark against a running walletd")]
struct Args {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin access token (`walletd token --role admin --address 0x...`), for the invariant checks.
    #[arg(long, env = "WALLETD_BENCH_ADMIN_TOKEN")]
    admin_token: String,
    #[arg(long, default_value_t = 10)]
    buyers: usize,
    #[arg(long, default_value_t = 50)]
    shoppers: usize,
    #[arg(long, default_value_t = 1000)]
    orders: usize,
    /// Concurrent claim requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How many shoppers try each order (contention).
    #[arg(long, default_value_t = 3)]
    attempts_per_order: usize,
    /// PID of the server, to report its peak memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Claim requests per second, paced (attempt i is sent no earlier than i / rate seconds after
    /// the start; `--concurrency` still caps what is in flight). Unset: as fast as they complete.
    #[arg(long)]
    rate: Option<f64>,
    /// A shell command run once the set-up is done, just before the first claim (scripts/bench.sh
    /// resets PostgreSQL's statement statistics there).
    #[arg(long)]
    on_claims_start: Option<String>,
    /// Also write the figures as one JSON object to this file (scripts/bench.sh reads it).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn dec(v: &Value) -> anyhow::Result<Decimal> {
    v.as_str().context("not a decimal string")?.parse().context("not a decimal")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()?;
    let api = Arc::new(Api { http, base: args.url.trim_end_matches('/').to_string() });
    let admin = args.admin_token.clone();
    api.get("/v1/me", &admin).await.context("the admin token does not work")?;
    println!(
        "walletd-bench: {} buyers, {} shoppers, {} orders, {} concurrent claimers, {} attempts per order, against {}",
        args.buyers, args.shoppers, args.orders, args.concurrency, args.attempts_per_order, api.base
    );

    // Set-up: users, supplies large enough for every order, orders with varied amounts.
    let setup = Instant::now();
    let buyers = api.sign_in_many(args.buyers).await?;
    let shoppers = api.sign_in_many(args.shoppers).await?;
    let price = |i: usize| format!("{}.{:02}", 1 + i % 97, i % 100);
    let total_ordered: Decimal = (0..args.orders).map(|i| price(i).parse::<Decimal>().unwrap_or_default()).sum();
    // Orders are funded: every buyer gets enough for all of them (deposits, before the clock starts).
    for (i, b) in buyers.iter().enumerate() {
        let me = api.get("/v1/me", b).await?;
        let body = json!({"user_id": me["id"], "currency": "USDC", "amount": total_ordered.round().to_string(),
            "reference": format!("bench-{}-{i}", std::process::id())});
        let (status, body) = api.post("/v1/admin/deposits", &admin, &body).await?;
        ensure!(status == 201, "deposit: {status} {body}");
    }
    let per_shopper = (total_ordered + Decimal::from(1000)).round();
    let mut supplies = Vec::new();
    for s in &shoppers {
        let (status, body) =
            api.post("/v1/supplies", s, &json!({"currency": "USDC", "amount": per_shopper.to_string()})).await?;
        ensure!(status == 201, "create supply: {status} {body}");
        supplies.push(body["id"].as_str().context("supply id")?.to_string());
    }
    let orders: Vec<(String, Decimal)> = futures::stream::iter(0..args.orders)
        .map(|i| {
            let (api, buyer) = (api.clone(), buyers[i % buyers.len()].clone());
            async move {
                let body = json!({"currency": "USDC", "items": [{"product_id": format!("sku-{i}"), "product_name": "bench", "price": price(i), "quantity": 1}]});
                let (status, o) = api.post("/v1/orders", &buyer, &body).await?;
                ensure!(status == 201, "create order: {status} {o}");
                Ok::<_, anyhow::Error>((o["id"].as_str().context("order id")?.to_string(), dec(&o["amount"])?))
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    println!("set-up: {:.1} s", setup.elapsed().as_secs_f64());

    // Claims: every order tried by several shoppers, interleaved so attempts on one order race.
    let attempts: Vec<(usize, usize)> = (0..args.attempts_per_order)
        .flat_map(|a| (0..orders.len()).map(move |o| (o, a)))
        .map(|(o, a)| (o, (o * 7 + a * 13) % shoppers.len()))
        .collect();
    let (won, lost, other) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    if let Some(cmd) = &args.on_claims_start {
        let status = std::process::Command::new("sh").arg("-c").arg(cmd).status()?;
        ensure!(status.success(), "--on-claims-start: {status}");
    }
    let start = Instant::now();
    let latencies: Vec<f64> = futures::stream::iter(attempts.iter().copied().enumerate())
        .map(|(i, (o, s))| {
            let (api, token, oid) = (api.clone(), shoppers[s].clone(), orders[o].0.clone());
            let (won, lost, other) = (&won, &lost, &other);
            let due = args.rate.map(|r| tokio::time::Instant::from_std(start) + Duration::from_secs_f64(i as f64 / r));
            async move {
                if let Some(due) = due {
                    tokio::time::sleep_until(due).await;
                }
                let t = Instant::now();
                let (status, body) = api.post(&format!("/v1/orders/{oid}/claim"), &token, &Value::Null).await?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                match (status, body["code"].as_str()) {
                    (201, _) => won.fetch_add(1, Ordering::Relaxed),
                    (409, Some("ORDER_ALREADY_CLAIMED")) => lost.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
                Ok::<_, anyhow::Error>(ms)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let elapsed = start.elapsed().as_secs_f64();
    let (won, lost, other) = (won.into_inner(), lost.into_inner(), other.into_inner());
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    println!("claims: {won} won, {lost} lost (409), {other} other, {} requests in {elapsed:.2} s", won + lost + other);
    let (won_per_s, requests_per_s) = (won as f64 / elapsed, (won + lost + other) as f64 / elapsed);
    println!("claims/s: {won_per_s:.0} won, {requests_per_s:.0} requests/s");
    let (p50, p99) = (percentile(&sorted, 0.5), percentile(&sorted, 0.99));
    println!("claim latency ms: p50 {p50:.2}  p99 {p99:.2}  max {:.2}", sorted.last().copied().unwrap_or(0.0));

    // Processing: wait for the pending claims to drain, then read the lag off the claims.
    let drain = Instant::now();
    loop {
        // Done on either transport: no claim pending and no order between a claim's steps.
        let pending = api.get("/v1/claims?status=pending&limit=1", &admin).await?;
        let claimed = api.get("/v1/orders?status=claimed&limit=1", &admin).await?;
        let empty = |v: &Value| v["items"].as_array().is_some_and(Vec::is_empty);
        if empty(&pending) && empty(&claimed) {
            break;
        }
        if drain.elapsed() > Duration::from_secs(600) {
            bail!("claims still pending after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let claims = api.all("/v1/claims", &admin).await?;
    let mut lags: Vec<f64> = claims
        .iter()
        .filter(|c| c["status"] == "processed")
        .filter_map(|c| {
            let at = |k: &str| c[k].as_str().and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
            Some((at("processed_at")? - at("claimed_at")?).as_seconds_f64() * 1000.0)
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let drained = drain.elapsed().as_secs_f64();
    let (lag_p50, lag_p99) = (percentile(&lags, 0.5), percentile(&lags, 0.99));
    println!(
        "processing lag ms (claimed -> processed): p50 {lag_p50:.1}  p99 {lag_p99:.1}  max {:.1}; all processed {drained:.2} s after the last claim",
        lags.last().copied().unwrap_or(0.0),
    );
    // Won and fully processed (settled) per second: from the first claim to the last one processed.
    let settled_per_s = won as f64 / (elapsed + drained);
    println!("claims won and processed/s: {settled_per_s:.0}");

    // Invariants.
    let processed = claims.iter().filter(|c| c["status"] == "processed").count();
    ensure!(other == 0, "{other} claim requests got an unexpected answer");
    ensure!(won == orders.len(), "{won} claims won for {} orders", orders.len());
    ensure!(
        processed == won,
        "{processed} processed of {won} claims (statuses: {:?})",
        claims.iter().map(|c| &c["status"]).collect::<Vec<_>>()
    );
    let mut consumed = Decimal::ZERO;
    for sid in &supplies {
        let s = api.get(&format!("/v1/supplies/{sid}"), &admin).await?;
        ensure!(dec(&s["reserved"])?.is_zero(), "reservation left on {sid}");
        ensure!(dec(&s["available"])? >= Decimal::ZERO, "negative supply {sid}");
        consumed += per_shopper - dec(&s["amount"])?;
    }
    let ordered: Decimal = orders.iter().map(|(_, a)| *a).sum();
    ensure!(consumed == ordered, "consumed {consumed} but ordered {ordered}");
    let mut completed = 0;
    for (oid, _) in &orders {
        completed += usize::from(api.get(&format!("/v1/orders/{oid}"), &admin).await?["status"] == "completed");
    }
    ensure!(completed == orders.len(), "{completed} of {} orders completed", orders.len());
    println!(
        "invariants: ok (one claim per order, every claim processed once, consumed = ordered = {ordered}, no reservation left)"
    );
    let memory = args.server_pid.map(peak_memory);
    if let Some(m) = &memory {
        println!("server peak memory: {m}");
    }
    if let Some(path) = &args.json {
        let figures = json!({
            "requests_per_s": requests_per_s, "won_per_s": won_per_s, "settled_per_s": settled_per_s,
            "latency_p50_ms": p50, "latency_p99_ms": p99, "lag_p50_ms": lag_p50, "lag_p99_ms": lag_p99,
            "concurrency": args.concurrency, "rate": args.rate, "peak_memory": memory,
        });
        std::fs::write(path, figures.to_string()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
