//! Firebase Cloud Messaging, HTTP v1 (RUN.md §3 "Push", `provider: fcm`).
//!
//! Authentication: the service account JSON (from the env var
//! `credentials_env` names, read once at start-up) signs an RS256 JWT
//! (`iss` the account's `client_email`, `scope` firebase.messaging, `aud`
//! its `token_uri`, one hour), exchanged at `token_uri` for an OAuth access
//! token. The token is cached until a minute before it expires; a send
//! answered 401 drops it and fetches another, once. Concurrent sends share
//! one fetch: the first to find the token stale fetches, the others wait
//! for its result.
//!
//! Sending: `POST {endpoint}/v1/projects/{project_id}/messages:send`, one
//! request per token (`message.token`), with `notification.title/body` and
//! `data` (FCM wants strings: other JSON values are sent as their JSON
//! text), plus `data.sluice_key` = the message's key so that apps can drop
//! a repeated delivery. The tokens' answers are folded by
//! [`super::devices`].
//!
//! Answers: 2xx sent; `UNREGISTERED` (404) the token is gone; 408, 429 and
//! 5xx transient (`Retry-After` kept); 401 after a fresh token, and every
//! other 4xx (`INVALID_ARGUMENT`, `SENDER_ID_MISMATCH`, …) permanent. The
//! token endpoint's own 4xx is permanent too (a revoked or wrong key: every
//! message would fail the same way), its 5xx transient.
//!
//! HTTP: reqwest with rustls, one pooled client; HTTP/2 is negotiated by
//! ALPN over https, plain `http://` endpoints (tests) speak HTTP/1.1.
//! Times come from the attempt (`Attempt::now`), never the system clock.
//!
//! Knows nothing of the store or the engine: a [`Message`] in, an outcome
//! out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use journeys::compiled::{Channel, PushSettings};

use super::devices::{self, Progress, TokenOutcome};
use super::webhook::{parse_retry_after, USER_AGENT_VALUE};
use super::{safety, wrong_content, Attempt, BoxFuture, Delivered, Error, Failure, Provider};
use crate::clock::Millis;
use crate::dispatch::{Content, Message};

/// FCM's endpoint unless the channel names another.
pub const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";
/// Google's token endpoint, for a service account JSON without `token_uri`.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The OAuth scope of FCM HTTP v1.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The data key carrying the message's idempotency key.
pub const KEY_FIELD: &str = "sluice_key";
/// Lifetime of the service account JWT (Google accepts at most an hour).
const ASSERTION_SECS: i64 = 3600;
/// An access token is replaced this long before it expires.
const EXPIRY_MARGIN_MS: Millis = 60_000;
/// A failed token fetch is shared by the sends that started within this
/// long of it.
const SHARED_FAILURE_MS: Millis = 1_000;
/// One request, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an answer is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How much of an error message goes into a reason.
const REASON_CHARS: usize = 200;

/// A service account's key, as read from its JSON.
pub struct Credentials {
    pub client_email: String,
    pub key_id: Option<String>,
    pub token_uri: Url,
    key: EncodingKey,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_email", &self.client_email)
            .field("key_id", &self.key_id)
            .field("token_uri", &self.token_uri.as_str())
            .field("key", &"…")
            .finish()
    }
}

#[derive(Deserialize)]
struct ServiceAccount {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

impl Credentials {
    /// Reads a service account JSON; the error says what is wrong with it
    /// (never quoting the key).
    pub fn parse(json: &str) -> Result<Credentials, String> {
        let sa: ServiceAccount = serde_json::from_str(json).map_err(|e| {
            // serde_json's messages name the field and position, not the
            // value: safe to show.
            format!("not a service account JSON ({e})")
        })?;
        if let Some(kind) = sa.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(format!("its `type` is {kind:?}, not \"service_account\""));
        }
        if sa.client_email.trim().is_empty() {
            return Err("its `client_email` is empty".into());
        }
        let key = EncodingKey::from_rsa_pem(sa.private_key.as_bytes())
            .map_err(|e| format!("its `private_key` is not an RSA private key in PEM ({e})"))?;
        let token_uri = sa.token_uri.as_deref().unwrap_or(DEFAULT_TOKEN_URI);
        let token_uri = http_url(token_uri).map_err(|e| format!("its `token_uri`: {e}"))?;
        let creds = Credentials {
            client_email: sa.client_email,
            key_id: sa.private_key_id.filter(|k| !k.is_empty()),
            token_uri,
            key,
        };
        // A key that parses may still not sign (a truncated modulus…):
        // find out now, not at the first message.
        creds
            .assertion(0)
            .map_err(|e| format!("its `private_key` cannot sign: {e}"))?;
        Ok(creds)
    }

