//! The client side of `sluice run` (RUN.md §4, §5): where the server is and
//! which token to send, `send-events` in batches with retries and line
//! numbers mapped back to the file, and the direct reads and replays of a
//! store that no engine runs on. The `sluice` binary only parses arguments
//! and prints what these return.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use journeys::compiled::Config;

use crate::clock::{Millis, WallClock};
use crate::engine::{self, Delivery, Engine, Replay};
use crate::output::Discard;
use crate::store::sled_store::{SledOptions, SledStore};

use super::run::{credentials_path, read_credentials};

/// The server's URL when `--server` is not given.
pub const SERVER_ENV: &str = "SLUICE_SERVER";
/// The token when `--token` is not given.
pub const TOKEN_ENV: &str = "SLUICE_TOKEN";
/// Lines per `POST /v1/events` by default.
pub const DEFAULT_BATCH: usize = 1_000;
/// A body never grows past this (the server takes at most 10 MB).
pub const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Dead letters listed at most (the API's own cap).
pub const DLQ_LIMIT: usize = crate::api::DLQ_MAX_LIMIT;

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the server at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the server at {url} refused the token (401): pass --token, set SLUICE_TOKEN or the Project's token variable, or check .sluice/credentials")]
    Unauthorized { url: String },
    #[error("the server at {url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("no token for {url}: pass --token, set SLUICE_TOKEN or `{variable}`, or start `sluice run` once so it writes {credentials}")]
    NoToken {
        url: String,
        variable: String,
        credentials: PathBuf,
    },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(
        "no store at {0} (nothing has run on it): check the path (--store, else the Project's `store`), or pass --server for a running engine"
    )]
    NoStore(PathBuf),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error(transparent)]
    Report(#[from] crate::report::Error),
    #[error("cannot start the HTTP client: {0}")]
    Setup(String),
}

impl Error {
    /// Whether a direct open failed because `sluice run` holds the store.
    pub fn is_locked(&self) -> bool {
        matches!(
            self,
            Error::Store(crate::store::Error::Locked { .. })
                | Error::Engine(engine::Error::Store(crate::store::Error::Locked { .. }))
                | Error::Report(crate::report::Error::Store(
                    crate::store::Error::Locked { .. }
                ))
        )
    }
}

/// Which token a command needs: ingest routes take either, admin routes
/// only the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Admin,
}

/// What the Project says about its API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    pub listen: String,
    pub ingest_token_env: String,
    pub admin_token_env: String,
}

impl ApiSettings {
    pub fn of(config: &Config) -> Self {
        let api = &config.project.api;
        ApiSettings {
            listen: api.listen.clone(),
            ingest_token_env: api.ingest_token_env.clone(),
            admin_token_env: api.admin_token_env.clone(),
        }
    }
}

/// A server and the token to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub token: String,
}

/// The file in a store directory where `sluice run` writes the URL it
/// serves on, so a command that finds the store held asks that engine (its
/// `--listen` may differ from the Project's `api.listen`).
pub const SERVER_FILE: &str = "SERVER";

/// The URL the `sluice run` holding `store` serves on, as it wrote it at
/// start-up; `None` when it wrote none (or something that is not a URL).
pub fn running_server(store: &Path) -> Option<String> {
    let text = std::fs::read_to_string(store.join(SERVER_FILE)).ok()?;
    let url = text.trim();
    (url.len() <= 256 && (url.starts_with("http://") || url.starts_with("https://")))
        .then(|| url.to_owned())
}

/// The server: `--server`, else `SLUICE_SERVER`, else the Project's listen
/// address. `project` is asked only when needed.
pub fn server_url<E>(
    flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    project: &mut dyn FnMut() -> Result<ApiSettings, E>,
) -> Result<String, E> {
    let url = match flag
        .map(str::to_owned)
        .or_else(|| env(SERVER_ENV).filter(|v| !v.trim().is_empty()))
    {
        Some(u) => u,
        None => format!("http://{}", project()?.listen),
    };
    let url = url.trim().trim_end_matches('/').to_owned();
    if url.contains("://") {
        Ok(url)
    } else {
        Ok(format!("http://{url}"))
    }
}

