//! Apple Push Notification service with token authentication (RUN.md §3
//! "Push", `provider: apns`).
//!
//! Authentication: the `.p8` signing key (PKCS#8 PEM, from the env var
//! `credentials_env` names, read once at start-up) signs an ES256 provider
//! token: header `kid` = the channel's `key_id`, claims `iss` = `team_id`
//! and `iat`. Apple refuses a token older than an hour and one replaced
//! more often than every 20 minutes: the token is re-signed after
//! [`TOKEN_REFRESH`] (40 minutes), or at once when APNs answers 403
//! `ExpiredProviderToken` (then the request is sent again, once).
//!
//! Sending: `POST {endpoint}/3/device/{token}` over HTTP/2, one request per
//! token, with `authorization: bearer {jwt}`, `apns-topic` (the channel's
//! `topic`), `apns-push-type: alert`, `apns-priority: 10`,
//! `apns-collapse-id: {key}` (so a repeated delivery replaces the first on
//! the device) and `apns-id`: a UUID derived from the key and the token
//! ([`apns_id`]: the same notification to the same device always has the
//! same id, the copies on a user's devices each their own). The payload is
//! `{"aps":{"alert":{"title","body"}}, …data, "sluice_key": key}`.
//!
//! HTTP/2 only: over `https://` h2 is the only protocol offered in ALPN
//! (as APNs requires); over `http://` (tests on loopback) the client
//! speaks h2c with prior knowledge. One connection multiplexes every
//! request; it is kept alive with HTTP/2 pings.
//!
//! Answers: 200 sent; 410 (`Unregistered`, `ExpiredToken`) and 400
//! `BadDeviceToken` the token is gone; 429 and 5xx transient
//! (`Retry-After` kept); every other 4xx (`DeviceTokenNotForTopic`,
//! `PayloadTooLarge`, `InvalidProviderToken`, …) permanent. Folded across
//! tokens by [`super::devices`]. Times come from the attempt, never the
//! system clock.
//!
//! Knows nothing of the store or the engine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use journeys::compiled::{Channel, PushSettings};

use super::devices::{self, Progress, TokenOutcome};
use super::fcm::{clean, http_url, network_failure_timeout, read_bounded, retry_after};
use super::webhook::USER_AGENT_VALUE;
use super::{safety, wrong_content, Attempt, BoxFuture, Delivered, Error, Failure, Provider};
use crate::clock::Millis;
use crate::dispatch::{Content, Message};

/// APNs' production endpoint unless the channel names another.
pub const DEFAULT_ENDPOINT: &str = "https://api.push.apple.com";
/// A provider token is re-signed after this long (Apple: not more often
/// than every 20 minutes, not older than 60).
pub const TOKEN_REFRESH: Duration = Duration::from_secs(40 * 60);
/// One request, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The payload key carrying the message's idempotency key.
pub const KEY_FIELD: &str = "sluice_key";
/// The longest device token taken (today's are 64 hex digits).
const MAX_TOKEN_LEN: usize = 200;

/// The provider token's signing key and identity.
pub struct SigningKey {
    pub key_id: String,
    pub team_id: String,
    key: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("key", &"…")
            .finish()
    }
}

#[derive(Serialize)]
struct ProviderClaims<'a> {
    iss: &'a str,
    iat: i64,
}

impl SigningKey {
    /// Reads the `.p8` key's PEM; the error says what is wrong (never
    /// quoting the key).
    pub fn parse(pem: &str, key_id: &str, team_id: &str) -> Result<SigningKey, String> {
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|e| {
            format!("not a P-256 private key in PKCS#8 PEM, as Apple's .p8 files are ({e})")
        })?;
        let k = SigningKey {
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            key,
        };
        k.sign(0)
            .map_err(|e| format!("the key cannot sign ES256: {e}"))?;
        Ok(k)
    }

    fn sign(&self, now: Millis) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(
            &header,
            &ProviderClaims {
                iss: &self.team_id,
                iat: now.div_euclid(1000),
            },
            &self.key,
        )
    }
}

/// The APNs provider's settings.
#[derive(Debug)]
pub struct Config {
    /// Base URL (default [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    pub key: SigningKey,
    pub timeout: Duration,
}

#[derive(Clone)]
struct Signed {
    header: HeaderValue,
    issued_at: Millis,
    generation: u64,
}

