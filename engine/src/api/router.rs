//! The routes of RUN.md §2 and their handlers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use journeys::event::EventType;

use super::auth::{self, Access};
use super::error::Error;
use super::events::{self as parse, LineError, Parsed};
use super::{body, feedback, segment, unsubscribe, Appended, Handle, Replay, Tokens};
use crate::clock::{Clock, WallClock};
use crate::metrics::Metrics;

/// The most a request body may hold, inflated or not (RUN.md §2).
pub const MAX_BODY: usize = 10 * 1024 * 1024;
/// The most the small admin and unsubscribe bodies may hold.
const MAX_SMALL_BODY: usize = 64 * 1024;
/// How many dead letters `GET /v1/dlq` lists without `?limit=`, and at most.
pub const DLQ_DEFAULT_LIMIT: usize = 1000;
pub const DLQ_MAX_LIMIT: usize = 100_000;
/// An unsubscribe token longer than this is not one of ours.
const MAX_UNSUBSCRIBE_TOKEN: usize = 1024;

/// How the router is set up besides its handle and tokens.
#[derive(Clone)]
pub struct Options {
    /// Where "now" comes from (a Segment call without any timestamp).
    pub clock: Arc<dyn Clock>,
    /// The limit on a body, as received and once inflated.
    pub max_body: usize,
    /// How long a client may take to send its body (slow clients get 408).
    pub body_timeout: Duration,
    /// The web console at `/` (`None`: not served).
    pub console: Option<super::console::Settings>,
    /// Feedback intake: signature keys, SNS hosts, the outcome counters.
    pub feedback: feedback::Settings,
    /// What `GET /metrics` serves; rejected lines and requests are counted
    /// here.
    pub metrics: Metrics,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(WallClock),
            max_body: MAX_BODY,
            body_timeout: Duration::from_secs(30),
            console: None,
            feedback: feedback::Settings::default(),
            metrics: Metrics::new(),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("max_body", &self.max_body)
            .field("body_timeout", &self.body_timeout)
            .field("console", &self.console)
            .finish_non_exhaustive()
    }
}

pub(super) struct Api<H> {
    pub(super) handle: Arc<H>,
    tokens: Tokens,
    pub(super) options: Options,
}

type Shared<H> = State<Arc<Api<H>>>;

/// The API's routes with the wall clock and the default limits.
pub fn router<H: Handle>(handle: Arc<H>, tokens: Tokens) -> Router {
    router_with(handle, tokens, Options::default())
}

/// The API's routes.
pub fn router_with<H: Handle>(handle: Arc<H>, tokens: Tokens, options: Options) -> Router {
    let console = options.console.clone().map(|settings| {
        super::console::routes(
            Arc::clone(&handle),
            tokens.clone(),
            settings,
            Arc::clone(&options.clock),
            options.body_timeout,
        )
    });
    let metrics = options.metrics.clone();
    options.feedback.counts.export_to(&metrics);
    let api = Arc::new(Api {
        handle,
        tokens,
        options,
    });
    let routes = Router::new()
        .route("/v1/events", post(events::<H>))
        .route("/v1/track", post(track::<H>))
        .route("/v1/identify", post(identify::<H>))
        .route("/v1/batch", post(batch::<H>))
        .route("/v1/webhooks/segment", post(segment_webhook::<H>))
        .route("/v1/users/{id}", get(user::<H>).delete(erase::<H>))
        .route("/v1/dlq", get(dead_letters::<H>))
        .route("/v1/dlq/replay", post(replay::<H>))
        .route("/v1/report", get(report::<H>))
        .route("/v1/admin/deployed", get(super::admin::deployed::<H>))
        .route("/v1/admin/plan", post(super::admin::plan::<H>))
        .route("/v1/admin/apply", post(super::admin::apply::<H>))
        .route("/v1/admin/promote", post(super::admin::promote::<H>))
        .route("/v1/admin/rollback", post(super::admin::rollback::<H>))
        .route("/v1/admin/canary", get(super::admin::canary::<H>))
        .route("/v1/admin/history", get(super::admin::history::<H>))
        .route(
            "/v1/unsubscribe/{token}",
            get(unsubscribe_page).post(unsubscribe::<H>),
        )
        .route("/v1/feedback/{provider}", post(feedback_post::<H>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<H>))
        .route("/metrics", get(scrape::<H>))
        .with_state(api);
    let routes = match console {
        Some(c) => routes.merge(c),
        None => routes,
    };
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(metrics, trace))
}

