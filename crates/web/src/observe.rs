//! One log line and the RED metrics per request, labelled by route pattern; a 5xx's cause is
//! logged here, once, inside the request's span.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::error::ErrorCause;
use crate::extract::X_REQUEST_ID;

/// One log line and the RED metrics per request, labelled by route pattern; logs a 5xx's cause.
pub async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let request_id = req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let span = tracing::info_span!("request", request.id = %request_id, http.method = %method, http.route = %route);
    let res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    let labels = [("method", method), ("route", route), ("status", status.to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let _entered = span.enter();
    if let Some(ErrorCause(cause)) = res.extensions().get::<ErrorCause>() {
        tracing::error!(http.status = status, duration_ms, error = format!("{cause:#}"), "request failed");
    } else if status >= 500 {
        tracing::error!(http.status = status, duration_ms, "request failed");
    } else {
        tracing::info!(http.status = status, duration_ms, "request");
    }
    res
}
