//! `Idempotency-Key` on `POST` (API.md): the same key with the same request answers the first
//! response again (same status, same body, `Idempotent-Replayed: true`); the same key with another
//! request is 422 `IDEMPOTENCY_KEY_REUSED`; while the first is still running, 409
//! `IDEMPOTENCY_KEY_IN_USE`.
//!
//! Keys belong to the authenticated principal and live in the database, so every instance sees them,
//! for 24 hours. The first request runs in a task of its own: a client that hangs up does not cancel
//! it, and its retry gets the recorded answer. A 5xx is not recorded (nothing was done; a retry runs
//! again). A key left running by a process that died is taken over by the same request after a minute.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use base::{ErrorCode, clock};
use storage::Database;

use crate::error::{ApiError, FieldError};
use crate::extract::BODY_LIMIT;
use crate::principal::Principal;

pub const HEADER: &str = "idempotency-key";
/// How long a key is remembered.
pub const TTL: Duration = Duration::from_secs(24 * 3600);

/// The clean-up job deletes keys past their [`TTL`].
pub const SWEEP: storage::Sweep = storage::Sweep {
    name: "idempotency_keys",
    postgres: "DELETE FROM idempotency_keys WHERE created_at < $1",
    sqlite: "DELETE FROM idempotency_keys WHERE created_at < ?1",
    keep: TTL,
};
/// A key still running after this belongs to a request whose process died.
const ABANDONED: Duration = Duration::from_secs(60);
/// Bigger answers are not recorded (none of ours comes near).
const MAX_RECORDED: usize = 256 * 1024;
/// The response headers a replay carries again.
const KEPT_HEADERS: [&str; 6] =
    ["content-type", "location", "etag", "grpc-status", "grpc-message", "grpc-status-details-bin"];
/// A gRPC answer's status, kept from its trailers (prefixed `trailer:` in the stored headers).
const KEPT_TRAILERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];
/// gRPC codes that mean "nothing was done; try again" (INTERNAL, UNAVAILABLE, UNKNOWN,
/// DEADLINE_EXCEEDED): not recorded, as a 5xx is not.
const GRPC_RETRYABLE: [&str; 4] = ["13", "14", "2", "4"];

/// Middleware for the protected routes, inside the token check.
pub async fn layer(State(db): State<Database>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(HEADER) else { return next.run(req).await };
    let key = match raw.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => k.to_string(),
        _ => {
            let e = FieldError::new("Idempotency-Key", "must be 1 to 255 visible ASCII characters");
            return ApiError::validation(vec![e]).into_response();
        }
    };
    let Some(principal) = req.extensions().get::<Principal>().map(|p| p.user_id) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        let detail = format!("the body exceeds {BODY_LIMIT} bytes");
        return ApiError::new(ErrorCode::PayloadTooLarge, detail).into_response();
    };
    let fingerprint = fingerprint(&parts.method, parts.uri.path(), &bytes);
    match begin(&db, principal, &key, &fingerprint).await {
        Ok(Begun::Started) => {}
        Ok(Begun::Replay(stored)) => return stored.into_response(),
        Ok(Begun::InUse) => {
            return ApiError::new(
                ErrorCode::IdempotencyKeyInUse,
                "a request with this Idempotency-Key is still running",
            )
            .into_response();
        }
        Ok(Begun::Reused) => {
            let detail = "was used with a different request";
            return ApiError::unprocessable_field(ErrorCode::IdempotencyKeyReused, "Idempotency-Key", detail)
                .into_response();
        }
        Err(e) => return ApiError::internal(e).into_response(),
    }
    let request = Request::from_parts(parts, Body::from(bytes));
    // The request's span (its id in every log line) goes along into the task.
    let span = tracing::Span::current();
    let run = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let response = next.run(request).await;
            let (parts, body) = response.into_parts();
            // A gRPC answer's status comes in trailers: they are kept with the body.
            let Ok(collected) = http_body_util::BodyExt::collect(body).await else {
                // The answer broke off: nothing to record (a retry runs again).
                if let Err(e) = forget(&db, principal, &key).await {
                    tracing::error!(error = format!("{e:#}"), "could not release an Idempotency-Key");
                }
                return ApiError::internal(anyhow::anyhow!("the answer's body broke off")).into_response();
            };
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let bytes = collected.to_bytes();
            let grpc_status = trailers.get("grpc-status").or_else(|| parts.headers.get("grpc-status"));
            let grpc_failed = grpc_status.is_some_and(|v| GRPC_RETRYABLE.iter().any(|c| v.as_bytes() == c.as_bytes()));
            let outcome = if parts.status.is_server_error() || grpc_failed || bytes.len() > MAX_RECORDED {
                forget(&db, principal, &key).await
            } else {
                complete(&db, principal, &key, &Stored::of(parts.status, &parts.headers, &trailers, &bytes)).await
            };
            if let Err(e) = outcome {
                // The key stays running: its retries get 409 until it is taken over as abandoned.
                tracing::error!(error = format!("{e:#}"), "could not record the answer to an Idempotency-Key");
            }
            Response::from_parts(parts, with_trailers(bytes, trailers))
        },
        span,
    ));
    match run.await {
        Ok(response) => response,
        Err(e) => ApiError::internal(anyhow::anyhow!("the request task failed: {e}")).into_response(),
    }
}

