//! The console's pages, each an HTML fragment built from the REST API's answers.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::history::{self, Sample};
use super::{Caller, Console, fragment, ok, refused};

type Page = Result<Response, Response>;

// ---- Overview ------------------------------------------------------------------------------

/// The overview's frame; its figures refresh every two seconds.
pub async fn overview() -> Page {
    ok(html! {
        section aria-labelledby="overview-title" {
            h1 #overview-title { "Overview" }
            p.hint { "Live: refreshed every 2 seconds from this process's own metrics and readiness. Charts cover the last hour, one point per 5 seconds." }
            div #overview-live hx-get="/admin/ui/overview/live" hx-trigger="load, every 2s" {
                p { "Loading…" }
            }
        }
    })
}

/// The overview's live figures.
pub async fn overview_live(State(c): State<Arc<Console>>, who: Caller) -> Page {
    let consumers = c.get(&who, "/v1/admin/consumers").await?;
    let ready = c.call(&who, Method::GET, "/health/ready", None).await;
    let samples = c.history.with_now();
    let Some(now) = samples.last() else { return ok(html! { p { "No metrics yet." } }) };
    let won = |s: &Sample| s.sum("claims_total", &["outcome=\"won\""]);
    let lost = |s: &Sample| s.sum("claims_total", &["outcome=\"lost\""]);
    let processed = |s: &Sample| s.sum("claims_processed_total", &["outcome=\"processed\""]);
    let failed = |s: &Sample| s.sum("claims_processed_total", &["outcome=\"failed\""]);
    let lag_now = last_minute_mean(&samples, "claim_processing_lag_seconds");
    let backlog = |s: &Sample| s.sum("outbox_unpublished", &[]);
    let consumer_lag = |s: &Sample| s.sum("events_consumer_lag", &[]);
    let groups = now.by_label("events_consumer_lag", "group");
    let mut breakers: Vec<String> = Vec::new();
    if now.sum("db_breaker_open", &[]) > 0.0 {
        breakers.push("database".into());
    }
    if now.sum("cache_breaker_open", &[]) > 0.0 {
        breakers.push("cache (Redis)".into());
    }
    for (peer, open) in now.by_label("rpc_client_breaker_open", "peer") {
        if open > 0.0 {
            breakers.push(format!("gRPC peer {peer}"));
        }
    }
    let checks: Vec<(String, String)> = ready.body["checks"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default();
    let ready_ok = ready.status.is_success();
    ok(html! {
        div.tiles {
            (tile("claims-won", "Claims won / min", &rate(history::last_minute(&samples, won)), &format!("{} since start", short(won(now)))))
            (tile("claims-lost", "Claims lost / min", &rate(history::last_minute(&samples, lost)), &format!("{} since start", short(lost(now)))))
            (tile("claims-processed", "Claims processed / min", &rate(history::last_minute(&samples, processed)), &format!("{} since start, {} failed", short(processed(now)), short(failed(now)))))
            (tile("processing-lag", "Processing lag (mean, last minute)", &lag_now.map_or("—".to_string(), |l| format!("{:.0} ms", l * 1000.0)), "claim accepted → processed"))
            (tile("outbox-backlog", "Outbox backlog", &if now.has("outbox_unpublished") { short(backlog(now)) } else { "—".into() }, if now.has("outbox_unpublished") { "events not yet on Kafka" } else { "embedded log: see consumer lag" }))
            (tile("breakers", "Open breakers", &breakers.len().to_string(), &if breakers.is_empty() { "none".to_string() } else { breakers.join(", ") }))
        }
        div.columns {
            section aria-labelledby="readiness-title" {
                h2 #readiness-title { "Readiness " span.badge.(if ready_ok { "good" } else { "bad" }) #readiness-state { (if ready_ok { "ready" } else { "not ready" }) } }
                table {
                    caption.sr { "Dependencies and their state" }
                    thead { tr { th scope="col" { "Dependency" } th scope="col" { "State" } } }
                    tbody {
                        @for (name, state) in &checks {
                            tr { th scope="row" { (name) } td { span.badge.(if state == "ok" { "good" } else { "bad" }) { (state) } } }
                        }
                    }
                }
            }
            section aria-labelledby="consumers-title" {
                h2 #consumers-title { "Consumer lag" }
                table #consumer-lag {
                    caption.sr { "Events each consumer group has yet to handle" }
                    thead { tr { th scope="col" { "Group" } th scope="col" { "Lag (events)" } } }
                    tbody {
                        @for (group, lag) in &groups {
                            tr { th scope="row" { (group) } td.num { (lag) } }
                        }
                        @if groups.is_empty() { tr { td colspan="2" { "No consumer has reported yet." } } }
                    }
                }
                p.hint { "Log head: " (text(&consumers["head"])) }
            }
        }
        h2 { "Last hour" }
        div.charts {
            (chart("Claims won / min", &history::rate_per_minute(&samples, won)))
            (chart("Claims lost / min", &history::rate_per_minute(&samples, lost)))
            (chart("Claims processed / min", &history::rate_per_minute(&samples, processed)))
            (chart("Processing lag (s)", &history::mean_per_interval(&samples, "claim_processing_lag_seconds")))
            (chart("Outbox backlog", &samples.iter().map(backlog).collect::<Vec<_>>()))
            (chart("Consumer lag (all groups)", &samples.iter().map(consumer_lag).collect::<Vec<_>>()))
        }
    })
}

