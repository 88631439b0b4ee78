//! Liveness and readiness (DESIGN D8): ready means every dependency the running services need answers.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use storage::Database;

/// The dependencies readiness checks.
#[derive(Clone)]
pub struct Readiness {
    pub database: Database,
    /// Reported, never failing: without the cache, reads go to the database.
    pub cache: Arc<dyn Reported>,
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
    let db = match tokio::time::timeout(Duration::from_secs(2), r.database.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("timed out".to_string()),
    };
    let cache = r.cache.status().await;
    match db {
        Ok(()) => {
            (StatusCode::OK, Json(serde_json::json!({"status": "ok", "checks": {"database": "ok", "cache": cache}})))
        }
        Err(reason) => {
            tracing::warn!(check = "database", reason = %reason, "not ready");
            let checks = serde_json::json!({"database": "failing", "cache": cache});
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable", "checks": checks, "failing": ["database"]})),
            )
        }
    }
}