/// Adds the `Idempotency-Key` header to every authenticated `POST` of the OpenAPI document.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    for item in doc.paths.paths.values_mut() {
        let Some(op) = item.post.as_mut() else { continue };
        if op.security.as_ref().is_none_or(Vec::is_empty) {
            continue;
        }
        let header = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "A retry with the same key and request gets the first answer again (Idempotent-Replayed: true); \
                 another request under the key is 422 IDEMPOTENCY_KEY_REUSED; one still running is 409 \
                 IDEMPOTENCY_KEY_IN_USE. Kept 24 hours per user.",
            ))
            .schema(Some(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(255))))
            .build();
        op.parameters.get_or_insert_with(Vec::new).push(header.into());
    }
}

fn fingerprint(method: &Method, path: &str, body: &[u8]) -> String {
    use sha2::Digest;
    let mut ctx = sha2::Sha256::new();
    ctx.update(method.as_str().as_bytes());
    ctx.update(b" ");
    ctx.update(path.as_bytes());
    ctx.update(b"\n");
    ctx.update(body);
    hex::encode(ctx.finalize())
}

/// A recorded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    status: u16,
    /// JSON object of the kept headers.
    headers: String,
    body: Vec<u8>,
}

impl Stored {
    fn of(status: StatusCode, headers: &HeaderMap, trailers: &HeaderMap, body: &[u8]) -> Self {
        let mut kept: serde_json::Map<String, serde_json::Value> = KEPT_HEADERS
            .iter()
            .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()).map(|v| (h.to_string(), v.into())))
            .collect();
        for t in KEPT_TRAILERS {
            if let Some(v) = trailers.get(t).and_then(|v| v.to_str().ok()) {
                kept.insert(format!("trailer:{t}"), v.into());
            }
        }
        Self { status: status.as_u16(), headers: serde_json::Value::Object(kept).to_string(), body: body.to_vec() }
    }
}

impl IntoResponse for Stored {
    fn into_response(self) -> Response {
        let stored: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&self.headers).unwrap_or_default();
        let (mut headers, mut trailers) = (HeaderMap::new(), HeaderMap::new());
        for (name, value) in stored {
            let (map, name) = match name.strip_prefix("trailer:") {
                Some(t) => (&mut trailers, t),
                None => (&mut headers, name.as_str()),
            };
            if let (Ok(n), Some(Ok(v))) = (HeaderName::try_from(name), value.as_str().map(HeaderValue::from_str)) {
                map.insert(n, v);
            }
        }
        let mut response = Response::new(with_trailers(self.body.into(), trailers));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        *response.headers_mut() = headers;
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
        response
    }
}

/// A recorded row: fingerprint, status (none while running), headers, body.
/// A body of `bytes`, then `trailers` when there are any (a gRPC answer's status).
fn with_trailers(bytes: bytes::Bytes, trailers: HeaderMap) -> Body {
    if trailers.is_empty() {
        return Body::from(bytes);
    }
    let frames = vec![
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes)),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)))
}

type Row = (String, Option<u16>, Option<String>, Option<Vec<u8>>);

enum Begun {
    Started,
    Replay(Stored),
    InUse,
    Reused,
}