impl<H: Handle> Api<H> {
    pub(super) fn auth(
        &self,
        headers: &HeaderMap,
        access: Access,
        basic: bool,
    ) -> Result<(), Error> {
        if auth::allowed(&self.tokens, headers, access, basic) {
            Ok(())
        } else {
            Err(Error::Unauthorized)
        }
    }

    /// The body as received and as inflated (the same bytes when not
    /// compressed).
    async fn read(&self, body: Body, headers: &HeaderMap) -> Result<(Bytes, Bytes), Error> {
        body::read(
            body,
            headers,
            self.options.max_body,
            self.options.body_timeout,
        )
        .await
    }

    /// Hands the good events to the engine, then answers for all lines.
    async fn ingest(
        &self,
        source: &'static str,
        parsed: Parsed,
        style: Style,
    ) -> Result<Response, Error> {
        if parsed.refused() > 0 {
            self.options.metrics.rejected(parsed.refused() as u64);
        }
        let appended = if parsed.events.is_empty() {
            Appended::default()
        } else {
            self.handle.ingest(source, parsed.events).await?
        };
        Ok(answer(appended, parsed.errors, parsed.omitted, style))
    }
}

#[derive(Debug, Clone, Copy)]
enum Style {
    /// `/v1/events`: 202, or 400 with the errors.
    Events,
    /// The Segment routes: 200 with `success`, or 400 with the errors.
    Segment,
}

/// `omitted`: refused lines past [`parse::MAX_LISTED_ERRORS`], counted in
/// `errors_omitted` (only present when there are some).
fn answer(appended: Appended, errors: Vec<LineError>, omitted: usize, style: Style) -> Response {
    let Appended {
        accepted,
        duplicates,
    } = appended;
    let with_omitted = |mut v: Value| {
        if omitted > 0 {
            v["errors_omitted"] = json!(omitted);
        }
        Json(v)
    };
    match (style, errors.is_empty() && omitted == 0) {
        (Style::Events, true) => (
            StatusCode::ACCEPTED,
            Json(json!({"accepted": accepted, "duplicates": duplicates})),
        )
            .into_response(),
        (Style::Events, false) => (
            StatusCode::BAD_REQUEST,
            with_omitted(json!({"accepted": accepted, "duplicates": duplicates, "errors": errors})),
        )
            .into_response(),
        (Style::Segment, true) => (
            StatusCode::OK,
            Json(json!({"success": true, "accepted": accepted, "duplicates": duplicates})),
        )
            .into_response(),
        (Style::Segment, false) => (
            StatusCode::BAD_REQUEST,
            with_omitted(json!({"success": false, "accepted": accepted, "duplicates": duplicates, "errors": errors})),
        )
            .into_response(),
    }
}

async fn events<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Ingest, false)?;
    body::check_text(&headers)?;
    let (_, body) = api.read(body, &headers).await?;
    let parsed = parse::parse(&body)?;
    api.ingest("events", parsed, Style::Events).await
}

fn json_body(body: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(body::without_bom(body))
        .map_err(|e| Error::BadRequest(format!("invalid JSON: {e}")))
}

async fn one_call<H: Handle>(
    api: &Api<H>,
    headers: HeaderMap,
    body: Body,
    kind: EventType,
    source: &'static str,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Ingest, true)?;
    body::check_text(&headers)?;
    let (_, body) = api.read(body, &headers).await?;
    let call = json_body(&body)?;
    let mut parsed = Parsed::default();
    parsed.push(
        1,
        segment::map(call, Some(kind), None, api.options.clock.now()),
    );
    api.ingest(source, parsed, Style::Segment).await
}

