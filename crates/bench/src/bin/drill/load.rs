//! The failover loads: open-loop (a request is started on its tick whatever the earlier ones are
//! doing), every request recorded with its start, end and status, every acknowledged write kept.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Report, api, call, epoch_ms, funded_users, id_of, order_body, spread};

/// The set-up before the clock starts waits longer than the measured requests: every deposit takes
/// the `@world` account's row lock, and a remote region holds it for its round trips.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// One request as the client saw it; status 0 when no answer came (refused, reset, timed out).
struct Record {
    start_ms: i64,
    end_ms: i64,
    status: u16,
    ok: bool,
    write: bool,
    /// The id a write acknowledged, or the claim's order.
    id: Option<String>,
    claim: Option<String>,
    error: Option<String>,
}

/// Starts `make(i)` at `i / rate` seconds for `n` ticks, then waits for every request.
async fn open_loop<F>(rate: f64, n: usize, make: impl Fn(usize) -> F) -> Vec<Record>
where
    F: Future<Output = Vec<Record>> + Send + 'static,
{
    let start = Instant::now();
    let mut tasks: Vec<JoinHandle<Vec<Record>>> = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        tasks.push(tokio::spawn(make(i)));
    }
    let mut records = Vec::new();
    for t in tasks {
        records.extend(t.await.unwrap_or_default());
    }
    records
}

/// Sends one request and records it; `ok` says which statuses are an answer the drill expects.
async fn record(req: reqwest::RequestBuilder, write: bool, ok: fn(u16) -> bool) -> Record {
    let start_ms = epoch_ms();
    let (status, body, error) = match call(req).await {
        Ok(a) => (a.status, a.body, None),
        Err(e) => (0, Value::Null, Some(format!("{e:#}"))),
    };
    let id = body["id"].as_str().map(str::to_string);
    let error = error.or_else(|| (!ok(status)).then(|| format!("{status} {}", body["code"].as_str().unwrap_or(""))));
    Record { start_ms, end_ms: epoch_ms(), status, ok: ok(status), write, id, claim: None, error }
}

/// Counts, the error window (first error's start to last error's end) and latencies.
fn summarize(records: &[Record]) -> Value {
    let errors: Vec<&Record> = records.iter().filter(|r| !r.ok).collect();
    let window = match (errors.iter().map(|r| r.start_ms).min(), errors.iter().map(|r| r.end_ms).max()) {
        (Some(first), Some(last)) => (last - first) as f64 / 1000.0,
        _ => 0.0,
    };
    let mut by_status = BTreeMap::<String, usize>::new();
    for r in &errors {
        *by_status.entry(r.status.to_string()).or_default() += 1;
    }
    // The longest stretch without an acknowledged write: how long writes were unavailable.
    let mut acked: Vec<i64> =
        records.iter().filter(|r| r.write && (200..300).contains(&r.status)).map(|r| r.end_ms).collect();
    acked.sort_unstable();
    let gap = acked.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) as f64 / 1000.0;
    json!({
        "total": records.len(), "errors": errors.len(), "error_window_s": window, "errors_by_status": by_status,
        "first_errors": errors.iter().take(5).filter_map(|r| r.error.clone()).collect::<Vec<_>>(),
        "longest_write_gap_s": gap,
        "latency": spread(records.iter().filter(|r| r.ok).map(|r| (r.end_ms - r.start_ms) as f64).collect()),
        "requests": records.iter().map(|r| json!([r.start_ms, r.end_ms, r.status, r.write])).collect::<Vec<_>>(),
    })
}

