//! `POST /v1/feedback/{ses|sendgrid|postmark}` (RUN.md §3,
//! docs/feedback.md): bounces and complaints that email providers report
//! after delivery.
//!
//! Who may post: the ingest (or admin) token as a bearer token or as the
//! user name or password of HTTP basic auth; or, without a token, the
//! provider's own signature where it has one: SNS message signatures for
//! SES (the certificate fetched from `SigningCertURL`, only from SNS's own
//! hosts, and cached), SendGrid's signed Event Webhook. Postmark signs
//! nothing: a token it is. A bad signature gets 401 and changes nothing.
//!
//! An SNS `SubscriptionConfirmation` is confirmed by fetching its
//! `SubscribeURL` (same host rule). Every notice is handed to the engine,
//! which matches it to its message; every one is counted
//! ([`FeedbackCounts`]), matched or not, and answered 200 so that no
//! provider retries it for ever.
//!
//! Knows the providers' HTTP conventions, not their payloads (those are
//! [`crate::feedback`]'s) nor the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::auth::{self, Access};
use super::error::Error;
use super::{body, Handle, Tokens};
use crate::clock::Clock;
use crate::feedback::sns::{self, Envelope, MessageType, Refused};
use crate::feedback::{postmark, sendgrid, ses, FeedbackCounts, Kind, Notice, Provider};

/// The most an SNS certificate may weigh.
const MAX_CERT: usize = 64 * 1024;
/// Certificates kept (SNS rotates them rarely; one per region in use).
const MAX_CERTS: usize = 32;
/// How long a certificate or confirmation fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// How feedback intake is set up.
#[derive(Clone)]
pub struct Settings {
    /// Where the outcomes are counted (`sluice_feedback_total`).
    pub counts: Arc<FeedbackCounts>,
    /// Which URLs SNS certificates and subscription confirmations may be
    /// fetched from.
    pub sns_hosts: sns::Hosts,
    /// When not empty, only SNS messages of these topics are taken
    /// (`api.feedback.sns_topic_arns`).
    pub sns_topics: Vec<String>,
    /// SendGrid's verification key (`api.feedback.sendgrid_public_key_env`).
    pub sendgrid_key: Option<sendgrid::PublicKey>,
    /// Fetched SNS certificates, by URL (shared by clones).
    pub certs: Arc<CertCache>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            counts: Arc::new(FeedbackCounts::new()),
            sns_hosts: sns::Hosts::Aws,
            sns_topics: Vec::new(),
            sendgrid_key: None,
            certs: Arc::new(CertCache::default()),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("sns_hosts", &self.sns_hosts)
            .field("sns_topics", &self.sns_topics)
            .field("sendgrid_key", &self.sendgrid_key.is_some())
            .finish_non_exhaustive()
    }
}

