//! rpc_load: the same operations over REST and over gRPC against one running walletd, at the same
//! concurrency: (a) get order, REST `GET /v1/orders/{id}` vs `walletd.v1.OrderService/GetOrder`,
//! each for a fixed time; (b) create claim, REST `POST /v1/orders/{id}/claim` vs
//! `walletd.v1.ClaimService/ClaimOrder`, each on its own half of a set of fresh pending orders (so
//! every claim wins). Prints requests, errors, req/s (successes only), p50 and p99 latency.
//!
//! REST goes through one shared reqwest client (HTTP/1.1, a pool of up to `--concurrency`
//! connections); gRPC through one shared tonic `Channel`, that is one HTTP/2 connection carrying
//! every in-flight call as a stream of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use bench::{Api, peak_memory, percentile};
use rpc::v1::claim_service_client::ClaimServiceClient;
use rpc::v1::order_service_client::OrderServiceClient;
use rpc::v1::{ClaimOrderRequest, GetOrderRequest};

#[derive(Parser, Debug)]
#[command(name = "rpc_load", about = "The same operations over REST and over gRPC against a running walletd")]
struct Args {
    /// Base URL of the REST API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    grpc: String,
    /// An admin access token (`walletd token --role admin --address 0x...`), for deposits and
    /// waiting for claim processing to drain.
    #[arg(long, env = "WALLETD_BENCH_ADMIN_TOKEN")]
    admin_token: String,
    /// Requests in flight, on either transport.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of each get-order run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Claims per claim run (2 x this many orders are created first).
    #[arg(long, default_value_t = 2000)]
    claims: usize,
    /// HTTP/2 connections the gRPC calls are spread over, in turn (tonic multiplexes the calls of
    /// one channel over one connection).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// PID of the server, to report its peak memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also write the figures as one JSON object to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One measured run.
struct Run {
    operation: &'static str,
    transport: &'static str,
    ok: usize,
    errors: usize,
    elapsed: f64,
    /// Latencies of the successful requests, ms, sorted.
    latencies: Vec<f64>,
    /// The first error met, to show what went wrong.
    first_error: Option<String>,
}

impl Run {
    fn new(operation: &'static str, transport: &'static str, outcomes: Vec<Result<f64, String>>, elapsed: f64) -> Self {
        let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0, None);
        for o in outcomes {
            match o {
                Ok(ms) => latencies.push(ms),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        Run { operation, transport, ok: latencies.len(), errors, elapsed, latencies, first_error }
    }

    fn per_s(&self) -> f64 {
        if self.elapsed > 0.0 { self.ok as f64 / self.elapsed } else { 0.0 }
    }

    fn p(&self, q: f64) -> f64 {
        percentile(&self.latencies, q)
    }
}

/// `concurrency` workers each calling `call` back to back for `seconds`; every outcome with its
/// latency (ms) when it succeeded.
async fn timed<F, Fut>(concurrency: usize, seconds: u64, call: F) -> anyhow::Result<(Vec<Result<f64, String>>, f64)>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    // Warm-up: as many calls at once as there will be workers (opens the connections and fills
    // whatever the server caches); not counted.
    let warm = futures::future::join_all((0..concurrency).map(|_| call())).await;
    if let Some(Err(e)) = warm.iter().find(|r| r.is_err()) {
        println!("  warm-up: {} of {concurrency} calls failed, e.g. {e}", warm.iter().filter(|r| r.is_err()).count());
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let r = call().await;
                    out.push(r.map(|()| t.elapsed().as_secs_f64() * 1000.0));
                }
                out
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.extend(w.await.context("a load worker failed")?);
    }
    Ok((outcomes, start.elapsed().as_secs_f64()))
}