/// The provider token, re-signed every [`TOKEN_REFRESH`].
struct ProviderToken {
    key: SigningKey,
    cached: Mutex<Option<Signed>>,
    generation: AtomicU64,
    /// Tokens signed (tests, logs).
    signed: AtomicU64,
}

impl ProviderToken {
    fn cached(&self) -> MutexGuard<'_, Option<Signed>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self, now: Millis) -> Result<Signed, Failure> {
        let refresh = i64::try_from(TOKEN_REFRESH.as_millis()).unwrap_or(i64::MAX);
        let mut c = self.cached();
        if let Some(s) = c.as_ref() {
            let age = now.saturating_sub(s.issued_at);
            // A clock that went back more than a minute gets a new token
            // too: Apple refuses tokens from the future.
            if (-60_000..refresh).contains(&age) {
                return Ok(s.clone());
            }
        }
        let jwt = self
            .key
            .sign(now)
            .map_err(|e| Failure::permanent(format!("cannot sign the APNs provider token: {e}")))?;
        let header = HeaderValue::from_str(&format!("bearer {jwt}"))
            .map_err(|_| Failure::permanent("the APNs provider token is not a header value"))?;
        self.signed.fetch_add(1, Ordering::Relaxed);
        let s = Signed {
            header,
            issued_at: now,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        };
        *c = Some(s.clone());
        Ok(s)
    }

    /// Drops the token of `generation` (APNs says it expired), unless
    /// another request already replaced it.
    fn expire(&self, generation: u64) {
        let mut c = self.cached();
        if c.as_ref().is_some_and(|s| s.generation == generation) {
            *c = None;
        }
    }
}

/// The APNs provider.
pub struct Apns {
    client: reqwest::Client,
    /// `{endpoint}/3/device/`.
    base: String,
    topic: HeaderValue,
    token: ProviderToken,
    progress: Progress,
    timeout: Duration,
}

impl std::fmt::Debug for Apns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apns")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Aps<'a> {
    alert: Alert<'a>,
}

#[derive(Serialize)]
struct Alert<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct ErrorAnswer {
    #[serde(default)]
    reason: String,
}

/// The `apns-id` of the notification under `key` to `token`: a UUID
/// (version 8, RFC 9562) from the first 16 bytes of
/// SHA-256("sluice apns-id\0{key}\0{token}").
pub fn apns_id(key: &str, token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"sluice apns-id\0");
    h.update(key.as_bytes());
    h.update(b"\0");
    h.update(token.as_bytes());
    let d = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&d[..16]);
    uuid::Uuid::new_v8(bytes).hyphenated().to_string()
}

/// The `apns-collapse-id` of the message under `key`: the key itself
/// (keys are at most 128 characters; APNs takes 64 bytes: a longer key is
/// replaced by its SHA-256 in hex).
pub fn collapse_id(key: &str) -> String {
    if key.len() <= 64 {
        key.to_owned()
    } else {
        hex::encode(Sha256::digest(key.as_bytes()))
    }
}