/// The mean of a histogram over the last minute, if anything was recorded.
fn last_minute_mean(samples: &[Sample], name: &str) -> Option<f64> {
    let (sum, count) = (format!("{name}_sum"), format!("{name}_count"));
    let n = history::last_minute(samples, |s| s.sum(&count, &[]));
    let total = history::last_minute(samples, |s| s.sum(&sum, &[]));
    (n > 0.0).then(|| total / n)
}

fn rate(per_minute: f64) -> String {
    if per_minute >= 10.0 { format!("{per_minute:.0}") } else { format!("{per_minute:.1}") }
}

fn tile(id: &str, label: &str, value: &str, note: &str) -> Markup {
    html! {
        div.tile #(id) {
            div.label { (label) }
            div.value data-value=(value) { (value) }
            div.note { (note) }
        }
    }
}

/// A small line chart of `points` (oldest first), drawn as SVG on the server.
fn chart(label: &str, points: &[f64]) -> Markup {
    const W: f64 = 240.0;
    const H: f64 = 48.0;
    let max = points.iter().copied().fold(0.0_f64, f64::max);
    let last = points.last().copied().unwrap_or(0.0);
    let line: String = if points.len() < 2 {
        String::new()
    } else {
        let step = W / (points.len() - 1) as f64;
        points
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let y = if max > 0.0 { H - 2.0 - (v / max) * (H - 4.0) } else { H - 2.0 };
                format!("{:.1},{:.1}", i as f64 * step, y)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let summary = format!("{label}: now {}, highest {} over the last hour", short(last), short(max));
    html! {
        figure.chart {
            figcaption { (label) " " span.now { (short(last)) } }
            svg viewBox="0 0 240 48" width="240" height="48" role="img" aria-label=(summary) {
                line x1="0" y1="47" x2="240" y2="47" class="axis" {}
                @if line.is_empty() {
                    text x="4" y="28" class="empty" { "collecting…" }
                } @else {
                    polyline points=(line) class="series" {}
                }
            }
        }
    }
}

fn short(v: f64) -> String {
    // `+ 0.0` turns the -0 of an empty sum into 0.
    let v = v + 0.0;
    if v.fract() == 0.0 || v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

// ---- Orders and claims -------------------------------------------------------------------------

/// The search form.
pub async fn claims() -> Page {
    ok(html! {
        section aria-labelledby="claims-title" {
            h1 #claims-title { "Orders & claims" }
            form.search hx-get="/admin/ui/claims/search" hx-target="#claim-results" {
                label for="claim-q" { "Claim, order or user id" }
                input #claim-q name="q" type="search" required autocomplete="off" spellcheck="false"
                    placeholder="0190…" aria-describedby="claim-q-hint";
                button type="submit" { "Search" }
                p.hint #claim-q-hint { "A claim id shows its timeline; an order id its claim; a user id their claims and orders." }
            }
            div #claim-results aria-live="polite" {}
        }
    })
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: String,
}

/// Finds what an id names: a claim, an order, or a user.
pub async fn claim_search(State(c): State<Arc<Console>>, who: Caller, Query(q): Query<SearchQuery>) -> Page {
    let q = q.q.trim();
    let Ok(id) = q.parse::<uuid::Uuid>() else {
        return Err(fragment(
            StatusCode::UNPROCESSABLE_ENTITY,
            invalid("q", "must be a claim, order or user id (a UUID)"),
        ));
    };
    let claim = c.call(&who, Method::GET, &format!("/v1/claims/{id}"), None).await;
    if claim.status.is_success() {
        return timeline(&c, &who, &claim.body).await;
    }
    // Only "no such claim" moves on to orders and users; any other failure is shown as it is.
    if claim.status != StatusCode::NOT_FOUND {
        return Err(refused(&claim));
    }
    let order = c.call(&who, Method::GET, &format!("/v1/orders/{id}"), None).await;
    if !order.status.is_success() && order.status != StatusCode::NOT_FOUND {
        return Err(refused(&order));
    }
    if order.status.is_success() {
        let its_claim = c.call(&who, Method::GET, &format!("/v1/orders/{id}/claim"), None).await;
        return ok(html! {
            (order_summary(&order.body))
            @if its_claim.status.is_success() {
                (timeline_markup(&c, &who, &its_claim.body).await?)
            } @else {
                p { "This order has no live claim." }
            }
        });
    }
    // A user: their claims and orders, a page at a time.
    let claims = list_claims(&c, &who, &id.to_string(), None).await?;
    let orders = list_orders(&c, &who, &id.to_string(), None).await?;
    ok(html! {
        h2 { "User " code { (id) } }
        (claims)
        (orders)
    })
}

#[derive(Deserialize)]
pub struct UserPage {
    user_id: String,
    cursor: Option<String>,
}

pub async fn claim_list(State(c): State<Arc<Console>>, who: Caller, Query(p): Query<UserPage>) -> Page {
    ok(list_claims(&c, &who, &p.user_id, p.cursor.as_deref()).await?)
}

pub async fn order_list(State(c): State<Arc<Console>>, who: Caller, Query(p): Query<UserPage>) -> Page {
    ok(list_orders(&c, &who, &p.user_id, p.cursor.as_deref()).await?)
}

async fn list_claims(c: &Console, who: &Caller, user: &str, cursor: Option<&str>) -> Result<Markup, Response> {
    let page = c.get(who, &page_uri("/v1/claims", &[("user_id", user)], cursor)).await?;
    let rows = page["items"].as_array().cloned().unwrap_or_default();
    Ok(html! {
        section #user-claims aria-labelledby="user-claims-title" {
            h3 #user-claims-title { "Claims" }
            table {
                thead { tr { th scope="col" { "Claim" } th scope="col" { "Order" } th scope="col" { "Status" } th scope="col" { "Amount" } th scope="col" { "Claimed" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { a href="#" hx-get=(format!("/admin/ui/claims/{}", text(&r["id"]))) hx-target="#claim-results" { code { (text(&r["id"])) } } }
                            td { code { (text(&r["order_id"])) } }
                            td { (status_badge(&text(&r["status"]))) }
                            td.num { (text(&r["amount"])) " " (text(&r["currency"])) }
                            td { (when(&r["claimed_at"])) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="5" { "No claims." } } }
                }
            }
            (pager("/admin/ui/claims/list", &[("user_id", user)], &page["next_cursor"], "#user-claims"))
        }
    })
}

async fn list_orders(c: &Console, who: &Caller, user: &str, cursor: Option<&str>) -> Result<Markup, Response> {
    let page = c.get(who, &page_uri("/v1/orders", &[("user_id", user)], cursor)).await?;
    let rows = page["items"].as_array().cloned().unwrap_or_default();
    Ok(html! {
        section #user-orders aria-labelledby="user-orders-title" {
            h3 #user-orders-title { "Orders" }
            table {
                thead { tr { th scope="col" { "Order" } th scope="col" { "Status" } th scope="col" { "Amount" } th scope="col" { "Claim" } th scope="col" { "Created" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { code { (text(&r["id"])) } }
                            td { (status_badge(&text(&r["status"]))) }
                            td.num { (text(&r["amount"])) " " (text(&r["currency"])) }
                            td {
                                @if r["claim_id"].is_string() {
                                    a href="#" hx-get=(format!("/admin/ui/claims/{}", text(&r["claim_id"]))) hx-target="#claim-results" { code { (text(&r["claim_id"])) } }
                                } @else { "—" }
                            }
                            td { (when(&r["created_at"])) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="5" { "No orders." } } }
                }
            }
            (pager("/admin/ui/orders/list", &[("user_id", user)], &page["next_cursor"], "#user-orders"))
        }
    })
}

fn order_summary(order: &Value) -> Markup {
    html! {
        section.summary aria-label="Order" {
            h2 { "Order " code { (text(&order["id"])) } }
            dl {
                dt { "Status" } dd { (status_badge(&text(&order["status"]))) }
                dt { "Buyer" } dd { code { (text(&order["user_id"])) } }
                dt { "Amount" } dd { (text(&order["amount"])) " " (text(&order["currency"])) }
                dt { "Created" } dd { (when(&order["created_at"])) }
            }
        }
    }
}

/// One claim with its timeline.
pub async fn claim_detail(State(c): State<Arc<Console>>, who: Caller, Path(id): Path<uuid::Uuid>) -> Page {
    let claim = c.get(&who, &format!("/v1/claims/{id}")).await?;
    timeline(&c, &who, &claim).await
}

async fn timeline(c: &Console, who: &Caller, claim: &Value) -> Page {
    ok(timeline_markup(c, who, claim).await?)
}

/// The claim and every event of it and of its order from the log, in log order.
async fn timeline_markup(c: &Console, who: &Caller, claim: &Value) -> Result<Markup, Response> {
    let (claim_id, order_id) = (text(&claim["id"]), text(&claim["order_id"]));
    let mut events = Vec::new();
    for aggregate in [&claim_id, &order_id] {
        events.extend(all_events_of(c, who, aggregate).await?);
    }
    events.sort_by_key(|e| e["seq"].as_i64().unwrap_or(0));
    events.dedup_by_key(|e| e["seq"].as_i64().unwrap_or(0));
    Ok(html! {
        section #claim aria-labelledby="claim-title" {
            h2 #claim-title { "Claim " code { (claim_id) } }
            dl {
                dt { "Status" } dd #claim-status { (status_badge(&text(&claim["status"]))) }
                dt { "Order" } dd { code { (order_id) } }
                dt { "Shopper" } dd { code { (text(&claim["user_id"])) } }
                dt { "Amount" } dd { (text(&claim["amount"])) " " (text(&claim["currency"])) }
                dt { "Claimed" } dd { (when(&claim["claimed_at"])) }
                @if claim["failure_reason"].is_string() { dt { "Failure" } dd { (text(&claim["failure_reason"])) } }
            }
            h3 { "Timeline" }
            ol #timeline.timeline {
                @for e in &events {
                    li {
                        span.seq { "#" (text(&e["seq"])) }
                        " " (when(&e["occurred_at"])) " "
                        strong.type { (text(&e["type"])) }
                        " on " (if text(&e["aggregate_id"]) == claim_id { "the claim" } else { "the order" })
                        div.ids {
                            "request / correlation id " code.rid { (opt(&e["correlation_id"])) }
                            " · event " code { (text(&e["id"])) }
                            " · region " (text(&e["region"]))
                        }
                    }
                }
                @if events.is_empty() { li { "No events found in the log." } }
            }
        }
    })
}