    /// The JWT exchanged for an access token, issued at `now`.
    fn assertion(&self, now: Millis) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now.div_euclid(1000);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: self.token_uri.as_str(),
            iat,
            exp: iat + ASSERTION_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

/// `s` as an http(s) URL.
pub fn http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{s:?} is not an http(s) URL"));
    }
    Ok(url)
}

/// The FCM provider's settings.
#[derive(Debug)]
pub struct Config {
    pub project_id: String,
    /// Base URL (default [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    pub credentials: Credentials,
    pub timeout: Duration,
}

/// An access token and when it stops being used.
#[derive(Clone)]
struct AccessToken {
    header: HeaderValue,
    expires_at: Millis,
    generation: u64,
}

/// The OAuth access token, cached, and the lock that makes concurrent
/// sends share one refresh.
struct Auth {
    credentials: Credentials,
    cached: Mutex<Option<AccessToken>>,
    refresh: tokio::sync::Mutex<()>,
    /// The last failed fetch and when (the attempt's time).
    failed: Mutex<Option<(Millis, Failure)>>,
    generation: AtomicU64,
    /// Exchanges made (tests, logs).
    exchanges: AtomicU64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl Auth {
    fn cached(&self) -> MutexGuard<'_, Option<AccessToken>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh(&self, now: Millis) -> Option<AccessToken> {
        self.cached()
            .as_ref()
            .filter(|t| now < t.expires_at.saturating_sub(EXPIRY_MARGIN_MS))
            .cloned()
    }

    /// Drops the token of `generation` (refused with 401), unless another
    /// send already replaced it.
    fn invalidate(&self, generation: u64) {
        let mut c = self.cached();
        if c.as_ref().is_some_and(|t| t.generation == generation) {
            *c = None;
        }
    }

    async fn token(&self, client: &reqwest::Client, now: Millis) -> Result<AccessToken, Failure> {
        if let Some(t) = self.fresh(now) {
            return Ok(t);
        }
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(t) = self.fresh(now) {
            return Ok(t);
        }
        // Sends that waited for a fetch that failed share its failure
        // rather than each trying again in turn.
        if let Some((at, f)) = self.failed().as_ref() {
            if *at >= now.saturating_sub(SHARED_FAILURE_MS) {
                return Err(f.clone());
            }
        }
        match self.exchange(client, now).await {
            Ok(t) => {
                *self.cached() = Some(t.clone());
                *self.failed() = None;
                Ok(t)
            }
            Err(f) => {
                *self.failed() = Some((now, f.clone()));
                Err(f)
            }
        }
    }

