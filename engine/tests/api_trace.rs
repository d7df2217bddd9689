//! The API's request spans (method, route, status, duration) never carry a
//! token, a body, a user id from the path or an email address.

#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use engine::api::{self, Appended, Handle, Replay, Tokens, Unavailable, Unsubscribed};
use journeys::event::Event;

const INGEST: &str = "ingest-secret-token";
const ADMIN: &str = "admin-secret-token";
const EMAIL: &str = "ana.secret@example.com";

struct Quiet;

impl Handle for Quiet {
    async fn ingest(&self, _: &'static str, e: Vec<Event>) -> Result<Appended, Unavailable> {
        Ok(Appended {
            accepted: e.len(),
            duplicates: 0,
        })
    }
    async fn user(&self, _: String) -> Result<Option<Value>, Unavailable> {
        Ok(None)
    }
    async fn erase(&self, _: String) -> Result<bool, Unavailable> {
        Ok(false)
    }
    async fn dead_letters(&self, _: usize) -> Result<Vec<Value>, Unavailable> {
        Ok(vec![])
    }
    async fn replay(&self, _: Replay) -> Result<usize, Unavailable> {
        Ok(0)
    }
    async fn unsubscribe(&self, _: String) -> Result<Option<Unsubscribed>, Unavailable> {
        Ok(None)
    }
    fn ready(&self) -> bool {
        true
    }
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// A current-thread runtime: the server, the client and the subscriber set
// for this thread all run here.
#[tokio::test(flavor = "current_thread")]
async fn request_spans_hold_no_secrets() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let tokens = Tokens {
        ingest: INGEST.into(),
        admin: ADMIN.into(),
        segment_secret: None,
    };
    let addr = support::api::serve(api::router(Arc::new(Quiet), tokens)).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    let identify =
        json!({"type":"identify","user":"u1","ts":"2026-03-02T09:00:00Z","traits":{"email":EMAIL}});
    let r = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(INGEST)
        .body(format!("{identify}\nbad line {EMAIL}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{base}/v1/users/{EMAIL}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!("{base}/v1/users/{EMAIL}"))
        .bearer_auth(INGEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/v1/unsubscribe/unsub-secret-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    for route in ["/v1/events", "/v1/users/{id}", "/v1/unsubscribe/{token}"] {
        assert!(log.contains(&format!("route={route}")), "{log}");
    }
    for status in ["status=400", "status=404", "status=401"] {
        assert!(log.contains(status), "{log}");
    }
    assert!(log.contains("duration_ms="), "{log}");
    for secret in [INGEST, ADMIN, EMAIL, "unsub-secret-token", "bad line"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
