//! The read drills: read-your-writes through the load balancer, and how long a write in one region
//! takes to replace the entity another region has cached.

use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use serde_json::json;

use crate::{Answer, CONSISTENCY_TOKEN, Report, api, call, id_of, millis, spread};
use bench::Api;

#[derive(Args, Debug)]
pub struct Ryw {
    /// The load balancer's base URL.
    #[arg(long)]
    lb: String,
    #[arg(long, default_value_t = 1000)]
    pairs: usize,
    /// Read without sending back the write's consistency token.
    #[arg(long)]
    no_token: bool,
    /// Concurrent clients, each a user of its own.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Pairs per supply: its creation, then updates of it (cached by the reads before).
    #[arg(long, default_value_t = 5)]
    pairs_per_supply: usize,
    /// Fail when any read is stale or any request fails.
    #[arg(long)]
    assert_fresh: bool,
}

/// One write-then-read pair.
struct Pair {
    update: bool,
    stale: bool,
    token_sent: bool,
    read_ms: f64,
}

impl Ryw {
    pub async fn run(self) -> anyhow::Result<Report> {
        let api = api(&self.lb, Duration::from_secs(10))?;
        let users = api.sign_in_many(self.clients).await?;
        let per_client = self.pairs.div_ceil(self.clients);
        let started = Instant::now();
        let results: Vec<anyhow::Result<Vec<Pair>>> = futures::future::join_all(
            users
                .iter()
                .enumerate()
                .map(|(c, user)| self.client(&api, user, per_client.min(self.pairs.saturating_sub(c * per_client)))),
        )
        .await;
        let mut pairs = Vec::new();
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(p) => pairs.extend(p),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        let stale = |update: bool| pairs.iter().filter(|p| p.stale && p.update == update).count();
        let (stale_creates, stale_updates) = (stale(false), stale(true));
        let stale_total = stale_creates + stale_updates;
        let rate = stale_total as f64 / pairs.len().max(1) as f64;
        let without_token = pairs.iter().filter(|p| !p.token_sent).count();
        let read = spread(pairs.iter().map(|p| p.read_ms).collect());
        println!(
            "ryw ({}): {} pairs in {:.1} s, {stale_total} stale ({:.2} %: {stale_creates} after a creation, {stale_updates} after an update), read p50 {:.1} ms p99 {:.1} ms; {without_token} reads without a token, {} clients failed",
            if self.no_token { "without token" } else { "with token" },
            pairs.len(),
            started.elapsed().as_secs_f64(),
            rate * 100.0,
            read["p50_ms"].as_f64().unwrap_or(0.0),
            read["p99_ms"].as_f64().unwrap_or(0.0),
            errors.len(),
        );
        for e in &errors {
            println!("  client error: {e}");
        }
        let failure = self.assert_fresh.then(|| {
            if !errors.is_empty() {
                Some(format!("{} clients failed", errors.len()))
            } else if stale_total > 0 || without_token > 0 {
                Some(format!("{stale_total} stale reads, {without_token} reads without a token"))
            } else {
                None
            }
        });
        Ok(Report {
            figures: json!({"drill": "ryw", "token": !self.no_token, "pairs": pairs.len(), "stale": stale_total,
                "stale_after_create": stale_creates, "stale_after_update": stale_updates, "stale_rate": rate,
                "reads_without_token": without_token, "read": read, "errors": errors}),
            failure: failure.flatten(),
        })
    }

    async fn client(&self, api: &Api, user: &str, n: usize) -> anyhow::Result<Vec<Pair>> {
        let mut pairs = Vec::with_capacity(n);
        let mut supply: Option<String> = None;
        for i in 0..n {
            let update = i % self.pairs_per_supply != 0;
            let write = match (&supply, update) {
                (Some(id), true) => {
                    let body = json!({"amount": format!("{}", 100 + i)});
                    call(api.http.patch(format!("{}/v1/supplies/{id}", api.base)).bearer_auth(user).json(&body)).await?
                }
                _ => {
                    let body = json!({"currency": "USDC", "amount": "100"});
                    call(api.http.post(format!("{}/v1/supplies", api.base)).bearer_auth(user).json(&body)).await?
                }
            };
            anyhow::ensure!(matches!(write.status, 200 | 201), "write: {} {}", write.status, write.body);
            let id = id_of(&write.body)?;
            let version = write.body["version"].as_i64().unwrap_or(i64::MAX);
            let mut read = api.http.get(format!("{}/v1/supplies/{id}", api.base)).bearer_auth(user);
            let token = write.token.filter(|_| !self.no_token);
            if let Some(token) = &token {
                read = read.header(CONSISTENCY_TOKEN, token);
            }
            let t = Instant::now();
            let answer = call(read).await?;
            let read_ms = millis(t.elapsed());
            let stale = match answer.status {
                404 => true,
                200 => answer.body["version"].as_i64().unwrap_or(0) < version,
                s => anyhow::bail!("read: {s} {}", answer.body),
            };
            pairs.push(Pair { update: write.status == 200, stale, token_sent: token.is_some(), read_ms });
            supply = Some(id);
        }
        Ok(pairs)
    }
}

