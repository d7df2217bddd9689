//! The read-only web console `sluice run` serves at `/`: the journeys, each
//! drawn as its state machine with the live count at each step and its
//! sends by outcome; versions and canaries; a user's timeline; the
//! dead-letter queue. It changes nothing: every change goes through the CLI
//! and Git.
//!
//! Access: the admin token, entered once in a login form; the browser then
//! keeps a signed session in an `HttpOnly; SameSite=Strict` cookie
//! ([`session`]). A request without a valid session gets the login page and
//! no data. Pages are server-rendered HTML with inline SVG ([`svg`]),
//! escaped throughout ([`html`]); one small script, written here and
//! embedded like the stylesheet (no JavaScript toolchain), polls
//! `GET /counts` and updates the numbers in place. Every answer carries a
//! `default-src 'self'` Content-Security-Policy: nothing is loaded from
//! anywhere else.
//!
//! Knows nothing of the store's layout or the engine: it reads through the
//! API's [`Handle`] and draws the deployed [`Config`].

mod html;
mod pages;
pub mod session;
mod svg;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use journeys::compiled::Config;

use super::error::Error;
use super::{auth, body, Handle, StepCount, Tokens};
use crate::clock::Clock;
use html::{page, Section};
use session::Sessions;

/// The stylesheet and the script, embedded in the binary.
const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// How many dead letters the console lists at most.
pub const DLQ_PAGE: usize = 500;
/// The most a login form may hold.
const MAX_FORM: usize = 8 * 1024;
/// A user id longer than this is refused before asking the engine.
const MAX_USER_ID: usize = 1024;

/// The config the engine runs now, replaced by the writer when a
/// deployment changes it.
pub type ConfigCell = Arc<std::sync::RwLock<Arc<Config>>>;

/// What the console needs besides the handle.
#[derive(Clone)]
pub struct Settings {
    /// The deployed config: its journeys are drawn.
    pub config: ConfigCell,
    /// Whether cookies get `Secure` (the public URL is https).
    pub secure: bool,
    /// How long a session lasts.
    pub session_ttl: Duration,
}