impl Apns {
    pub fn new(config: Config) -> Result<Apns, Error> {
        let endpoint = config.endpoint.trim_end_matches('/');
        let url = http_url(endpoint).map_err(|reason| Error::BadSetting {
            field: "channels.push.endpoint",
            reason,
        })?;
        let topic = HeaderValue::from_str(&config.topic)
            .ok()
            .filter(|_| safety::header_name(&config.topic).is_ok())
            .ok_or_else(|| Error::BadSetting {
                field: "channels.push.topic",
                reason: format!("{:?} is not a bundle id", config.topic),
            })?;
        let timeout = if config.timeout.is_zero() {
            REQUEST_TIMEOUT
        } else {
            config.timeout
        };
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            // HTTP/2 only: ALPN offers h2 alone over TLS; h2c over http://.
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Duration::from_secs(60))
            .http2_keep_alive_timeout(Duration::from_secs(20))
            .http2_keep_alive_while_idle(true)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .user_agent(USER_AGENT_VALUE)
            .build()
            .map_err(|e| Error::Http(e.to_string()))?;
        let base = format!("{}/3/device/", url.as_str().trim_end_matches('/'));
        Ok(Apns {
            client,
            base,
            topic,
            token: ProviderToken {
                key: config.key,
                cached: Mutex::new(None),
                generation: AtomicU64::new(0),
                signed: AtomicU64::new(0),
            },
            progress: Progress::default(),
            timeout,
        })
    }

    /// From the Project's `channels.push`; `env` reads the variable that
    /// `credentials_env` names (the `.p8` key's PEM). A missing or
    /// malformed key is an error naming the variable.
    pub fn from_settings(
        settings: &PushSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Apns, Error> {
        let need = |v: &Option<String>, field: &'static str| {
            v.clone().ok_or(Error::MissingSetting {
                provider: "apns",
                field,
            })
        };
        let var = need(&settings.credentials_env, "credentials_env")?;
        let key_id = need(&settings.key_id, "key_id")?;
        let team_id = need(&settings.team_id, "team_id")?;
        let topic = need(&settings.topic, "topic")?;
        let pem = match env(&var) {
            Some(v) if !v.trim().is_empty() => v,
            _ => {
                return Err(Error::MissingEnv {
                    var,
                    field: "channels.push.credentials_env",
                })
            }
        };
        let key =
            SigningKey::parse(&pem, &key_id, &team_id).map_err(|reason| Error::BadCredentials {
                var: var.clone(),
                field: "channels.push.credentials_env",
                what: "an APNs signing key (.p8)",
                reason,
            })?;
        Apns::new(Config {
            endpoint: settings
                .endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_ENDPOINT.into()),
            topic,
            key,
            timeout: REQUEST_TIMEOUT,
        })
    }

    /// Provider tokens signed so far.
    pub fn tokens_signed(&self) -> u64 {
        self.token.signed.load(Ordering::Relaxed)
    }

    /// The payload for `message`, the same for each of its tokens.
    fn payload(message: &Message) -> Result<Vec<u8>, Failure> {
        let Content::Push {
            title, body, data, ..
        } = &message.content
        else {
            return Err(wrong_content(message, "apns"));
        };
        if data.contains_key("aps") {
            return Err(Failure::permanent(
                "the push data has a key `aps`, which APNs reserves for itself",
            ));
        }
        let mut payload = Map::with_capacity(data.len() + 2);
        let aps = serde_json::to_value(Aps {
            alert: Alert {
                title: title.as_deref(),
                body: body.as_deref(),
            },
        })
        .map_err(|e| Failure::permanent(format!("cannot encode the APNs payload: {e}")))?;
        payload.insert("aps".into(), aps);
        for (k, v) in data {
            payload.insert(k.clone(), v.clone());
        }
        payload.insert(KEY_FIELD.into(), Value::String(message.key.clone()));
        serde_json::to_vec(&payload)
            .map_err(|e| Failure::permanent(format!("cannot encode the APNs payload: {e}")))
    }

    async fn send(&self, message: &Message, attempt: Attempt) -> Result<Delivered, Failure> {
        let Content::Push { tokens, .. } = &message.content else {
            return Err(wrong_content(message, "apns"));
        };
        safety::key(&message.key)?;
        let payload = Apns::payload(message)?;
        let collapse = HeaderValue::from_str(&collapse_id(&message.key))
            .map_err(|_| Failure::permanent("the key is not a header value"))?;
        devices::fan_out("apns", &message.key, tokens, &self.progress, |token| {
            self.send_one(token, &message.key, &payload, &collapse, attempt.now)
        })
        .await
    }

    /// One token: a request, and once more with a new provider token after
    /// 403 `ExpiredProviderToken`.
    async fn send_one(
        &self,
        token: &str,
        key: &str,
        payload: &[u8],
        collapse: &HeaderValue,
        now: Millis,
    ) -> TokenOutcome {
        if token.is_empty()
            || token.len() > MAX_TOKEN_LEN
            || !token.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return TokenOutcome::Failed(Failure::permanent(
                "not an APNs device token (hex digits expected)",
            ));
        }
        let url = format!("{}{token}", self.base);
        let id = match HeaderValue::from_str(&apns_id(key, token)) {
            Ok(v) => v,
            Err(_) => return TokenOutcome::Failed(Failure::permanent("bad apns-id")),
        };
        let mut renewed = false;
        loop {
            let jwt = match self.token.current(now) {
                Ok(j) => j,
                Err(f) => return TokenOutcome::Failed(f),
            };
            let answer = match self
                .client
                .post(&url)
                .header(AUTHORIZATION, jwt.header.clone())
                .header(HeaderName::from_static("apns-topic"), self.topic.clone())
                .header(
                    HeaderName::from_static("apns-push-type"),
                    HeaderValue::from_static("alert"),
                )
                .header(
                    HeaderName::from_static("apns-priority"),
                    HeaderValue::from_static("10"),
                )
                .header(HeaderName::from_static("apns-id"), id.clone())
                .header(
                    HeaderName::from_static("apns-collapse-id"),
                    collapse.clone(),
                )
                .header(CONTENT_TYPE, "application/json")
                .body(payload.to_vec())
                .send()
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    return TokenOutcome::Failed(network_failure_timeout("APNs", e, self.timeout))
                }
            };
            let status = answer.status();
            let wait = retry_after(&answer, now);
            let body = read_bounded(answer).await;
            let reason = serde_json::from_slice::<ErrorAnswer>(&body)
                .unwrap_or_default()
                .reason;
            if status == StatusCode::FORBIDDEN && reason == "ExpiredProviderToken" && !renewed {
                tracing::debug!("APNs says the provider token expired: signing a new one");
                self.token.expire(jwt.generation);
                renewed = true;
                continue;
            }
            return classify(status, &reason, wait);
        }
    }
}

