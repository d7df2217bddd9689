//! `sluice run` end to end through the real binary (RUN.md): the HTTP API
//! over real sockets on 127.0.0.1, the maildir it writes, the webhooks it
//! sends to a receiver written here from docs/webhooks.md, and SIGTERM.
//!
//! Each test copies `tests/fixtures/run/service` to a temporary directory
//! (with the receiver's port in place of `__HOOK__`), starts `sluice run`
//! on a free port, and kills it when the test ends, whatever happens.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use support::events::{identify, now_ts, track};
use support::http::{bearer, send_raw, try_request as try_http, Response as Resp};
use support::receiver::{unix_millis, Receiver, Reply, Request};
use support::server::SluiceRun;
use support::wait::wait_for;

const INGEST: &str = "ingest-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";
const WEBHOOK_SECRET: &str = "webhook-secret-for-tests";

// ---------------------------------------------------------- sluice run

/// A `sluice run` process on a copy of `tests/fixtures/run/service`;
/// killed when dropped.
struct Service {
    run: SluiceRun,
    repo: PathBuf,
    _root: tempfile::TempDir,
}

impl Service {
    /// Copies the fixture (webhooks to `hook`) and starts the service.
    fn new(hook: u16) -> Service {
        let (root, repo) =
            support::fixture::temp_copy("run/service", &[("__HOOK__", hook.to_string())]);
        let run = SluiceRun::new(&repo)
            .args(&["--drain", "5"])
            .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
            .env("SLUICE_TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .start();
        Service {
            run,
            repo,
            _root: root,
        }
    }

    fn port(&self) -> u16 {
        self.run.port()
    }

    fn logs(&self) -> String {
        self.run.logs()
    }

    /// Starts `sluice run` again on the same repository and store, on a
    /// free port, and waits until `/readyz` answers 200.
    fn start(&mut self) {
        self.run.restart();
    }

    /// SIGTERM, then the exit status (within 15 s).
    fn terminate(&mut self) -> ExitStatus {
        self.run.terminate(Duration::from_secs(15))
    }

    fn http(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Resp {
        self.run.request(method, path, token, body)
    }

    /// `POST /v1/events` with the ingest token.
    fn post_events(&self, events: &[Value]) -> Resp {
        self.run.post_events(INGEST, events)
    }

    /// `GET /v1/users/{id}` with the admin token: `None` on 404.
    fn user(&self, id: &str) -> Option<Value> {
        let r = self.http("GET", &format!("/v1/users/{id}"), Some(ADMIN), b"");
        match r.status {
            200 => Some(r.json()),
            404 => None,
            s => panic!("GET user {id}: {s} {}", String::from_utf8_lossy(&r.body)),
        }
    }

    fn dlq(&self) -> Vec<Value> {
        let r = self.http("GET", "/v1/dlq", Some(ADMIN), b"");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json().as_array().expect("array").clone()
    }

    /// The files in the maildir's `new/`, by name.
    fn mails(&self) -> BTreeMap<String, Vec<u8>> {
        let dir = self.repo.join(".sluice/outbox/maildir/new");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return BTreeMap::new();
        };
        entries
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).expect("read mail"),
                )
            })
            .collect()
    }

    /// Waits until the maildir holds `n` messages, and returns them.
    fn wait_mails(&self, n: usize) -> BTreeMap<String, Vec<u8>> {
        wait_for(Duration::from_secs(10), &format!("{n} mails"), || {
            let m = self.mails();
            (m.len() >= n).then_some(m)
        })
    }
}

/// A user who signs up: an identify with an address and a `signed_up`.
fn signup(user: &str) -> Vec<Value> {
    vec![
        identify(
            user,
            &format!("{user}-identify"),
            json!({"email": format!("{user}@example.com"), "first_name": "Ana"}),
        ),
        track(user, &format!("{user}-signup"), "signed_up", json!({})),
    ]
}

// ------------------------------------------------------ webhook receiver

