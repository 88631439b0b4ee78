//! A circuit breaker on the database, at the edge: once requests keep failing because the database
//! cannot be reached (each waits out the pool's acquire timeout), further requests are answered 503
//! `UNAVAILABLE` at once for a cool-down instead of piling up behind the same wait; after it, requests
//! go through again and the first answer that is not such a failure closes the breaker.
//!
//! `db_breaker_open` is 1 while it answers for the database, and
//! `db_breaker_rejections_total` counts the requests it answered.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base::ErrorCode;

use crate::error::{ApiError, ErrorCause};

/// The breaker of one process's database.
pub struct DbBreaker {
    failures_to_open: u32,
    cooldown: Duration,
    state: Mutex<State_>,
}

#[derive(Default)]
struct State_ {
    failures: u32,
    open_until: Option<Instant>,
}

impl DbBreaker {
    /// Opens after `failures_to_open` requests in a row failed for the database; answers for
    /// `cooldown`, then lets requests try again.
    pub fn new(failures_to_open: u32, cooldown: Duration) -> Arc<Self> {
        // Exported from the start, so "closed" is a value and not a missing series.
        metrics::gauge!("db_breaker_open").set(0.0);
        Arc::new(Self { failures_to_open, cooldown, state: Mutex::new(State_::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a request may go through now.
    pub fn admits(&self) -> bool {
        self.lock().open_until.is_none_or(|until| Instant::now() >= until)
    }

    /// Records how a request that went through ended.
    pub fn record(&self, database_unreachable: bool) {
        let mut s = self.lock();
        if !database_unreachable {
            if s.open_until.take().is_some() {
                tracing::info!("database breaker closed: the database answers again");
                metrics::gauge!("db_breaker_open").set(0.0);
            }
            s.failures = 0;
            return;
        }
        s.failures += 1;
        if s.failures >= self.failures_to_open {
            if s.open_until.is_none() {
                tracing::warn!(failures = s.failures, "database breaker open: answering 503 at once for a while");
                metrics::gauge!("db_breaker_open").set(1.0);
            }
            s.open_until = Some(Instant::now() + self.cooldown);
        }
    }
}

/// Middleware: answers 503 at once while the breaker is open; otherwise runs the request and records
/// whether it failed because the database could not be reached.
pub async fn layer(State(breaker): State<Arc<DbBreaker>>, req: Request, next: Next) -> Response {
    if !breaker.admits() {
        metrics::counter!("db_breaker_rejections_total").increment(1);
        return ApiError::new(ErrorCode::Unavailable, "the database is unreachable; retry after the Retry-After delay")
            .into_response();
    }
    let res = next.run(req).await;
    // A gRPC answer carries its status in the body's trailers, not its cause: it counts for
    // neither side (REST requests decide; the breaker's answers reach gRPC callers too).
    let grpc = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return res;
    }
    let unreachable = res.status() == StatusCode::SERVICE_UNAVAILABLE
        && res
            .extensions()
            .get::<ErrorCause>()
            .is_some_and(|ErrorCause(cause)| crate::error::is_database_unreachable(cause));
    breaker.record(unreachable);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_and_closes_on_a_good_answer() {
        let b = DbBreaker::new(3, Duration::from_secs(3600));
        b.record(true);
        b.record(true);
        b.record(false);
        b.record(true);
        b.record(true);
        assert!(b.admits(), "two in a row since the last good answer");
        b.record(true);
        assert!(!b.admits(), "three in a row open it");
        let b = DbBreaker::new(1, Duration::ZERO);
        b.record(true);
        assert!(b.admits(), "after the cool-down requests try again");
        b.record(false);
        assert!(b.lock().open_until.is_none() && b.lock().failures == 0);
    }
}