    fn failed(&self) -> MutexGuard<'_, Option<(Millis, Failure)>> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Trades a fresh JWT for an access token at `token_uri`.
    async fn exchange(
        &self,
        client: &reqwest::Client,
        now: Millis,
    ) -> Result<AccessToken, Failure> {
        let jwt = self.credentials.assertion(now).map_err(|e| {
            Failure::permanent(format!("cannot sign the FCM service account JWT: {e}"))
        })?;
        // The JWT is base64url and dots: nothing to escape.
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}"
        );
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        let answer = client
            .post(self.credentials.token_uri.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| network_failure("the FCM token endpoint", e))?;
        let status = answer.status();
        let retry_after = retry_after(&answer, now);
        let body = read_bounded(answer).await;
        if status.is_success() {
            let t: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
                Failure::transient(format!(
                    "the FCM token endpoint's answer is not a token: {e}"
                ))
            })?;
            let header =
                HeaderValue::from_str(&format!("Bearer {}", t.access_token)).map_err(|_| {
                    Failure::transient(
                        "the FCM token endpoint's access token is not a header value",
                    )
                })?;
            let lifetime = t.expires_in.unwrap_or(3600).clamp(0, 86_400 * 7);
            return Ok(AccessToken {
                header,
                expires_at: now.saturating_add(lifetime.saturating_mul(1000)),
                generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            });
        }
        let e: OAuthError = serde_json::from_slice(&body).unwrap_or_default();
        let mut reason = format!(
            "the FCM token endpoint refused the service account {}: HTTP {status}",
            self.credentials.client_email
        );
        if !e.error.is_empty() {
            reason.push_str(": ");
            reason.push_str(&clean(&e.error));
        }
        // The error class goes into log lines; the description only into
        // the dead letter.
        let summary = reason.clone();
        if !e.error_description.is_empty() {
            reason.push_str(": ");
            reason.push_str(&clean(&e.error_description));
        }
        let failure = if transient_status(status) {
            Failure::transient(reason).with_retry_after(retry_after)
        } else {
            Failure::permanent(reason)
        };
        Err(failure.quoting(summary))
    }
}

/// The FCM provider.
pub struct Fcm {
    client: reqwest::Client,
    send_url: Url,
    auth: Auth,
    progress: Progress,
    timeout: Duration,
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm")
            .field("send_url", &self.send_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct SendBody<'a> {
    message: FcmMessage<'a>,
}

#[derive(Serialize)]
struct FcmMessage<'a> {
    token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification: Option<Notification<'a>>,
    data: &'a Map<String, Value>,
}

#[derive(Serialize, Clone, Copy)]
struct Notification<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    #[serde(default)]
    error: ErrorBody,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(rename = "errorCode", default)]
    error_code: Option<String>,
}

