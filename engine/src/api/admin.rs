//! `/v1/admin/…` (RUN.md §2, DEPLOY.md): what `plan`, `apply`, `promote`,
//! `rollback`, `canary status` and `history` do with `--server`. Admin
//! token only. The writer carries each request out between the events
//! around it; a refusal answers 400 (bad request), 409 (the deployed state
//! moved since the plan) or 422 (the config does not validate), with
//! `{"error": …}` and nothing changed.
//!
//! | route | body / query | answer |
//! |---|---|---|
//! | `GET /v1/admin/deployed` | — | `{"generation", "files": {path: base64}, "live": [{journey, version, step, live}], "running": {journey: {stable, canary, share}}, "older": {generation: {path: base64}}}` |
//! | `POST /v1/admin/plan` | `{"files"}` | `{"generation", "plan"}` (CLI.md's shape) |
//! | `POST /v1/admin/apply` | `{"files", "expected_generation", "actor", "canary", "guards", "min_sends"}` | `{"applied", "generation", "plan", "migrated", "audit"}` |
//! | `POST /v1/admin/promote` | `{"journey", "force", "actor"}` | the audit entry |
//! | `POST /v1/admin/rollback` | `{"journey", "actor"}` | the audit entry |
//! | `GET /v1/admin/canary` | `?journey=` | each canary's status |
//! | `GET /v1/admin/history` | `?journey=` | the audit log, oldest first |

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Access;
use super::error::Error;
use super::router::{Api, MAX_BODY};
use super::{body, Handle};
use crate::deploy::state::Snapshot;
use crate::engine::deploy::AdminRequest;

type Shared<H> = State<std::sync::Arc<Api<H>>>;

const MAX_SMALL: usize = 64 * 1024;

async fn ask<H: Handle>(api: &Api<H>, request: AdminRequest) -> Result<Response, Error> {
    match api.handle.admin(request).await? {
        Ok(v) => Ok(Json(v).into_response()),
        Err(f) => {
            let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST);
            Ok((status, Json(f.body)).into_response())
        }
    }
}

async fn json_body<H: Handle, T: for<'de> Deserialize<'de>>(
    api: &Api<H>,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    expected: &str,
) -> Result<T, Error> {
    body::check_text(headers)?;
    let (_, bytes) = body::read(body, headers, limit, api.options.body_timeout).await?;
    serde_json::from_slice(body::without_bom(&bytes))
        .map_err(|e| Error::BadRequest(format!("expected {expected}: {e}")))
}

fn snapshot(files: BTreeMap<String, String>) -> Result<Snapshot, Error> {
    let mut s = Snapshot::default();
    for (name, b64) in files {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| Error::BadRequest(format!("file `{name}` is not base64: {e}")))?;
        s.files.insert(name, bytes);
    }
    s.check_paths()
        .map_err(|e| Error::BadRequest(e.to_string()))?;
    Ok(s)
}

/// A canary share: `10%`, `10` or `2.5%`, within 0–100, in basis points.
pub fn parse_share(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let n = t.strip_suffix('%').unwrap_or(t).trim();
    let v: f64 = n
        .parse()
        .map_err(|_| format!("canary share `{text}` is not a percentage such as 10%"))?;
    if !(0.0..=100.0).contains(&v) || !v.is_finite() {
        return Err(format!("canary share `{text}` is outside 0–100%"));
    }
    Ok((v * 100.0).round() as u32)
}

pub(super) async fn deployed<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Admin, false)?;
    ask(&api, AdminRequest::Deployed).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    files: BTreeMap<String, String>,
}

pub(super) async fn plan<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Admin, false)?;
    let b: PlanBody =
        json_body(&api, &headers, body, MAX_BODY, "{\"files\":{path: base64}}").await?;
    ask(&api, AdminRequest::Plan(snapshot(b.files)?)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    files: BTreeMap<String, String>,
    #[serde(default)]
    expected_generation: Option<u64>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    canary: Option<Value>,
    #[serde(default)]
    guards: Option<Value>,
    #[serde(default)]
    min_sends: Option<u64>,
}

