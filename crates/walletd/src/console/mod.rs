//! The operator's console at `/admin`: server-rendered HTML (maud, compiled in) with vendored htmx,
//! served by walletd itself and working offline.
//!
//! The page is a shell: the operator signs in in the browser with their wallet (SIWE through
//! `window.ethereum`), `console.js` keeps the tokens in memory and sends the access token with every
//! fragment request. Each fragment is built from the same REST API every other client uses, called
//! in process with the operator's own token, so the API's rules hold unchanged: without the admin
//! role the API answers 403 and the console shows its refusal page.

// A handler's error is the page it answers with: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod history;
mod pages;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use tower::ServiceExt;

use history::History;

/// The vendored htmx (see `assets/console/VENDORED.md`).
const HTMX: &str = include_str!("../../assets/console/htmx-2.0.11.min.js");
const HTMX_PATH: &str = "/admin/assets/htmx-2.0.11.min.js";
const CONSOLE_JS: &str = include_str!("../../assets/console/console.js");
const CONSOLE_CSS: &str = include_str!("../../assets/console/console.css");

/// Nothing the page loads or calls may come from anywhere but this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// What the console's fragments read through: the process's own HTTP API (REST routes and health).
pub struct Console {
    api: Router,
    history: &'static History,
}

/// `/admin` and everything under it. `api` is the REST API with its middleware (token check, rate
/// limit, idempotency) and `/health`, as clients reach it.
pub fn router(api: Router) -> anyhow::Result<Router> {
    let history = History::get(crate::telemetry::metrics_handle()?);
    let console = Arc::new(Console { api, history });
    let ui = Router::new()
        .route("/admin/ui/overview", get(pages::overview))
        .route("/admin/ui/overview/live", get(pages::overview_live))
        .route("/admin/ui/claims", get(pages::claims))
        .route("/admin/ui/claims/search", get(pages::claim_search))
        .route("/admin/ui/claims/list", get(pages::claim_list))
        .route("/admin/ui/orders/list", get(pages::order_list))
        .route("/admin/ui/claims/{id}", get(pages::claim_detail))
        .route("/admin/ui/events", get(pages::events))
        .route("/admin/ui/events/confirm", get(pages::redrive_confirm))
        .route("/admin/ui/events/redrive", post(pages::redrive))
        .route("/admin/ui/events/status", get(pages::redrive_status))
        .route("/admin/ui/wallet", get(pages::wallet))
        .route("/admin/ui/wallet/user", get(pages::wallet_user))
        .route("/admin/ui/wallet/entries", get(pages::wallet_entries))
        .route("/admin/ui/wallet/holds", get(pages::wallet_holds))
        .route("/admin/ui/wallet/withdrawals", get(pages::withdrawals))
        .route("/admin/ui/wallet/deposits", get(pages::deposits))
        .route("/admin/ui/wallet/verify", post(pages::verify))
        .fallback(|| async { fragment(StatusCode::NOT_FOUND, notice("Not found", "There is no such console page.")) })
        .layer(axum::middleware::from_fn_with_state(console.clone(), operators_only))
        .layer(axum::middleware::map_response(|res: Response| async move {
            let mut res = readable_rejection(res).await;
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }))
        .with_state(console);
    Ok(Router::new()
        .route("/admin", get(shell))
        .route("/admin/", get(shell))
        .route(HTMX_PATH, get(|| async { asset("text/javascript; charset=utf-8", HTMX) }))
        .route("/admin/assets/console.js", get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }))
        .route("/admin/assets/console.css", get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }))
        .merge(ui)
        .layer(axum::middleware::map_response(|mut res: Response| async move {
            let h = res.headers_mut();
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            res
        })))
}

