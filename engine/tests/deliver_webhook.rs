//! The webhook provider against a real HTTP/1.1 server (axum) on
//! 127.0.0.1, started here: the request on the wire, the signature checked
//! as docs/webhooks.md tells receivers to, and how answers are classified.

#[path = "support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use engine::clock::{Clock, WallClock};
use engine::deliver::webhook::{self, Webhook};
use engine::deliver::{Attempt, Backoff, Decision, FailureKind, Provider};
use engine::dispatch::{Content, Message};
use journeys::compiled::Channel;

const SECRET: &str = "whsec_test_secret";

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// What the receiver's check (docs/webhooks.md) said.
    verified: Result<(), String>,
}

#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<Seen>>,
}

/// The receiver's check, as docs/webhooks.md writes it: parse `t` and
/// `v1`, refuse a `t` more than 5 minutes from now, recompute the HMAC
/// over `"{t}." + the exact bytes received`, compare in constant time.
fn verify_as_documented(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    let header = header.ok_or("no Sluice-Signature")?;
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.push(v.to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or("no t")?;
    if now.abs_diff(t) > 300 {
        return Err(format!("stale t={t} now={now}"));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    for sig in v1 {
        let Ok(bytes) = hex::decode(&sig) else {
            continue;
        };
        if mac.clone().verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err("no matching v1".into())
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let verified = verify_as_documented(
        SECRET.as_bytes(),
        headers
            .get("sluice-signature")
            .and_then(|v| v.to_str().ok()),
        &body,
        WallClock.now_millis() / 1000,
    );
    let path = uri.path().to_owned();
    let earlier = {
        let mut seen = r.seen.lock().expect("lock");
        let earlier = seen.iter().filter(|s| s.path == path).count();
        seen.push(Seen {
            method,
            path: path.clone(),
            headers,
            body,
            verified: verified.clone(),
        });
        earlier
    };
    match path.as_str() {
        "/signed" if verified.is_err() => {
            (StatusCode::UNAUTHORIZED, "bad signature").into_response()
        }
        "/flaky" if earlier == 0 => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        "/limited" => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "7")],
            "slow down",
        )
            .into_response(),
        "/unavailable" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "Wed, 21 Oct 2015 07:30:00 GMT")],
        )
            .into_response(),
        "/bad" => (
            StatusCode::BAD_REQUEST,
            "{\"error\":\"missing field user\"}",
        )
            .into_response(),
        "/gone" => StatusCode::GONE.into_response(),
        "/moved" => (StatusCode::FOUND, [("location", "/elsewhere")]).into_response(),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(6)).await;
            StatusCode::OK.into_response()
        }
        _ => (StatusCode::OK, "ok").into_response(),
    }
}

async fn start() -> (String, Arc<Receiver>) {
    let r = Arc::new(Receiver::default());
    let app = Router::new().fallback(receive).with_state(Arc::clone(&r));
    let addr = support::api::serve(app).await;
    (format!("http://{addr}"), r)
}

fn hook(key: &str, method: &str, url: String, headers: &[(&str, &str)]) -> Message {
    Message {
        key: key.into(),
        at: 1_772_442_000_000,
        user: "u1".into(),
        journey: "orders".into(),
        version: 1,
        step: "crm".into(),
        channel: Channel::Webhook,
        template: "crm-sync".into(),
        content: Content::Webhook {
            method: method.into(),
            url,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: Some(json!({"user": "u1", "name": "Zoë", "total": 42.5, "items": [1, 2]})),
        },
    }
}

fn provider(secret: Option<&str>, timeout: Duration) -> Webhook {
    Webhook::new(webhook::Config {
        timeout,
        secret: secret.map(|s| s.as_bytes().to_vec()),
    })
    .expect("client")
}

fn now() -> Attempt {
    Attempt {
        number: 1,
        now: WallClock.now_millis(),
    }
}