async fn track<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    one_call(&api, headers, body, EventType::Track, "track").await
}

async fn identify<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    one_call(&api, headers, body, EventType::Identify, "identify").await
}

async fn batch<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Ingest, true)?;
    body::check_text(&headers)?;
    let (_, body) = api.read(body, &headers).await?;
    let parsed = segment::map_batch(json_body(&body)?, api.options.clock.now())?;
    api.ingest("batch", parsed, Style::Segment).await
}

/// Whether `X-Signature` is the hex HMAC-SHA1 of one of `bodies` with the
/// secret (checked in constant time).
fn signed(secret: Option<&str>, headers: &HeaderMap, bodies: [&[u8]; 2]) -> bool {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return false;
    };
    let Some(signature) = headers
        .get("x-signature")
        .and_then(|v| hex::decode(v.as_bytes().trim_ascii()).ok())
    else {
        return false;
    };
    bodies.iter().any(|body| {
        let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&signature).is_ok()
    })
}

async fn segment_webhook<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let by_token = auth::allowed(&api.tokens, &headers, Access::Ingest, true);
    let may_sign = api.tokens.segment_secret.is_some() && headers.contains_key("x-signature");
    if !by_token && !may_sign {
        return Err(Error::Unauthorized);
    }
    let (wire, body) = api.read(body, &headers).await?;
    if !by_token
        && !signed(
            api.tokens.segment_secret.as_deref(),
            &headers,
            [&wire, &body],
        )
    {
        return Err(Error::Unauthorized);
    }
    body::check_text(&headers)?;
    let mut parsed = Parsed::default();
    parsed.push(
        1,
        segment::map(json_body(&body)?, None, None, api.options.clock.now()),
    );
    api.ingest("segment", parsed, Style::Segment).await
}

fn path(p: Result<Path<String>, PathRejection>) -> Result<String, Error> {
    p.map(|Path(s)| s)
        .map_err(|e| Error::BadRequest(e.body_text()))
}

async fn user<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Admin, false)?;
    match api.handle.user(path(id)?).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(Error::UnknownUser),
    }
}

async fn erase<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Admin, false)?;
    if api.handle.erase(path(id)?).await? {
        Ok(Json(json!({"erased": true})).into_response())
    } else {
        Err(Error::UnknownUser)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqQuery {
    limit: Option<usize>,
}

async fn dead_letters<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    query: Result<Query<DlqQuery>, QueryRejection>,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Admin, false)?;
    let Query(q) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(DLQ_DEFAULT_LIMIT);
    if limit > DLQ_MAX_LIMIT {
        return Err(Error::BadRequest(format!(
            "`limit` must be at most {DLQ_MAX_LIMIT}"
        )));
    }
    Ok(Json(api.handle.dead_letters(limit).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    id: Option<u64>,
    all: Option<bool>,
}

async fn replay<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Admin, false)?;
    body::check_text(&headers)?;
    let (_, body) = body::read(body, &headers, MAX_SMALL_BODY, api.options.body_timeout).await?;
    let b: ReplayBody = serde_json::from_slice(&body).map_err(|e| {
        Error::BadRequest(format!("expected {{\"id\":N}} or {{\"all\":true}}: {e}"))
    })?;
    let which = match (b.id, b.all) {
        (Some(id), None | Some(false)) => Replay::One(id),
        (None, Some(true)) => Replay::All,
        _ => {
            return Err(Error::BadRequest(
                "expected {\"id\":N} or {\"all\":true}".into(),
            ))
        }
    };
    let replayed = api.handle.replay(which).await?;
    Ok(Json(json!({"replayed": replayed})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    journey: Option<String>,
    since: Option<String>,
}

/// `GET /v1/report[?journey=ID][&since=TS]` (an extension: RUN.md §5's
/// `sluice report` through the API, docs/api.md).
async fn report<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Admin, false)?;
    let Query(q) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    let since = match q.since.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| {
                    Error::BadRequest(format!(
                        "`since` `{s}` is not an RFC 3339 timestamp such as 2026-03-02T09:00:00Z: {e}"
                    ))
                })?
                .timestamp_millis(),
        ),
    };
    let query = crate::report::Query {
        journey: q.journey.filter(|j| !j.is_empty()),
        since,
    };
    match api.handle.report(query).await? {
        Ok(v) => Ok(Json(v).into_response()),
        Err(message) => Err(Error::Missing(message)),
    }
}

