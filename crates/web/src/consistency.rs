//! Read-your-writes across regions (DESIGN D7): a successful write answers with an
//! `X-Consistency-Token`; a read that sends it back sees that write, whichever region serves it
//! (`storage::replica`). Every process on PostgreSQL sends it, whether or not it reads from a replica
//! itself: the client's next read may reach a region that does. On SQLite there is no replica, and
//! the header is neither sent nor read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Pool;
use http::{HeaderValue, Method};
use storage::Database;
use storage::replica::{TOKEN_HEADER, Token, position, with_token};

use crate::{ApiError, FieldError};

/// The primaries of the services whose reads may go to a replica.
pub struct Consistency {
    primaries: Vec<Pool>,
}

impl Consistency {
    /// From the services' databases (those on SQLite have no replica, and give no token).
    pub fn new(databases: Vec<Database>) -> Arc<Self> {
        let primaries = databases
            .into_iter()
            .filter_map(|db| match db {
                Database::Postgres(pool) => Some(pool),
                Database::Sqlite(_) => None,
            })
            .collect();
        Arc::new(Self { primaries })
    }

    /// Where the primaries are now: after a write's commit, a position that covers it.
    async fn token(&self) -> Option<Token> {
        let mut token = Token::default();
        for pool in &self.primaries {
            match position(pool).await {
                Ok(p) => token.add(p),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "no consistency token for this write"),
            }
        }
        (!token.is_empty()).then_some(token)
    }
}

/// Reads the request's token for the reads it makes; stamps a successful write's response.
pub async fn layer(State(c): State<Arc<Consistency>>, req: Request, next: Next) -> Response {
    if c.primaries.is_empty() {
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