impl Fcm {
    pub fn new(config: Config) -> Result<Fcm, Error> {
        let bad = |reason: String| Error::BadSetting {
            field: "channels.push.project_id",
            reason,
        };
        if config.project_id.is_empty()
            || !config
                .project_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(bad(format!(
                "{:?} is not a Firebase project id (letters, digits, '-', '_', '.', ':')",
                config.project_id
            )));
        }
        let endpoint = config.endpoint.trim_end_matches('/');
        let send_url = http_url(&format!(
            "{endpoint}/v1/projects/{}/messages:send",
            config.project_id
        ))
        .map_err(|reason| Error::BadSetting {
            field: "channels.push.endpoint",
            reason,
        })?;
        let timeout = if config.timeout.is_zero() {
            REQUEST_TIMEOUT
        } else {
            config.timeout
        };
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .user_agent(USER_AGENT_VALUE)
            .build()
            .map_err(|e| Error::Http(e.to_string()))?;
        Ok(Fcm {
            client,
            send_url,
            auth: Auth {
                credentials: config.credentials,
                cached: Mutex::new(None),
                refresh: tokio::sync::Mutex::new(()),
                failed: Mutex::new(None),
                generation: AtomicU64::new(0),
                exchanges: AtomicU64::new(0),
            },
            progress: Progress::default(),
            timeout,
        })
    }

    /// From the Project's `channels.push`; `env` reads the variable that
    /// `credentials_env` names. A missing or malformed service account is
    /// an error naming the variable.
    pub fn from_settings(
        settings: &PushSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Fcm, Error> {
        let project_id = settings.project_id.clone().ok_or(Error::MissingSetting {
            provider: "fcm",
            field: "project_id",
        })?;
        let var = settings
            .credentials_env
            .clone()
            .ok_or(Error::MissingSetting {
                provider: "fcm",
                field: "credentials_env",
            })?;
        let json = match env(&var) {
            Some(v) if !v.trim().is_empty() => v,
            _ => {
                return Err(Error::MissingEnv {
                    var,
                    field: "channels.push.credentials_env",
                })
            }
        };
        let credentials = Credentials::parse(&json).map_err(|reason| Error::BadCredentials {
            var: var.clone(),
            field: "channels.push.credentials_env",
            what: "an FCM service account JSON",
            reason,
        })?;
        Fcm::new(Config {
            project_id,
            endpoint: settings
                .endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
            credentials,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// Access tokens fetched so far.
    pub fn exchanges(&self) -> u64 {
        self.auth.exchanges.load(Ordering::Relaxed)
    }

    async fn send(&self, message: &Message, attempt: Attempt) -> Result<Delivered, Failure> {
        let Content::Push {
            tokens,
            title,
            body,
            data,
        } = &message.content
        else {
            return Err(wrong_content(message, "fcm"));
        };
        safety::key(&message.key)?;
        let data = string_data(data, &message.key);
        let notification = (title.is_some() || body.is_some()).then_some(Notification {
            title: title.as_deref(),
            body: body.as_deref(),
        });
        devices::fan_out("fcm", &message.key, tokens, &self.progress, |token| {
            self.send_one(token, notification, &data, attempt.now)
        })
        .await
    }

    /// One token: a request, and once more with a new access token after
    /// a 401.
    async fn send_one(
        &self,
        token: &str,
        notification: Option<Notification<'_>>,
        data: &Map<String, Value>,
        now: Millis,
    ) -> TokenOutcome {
        let bytes = match serde_json::to_vec(&SendBody {
            message: FcmMessage {
                token,
                notification,
                data,
            },
        }) {
            Ok(b) => b,
            Err(e) => {
                return TokenOutcome::Failed(Failure::permanent(format!(
                    "cannot encode the FCM message: {e}"
                )))
            }
        };
        let mut refreshed = false;
        loop {
            let access = match self.auth.token(&self.client, now).await {
                Ok(a) => a,
                Err(f) => return TokenOutcome::Failed(f),
            };
            let answer = match self
                .client
                .post(self.send_url.clone())
                .header(AUTHORIZATION, access.header.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(bytes.clone())
                .send()
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    return TokenOutcome::Failed(network_failure_timeout("FCM", e, self.timeout))
                }
            };
            let status = answer.status();
            let wait = retry_after(&answer, now);
            let body = read_bounded(answer).await;
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                tracing::debug!("FCM answered 401: fetching a new access token");
                self.auth.invalidate(access.generation);
                refreshed = true;
                continue;
            }
            return classify(status, &body, wait);
        }
    }
}

/// The message's data as FCM wants it: string values (others as their
/// JSON text), and the key under [`KEY_FIELD`].
fn string_data(data: &Map<String, Value>, key: &str) -> Map<String, Value> {
    let mut out: Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => Value::String(s.clone()),
                other => Value::String(other.to_string()),
            };
            (k.clone(), v)
        })
        .collect();
    out.insert(KEY_FIELD.into(), Value::String(key.to_owned()));
    out
}

fn transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error()
}