/// The token: `--token`, else `SLUICE_TOKEN`, else the Project's variable
/// for `role`, else that variable's line in DIR's `.sluice/credentials`.
/// `Ok(None)` when none is found; `project` is asked only when needed.
pub fn token<E>(
    flag: Option<&str>,
    role: Role,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    project: &mut dyn FnMut() -> Result<ApiSettings, E>,
) -> Result<Result<String, String>, E> {
    let given = flag
        .map(str::to_owned)
        .or_else(|| env(TOKEN_ENV))
        .filter(|v| !v.trim().is_empty());
    if let Some(t) = given {
        return Ok(Ok(t.trim().to_owned()));
    }
    let api = project()?;
    let variable = match role {
        Role::Ingest => api.ingest_token_env,
        Role::Admin => api.admin_token_env,
    };
    if let Some(t) = env(&variable).filter(|v| !v.trim().is_empty()) {
        return Ok(Ok(t.trim().to_owned()));
    }
    Ok(read_credentials(&credentials_path(dir))
        .into_iter()
        .find(|(k, v)| *k == variable && !v.is_empty())
        .map(|(_, v)| v)
        .ok_or(variable))
}

/// How often and how patiently a request is retried (5xx answers and
/// connection errors only).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial: Duration::from_millis(250),
            max: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry `n` (1-based): doubling, capped.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// An answer: its status and its JSON body (`Null` when it had none).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    fn message(&self) -> String {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| self.body.to_string())
    }
}

/// A blocking client of the API.
pub struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    target: Target,
    pub retry: RetryPolicy,
}

impl Client {
    pub fn new(target: Target) -> Result<Client, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Client {
            rt,
            http,
            target,
            retry: RetryPolicy::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.target.url
    }

    /// Sends a request, retrying connection errors and 5xx answers; a 401
    /// is an error, every other answer is returned.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Answer, Error> {
        let url = format!("{}{path}", self.target.url);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.target.token);
            if let Some((content_type, bytes)) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(bytes.clone());
            }
            let result = self.rt.block_on(async {
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await?;
                Ok::<_, reqwest::Error>(Answer {
                    status,
                    body: serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                        if bytes.is_empty() {
                            Value::Null
                        } else {
                            json!({ "error": String::from_utf8_lossy(&bytes) })
                        }
                    }),
                })
            });
            let failure = match result {
                Ok(a) if a.status >= 500 => Error::Status {
                    url: self.target.url.clone(),
                    status: a.status,
                    message: a.message(),
                },
                Ok(a) if a.status == 401 => {
                    return Err(Error::Unauthorized {
                        url: self.target.url.clone(),
                    })
                }
                Ok(a) => return Ok(a),
                Err(e) => Error::Unreachable {
                    url: self.target.url.clone(),
                    message: unreachable_reason(&e),
                },
            };
            if attempt >= self.retry.attempts {
                return Err(failure);
            }
            std::thread::sleep(self.retry.delay(attempt));
        }
    }

    fn expect_ok(&self, a: Answer) -> Result<Value, Error> {
        if (200..300).contains(&a.status) {
            Ok(a.body)
        } else {
            Err(Error::Status {
                url: self.target.url.clone(),
                status: a.status,
                message: a.message(),
            })
        }
    }

    /// `GET /v1/users/{id}`: `None` for an unknown user.
    pub fn user(&self, id: &str) -> Result<Option<Value>, Error> {
        let path = format!("/v1/users/{}", encode_segment(id));
        let a = self.request(reqwest::Method::GET, &path, None)?;
        if a.status == 404 && a.message() == "unknown user" {
            return Ok(None);
        }
        self.expect_ok(a).map(Some)
    }

    /// `GET /v1/dlq`, each entry as [`dlq_entry`] shows it.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<Value>, Error> {
        let a = self.request(
            reqwest::Method::GET,
            &format!("/v1/dlq?limit={limit}"),
            None,
        )?;
        let body = self.expect_ok(a)?;
        match body {
            Value::Array(items) => Ok(items.iter().map(dlq_entry).collect()),
            other => Err(Error::Status {
                url: self.target.url.clone(),
                status: 200,
                message: format!("expected a JSON array of dead letters, got {other}"),
            }),
        }
    }

    /// `POST /v1/dlq/replay`: how many were re-queued.
    pub fn replay(&self, which: Replay) -> Result<usize, Error> {
        let body = match which {
            Replay::All => json!({ "all": true }),
            Replay::One(id) => json!({ "id": id }),
        };
        let a = self.request(
            reqwest::Method::POST,
            "/v1/dlq/replay",
            Some(("application/json", body.to_string().into_bytes())),
        )?;
        let body = self.expect_ok(a)?;
        Ok(body["replayed"].as_u64().unwrap_or(0) as usize)
    }
}

