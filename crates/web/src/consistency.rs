//! Read-your-writes across regions (DESIGN D7): a successful write answers with an
//! `X-Consistency-Token`; a read that sends it back sees that write, whichever region serves it
//! (`storage::replica`). Only when the process reads from a replica: otherwise every read is the
//! primary's and the header is neither sent nor read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method};
use storage::replica::{Replica, TOKEN_HEADER, Token, with_token};

use crate::{ApiError, FieldError};

/// The replicas this process reads from (each knows its primary).
pub struct Consistency {
    replicas: Vec<Arc<Replica>>,
}

impl Consistency {
    pub fn new(replicas: Vec<Arc<Replica>>) -> Arc<Self> {
        Arc::new(Self { replicas })
    }

    /// Where the primaries are now: after a write's commit, a position that covers it.
    async fn token(&self) -> Option<Token> {
        let mut token = Token::default();
        for r in &self.replicas {
            match r.primary_position().await {
                Ok(p) => token.add(p),
                Err(e) => {
                    tracing::warn!(replica = r.name(), error = format!("{e:#}"), "no consistency token for this write")
                }
            }
        }
        (!token.is_empty()).then_some(token)
    }
}

/// Reads the request's token for the reads it makes; stamps a successful write's response.
pub async fn layer(State(c): State<Arc<Consistency>>, req: Request, next: Next) -> Response {
    if c.replicas.is_empty() {
        return next.run(req).await;
    }
    let token = match req.headers().get(TOKEN_HEADER) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(Token::parse) {
            Some(t) => Some(t),
            None => {
                let e =
                    FieldError::new("X-Consistency-Token", "must be a token from a write's response, as it was sent");
                return ApiError::validation(vec![e]).into_response();
            }
        },
    };
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let mut res = with_token(token, next.run(req)).await;
    if writes
        && res.status().is_success()
        && let Some(token) = c.token().await
        && let Ok(value) = HeaderValue::from_str(&token.encode())
    {
        res.headers_mut().insert(TOKEN_HEADER, value);
    }
    res
}
