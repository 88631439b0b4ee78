//! The clean-up job: every `WALLETD_CLEANUP_INTERVAL_SECS`, each crate's sweeps once (expired
//! nonces and sessions, idempotency keys past their day, handled-event ids past the inbox
//! retention). Every instance runs it; a deletion another instance already made removes nothing.

use std::sync::Arc;
use std::time::Duration;

use base::Clock;
use settings::Settings;
use storage::{Database, Sweep};

/// Every sweep, with the retentions the settings give, on the database that holds its table:
/// identity's on the identity database, idempotency keys on the main one, the inbox on every
/// database a consumer keeps its inbox in.
pub fn sweeps(
    settings: &Settings,
    main: &Database,
    identity: &Database,
    inboxes: &[Database],
) -> Vec<(Database, Vec<Sweep>)> {
    let mut plan: Vec<(Database, Vec<Sweep>)> = Vec::new();
    let mut add = |db: &Database, sweep: Sweep| match plan.iter_mut().find(|(d, _)| d.same_as(db)) {
        Some((_, list)) => list.push(sweep),
        None => plan.push((db.clone(), vec![sweep])),
    };
    for sweep in identity::db::SWEEPS {
        add(identity, sweep);
    }
    add(main, web::idempotency::SWEEP);
    let mut seen: Vec<&Database> = Vec::new();
    for db in inboxes {
        if !seen.iter().any(|d| d.same_as(db)) {
            seen.push(db);
            add(db, events::delivery::INBOX_SWEEP.keeping(settings.inbox_retention));
        }
    }
    plan
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
