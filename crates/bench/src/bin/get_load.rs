//! get_load: a fixed number of concurrent clients GET one URL for a while; prints requests/s and
//! latency percentiles. The same tool for walletd (cache on or off) and the bare axum baseline.

use std::time::{Duration, Instant};

use clap::Parser;

use bench::percentile;

#[derive(Parser, Debug)]
#[command(name = "get_load")]
struct Args {
    /// Full URL to GET.
    #[arg(long)]
    url: String,
    /// Bearer token, if the URL needs one.
    #[arg(long, env = "GET_LOAD_TOKEN")]
    token: Option<String>,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A label for the output line.
    #[arg(long, default_value = "get")]
    label: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    // Warm up the connections and whatever the server caches.
    for _ in 0..args.concurrency {
        let mut req = http.get(&args.url);
        if let Some(t) = &args.token {
            req = req.bearer_auth(t);
        }
        anyhow::ensure!(req.send().await?.status().is_success(), "warm-up request failed");
    }
    let start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (http, url, token) = (http.clone(), args.url.clone(), args.token.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let mut req = http.get(&url);
                    if let Some(t) = &token {
                        req = req.bearer_auth(t);
                    }
                    let t = Instant::now();
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (lat, e) = w.await?;
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    println!(
        "{:<14} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({} requests, {} errors, {} clients, {:.0} s)",
        args.label,
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0.0),
        all.len(),
        errors,
        args.concurrency,
        elapsed
    );
    Ok(())
}