impl Client {
    /// `GET /v1/report`: the report as a JSON array (RUN.md §5).
    pub fn report(&self, query: &crate::report::Query) -> Result<Value, Error> {
        let mut params = Vec::new();
        if let Some(j) = &query.journey {
            params.push(format!("journey={}", encode_segment(j)));
        }
        if let Some(t) = query.since {
            params.push(format!(
                "since={}",
                encode_segment(&crate::clock::format_ts(t))
            ));
        }
        let mut path = "/v1/report".to_owned();
        if !params.is_empty() {
            path.push('?');
            path.push_str(&params.join("&"));
        }
        let a = self.request(reqwest::Method::GET, &path, None)?;
        let body = self.expect_ok(a)?;
        if body.is_array() {
            Ok(body)
        } else {
            Err(Error::Status {
                url: self.target.url.clone(),
                status: 200,
                message: format!("expected a JSON array of report rows, got {body}"),
            })
        }
    }
}

/// A path segment with everything but unreserved characters escaped.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a request got no answer, in a sentence: the socket's reason when
/// there is one (`connection refused`, not hyper's whole chain with an
/// `os error N`), else the chain of errors.
fn unreachable_reason(e: &reqwest::Error) -> String {
    use std::io::ErrorKind as K;
    if e.is_timeout() {
        return "no answer in time".to_owned();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = source {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                K::ConnectionRefused => {
                    "connection refused (is `sluice run` listening there?)".to_owned()
                }
                K::ConnectionReset | K::ConnectionAborted => {
                    "the connection was closed before an answer".to_owned()
                }
                K::TimedOut => "no answer in time".to_owned(),
                _ => crate::os::reason(io),
            };
        }
        source = c.source();
    }
    error_chain(e)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

/// Totals of a `send-events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// What `send-events` reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Bytes of the file read and answered so far.
    Bytes(u64),
    /// A line of the file refused (1-based), by the client or the server.
    Rejected { line: u64, message: &'a str },
}

/// One batch: the body and the file's line number of each of its lines.
#[derive(Default)]
struct Batch {
    body: Vec<u8>,
    lines: Vec<u64>,
}

/// Posts JSON lines to `POST /v1/events`, `batch` lines per request (and
/// never more than [`MAX_BATCH_BYTES`]). Blank lines are skipped; a line
/// that is not one JSON object is refused here (so the server sees one
/// object per line and its line numbers map back exactly); the server's
/// per-line errors are reported with the file's line numbers. On an error
/// the totals so far come with it.
pub fn send_events(
    client: &Client,
    input: &mut dyn BufRead,
    path: &Path,
    batch: usize,
    on: &mut dyn FnMut(Progress<'_>),
) -> Result<Sent, (Sent, Error)> {
    let batch = batch.max(1);
    let mut sent = Sent::default();
    let mut current = Batch::default();
    let mut read_bytes = 0u64;
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match input.read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) => {
                return Err((
                    sent,
                    Error::Read {
                        path: path.to_owned(),
                        message: e.to_string(),
                    },
                ))
            }
        };
        if n == 0 {
            break;
        }
        read_bytes += n as u64;
        line_no += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(message) = check_line(line) {
            sent.rejected += 1;
            on(Progress::Rejected {
                line: line_no,
                message: &message,
            });
            continue;
        }
        if !current.lines.is_empty() && current.body.len() + line.len() + 1 > MAX_BATCH_BYTES {
            post_batch(client, &mut current, &mut sent, on).map_err(|e| (sent, e))?;
            on(Progress::Bytes(read_bytes - n as u64));
        }
        current.body.extend_from_slice(line);
        current.body.push(b'\n');
        current.lines.push(line_no);
        if current.lines.len() >= batch {
            post_batch(client, &mut current, &mut sent, on).map_err(|e| (sent, e))?;
            on(Progress::Bytes(read_bytes));
        }
    }
    if !current.lines.is_empty() {
        post_batch(client, &mut current, &mut sent, on).map_err(|e| (sent, e))?;
    }
    on(Progress::Bytes(read_bytes));
    Ok(sent)
}

/// Whether a line can go to the server: UTF-8, one JSON object, small
/// enough for a body of its own.
fn check_line(line: &[u8]) -> Result<(), String> {
    if line.len() > MAX_BATCH_BYTES {
        return Err(format!(
            "line of {} bytes is larger than a request may be ({MAX_BATCH_BYTES} bytes)",
            line.len()
        ));
    }
    let text = std::str::from_utf8(line).map_err(|_| "invalid UTF-8".to_owned())?;
    if !text.trim_start().starts_with('{') {
        return Err("expected a JSON object".to_owned());
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| format!("invalid JSON: {e}"))
}

