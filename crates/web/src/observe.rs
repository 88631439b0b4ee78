//! One log line and the RED metrics per request, labelled by route pattern; a 5xx's cause is
//! logged here, once, on the request's line (which carries the request id itself).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::Instrument;

use crate::error::ErrorCause;
use crate::extract::X_REQUEST_ID;

/// One log line and the RED metrics per request, labelled by route pattern; logs a 5xx's cause.
pub async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method()).to_string();
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let request_id = req.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let span = tracing::info_span!("request", request.id = %request_id, http.method = %method, http.route = %route);
    base::trace::continue_from(&span, req.headers().get("traceparent").and_then(|v| v.to_str().ok()));
    let res = next.run(req).instrument(span).await;
    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    // The request's own line carries the span's fields itself, outside the span (lines inside it
    // get them from the span).
    let (id, m, r) = (request_id.as_str(), method.as_str(), route.as_str());
    let cause = res.extensions().get::<ErrorCause>().map(|ErrorCause(cause)| format!("{cause:#}"));
    if cause.is_some() || status >= 500 {
        let error = cause.as_deref();
        tracing::error!(
            request.id = id,
            http.method = m,
            http.route = r,
            http.status = status,
            duration_ms,
            error,
            "request failed"
        );
    } else {
        tracing::info!(request.id = id, http.method = m, http.route = r, http.status = status, duration_ms, "request");
    }
    let labels = [("method", method), ("route", route), ("status", status.to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    res
}

/// The method as a metrics label: the standard ones by name, anything a client invents as `other`,
/// so a client cannot create series at will.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN.iter().find(|m| *m == method).map_or("other", Method::as_str)
}

/// Fresh request ids without a system call each (`Uuid::new_v4` asks the kernel for random bytes
/// every time): a random prefix drawn once per process and a counter, laid out as a version-4 UUID.
/// Ids name requests in logs and events; they need to be unique, not secret.
#[derive(Clone)]
pub struct RequestIds(Arc<(u64, AtomicU64)>);

impl RequestIds {
    pub fn new() -> Self {
        Self(Arc::new((uuid::Uuid::new_v4().as_u64_pair().0, AtomicU64::new(0))))
    }

    fn next(&self) -> uuid::Uuid {
        let n = self.0.1.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.0.0.to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = self.next().hyphenated().to_string();
        axum::http::HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Drops an `x-request-id` that is not a short token (1 to 64 of `A-Z a-z 0-9 - _ . :`), so the
/// request gets a fresh one: the id is echoed, logged on every line and stored in every event.
pub async fn drop_bad_request_id(mut req: Request, next: Next) -> Response {
    let acceptable = |v: &axum::http::HeaderValue| {
        let b = v.as_bytes();
        (1..=64).contains(&b.len()) && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
    };
    if req.headers().get(&X_REQUEST_ID).is_some_and(|v| !acceptable(v)) {
        req.headers_mut().remove(&X_REQUEST_ID);
    }
    next.run(req).await
}

/// A layer that turns a panic in a handler into a 500 problem+json (instead of a dropped
/// connection): the panic's message goes to the log line [`observe`] writes, inside the request's
/// span with its id, and `http_panics_total` counts it. Put it inside [`observe`].
pub fn catch_panic() -> tower_http::catch_panic::CatchPanicLayer<fn(Box<dyn std::any::Any + Send>) -> Response> {
    tower_http::catch_panic::CatchPanicLayer::custom(panic_response as fn(Box<dyn std::any::Any + Send>) -> Response)
}

fn panic_response(panic: Box<dyn std::any::Any + Send>) -> Response {
    use axum::response::IntoResponse;
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    metrics::counter!("http_panics_total").increment(1);
    crate::ApiError::internal(anyhow::anyhow!("the handler panicked: {message}")).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_problem_json() {
        #[allow(clippy::panic, unreachable_code, reason = "the handler under test panics")]
        async fn boom() -> &'static str {
            panic!("boom");
        }
        let app = axum::Router::new()
            .route("/boom", get(boom))
            .layer(catch_panic())
            .layer(axum::middleware::from_fn(observe));
        let res = app.oneshot(Request::builder().uri("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), 500);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let body = axum::body::to_bytes(res.into_body(), 10_000).await.unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "INTERNAL");
        assert!(!problem.to_string().contains("boom"), "the panic's message stays in the log: {problem}");
    }
}

#[cfg(test)]
mod request_id_tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_version_4_uuids_and_differ_between_processes() {
        let ids = RequestIds::new();
        let mut seen: Vec<uuid::Uuid> = (0..10_000).map(|_| ids.next()).collect();
        assert!(seen.iter().all(|u| u.get_version_num() == 4 && u.get_variant() == uuid::Variant::RFC4122));
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 10_000);
        // Another process (another prefix) does not repeat this one's ids: both start at counter 0.
        assert_ne!(RequestIds::new().next(), RequestIds::new().next());
    }
}
