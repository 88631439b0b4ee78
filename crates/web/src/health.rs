//! Liveness and readiness (DESIGN D8): ready means every dependency the running services need answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use storage::Database;

/// The dependencies readiness checks, and the last answer: `/health/ready` is unauthenticated, so
/// however often it is called, the dependencies are checked at most once per [`READY_FOR`] and
/// concurrent calls wait for that one check.
pub struct Readiness {
    database: Database,
    /// Reported, never failing: without the cache, reads go to the database.
    cache: Arc<dyn Reported>,
    /// Reported in the body, never failing: e.g. each chain's lag.
    details: Vec<(&'static str, Arc<dyn Detail>)>,
    last: tokio::sync::Mutex<Option<(Instant, StatusCode, serde_json::Value)>>,
}

/// How long a readiness answer is reused.
pub const READY_FOR: Duration = Duration::from_secs(1);

impl Readiness {
    pub fn new(database: Database, cache: Arc<dyn Reported>) -> Self {
        Self { database, cache, details: Vec::new(), last: tokio::sync::Mutex::new(None) }
    }

    /// Adds `name` to every answer's body, as `detail` reports it (never failing readiness).
    pub fn with_detail(mut self, name: &'static str, detail: Arc<dyn Detail>) -> Self {
        self.details.push((name, detail));
        self
    }
}

/// Something readiness shows without judging it.
pub trait Detail: Send + Sync {
    fn detail(&self) -> serde_json::Value;
}

/// A dependency whose state readiness reports without failing on it (`ok`, `degraded`, ...).
#[async_trait::async_trait]
pub trait Reported: Send + Sync {
    async fn status(&self) -> &'static str;
}

/// `/health/live` and `/health/ready`.
pub fn router(readiness: Readiness) -> axum::Router {
    axum::Router::new()
        .route("/health/live", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/health/ready", get(ready))
        .with_state(Arc::new(readiness))
}

async fn ready(State(r): State<Arc<Readiness>>) -> impl IntoResponse {
    let mut last = r.last.lock().await;
    if let Some((at, status, body)) = last.as_ref()
        && at.elapsed() < READY_FOR
    {
        return (*status, Json(body.clone()));
    }
    let (status, body) = check(&r).await;
    *last = Some((Instant::now(), status, body.clone()));
    (status, Json(body))
}

async fn check(r: &Readiness) -> (StatusCode, serde_json::Value) {
    metrics::counter!("health_ready_checks_total").increment(1);
    let db = match tokio::time::timeout(Duration::from_secs(2), r.database.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("timed out".to_string()),
    };
    let cache = r.cache.status().await;
    let (status, mut body) = match db {
        Ok(()) => (StatusCode::OK, serde_json::json!({"status": "ok", "checks": {"database": "ok", "cache": cache}})),
        Err(reason) => {
            tracing::warn!(check = "database", reason = %reason, "not ready");
            let checks = serde_json::json!({"database": "failing", "cache": cache});
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "unavailable", "checks": checks, "failing": ["database"]}),
            )
        }
    };
    if let Some(map) = body.as_object_mut() {
        for (name, d) in &r.details {
            map.insert((*name).to_string(), d.detail());
        }
    }
    (status, body)
}