fn post_batch(
    client: &Client,
    batch: &mut Batch,
    sent: &mut Sent,
    on: &mut dyn FnMut(Progress<'_>),
) -> Result<(), Error> {
    let body = std::mem::take(&mut batch.body);
    let lines = std::mem::take(&mut batch.lines);
    let a = client.request(
        reqwest::Method::POST,
        "/v1/events",
        Some(("application/x-ndjson", body)),
    )?;
    let count = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    match a.status {
        200..=299 => {
            sent.accepted += count(&a.body, "accepted");
            sent.duplicates += count(&a.body, "duplicates");
            Ok(())
        }
        400 if a.body.get("errors").is_some_and(Value::is_array) => {
            sent.accepted += count(&a.body, "accepted");
            sent.duplicates += count(&a.body, "duplicates");
            // Refused lines past the server's cap are counted, not listed.
            sent.rejected += count(&a.body, "errors_omitted");
            let errors = a.body["errors"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            for e in errors {
                let at = e.get("line").and_then(Value::as_u64).unwrap_or(0) as usize;
                let message = e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("refused");
                // The server numbers the body's lines from 1; each body
                // line is one line of the file.
                let line = at
                    .checked_sub(1)
                    .and_then(|i| lines.get(i))
                    .copied()
                    .unwrap_or_else(|| lines.first().copied().unwrap_or(0));
                // The server's message says where in the body (`at line
                // {at} column C`); the file's line is what the user needs.
                let message = match message.rsplit_once(&format!(" at line {at} column ")) {
                    Some((what, col))
                        if !col.is_empty() && col.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        format!("{what} at line {line} column {col}")
                    }
                    _ => message.to_owned(),
                };
                sent.rejected += 1;
                on(Progress::Rejected {
                    line,
                    message: &message,
                });
            }
            Ok(())
        }
        400 => {
            // Refused whole: every line of the batch is rejected.
            let message = a.message();
            for line in lines {
                sent.rejected += 1;
                on(Progress::Rejected {
                    line,
                    message: &message,
                });
            }
            Ok(())
        }
        status => Err(Error::Status {
            url: client.url().to_owned(),
            status,
            message: a.message(),
        }),
    }
}

/// A dead letter as `sluice dlq list` shows it (RUN.md §4).
pub fn dlq_entry(v: &Value) -> Value {
    let f = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "id": f("id"),
        "at": f("at"),
        "user": f("user"),
        "journey": f("journey"),
        "step": f("step"),
        "channel": f("channel"),
        "key": f("key"),
        "attempts": f("attempts"),
        "reason": f("reason"),
    })
}

/// Opens a store that must already exist; `Locked` when `run` holds it.
fn open_store(path: &Path, sync: bool) -> Result<SledStore, Error> {
    if !path.exists() {
        return Err(Error::NoStore(path.to_owned()));
    }
    Ok(SledStore::open(
        path,
        &SledOptions {
            sync_commits: sync,
            ..SledOptions::default()
        },
    )?)
}

fn open_engine(config: &Arc<Config>, path: &Path, sync: bool) -> Result<Engine, Error> {
    let store = open_store(path, sync)?;
    Ok(Engine::open(
        Arc::clone(config),
        Box::new(store),
        Arc::new(WallClock),
        Delivery::Workers,
        Box::new(Discard),
        engine::Options::default(),
    )?)
}

/// A user's view read from the store (nothing is written); `None` when
/// the user is unknown.
pub fn inspect_store(config: &Arc<Config>, store: &Path, id: &str) -> Result<Option<Value>, Error> {
    let mut engine = open_engine(config, store, false)?;
    Ok(engine.inspect(id)?)
}

/// The dead letters of a store (nothing is written), as [`dlq_entry`].
pub fn dead_letters_store(
    config: &Arc<Config>,
    store: &Path,
    limit: usize,
) -> Result<Vec<Value>, Error> {
    let engine = open_engine(config, store, false)?;
    Ok(engine.dead_letters(limit)?.iter().map(dlq_entry).collect())
}

/// The report of a store that no engine runs on (nothing is written),
/// read page by page; `progress` is called after each page.
pub fn report_store(
    config: &Arc<Config>,
    store: &Path,
    query: crate::report::Query,
    progress: &mut dyn FnMut(&crate::report::Tally),
) -> Result<crate::report::Report, Error> {
    let store = open_store(store, false)?;
    Ok(crate::report::report(config, &store, query, progress)?)
}