#[tokio::test]
async fn a_signed_request_carries_the_template_and_sluice_headers() {
    let (base, r) = start().await;
    let w = provider(Some(SECRET), Duration::from_secs(5));
    let m = hook(
        "k-signed-1",
        "PUT",
        format!("{base}/signed?x=1"),
        &[("X-Source", "sluice"), ("X-Trace", "Zoë 1")],
    );
    let d = w.deliver(&m, now()).await.expect("delivered");
    assert_eq!(d.detail, "HTTP 200");
    let seen = r.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.verified, Ok(()), "the documented check accepts it");
    assert_eq!(s.method, Method::PUT);
    let h = |n: &str| {
        s.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(h("idempotency-key").as_deref(), Some("k-signed-1"));
    assert_eq!(
        h("user-agent"),
        Some(format!("sluice/{}", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(h("content-type").as_deref(), Some("application/json"));
    assert_eq!(h("x-source").as_deref(), Some("sluice"));
    assert_eq!(
        s.headers.get("x-trace").map(|v| v.as_bytes()),
        Some("Zoë 1".as_bytes())
    );
    let body: serde_json::Value = serde_json::from_slice(&s.body).expect("json body");
    assert_eq!(
        body,
        json!({"user": "u1", "name": "Zoë", "total": 42.5, "items": [1, 2]})
    );
    let sig = h("sluice-signature").expect("signed");
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|r| r.split(',').next())
        .and_then(|t| t.parse().ok())
        .expect("t");
    assert!((t - WallClock.now_millis() / 1000).abs() <= 5);

    // One byte changed in transit, or another secret: refused by the
    // same check.
    let mut tampered = s.body.to_vec();
    tampered[2] ^= 1;
    assert!(verify_as_documented(SECRET.as_bytes(), Some(&sig), &tampered, t).is_err());
    assert!(verify_as_documented(b"other", Some(&sig), &s.body, t).is_err());
    assert!(verify_as_documented(SECRET.as_bytes(), Some(&sig), &s.body, t + 301).is_err());
}

#[tokio::test]
async fn time_comes_from_the_attempt_not_the_system_clock() {
    let (base, r) = start().await;
    let w = provider(Some(SECRET), Duration::from_secs(5));
    let m = hook("k-old-1", "POST", format!("{base}/signed"), &[]);
    // An attempt whose clock says 10 minutes ago signs with that time,
    // and the receiver refuses it as stale: 401 is permanent.
    let old = Attempt {
        number: 1,
        now: WallClock.now_millis() - 600_000,
    };
    let f = w.deliver(&m, old).await.expect_err("refused");
    assert_eq!(f.kind, FailureKind::Permanent);
    assert!(f.reason.starts_with("HTTP 401"), "{}", f.reason);
    let seen = r.seen.lock().expect("lock").clone();
    assert!(seen[0]
        .verified
        .as_ref()
        .is_err_and(|e| e.starts_with("stale")));
}

#[tokio::test]
async fn without_a_secret_there_is_no_signature() {
    let (base, r) = start().await;
    let w = provider(None, Duration::from_secs(5));
    let mut m = hook("k-plain-1", "POST", format!("{base}/plain"), &[]);
    if let Content::Webhook { body, .. } = &mut m.content {
        *body = None;
    }
    w.deliver(&m, now()).await.expect("delivered");
    let seen = r.seen.lock().expect("lock").clone();
    assert!(seen[0].headers.get("sluice-signature").is_none());
    assert!(seen[0].headers.get("content-type").is_none());
    assert!(seen[0].body.is_empty());
    assert_eq!(
        seen[0].headers.get("idempotency-key").map(|v| v.as_bytes()),
        Some("k-plain-1".as_bytes())
    );
}

#[tokio::test]
async fn answers_are_classified_and_retry_after_is_honoured() {
    let (base, r) = start().await;
    let w = provider(Some(SECRET), Duration::from_secs(2));
    let backoff = Backoff::new(5, Duration::from_millis(10), Duration::from_millis(50));

    // 500, then 200: one retry, delivered on the second attempt.
    let m = hook("k-flaky", "POST", format!("{base}/flaky"), &[]);
    let f = w.deliver(&m, now()).await.expect_err("500");
    assert_eq!(f.kind, FailureKind::Transient);
    assert_eq!(f.reason, "HTTP 500 Internal Server Error: oops");
    assert!(
        matches!(backoff.decide(&m.key, 1, &f), Decision::Retry { after } if after <= Duration::from_millis(10))
    );
    let a2 = Attempt { number: 2, ..now() };
    w.deliver(&m, a2).await.expect("delivered on retry");

    // 429 with Retry-After seconds: transient, and the wait is at least 7 s
    // although the schedule's cap is 50 ms.
    let m = hook("k-limited", "POST", format!("{base}/limited"), &[]);
    let f = w.deliver(&m, now()).await.expect_err("429");
    assert_eq!(f.kind, FailureKind::Transient);
    assert_eq!(f.retry_after, Some(Duration::from_secs(7)));
    match backoff.decide(&m.key, 1, &f) {
        Decision::Retry { after } => assert!(after >= Duration::from_secs(7)),
        d => panic!("{d:?}"),
    }

    // 503 with an HTTP date: measured from the attempt's now.
    let m = hook("k-unavail", "POST", format!("{base}/unavailable"), &[]);
    let at = Attempt {
        number: 1,
        now: 1_445_412_480_000, // 2015-10-21T07:28:00Z
    };
    let f = w.deliver(&m, at).await.expect_err("503");
    assert_eq!(f.kind, FailureKind::Transient);
    assert_eq!(f.retry_after, Some(Duration::from_secs(120)));

    // 400, 410 and a redirect: permanent, dead at once with the reason.
    for (path, start) in [
        (
            "/bad",
            "HTTP 400 Bad Request: {\"error\":\"missing field user\"}",
        ),
        ("/gone", "HTTP 410 Gone"),
        ("/moved", "HTTP 302 Found"),
    ] {
        let m = hook("k-perm", "POST", format!("{base}{path}"), &[]);
        let f = w.deliver(&m, now()).await.expect_err(path);
        assert_eq!(f.kind, FailureKind::Permanent, "{path}");
        assert!(f.reason.starts_with(start), "{path}: {}", f.reason);
        assert_eq!(
            backoff.decide(&m.key, 1, &f),
            Decision::Dead {
                attempts: 1,
                reason: f.reason.clone()
            }
        );
    }
    assert_eq!(
        r.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path == "/moved" || s.path == "/elsewhere")
            .count(),
        1,
        "the redirect is not followed"
    );

    // A timeout: transient.
    let m = hook("k-slow", "POST", format!("{base}/slow"), &[]);
    let f = w.deliver(&m, now()).await.expect_err("timeout");
    assert_eq!(f.kind, FailureKind::Transient);
    assert!(f.reason.contains("timed out"), "{}", f.reason);
}

#[tokio::test]
async fn a_closed_port_is_a_transient_connection_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let w = provider(None, Duration::from_secs(2));
    let m = hook("k-down", "POST", format!("http://{addr}/x"), &[]);
    let f = w.deliver(&m, now()).await.expect_err("refused");
    assert_eq!(f.kind, FailureKind::Transient);
    assert!(f.reason.starts_with("cannot connect"), "{}", f.reason);
}