/// Decides on FCM's answer for one token.
fn classify(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> TokenOutcome {
    if status.is_success() {
        return TokenOutcome::Sent;
    }
    let e: ErrorAnswer = serde_json::from_slice(body).unwrap_or_default();
    let code = e
        .error
        .details
        .iter()
        .find_map(|d| d.error_code.clone())
        .unwrap_or_default();
    if code == "UNREGISTERED" {
        return TokenOutcome::Gone("UNREGISTERED".into());
    }
    let mut reason = format!("HTTP {}", status.as_u16());
    for part in [&e.error.status, &code] {
        if !part.is_empty() && !reason.contains(part.as_str()) {
            reason.push_str(": ");
            reason.push_str(&clean(part));
        }
    }
    // The status and the error classes go into log lines; FCM's free text
    // only into the dead letter.
    let summary = reason.clone();
    let message = &e.error.message;
    if !message.is_empty() && !reason.contains(message.as_str()) {
        reason.push_str(": ");
        reason.push_str(&clean(message));
    }
    let failure = if transient_status(status) {
        Failure::transient(reason).with_retry_after(retry_after)
    } else {
        Failure::permanent(reason)
    };
    TokenOutcome::Failed(failure.quoting(summary))
}

/// At most [`REASON_CHARS`] characters, no control characters.
pub(crate) fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(REASON_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

pub(crate) fn retry_after(answer: &reqwest::Response, now: Millis) -> Option<Duration> {
    answer
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// A bounded part of an answer's body (an error while reading ends it).
pub(crate) async fn read_bounded(mut answer: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = answer.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    out
}

fn network_failure(what: &str, e: reqwest::Error) -> Failure {
    let e = e.without_url();
    if e.is_timeout() {
        Failure::transient(format!("{what} timed out"))
    } else if e.is_connect() {
        Failure::transient(format!("cannot connect to {what}: {}", chain(&e)))
    } else {
        Failure::transient(format!("{what}: {}", chain(&e)))
    }
}

pub(crate) fn network_failure_timeout(what: &str, e: reqwest::Error, timeout: Duration) -> Failure {
    if e.is_timeout() {
        Failure::transient(format!("{what} timed out after {timeout:?}"))
    } else {
        network_failure(what, e)
    }
}

/// An error and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

impl Provider for Fcm {
    fn name(&self) -> &'static str {
        "fcm"
    }

    fn channel(&self) -> Channel {
        Channel::Push
    }

    fn deliver<'a>(
        &'a self,
        message: &'a Message,
        attempt: Attempt,
    ) -> BoxFuture<'a, Result<Delivered, Failure>> {
        Box::pin(self.send(message, attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let c = |s: u16, body: &str| {
            classify(
                StatusCode::from_u16(s).expect("status"),
                body.as_bytes(),
                Some(Duration::from_secs(3)),
            )
        };
        assert_eq!(c(200, "{}"), TokenOutcome::Sent);
        let unregistered = r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
        assert_eq!(
            c(404, unregistered),
            TokenOutcome::Gone("UNREGISTERED".into())
        );
        let invalid = r#"{"error":{"code":400,"message":"The registration token is not a valid FCM registration token","status":"INVALID_ARGUMENT","details":[{"errorCode":"INVALID_ARGUMENT"}]}}"#;
        match c(400, invalid) {
            TokenOutcome::Failed(f) => {
                assert!(f.is_permanent());
                assert_eq!(
                    f.reason,
                    "HTTP 400: INVALID_ARGUMENT: The registration token is not a valid FCM registration token"
                );
                // Log lines: the status and the error class, not FCM's text.
                assert_eq!(f.for_log(), "HTTP 400: INVALID_ARGUMENT");
            }
            other => panic!("{other:?}"),
        }
        for s in [429, 500, 503] {
            match c(s, "{}") {
                TokenOutcome::Failed(f) => {
                    assert!(!f.is_permanent(), "{s}");
                    assert_eq!(f.retry_after, Some(Duration::from_secs(3)));
                }
                other => panic!("{other:?}"),
            }
        }
        match c(403, "not json") {
            TokenOutcome::Failed(f) => assert!(f.is_permanent()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_values_become_strings_and_carry_the_key() {
        let data: Map<String, Value> = serde_json::from_str(
            r#"{"cart":"c-17","total":42.5,"items":[1,2],"ok":true,"sluice_key":"theirs"}"#,
        )
        .expect("json");
        let out = string_data(&data, "k1");
        assert_eq!(
            Value::Object(out),
            serde_json::json!({"cart":"c-17","total":"42.5","items":"[1,2]","ok":"true","sluice_key":"k1"})
        );
    }

    #[test]
    fn malformed_service_accounts_say_what_is_wrong() {
        let err = |json: &str| Credentials::parse(json).expect_err("malformed");
        assert!(
            err("{").starts_with("not a service account JSON"),
            "{}",
            err("{")
        );
        assert!(err(r#"{"client_email":"a@b"}"#).contains("private_key"));
        assert!(
            err(r#"{"type":"authorized_user","client_email":"a@b","private_key":"x"}"#)
                .contains("authorized_user")
        );
        let bad_key = err(
            r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#,
        );
        assert!(bad_key.contains("private_key"), "{bad_key}");
        assert!(
            !bad_key.contains("AAAA"),
            "the key is never quoted: {bad_key}"
        );
    }
}
