//! The HTTP API (RUN.md §2) over real sockets: axum bound on 127.0.0.1:0,
//! spoken to with reqwest (and raw TCP where a client must misbehave),
//! against a fake engine handle that records every call.

#[path = "support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use engine::api::{self, Appended, Handle, Options, Replay, Tokens, Unavailable, Unsubscribed};
use engine::clock::VirtualClock;
use journeys::event::{Event, EventType};

const INGEST: &str = "ingest-token-1";
const ADMIN: &str = "admin-token-2";
const SECRET: &str = "segment-secret";

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Ingest(&'static str, Vec<Event>),
    User(String),
    Erase(String),
    DeadLetters(usize),
    Replay(Replay),
    Unsubscribe(String),
}

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Call>>,
    seen: Mutex<HashSet<String>>,
    users: HashMap<String, Value>,
    unsubscribe: HashMap<String, Unsubscribed>,
    unavailable: AtomicBool,
    not_ready: AtomicBool,
}

impl Fake {
    fn record(&self, c: Call) {
        self.calls.lock().expect("test setup").push(c);
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("test setup").clone()
    }
    fn ingested(&self) -> Vec<Event> {
        self.calls()
            .into_iter()
            .flat_map(|c| match c {
                Call::Ingest(_, e) => e,
                _ => vec![],
            })
            .collect()
    }
    fn down(&self) -> Result<(), Unavailable> {
        if self.unavailable.load(Ordering::SeqCst) {
            Err(Unavailable("store error: disk full".into()))
        } else {
            Ok(())
        }
    }
}

impl Handle for Fake {
    async fn ingest(
        &self,
        source: &'static str,
        events: Vec<Event>,
    ) -> Result<Appended, Unavailable> {
        self.record(Call::Ingest(source, events.clone()));
        self.down()?;
        let mut seen = self.seen.lock().expect("test setup");
        let mut a = Appended::default();
        for e in &events {
            match &e.id {
                Some(id) if !seen.insert(id.clone()) => a.duplicates += 1,
                _ => a.accepted += 1,
            }
        }
        Ok(a)
    }
    async fn user(&self, id: String) -> Result<Option<Value>, Unavailable> {
        self.record(Call::User(id.clone()));
        self.down()?;
        Ok(self.users.get(&id).cloned())
    }
    async fn erase(&self, id: String) -> Result<bool, Unavailable> {
        self.record(Call::Erase(id.clone()));
        self.down()?;
        Ok(self.users.contains_key(&id))
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<Value>, Unavailable> {
        self.record(Call::DeadLetters(limit));
        self.down()?;
        Ok(
            vec![json!({"id": 1, "key": "k1"}), json!({"id": 2, "key": "k2"})]
                .into_iter()
                .take(limit)
                .collect(),
        )
    }
    async fn replay(&self, which: Replay) -> Result<usize, Unavailable> {
        self.record(Call::Replay(which.clone()));
        self.down()?;
        Ok(match which {
            Replay::One(_) => 1,
            Replay::All => 2,
        })
    }
    async fn unsubscribe(&self, token: String) -> Result<Option<Unsubscribed>, Unavailable> {
        self.record(Call::Unsubscribe(token.clone()));
        self.down()?;
        Ok(self.unsubscribe.get(&token).cloned())
    }
    fn ready(&self) -> bool {
        !self.not_ready.load(Ordering::SeqCst)
    }
}

fn tokens() -> Tokens {
    Tokens {
        ingest: INGEST.into(),
        admin: ADMIN.into(),
        segment_secret: Some(SECRET.into()),
    }
}

fn fake() -> Fake {
    let mut f = Fake::default();
    f.users.insert(
        "u1".into(),
        json!({"user":"u1","profile":{"plan":"pro"},"instances":[],"messages":[]}),
    );
    f.unsubscribe.insert(
        "tok-good".into(),
        Unsubscribed {
            user: "u1".into(),
            category: "news<&>".into(),
        },
    );
    f
}

fn clock() -> VirtualClock {
    VirtualClock::new("2026-03-02T12:00:00Z".parse().expect("test setup"))
}

struct Server {
    base: String,
    addr: std::net::SocketAddr,
    fake: Arc<Fake>,
    http: Client,
}

async fn start_with(fake: Fake, tokens: Tokens, options: Options) -> Server {
    let fake = Arc::new(fake);
    let addr = support::api::serve(api::router_with(fake.clone(), tokens, options)).await;
    Server {
        base: format!("http://{addr}"),
        addr,
        fake,
        http: Client::new(),
    }
}

async fn start() -> Server {
    let options = Options {
        clock: Arc::new(clock()),
        ..Options::default()
    };
    start_with(fake(), tokens(), options).await
}

impl Server {
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }
    fn post(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.req(Method::POST, path).bearer_auth(token)
    }
}

