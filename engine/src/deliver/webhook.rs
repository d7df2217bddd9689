//! Webhooks over HTTP(S) with reqwest (rustls, no OpenSSL): the template's
//! method, URL, headers and JSON body, plus (RUN.md §3)
//!
//! - `Idempotency-Key: {key}`,
//! - `Sluice-Signature: t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{raw body}"}`
//!   when a signing secret is configured (see [`super::sign::Signer`] and
//!   docs/webhooks.md for the receiver's side),
//! - `User-Agent: sluice/{version}`.
//!
//! The answer decides: 2xx delivered; 408, 425, 429, 5xx, connection
//! errors and timeouts transient (with `Retry-After`, in seconds or as an
//! HTTP date, passed on); redirects (not followed) and every other 4xx
//! permanent. `t` is the attempt's `now`, never the system clock.

use std::time::{Duration, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, StatusCode, Url};

use journeys::compiled::{Channel, WebhookSettings};

use super::sign::Signer;
use super::{safety, wrong_content, Attempt, BoxFuture, Delivered, Error, Failure, Provider};
use crate::clock::Millis;
use crate::dispatch::{Content, Message};

/// `User-Agent` of every request.
pub const USER_AGENT_VALUE: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

/// How much of an answer's body is read (the rest is dropped, closing the
/// connection): enough for a reason, never unbounded.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest `Retry-After` taken as is.
const MAX_RETRY_AFTER_SECS: u64 = u32::MAX as u64;
/// How much of an answer's body goes into a failure's reason.
const REASON_CHARS: usize = 200;

/// Headers a template may not set: sluice sets them, or they frame the
/// request and would let a template smuggle a second one.
const RESERVED: [&str; 9] = [
    "idempotency-key",
    "sluice-signature",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "te",
    "upgrade",
    "trailer",
];

/// The webhook provider's settings.
#[derive(Clone, Default)]
pub struct Config {
    /// The whole request, answer included (FORMAT.md's `timeout`, 5 s by
    /// default).
    pub timeout: Duration,
    /// The HMAC secret; no `Sluice-Signature` without one.
    pub secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("timeout", &self.timeout)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .finish()
    }
}

/// The webhook provider: one pooled HTTP client for every endpoint.
pub struct Webhook {
    client: reqwest::Client,
    signer: Option<Signer>,
    timeout: Duration,
}

