//! The operator's routes over the event log: the log itself, parked events (and their redrive) and
//! consumer positions.

use events::RedriveRequest;
use events::outbox::{self, EventContext, EventEnvelope, EventFilter};
use serde::Serialize;
use storage::Database;

/// `GET /v1/admin/events` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events after this position (`seq`), or after the `next_cursor` of a previous page.
    pub after: Option<String>,
    pub limit: Option<i64>,
    /// Only the events of this aggregate (a claim, an order, ...), a UUID.
    pub aggregate_id: Option<String>,
    /// Only the events caused by this request (its `X-Request-Id`).
    pub correlation_id: Option<String>,
}

/// A page of the event log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub items: Vec<EventEnvelope>,
    /// Pass as `after` for the next page; null at the end of the log.
    pub next_cursor: Option<String>,
}

/// The admin routes over the log.
pub fn router(db: Database, region: String) -> utoipa_axum::router::OpenApiRouter {
    let redrive = utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(redrive_parked))
        .with_state(AdminState { db: db.clone(), region });
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(list_events))
        .routes(utoipa_axum::routes!(list_parked))
        .routes(utoipa_axum::routes!(get_parked))
        .routes(utoipa_axum::routes!(list_consumers))
        .with_state(db)
        .merge(redrive)
}

/// What the redrive route needs: the database and the region its audit event names.
#[derive(Clone)]
struct AdminState {
    db: Database,
    region: String,
}

/// Admin: the event log (outbox), oldest first, for replay and debugging; narrowed to one aggregate
/// (`aggregate_id`) or one request (`correlation_id`) if asked.
#[utoipa::path(get, path = "/v1/admin/events", tag = "admin", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 403, body = web::Problem)))]
async fn list_events(
    axum::extract::State(db): axum::extract::State<Database>,
    who: web::Principal,
    web::extract::ApiQuery(q): web::extract::ApiQuery<EventsQuery>,
) -> Result<axum::Json<EventPage>, web::ApiError> {
    who.require_admin()?;
    let limit = web::cursor::limit(q.limit)?;
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(a) => a.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            web::ApiError::validation(vec![web::FieldError::new("after", "must be a non-negative position")])
        })?,
    };
    let aggregate_id = match q.aggregate_id.as_deref() {
        None | Some("") => None,
        Some(a) => Some(
            a.parse::<uuid::Uuid>()
                .map_err(|_| web::ApiError::validation(vec![web::FieldError::new("aggregate_id", "must be a UUID")]))?,
        ),
    };
    let correlation_id = q.correlation_id.filter(|c| !c.is_empty());
    let items = if aggregate_id.is_none() && correlation_id.is_none() {
        outbox::list(&db, after, limit).await?
    } else {
        outbox::search(&db, &EventFilter { aggregate_id, correlation_id }, after, limit).await?
    };
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|e| e.seq.to_string())).flatten();
    Ok(axum::Json(EventPage { items, next_cursor }))
}

/// Parked events: what a consumer group gave up on after its retries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParkedList {
    pub items: Vec<events::ParkedEvent>,
}

/// `GET /v1/admin/parked-events` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ParkedQuery {
    /// Only this consumer group's parked events.
    pub group: Option<String>,
}

/// Admin: events that consumers parked after their retries (with `redrive_requested_at` while a
/// redrive is pending).
#[utoipa::path(get, path = "/v1/admin/parked-events", tag = "admin", security(("bearer" = [])), params(ParkedQuery),
    responses((status = 200, body = ParkedList), (status = 403, body = web::Problem)))]
async fn list_parked(
    axum::extract::State(db): axum::extract::State<Database>,
    who: web::Principal,
    web::extract::ApiQuery(q): web::extract::ApiQuery<ParkedQuery>,
) -> Result<axum::Json<ParkedList>, web::ApiError> {
    who.require_admin()?;
    let items = match q.group.as_deref() {
        None | Some("") => events::delivery::parked(&db).await?,
        Some(group) => events::delivery::parked_in(&db, group).await?,
    };
    Ok(axum::Json(ParkedList { items }))
}

