//! What the watcher and the signer share: a timed, counted JSON-RPC call whose errors never show the
//! node's URL, and the loop of a job that runs one at a time per chain under a lease, backing off
//! when a pass fails.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::config::ChainConfig;

/// Times and counts one JSON-RPC call (`chain_rpc_request_duration_seconds`,
/// `chain_rpc_requests_total{outcome}`); an error names the method, with the URL cut to its host.
pub async fn call<T>(
    chain: &ChainConfig,
    method: &'static str,
    call: impl Future<Output = Result<T, alloy::transports::TransportError>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let result = call.await;
    let name = chain.name.clone();
    metrics::histogram!("chain_rpc_request_duration_seconds", "chain" => name.clone(), "method" => method)
        .record(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!("chain_rpc_requests_total", "chain" => name, "method" => method, "outcome" => outcome)
        .increment(1);
    result.map_err(|e| anyhow::anyhow!("{method}: {}", chain.redact(&e.to_string())))
}

/// What a pass of a job asks of its loop.
pub enum Next {
    /// There is more to do now.
    Now,
    /// Nothing more until the next poll.
    Poll,
}

/// A job of one chain: its passes run while this process holds the job's lease.
pub trait Job: Send + Sync {
    /// `deposit watcher`, `withdrawal signer`.
    fn what(&self) -> &'static str;
    fn chain(&self) -> &ChainConfig;
    fn lease(&self) -> &storage::lease::Lease;
    fn pass(&self) -> impl Future<Output = anyhow::Result<Next>> + Send;
    /// Told how each pass went (`None`: it went well).
    fn outcome(&self, _error: Option<&str>) {}
}

/// Runs `job` until `stop`: passes as fast as they find work, else at the poll interval; after a
/// failed pass, waits twice as long each time (up to 50 poll intervals, at most 30 s).
pub async fn run(job: impl Job, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (chain, what) = (job.chain().name.clone(), job.what());
    let poll = job.chain().poll_interval;
    let max_backoff = (poll * 50).min(Duration::from_secs(30));
    let mut backoff = poll;
    tracing::info!(chain = %chain, "{what} started");
    loop {
        let wait = match job.lease().take().await {
            Ok(false) => poll * 5,
            Ok(true) => match job.pass().await {
                Ok(next) => {
                    job.outcome(None);
                    backoff = poll;
                    if matches!(next, Next::Now) { Duration::ZERO } else { poll }
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    metrics::counter!("chain_job_errors_total", "chain" => chain.clone(), "job" => what).increment(1);
                    tracing::warn!(chain = %chain, error = %error, retry_in_ms = backoff.as_millis() as u64,
                        "{what}: a pass failed; retrying");
                    job.outcome(Some(&error));
                    let wait = backoff;
                    backoff = (backoff * 2).min(max_backoff);
                    wait
                }
            },
            Err(e) => {
                tracing::warn!(chain = %chain, error = %format!("{e:#}"), "{what}: cannot take the lease");
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    if let Err(e) = job.lease().release().await {
        tracing::warn!(chain = %chain, error = %format!("{e:#}"), "{what}: releasing the lease");
    }
    tracing::info!(chain = %chain, "{what} stopped");
}
