//! What every gRPC server of walletd shares.

use std::str::FromStr;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base::ErrorCode;
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use uuid::Uuid;
use web::extract::{RequestId, X_REQUEST_ID};
use web::{ApiError, FieldError, Principal, Problem};

/// The `domain` of every `google.rpc.ErrorInfo` walletd sends.
pub const ERROR_DOMAIN: &str = "walletd.dev";

/// The gRPC code for an HTTP status of the REST contract.
pub fn code_of(http: u16) -> Code {
    match http {
        400 | 413 | 415 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        504 | 408 => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// A gRPC status with the stable code (`ErrorInfo.reason`, and `http_status` in its metadata) and
/// the bad fields (`BadRequest`) in the details, as REST's problem+json carries them.
pub fn status_of_problem(p: &Problem) -> Status {
    let mut details = ErrorDetails::with_error_info(
        p.code.clone(),
        ERROR_DOMAIN,
        [("http_status".to_string(), p.status.to_string())].into_iter().collect::<std::collections::HashMap<_, _>>(),
    );
    if !p.errors.is_empty() {
        details.set_bad_request(
            p.errors.iter().map(|e| FieldViolation::new(e.field.clone(), e.message.clone())).collect::<Vec<_>>(),
        );
    }
    Status::with_error_details(code_of(p.status), p.detail.clone(), details)
}

/// An [`ApiError`] as a gRPC status; a 5xx's cause is logged here, once (the client sees only the
/// generic message).
pub fn status(e: ApiError) -> Status {
    if let Some(cause) = e.cause() {
        tracing::error!(code = e.code.as_str(), error = format!("{cause:#}"), "rpc failed");
    }
    status_of_problem(&e.problem())
}

/// Converts a result of the service layer.
pub fn answer<T>(r: Result<T, ApiError>) -> Result<tonic::Response<T>, Status> {
    r.map(tonic::Response::new).map_err(status)
}

/// The authenticated caller (the token middleware put it there), or UNAUTHENTICATED.
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, Status> {
    req.extensions().get::<Principal>().cloned().ok_or_else(|| {
        status(ApiError::new(ErrorCode::Unauthenticated, "a bearer token is required in the authorization metadata"))
    })
}

/// The caller with role `service`, for the steps one service asks of another.
pub fn service_principal<T>(req: &tonic::Request<T>) -> Result<Principal, Status> {
    let who = principal(req)?;
    if who.roles.contains(&web::Role::Service) {
        Ok(who)
    } else {
        Err(status(ApiError::forbidden("role service required")))
    }
}

/// The request id of the call (`x-request-id` metadata, set by the edge when the caller sent none).
pub fn request_id<T>(req: &tonic::Request<T>) -> RequestId {
    RequestId(req.metadata().get(X_REQUEST_ID.as_str()).and_then(|v| v.to_str().ok()).map(str::to_string))
}

/// A UUID field of a request, or INVALID_ARGUMENT naming it.
pub fn uuid(field: &str, value: &str) -> Result<Uuid, Status> {
    Uuid::from_str(value).map_err(|_| {
        status(ApiError::validation(vec![FieldError::new(field, format!("must be a UUID, not {value:?}"))]))
    })
}

/// An optional UUID field.
pub fn opt_uuid(field: &str, value: Option<&str>) -> Result<Option<Uuid>, Status> {
    value.map(|v| uuid(field, v)).transpose()
}

/// A decimal amount field (the domain checks the asset's decimals), or INVALID_ARGUMENT naming it.
pub fn decimal(field: &str, value: &str) -> Result<rust_decimal::Decimal, Status> {
    rust_decimal::Decimal::from_str(value).map_err(|_| {
        status(ApiError::validation(vec![FieldError::new(field, format!("must be a decimal string, not {value:?}"))]))
    })
}

/// A REST view as its gRPC message: the messages mirror the REST bodies field for field (amounts
/// and times as strings), so one is the other re-encoded.
pub fn message<V: Serialize, M: DeserializeOwned>(view: &V) -> Result<M, Status> {
    serde_json::to_value(view)
        .and_then(serde_json::from_value)
        .map_err(|e| status(ApiError::internal(anyhow::anyhow!("a view does not fit its message: {e}"))))
}

/// Middleware around the gRPC routes: a refusal of the REST stack's middleware (a missing token, a
/// rate limit, an `idempotency-key` in use) is problem+json; it leaves as a gRPC status instead.
pub async fn problem_as_status(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let is_problem = res
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !is_problem {
        return res;
    }
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let status = match serde_json::from_slice::<ProblemIn>(&bytes) {
        Ok(p) => status_of_problem(&Problem {
            kind: String::new(),
            title: String::new(),
            status: p.status,
            detail: p.detail,
            code: p.code,
            errors: p.errors.into_iter().map(|e| FieldError::new(e.field, e.message)).collect(),
        }),
        Err(_) => Status::new(code_of(parts.status.as_u16()), "refused"),
    };
    let mut out = status.into_http::<axum::body::Body>().into_response();
    // The cause of a 5xx travels on to the access log.
    *out.extensions_mut() = parts.extensions;
    for name in ["retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", X_REQUEST_ID.as_str()] {
        if let Some(v) = parts.headers.get(name) {
            out.headers_mut().insert(http::HeaderName::from_static(name), v.clone());
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct ProblemIn {
    status: u16,
    detail: String,
    code: String,
    #[serde(default)]
    errors: Vec<FieldIn>,
}

#[derive(serde::Deserialize)]
struct FieldIn {
    field: String,
    message: String,
}

/// Middleware around the gRPC routes: per RPC, `grpc_server_requests_total{service, method, code}`
/// and `grpc_server_request_duration_seconds{service, method}`. A method this server does not have
/// counts as `unknown`, so a client cannot create series at will.
pub async fn metered(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let path = req.uri().path().to_string();
    // One span per call, inside the request's (which continued the caller's `traceparent`), with
    // the request id, so the call's log lines carry it; an unknown method is `unknown`, as below.
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let rpc_method = if known_methods().contains(path.as_str()) { path.as_str() } else { "unknown" };
    let span = tracing::info_span!("grpc", request.id = %request_id, rpc.method = %rpc_method);
    let res = tracing::Instrument::instrument(next.run(req), span).await;
    // A unary call's status is in the trailers when it succeeded, in the headers when it did not.
    let code = res
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32);
    let (service, method) = match path.trim_start_matches('/').split_once('/') {
        Some((s, m)) if known_methods().contains(path.as_str()) => (s.to_string(), m.to_string()),
        _ => ("unknown".to_string(), "unknown".to_string()),
    };
    let elapsed = start.elapsed().as_secs_f64();
    let code = format!("{code:?}");
    metrics::counter!("grpc_server_requests_total", "service" => service.clone(), "method" => method.clone(), "code" => code)
        .increment(1);
    metrics::histogram!("grpc_server_request_duration_seconds", "service" => service, "method" => method)
        .record(elapsed);
    res
}

/// Every method path walletd serves (`/walletd.v1.SupplyService/GetSupply`, health, reflection).
fn known_methods() -> &'static std::collections::HashSet<String> {
    static KNOWN: std::sync::OnceLock<std::collections::HashSet<String>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known: std::collections::HashSet<String> = [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        if let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(crate::DESCRIPTOR_SET) {
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = service.name.unwrap_or_default();
                    for method in service.method {
                        known.insert(format!("/{package}.{name}/{}", method.name.unwrap_or_default()));
                    }
                }
            }
        }
        known
    })
}