/// Every event of one aggregate, following the log's cursor page by page.
async fn all_events_of(c: &Console, who: &Caller, aggregate: &str) -> Result<Vec<Value>, Response> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..20 {
        let mut params = vec![("aggregate_id", aggregate), ("limit", "500")];
        if let Some(a) = &after {
            params.push(("after", a));
        }
        let page = c.get(who, &uri("/v1/admin/events", &params)).await?;
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    Ok(out)
}

// ---- Events ----------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct ParkedPage {
    page: Option<usize>,
}

const PARKED_PAGE: usize = 25;

/// Parked events (with a redrive action) and consumer groups.
pub async fn events(State(c): State<Arc<Console>>, who: Caller, Query(p): Query<ParkedPage>) -> Page {
    let parked = c.get(&who, "/v1/admin/parked-events").await?;
    let consumers = c.get(&who, "/v1/admin/consumers").await?;
    let all = parked["items"].as_array().cloned().unwrap_or_default();
    let page = p.page.unwrap_or(0);
    let rows: Vec<&Value> = all.iter().skip(page.saturating_mul(PARKED_PAGE)).take(PARKED_PAGE).collect();
    let groups = consumers["items"].as_array().cloned().unwrap_or_default();
    ok(html! {
        section #events aria-labelledby="events-title" {
            h1 #events-title { "Events" }
            h2 { "Parked events " span.count #parked-count { (all.len()) } }
            p.hint { "Events a consumer group gave up on after its retries. Redrive sends one back through its group (with Kafka, from the topic's .dlq) once its cause is fixed." }
            div #redrive-panel aria-live="polite" {}
            table #parked {
                thead { tr { th scope="col" { "Group" } th scope="col" { "Event" } th scope="col" { "Type" } th scope="col" { "Seq" } th scope="col" { "Attempts" } th scope="col" { "Last error" } th scope="col" { span.sr { "Action" } } } }
                tbody {
                    @for e in &rows {
                        tr #(row_id(&text(&e["group"]), &text(&e["event_id"]))) data-event-id=(text(&e["event_id"])) {
                            td { (text(&e["group"])) }
                            td { code { (text(&e["event_id"])) } }
                            td { (text(&e["event_type"])) }
                            td.num { (text(&e["seq"])) }
                            td.num { (text(&e["attempts"])) }
                            td.error { (text(&e["last_error"])) }
                            td {
                                @if e["redrive_requested_at"].is_string() {
                                    span.badge.warn { "redrive requested" }
                                } @else {
                                    button type="button" class="redrive"
                                        hx-get=(uri("/admin/ui/events/confirm", &[("group", &text(&e["group"])), ("event_id", &text(&e["event_id"]))]))
                                        hx-target="#redrive-panel"
                                        aria-label=(format!("Redrive event {} of group {}", text(&e["event_id"]), text(&e["group"]))) { "Redrive…" }
                                }
                            }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="7" { "Nothing is parked." } } }
                }
            }
            nav.pager aria-label="Parked events pages" {
                @if page > 0 { button type="button" hx-get=(format!("/admin/ui/events?page={}", page - 1)) hx-target="#main" { "Previous page" } }
                @if page.saturating_add(1).saturating_mul(PARKED_PAGE) < all.len() { button type="button" hx-get=(format!("/admin/ui/events?page={}", page + 1)) hx-target="#main" { "Next page" } }
            }
            h2 { "Consumer groups" }
            table {
                thead { tr { th scope="col" { "Group" } th scope="col" { "Position" } th scope="col" { "Lag" } } }
                tbody {
                    @for g in &groups { tr { th scope="row" { (text(&g["group"])) } td.num { (text(&g["position"])) } td.num { (text(&g["lag"])) } } }
                    @if groups.is_empty() { tr { td colspan="3" { "No group has a position in the embedded log (with Kafka, positions are the broker's: see the overview's lag)." } } }
                }
            }
        }
    })
}

