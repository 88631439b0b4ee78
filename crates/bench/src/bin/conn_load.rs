//! conn_load: holds `--connections` HTTP/1.1 connections open at once and sends GETs over them at a
//! fixed total `--rate`, each connection taking its turn (open loop: a request's latency counts from
//! the moment it was due, so a server that falls behind shows it in the percentiles instead of
//! slowing the load down). Prints requests/s, p50/p99/max and the server's peak memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use bench::{peak_memory, percentile};

#[derive(Parser, Debug)]
#[command(name = "conn_load")]
struct Args {
    /// host:port of the server.
    #[arg(long)]
    addr: String,
    /// Path to GET.
    #[arg(long)]
    path: String,
    /// Bearer token, if the path needs one.
    #[arg(long, env = "GET_LOAD_TOKEN")]
    token: Option<String>,
    /// Connections held open for the whole run.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Requests per second over all connections.
    #[arg(long)]
    rate: f64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// PID of the server, to report its peak memory.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value = "conns")]
    label: String,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: &str) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn get(sender: &mut Sender, args: &Args) -> anyhow::Result<()> {
    let mut req = hyper::Request::get(&args.path).header("host", &args.addr);
    if let Some(t) = &args.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    sender.ready().await?;
    let res = sender.send_request(req.body(Empty::new())?).await?;
    let status = res.status();
    res.into_body().collect().await?;
    ensure!(status.is_success(), "status {status}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    ensure!(args.rate > 0.0, "--rate must be positive");
    // Open every connection first (a few hundred at a time, as a crowd of clients would arrive).
    let opening = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let handles: Vec<_> = (0..args.connections)
        .map(|_| {
            let (args, gate) = (args.clone(), gate.clone());
            tokio::spawn(async move {
                let _p = gate.acquire().await?;
                let mut s = connect(&args.addr).await?;
                get(&mut s, &args).await?;
                Ok::<_, anyhow::Error>(s)
            })
        })
        .collect();
    let mut senders = Vec::with_capacity(args.connections);
    for h in handles {
        senders.push(h.await?.context("opening a connection")?);
    }
    println!("{}: {} connections open and warm in {:.1} s", args.label, senders.len(), opening.elapsed().as_secs_f64());

    // Connection i sends at start + (i + k * n) / rate for k = 0, 1, ...
    let n = senders.len();
    let interval = Duration::from_secs_f64(n as f64 / args.rate);
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs(args.seconds);
    let workers: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let args = args.clone();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                let mut due = start + Duration::from_secs_f64(i as f64 / args.rate);
                while due < end {
                    tokio::time::sleep_until(due).await;
                    match get(&mut s, &args).await {
                        Ok(()) => lat.push(due.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => errors += 1,
                    }
                    due += interval;
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
        "{:<14} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({} requests, {} errors, {} connections, target {:.0}/s, server peak memory {})",
        args.label,
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0.0),
        all.len(),
        errors,
        n,
        args.rate,
        args.server_pid.map(peak_memory).unwrap_or_else(|| "-".into()),
    );
    Ok(())
}
