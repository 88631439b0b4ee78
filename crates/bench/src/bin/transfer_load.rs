//! transfer_load: `--clients` concurrent clients POST `/v1/wallet/transfers` for `--seconds`, either
//! spread over `--users` accounts (random sender and receiver) or all into one hot account; prints
//! transfers/s and latency percentiles. Users are signed in and funded before the clock starts.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use serde_json::json;

use bench::{Api, peak_memory, percentile};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Random sender and receiver among all users.
    Spread,
    /// Every transfer goes to one account (row-lock contention on it).
    Hot,
}

#[derive(Parser, Debug)]
#[command(name = "transfer_load")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin access token, for the deposits that fund the users.
    #[arg(long, env = "WALLETD_BENCH_ADMIN_TOKEN")]
    admin_token: String,
    #[arg(long, default_value_t = 256)]
    users: usize,
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, value_enum, default_value_t = Mode::Spread)]
    mode: Mode,
    /// PID of the server, to report its peak memory.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// A small deterministic generator (xorshift) per client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.users >= 2, "--users: at least 2");
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.clients * 2).build()?;
    let api = Api { http, base: args.url.trim_end_matches('/').to_string() };
    let api = &api;
    let admin = args.admin_token.as_str();
    // Sign in and fund everyone before the clock starts.
    let users: Vec<(String, String)> = futures::stream::iter(0..args.users)
        .map(|i| async move {
            let token = api.sign_in().await?;
            let id = api.get("/v1/me", &token).await?["id"].as_str().context("no user id")?.to_string();
            let body = json!({"user_id": id, "currency": "USDC", "amount": "1000000",
                "reference": format!("transfer-bench-{}-{i}", std::process::id())});
            let (status, body) = api.post("/v1/admin/deposits", admin, &body).await?;
            ensure!(status == 201, "deposit: {status} {body}");
            Ok::<_, anyhow::Error>((token, id))
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let start = Instant::now();
    let results = futures::future::join_all((0..args.clients).map(|c| {
        let users = &users;
        async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
            let (mut lat, mut refused) = (Vec::new(), Vec::new());
            while Instant::now() < deadline {
                let (from, to) = match args.mode {
                    // Everyone but user 0 pays user 0.
                    Mode::Hot => (1 + rng.below(users.len() - 1), 0),
                    Mode::Spread => {
                        let from = rng.below(users.len());
                        (from, (from + 1 + rng.below(users.len() - 1)) % users.len())
                    }
                };
                let body = json!({"to_user_id": users[to].1, "currency": "USDC", "amount": "0.01"});
                let t = Instant::now();
                match api.post("/v1/wallet/transfers", &users[from].0, &body).await {
                    Ok((201, _)) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    Ok((status, body)) => refused.push(format!("{status} {body}")),
                    Err(e) => refused.push(format!("{e:#}")),
                }
            }
            (lat, refused)
        }
    }))
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    let refused: Vec<&String> = results.iter().flat_map(|(_, r)| r.iter()).collect();
    all.sort_by(f64::total_cmp);
    println!(
        "walletd {:<7} {:>7.0} transfers/s  p50 {:>6.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} done, {} refused, {} clients, {} users, {:.0} s)",
        format!("{:?}", args.mode).to_lowercase(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0.0),
        all.len(),
        refused.len(),
        args.clients,
        args.users,
        elapsed
    );
    if let Some(first) = refused.first() {
        println!("first refusal: {first}");
    }
    if let Some(pid) = args.server_pid {
        println!("server peak memory: {}", peak_memory(pid));
    }
    Ok(())
}
