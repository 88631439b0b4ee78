//! HTTP plumbing shared by every service: extractors that answer bad input with problem+json
//! naming the field, request ids, and the per-request log line and RED metrics.

use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::{ApiError, ErrorCause, FieldError};

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
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    format!("the body exceeds {BODY_LIMIT} bytes"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", "could not read the request body")
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
            ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_JSON", format!("the body is not valid JSON: {inner}"))
        }
    })?;
    de.end().map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_JSON", "trailing characters after the JSON body")
    })?;
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

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_address() {
        let t = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7,::1").unwrap();
        let ip = |s: &str| s.parse().unwrap();
        // An untrusted peer's header is ignored.
        assert_eq!(t.client_ip(ip("203.0.113.9"), &xff("1.2.3.4")), ip("203.0.113.9"));
        // Through one trusted proxy.
        assert_eq!(t.client_ip(ip("10.1.2.3"), &xff("198.51.100.4")), ip("198.51.100.4"));
        // A client that forges the left of the header does not choose its address.
        assert_eq!(t.client_ip(ip("10.1.2.3"), &xff("1.1.1.1, 198.51.100.4, 192.168.1.7")), ip("198.51.100.4"));
        // A trusted peer without the header is the client.
        assert_eq!(t.client_ip(ip("::1"), &HeaderMap::new()), ip("::1"));
        assert!(t.contains(ip("10.255.0.1")) && !t.contains(ip("11.0.0.1")) && !t.contains(ip("192.168.1.8")));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err() && TrustedProxies::parse("nope").is_err());
    }

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

/// The proxies (load balancers) whose `X-Forwarded-For` is believed: CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(std::net::IpAddr, u8)>);

impl TrustedProxies {
    /// `10.0.0.0/8,192.168.1.7` (a bare address is one host).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = item.split_once('/').unwrap_or((item, ""));
            let ip: std::net::IpAddr = addr.parse().map_err(|_| format!("`{item}` is not an address or CIDR block"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = if bits.is_empty() { max } else { bits.parse().map_err(|_| format!("`{item}`: bad prefix"))? };
            if bits > max {
                return Err(format!("`{item}`: the prefix is longer than the address"));
            }
            out.push((ip, bits));
        }
        Ok(Self(out))
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), *bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), *bits),
            _ => false,
        })
    }

    /// The client's address: the peer, unless the peer is a trusted proxy; then the nearest address
    /// in `X-Forwarded-For` that is not a trusted proxy (what the client itself wrote further left
    /// cannot be believed).
    pub fn client_ip(&self, peer: std::net::IpAddr, headers: &axum::http::HeaderMap) -> std::net::IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let chain: Vec<std::net::IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map_while(|s| s.trim().parse().ok())
            .collect();
        chain.iter().rev().find(|ip| !self.contains(**ip)).or(chain.first()).copied().unwrap_or(peer)
    }
}

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self.0.iter().map(|(ip, bits)| format!("{ip}/{bits}")).collect();
        f.write_str(&items.join(","))
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}