#[tokio::test]
async fn injections_fail_permanently_and_never_reach_the_wire() {
    let (base, r) = start().await;
    let w = provider(Some(SECRET), Duration::from_secs(2));
    let cases: Vec<(Message, &str)> = vec![
        (
            hook("k1", "POST", format!("{base}/x\r\nX-Evil: 1"), &[]),
            "the webhook URL contains a carriage return",
        ),
        (
            hook("k1", "POST", format!("{base}/x\tyz"), &[]),
            "the webhook URL contains a tab",
        ),
        (
            hook("k1", "POST", format!("{base}/a b"), &[]),
            "the webhook URL contains a space",
        ),
        (
            hook("k1", "POST", "ftp://127.0.0.1/x".into(), &[]),
            "the webhook URL's scheme",
        ),
        (
            hook("k1", "POST", "not a url".into(), &[]),
            "the webhook URL contains a space",
        ),
        (
            hook("k1", "POST", "/relative".into(), &[]),
            "the webhook URL is not valid",
        ),
        (
            hook(
                "k1",
                "POST",
                format!("{base}/x"),
                &[("X-A", "v\r\nX-Evil: 1")],
            ),
            "header X-A contains a carriage return",
        ),
        (
            hook(
                "k1",
                "POST",
                format!("{base}/x"),
                &[("X-A", "v\nX-Evil: 1")],
            ),
            "header X-A contains a line feed",
        ),
        (
            hook("k1", "POST", format!("{base}/x"), &[("X-A", "v\0")]),
            "header X-A contains a NUL byte",
        ),
        (
            hook("k1", "POST", format!("{base}/x"), &[("X-A\r\nX-Evil", "1")]),
            "header name",
        ),
        (
            hook("k1", "POST", format!("{base}/x"), &[("X A", "1")]),
            "header name",
        ),
        (
            hook(
                "k1",
                "POST",
                format!("{base}/x"),
                &[("Content-Length", "0")],
            ),
            "header Content-Length is set by sluice",
        ),
        (
            hook(
                "k1",
                "POST",
                format!("{base}/x"),
                &[("Idempotency-Key", "other")],
            ),
            "header Idempotency-Key is set by sluice",
        ),
        (
            hook("k1", "POST\r\nX", format!("{base}/x"), &[]),
            "\"POST\\r\\nX\" is not an HTTP method",
        ),
        (
            hook("k\r\n1", "POST", format!("{base}/x"), &[]),
            "message key",
        ),
    ];
    for (m, reason) in cases {
        let f = w.deliver(&m, now()).await.expect_err(reason);
        assert_eq!(f.kind, FailureKind::Permanent, "{reason}");
        assert!(f.reason.starts_with(reason), "{reason}: {}", f.reason);
    }
    assert!(r.seen.lock().expect("lock").is_empty(), "nothing was sent");
}