impl Settings {
    /// Settings for a service whose public URL is `public_url` (sessions
    /// last 12 hours).
    pub fn new(config: Arc<Config>, public_url: &str) -> Settings {
        Settings {
            config: Arc::new(std::sync::RwLock::new(config)),
            secure: is_https(public_url),
            session_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

impl Settings {
    /// The config as it stands.
    pub fn current(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// Whether a public URL is served over https.
fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("journeys", &self.current().journeys.len())
            .field("secure", &self.secure)
            .field("session_ttl", &self.session_ttl)
            .finish()
    }
}

struct Console<H> {
    handle: Arc<H>,
    tokens: Tokens,
    settings: Settings,
    sessions: Sessions,
    clock: Arc<dyn Clock>,
    body_timeout: Duration,
}

type Shared<H> = State<Arc<Console<H>>>;

/// The console's routes (merged into the API's router by
/// [`super::router_with`] when [`super::Options::console`] is set).
pub fn routes<H: Handle>(
    handle: Arc<H>,
    tokens: Tokens,
    settings: Settings,
    clock: Arc<dyn Clock>,
    body_timeout: Duration,
) -> Router {
    let ttl = i64::try_from(settings.session_ttl.as_millis()).unwrap_or(i64::MAX);
    let sessions = Sessions::new(&tokens.admin, ttl, settings.secure);
    let console = Arc::new(Console {
        handle,
        tokens,
        settings,
        sessions,
        clock,
        body_timeout,
    });
    Router::new()
        .route("/", get(home::<H>))
        .route("/login", post(login::<H>).get(login_page::<H>))
        .route("/logout", post(logout::<H>))
        .route("/journeys/{id}", get(journey::<H>))
        .route("/users", get(user::<H>))
        .route("/dlq", get(dead_letters::<H>))
        .route("/counts", get(counts::<H>))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .with_state(console)
}

/// The headers every console answer carries.
fn guard(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    guard(r)
}

/// Where a login may send the browser back to: a console path, never
/// another site (`//host`, `/\host`) or a URL with a scheme.
fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.contains(['\r', '\n'])
        && next.len() <= 2048;
    if ok && next != "/login" {
        next
    } else {
        "/"
    }
}

/// Whether a form post comes from a page of this console: a browser names
/// the page's origin in `Origin`; its host must be the one asked (`Host`).
/// Without `Origin` (not a browser form), the post is let through.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

fn redirect(to: &str, cookie: Option<String>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    guard(r)
}

impl<H: Handle> Console<H> {
    fn signed_in(&self, headers: &HeaderMap) -> bool {
        session::from_headers(headers)
            .is_some_and(|s| self.sessions.valid(&s, self.clock.now_millis()))
    }

    /// The login page instead of the page asked for (401, no data).
    fn login_instead(&self, next: &str) -> Response {
        html_response(
            StatusCode::UNAUTHORIZED,
            page(
                "Log in",
                Section::Login,
                &pages::login(None, safe_next(next)),
            ),
        )
    }

    async fn counts(&self) -> Result<Arc<Vec<StepCount>>, Error> {
        Ok(self.handle.step_counts().await?)
    }
}

/// The path and query a request asked for, to come back to after a login.
/// Each canary's status (`canary status`), or none where the engine runs
/// no deployments.
async fn canaries<H: Handle>(handle: &H, journey: Option<&str>) -> Vec<serde_json::Value> {
    let request = crate::engine::deploy::AdminRequest::Canary {
        journey: journey.map(str::to_owned),
    };
    match handle.admin(request).await {
        Ok(Ok(serde_json::Value::Array(list))) => list,
        _ => Vec::new(),
    }
}

fn asked(uri: &axum::http::Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
}

async fn home<H: Handle>(
    State(c): Shared<H>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, Error> {
    if !c.signed_in(&headers) {
        return Ok(c.login_instead(&asked(&uri)));
    }
    let counts = c.counts().await?;
    let canaries = canaries(c.handle.as_ref(), None).await;
    Ok(html_response(
        StatusCode::OK,
        page(
            "Journeys",
            Section::Journeys,
            &pages::journeys(&c.settings.current(), &counts, &canaries),
        ),
    ))
}

async fn login_page<H: Handle>(State(c): Shared<H>, headers: HeaderMap) -> Response {
    if c.signed_in(&headers) {
        return redirect("/", None);
    }
    html_response(
        StatusCode::OK,
        page("Log in", Section::Login, &pages::login(None, "/")),
    )
}

async fn login<H: Handle>(
    State(c): Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    if !same_origin(&headers) {
        return Err(Error::Forbidden);
    }
    let form = body::read_raw(body, &headers, MAX_FORM, c.body_timeout).await?;
    let mut token = None;
    let mut next = String::from("/");
    for (k, v) in form_urlencoded::parse(&form) {
        match k.as_ref() {
            "token" => token = Some(v.into_owned()),
            "next" => next = v.into_owned(),
            _ => {}
        }
    }
    let next = safe_next(&next).to_owned();
    let good = token
        .as_deref()
        .is_some_and(|t| auth::same(t.trim().as_bytes(), &c.tokens.admin));
    if !good {
        tracing::warn!("console: a login with a wrong admin token");
        return Ok(html_response(
            StatusCode::UNAUTHORIZED,
            page(
                "Log in",
                Section::Login,
                &pages::login(Some("That is not the admin token."), &next),
            ),
        ));
    }
    let session = c.sessions.issue(c.clock.now_millis());
    Ok(redirect(&next, Some(c.sessions.cookie(&session))))
}

async fn logout<H: Handle>(State(c): Shared<H>, headers: HeaderMap) -> Result<Response, Error> {
    if !same_origin(&headers) {
        return Err(Error::Forbidden);
    }
    Ok(redirect("/", Some(c.sessions.clear())))
}

async fn journey<H: Handle>(
    State(c): Shared<H>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Error> {
    if !c.signed_in(&headers) {
        return Ok(c.login_instead(&asked(&uri)));
    }
    let id = id.map(|Path(s)| s).unwrap_or_default();
    let config = c.settings.current();
    let Some(j) = config.journey(&id) else {
        let body = format!(
            "<h1>Unknown journey</h1><p class=\"error\">No journey <code>{}</code> is deployed. <a href=\"/\">All journeys</a></p>",
            html::Esc(&id)
        );
        return Ok(html_response(
            StatusCode::NOT_FOUND,
            page("Unknown journey", Section::Journeys, &body),
        ));
    };
    let counts = c.counts().await?;
    let canaries = canaries(c.handle.as_ref(), Some(&j.id)).await;
    Ok(html_response(
        StatusCode::OK,
        page(
            &j.id,
            Section::Journeys,
            &pages::journey(j, &counts, canaries.first()),
        ),
    ))
}

#[derive(Debug, Deserialize)]
struct UserQuery {
    id: Option<String>,
}

async fn user<H: Handle>(
    State(c): Shared<H>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    query: Result<Query<UserQuery>, QueryRejection>,
) -> Result<Response, Error> {
    if !c.signed_in(&headers) {
        return Ok(c.login_instead(&asked(&uri)));
    }
    let Query(q) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    let id = q.id.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let found = match &id {
        Some(id) if id.len() <= MAX_USER_ID => c.handle.timeline(id.clone()).await?,
        _ => None,
    };
    Ok(html_response(
        if id.is_some() && found.is_none() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        },
        page(
            "User lookup",
            Section::Users,
            &pages::user(id.as_deref(), found.as_ref()),
        ),
    ))
}

async fn dead_letters<H: Handle>(
    State(c): Shared<H>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, Error> {
    if !c.signed_in(&headers) {
        return Ok(c.login_instead(&asked(&uri)));
    }
    let letters = c.handle.dead_letters(DLQ_PAGE).await?;
    Ok(html_response(
        StatusCode::OK,
        page(
            "Dead letters",
            Section::DeadLetters,
            &pages::dead_letters(&letters, DLQ_PAGE),
        ),
    ))
}

#[derive(Debug, Deserialize)]
struct CountsQuery {
    journey: String,
}

async fn counts<H: Handle>(
    State(c): Shared<H>,
    headers: HeaderMap,
    query: Result<Query<CountsQuery>, QueryRejection>,
) -> Result<Response, Error> {
    if !c.signed_in(&headers) {
        return Err(Error::Unauthorized);
    }
    let Query(q) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    let config = c.settings.current();
    let Some(j) = config.journey(&q.journey) else {
        return Err(Error::NotFound);
    };
    let counts = c.counts().await?;
    Ok(guard(Json(pages::counts_json(j, &counts)).into_response()))
}

fn asset(content_type: &'static str, text: &'static str) -> Response {
    let mut r = text.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut r = guard(r);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_returns_only_to_console_paths() {
        assert_eq!(safe_next("/journeys/x?y=1"), "/journeys/x?y=1");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example/"), "/");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("/login"), "/");
        assert_eq!(safe_next("/a\r\nSet-Cookie: x"), "/");
    }

    #[test]
    fn form_posts_come_from_this_console() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h));
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn cookies_are_secure_behind_https() {
        assert!(is_https("https://sluice.example"));
        assert!(is_https("HTTPS://sluice.example"));
        assert!(!is_https("http://127.0.0.1:8080"));
        assert!(!is_https("https:"));
    }
}