async fn answer(r: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = r.send().await.expect("test setup");
    let status = r.status();
    let text = r.text().await.expect("test setup");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
    (status, body)
}

fn ev(user: &str, id: Option<&str>) -> Value {
    let mut v =
        json!({"type":"track","user":user,"event":"cart_updated","ts":"2026-03-02T09:05:00Z"});
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v
}

fn jsonl(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("test setup");
    e.finish().expect("test setup")
}

fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("test setup");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Sends raw bytes and reads until the server closes or answers a status
/// line and headers (enough for these tests); returns what came back.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("test setup");
    // A server that refuses a large body may answer and close before the
    // client has written all of it: the answer is still there to read.
    if let Err(e) = s.write_all(bytes).await {
        let refused = matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        );
        assert!(refused, "test setup: {e}");
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some(h) = text.find("\r\n\r\n") {
                    if text[h..].contains('}') {
                        break;
                    }
                }
            }
            Err(_) => panic!("no answer within 10 s: {:?}", String::from_utf8_lossy(&out)),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- auth ----------------------------------------------------------------

/// Every protected route, with the access it needs.
fn protected() -> Vec<(Method, &'static str, bool)> {
    // (method, path, admin only)
    vec![
        (Method::POST, "/v1/events", false),
        (Method::POST, "/v1/track", false),
        (Method::POST, "/v1/identify", false),
        (Method::POST, "/v1/batch", false),
        (Method::POST, "/v1/webhooks/segment", false),
        (Method::GET, "/v1/users/u1", true),
        (Method::DELETE, "/v1/users/u1", true),
        (Method::GET, "/v1/dlq", true),
        (Method::POST, "/v1/dlq/replay", true),
    ]
}

#[tokio::test]
async fn every_protected_route_refuses_without_a_valid_token_and_changes_nothing() {
    let s = start().await;
    let body = jsonl(&[ev("u1", Some("e1"))]);
    for (method, path, admin_only) in protected() {
        let mut attempts = vec![
            ("no token", s.req(method.clone(), path)),
            (
                "wrong token",
                s.req(method.clone(), path).bearer_auth("nope"),
            ),
            (
                "token with a suffix",
                s.req(method.clone(), path)
                    .bearer_auth(format!("{INGEST}x")),
            ),
            (
                "wrong scheme",
                s.req(method.clone(), path)
                    .header("authorization", format!("Token {ADMIN}")),
            ),
        ];
        if admin_only {
            attempts.push((
                "ingest token",
                s.req(method.clone(), path).bearer_auth(INGEST),
            ));
            attempts.push((
                "write key",
                s.req(method.clone(), path).basic_auth(ADMIN, None::<&str>),
            ));
        }
        for (what, r) in attempts {
            let (status, body) = answer(r.body(body.clone())).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what} on {method} {path}"
            );
            assert_eq!(
                body,
                json!({"error":"unauthorized"}),
                "{what} on {method} {path}"
            );
        }
    }
    assert_eq!(
        s.fake.calls(),
        vec![],
        "a refused request reached the engine"
    );
}