/// A query, form or path the extractors refused (axum answers those in plain text, naming the field)
/// becomes a fragment the page can show, with the same status.
async fn readable_rejection(res: Response) -> Response {
    let plain = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    if !res.status().is_client_error() || !plain {
        return res;
    }
    let status = res.status();
    let text = axum::body::to_bytes(res.into_body(), 64 << 10).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).into_owned();
    fragment(status, html! { div.notice.error role="alert" { strong { "Check the input" } p { (text) } } })
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// The page: header, navigation, sign-in, and the region the fragments fill.
async fn shell() -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"selfRequestsOnly":true,"historyEnabled":false}"#;
                title { "walletd · operator console" }
                link rel="stylesheet" href="/admin/assets/console.css";
                script src=(HTMX_PATH) defer {}
                script src="/admin/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "walletd" small { " operator console" } }
                    nav #nav aria-label="Console pages" hidden {
                        a href="#overview" data-page="overview" { "Overview" }
                        a href="#claims" data-page="claims" { "Orders & claims" }
                        a href="#events" data-page="events" { "Events" }
                        a href="#wallet" data-page="wallet" { "Wallet" }
                    }
                    div.who {
                        span #signed-in-as {}
                        button #sign-in type="button" { "Sign in with wallet" }
                        button #sign-out type="button" hidden { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    section #welcome {
                        h1 { "Operator console" }
                        p { "Sign in with an operator's Ethereum wallet. The console asks the wallet to sign a sign-in message (EIP-4361); nothing is sent anywhere but this server." }
                    }
                }
                p #status role="status" aria-live="polite" {}
            }
        }
    };
    let mut res = page.into_string().into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Every console fragment is for operators: the API says who the caller is (`/v1/me`, with the roles
/// the configuration gives the address now), and anyone else gets the refusal page.
async fn operators_only(
    axum::extract::State(c): axum::extract::State<Arc<Console>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let who = match Caller::from_request_parts(&mut parts, &()).await {
        Ok(who) => who,
        Err(refusal) => return refusal,
    };
    let me = c.call(&who, Method::GET, "/v1/me", None).await;
    if !me.status.is_success() {
        return refused(&me);
    }
    let admin = me.body["roles"].as_array().is_some_and(|roles| roles.iter().any(|r| r == "admin"));
    if !admin {
        return fragment(StatusCode::FORBIDDEN, refusal("admin role required"));
    }
    next.run(axum::extract::Request::from_parts(parts, body)).await
}

/// Who asks: the operator's `Authorization` header (forwarded to the API as it came) and request id.
pub struct Caller {
    authorization: HeaderValue,
    request_id: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(authorization) = parts.headers.get(header::AUTHORIZATION).cloned() else {
            return Err(fragment(StatusCode::UNAUTHORIZED, signed_out()));
        };
        Ok(Self { authorization, request_id: parts.headers.get(&web::extract::X_REQUEST_ID).cloned() })
    }
}

/// An answer of the API: its status and JSON body.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Console {
    /// Calls the API as the caller.
    async fn call(&self, who: &Caller, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let mut req =
            Request::builder().method(method).uri(uri).header(header::AUTHORIZATION, who.authorization.clone());
        if let Some(id) = &who.request_id {
            req = req.header(&web::extract::X_REQUEST_ID, id.clone());
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let req = match req.body(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(uri, error = %e, "console: could not build an API request");
                return Reply { status: StatusCode::INTERNAL_SERVER_ERROR, body: Value::Null };
            }
        };
        let res = match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 8 << 20).await.unwrap_or_default();
        Reply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
    }

    /// A GET that must succeed: its body, or the fragment that explains why not (a refusal page for
    /// 403, a sign-in prompt for 401, the problem's detail otherwise).
    async fn get(&self, who: &Caller, uri: &str) -> Result<Value, Response> {
        let reply = self.call(who, Method::GET, uri, None).await;
        if reply.status.is_success() { Ok(reply.body) } else { Err(refused(&reply)) }
    }
}

/// The fragment for an API answer that is not a success.
fn refused(reply: &Reply) -> Response {
    let detail = reply.body["detail"].as_str().unwrap_or("").to_string();
    match reply.status {
        StatusCode::FORBIDDEN => fragment(StatusCode::FORBIDDEN, refusal(&detail)),
        StatusCode::UNAUTHORIZED => fragment(StatusCode::UNAUTHORIZED, signed_out()),
        status => {
            let title =
                reply.body["title"].as_str().unwrap_or(status.canonical_reason().unwrap_or("Error")).to_string();
            let fields: Vec<String> = reply.body["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            format!("{}: {}", e["field"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or(""))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let body = html! {
                div.notice.error role="alert" {
                    strong { (title) } " (" (status.as_u16()) ")"
                    @if !detail.is_empty() { p { (detail) } }
                    @if !fields.is_empty() { ul { @for f in &fields { li { (f) } } } }
                }
            };
            // A 5xx of the API stays a 5xx of the console (the operator's browser shows it as such).
            fragment(status, body)
        }
    }
}

/// The page a signed-in user without the admin role gets.
fn refusal(detail: &str) -> Markup {
    html! {
        section #refusal.refusal aria-labelledby="refusal-title" {
            h1 #refusal-title { "Not an operator" }
            p { "This console is for operators. The account you signed in with does not have the admin role, so the API refused its requests." }
            @if !detail.is_empty() { p.detail { "The API said: " (detail) } }
            p { "Sign out and sign in with an operator's wallet, or ask for your address to be listed in " code { "WALLETD_ADMIN_ADDRESSES" } "." }
        }
    }
}

fn signed_out() -> Markup {
    notice("Signed out", "Your session is over. Sign in again with your wallet.")
}

fn notice(title: &str, text: &str) -> Markup {
    html! { div.notice role="status" { strong { (title) } p { (text) } } }
}

/// An HTML fragment with `status` (htmx is told to swap 4xx answers in, see `console.js`).
fn fragment(status: StatusCode, body: Markup) -> Response {
    let mut res = (status, body.into_string()).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    res
}

fn ok(body: Markup) -> Result<Response, Response> {
    Ok(fragment(StatusCode::OK, body))
}