fn print_summary(name: &str, s: &Value) {
    println!(
        "{name}: {} requests, {} errors {} over {:.2} s, longest gap between acknowledged writes {:.2} s, latency p50 {:.1} ms p99 {:.1} ms",
        s["total"],
        s["errors"],
        s["errors_by_status"],
        s["error_window_s"].as_f64().unwrap_or(0.0),
        s["longest_write_gap_s"].as_f64().unwrap_or(0.0),
        s["latency"]["p50_ms"].as_f64().unwrap_or(0.0),
        s["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
    );
    for e in s["first_errors"].as_array().into_iter().flatten() {
        println!("  error: {}", e.as_str().unwrap_or(""));
    }
}

#[derive(Args, Debug)]
pub struct Load {
    #[arg(long)]
    lb: String,
    /// Where users are signed in and funded before the clock starts (default: the load balancer).
    #[arg(long)]
    setup: Option<String>,
    /// Requests started per second, half of them order writes, half reads.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 16)]
    buyers: usize,
    /// An admin access token, for the deposits that fund the buyers.
    #[arg(long, env = "WALLETD_DRILL_ADMIN_TOKEN")]
    admin_token: String,
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

impl Load {
    pub async fn run(self) -> anyhow::Result<Report> {
        let api = Arc::new(api(&self.lb, Duration::from_millis(self.timeout_ms))?);
        let setup = crate::api(self.setup.as_deref().unwrap_or(&self.lb), SETUP_TIMEOUT)?;
        let buyers = funded_users(&setup, &self.admin_token, self.buyers, "1000000").await?;
        // One order per buyer to read during the run.
        let mut seeds = Vec::new();
        for b in &buyers {
            let (status, body) = setup.post("/v1/orders", b, &order_body("1")).await?;
            anyhow::ensure!(status == 201, "seed order: {status} {body}");
            seeds.push(id_of(&body)?);
        }
        let n = (self.rate * self.seconds as f64) as usize;
        println!("load: {n} requests at {}/s through {}", self.rate, api.base);
        let records = open_loop(self.rate, n, |i| {
            let (api, buyer, seed) = (api.clone(), buyers[i % buyers.len()].clone(), seeds[i % buyers.len()].clone());
            async move {
                // Half writes, half reads, but not alternating: with two servers left, round robin
                // would then send every write to one of them.
                let r = if (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63 == 0 {
                    let req =
                        api.http.post(format!("{}/v1/orders", api.base)).bearer_auth(&buyer).json(&order_body("1"));
                    record(req, true, |s| s == 201).await
                } else {
                    let req = api.http.get(format!("{}/v1/orders/{seed}", api.base)).bearer_auth(&buyer);
                    record(req, false, |s| s == 200).await
                };
                vec![r]
            }
        })
        .await;
        let mut figures = summarize(&records);
        print_summary("load", &figures);
        let acked: Vec<&String> = records.iter().filter(|r| r.write && r.ok).filter_map(|r| r.id.as_ref()).collect();
        println!("load: {} writes acknowledged", acked.len());
        figures["drill"] = json!("load");
        figures["orders"] = json!(acked);
        Ok(Report { figures, failure: None })
    }
}

#[derive(Args, Debug)]
pub struct Claims {
    #[arg(long)]
    lb: String,
    /// Where users, supplies and orders are made before the clock starts (default: the load balancer).
    #[arg(long)]
    setup: Option<String>,
    /// Orders claimed per second, each by two shoppers at once.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 4)]
    buyers: usize,
    #[arg(long, default_value_t = 8)]
    shoppers: usize,
    #[arg(long, env = "WALLETD_DRILL_ADMIN_TOKEN")]
    admin_token: String,
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

impl Claims {
    pub async fn run(self) -> anyhow::Result<Report> {
        let api = Arc::new(api(&self.lb, Duration::from_millis(self.timeout_ms))?);
        let setup = crate::api(self.setup.as_deref().unwrap_or(&self.lb), SETUP_TIMEOUT)?;
        let n = (self.rate * self.seconds as f64) as usize;
        let buyers = funded_users(&setup, &self.admin_token, self.buyers, "1000000").await?;
        let shoppers = setup.sign_in_many(self.shoppers).await?;
        for s in &shoppers {
            let (status, body) =
                setup.post("/v1/supplies", s, &json!({"currency": "USDC", "amount": "1000000"})).await?;
            anyhow::ensure!(status == 201, "supply: {status} {body}");
        }
        let orders: Vec<String> = futures::stream::iter(0..n)
            .map(|i| {
                let (setup, buyer) = (&setup, &buyers[i % buyers.len()]);
                async move {
                    let (status, body) = setup.post("/v1/orders", buyer, &order_body("1")).await?;
                    anyhow::ensure!(status == 201, "order: {status} {body}");
                    id_of(&body)
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        println!("claims: {n} orders placed, now claimed at {}/s by two shoppers each through {}", self.rate, api.base);
        let records = open_loop(self.rate, n, |i| {
            let order = orders[i].clone();
            let racers: Vec<String> = (0..2).map(|k| shoppers[(2 * i + k) % shoppers.len()].clone()).collect();
            let api = api.clone();
            async move {
                futures::future::join_all(racers.iter().map(|shopper| {
                    let req = api.http.post(format!("{}/v1/orders/{order}/claim", api.base)).bearer_auth(shopper);
                    let order = order.clone();
                    async move {
                        let mut r = record(req, true, |s| matches!(s, 201 | 409)).await;
                        r.claim = r.id.take().filter(|_| r.status == 201);
                        r.id = Some(order);
                        r
                    }
                }))
                .await
            }
        })
        .await;
        let mut figures = summarize(&records);
        let won: Vec<Value> =
            records.iter().filter_map(|r| Some(json!({"id": r.claim.as_ref()?, "order_id": r.id}))).collect();
        let lost = records.iter().filter(|r| r.status == 409).count();
        print_summary("claims", &figures);
        println!("claims: {} won (201), {lost} lost (409)", won.len());
        figures["drill"] = json!("claims");
        figures["won"] = json!(won.len());
        figures["lost"] = json!(lost);
        figures["claims"] = json!(won);
        figures["orders"] = json!(orders);
        Ok(Report { figures, failure: None })
    }
}
