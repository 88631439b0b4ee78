//! Deadlines on every request: its body must arrive within one, the whole request must be answered
//! within another. A client that sends a byte every ten seconds, or a dependency that hangs, holds a
//! task and a connection for a bounded time, and the caller gets a problem+json saying which.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base::ErrorCode;

use crate::error::ApiError;
use crate::extract::BODY_LIMIT;

/// How long a body may take to arrive, and a whole request to be answered.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub body: Duration,
    pub request: Duration,
}

/// Reads the body within [`Deadlines::body`] (408 `REQUEST_TIMEOUT` after, and the connection is
/// closed), then answers within [`Deadlines::request`] of the start (503 `UNAVAILABLE` with
/// `Retry-After` after; the handler is dropped, so its transaction rolls back).
pub async fn deadlines(State(d): State<Deadlines>, req: Request, next: Next) -> Response {
    let started = tokio::time::Instant::now();
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(d.body, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return unreadable(&e),
        Err(_) => {
            metrics::counter!("http_timeouts_total", "kind" => "body").increment(1);
            let detail = format!("the request body did not arrive within {} ms", d.body.as_millis());
            let mut res = ApiError::new(ErrorCode::RequestTimeout, detail).into_response();
            res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return res;
        }
    };
    let req = Request::from_parts(parts, Body::from(bytes));
    match tokio::time::timeout_at(started + d.request, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            metrics::counter!("http_timeouts_total", "kind" => "request").increment(1);
            tracing::warn!(timeout_ms = d.request.as_millis(), "request timed out");
            let detail = format!("the request was not answered within {} ms; retry later", d.request.as_millis());
            let mut res = ApiError::new(ErrorCode::Unavailable, detail).into_response();
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
    }
}

/// A body over the limit is 413; one that breaks off (the client went away) is 400.
fn unreadable(e: &axum::Error) -> Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            let detail = format!("the body exceeds {BODY_LIMIT} bytes");
            return ApiError::new(ErrorCode::PayloadTooLarge, detail).into_response();
        }
        source = err.source();
    }
    ApiError::new(ErrorCode::BadRequest, "the request body could not be read").into_response()
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use axum::body::Bytes;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    fn app() -> axum::Router {
        let d = Deadlines { body: Duration::from_secs(10), request: Duration::from_secs(30) };
        axum::Router::new()
            .route("/hang", get(pending::<&'static str>))
            .route("/echo", post(|body: Bytes| async move { body }))
            .layer(axum::middleware::from_fn_with_state(d, deadlines))
    }

    async fn problem(res: Response) -> serde_json::Value {
        let body = axum::body::to_bytes(res.into_body(), 10_000).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_is_not_answered_in_time_is_503_with_retry_after() {
        let res = app().oneshot(Request::builder().uri("/hang").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "1");
        assert_eq!(problem(res).await["code"], "UNAVAILABLE");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_does_not_arrive_in_time_is_408_and_closes_the_connection() {
        let never = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let req = Request::builder().method("POST").uri("/echo").body(Body::from_stream(never)).unwrap();
        let res = app().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 408);
        assert_eq!(res.headers()["connection"], "close");
        assert_eq!(problem(res).await["code"], "REQUEST_TIMEOUT");
    }

    #[tokio::test]
    async fn a_body_in_time_reaches_the_handler_and_one_too_large_is_413() {
        let req = Request::builder().method("POST").uri("/echo").body(Body::from("hello")).unwrap();
        let res = app().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(axum::body::to_bytes(res.into_body(), 100).await.unwrap(), "hello");
        let big = vec![b'x'; BODY_LIMIT + 1];
        let req = Request::builder().method("POST").uri("/echo").body(Body::from(big)).unwrap();
        let res = app().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 413);
        assert_eq!(problem(res).await["code"], "PAYLOAD_TOO_LARGE");
    }
}