#[derive(Deserialize)]
pub struct ParkedKey {
    group: String,
    event_id: uuid::Uuid,
    /// How many times the status was asked already (the poll stops after [`STATUS_POLLS`]).
    #[serde(default)]
    n: u32,
}

/// A redrive is followed for about two minutes; after that the page says so and stops asking.
const STATUS_POLLS: u32 = 120;

/// The parked event, or `None` when it is not parked (any more).
async fn find_parked(c: &Console, who: &Caller, key: &ParkedKey) -> Result<Option<Value>, Response> {
    let path = format!("/v1/admin/parked-events/{}/{}", enc(&key.group), key.event_id);
    let reply = c.call(who, Method::GET, &path, None).await;
    match reply.status {
        s if s.is_success() => Ok(Some(reply.body)),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(refused(&reply)),
    }
}

/// The id of a parked event's row (group names and UUIDs are safe in an id).
fn row_id(group: &str, event_id: &str) -> String {
    format!("parked-{group}-{event_id}")
}

/// The confirmation step before a redrive.
pub async fn redrive_confirm(State(c): State<Arc<Console>>, who: Caller, Query(key): Query<ParkedKey>) -> Page {
    let Some(e) = find_parked(&c, &who, &key).await? else {
        return Err(fragment(
            StatusCode::NOT_FOUND,
            super::notice("Not parked", "That event is not parked (any more)."),
        ));
    };
    ok(html! {
        form.confirm #redrive-confirm hx-post="/admin/ui/events/redrive" hx-target="#redrive-panel" aria-labelledby="confirm-title" {
            h2 #confirm-title { "Redrive this event?" }
            p { "Event " code { (key.event_id) } " (" (text(&e["event_type"])) ", seq " (text(&e["seq"])) ") goes back to consumer group " strong { (key.group) } ", which handles it again. Other groups are not affected. The request is recorded as an audit event under your account." }
            p.error { "Last error: " (text(&e["last_error"])) }
            input type="hidden" name="group" value=(key.group);
            input type="hidden" name="event_id" value=(key.event_id);
            div.actions {
                button #confirm-redrive type="submit" autofocus { "Redrive" }
                button type="button" hx-get="/admin/ui/events" hx-target="#main" { "Cancel" }
            }
        }
    })
}