/// Whether `header` (a `Sluice-Signature` value) signs `body` at `now`,
/// step by step as docs/webhooks.md says: `t=` and every `v1=`, `t` within
/// five minutes, HMAC-SHA256 over "{t}." and the raw bytes, compared in
/// constant time.
fn verify(secret: &[u8], header: &str, body: &[u8], now: i64) -> bool {
    let mut t: Option<i64> = None;
    let mut candidates: Vec<&str> = Vec::new();
    for field in header.split(',') {
        match field.trim().split_once('=') {
            Some(("t", value)) => t = value.parse().ok(),
            Some(("v1", value)) => candidates.push(value),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now.abs_diff(t) > 300 {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    candidates
        .iter()
        .any(|c| hex::decode(c).is_ok_and(|bytes| mac.clone().verify_slice(&bytes).is_ok()))
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    key: String,
    signature: String,
    verified: bool,
    user_agent: String,
    source: String,
    body: Vec<u8>,
    /// The `n` of the body (which script answered).
    n: String,
    status: u16,
}

impl Hit {
    /// What the receiver makes of a request: its signature checked at the
    /// moment it arrived.
    fn of(r: &Request) -> Hit {
        let signature = r.header("sluice-signature").to_owned();
        Hit {
            at: r.at,
            key: r.header("idempotency-key").to_owned(),
            verified: verify(
                WEBHOOK_SECRET.as_bytes(),
                &signature,
                &r.body,
                r.unix_ms / 1000,
            ),
            signature,
            user_agent: r.header("user-agent").to_owned(),
            source: r.header("x-source").to_owned(),
            body: r.body.clone(),
            n: r.json()
                .and_then(|v| v["n"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            status: r.status,
        }
    }
}

/// How the receiver answers one request: status, extra headers, body.
type Answer = (u16, Vec<(String, String)>, String);
type Script = Box<dyn FnMut(&str, usize) -> Answer + Send>;

/// A webhook receiver on 127.0.0.1: verifies every request's signature
/// (401 when it does not verify) and answers by a script given the body's
/// `n` and how many requests with the same `Idempotency-Key` came before.
struct Hooks {
    port: u16,
    receiver: Receiver,
}

impl Hooks {
    fn start(mut script: Script) -> Hooks {
        let receiver = Receiver::start(move |request, earlier| {
            let hit = Hit::of(request);
            if !hit.verified {
                return Reply {
                    status: 401,
                    headers: vec![],
                    body: "bad signature".to_owned(),
                };
            }
            let before = earlier
                .iter()
                .filter(|e| e.header("idempotency-key") == hit.key)
                .count();
            let (status, headers, body) = script(&hit.n, before);
            Reply {
                status,
                headers,
                body,
            }
        });
        Hooks {
            port: receiver.port,
            receiver,
        }
    }

    fn hits(&self) -> Vec<Hit> {
        self.receiver.requests().iter().map(Hit::of).collect()
    }

    fn hits_for(&self, n: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.n == n).collect()
    }
}

/// A receiver that answers 200 to everything (for tests without webhooks).
fn quiet_receiver() -> Hooks {
    Hooks::start(Box::new(|_, _| (200, vec![], String::new())))
}

// ------------------------------------------------------------------ tests

/// Every route without a token, with a wrong token, and (admin routes)
/// with the ingest token: 401 `{"error":"unauthorized"}`, and nothing
/// changed. The right tokens then work, so the 401s are not for nothing.
#[test]
fn every_route_refuses_a_missing_or_wrong_token_and_changes_nothing() {
    let hooks = quiet_receiver();
    let s = Service::new(hooks.port);
    let r = s.post_events(&signup("u1"));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    s.wait_mails(1);
    let before = s.user("u1").expect("u1");

    let intruder = signup("intruder");
    let events: String = intruder.iter().map(|e| format!("{e}\n")).collect();
    let segment = json!({"userId":"intruder","event":"signed_up","messageId":"seg-1"}).to_string();
    let batch = json!({"batch":[{"type":"track","userId":"intruder","event":"signed_up","messageId":"seg-2"}]})
        .to_string();
    let ingest_routes: Vec<(&str, &str, &[u8])> = vec![
        ("POST", "/v1/events", events.as_bytes()),
        ("POST", "/v1/track", segment.as_bytes()),
        ("POST", "/v1/identify", segment.as_bytes()),
        ("POST", "/v1/batch", batch.as_bytes()),
        ("POST", "/v1/webhooks/segment", segment.as_bytes()),
    ];
    let admin_routes: Vec<(&str, &str, &[u8])> = vec![
        ("GET", "/v1/users/u1", b""),
        ("DELETE", "/v1/users/u1", b""),
        ("GET", "/v1/dlq", b""),
        ("POST", "/v1/dlq/replay", br#"{"all":true}"#),
    ];
    let basic_admin = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{ADMIN}:")
        )
    );
    let wrong = [
        None,
        Some("Bearer wrong-token".to_owned()),
        Some(format!("Bearer {INGEST}x")),
        Some(format!("Token {ADMIN}")),
        Some("Bearer ".to_owned()),
    ];
    let mut checked = 0;
    for (method, path, body) in ingest_routes.iter().chain(&admin_routes) {
        for auth in &wrong {
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            let r = try_http(s.port(), method, path, &headers, body).expect("request");
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}");
            assert_eq!(r.json(), json!({"error":"unauthorized"}), "{method} {path}");
            checked += 1;
        }
    }
    for (method, path, body) in &admin_routes {
        // The ingest token, as a bearer and as Segment's Basic username,
        // and the admin token as a Basic username (admin routes take
        // bearer tokens only).
        for auth in [bearer(INGEST), basic_admin.clone()] {
            let r = try_http(s.port(), method, path, &[("Authorization", &auth)], body)
                .expect("request");
            assert_eq!(r.status, 401, "{method} {path} with {auth}");
            assert_eq!(r.json(), json!({"error":"unauthorized"}));
            checked += 1;
        }
    }
    assert!(checked >= 50);

    // Nothing changed: no intruder, u1 as it was, one email only.
    assert_eq!(s.user("intruder"), None);
    assert_eq!(s.user("u1").expect("u1 still there"), before);
    assert!(s.dlq().is_empty());
    assert_eq!(s.mails().len(), 1);

    // The right tokens work on the same routes.
    let r = s.http("POST", "/v1/events", Some(INGEST), events.as_bytes());
    assert_eq!(r.status, 202);
    let r = s.http("POST", "/v1/track", Some(ADMIN), segment.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(s.user("intruder").is_some());
    let r = s.http("DELETE", "/v1/users/u1", Some(ADMIN), b"");
    assert_eq!(r.status, 200);
}

/// Bad lines are answered 400 with their 1-based line numbers (array
/// positions for an array) and the good lines are kept; a body over
/// 10 MB is 413, declared or once inflated.
#[test]
fn bad_lines_get_line_numbers_and_good_lines_are_kept_and_big_bodies_413() {
    let hooks = quiet_receiver();
    let s = Service::new(hooks.port);
    let ts = now_ts();
    let body = format!(
        "{}\nnot json at all\n{}\n\n{}\n",
        json!({"type":"identify","user":"g1","ts":ts,"traits":{"first_name":"G"}}),
        json!({"type":"track","user":"g2","event":"x"}), // no ts
        json!({"type":"identify","user":"g3","ts":ts,"traits":{"first_name":"H"}}),
    );
    let r = s.http("POST", "/v1/events", Some(INGEST), body.as_bytes());
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["accepted"], 2, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    let lines: Vec<u64> = v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![2, 3], "{v}");
    for e in v["errors"].as_array().expect("errors") {
        assert!(!e["message"].as_str().expect("message").is_empty());
    }
    assert_eq!(s.user("g1").expect("g1 kept")["profile"]["first_name"], "G");
    assert_eq!(s.user("g3").expect("g3 kept")["profile"]["first_name"], "H");
    assert_eq!(s.user("g2"), None);

    // An array: positions are the elements' (1-based).
    let array = json!([
        {"type":"identify","user":"a1","ts":ts,"traits":{}},
        17,
        {"type":"identify","user":"a3","ts":ts,"traits":{}},
        {"type":"bogus","user":"a4","ts":ts},
    ]);
    let r = s.http(
        "POST",
        "/v1/events",
        Some(INGEST),
        array.to_string().as_bytes(),
    );
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["accepted"], 2, "{v}");
    let lines: Vec<u64> = v["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![2, 4], "{v}");
    assert!(s.user("a1").is_some() && s.user("a3").is_some());
    assert_eq!(s.user("a4"), None);

    // Over 10 MB by Content-Length: refused before the body is read.
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {INGEST}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024 + 1
    );
    let r = send_raw(s.port(), &head, b"").expect("413 answer");
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["error"]
        .as_str()
        .expect("error")
        .contains("larger"));

    // Over 10 MB once inflated: a small gzip body of many events.
    let line = format!(
        "{}\n",
        json!({"type":"identify","user":"bomb","ts":ts,"traits":{}})
    );
    let big = line.repeat(10 * 1024 * 1024 / line.len() + 2);
    assert!(big.len() > 10 * 1024 * 1024);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(big.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(gz.len() < 1024 * 1024);
    let auth = bearer(INGEST);
    let r = try_http(
        s.port(),
        "POST",
        "/v1/events",
        &[("Authorization", &auth), ("Content-Encoding", "gzip")],
        &gz,
    )
    .expect("413 answer");
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(s.user("bomb"), None);

    // Just under the limit inflated, the same way: accepted.
    let small = line.repeat(1000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(small.as_bytes()).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let r = try_http(
        s.port(),
        "POST",
        "/v1/events",
        &[("Authorization", &auth), ("Content-Encoding", "gzip")],
        &gz,
    )
    .expect("answer");
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"accepted":1000,"duplicates":0}));
    assert!(s.user("bomb").is_some());
}