/// Decides on APNs's answer for one token.
fn classify(status: StatusCode, reason: &str, retry_after: Option<Duration>) -> TokenOutcome {
    if status.is_success() {
        return TokenOutcome::Sent;
    }
    if status == StatusCode::GONE {
        let r = if reason.is_empty() {
            "Unregistered"
        } else {
            reason
        };
        return TokenOutcome::Gone(format!("HTTP 410: {}", clean(r)));
    }
    if status == StatusCode::BAD_REQUEST && reason == "BadDeviceToken" {
        return TokenOutcome::Gone("HTTP 400: BadDeviceToken".into());
    }
    let mut text = format!("HTTP {}", status.as_u16());
    if !reason.is_empty() {
        text.push_str(": ");
        text.push_str(&clean(reason));
    }
    let transient = matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error();
    // Expired twice in a row: the clock is off; retrying later may help.
    if transient || reason == "ExpiredProviderToken" {
        TokenOutcome::Failed(Failure::transient(text).with_retry_after(retry_after))
    } else {
        TokenOutcome::Failed(Failure::permanent(text))
    }
}

impl Provider for Apns {
    fn name(&self) -> &'static str {
        "apns"
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
    fn ids_are_uuids_per_key_and_token() {
        let a = apns_id("k1", "aaaa");
        assert_eq!(a, apns_id("k1", "aaaa"), "stable");
        assert_ne!(a, apns_id("k1", "bbbb"), "one per device");
        assert_ne!(a, apns_id("k2", "aaaa"), "one per message");
        let parsed = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 8);
        assert_eq!(a.len(), 36);
        assert_eq!(collapse_id("0123abcd"), "0123abcd");
        let long = "k".repeat(100);
        assert_eq!(collapse_id(&long).len(), 64);
    }

    #[test]
    fn answers_are_classified() {
        let c = |s: u16, r: &str| classify(StatusCode::from_u16(s).expect("status"), r, None);
        assert_eq!(c(200, ""), TokenOutcome::Sent);
        assert_eq!(
            c(410, "Unregistered"),
            TokenOutcome::Gone("HTTP 410: Unregistered".into())
        );
        assert_eq!(
            c(400, "BadDeviceToken"),
            TokenOutcome::Gone("HTTP 400: BadDeviceToken".into())
        );
        for (s, r) in [
            (429, "TooManyRequests"),
            (500, "InternalServerError"),
            (503, "ServiceUnavailable"),
        ] {
            match c(s, r) {
                TokenOutcome::Failed(f) => assert!(!f.is_permanent(), "{s}"),
                other => panic!("{other:?}"),
            }
        }
        for (s, r) in [
            (400, "DeviceTokenNotForTopic"),
            (403, "InvalidProviderToken"),
            (413, "PayloadTooLarge"),
        ] {
            match c(s, r) {
                TokenOutcome::Failed(f) => {
                    assert!(f.is_permanent(), "{s}");
                    assert_eq!(f.reason, format!("HTTP {s}: {r}"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_malformed_key_says_so_without_quoting_it() {
        let e = SigningKey::parse(
            "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----\n",
            "K",
            "T",
        )
        .expect_err("malformed");
        assert!(e.contains("P-256"), "{e}");
        assert!(!e.contains("QUJD"), "{e}");
        assert!(SigningKey::parse("not a pem", "K", "T").is_err());
    }
}