/// Asks the API for the redrive, then follows the event until its group handled it.
pub async fn redrive(State(c): State<Arc<Console>>, who: Caller, Form(key): Form<ParkedKey>) -> Page {
    let path = format!("/v1/admin/parked-events/{}/{}/redrive", enc(&key.group), key.event_id);
    let reply = c.call(&who, Method::POST, &path, None).await;
    if !reply.status.is_success() {
        return Err(refused(&reply));
    }
    tracing::info!(consumer.group = %key.group, event.id = %key.event_id, "console: redrive requested");
    ok(html! {
        div.notice #redrive-result role="status" {
            strong { "Redrive requested." }
            " Event " code { (key.event_id) } " is on its way back through " strong { (key.group) } "."
            div hx-get=(uri("/admin/ui/events/status", &[("group", &key.group), ("event_id", &key.event_id.to_string())])) hx-trigger="load delay:500ms" hx-swap="outerHTML" {
                "Waiting for the group…"
            }
        }
    })
}

/// Where a redriven event stands; polls itself until the group is done with it.
pub async fn redrive_status(State(c): State<Arc<Console>>, who: Caller, Query(key): Query<ParkedKey>) -> Page {
    let polls = key.n.saturating_add(1).to_string();
    let here = uri(
        "/admin/ui/events/status",
        &[("group", &key.group), ("event_id", &key.event_id.to_string()), ("n", &polls)],
    );
    ok(match find_parked(&c, &who, &key).await? {
        None => html! {
            p #redrive-outcome.good data-outcome="handled" { span.badge.good { "handled" } " The group handled the event; it is no longer parked." }
            // Out of band: the event's row leaves the parked table (a div: a lone <tr> would not
            // survive the parsing of the fragment; a delete takes only the id).
            div #(row_id(&key.group, &key.event_id.to_string())) hx-swap-oob="delete" {}
        },
        Some(e) if e["redrive_requested_at"].is_string() && key.n >= STATUS_POLLS => html! {
            p #redrive-outcome data-outcome="pending" { span.badge.warn { "still pending" } " The group has not taken the event for two minutes: is a process running consumer group " (key.group) "? Reload the events page to look again." }
        },
        Some(e) if e["redrive_requested_at"].is_string() => html! {
            p #redrive-outcome data-outcome="waiting" hx-get=(here) hx-trigger="load delay:1s" hx-swap="outerHTML" { span.badge.warn { "waiting" } " The group has not taken it yet…" }
        },
        Some(e) => html! {
            p #redrive-outcome data-outcome="parked" { span.badge.bad { "parked again" } " after " (text(&e["attempts"])) " attempts: " (text(&e["last_error"])) }
        },
    })
}