/// The same events posted again after a SIGTERM and a restart on the same
/// store are all duplicates, and no second email is written.
#[test]
fn a_body_of_many_bad_lines_is_answered_in_bounded_size_and_send_events_counts_them_all() {
    let hooks = quiet_receiver();
    let s = Service::new(hooks.port);
    let ts = now_ts();
    let mut body = "x\n".repeat(100_000);
    body.push_str(&json!({"type":"identify","user":"m1","ts":ts,"traits":{}}).to_string());
    let r = s.http("POST", "/v1/events", Some(INGEST), body.as_bytes());
    assert_eq!(r.status, 400);
    assert!(
        r.body.len() < 200_000,
        "an answer of {} bytes",
        r.body.len()
    );
    let v = r.json();
    assert_eq!(v["accepted"], 1, "{v}");
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(1_000));
    assert_eq!(v["errors_omitted"], 99_000);
    assert!(s.user("m1").is_some());

    // send-events in one batch: every refused line is counted.
    let file = s.repo.join("many-bad.jsonl");
    let mut text = "x\n".repeat(1_200);
    text.push_str(&json!({"type":"identify","user":"m2","ts":ts,"traits":{}}).to_string());
    std::fs::write(&file, text).expect("write events");
    let o = support::cli::output(
        support::cli::sluice()
            .arg("send-events")
            .arg(&file)
            .arg("--batch")
            .arg("2000")
            .arg("--server")
            .arg(s.run.base_url())
            .env("SLUICE_TOKEN", INGEST),
    );
    let out = support::cli::stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("accepted 1, duplicates 0, rejected 1200"),
        "{out}"
    );
    assert!(s.logs().find("panicked").is_none(), "{}", s.logs());
}

#[test]
fn reposting_after_a_restart_is_idempotent() {
    let hooks = quiet_receiver();
    let mut s = Service::new(hooks.port);
    let events: Vec<Value> = ["r1", "r2", "r3"].iter().flat_map(|u| signup(u)).collect();
    let r = s.post_events(&events);
    assert_eq!(r.status, 202);
    assert_eq!(r.json(), json!({"accepted":6,"duplicates":0}));
    s.wait_mails(3);

    let status = s.terminate();
    assert!(status.success(), "exit {status}:\n{}", s.logs());
    s.start();

    let r = s.post_events(&events);
    assert_eq!(r.status, 202);
    assert_eq!(r.json(), json!({"accepted":0,"duplicates":6}));
    // A new user's email arrives after the re-post's would have: the
    // channel delivers in order, so by then a second email would be there.
    let r = s.post_events(&signup("r4"));
    assert_eq!(r.json(), json!({"accepted":2,"duplicates":0}));
    let mails = s.wait_mails(4);
    assert_eq!(mails.len(), 4, "{:?}", mails.keys());
    for u in ["r1", "r2", "r3", "r4"] {
        let to = format!("{u}@example.com");
        let n = mails
            .values()
            .filter(|m| String::from_utf8_lossy(m).contains(&to))
            .count();
        assert_eq!(n, 1, "mails to {u}");
        let v = s.user(u).expect("user");
        assert_eq!(v["messages"].as_array().expect("messages").len(), 1, "{v}");
    }
}