/// gRPC health checking: one entry per service this process serves (and `""` for the whole
/// server), all SERVING while the process runs.
pub async fn health(
    services: &[&str],
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, server) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    for s in services {
        reporter.set_service_status(*s, tonic_health::ServingStatus::Serving).await;
    }
    server
}

/// Server reflection, v1 and v1alpha (grpcurl and older tools ask the latter).
pub fn reflection() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
)> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// Any failure as INTERNAL (UNAVAILABLE when the database is out of reach), its cause logged.
pub fn internal(e: anyhow::Error) -> Status {
    status(ApiError::internal(e))
}

/// The event context a service-to-service step carries (the region, correlation and actor of the
/// request that caused it), or INVALID_ARGUMENT naming `context`.
pub fn event_context(c: Option<crate::v1::EventContext>) -> Result<events::EventContext, Status> {
    let c = c.ok_or_else(|| status(ApiError::validation(vec![FieldError::new("context", "is required")])))?;
    Ok(events::EventContext {
        region: c.region,
        correlation_id: (!c.correlation_id.is_empty()).then_some(c.correlation_id),
        actor_id: opt_uuid("context.actor_id", c.actor_id.as_deref())?,
        traceparent: base::trace::current(),
    })
}

/// An event context as a step's request carries it.
pub fn context_message(c: &events::EventContext) -> crate::v1::EventContext {
    crate::v1::EventContext {
        region: c.region.clone(),
        correlation_id: c.correlation_id.clone().unwrap_or_default(),
        actor_id: c.actor_id.map(|a| a.to_string()),
    }
}

/// A step's outcome as its answer.
pub fn step_answer(r: anyhow::Result<base::Step>) -> Result<tonic::Response<crate::v1::StepResponse>, Status> {
    match r {
        Ok(base::Step::Done) => Ok(tonic::Response::new(crate::v1::StepResponse { refused: None })),
        Ok(base::Step::Refused(reason)) => Ok(tonic::Response::new(crate::v1::StepResponse { refused: Some(reason) })),
        Err(e) => Err(internal(e)),
    }
}

/// A step's answer as its outcome.
pub fn step_of(r: crate::v1::StepResponse) -> base::Step {
    match r.refused {
        None => base::Step::Done,
        Some(reason) => base::Step::Refused(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_name_a_metric_series() {
        let known = known_methods();
        assert!(known.contains("/walletd.v1.SupplyService/GetSupply"));
        assert!(known.contains("/walletd.v1.WalletService/Settle"));
        assert!(known.contains("/grpc.health.v1.Health/Check"));
        assert!(!known.contains("/walletd.v1.SupplyService/Nope"));
        assert!(!known.contains("/x/y"));
    }

    #[test]
    fn a_problem_becomes_a_status_with_its_code_and_fields() {
        let p = ApiError::validation(vec![FieldError::new("amount", "must not be negative")]).problem();
        let s = status_of_problem(&p);
        assert_eq!(s.code(), Code::InvalidArgument);
        let details = s.get_error_details();
        let info = details.error_info().map(|i| (i.reason.clone(), i.domain.clone()));
        assert_eq!(info, Some(("VALIDATION_FAILED".to_string(), ERROR_DOMAIN.to_string())));
        let fields: Vec<String> = details
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(fields, vec!["amount".to_string()]);
        assert_eq!(code_of(503), Code::Unavailable);
        assert_eq!(code_of(409), Code::Aborted);
    }
}