// ---- Wallet ------------------------------------------------------------------------------------

/// The user look-up, the ledger verify, and the chain's queues.
pub async fn wallet(State(c): State<Arc<Console>>, who: Caller) -> Page {
    let chain = match unfinished_withdrawals(&c, &who).await? {
        None => None,
        Some(open) => Some((open, withdrawals_markup(&c, &who, None).await?, deposits_markup(&c, &who, None).await?)),
    };
    ok(html! {
        section aria-labelledby="wallet-title" {
            h1 #wallet-title { "Wallet" }
            div.columns {
                section aria-labelledby="verify-title" {
                    h2 #verify-title { "Ledger verify" }
                    p.hint { "Checks that every journal sums to zero per asset, every balance equals its entries and every held amount its pending holds." }
                    button #run-verify type="button" hx-post="/admin/ui/wallet/verify" hx-target="#verify-result" { "Run ledger verify" }
                    div #verify-result aria-live="polite" {}
                }
                section aria-labelledby="lookup-title" {
                    h2 #lookup-title { "Look up a user" }
                    form.search hx-get="/admin/ui/wallet/user" hx-target="#wallet-user" {
                        label for="wallet-user-id" { "User id" }
                        input #wallet-user-id name="user_id" type="search" required autocomplete="off" spellcheck="false";
                        button type="submit" { "Look up" }
                    }
                }
            }
            div #wallet-user aria-live="polite" {}
            @match chain {
                None => {
                    h2 { "Withdrawals and deposits" }
                    p #withdrawals { "No chain is configured in this process." }
                }
                Some((open, all, deposits)) => {
                    h2 { "Withdrawals under way, stuck first" }
                    (open)
                    h2 { "All withdrawals" }
                    (all)
                    h2 { "Deposits awaiting confirmations" }
                    (deposits)
                }
            }
        }
    })
}

fn deposit_table(page: &Value) -> Markup {
    let rows = page["items"].as_array().cloned().unwrap_or_default();
    html! {
        table #deposits {
            thead { tr { th scope="col" { "Deposit" } th scope="col" { "User" } th scope="col" { "Amount" } th scope="col" { "Chain" } th scope="col" { "Confirmations" } th scope="col" { "Seen" } } }
            tbody {
                @for d in &rows {
                    tr {
                        td { code { (text(&d["id"])) } }
                        td { code { (text(&d["user_id"])) } }
                        td.num { (text(&d["amount"])) " " (text(&d["currency"])) }
                        td { (text(&d["chain"])) }
                        td.num { (text(&d["confirmations"])) }
                        td { (when(&d["created_at"])) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="6" { "None waiting." } } }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct CursorOnly {
    cursor: Option<String>,
}

pub async fn withdrawals(State(c): State<Arc<Console>>, who: Caller, Query(p): Query<CursorOnly>) -> Page {
    ok(withdrawals_markup(&c, &who, p.cursor.as_deref()).await?)
}

pub async fn deposits(State(c): State<Arc<Console>>, who: Caller, Query(p): Query<CursorOnly>) -> Page {
    ok(deposits_markup(&c, &who, p.cursor.as_deref()).await?)
}

/// An unfinished withdrawal whose last change is older than this is flagged as stuck.
const STUCK_AFTER: time::Duration = time::Duration::minutes(10);

fn parsed_time(v: &Value) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339).ok()
}

/// The unfinished withdrawals of every user (requested, signed, broadcast), oldest change first, each
/// flagged when it has not moved for [`STUCK_AFTER`]; `None` when no chain is configured.
async fn unfinished_withdrawals(c: &Console, who: &Caller) -> Result<Option<Markup>, Response> {
    let mut rows = Vec::new();
    for status in ["requested", "signed", "broadcast"] {
        let path = uri("/v1/wallet/withdrawals", &[("user_id", "all"), ("status", status), ("limit", "100")]);
        let reply = c.call(who, Method::GET, &path, None).await;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !reply.status.is_success() {
            return Err(refused(&reply));
        }
        rows.extend(reply.body["items"].as_array().cloned().unwrap_or_default());
    }
    rows.sort_by_key(|w| parsed_time(&w["updated_at"]));
    let now = time::OffsetDateTime::now_utc();
    let stuck = |w: &Value| parsed_time(&w["updated_at"]).is_some_and(|t| now - t > STUCK_AFTER);
    Ok(Some(html! {
        table #withdrawals-open {
            caption.sr { "Unfinished withdrawals, the longest unchanged first" }
            thead { tr { th scope="col" { "Withdrawal" } th scope="col" { "Status" } th scope="col" { "User" } th scope="col" { "Amount" } th scope="col" { "To" } th scope="col" { "Last change" } } }
            tbody {
                @for w in &rows {
                    tr.open {
                        td { code { (text(&w["id"])) } }
                        td { (status_badge(&text(&w["status"]))) @if stuck(w) { " " span.badge.bad { "stuck" } } }
                        td { code { (text(&w["user_id"])) } }
                        td.num { (text(&w["amount"])) " " (text(&w["currency"])) }
                        td { code { (text(&w["to_address"])) } }
                        td { (when(&w["updated_at"])) }
                    }
                }
                @if rows.is_empty() { tr { td colspan="6" { "No withdrawal is under way." } } }
            }
        }
    }))
}

/// Every withdrawal of every user, newest first, a page at a time (the API's cursor).
async fn withdrawals_markup(c: &Console, who: &Caller, cursor: Option<&str>) -> Result<Markup, Response> {
    let page = c.get(who, &page_uri("/v1/wallet/withdrawals", &[("user_id", "all")], cursor)).await?;
    let rows = page["items"].as_array().cloned().unwrap_or_default();
    Ok(html! {
        section #withdrawals-all aria-label="All withdrawals" {
            table {
                thead { tr { th scope="col" { "Withdrawal" } th scope="col" { "Status" } th scope="col" { "User" } th scope="col" { "Amount" } th scope="col" { "Tx" } th scope="col" { "Last change" } } }
                tbody {
                    @for w in &rows {
                        tr {
                            td { code { (text(&w["id"])) } }
                            td { (status_badge(&text(&w["status"]))) @if w["failure_reason"].is_string() { " " (text(&w["failure_reason"])) } }
                            td { code { (text(&w["user_id"])) } }
                            td.num { (text(&w["amount"])) " " (text(&w["currency"])) }
                            td { code { (opt(&w["tx_hash"])) } }
                            td { (when(&w["updated_at"])) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="6" { "No withdrawals." } } }
                }
            }
            (pager("/admin/ui/wallet/withdrawals", &[], &page["next_cursor"], "#withdrawals-all"))
        }
    })
}

/// Chain deposits seen and not yet credited (awaiting confirmations), newest first, paged.
async fn deposits_markup(c: &Console, who: &Caller, cursor: Option<&str>) -> Result<Markup, Response> {
    let page = c.get(who, &page_uri("/v1/wallet/deposits", &[("user_id", "all"), ("status", "seen")], cursor)).await?;
    Ok(html! {
        section #deposits-seen aria-label="Deposits awaiting confirmations" {
            (deposit_table(&page))
            (pager("/admin/ui/wallet/deposits", &[], &page["next_cursor"], "#deposits-seen"))
        }
    })
}