/// The welcome email as a mail parser reads it: Message-ID from the key,
/// From/To/Subject, multipart/alternative, List-Unsubscribe with one-click
/// for marketing and none for transactional; the one-click POST
/// unsubscribes, a forged token does not.
#[test]
fn the_welcome_email_and_one_click_unsubscribe() {
    use mail_parser::{MessageParser, MimeHeaders};

    let hooks = quiet_receiver();
    let s = Service::new(hooks.port);
    let mut events = signup("m1");
    events.push(track(
        "m1",
        "m1-order",
        "order_completed",
        json!({"order_id":"o-17"}),
    ));
    assert_eq!(s.post_events(&events).status, 202);
    let mails = s.wait_mails(2);
    let user = s.user("m1").expect("m1");
    let key_of = |step: &str| {
        user["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .find(|m| m["step"] == step)
            .unwrap_or_else(|| panic!("no {step} in {user}"))["key"]
            .as_str()
            .expect("key")
            .to_owned()
    };
    let (welcome_key, receipt_key) = (key_of("welcome-email"), key_of("receipt-email"));

    let parsed: Vec<_> = mails
        .values()
        .map(|raw| {
            MessageParser::default()
                .parse(raw)
                .expect("parses as RFC 5322")
        })
        .collect();
    let welcome = parsed
        .iter()
        .find(|m| m.subject() == Some("Welcome, Ana!"))
        .expect("the welcome email");
    let receipt = parsed
        .iter()
        .find(|m| m.subject() == Some("Order o-17 confirmed"))
        .expect("the receipt");

    assert_eq!(
        welcome.message_id(),
        Some(format!("{welcome_key}@run.example").as_str())
    );
    assert!(welcome
        .header_raw("Message-ID")
        .expect("raw Message-ID")
        .trim()
        .eq(&format!("<{welcome_key}@run.example>")));
    assert_eq!(
        receipt.message_id(),
        Some(format!("{receipt_key}@run.example").as_str())
    );
    let from = welcome.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.address(), Some("hello@run.example"));
    assert_eq!(from.name(), Some("Run Test"));
    let to = welcome.to().and_then(|a| a.first()).expect("To");
    assert_eq!(to.address(), Some("m1@example.com"));
    assert!(welcome.date().is_some(), "Date");
    let ct = welcome.content_type().expect("Content-Type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("alternative"))
    );
    assert!(welcome
        .body_text(0)
        .expect("text part")
        .contains("Hi Ana, welcome aboard."));
    assert!(welcome
        .body_html(0)
        .expect("html part")
        .contains("<p>Hi Ana, welcome aboard.</p>"));

    let list = welcome
        .header_raw("List-Unsubscribe")
        .expect("List-Unsubscribe on marketing")
        .trim()
        .to_owned();
    let prefix = format!("<http://127.0.0.1:{}/v1/unsubscribe/", s.port());
    assert!(list.starts_with(&prefix) && list.ends_with('>'), "{list}");
    assert_eq!(
        welcome.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    let url = &list[1..list.len() - 1];
    // The same URL as `message.unsubscribe_url` in the body.
    assert!(welcome.body_text(0).expect("text").contains(url));
    assert_eq!(receipt.header_raw("List-Unsubscribe"), None);
    assert_eq!(receipt.header_raw("List-Unsubscribe-Post"), None);

    let path = url
        .strip_prefix(&format!("http://127.0.0.1:{}", s.port()))
        .expect("path");
    let token = path.strip_prefix("/v1/unsubscribe/").expect("token");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let one_click = b"List-Unsubscribe=One-Click";

    // Forged: the last character changed, or another user's name spliced
    // in. 404 and no change.
    let mut forged = token.to_owned();
    let last = forged.pop().expect("token");
    // Another hex digit (not the same digit in another case: hex decoding
    // ignores case, so `a` → `A` would be the same token).
    forged.push(if last == '0' { '1' } else { '0' });
    for bad in [forged, format!("x{token}"), "nothing".to_owned()] {
        let r = try_http(
            s.port(),
            "POST",
            &format!("/v1/unsubscribe/{bad}"),
            &form,
            one_click,
        )
        .expect("answer");
        assert_eq!(r.status, 404, "{bad}");
    }
    // The page (GET) changes nothing either.
    let r = s.http("GET", path, None, b"");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/html")));
    assert!(String::from_utf8_lossy(&r.body).contains("<form"));
    let profile = &s.user("m1").expect("m1")["profile"];
    assert_ne!(
        profile["subscriptions"]["marketing"],
        json!(false),
        "{profile}"
    );

    // RFC 8058 one-click.
    let r = try_http(s.port(), "POST", path, &form, one_click).expect("answer");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let profile = &s.user("m1").expect("m1")["profile"];
    assert_eq!(
        profile["subscriptions"]["marketing"],
        json!(false),
        "{profile}"
    );
    assert_eq!(profile["email"], "m1@example.com");
}

/// A journey deployed through `apply --server` while the service runs
/// (RUN.md §3): its non-transactional email carries `List-Unsubscribe` and
/// `List-Unsubscribe-Post` like the journeys there at start, and the header
/// holds the same URL as the template's `message.unsubscribe_url` (whose
/// token names the journey's category). Was: no header at all until a
/// restart.
#[test]
fn a_journey_applied_while_running_carries_its_unsubscribe_link() {
    use mail_parser::MessageParser;

    let hooks = quiet_receiver();
    let s = Service::new(hooks.port);
    std::fs::write(
        s.repo.join("journeys/deals.yaml"),
        "apiVersion: sluice/v1\nkind: Journey\nid: deals\nversion: 1\ncategory: deals\n\
         entry:\n  event: price_dropped\nsteps:\n  - id: deal-email\n    \
         send: { channel: email, template: deal }\n",
    )
    .expect("write the journey");
    std::fs::write(
        s.repo.join("templates/deal.yaml"),
        "apiVersion: sluice/v1\nkind: Template\nid: deal\nchannel: email\n\
         subject: \"Cheaper now\"\ntext: \"Unsubscribe: {{message.unsubscribe_url}}\"\n",
    )
    .expect("write the template");
    let base = s.run.base_url();
    let o = support::cli::output(support::cli::sluice().arg("apply").arg(&s.repo).args([
        "--server",
        base.as_str(),
        "--token",
        ADMIN,
    ]));
    assert!(o.status.success(), "{}", support::cli::stderr(&o));

    let mut events = signup("d1");
    events.truncate(1);
    events.push(track("d1", "d1-drop", "price_dropped", json!({})));
    assert_eq!(s.post_events(&events).status, 202);
    let mails = s.wait_mails(1);
    let raw = mails.values().next().expect("the deal email");
    let mail = MessageParser::default().parse(raw).expect("RFC 5322");
    let list = mail
        .header_raw("List-Unsubscribe")
        .unwrap_or_else(|| panic!("no List-Unsubscribe:\n{}", String::from_utf8_lossy(raw)))
        .trim()
        .to_owned();
    assert!(list.starts_with('<') && list.ends_with('>'), "{list}");
    let url = &list[1..list.len() - 1];
    assert_eq!(
        mail.body_text(0).expect("text").trim(),
        format!("Unsubscribe: {url}")
    );
    assert_eq!(
        mail.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    // The token names the journey's category.
    assert!(
        url.contains(&format!(".{}.", hex::encode("deals"))),
        "{url}"
    );
}

/// Feedback intake end to end (docs/feedback.md): the welcome email goes
/// to the maildir; SES reports a hard bounce for its Message-ID (posted
/// with the ingest token) and the user's `email_status` turns `bounced`,
/// so the next email to them is suppressed `bounced` until a new address
/// arrives; a Postmark spam complaint about another user's welcome email
/// sets their `subscriptions.marketing` to false. Unauthenticated posts
/// change nothing.
#[test]
fn a_hard_bounce_suppresses_later_email_and_a_complaint_unsubscribes() {
    let hooks = quiet_receiver();
    let s = Service::new(hooks.port);
    let mut events = signup("b1");
    events.extend(signup("c1"));
    assert_eq!(s.post_events(&events).status, 202);
    s.wait_mails(2);
    let key_of = |user: &str, step: &str| -> String {
        let v = s.user(user).expect("known");
        v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .find(|m| m["step"] == step)
            .unwrap_or_else(|| panic!("no {step} in {v}"))["key"]
            .as_str()
            .expect("key")
            .to_owned()
    };
    let b1_key = key_of("b1", "welcome-email");
    let c1_key = key_of("c1", "welcome-email");
    let mails = s.mails();
    assert!(
        mails
            .values()
            .any(|m| String::from_utf8_lossy(m).contains(&format!("<{b1_key}@run.example>"))),
        "the Message-ID carries the key"
    );

    let ses_event = json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": "b1@example.com"}]},
        "mail": {"messageId": "0100018c-ses-own", "commonHeaders": {"messageId": format!("<{b1_key}@run.example>")}}
    });
    let sns = json!({
        "Type": "Notification", "MessageId": "n-1", "TopicArn": "arn:aws:sns:eu-west-1:1:ses",
        "Message": ses_event.to_string(), "Timestamp": now_ts(), "SignatureVersion": "1",
        "Signature": "bm90IGEgc2lnbmF0dXJl", "SigningCertURL": "https://certs.example.invalid/x.pem"
    })
    .to_string();
    let text = ("Content-Type", "text/plain; charset=UTF-8");
    // Unsigned and without a token: 401, nothing changed.
    let r = try_http(
        s.port(),
        "POST",
        "/v1/feedback/ses",
        &[text],
        sns.as_bytes(),
    )
    .expect("answer");
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert!(s.user("b1").expect("b1")["profile"]
        .get("email_status")
        .is_none());

    let auth = bearer(INGEST);
    let with_token = [text, ("Authorization", auth.as_str())];
    let r = try_http(
        s.port(),
        "POST",
        "/v1/feedback/ses",
        &with_token,
        sns.as_bytes(),
    )
    .expect("answer");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"received": 1, "matched": 1}));
    assert_eq!(
        s.user("b1").expect("b1")["profile"]["email_status"],
        "bounced"
    );

    // A later email to b1 (a receipt) is suppressed `bounced`.
    let order = track(
        "b1",
        "b1-order-1",
        "order_completed",
        json!({"order_id": "o-1"}),
    );
    assert_eq!(s.post_events(&[order]).status, 202);
    let receipt = wait_for(Duration::from_secs(10), "the receipt decision", || {
        let v = s.user("b1")?;
        v["messages"]
            .as_array()?
            .iter()
            .find(|m| m["step"] == "receipt-email")
            .cloned()
    });
    assert_eq!(
        (&receipt["outcome"], &receipt["reason"]),
        (&json!("suppressed"), &json!("bounced")),
        "{receipt}"
    );
    assert_eq!(s.mails().len(), 2, "no mail to a bounced address");

    // An unmatched notification: 200, counted, nothing changed.
    let unknown = sns.replace(&b1_key, "0123456789abcdef0123456789abcdef");
    let r = try_http(
        s.port(),
        "POST",
        "/v1/feedback/ses",
        &with_token,
        unknown.as_bytes(),
    )
    .expect("answer");
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"received": 1, "matched": 0}))
    );

    // Postmark: a spam complaint naming c1's welcome email in the bounce
    // content, with the token as the basic-auth password.
    let complaint = json!({
        "RecordType": "SpamComplaint", "Type": "SpamComplaint", "TypeCode": 512,
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Email": "c1@example.com",
        "Content": format!("Received: by mx\r\nMessage-ID: <{c1_key}@run.example>\r\nSubject: Welcome\r\n\r\n")
    })
    .to_string();
    let json_type = ("Content-Type", "application/json");
    let r = try_http(
        s.port(),
        "POST",
        "/v1/feedback/postmark",
        &[json_type],
        complaint.as_bytes(),
    )
    .expect("answer");
    assert_eq!(r.status, 401, "Postmark needs the token");
    let basic = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("postmark:{INGEST}"))
        )
    };
    let r = try_http(
        s.port(),
        "POST",
        "/v1/feedback/postmark",
        &[json_type, ("Authorization", basic.as_str())],
        complaint.as_bytes(),
    )
    .expect("answer");
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"received": 1, "matched": 1}))
    );
    let c1 = s.user("c1").expect("c1");
    assert_eq!(
        c1["profile"]["subscriptions"]["marketing"],
        json!(false),
        "{c1}"
    );
    assert!(c1["profile"].get("email_status").is_none());

    // A new address for b1: mail flows again.
    let new = identify("b1", "b1-new-email", json!({"email": "b1-new@example.com"}));
    let order = track(
        "b1",
        "b1-order-2",
        "order_completed",
        json!({"order_id": "o-2"}),
    );
    assert_eq!(s.post_events(&[new, order]).status, 202);
    let mails = s.wait_mails(3);
    assert!(mails
        .values()
        .any(|m| String::from_utf8_lossy(m).contains("b1-new@example.com")));
    assert!(s.user("b1").expect("b1")["profile"]
        .get("email_status")
        .is_none());
}