pub(super) async fn apply<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Admin, false)?;
    let b: ApplyBody = json_body(
        &api,
        &headers,
        body,
        MAX_BODY,
        "{\"files\":{path: base64}, …}",
    )
    .await?;
    let canary = match &b.canary {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_share(s).map_err(Error::BadRequest)?),
        Some(Value::Number(n)) => Some(parse_share(&n.to_string()).map_err(Error::BadRequest)?),
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "`canary` is a percentage such as \"10%\", not {other}"
            )))
        }
    };
    let guards = match &b.guards {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => split_guards(s),
        Some(Value::Array(a)) => a
            .iter()
            .map(|g| {
                g.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Error::BadRequest("`guards` is a list of strings".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(Error::BadRequest(
                "`guards` is a string or a list of strings".into(),
            ))
        }
    };
    let request = crate::deploy::ApplyRequest {
        snapshot: snapshot(b.files)?,
        actor: b
            .actor
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "api".into()),
        at: api.options.clock.now_millis(),
        canary,
        guards,
        min_sends: b.min_sends.unwrap_or(100),
        expected: b.expected_generation,
    };
    ask(&api, AdminRequest::Apply(request)).await
}

/// `a < 2%, b < +50%` → the guards.
pub fn split_guards(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JourneyBody {
    journey: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    actor: Option<String>,
}

pub(super) async fn promote<H: Handle>(
    state: Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    for_journey(state, headers, body, |b| AdminRequest::Promote {
        journey: b.journey,
        force: b.force,
        actor: b.actor.unwrap_or_else(|| "api".into()),
    })
    .await
}

pub(super) async fn rollback<H: Handle>(
    state: Shared<H>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    for_journey(state, headers, body, |b| AdminRequest::Rollback {
        journey: b.journey,
        actor: b.actor.unwrap_or_else(|| "api".into()),
    })
    .await
}

/// A change to one journey's rollout, from a `{"journey", …}` body.
async fn for_journey<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    body: Body,
    request: impl FnOnce(JourneyBody) -> AdminRequest,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Admin, false)?;
    let b: JourneyBody = json_body(&api, &headers, body, MAX_SMALL, "{\"journey\":…}").await?;
    ask(&api, request(b)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JourneyQuery {
    journey: Option<String>,
}

pub(super) async fn canary<H: Handle>(
    state: Shared<H>,
    headers: HeaderMap,
    query: Result<Query<JourneyQuery>, QueryRejection>,
) -> Result<Response, Error> {
    by_journey(state, headers, query, |journey| AdminRequest::Canary {
        journey,
    })
    .await
}

pub(super) async fn history<H: Handle>(
    state: Shared<H>,
    headers: HeaderMap,
    query: Result<Query<JourneyQuery>, QueryRejection>,
) -> Result<Response, Error> {
    by_journey(state, headers, query, |journey| AdminRequest::History {
        journey,
    })
    .await
}

/// A read of every journey, or of the one in `?journey=`.
async fn by_journey<H: Handle>(
    State(api): Shared<H>,
    headers: HeaderMap,
    query: Result<Query<JourneyQuery>, QueryRejection>,
    request: impl FnOnce(Option<String>) -> AdminRequest,
) -> Result<Response, Error> {
    api.auth(&headers, Access::Admin, false)?;
    let Query(q) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    ask(&api, request(q.journey.filter(|j| !j.is_empty()))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_shares_parse_within_bounds() {
        assert_eq!(parse_share("10%"), Ok(1000));
        assert_eq!(parse_share("2.5%"), Ok(250));
        assert_eq!(parse_share("100"), Ok(10_000));
        assert!(parse_share("101%")
            .expect_err("too big")
            .contains("outside 0–100%"));
        assert!(parse_share("-1%").is_err());
        assert!(parse_share("ten")
            .expect_err("nan")
            .contains("not a percentage"));
    }
}