#[derive(Deserialize)]
pub struct UserQuery {
    user_id: String,
}

/// A user's accounts, entries and holds.
pub async fn wallet_user(State(c): State<Arc<Console>>, who: Caller, Query(q): Query<UserQuery>) -> Page {
    let user = q.user_id.trim().to_string();
    if user.parse::<uuid::Uuid>().is_err() && !user.starts_with('@') {
        return Err(fragment(
            StatusCode::UNPROCESSABLE_ENTITY,
            invalid("user_id", "must be a user id (a UUID) or a system account such as @world"),
        ));
    }
    let accounts = c.get(&who, &uri("/v1/wallet/accounts", &[("user_id", &user)])).await?;
    let rows = accounts["items"].as_array().cloned().unwrap_or_default();
    let entries = entries_markup(&c, &who, &user, None).await?;
    let holds = if user.starts_with('@') {
        html! {}
    } else {
        holds_markup(&c, &who, &user, None).await?
    };
    ok(html! {
        h2 { "Wallet of " code { (user) } }
        table #accounts {
            thead { tr { th scope="col" { "Asset" } th scope="col" { "Balance" } th scope="col" { "Held" } th scope="col" { "Available" } th scope="col" { "Updated" } } }
            tbody {
                @for a in &rows {
                    tr { th scope="row" { (text(&a["currency"])) } td.num { (text(&a["balance"])) } td.num { (text(&a["held"])) } td.num { (text(&a["available"])) } td { (when(&a["updated_at"])) } }
                }
            }
        }
        (entries)
        (holds)
    })
}

#[derive(Deserialize)]
pub struct UserCursor {
    user_id: String,
    cursor: Option<String>,
}

pub async fn wallet_entries(State(c): State<Arc<Console>>, who: Caller, Query(p): Query<UserCursor>) -> Page {
    ok(entries_markup(&c, &who, &p.user_id, p.cursor.as_deref()).await?)
}

pub async fn wallet_holds(State(c): State<Arc<Console>>, who: Caller, Query(p): Query<UserCursor>) -> Page {
    ok(holds_markup(&c, &who, &p.user_id, p.cursor.as_deref()).await?)
}