/// Claims the key for this request, or says why not.
async fn begin(db: &Database, principal: Uuid, key: &str, fingerprint: &str) -> anyhow::Result<Begun> {
    let now = clock::now();
    let (expired, abandoned) = (now - TTL, now - ABANDONED);
    // A new key, an expired one, or one the same request left running in a process that died.
    let (row, started) = match db {
        Database::Postgres(pool) => {
            let c = pool.get().await?;
            let started = c
                .query_opt(
                    "INSERT INTO idempotency_keys (principal_id, key, fingerprint, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (principal_id, key) DO UPDATE
                       SET fingerprint = EXCLUDED.fingerprint, created_at = EXCLUDED.created_at,
                           status = NULL, headers = NULL, body = NULL
                     WHERE idempotency_keys.created_at < $5
                        OR (idempotency_keys.status IS NULL AND idempotency_keys.created_at < $6
                            AND idempotency_keys.fingerprint = EXCLUDED.fingerprint)
                     RETURNING key",
                    &[&principal, &key, &fingerprint, &now, &expired, &abandoned],
                )
                .await?
                .is_some();
            let row = if started {
                None
            } else {
                c.query_opt(
                    "SELECT fingerprint, status, headers, body FROM idempotency_keys WHERE principal_id = $1 AND key = $2",
                    &[&principal, &key],
                )
                .await?
                .map(|r| (r.get::<_, String>(0), r.get::<_, Option<i16>>(1).map(|s| s as u16), r.get(2), r.get(3)))
            };
            (row, started)
        }
        Database::Sqlite(pool) => {
            let (key, fingerprint) = (key.to_string(), fingerprint.to_string());
            pool.call(move |c| {
                use rusqlite::OptionalExtension;
                let started = c
                    .query_row(
                        "INSERT INTO idempotency_keys (principal_id, key, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (principal_id, key) DO UPDATE
                           SET fingerprint = excluded.fingerprint, created_at = excluded.created_at,
                               status = NULL, headers = NULL, body = NULL
                         WHERE idempotency_keys.created_at < ?5
                            OR (idempotency_keys.status IS NULL AND idempotency_keys.created_at < ?6
                                AND idempotency_keys.fingerprint = excluded.fingerprint)
                         RETURNING key",
                        rusqlite::params![
                            principal.to_string(),
                            key,
                            fingerprint,
                            clock::to_text(now),
                            clock::to_text(expired),
                            clock::to_text(abandoned)
                        ],
                        |r| r.get::<_, String>(0),
                    )
                    .optional()?
                    .is_some();
                let row = if started {
                    None
                } else {
                    c.query_row(
                        "SELECT fingerprint, status, headers, body FROM idempotency_keys WHERE principal_id = ?1 AND key = ?2",
                        rusqlite::params![principal.to_string(), key],
                        |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<u16>>(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?
                };
                Ok::<_, anyhow::Error>((row, started))
            })
            .await?
        }
    };
    if started {
        return Ok(Begun::Started);
    }
    let row: Option<Row> = row;
    Ok(match row {
        // Deleted in between (its request failed): the caller retries as new.
        None => Begun::InUse,
        Some((_, None, _, _)) => Begun::InUse,
        Some((stored, Some(_), _, _)) if stored != fingerprint => Begun::Reused,
        Some((_, Some(status), headers, body)) => {
            Begun::Replay(Stored { status, headers: headers.unwrap_or_default(), body: body.unwrap_or_default() })
        }
    })
}

async fn complete(db: &Database, principal: Uuid, key: &str, stored: &Stored) -> anyhow::Result<()> {
    match db {
        Database::Postgres(pool) => {
            let c = pool.get().await?;
            c.execute(
                "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 WHERE principal_id = $1 AND key = $2",
                &[&principal, &key, &(stored.status as i16), &stored.headers, &stored.body],
            )
            .await?;
        }
        Database::Sqlite(pool) => {
            let (key, stored) = (key.to_string(), stored.clone());
            pool.call(move |c| {
                c.execute(
                    "UPDATE idempotency_keys SET status = ?3, headers = ?4, body = ?5 WHERE principal_id = ?1 AND key = ?2",
                    rusqlite::params![principal.to_string(), key, stored.status, stored.headers, stored.body],
                )?;
                Ok::<_, anyhow::Error>(())
            })
            .await?;
        }
    }
    Ok(())
}

async fn forget(db: &Database, principal: Uuid, key: &str) -> anyhow::Result<()> {
    match db {
        Database::Postgres(pool) => {
            pool.get()
                .await?
                .execute("DELETE FROM idempotency_keys WHERE principal_id = $1 AND key = $2", &[&principal, &key])
                .await?;
        }
        Database::Sqlite(pool) => {
            let key = key.to_string();
            pool.call(move |c| {
                c.execute(
                    "DELETE FROM idempotency_keys WHERE principal_id = ?1 AND key = ?2",
                    rusqlite::params![principal.to_string(), key],
                )
                .map_err(anyhow::Error::from)
            })
            .await?;
        }
    }
    Ok(())
}