#[derive(Args, Debug)]
pub struct Invalidation {
    /// The region that writes (its own base URL, not the load balancer).
    #[arg(long)]
    write: String,
    /// A region that reads without a token (repeat for several).
    #[arg(long, required = true)]
    read: Vec<String>,
    #[arg(long, default_value_t = 100)]
    n: usize,
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// How long one sample may wait for the new version before it counts as a timeout.
    #[arg(long, default_value_t = 10)]
    deadline_secs: u64,
    #[arg(long, default_value_t = 10)]
    poll_ms: u64,
}

impl Invalidation {
    pub async fn run(self) -> anyhow::Result<Report> {
        let timeout = Duration::from_secs(5);
        let writer = api(&self.write, timeout)?;
        let readers: Vec<Api> = self.read.iter().map(|r| api(r, timeout)).collect::<anyhow::Result<_>>()?;
        let users = writer.sign_in_many(self.clients).await?;
        // Every supply is created first, so replicas have them by the time a sample reads them.
        let supplies: Vec<(String, String)> = futures::stream::iter(0..self.n)
            .map(|i| {
                let (writer, user) = (&writer, users[i % users.len()].clone());
                async move {
                    let (status, body) =
                        writer.post("/v1/supplies", &user, &json!({"currency": "USDC", "amount": "100"})).await?;
                    anyhow::ensure!(status == 201, "create supply: {status} {body}");
                    Ok((user, id_of(&body)?))
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
        let samples: Vec<(&String, anyhow::Result<Vec<Option<f64>>>)> =
            futures::stream::iter(supplies.iter().enumerate())
                .map(|(i, (user, id))| {
                    let sample = self.sample(&writer, &readers, user, id, i);
                    async move { (id, sample.await) }
                })
                .buffer_unordered(self.clients)
                .collect()
                .await;
        let mut regions = Vec::new();
        let mut failure = None;
        for (r, url) in self.read.iter().enumerate() {
            let windows: Vec<(&String, Option<f64>)> =
                samples.iter().filter_map(|(id, s)| Some((*id, s.as_ref().ok()?[r]))).collect();
            // The supplies still old at the deadline, to look at afterwards (their cache entries).
            let stale: Vec<&String> = windows.iter().filter(|(_, w)| w.is_none()).map(|(id, _)| *id).collect();
            let timeouts = stale.len();
            let windows: Vec<Option<f64>> = windows.into_iter().map(|(_, w)| w).collect();
            let window = spread(windows.iter().flatten().copied().collect());
            println!(
                "invalidation {} -> {url}: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {timeouts} timeouts ({} s)",
                self.write,
                windows.len(),
                window["p50_ms"].as_f64().unwrap_or(0.0),
                window["p99_ms"].as_f64().unwrap_or(0.0),
                window["max_ms"].as_f64().unwrap_or(0.0),
                self.deadline_secs
            );
            if timeouts > 0 {
                failure = Some(format!("{timeouts} samples in {url} never showed the new version"));
            }
            regions.push(
                json!({"read": url, "samples": windows.len(), "timeouts": timeouts, "window": window, "stale": stale}),
            );
        }
        let errors: Vec<String> =
            samples.iter().filter_map(|(_, s)| s.as_ref().err()).map(|e| format!("{e:#}")).collect();
        if let Some(e) = errors.first() {
            println!("{} samples failed, the first: {e}", errors.len());
            failure = Some(format!("{} samples failed", errors.len()));
        }
        Ok(Report {
            figures: json!({"drill": "invalidation", "write": self.write, "regions": regions, "errors": errors}),
            failure,
        })
    }

    /// Caches the supply in every read region, changes it in the write region, then times how long
    /// each read region takes to show the change (None: not within the deadline).
    async fn sample(
        &self,
        writer: &Api,
        readers: &[Api],
        user: &str,
        id: &str,
        i: usize,
    ) -> anyhow::Result<Vec<Option<f64>>> {
        let path = format!("/v1/supplies/{id}");
        let deadline = Duration::from_secs(self.deadline_secs);
        for reader in readers {
            anyhow::ensure!(
                self.poll(reader, user, &path, 1, deadline).await?.is_some(),
                "{path} never visible in {}",
                reader.base
            );
        }
        let body = json!({"amount": format!("{}", 200 + i)});
        let write = call(writer.http.patch(format!("{}{path}", writer.base)).bearer_auth(user).json(&body)).await?;
        anyhow::ensure!(write.status == 200, "update: {} {}", write.status, write.body);
        let version = write.body["version"].as_i64().unwrap_or(i64::MAX);
        let acked = Instant::now();
        let seen =
            futures::future::join_all(readers.iter().map(|r| self.poll(r, user, &path, version, deadline))).await;
        seen.into_iter().map(|s| Ok(s?.map(|at| millis(at - acked)))).collect()
    }

    /// Reads `path` without a token until it shows at least `version`; when it did.
    async fn poll(
        &self,
        api: &Api,
        user: &str,
        path: &str,
        version: i64,
        deadline: Duration,
    ) -> anyhow::Result<Option<Instant>> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            let Answer { status, body, .. } =
                call(api.http.get(format!("{}{path}", api.base)).bearer_auth(user)).await?;
            if status == 200 && body["version"].as_i64().unwrap_or(0) >= version {
                return Ok(Some(Instant::now()));
            }
            anyhow::ensure!(matches!(status, 200 | 404), "read {path}: {status} {body}");
            tokio::time::sleep(Duration::from_millis(self.poll_ms)).await;
        }
        Ok(None)
    }
}
