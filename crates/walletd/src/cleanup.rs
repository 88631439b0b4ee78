//! The clean-up job: every `WALLETD_CLEANUP_INTERVAL_SECS`, each crate's sweeps once (expired
//! nonces and sessions, idempotency keys past their day, handled-event ids past the inbox
//! retention). Every instance runs it; a deletion another instance already made removes nothing.

use std::sync::Arc;
use std::time::Duration;

use base::Clock;
use settings::Settings;
use storage::{Database, Sweep};

/// Every sweep, with the retentions the settings give.
pub fn sweeps(settings: &Settings) -> Vec<Sweep> {
    let mut all = identity::db::SWEEPS.to_vec();
    all.push(web::idempotency::SWEEP);
    all.push(events::delivery::INBOX_SWEEP.keeping(settings.inbox_retention));
    all
}

/// Runs the sweeps now and then every `interval` until `stop` turns true. What each removed is
/// counted in `cleanup_removed_total{table}`; a failure is logged and tried again next time.
pub async fn run(
    db: Database,
    sweeps: Vec<Sweep>,
    interval: Duration,
    clock: Arc<dyn Clock>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        for sweep in &sweeps {
            match db.sweep(sweep, clock.now()).await {
                Ok(removed) => {
                    metrics::counter!("cleanup_removed_total", "table" => sweep.name).increment(removed);
                    if removed > 0 {
                        tracing::info!(table = sweep.name, removed, "cleaned up");
                    }
                }
                Err(e) => {
                    tracing::warn!(table = sweep.name, error = format!("{e:#}"), "clean-up failed; trying again later")
                }
            }
        }
        metrics::counter!("cleanup_runs_total").increment(1);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
    }
}