/// Webhooks as a receiver written from docs/webhooks.md sees them: every
/// signature verifies; 500 then 200 is delivered once; 429 with
/// Retry-After waits at least that long; 400 is a dead letter, replayed
/// once the receiver is fixed, and then gone from the queue.
#[test]
fn webhooks_are_signed_retried_dead_lettered_and_replayed() {
    let fixed = Arc::new(AtomicBool::new(false));
    let script: Script = {
        let fixed = Arc::clone(&fixed);
        Box::new(move |n, before| match (n, before) {
            ("fail-once", 0) => (500, vec![], "try again".into()),
            ("rate-limited", 0) => (
                429,
                vec![("Retry-After".into(), "2".into())],
                "slow down".into(),
            ),
            ("refused", _) if !fixed.load(Ordering::SeqCst) => {
                (400, vec![], "no such customer".into())
            }
            _ => (200, vec![], "ok".into()),
        })
    };
    let hooks = Hooks::start(script);
    let s = Service::new(hooks.port);
    let names = ["ok", "fail-once", "rate-limited", "refused"];
    let events: Vec<Value> = names
        .iter()
        .map(|n| {
            track(
                &format!("w-{n}"),
                &format!("ping-{n}"),
                "ping",
                json!({"n": n}),
            )
        })
        .collect();
    assert_eq!(s.post_events(&events).status, 202);

    // The dead letter for `refused`, with the receiver's reason.
    let letters = wait_for(Duration::from_secs(10), "a dead letter", || {
        let d = s.dlq();
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(letters.len(), 1, "{letters:?}");
    let refused = hooks.hits_for("refused");
    assert_eq!(refused.len(), 1, "a 400 is not retried");
    let letter = &letters[0];
    assert_eq!(letter["key"], json!(refused[0].key), "{letter}");
    assert_eq!(letter["user"], "w-refused");
    assert_eq!(letter["journey"], "ping");
    assert_eq!(letter["step"], "hook");
    assert_eq!(letter["channel"], "webhook");
    assert_eq!(letter["attempts"], 1);
    let reason = letter["reason"].as_str().expect("reason");
    assert!(
        reason.contains("HTTP 400") && reason.contains("no such customer"),
        "{reason}"
    );

    // 500 then 200; 429 (Retry-After: 2) then 200.
    let done = |n: &str| {
        let h = hooks.hits_for(n);
        h.iter().any(|h| h.status == 200).then_some(h)
    };
    let fail_once = wait_for(Duration::from_secs(10), "fail-once delivered", || {
        done("fail-once")
    });
    let limited = wait_for(Duration::from_secs(10), "rate-limited delivered", || {
        done("rate-limited")
    });
    let ok = wait_for(Duration::from_secs(5), "ok delivered", || done("ok"));
    assert_eq!(ok.len(), 1);
    assert_eq!(
        fail_once.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![500, 200]
    );
    assert_eq!(
        fail_once[0].key, fail_once[1].key,
        "retried with the same key"
    );
    assert_eq!(fail_once[0].body, fail_once[1].body);
    assert_eq!(
        limited.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let waited = limited[1].at - limited[0].at;
    // The backoff alone would be at most 1 s (retry.initial) for attempt 1.
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 not waited: {waited:?}"
    );

    // Replay the dead letter once the receiver is fixed.
    fixed.store(true, Ordering::SeqCst);
    let r = s.http("POST", "/v1/dlq/replay", Some(ADMIN), br#"{"all":true}"#);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json(), json!({"replayed": 1}));
    let refused = wait_for(Duration::from_secs(10), "refused delivered", || {
        done("refused")
    });
    assert_eq!(
        refused.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![400, 200]
    );
    assert_eq!(refused[0].key, refused[1].key, "replayed with the same key");
    wait_for(Duration::from_secs(5), "an empty dead-letter queue", || {
        s.dlq().is_empty().then_some(())
    });
    let r = s.http("POST", "/v1/dlq/replay", Some(ADMIN), br#"{"all":true}"#);
    assert_eq!(r.json(), json!({"replayed": 0}));

    // Every request: signed as the docs say, one key per message, the
    // template's header and sluice's User-Agent; never more than two
    // requests per key, the second one a success.
    let all = hooks.hits();
    assert_eq!(all.len(), 7, "{all:?}");
    let mut per_key: BTreeMap<String, Vec<&Hit>> = BTreeMap::new();
    for h in &all {
        assert!(h.verified, "signature {} did not verify", h.signature);
        assert!(h.user_agent.starts_with("sluice/"), "{}", h.user_agent);
        assert_eq!(h.source, "sluice-test");
        let body: Value = serde_json::from_slice(&h.body).expect("JSON body");
        assert_eq!(body["user"], json!(format!("w-{}", h.n)));
        per_key.entry(h.key.clone()).or_default().push(h);
    }
    assert_eq!(per_key.len(), 4, "one key per message");
    for (key, hits) in &per_key {
        assert!(!key.is_empty());
        assert!(hits.len() <= 2, "{key}: {hits:?}");
        assert_eq!(hits.last().map(|h| h.status), Some(200), "{key}");
    }
    // The verifier is not vacuous: another body, another secret or an
    // old `t` do not verify.
    let h = &all[0];
    let now = unix_millis() / 1000;
    assert!(verify(
        WEBHOOK_SECRET.as_bytes(),
        &h.signature,
        &h.body,
        now
    ));
    let mut other = h.body.clone();
    other.push(b' ');
    assert!(!verify(
        WEBHOOK_SECRET.as_bytes(),
        &h.signature,
        &other,
        now
    ));
    assert!(!verify(b"another secret", &h.signature, &h.body, now));
    assert!(!verify(
        WEBHOOK_SECRET.as_bytes(),
        &h.signature,
        &h.body,
        now + 301
    ));

    // Nothing more arrives for the delivered keys.
    let r = s.post_events(&[track("w-last", "ping-last", "ping", json!({"n":"last"}))]);
    assert_eq!(r.status, 202);
    wait_for(Duration::from_secs(5), "the last ping", || done("last"));
    assert_eq!(hooks.hits().len(), 8);
}

/// `DELETE /v1/users/{id}` erases: `{"erased":true}`, then 404; a later
/// event starts a new profile (and the journey can be entered again, its
/// history being gone).
#[test]
fn erasure_forgets_the_user_and_a_later_event_starts_afresh() {
    let hooks = quiet_receiver();
    let s = Service::new(hooks.port);
    let mut events = signup("e1");
    events.push(identify("e1", "e1-more", json!({"plan":"plus"})));
    assert_eq!(s.post_events(&events).status, 202);
    s.wait_mails(1);
    let v = s.user("e1").expect("e1");
    assert_eq!(v["profile"]["plan"], "plus");
    assert_eq!(v["messages"].as_array().expect("messages").len(), 1);
    let old_key = v["messages"][0]["key"].clone();

    let r = s.http("DELETE", "/v1/users/e1", Some(ADMIN), b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"erased": true}));
    assert_eq!(s.user("e1"), None);
    let r = s.http("DELETE", "/v1/users/e1", Some(ADMIN), b"");
    assert_eq!(r.status, 404);
    // Other users are untouched.
    assert_eq!(s.post_events(&signup("e2")).status, 202);
    s.wait_mails(2);

    // A later event: a new profile with nothing of the old one. New event
    // ids, since the old ones are part of what was erased only if the
    // engine says so; what matters is the profile.
    let later = vec![
        identify(
            "e1",
            "e1-again",
            json!({"email":"e1-new@example.com","first_name":"Eve"}),
        ),
        track("e1", "e1-signup-again", "signed_up", json!({})),
    ];
    let r = s.post_events(&later);
    assert_eq!(r.json(), json!({"accepted":2,"duplicates":0}));
    let v = s.user("e1").expect("a new e1");
    assert_eq!(v["profile"]["email"], "e1-new@example.com");
    assert_eq!(v["profile"]["plan"], Value::Null, "{v}");
    // Entered the welcome journey again (its `reentry: never` history was
    // erased), so a second welcome, to the new address.
    let v = wait_for(Duration::from_secs(5), "the new welcome", || {
        s.user("e1")
            .filter(|v| !v["messages"].as_array().expect("messages").is_empty())
    });
    // A new message, so a new idempotency key: the old one was used for a
    // message to the erased profile, and receivers drop repeats of a key.
    assert_ne!(v["messages"][0]["key"], old_key, "{v}");
    let mails = s.wait_mails(3);
    assert!(mails
        .values()
        .any(|m| String::from_utf8_lossy(m).contains("e1-new@example.com")));
    let v = s.user("e1").expect("e1");
    assert_eq!(v["messages"].as_array().expect("messages").len(), 1, "{v}");
}

/// SIGTERM while clients post continuously: exit 0, and after a restart
/// every user whose request was answered 202 exists.
#[test]
fn sigterm_under_load_loses_nothing_acknowledged() {
    let hooks = quiet_receiver();
    let mut s = Service::new(hooks.port);
    let port = s.port();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for t in 0..4 {
        let (stop, acked, refused) = (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&refused));
        clients.push(std::thread::spawn(move || {
            let auth = bearer(INGEST);
            let mut i = 0;
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                let users: Vec<String> = (0..5).map(|k| format!("load-{t}-{i}-{k}")).collect();
                i += 1;
                let body: String = users
                    .iter()
                    .flat_map(|u| signup(u))
                    .map(|e| format!("{e}\n"))
                    .collect();
                match try_http(
                    port,
                    "POST",
                    "/v1/events",
                    &[("Authorization", &auth)],
                    body.as_bytes(),
                ) {
                    Ok(r) if r.status == 202 => {
                        assert_eq!(r.json()["accepted"], 10);
                        acked.lock().expect("acked").extend(users);
                    }
                    // Draining (503), or the connection refused or cut
                    // while stopping: not acknowledged.
                    Ok(r) => {
                        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    wait_for(
        Duration::from_secs(10),
        "some acknowledged requests",
        || (acked.lock().expect("acked").len() >= 400).then_some(()),
    );
    let status = s.terminate();
    assert!(status.success(), "exit {status}:\n{}", s.logs());
    // Clients keep going until they see the port closed for a moment.
    wait_for(Duration::from_secs(5), "clients refused", || {
        (refused.load(Ordering::SeqCst) >= 4).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    let acked = acked.lock().expect("acked").clone();
    assert!(acked.len() >= 400);

    s.start();
    let mut missing = Vec::new();
    for u in &acked {
        match s.user(u) {
            Some(v) if v["profile"]["email"] == json!(format!("{u}@example.com")) => {}
            other => missing.push((u.clone(), other)),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged users lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(3)]
    );
}

/// A `sluice run` child started by hand (for a command line the harness
/// does not build), killed and reaped when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--listen 127.0.0.1:0`: the OS picks the port; `run` says which one it
/// serves on, without `api.public_url` the links in messages use that port
/// too (`http://<listen>`), so one-click unsubscribe works, and commands
/// run without `--server` on the store it holds find it there.
#[test]
fn listen_on_port_zero_says_and_links_the_port_it_got() {
    let (_root, repo) = support::fixture::temp_copy("run/service", &[("__HOOK__", "9".into())]);
    let log = repo.join("run.log");
    let child = Child(
        support::cli::sluice()
            .arg("run")
            .arg(&repo)
            .args(["--listen", "127.0.0.1:0"])
            .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start sluice run"),
    );
    let port: u16 = wait_for(Duration::from_secs(20), "the listening line", || {
        let text = std::fs::read_to_string(&log).ok()?;
        let at = text.find("listening on http://127.0.0.1:")?;
        let rest = &text[at + "listening on http://127.0.0.1:".len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    assert_ne!(
        port,
        0,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    wait_for(Duration::from_secs(20), "readyz 200", || {
        try_http(port, "GET", "/readyz", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    let body = support::events::jsonl(&signup("p0"));
    let r = try_http(
        port,
        "POST",
        "/v1/events",
        &[
            ("Authorization", &bearer(INGEST)),
            ("Content-Type", "application/x-ndjson"),
        ],
        body.as_bytes(),
    )
    .expect("post events");
    assert_eq!(r.status, 202, "{}", r.text);
    let dir = repo.join(".sluice/outbox/maildir/new");
    let raw = wait_for(Duration::from_secs(10), "the welcome email", || {
        let entry = std::fs::read_dir(&dir).ok()?.next()?.ok()?;
        std::fs::read(entry.path()).ok()
    });
    let mail = mail_parser::MessageParser::default()
        .parse(&raw)
        .expect("parses as RFC 5322");
    let list = mail
        .header_raw("List-Unsubscribe")
        .expect("List-Unsubscribe on marketing")
        .trim();
    let link = list
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix('>'))
        .unwrap_or_else(|| panic!("not <url>: {list}"));
    let prefix = format!("http://127.0.0.1:{port}/v1/unsubscribe/");
    assert!(link.starts_with(&prefix), "{link}");
    let r = try_http(
        port,
        "POST",
        &link[prefix.len() - "/v1/unsubscribe/".len()..],
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"List-Unsubscribe=One-Click",
    )
    .expect("one-click unsubscribe");
    assert_eq!(r.status, 200, "{}", r.text);

    // Commands that find the store held ask this engine where it listens,
    // not at the Project's `api.listen`.
    let asking = format!("asking it at http://127.0.0.1:{port}");
    for args in [
        vec!["inspect", "user", "p0", "--format", "json"],
        vec!["history", "--dir", "REPO", "--format", "json"],
    ] {
        let args: Vec<&str> = args
            .into_iter()
            .map(|a| {
                if a == "REPO" {
                    support::fixture::utf8(&repo)
                } else {
                    a
                }
            })
            .collect();
        let mut cmd = support::cli::sluice();
        cmd.args(&args)
            .current_dir(&repo)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN);
        let o = support::cli::output(&mut cmd);
        let (out, err) = (support::cli::stdout(&o), support::cli::stderr(&o));
        assert!(o.status.success(), "{args:?}: {out}{err}");
        assert!(err.contains(&asking), "{args:?}: {err}");
        let doc: Value = serde_json::from_str(&out).expect("json");
        if args[0] == "inspect" {
            assert_eq!(
                doc["profile"]["subscriptions"]["marketing"],
                json!(false),
                "{doc}"
            );
        }
    }
    drop(child);
}