#[tokio::test]
async fn ingest_routes_take_either_token_admin_routes_only_the_admin_token() {
    let s = start().await;
    for token in [INGEST, ADMIN] {
        let (status, _) = answer(s.post("/v1/events", token).body(jsonl(&[ev("u1", None)]))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{token}");
        let (status, _) = answer(
            s.post("/v1/track", token)
                .json(&json!({"userId":"u1","event":"x"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{token}");
    }
    let (status, _) = answer(s.req(Method::GET, "/v1/users/u1").bearer_auth(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
}

// ---- /v1/events -----------------------------------------------------------

#[tokio::test]
async fn jsonl_all_good_is_202_and_duplicates_are_counted() {
    let s = start().await;
    let body = jsonl(&[ev("u1", Some("e1")), ev("u2", Some("e2")), ev("u3", None)]);
    let (status, b) = answer(
        s.post("/v1/events", INGEST)
            .header("content-type", "application/x-ndjson")
            .body(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(b, json!({"accepted":3,"duplicates":0}));
    let (status, b) = answer(s.post("/v1/events", INGEST).body(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(b, json!({"accepted":1,"duplicates":2}));
    let calls = s.fake.calls();
    assert!(matches!(&calls[0], Call::Ingest("events", e) if e.len() == 3 && e[1].user == "u2"));
}

#[tokio::test]
async fn jsonl_bad_lines_are_400_with_line_numbers_and_good_lines_stored() {
    let s = start().await;
    let body = format!(
        "{}\n\n{}\n{{\"type\":\"track\",\"user\":\"u\",\"ts\":\"2026-03-02T09:00:00Z\"}}\nnot json\r\n{}\n",
        ev("u1", Some("a")),
        ev("u2", Some("a")),
        ev("u3", None)
    );
    let (status, b) = answer(
        s.post("/v1/events", INGEST)
            .header("content-type", "application/jsonl")
            .body(body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(b["accepted"], 2);
    assert_eq!(b["duplicates"], 1);
    let lines: Vec<u64> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![4, 5]);
    assert!(b["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("event"));
    let users: Vec<String> = s.fake.ingested().into_iter().map(|e| e.user).collect();
    assert_eq!(users, vec!["u1", "u2", "u3"]);
}

#[tokio::test]
async fn array_errors_name_the_element_position() {
    let s = start().await;
    let body = json!([ev("u1", None), {"type":"nope"}, ev("u2", None), "x"]);
    let (status, b) = answer(s.post("/v1/events", INGEST).json(&body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(b["accepted"], 2);
    let lines: Vec<u64> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 4]);
    let (status, b) = answer(s.post("/v1/events", INGEST).json(&json!([ev("u1", None)]))).await;
    assert_eq!(
        (status, b),
        (StatusCode::ACCEPTED, json!({"accepted":1,"duplicates":0}))
    );
    let (status, b) = answer(s.post("/v1/events", INGEST).body("[{\"type\":")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("JSON array"), "{b}");
}

#[tokio::test]
async fn gzip_bodies_are_inflated() {
    let s = start().await;
    let body = gzip(jsonl(&[ev("u1", None), ev("u2", None)]).as_bytes());
    let (status, b) = answer(
        s.post("/v1/events", INGEST)
            .header("content-encoding", "gzip")
            .body(body),
    )
    .await;
    assert_eq!(
        (status, b),
        (StatusCode::ACCEPTED, json!({"accepted":2,"duplicates":0}))
    );
    let (status, b) = answer(
        s.post("/v1/events", INGEST)
            .header("content-encoding", "gzip")
            .body("not gzip at all"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("gzip"), "{b}");
}

#[tokio::test]
async fn a_gzip_bomb_is_413_and_reaches_nothing() {
    let s = start().await;
    // 64 MB of newlines (valid, empty JSON lines) in well under 100 kB.
    let bomb = gzip(&vec![b'\n'; 64 * 1024 * 1024]);
    assert!(bomb.len() < 100 * 1024);
    let (status, b) = answer(
        s.post("/v1/events", INGEST)
            .header("content-encoding", "gzip")
            .body(bomb),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(b["error"].as_str().unwrap().contains("larger than"), "{b}");
    // Just past the limit once inflated is refused too; at the limit is not.
    let at = gzip(&vec![b'\n'; api::MAX_BODY]);
    let (status, _) = answer(
        s.post("/v1/events", INGEST)
            .header("content-encoding", "gzip")
            .body(at),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let past = gzip(&vec![b'\n'; api::MAX_BODY + 1]);
    let (status, _) = answer(
        s.post("/v1/events", INGEST)
            .header("content-encoding", "gzip")
            .body(past),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.fake.calls(), vec![]);
}

#[tokio::test]
async fn a_raw_body_over_10_mb_is_413() {
    let s = start().await;
    // Announced too large: refused on the header, before any body is sent.
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST}\r\nContent-Length: {}\r\n\r\n",
        api::MAX_BODY + 1
    );
    let got = raw(s.addr, head.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(got.contains("{\"error\":"), "{got}");
    // Sent chunked, without a length: refused once it passes the limit.
    let chunk = vec![b'\n'; 1024 * 1024];
    let mut req = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..11 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let got = raw(s.addr, &req).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    // Through an ordinary client too.
    let (status, _) = answer(
        s.post("/v1/events", INGEST)
            .body(vec![b'\n'; api::MAX_BODY + 1]),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.fake.calls(), vec![]);
}

#[tokio::test]
async fn wrong_content_type_or_encoding_is_415() {
    let s = start().await;
    for (h, v) in [
        ("content-type", "application/xml"),
        ("content-type", "multipart/form-data; boundary=x"),
        ("content-encoding", "br"),
    ] {
        let (status, b) = answer(
            s.post("/v1/events", INGEST)
                .header(h, v)
                .body(jsonl(&[ev("u1", None)])),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains(v.split(';').next().unwrap()),
            "{b}"
        );
    }
    for v in [
        "application/json",
        "text/plain; charset=utf-8",
        "application/x-ndjson",
    ] {
        let (status, _) = answer(
            s.post("/v1/events", INGEST)
                .header("content-type", v)
                .body(jsonl(&[ev("u1", None)])),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    }
    let (status, _) = answer(
        s.post("/v1/track", INGEST)
            .header("content-type", "application/xml")
            .body("{}"),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn a_body_of_many_bad_lines_lists_the_first_thousand_and_counts_the_rest() {
    let s = start().await;
    let mut body = "x\n".repeat(1_005);
    body.push_str(&ev("u1", None).to_string());
    let (status, b) = answer(s.post("/v1/events", INGEST).body(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(b["accepted"], json!(1), "{b}");
    assert_eq!(b["errors"].as_array().map(Vec::len), Some(1_000));
    assert_eq!(b["errors"][999]["line"], json!(1_000));
    assert_eq!(b["errors_omitted"], json!(5));
    assert_eq!(s.fake.ingested().len(), 1);
    // A few bad lines: every one listed, no `errors_omitted`.
    let body = format!("x\n{}", ev("u2", None));
    let (status, b) = answer(s.post("/v1/events", INGEST).body(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(b.get("errors_omitted").is_none(), "{b}");
}

#[tokio::test]
async fn a_leading_byte_order_mark_is_skipped_on_ingest_routes() {
    let s = start().await;
    let lines = format!(
        "\u{feff}{}\r\n",
        jsonl(&[ev("u1", Some("b1")), ev("u2", None)])
    );
    let (status, b) = answer(s.post("/v1/events", INGEST).body(lines)).await;
    assert_eq!(
        (status, b),
        (StatusCode::ACCEPTED, json!({"accepted":2,"duplicates":0}))
    );
    let array = format!("\u{feff}[{}]", ev("u3", None));
    let (status, b) = answer(s.post("/v1/events", INGEST).body(array)).await;
    assert_eq!(
        (status, b["accepted"].clone()),
        (StatusCode::ACCEPTED, json!(1))
    );
    let track = "\u{feff}{\"userId\":\"u4\",\"event\":\"e\"}";
    let (status, b) = answer(
        s.post("/v1/track", INGEST)
            .header("content-type", "application/json")
            .body(track),
    )
    .await;
    assert_eq!(
        (status, b["accepted"].clone()),
        (StatusCode::OK, json!(1)),
        "{b}"
    );
    let batch = "\u{feff}{\"batch\":[{\"type\":\"track\",\"userId\":\"u5\",\"event\":\"e\"}]}";
    let (status, b) = answer(
        s.post("/v1/batch", INGEST)
            .header("content-type", "application/json")
            .body(batch),
    )
    .await;
    assert_eq!(
        (status, b["accepted"].clone()),
        (StatusCode::OK, json!(1)),
        "{b}"
    );
    let users: Vec<String> = s.fake.ingested().into_iter().map(|e| e.user).collect();
    assert_eq!(users, ["u1", "u2", "u3", "u4", "u5"]);
}

#[tokio::test]
async fn unavailable_engine_is_503_and_nothing_acknowledged() {
    let s = start().await;
    s.fake.unavailable.store(true, Ordering::SeqCst);
    let (status, b) = answer(s.post("/v1/events", INGEST).body(jsonl(&[ev("u1", None)]))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(b["error"].as_str().unwrap().contains("disk full"), "{b}");
    assert!(b.get("accepted").is_none());
    let (status, _) = answer(
        s.post("/v1/track", INGEST)
            .json(&json!({"userId":"u","event":"e"})),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = answer(s.req(Method::GET, "/v1/users/u1").bearer_auth(ADMIN)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

// ---- errors in general ------------------------------------------------------

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_json() {
    let s = start().await;
    let (status, b) = answer(s.req(Method::GET, "/v2/nothing").bearer_auth(ADMIN)).await;
    assert_eq!(
        (status, b),
        (StatusCode::NOT_FOUND, json!({"error":"not found"}))
    );
    for (m, p) in [
        (Method::GET, "/v1/events"),
        (Method::PUT, "/v1/users/u1"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/v1/dlq"),
    ] {
        let (status, b) = answer(s.req(m.clone(), p).bearer_auth(ADMIN)).await;
        assert_eq!(
            (status, b),
            (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error":"method not allowed"})
            ),
            "{m} {p}"
        );
    }
    assert_eq!(s.fake.calls(), vec![]);
}

#[tokio::test]
async fn a_slow_body_is_cut_off_with_408() {
    let options = Options {
        clock: Arc::new(clock()),
        body_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let s = start_with(fake(), tokens(), options).await;
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST}\r\nContent-Length: 1000\r\n\r\n{{\"type\""
    );
    let started = std::time::Instant::now();
    let got = raw(s.addr, head.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(s.fake.calls(), vec![]);
}

// ---- Segment ---------------------------------------------------------------

#[tokio::test]
async fn track_maps_segment_fields() {
    let s = start().await;
    let call = json!({
        "userId": "u1", "anonymousId": "a1", "event": "Order Completed",
        "properties": {"total": 42.5},
        "messageId": "msg-1",
        "timestamp": "2026-03-01T10:00:00.000Z",
        "originalTimestamp": "2026-02-01T10:00:00Z",
        "context": {"traits": {"email": "ana@example.com"}, "timezone": "Europe/Berlin", "ip": "1.2.3.4"},
        "integrations": {}
    });
    let (status, b) = answer(s.post("/v1/track", INGEST).json(&call)).await;
    assert_eq!(
        (status, b),
        (
            StatusCode::OK,
            json!({"success":true,"accepted":1,"duplicates":0})
        )
    );
    let e = &s.fake.ingested()[0];
    assert_eq!(e.kind, EventType::Track);
    assert_eq!(e.user, "u1");
    assert_eq!(e.event.as_deref(), Some("Order Completed"));
    assert_eq!(e.props["total"], json!(42.5));
    assert_eq!(e.id.as_deref(), Some("msg-1"));
    assert_eq!(
        e.ts,
        "2026-03-01T10:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );
    assert!(matches!(&s.fake.calls()[0], Call::Ingest("track", _)));
    // The same messageId again is a duplicate.
    let (_, b) = answer(s.post("/v1/track", INGEST).json(&call)).await;
    assert_eq!(b, json!({"success":true,"accepted":0,"duplicates":1}));
}

#[tokio::test]
async fn identify_with_the_write_key_as_basic_username() {
    let s = start().await;
    let call = json!({
        "userId": "u9",
        "traits": {"plan": "pro", "first_name": "Ana"},
        "context": {"traits": {"plan": "free", "email": "ana@example.com"}, "timezone": "Europe/Berlin"},
        "originalTimestamp": "2026-02-01T10:00:00Z",
        "receivedAt": "2026-02-02T10:00:00Z"
    });
    let (status, b) = answer(
        s.req(Method::POST, "/v1/identify")
            .basic_auth(INGEST, None::<&str>)
            .json(&call),
    )
    .await;
    assert_eq!(
        (status, b),
        (
            StatusCode::OK,
            json!({"success":true,"accepted":1,"duplicates":0})
        )
    );
    let e = &s.fake.ingested()[0];
    assert_eq!(e.kind, EventType::Identify);
    assert_eq!(e.user, "u9");
    assert_eq!(
        Value::Object(e.traits.clone()),
        json!({"plan":"pro","email":"ana@example.com","first_name":"Ana","timezone":"Europe/Berlin"})
    );
    assert_eq!(
        e.ts,
        "2026-02-01T10:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    );
    assert_eq!(e.id, None);
    // A wrong write key is refused.
    let (status, _) = answer(
        s.req(Method::POST, "/v1/identify")
            .basic_auth("wrong", None::<&str>)
            .json(&call),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn timestamps_fall_back_to_received_at_then_the_clock() {
    let s = start().await;
    let calls = [
        json!({"userId":"u","receivedAt":"2026-02-02T10:00:00+01:00"}),
        json!({"userId":"u"}),
    ];
    for c in &calls {
        let (status, _) = answer(s.post("/v1/identify", INGEST).json(c)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let ts: Vec<String> = s
        .fake
        .ingested()
        .iter()
        .map(|e| e.ts.to_rfc3339())
        .collect();
    assert_eq!(
        ts,
        vec!["2026-02-02T09:00:00+00:00", "2026-03-02T12:00:00+00:00"]
    );
    // An explicit timezone trait is kept over context.timezone.
    let (status, _) = answer(s.post("/v1/identify", INGEST).json(
        &json!({"userId":"u","traits":{"timezone":"Asia/Tokyo"},"context":{"timezone":"Europe/Berlin"}}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.fake.ingested()[2].traits["timezone"], json!("Asia/Tokyo"));
}

#[tokio::test]
async fn a_bad_single_call_is_400_with_line_1() {
    let s = start().await;
    let (status, b) = answer(
        s.post("/v1/track", INGEST)
            .json(&json!({"anonymousId":"a1","event":"Viewed"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(b["accepted"], 0);
    assert_eq!(b["errors"][0]["line"], 1);
    assert!(
        b["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("anonymousId"),
        "{b}"
    );
    let (status, b) = answer(s.post("/v1/track", INGEST).body("{nope")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(b["error"].as_str().unwrap().contains("invalid JSON"), "{b}");
    assert_eq!(s.fake.calls(), vec![]);
}

#[tokio::test]
async fn batch_keeps_good_calls_and_numbers_bad_ones() {
    let s = start().await;
    let body = json!({
        "batch": [
            {"type":"identify","userId":"u1","traits":{"email":"ana@example.com"},"messageId":"m1"},
            {"type":"track","anonymousId":"anon-only","event":"Viewed"},
            {"type":"track","userId":"u1","event":"Viewed","properties":{"p":1},"messageId":"m2"},
            {"type":"page","userId":"u1"},
            {"type":"track","userId":"u2"}
        ],
        "context": {"timezone": "Europe/Paris"}
    });
    let (status, b) = answer(s.post("/v1/batch", INGEST).json(&body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(b["accepted"], 2);
    assert_eq!(b["duplicates"], 0);
    let lines: Vec<u64> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 4, 5]);
    let got = s.fake.ingested();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].traits["timezone"], json!("Europe/Paris"));
    assert_eq!(got[1].props["p"], json!(1));
    assert!(matches!(&s.fake.calls()[0], Call::Ingest("batch", _)));
    // All good: 200.
    let body = json!({"batch":[{"type":"track","userId":"u3","event":"E"}]});
    let (status, b) = answer(
        s.req(Method::POST, "/v1/batch")
            .basic_auth(INGEST, Some(""))
            .json(&body),
    )
    .await;
    assert_eq!(
        (status, b),
        (
            StatusCode::OK,
            json!({"success":true,"accepted":1,"duplicates":0})
        )
    );
    // Gzipped, as the client libraries send it.
    let (status, _) = answer(
        s.post("/v1/batch", INGEST)
            .header("content-encoding", "gzip")
            .header("content-type", "application/json")
            .body(gzip(body.to_string().as_bytes())),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn segment_webhook_by_token_or_signature() {
    let s = start().await;
    let body =
        json!({"type":"track","userId":"u1","event":"Signed Up","messageId":"w1"}).to_string();
    // Valid signature, no token.
    let (status, b) = answer(
        s.req(Method::POST, "/v1/webhooks/segment")
            .header("x-signature", sign(body.as_bytes(), SECRET))
            .header("content-type", "application/json")
            .body(body.clone()),
    )
    .await;
    assert_eq!(
        (status, b),
        (
            StatusCode::OK,
            json!({"success":true,"accepted":1,"duplicates":0})
        )
    );
    assert!(
        matches!(&s.fake.calls()[0], Call::Ingest("segment", e) if e[0].event.as_deref() == Some("Signed Up"))
    );
    // Forged: another secret, or the body altered after signing.
    let forged = [
        sign(body.as_bytes(), "other"),
        sign(b"{}", SECRET),
        "zz-not-hex".into(),
    ];
    for sig in forged {
        let (status, b) = answer(
            s.req(Method::POST, "/v1/webhooks/segment")
                .header("x-signature", sig)
                .body(body.clone()),
        )
        .await;
        assert_eq!(
            (status, b),
            (StatusCode::UNAUTHORIZED, json!({"error":"unauthorized"}))
        );
    }
    assert_eq!(s.fake.calls().len(), 1);
    // The ingest token works as well.
    let (status, b) = answer(s.post("/v1/webhooks/segment", INGEST).body(body.clone())).await;
    assert_eq!(
        (status, b),
        (
            StatusCode::OK,
            json!({"success":true,"accepted":0,"duplicates":1})
        )
    );
    // A webhook identify, with its own type.
    let id = json!({"type":"identify","userId":"u1","traits":{"plan":"pro"}}).to_string();
    let (status, _) = answer(
        s.req(Method::POST, "/v1/webhooks/segment")
            .header("x-signature", sign(id.as_bytes(), SECRET))
            .body(id),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.fake.ingested().last().unwrap().kind, EventType::Identify);
}

#[tokio::test]
async fn without_a_secret_signatures_are_not_accepted() {
    let t = Tokens {
        segment_secret: None,
        ..tokens()
    };
    let s = start_with(fake(), t, Options::default()).await;
    let body = json!({"type":"track","userId":"u1","event":"E"}).to_string();
    let (status, _) = answer(
        s.req(Method::POST, "/v1/webhooks/segment")
            .header("x-signature", sign(body.as_bytes(), ""))
            .body(body),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.fake.calls(), vec![]);
}

// ---- admin -----------------------------------------------------------------

#[tokio::test]
async fn users_get_and_delete() {
    let s = start().await;
    let (status, b) = answer(s.req(Method::GET, "/v1/users/u1").bearer_auth(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b["profile"]["plan"], "pro");
    let (status, b) = answer(s.req(Method::GET, "/v1/users/nobody").bearer_auth(ADMIN)).await;
    assert_eq!(
        (status, b),
        (StatusCode::NOT_FOUND, json!({"error":"unknown user"}))
    );
    let (status, b) = answer(s.req(Method::DELETE, "/v1/users/u1").bearer_auth(ADMIN)).await;
    assert_eq!((status, b), (StatusCode::OK, json!({"erased":true})));
    let (status, b) = answer(s.req(Method::DELETE, "/v1/users/nobody").bearer_auth(ADMIN)).await;
    assert_eq!(
        (status, b),
        (StatusCode::NOT_FOUND, json!({"error":"unknown user"}))
    );
    // Ids are percent-decoded.
    let (status, _) = answer(
        s.req(Method::GET, "/v1/users/ana%40example.com")
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        s.fake.calls(),
        vec![
            Call::User("u1".into()),
            Call::User("nobody".into()),
            Call::Erase("u1".into()),
            Call::Erase("nobody".into()),
            Call::User("ana@example.com".into()),
        ]
    );
}

#[tokio::test]
async fn dead_letters_list_and_replay() {
    let s = start().await;
    let (status, b) = answer(s.req(Method::GET, "/v1/dlq").bearer_auth(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b.as_array().unwrap().len(), 2);
    let (status, b) = answer(s.req(Method::GET, "/v1/dlq?limit=1").bearer_auth(ADMIN)).await;
    assert_eq!((status, b), (StatusCode::OK, json!([{"id":1,"key":"k1"}])));
    let (status, _) = answer(s.req(Method::GET, "/v1/dlq?limit=lots").bearer_auth(ADMIN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, b) = answer(s.post("/v1/dlq/replay", ADMIN).json(&json!({"id":7}))).await;
    assert_eq!((status, b), (StatusCode::OK, json!({"replayed":1})));
    let (status, b) = answer(s.post("/v1/dlq/replay", ADMIN).json(&json!({"all":true}))).await;
    assert_eq!((status, b), (StatusCode::OK, json!({"replayed":2})));
    for bad in [
        json!({}),
        json!({"all":false}),
        json!({"id":1,"all":true}),
        json!({"id":"x"}),
        json!({"ids":[1]}),
    ] {
        let (status, b) = answer(s.post("/v1/dlq/replay", ADMIN).json(&bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(b["error"].is_string());
    }
    assert_eq!(
        s.fake.calls(),
        vec![
            Call::DeadLetters(api::DLQ_DEFAULT_LIMIT),
            Call::DeadLetters(1),
            Call::Replay(Replay::One(7)),
            Call::Replay(Replay::All),
        ]
    );
}

// ---- unsubscribe, health ----------------------------------------------------

#[tokio::test]
async fn unsubscribe_page_posts_back_and_changes_nothing() {
    let s = start().await;
    let r = s
        .req(Method::GET, "/v1/unsubscribe/tok-good")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(page.contains("<form method=\"post\">"), "{page}");
    assert!(page.contains("name=\"List-Unsubscribe\" value=\"One-Click\""));
    assert_eq!(page.matches("<button").count(), 1);
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("src="));
    assert_eq!(s.fake.calls(), vec![]);
}

#[tokio::test]
async fn one_click_unsubscribe() {
    let s = start().await;
    // RFC 8058's POST, as a mailbox provider sends it.
    let r = s
        .req(Method::POST, "/v1/unsubscribe/tok-good")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("news&lt;&amp;&gt;"), "{page}");
    assert!(!page.contains("news<&>"));
    // Empty body, JSON asked for.
    let (status, b) = answer(
        s.req(Method::POST, "/v1/unsubscribe/tok-good")
            .header("accept", "application/json"),
    )
    .await;
    assert_eq!(
        (status, b),
        (
            StatusCode::OK,
            json!({"unsubscribed":true,"category":"news<&>"})
        )
    );
    // Forged token.
    let r = s
        .req(Method::POST, "/v1/unsubscribe/tok-forged")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (status, b) = answer(
        s.req(Method::POST, "/v1/unsubscribe/tok-forged")
            .header("accept", "application/json"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(b["error"].is_string());
    assert_eq!(
        s.fake.calls(),
        vec![
            Call::Unsubscribe("tok-good".into()),
            Call::Unsubscribe("tok-good".into()),
            Call::Unsubscribe("tok-forged".into()),
            Call::Unsubscribe("tok-forged".into()),
        ]
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let s = start().await;
    let (status, _) = answer(s.req(Method::GET, "/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = answer(s.req(Method::GET, "/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    s.fake.not_ready.store(true, Ordering::SeqCst);
    let (status, b) = answer(s.req(Method::GET, "/readyz")).await;
    assert_eq!(
        (status, b),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error":"not ready"})
        )
    );
    let (status, _) = answer(s.req(Method::GET, "/healthz")).await;
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn tokens_do_not_show_in_debug() {
    assert!(!format!("{:?}", tokens()).contains(INGEST));
    let _ = base64::engine::general_purpose::STANDARD.encode("x");
}

// ---- serving ----------------------------------------------------------------

async fn start_served(
    header_timeout: Duration,
) -> (
    Server,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let fake = Arc::new(fake());
    let app = api::router(fake.clone(), tokens());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(api::serve(
        listener,
        app,
        async move {
            let _ = rx.await;
        },
        api::ServeOptions { header_timeout },
    ));
    let server = Server {
        base: format!("http://{addr}"),
        addr,
        fake,
        http: Client::new(),
    };
    (server, tx, served)
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let (s, _stop, _served) = start_served(Duration::from_millis(300)).await;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    // The server closes the connection (possibly after a 408).
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(started.elapsed() >= Duration::from_millis(250));
    let got = String::from_utf8_lossy(&buf);
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
    assert_eq!(s.fake.calls(), vec![]);
}

#[tokio::test]
async fn serve_answers_then_stops_with_idle_connections_open() {
    let (s, stop, served) = start_served(Duration::from_secs(10)).await;
    let (status, _) = answer(s.post("/v1/events", INGEST).body(jsonl(&[ev("u1", None)]))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The client keeps its connection alive; stopping must not wait on it.
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve did not stop")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err());
}