#[test]
fn a_named_but_unset_secret_sends_unsigned_with_a_warning() {
    // RUN.md §3: "no header when none is set".
    let settings = journeys::compiled::WebhookSettings {
        signing_secret_env: Some("SHOP_WEBHOOK_SECRET".into()),
        timeout: journeys::scalar::Duration(5),
    };
    Webhook::from_settings(&settings, &|_| None).expect("built, unsigned");
    Webhook::from_settings(&settings, &|v| {
        (v == "SHOP_WEBHOOK_SECRET").then(|| "dev-secret".to_owned())
    })
    .expect("built");
}

/// The first ```python block of docs/webhooks.md.
fn python_snippet() -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/webhooks.md"),
    )
    .expect("docs/webhooks.md");
    let start = doc.find("```python\n").expect("a python block") + "```python\n".len();
    let len = doc[start..].find("```").expect("closed");
    doc[start..start + len].to_owned()
}

/// Runs the docs' `verify` with python3 and returns what it said.
fn python_verifies(secret: &str, header: &str, body: &[u8], now: i64) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("verify.py");
    let body_path = dir.path().join("body");
    std::fs::write(&body_path, body).expect("body");
    std::fs::write(
        &script,
        format!(
            "{}\nimport sys\nbody = open(sys.argv[1], 'rb').read()\n\
             sys.exit(0 if verify(sys.argv[2].encode(), sys.argv[3], body, int(sys.argv[4])) else 3)\n",
            python_snippet()
        ),
    )
    .expect("script");
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(&body_path)
        .arg(secret)
        .arg(header)
        .arg(now.to_string())
        .status()
        .expect("python3 runs (the docs' receiver snippet is tested with it)");
    match status.code() {
        Some(0) => true,
        Some(3) => false,
        other => panic!("the docs' Python snippet failed: {other:?}"),
    }
}

#[tokio::test]
async fn the_python_receiver_in_the_docs_accepts_exactly_what_sluice_signs() {
    let (base, r) = start().await;
    let w = provider(Some(SECRET), Duration::from_secs(5));
    let m = hook("k-python-1", "POST", format!("{base}/signed"), &[]);
    let at = now();
    w.deliver(&m, at).await.expect("delivered");
    let s = r.seen.lock().expect("lock")[0].clone();
    let header = s
        .headers
        .get("sluice-signature")
        .and_then(|v| v.to_str().ok())
        .expect("signed")
        .to_owned();
    let t = at.now / 1000;
    assert!(python_verifies(SECRET, &header, &s.body, t));
    assert!(python_verifies(SECRET, &header, &s.body, t + 300));
    assert!(!python_verifies(SECRET, &header, &s.body, t + 301), "stale");
    assert!(
        !python_verifies("other", &header, &s.body, t),
        "wrong secret"
    );
    let mut tampered = s.body.to_vec();
    tampered.push(b' ');
    assert!(
        !python_verifies(SECRET, &header, &tampered, t),
        "body changed"
    );
    let forged = header.replace(&format!("t={t}"), &format!("t={}", t + 1));
    assert!(!python_verifies(SECRET, &forged, &s.body, t), "t changed");
}