/// One call per item, `concurrency` in flight; every outcome with its latency (ms) when it
/// succeeded.
async fn each<T, F, Fut>(concurrency: usize, items: Vec<T>, call: F) -> (Vec<Result<f64, String>>, f64)
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let outcomes = futures::stream::iter(items)
        .map(|item| {
            let fut = call(item);
            async move {
                let t = Instant::now();
                let r = fut.await;
                r.map(|()| t.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    (outcomes, start.elapsed().as_secs_f64())
}

/// Waits until no claim is pending and no order sits between a claim's steps, so that one run's
/// claim processing does not run during the next.
async fn settle(api: &Api, admin: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    loop {
        let pending = api.get("/v1/claims?status=pending&limit=1", admin).await?;
        let claimed = api.get("/v1/orders?status=claimed&limit=1", admin).await?;
        let empty = |v: &Value| v["items"].as_array().is_some_and(Vec::is_empty);
        if empty(&pending) && empty(&claimed) {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("claims still pending after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `message` with the bearer token in its metadata.
fn authed<M>(message: M, auth: &MetadataValue<Ascii>) -> tonic::Request<M> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert("authorization", auth.clone());
    req
}

fn bearer(token: &str) -> anyhow::Result<MetadataValue<Ascii>> {
    format!("Bearer {token}").parse().map_err(|_| anyhow::anyhow!("a token that is not ASCII"))
}

fn grpc_error(s: &tonic::Status) -> String {
    format!("gRPC {:?}: {}", s.code(), s.message())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .timeout(Duration::from_secs(60))
        .build()?;
    let api = Arc::new(Api { http: http.clone(), base: args.url.trim_end_matches('/').to_string() });
    let admin = args.admin_token.clone();
    api.get("/v1/me", &admin).await.context("the admin token does not work")?;
    ensure!(args.channels > 0, "--channels must be at least 1");
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..args.channels {
        let channel = Endpoint::from_shared(args.grpc.clone())
            .with_context(|| format!("gRPC address {:?}", args.grpc))?
            .timeout(Duration::from_secs(60))
            .connect()
            .await
            .with_context(|| format!("connecting to gRPC at {}", args.grpc))?;
        channels.push(channel);
    }
    let turn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let next = move || {
        let i = turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        channels[i % channels.len()].clone()
    };
    println!(
        "rpc_load: REST {} vs gRPC {}, {} in flight, {} s per get run, {} claims per claim run",
        api.base, args.grpc, args.concurrency, args.seconds, args.claims
    );

    // Set-up: a funded buyer, one order to read, shoppers with big USDC supplies, 2 x claims orders.
    let setup = Instant::now();
    let price = "1.00";
    let orders_n = 2 * args.claims;
    let buyer = api.sign_in().await?;
    let me = api.get("/v1/me", &buyer).await?;
    let funds = orders_n + 1 + 100;
    let body = json!({"user_id": me["id"], "currency": "USDC", "amount": funds.to_string(),
        "reference": format!("rpc-load-{}", std::process::id())});
    let (status, body) = api.post("/v1/admin/deposits", &admin, &body).await?;
    ensure!(status == 201, "deposit: {status} {body}");
    let order_body = |i: usize| json!({"currency": "USDC", "items": [{"product_id": format!("sku-{i}"), "product_name": "bench", "price": price, "quantity": 1}]});
    let (status, o) = api.post("/v1/orders", &buyer, &order_body(0)).await?;
    ensure!(status == 201, "create order: {status} {o}");
    let get_id = o["id"].as_str().context("order id")?.to_string();

    // As many shoppers as requests in flight (claims rotate over them), each able to pay for every order.
    let shoppers: Vec<String> = api.sign_in_many(args.concurrency).await?;
    let supply = (orders_n + 1000).to_string();
    for s in &shoppers {
        let (status, body) = api.post("/v1/supplies", s, &json!({"currency": "USDC", "amount": supply})).await?;
        ensure!(status == 201, "create supply: {status} {body}");
    }
    let orders: Vec<String> = futures::stream::iter(1..=orders_n)
        .map(|i| {
            let (api, buyer, body) = (api.clone(), buyer.clone(), order_body(i));
            async move {
                let (status, o) = api.post("/v1/orders", &buyer, &body).await?;
                ensure!(status == 201, "create order: {status} {o}");
                Ok::<_, anyhow::Error>(o["id"].as_str().context("order id")?.to_string())
            }
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    settle(&api, &admin).await?;
    println!(
        "set-up: {:.1} s (1 buyer, {} shoppers, {} orders to claim)",
        setup.elapsed().as_secs_f64(),
        shoppers.len(),
        orders.len()
    );

    let mut runs = Vec::new();

    // (a) get order.
    let buyer_auth = bearer(&buyer)?;
    let url = format!("{}/v1/orders/{get_id}", api.base);
    let (outcomes, elapsed) = timed(args.concurrency, args.seconds, {
        let (http, url, token) = (http.clone(), url.clone(), buyer.clone());
        move || {
            let req = http.get(&url).bearer_auth(&token);
            async move {
                match req.send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.map(drop).map_err(|e| format!("REST body: {e}")),
                    Ok(r) => Err(format!("REST {}", r.status())),
                    Err(e) => Err(format!("REST: {e}")),
                }
            }
        }
    })
    .await?;
    runs.push(Run::new("get order", "REST", outcomes, elapsed));
    let (outcomes, elapsed) = timed(args.concurrency, args.seconds, {
        let (next, auth, id) = (next.clone(), buyer_auth.clone(), get_id.clone());
        move || {
            let mut client = OrderServiceClient::new(next());
            let req = authed(GetOrderRequest { id: id.clone() }, &auth);
            async move { client.get_order(req).await.map(drop).map_err(|s| grpc_error(&s)) }
        }
    })
    .await?;
    runs.push(Run::new("get order", "gRPC", outcomes, elapsed));

    // (b) create claim: REST on the first half of the orders, gRPC on the second half; claim i by
    // shopper i mod shoppers. Processing of the previous run drains before each run.
    let shopper_auth = shoppers.iter().map(|s| bearer(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let (rest_half, grpc_half) = orders.split_at(args.claims);
    let waited = settle(&api, &admin).await?;
    let items: Vec<(usize, String)> = rest_half.iter().cloned().enumerate().collect();
    let (outcomes, elapsed) = each(args.concurrency, items, |(i, oid)| {
        let (api, token) = (api.clone(), shoppers[i % shoppers.len()].clone());
        async move {
            match api.post(&format!("/v1/orders/{oid}/claim"), &token, &Value::Null).await {
                Ok((201, _)) => Ok(()),
                Ok((status, body)) => Err(format!("REST {status} {}", body["code"].as_str().unwrap_or(""))),
                Err(e) => Err(format!("REST: {e}")),
            }
        }
    })
    .await;
    runs.push(Run::new("create claim", "REST", outcomes, elapsed));
    let drained = settle(&api, &admin).await?;
    let items: Vec<(usize, String)> = grpc_half.iter().cloned().enumerate().collect();
    let (outcomes, elapsed) = each(args.concurrency, items, |(i, oid)| {
        let mut client = ClaimServiceClient::new(next());
        let req = authed(ClaimOrderRequest { order_id: oid }, &shopper_auth[i % shopper_auth.len()]);
        async move { client.claim_order(req).await.map(drop).map_err(|s| grpc_error(&s)) }
    })
    .await;
    runs.push(Run::new("create claim", "gRPC", outcomes, elapsed));
    let drained_after = settle(&api, &admin).await?;
    println!(
        "claim processing drained before the REST run {waited:.1} s, before the gRPC run {drained:.1} s, after it {drained_after:.1} s"
    );

    // Report.
    println!();
    println!(
        "{:<13} {:<9} {:>9} {:>7} {:>9} {:>8} {:>8}",
        "operation", "transport", "requests", "errors", "req/s", "p50 ms", "p99 ms"
    );
    for r in &runs {
        println!(
            "{:<13} {:<9} {:>9} {:>7} {:>9.0} {:>8.2} {:>8.2}",
            r.operation,
            r.transport,
            r.ok + r.errors,
            r.errors,
            r.per_s(),
            r.p(0.5),
            r.p(0.99)
        );
    }
    println!();
    for pair in runs.chunks(2) {
        if let [rest, grpc] = pair {
            let ratio = if rest.per_s() > 0.0 { grpc.per_s() / rest.per_s() } else { 0.0 };
            println!("{}: gRPC / REST req/s = {ratio:.2}", rest.operation);
        }
    }
    for r in runs.iter().filter(|r| r.errors > 0) {
        println!(
            "{} over {}: {} errors, first: {}",
            r.operation,
            r.transport,
            r.errors,
            r.first_error.as_deref().unwrap_or("?")
        );
    }
    println!(
        "req/s counts successes only (claim: 201 / OK); latencies are of successes. {} in flight on both transports: \
         REST through one reqwest client (HTTP/1.1, a pool of up to {} connections), gRPC through one tonic Channel \
         (one HTTP/2 connection, the calls multiplexed over it as streams).",
        args.concurrency, args.concurrency
    );
    let memory = args.server_pid.map(peak_memory);
    if let Some(m) = &memory {
        println!("server peak memory: {m}");
    }
    if let Some(path) = &args.json {
        let figures = json!({
            "concurrency": args.concurrency, "seconds": args.seconds, "claims": args.claims, "peak_memory": memory,
            "runs": runs.iter().map(|r| json!({
                "operation": r.operation, "transport": r.transport, "requests": r.ok + r.errors, "errors": r.errors,
                "requests_per_s": r.per_s(), "p50_ms": r.p(0.5), "p99_ms": r.p(0.99), "elapsed_s": r.elapsed,
                "first_error": r.first_error,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, figures.to_string()).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