/// SNS certificates by URL, and the HTTP client that fetches them.
#[derive(Default)]
pub struct CertCache {
    client: OnceLock<reqwest::Client>,
    certs: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

/// Why something SNS names could not be fetched (answered 502: SNS tries
/// again later).
#[derive(Debug, thiserror::Error)]
#[error("cannot fetch {what}: {message}")]
struct FetchError {
    what: &'static str,
    message: String,
}

impl CertCache {
    fn client(&self) -> Result<&reqwest::Client, FetchError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError {
                what: "an HTTP client",
                message: e.to_string(),
            })?;
        Ok(self.client.get_or_init(|| c))
    }

    /// GETs `url` (at most `max` bytes of body, a 2xx answer).
    async fn get(&self, what: &'static str, url: &str, max: usize) -> Result<Vec<u8>, FetchError> {
        let err = |message: String| FetchError { what, message };
        let mut r = self
            .client()?
            .get(url)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !r.status().is_success() {
            return Err(err(format!("HTTP {}", r.status())));
        }
        let mut out = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| err(e.to_string()))? {
            if out.len() + chunk.len() > max {
                return Err(err(format!("more than {max} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn cert(&self, url: &str) -> Result<Arc<Vec<u8>>, FetchError> {
        if let Some(c) = self.lock().get(url) {
            return Ok(Arc::clone(c));
        }
        let pem = Arc::new(
            self.get("the SNS signing certificate", url, MAX_CERT)
                .await?,
        );
        let mut certs = self.lock();
        if certs.len() >= MAX_CERTS {
            certs.clear();
        }
        certs.insert(url.to_owned(), Arc::clone(&pem));
        Ok(pem)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<u8>>>> {
        self.certs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether HTTP basic auth carries the ingest (or admin) token as its
/// user name or its password (Postmark's and SNS's webhook URLs take
/// `https://user:password@…`).
fn basic_token(tokens: &Tokens, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).map(|v| v.as_bytes()) else {
        return false;
    };
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    if !value[..space].eq_ignore_ascii_case(b"basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value[space..].trim_ascii())
    else {
        return false;
    };
    let (user, password) = match decoded.iter().position(|&b| b == b':') {
        Some(i) => (&decoded[..i], &decoded[i + 1..]),
        None => (&decoded[..], &b""[..]),
    };
    let same = |given: &[u8], expected: &str| {
        !expected.is_empty() && bool::from(given.ct_eq(expected.as_bytes()))
    };
    let mut ok = false;
    for given in [user, password] {
        ok |= same(given, &tokens.ingest) | same(given, &tokens.admin);
    }
    ok
}

/// What the route needs from the router.
pub(super) struct Request<'a, H> {
    pub handle: &'a H,
    pub tokens: &'a Tokens,
    pub settings: &'a Settings,
    pub clock: &'a dyn Clock,
    pub max_body: usize,
    pub body_timeout: Duration,
}

/// `POST /v1/feedback/{provider}`.
pub(super) async fn post<H: Handle>(
    r: Request<'_, H>,
    provider: &str,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let Some(provider) = Provider::parse(provider) else {
        return Err(Error::NotFound);
    };
    let by_token =
        auth::allowed(r.tokens, &headers, Access::Ingest, false) || basic_token(r.tokens, &headers);
    let may_sign = match provider {
        Provider::Ses => true,
        Provider::Sendgrid => {
            r.settings.sendgrid_key.is_some() && headers.contains_key(sendgrid::SIGNATURE)
        }
        Provider::Postmark => false,
    };
    if !by_token && !may_sign {
        return Err(Error::Unauthorized);
    }
    let (wire, inflated) = body::read(body, &headers, r.max_body, r.body_timeout).await?;
    match provider {
        Provider::Ses => ses_post(&r, by_token, &inflated).await,
        Provider::Sendgrid => {
            if !by_token && !sendgrid_signed(r.settings, &headers, [&wire, &inflated]) {
                return Err(Error::Unauthorized);
            }
            body::check_text(&headers)?;
            let notices = sendgrid::notices(&inflated).map_err(|e| Error::BadRequest(e.0))?;
            apply(&r, provider, notices).await
        }
        Provider::Postmark => {
            body::check_text(&headers)?;
            let notices = postmark::notices(&inflated).map_err(|e| Error::BadRequest(e.0))?;
            apply(&r, provider, notices).await
        }
    }
}

fn sendgrid_signed(settings: &Settings, headers: &HeaderMap, bodies: [&Bytes; 2]) -> bool {
    let (Some(key), Some(signature), Some(timestamp)) = (
        settings.sendgrid_key.as_ref(),
        headers.get(sendgrid::SIGNATURE),
        headers.get(sendgrid::TIMESTAMP),
    ) else {
        return false;
    };
    bodies
        .iter()
        .any(|b| key.verify(timestamp.as_bytes(), b, signature.as_bytes()))
}

fn refused(e: &Refused) -> Error {
    tracing::info!(reason = %e, "SNS message refused");
    Error::Unauthorized
}

async fn ses_post<H: Handle>(
    r: &Request<'_, H>,
    by_token: bool,
    body: &[u8],
) -> Result<Response, Error> {
    let envelope = match Envelope::parse(body) {
        Ok(e) => e,
        // Without a token, only a signed SNS message gets in.
        Err(_) if !by_token => return Err(Error::Unauthorized),
        Err(e) => return Err(Error::BadRequest(e.0)),
    };
    let s = r.settings;
    if !s.sns_topics.is_empty() && !s.sns_topics.contains(&envelope.topic_arn) {
        return Err(refused(&Refused::Topic(envelope.topic_arn.clone())));
    }
    if !by_token {
        if !s.sns_hosts.allows(&envelope.signing_cert_url) {
            return Err(refused(&Refused::CertUrl(
                envelope.signing_cert_url.clone(),
            )));
        }
        let pem = s
            .certs
            .cert(&envelope.signing_cert_url)
            .await
            .map_err(bad_gateway)?;
        envelope
            .verify(&pem, r.clock.now_millis())
            .map_err(|e| refused(&e))?;
    }
    match envelope.kind {
        MessageType::SubscriptionConfirmation => {
            let url = envelope.subscribe_url.clone().unwrap_or_default();
            if !s.sns_hosts.allows(&url) {
                return Err(refused(&Refused::SubscribeUrl(url)));
            }
            s.certs
                .get("the SNS SubscribeURL", &url, MAX_CERT)
                .await
                .map_err(bad_gateway)?;
            tracing::info!(topic = %envelope.topic_arn, "SNS subscription confirmed");
            s.counts.add(Provider::Ses, Kind::Subscription, false);
            Ok(Json(json!({"confirmed": true})).into_response())
        }
        MessageType::UnsubscribeConfirmation => {
            tracing::info!(topic = %envelope.topic_arn, "SNS subscription ended");
            s.counts.add(Provider::Ses, Kind::Subscription, false);
            Ok(Json(json!({"received": 0, "matched": 0})).into_response())
        }
        MessageType::Notification => match ses::notices(&envelope.message) {
            Ok(notices) => apply(r, Provider::Ses, notices).await,
            // A notification of the topic that is not an SES event (a
            // test message): counted, taken.
            Err(e) => {
                tracing::info!(reason = %e, "SNS notification that is not an SES event");
                s.counts.add(Provider::Ses, Kind::Other, false);
                Ok(Json(json!({"received": 1, "matched": 0})).into_response())
            }
        },
    }
}

fn bad_gateway(e: FetchError) -> Error {
    tracing::warn!(error = %e, "SNS fetch failed");
    Error::BadGateway(e.to_string())
}

/// Hands the notices to the engine, counts them, answers 200.
async fn apply<H: Handle>(
    r: &Request<'_, H>,
    provider: Provider,
    notices: Vec<Notice>,
) -> Result<Response, Error> {
    let kinds: Vec<Kind> = notices.iter().map(|n| n.kind).collect();
    let matched = if notices.is_empty() {
        Vec::new()
    } else {
        r.handle.feedback(notices).await?
    };
    let mut n_matched = 0;
    for (i, kind) in kinds.iter().enumerate() {
        let m = matched.get(i).copied().unwrap_or(false);
        n_matched += usize::from(m);
        r.settings.counts.add(provider, *kind, m);
    }
    Ok((
        StatusCode::OK,
        Json(json!({"received": kinds.len(), "matched": n_matched})),
    )
        .into_response())
}