/// An HTML answer with headers that keep the page to itself: no external
/// resources, no referrer (the token is in the URL), no caching.
fn html(status: StatusCode, page: String) -> Response {
    let mut r = (status, page).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
        ),
    );
    r
}

async fn unsubscribe_page() -> Response {
    html(StatusCode::OK, unsubscribe::confirm_page())
}

/// Whether the client asked for JSON rather than a page.
fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase())
        .unwrap_or_default();
    accept.contains("application/json") && !accept.contains("text/html")
}

async fn unsubscribe<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, Error> {
    let json = wants_json(&headers);
    // RFC 8058's body (`List-Unsubscribe=One-Click`, form-encoded or
    // multipart) or none: the token alone decides, so the body is read
    // (bounded) and not interpreted.
    body::read_raw(body, &headers, MAX_SMALL_BODY, api.options.body_timeout).await?;
    let token = path(token).unwrap_or_default();
    let done = if token.is_empty() || token.len() > MAX_UNSUBSCRIBE_TOKEN {
        None
    } else {
        api.handle.unsubscribe(token).await?
    };
    Ok(match (done, json) {
        (Some(u), true) => {
            Json(json!({"unsubscribed": true, "category": u.category})).into_response()
        }
        (Some(u), false) => html(StatusCode::OK, unsubscribe::done_page(&u.category)),
        (None, true) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown unsubscribe link"})),
        )
            .into_response(),
        (None, false) => html(StatusCode::NOT_FOUND, unsubscribe::unknown_page()),
    })
}

async fn feedback_post<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    provider: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, Error> {
    let provider = path(provider)?;
    let request = feedback::Request {
        handle: &*api.handle,
        tokens: &api.tokens,
        settings: &api.options.feedback,
        clock: &*api.options.clock,
        max_body: api.options.max_body,
        body_timeout: api.options.body_timeout,
    };
    feedback::post(request, &provider, headers, body).await
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn readyz<H: Handle>(State(api): Shared<H>) -> Response {
    if api.handle.ready() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        let error = match api.handle.unready_reason() {
            Some(why) => format!("not ready: {why}"),
            None => "not ready".to_owned(),
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": error})),
        )
            .into_response()
    }
}

/// `GET /metrics` (RUN.md §6): OpenMetrics when the scraper asks for it
/// (Prometheus does), else Prometheus text 0.0.4. No token.
async fn scrape<H: Handle>(State(api): Shared<H>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    match api.options.metrics.scrape(&accept) {
        Ok((content_type, body)) => {
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "cannot encode the metrics"})),
        )
            .into_response(),
    }
}

async fn not_found() -> Error {
    Error::NotFound
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// One span per request with the method, the route's pattern (never the
/// path itself, which may hold a user id or an unsubscribe token, nor the
/// query string), the status and the duration. No headers, no bodies.
/// Each request is also counted in `sluice_http_requests_total`.
async fn trace(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(unmatched)", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http",
        method = %method,
        route = %route,
        status = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    let start = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.record("status", response.status().as_u16());
    span.record("duration_ms", ms);
    span.in_scope(|| tracing::info!("answered"));
    metrics.http_request(method.as_str(), &route, response.status().as_u16());
    response
}