/// Re-queues dead letters in a store and commits: the next `sluice run`
/// delivers them. Returns how many were re-queued.
pub fn replay_store(
    config: &Arc<Config>,
    store: &Path,
    which: Replay,
    now: Millis,
) -> Result<usize, Error> {
    let mut engine = open_engine(config, store, true)?;
    let n = engine.replay(which, now)?;
    engine.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Result<ApiSettings, String> {
        Ok(ApiSettings {
            listen: "127.0.0.1:9999".into(),
            ingest_token_env: "MY_INGEST".into(),
            admin_token_env: "MY_ADMIN".into(),
        })
    }

    #[test]
    fn server_url_prefers_flag_then_env_then_project() {
        let none = |_: &str| None;
        let env = |k: &str| (k == SERVER_ENV).then(|| "http://env:1/".to_owned());
        assert_eq!(
            server_url(Some("http://flag:2"), &env, &mut api).as_deref(),
            Ok("http://flag:2")
        );
        assert_eq!(
            server_url(None, &env, &mut api).as_deref(),
            Ok("http://env:1")
        );
        assert_eq!(
            server_url(None, &none, &mut api).as_deref(),
            Ok("http://127.0.0.1:9999")
        );
        assert_eq!(
            server_url(Some("localhost:3"), &none, &mut api).as_deref(),
            Ok("http://localhost:3")
        );
        // The Project is not needed when the flag is given.
        let mut fails = || Err::<ApiSettings, _>("no project".to_owned());
        assert!(server_url(Some("http://x"), &none, &mut fails).is_ok());
        assert!(server_url(None, &none, &mut fails).is_err());
    }

    #[test]
    fn token_order_and_credentials_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none = |_: &str| None;
        // Nothing anywhere: the variable it looked for.
        assert_eq!(
            token(None, Role::Admin, dir.path(), &none, &mut api),
            Ok(Err("MY_ADMIN".to_owned()))
        );
        let creds = credentials_path(dir.path());
        std::fs::create_dir_all(creds.parent().expect("parent")).expect("mkdir");
        std::fs::write(&creds, "MY_INGEST=ing\nMY_ADMIN=adm\n").expect("write");
        assert_eq!(
            token(None, Role::Admin, dir.path(), &none, &mut api),
            Ok(Ok("adm".to_owned()))
        );
        assert_eq!(
            token(None, Role::Ingest, dir.path(), &none, &mut api),
            Ok(Ok("ing".to_owned()))
        );
        let env = |k: &str| (k == "MY_INGEST").then(|| "from-var".to_owned());
        assert_eq!(
            token(None, Role::Ingest, dir.path(), &env, &mut api),
            Ok(Ok("from-var".to_owned()))
        );
        let env = |k: &str| (k == TOKEN_ENV).then(|| "generic".to_owned());
        assert_eq!(
            token(None, Role::Ingest, dir.path(), &env, &mut api),
            Ok(Ok("generic".to_owned()))
        );
        assert_eq!(
            token(Some("flag"), Role::Ingest, dir.path(), &env, &mut api),
            Ok(Ok("flag".to_owned()))
        );
    }

    #[test]
    fn lines_checked_before_sending() {
        assert!(check_line(br#"{"type":"track"}"#).is_ok());
        assert!(check_line(br#"  {"a":1}  "#).is_ok());
        assert_eq!(check_line(b"[1,2]"), Err("expected a JSON object".into()));
        assert!(check_line(br#"{"a":"#)
            .expect_err("truncated")
            .starts_with("invalid JSON"));
        assert!(check_line(br#"{"a":1} {"b":2}"#).is_err());
        assert_eq!(check_line(b"{\xff}"), Err("invalid UTF-8".into()));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let r = RetryPolicy::default();
        assert_eq!(r.delay(1), Duration::from_millis(250));
        assert_eq!(r.delay(2), Duration::from_millis(500));
        assert_eq!(r.delay(3), Duration::from_secs(1));
        assert_eq!(r.delay(10), Duration::from_secs(4));
        assert_eq!(r.delay(100), Duration::from_secs(4));
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(encode_segment("u-1.a_b~"), "u-1.a_b~");
        assert_eq!(encode_segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(encode_segment("ü"), "%C3%BC");
    }

    #[test]
    fn dlq_entries_keep_the_listed_fields_only() {
        let v = json!({"id":3,"at":"t","user":"u","journey":"j","step":"s","channel":"webhook",
            "key":"k","attempts":1,"reason":"delivery:400","message":{"big":true},"at_ms":5});
        let e = dlq_entry(&v);
        let keys: Vec<&str> = e
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["id", "at", "user", "journey", "step", "channel", "key", "attempts", "reason"]
        );
        assert_eq!(e["reason"], "delivery:400");
    }
}
