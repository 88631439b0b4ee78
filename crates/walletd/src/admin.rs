//! The operator's routes over the event log: the log itself, parked events and consumer positions.

use events::outbox::{self, EventEnvelope};
use serde::Serialize;
use storage::Database;

/// `GET /v1/admin/events` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events after this position (`seq`), or after the `next_cursor` of a previous page.
    pub after: Option<String>,
    pub limit: Option<i64>,
}

/// A page of the event log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub items: Vec<EventEnvelope>,
    /// Pass as `after` for the next page; null at the end of the log.
    pub next_cursor: Option<String>,
}

/// The admin route over the log.
pub fn router(db: Database) -> utoipa_axum::router::OpenApiRouter {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(list_events))
        .routes(utoipa_axum::routes!(list_parked))
        .routes(utoipa_axum::routes!(list_consumers))
        .with_state(db)
}

/// Admin: the event log (outbox), oldest first, for replay and debugging.
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
    let items = outbox::list(&db, after, limit).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|e| e.seq.to_string())).flatten();
    Ok(axum::Json(EventPage { items, next_cursor }))
}

/// Parked events: what a consumer group gave up on after its retries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParkedList {
    pub items: Vec<events::ParkedEvent>,
}

/// Admin: events that consumers parked after their retries.
#[utoipa::path(get, path = "/v1/admin/parked-events", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = ParkedList), (status = 403, body = web::Problem)))]
async fn list_parked(
    axum::extract::State(db): axum::extract::State<Database>,
    who: web::Principal,
) -> Result<axum::Json<ParkedList>, web::ApiError> {
    who.require_admin()?;
    Ok(axum::Json(ParkedList { items: events::delivery::parked(&db).await? }))
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
