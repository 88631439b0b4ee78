//! Extractors that answer bad input with problem+json naming the field, the request id, and the
//! `ETag`/`If-Match` pair.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use base::ErrorCode;

use crate::error::{ApiError, FieldError};

/// The request id header, in and out.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body: 415 without a JSON content type, 413 over the limit, 400 when malformed,
/// 422 naming the field when the shape or a type is wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(ErrorCode::UnsupportedMediaType, "expected Content-Type: application/json"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, format!("the body exceeds {BODY_LIMIT} bytes"))
            } else {
                ApiError::new(ErrorCode::BadRequest, "could not read the request body")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserialises a JSON document, mapping serde's failure to a field-naming problem.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            field_error(&path, &inner.to_string(), "body")
        } else {
            ApiError::new(ErrorCode::MalformedJson, format!("the body is not valid JSON: {inner}"))
        }
    })?;
    de.end().map_err(|_| ApiError::new(ErrorCode::MalformedJson, "trailing characters after the JSON body"))?;
    Ok(value)
}

/// 422 naming the field serde stopped at.
fn field_error(path: &str, message: &str, root: &str) -> ApiError {
    let message = message.split(" at line ").next().unwrap_or(message).to_string();
    // serde reports a missing field at its parent; an unknown field's path already ends with it.
    let missing = message
        .split_once("missing field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name.to_string());
    let field = match (path, missing) {
        (".", Some(n)) => n,
        (".", None) => root.to_string(),
        (p, Some(n)) => format!("{p}.{n}"),
        (p, None) => p.to_string(),
    };
    ApiError::validation(vec![FieldError::new(field, message)])
}

/// Query parameters: 422 naming the parameter when one does not parse.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let path = e.path().to_string();
            field_error(&path, &e.into_inner().to_string(), "query")
        })
    }
}

/// A UUID path parameter: 422 naming it when it is not a UUID.
pub struct IdPath(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("resource"))?;
        let (name, value) = params.iter().next().ok_or_else(|| ApiError::not_found("resource"))?;
        value.parse().map(IdPath).map_err(|_| ApiError::validation(vec![FieldError::new(name, "must be a UUID")]))
    }
}

/// Reads `If-Match` (`"3"`, `W/"3"` or `*`); a malformed one is 422.
pub fn if_match(headers: &axum::http::HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let raw = value.to_str().unwrap_or("").trim();
    if raw == "*" {
        return Ok(None);
    }
    raw.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| ApiError::validation(vec![FieldError::new("If-Match", "must be an ETag such as \"3\"")]))
}

/// A JSON answer with the resource's version as its `ETag`.
pub fn with_etag<T: serde::Serialize>(status: StatusCode, version: i64, body: T) -> Response {
    use axum::response::IntoResponse;
    let etag = axum::http::HeaderValue::from_str(&format!("\"{version}\"")).ok();
    let mut res = (status, axum::Json(body)).into_response();
    if let Some(etag) = etag {
        res.headers_mut().insert(header::ETAG, etag);
    }
    res
}

/// The request id (ours or the caller's), as a correlation id for events.
#[derive(Debug, Clone)]
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(parts.headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_string)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        amount: String,
        nested: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        qty: u32,
    }

    fn field_of(json: &str) -> (u16, String) {
        match parse_json::<Body>(json.as_bytes()) {
            Ok(_) => (200, String::new()),
            Err(e) => (e.status.as_u16(), e.errors.first().map(|f| f.field.clone()).unwrap_or_default()),
        }
    }

    #[test]
    fn bad_bodies_name_the_field() {
        assert_eq!(field_of(r#"{"amount": 5}"#), (422, "amount".into()));
        assert_eq!(field_of(r#"{}"#), (422, "amount".into()));
        assert_eq!(field_of(r#"{"amount": "1", "x": 1}"#), (422, "x".into()));
        assert_eq!(field_of(r#"{"amount": "1", "nested": {"qty": "a"}}"#), (422, "nested.qty".into()));
        assert_eq!(field_of(r#"{"amount": "#), (400, String::new()));
        assert_eq!(field_of(r#"[1]"#).0, 422);
        assert_eq!(field_of(r#"{"amount": "1"} x"#).0, 400);
    }
}