/// Admin: one parked event, with `redrive_requested_at` while a redrive of it is pending: a redrive
/// is followed here until the event is handled (404) or parked again (`redrive_requested_at` null,
/// the new error).
#[utoipa::path(get, path = "/v1/admin/parked-events/{group}/{event_id}", tag = "admin",
    security(("bearer" = [])),
    params(("group" = String, Path, description = "the consumer group that parked it"),
        ("event_id" = uuid::Uuid, Path, description = "the parked event's id")),
    responses((status = 200, body = events::ParkedEvent),
        (status = 403, body = web::Problem),
        (status = 404, description = "NOT_FOUND: the group has no such parked event (never parked, or handled since)", body = web::Problem),
        (status = 422, description = "VALIDATION_FAILED: `event_id` is not a UUID", body = web::Problem)))]
async fn get_parked(
    axum::extract::State(db): axum::extract::State<Database>,
    who: web::Principal,
    axum::extract::Path((group, event_id)): axum::extract::Path<(String, String)>,
) -> Result<axum::Json<events::ParkedEvent>, web::ApiError> {
    who.require_admin()?;
    let event_id = parse_event_id(&event_id)?;
    match events::delivery::parked_event(&db, &group, event_id).await? {
        Some(p) => Ok(axum::Json(p)),
        None => Err(web::ApiError::not_found("parked event")),
    }
}

fn parse_event_id(event_id: &str) -> Result<uuid::Uuid, web::ApiError> {
    event_id
        .parse::<uuid::Uuid>()
        .map_err(|_| web::ApiError::validation(vec![web::FieldError::new("event_id", "must be a UUID")]))
}

/// Admin: sends a parked event back through its consumer group. The group's consumer (whichever
/// process runs it) redelivers it with the usual retries: handled, it leaves the parked list; failing
/// again, it stays parked with the new error and `redrive_requested_at` cleared. Writes the audit
/// event `event.redrive_requested` (topic `admin-events`).
#[utoipa::path(post, path = "/v1/admin/parked-events/{group}/{event_id}/redrive", tag = "admin",
    security(("bearer" = [])),
    params(("group" = String, Path, description = "the consumer group that parked it"),
        ("event_id" = uuid::Uuid, Path, description = "the parked event's id")),
    responses((status = 202, description = "redrive requested", body = events::ParkedEvent),
        (status = 403, body = web::Problem),
        (status = 404, description = "NOT_FOUND: the group has no such parked event", body = web::Problem),
        (status = 409, description = "REDRIVE_PENDING: a redrive of it was requested and has not finished", body = web::Problem)))]
async fn redrive_parked(
    axum::extract::State(state): axum::extract::State<AdminState>,
    who: web::Principal,
    rid: web::extract::RequestId,
    axum::extract::Path((group, event_id)): axum::extract::Path<(String, String)>,
) -> Result<(axum::http::StatusCode, axum::Json<events::ParkedEvent>), web::ApiError> {
    who.require_admin()?;
    let event_id = parse_event_id(&event_id)?;
    let ctx = EventContext {
        region: state.region.clone(),
        correlation_id: rid.0,
        actor_id: Some(who.user_id),
        traceparent: base::trace::current(),
    };
    match events::delivery::request_redrive(&state.db, &group, event_id, &ctx).await? {
        RedriveRequest::Requested(p) => Ok((axum::http::StatusCode::ACCEPTED, axum::Json(p))),
        RedriveRequest::AlreadyRequested(_) => Err(web::ApiError::new(
            base::ErrorCode::RedrivePending,
            "a redrive of this event was requested and has not finished",
        )),
        RedriveRequest::NotFound => Err(web::ApiError::not_found("parked event")),
    }
}

/// A consumer group's progress through the log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerStatus {
    pub group: String,
    pub position: i64,
    /// Events in the log after the group's position.
    pub lag: i64,
}

/// The log's head and every consumer group's position.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsumerList {
    pub head: i64,
    pub items: Vec<ConsumerStatus>,
}

/// Admin: consumer groups, their positions and lag.
#[utoipa::path(get, path = "/v1/admin/consumers", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = ConsumerList), (status = 403, body = web::Problem)))]
async fn list_consumers(
    axum::extract::State(db): axum::extract::State<Database>,
    who: web::Principal,
) -> Result<axum::Json<ConsumerList>, web::ApiError> {
    who.require_admin()?;
    let head = outbox::head(&db).await?;
    let items = events::delivery::positions(&db)
        .await?
        .into_iter()
        .map(|(group, position)| ConsumerStatus { lag: (head - position).max(0), group, position })
        .collect();
    Ok(axum::Json(ConsumerList { head, items }))
}