async fn entries_markup(c: &Console, who: &Caller, user: &str, cursor: Option<&str>) -> Result<Markup, Response> {
    let page = c.get(who, &page_uri("/v1/wallet/entries", &[("user_id", user)], cursor)).await?;
    let rows = page["items"].as_array().cloned().unwrap_or_default();
    Ok(html! {
        section #entries aria-labelledby="entries-title" {
            h3 #entries-title { "Ledger entries" }
            table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "Amount" } th scope="col" { "Reference" } th scope="col" { "Transaction" } } }
                tbody {
                    @for e in &rows {
                        tr { td { (when(&e["created_at"])) } td { (text(&e["kind"])) } td.num { (text(&e["amount"])) " " (text(&e["currency"])) } td { (opt(&e["reference"])) } td { code { (text(&e["transaction_id"])) } } }
                    }
                    @if rows.is_empty() { tr { td colspan="5" { "No entries." } } }
                }
            }
            (pager("/admin/ui/wallet/entries", &[("user_id", user)], &page["next_cursor"], "#entries"))
        }
    })
}

async fn holds_markup(c: &Console, who: &Caller, user: &str, cursor: Option<&str>) -> Result<Markup, Response> {
    let page = c.get(who, &page_uri("/v1/wallet/holds", &[("user_id", user)], cursor)).await?;
    let rows = page["items"].as_array().cloned().unwrap_or_default();
    Ok(html! {
        section #holds aria-labelledby="holds-title" {
            h3 #holds-title { "Holds" }
            table {
                thead { tr { th scope="col" { "Hold" } th scope="col" { "Status" } th scope="col" { "Amount" } th scope="col" { "Order" } th scope="col" { "Placed" } } }
                tbody {
                    @for h in &rows {
                        tr { td { code { (text(&h["id"])) } } td { (status_badge(&text(&h["status"]))) } td.num { (text(&h["amount"])) " " (text(&h["currency"])) } td { code { (opt(&h["order_id"])) } } td { (when(&h["created_at"])) } }
                    }
                    @if rows.is_empty() { tr { td colspan="5" { "No holds." } } }
                }
            }
            (pager("/admin/ui/wallet/holds", &[("user_id", user)], &page["next_cursor"], "#holds"))
        }
    })
}

/// Runs the ledger verify and shows its result.
pub async fn verify(State(c): State<Arc<Console>>, who: Caller) -> Page {
    let r = c.get(&who, "/v1/admin/wallet/verify").await?;
    let good = r["ok"].as_bool() == Some(true);
    let mismatches = r["mismatches"].as_array().cloned().unwrap_or_default();
    tracing::info!(ok = good, mismatches = mismatches.len(), "console: ledger verify run");
    ok(html! {
        div #verify-outcome data-ok=(good) class=(if good { "notice good" } else { "notice error" }) role="status" {
            strong { (if good { "The ledger verifies." } else { "The ledger does NOT verify." }) }
            p { (text(&r["accounts_checked"])) " accounts and " (text(&r["transactions_checked"])) " transactions checked, " (mismatches.len()) " mismatches." }
            @if !mismatches.is_empty() { ul { @for m in &mismatches { li { code { (m.to_string()) } } } } }
        }
    })
}

// ---- Helpers -----------------------------------------------------------------------------------

/// A JSON value as text (strings without their quotes; null as empty).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn opt(v: &Value) -> String {
    match text(v) {
        s if s.is_empty() => "—".to_string(),
        s => s,
    }
}

/// A time: shown in UTC by the server; `console.js` shows it in the viewer's zone, UTC on hover.
fn when(v: &Value) -> Markup {
    let t = text(v);
    if t.is_empty() {
        return html! { "—" };
    }
    html! { time datetime=(t) title=(format!("{t} (UTC)")) { (t) } }
}

fn status_badge(status: &str) -> Markup {
    let class = match status {
        "processed" | "completed" | "confirmed" | "posted" | "credited" | "ok" => "good",
        "failed" | "released" | "voided" | "dropped" | "reorged" => "bad",
        _ => "warn",
    };
    html! { span.badge.(class) { (status) } }
}

fn invalid(field: &str, message: &str) -> Markup {
    html! { div.notice.error role="alert" { strong { "Check the input" } p { code { (field) } ": " (message) } } }
}

/// "Next page" (with the API's cursor) and "First page" for a table that reloads itself.
fn pager(base: &str, params: &[(&str, &str)], next: &Value, target: &str) -> Markup {
    let next = next.as_str().map(|cursor| {
        let mut p = params.to_vec();
        p.push(("cursor", cursor));
        uri(base, &p)
    });
    html! {
        nav.pager aria-label="Pages" {
            button type="button" hx-get=(uri(base, params)) hx-target=(target) hx-swap="outerHTML" { "First page" }
            @if let Some(next) = next {
                button type="button" hx-get=(next) hx-target=(target) hx-swap="outerHTML" { "Next page" }
            }
        }
    }
}

fn page_uri(base: &str, params: &[(&str, &str)], cursor: Option<&str>) -> String {
    let mut p = params.to_vec();
    p.push(("limit", "20"));
    if let Some(c) = cursor {
        p.push(("cursor", c));
    }
    uri(base, &p)
}

fn uri(base: &str, params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return base.to_string();
    }
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
    format!("{base}?{}", query.join("&"))
}

/// Percent-encodes everything but the unreserved characters.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