impl Webhook {
    pub fn new(config: Config) -> Result<Webhook, Error> {
        let timeout = if config.timeout.is_zero() {
            Duration::from_secs(5)
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
        Ok(Webhook {
            client,
            signer: config.secret.as_deref().map(Signer::new),
            timeout,
        })
    }

    /// From the Project's `channels.webhook`; `env` reads the variable
    /// that `signing_secret_env` names (an unset or empty variable is an
    /// error: a receiver expecting signatures would refuse everything).
    pub fn from_settings(
        settings: &WebhookSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Webhook, Error> {
        let secret = match &settings.signing_secret_env {
            None => None,
            Some(var) => match env(var) {
                Some(v) if !v.is_empty() => Some(v.into_bytes()),
                // RUN.md §3: no header when no secret is set. Said loudly,
                // since a receiver that checks signatures will refuse.
                _ => {
                    tracing::warn!(
                        "{var} (channels.webhook.signing_secret_env) is not set: webhooks go out without Sluice-Signature"
                    );
                    None
                }
            },
        };
        Webhook::new(Config {
            timeout: Duration::from_secs(settings.timeout.secs()),
            secret,
        })
    }

    /// The request for `message` at `now`, checked, or why it cannot be
    /// sent.
    pub fn request(&self, message: &Message, now: Millis) -> Result<reqwest::Request, Failure> {
        let Content::Webhook {
            method,
            url,
            headers,
            body,
        } = &message.content
        else {
            return Err(wrong_content(message, "webhook"));
        };
        safety::key(&message.key)?;
        safety::url("the webhook URL", url)?;
        let url = Url::parse(url)
            .map_err(|e| Failure::permanent(format!("the webhook URL is not valid: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Failure::permanent(format!(
                "the webhook URL's scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        safety::header_name(method)
            .map_err(|_| Failure::permanent(format!("{:?} is not an HTTP method", method)))?;
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| Failure::permanent(format!("{method:?} is not an HTTP method")))?;
        let mut map = HeaderMap::with_capacity(headers.len() + 4);
        for (name, value) in headers {
            safety::header_name(name)?;
            safety::single_line(&format!("header {name}"), value)?;
            let lower = name.to_ascii_lowercase();
            if RESERVED.contains(&lower.as_str()) {
                return Err(Failure::permanent(format!(
                    "header {name} is set by sluice, not by a template"
                )));
            }
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Failure::permanent(format!("header name {name}: {e}")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|e| Failure::permanent(format!("header {name}'s value: {e}")))?;
            map.append(n, v);
        }
        let bytes = match body {
            Some(b) => {
                if !map.contains_key(CONTENT_TYPE) {
                    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                serde_json::to_vec(b)
                    .map_err(|e| Failure::permanent(format!("cannot encode the body: {e}")))?
            }
            None => Vec::new(),
        };
        let key = HeaderValue::from_str(&message.key)
            .map_err(|e| Failure::permanent(format!("the key is not a header value: {e}")))?;
        map.insert(HeaderName::from_static("idempotency-key"), key);
        map.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        if let Some(signer) = &self.signer {
            let t = now.div_euclid(1000);
            let sig = HeaderValue::from_str(&signer.header(t, &bytes))
                .map_err(|e| Failure::permanent(format!("the signature header: {e}")))?;
            map.insert(HeaderName::from_static("sluice-signature"), sig);
        }
        self.client
            .request(method, url)
            .headers(map)
            .body(bytes)
            .build()
            .map_err(|e| {
                Failure::permanent(format!("cannot build the request: {}", e.without_url()))
            })
    }

    async fn send(&self, message: &Message, attempt: Attempt) -> Result<Delivered, Failure> {
        let request = self.request(message, attempt.now)?;
        let mut answer = match self.client.execute(request).await {
            Ok(a) => a,
            Err(e) => return Err(self.network_failure(e)),
        };
        let status = answer.status();
        let retry_after = answer
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, attempt.now));
        // Read (a bounded part of) the answer: the connection can then be
        // reused, and a failure's reason can quote it.
        let mut text = Vec::new();
        loop {
            match answer.chunk().await {
                Ok(Some(chunk)) => {
                    text.extend_from_slice(&chunk);
                    if text.len() >= MAX_ANSWER_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) if status.is_success() => {
                    // Delivered: the receiver said so before the body broke.
                    tracing::debug!("webhook answer body: {}", e.without_url());
                    break;
                }
                Err(e) => return Err(self.network_failure(e)),
            }
        }
        classify(status, &text, retry_after)
    }

    fn network_failure(&self, e: reqwest::Error) -> Failure {
        let e = e.without_url();
        if e.is_timeout() {
            Failure::transient(format!("timed out after {:?}", self.timeout))
        } else if e.is_connect() {
            Failure::transient(format!("cannot connect: {}", source_chain(&e)))
        } else if e.is_builder() {
            Failure::permanent(format!("cannot build the request: {}", source_chain(&e)))
        } else {
            Failure::transient(format!("request failed: {}", source_chain(&e)))
        }
    }
}

/// An error and its causes, `: `-separated (reqwest's own message is
/// often just "error sending request").
fn source_chain(e: &dyn std::error::Error) -> String {
    // In words, without the standard library's ` (os error N)`.
    let mut out = crate::os::without_code(&e.to_string()).to_owned();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = crate::os::without_code(&s.to_string()).to_owned();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

/// Decides on an answer: 2xx delivered; 408, 425, 429 and 5xx transient;
/// anything else permanent.
pub fn classify(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<Delivered, Failure> {
    if status.is_success() {
        return Ok(Delivered {
            detail: format!("HTTP {}", status.as_u16()),
            duplicate: false,
            news: Vec::new(),
        });
    }
    let status_line = format!("HTTP {status}");
    let mut reason = status_line.clone();
    let answer: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // Reasons never hold an address (a receiver may echo the body, which
    // may carry the user's): redacted before the cut, so that no address
    // survives cut in half.
    let snippet: String = crate::metrics::redact_addresses(answer.trim())
        .chars()
        .take(REASON_CHARS)
        .collect();
    let snippet = snippet.trim();
    if !snippet.is_empty() {
        reason.push_str(": ");
        reason.push_str(snippet);
    }
    // The dead letter keeps the excerpt; log lines only the status (a
    // receiver that echoes the request would put our body in our logs).
    let transient = matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error();
    if transient {
        Err(Failure::transient(reason)
            .with_retry_after(retry_after)
            .quoting(status_line))
    } else if status.is_redirection() {
        const REDIRECT: &str = "(redirects are not followed; point the template at the final URL)";
        Err(Failure::permanent(format!("{reason} {REDIRECT}"))
            .quoting(format!("{status_line} {REDIRECT}")))
    } else {
        Err(Failure::permanent(reason).quoting(status_line))
    }
}

/// `Retry-After` as a wait from `now`: delay-seconds, or an HTTP date (a
/// date in the past is no wait). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: Millis) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurd values saturate (at ~136 years, so that adding the wait
        // to a time cannot overflow) rather than fail.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let now = UNIX_EPOCH + Duration::from_millis(u64::try_from(now).unwrap_or(0));
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(MAX_RETRY_AFTER_SECS)),
    )
}

impl Provider for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn channel(&self) -> Channel {
        Channel::Webhook
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
    fn retry_after_in_seconds_and_as_a_date() {
        // 2015-10-21T07:28:00Z
        let now = 1_445_412_480_000;
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::from(u32::MAX)))
        );
    }

    #[test]
    fn statuses_are_classified() {
        let ok = |s: u16| classify(StatusCode::from_u16(s).expect("status"), b"", None);
        for s in [200, 201, 202, 204, 299] {
            assert!(ok(s).is_ok(), "{s}");
        }
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert!(!ok(s).expect_err("fails").is_permanent(), "{s}");
        }
        for s in [301, 302, 400, 401, 403, 404, 409, 410, 413, 422] {
            assert!(ok(s).expect_err("fails").is_permanent(), "{s}");
        }
        let f = classify(
            StatusCode::BAD_REQUEST,
            b"{\"error\":\"bad\"}\r\nmore",
            None,
        )
        .expect_err("fails");
        assert_eq!(f.reason, "HTTP 400 Bad Request: {\"error\":\"bad\"}  more");
    }

    /// RUN.md §6: a receiver that echoes the request answers with our
    /// body. The dead letter's reason keeps the excerpt; what a log line
    /// says (`for_log`) is the status only, whatever the class.
    #[test]
    fn log_lines_get_the_status_not_the_answer() {
        let echo = b"{\"note\":\"BODY-MARKER\"}";
        for (s, logged) in [
            (400, "HTTP 400 Bad Request"),
            (503, "HTTP 503 Service Unavailable"),
            (
                301,
                "HTTP 301 Moved Permanently (redirects are not followed; point the template at the final URL)",
            ),
        ] {
            let f = classify(StatusCode::from_u16(s).expect("status"), echo, None)
                .expect_err("fails");
            assert!(f.reason.contains("BODY-MARKER"), "{}", f.reason);
            assert_eq!(f.for_log(), logged);
        }
    }

    #[test]
    fn a_reason_holds_no_address_even_one_cut_at_the_limit() {
        let f = classify(
            StatusCode::UNPROCESSABLE_ENTITY,
            b"{\"error\":\"no customer ana@example.com\"}",
            None,
        )
        .expect_err("fails");
        assert_eq!(
            f.reason,
            "HTTP 422 Unprocessable Entity: {\"error\":\"no customer <address>\"}"
        );
        // An address across the 200th character is not left half there.
        let body = format!("{}ana.maria@example.com", "x ".repeat(95));
        let f = classify(StatusCode::BAD_REQUEST, body.as_bytes(), None).expect_err("fails");
        assert!(!f.reason.contains("ana.maria@"), "{}", f.reason);
        assert!(!f.reason.contains('@'), "{}", f.reason);
    }

    #[test]
    fn network_reasons_are_words_without_os_error_numbers() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::from_raw_os_error(111));
        let text = source_chain(&e);
        assert!(text.starts_with("tcp connect error: "), "{text}");
        assert!(!text.contains("os error"), "{text}");
        assert_eq!(
            source_chain(&std::io::Error::from_raw_os_error(111)),
            crate::os::reason(&std::io::Error::from_raw_os_error(111))
        );
    }
}
