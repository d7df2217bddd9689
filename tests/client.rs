//! The client commands against a real `sluice run`: `send-events` (batches,
//! line numbers, duplicates, an unreachable server), `inspect user` through
//! the API and directly on the store, and `dlq list` / `dlq replay` with a
//! webhook receiver that first refuses and then accepts.
//!
//! Everything runs on 127.0.0.1 with bounded waits; every server is killed
//! when its guard drops, also when a test fails.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::cli::{output as run, sluice, stderr, stdout};
use support::port::free_port;
use support::receiver::{Receiver, Reply};
use support::server::SluiceRun;

const INGEST: &str = "ingest-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

/// The example shop, listening on `port`, its CRM webhook pointed at
/// `crm` (a local receiver).
fn shop(dir: &Path, port: u16, crm: u16) {
    support::fixture::copy_dir(&support::fixture::shop(), dir);
    let project = dir.join("sluice.yaml");
    let mut text = std::fs::read_to_string(&project).expect("sluice.yaml");
    text.push_str(&format!("\napi:\n  listen: 127.0.0.1:{port}\n"));
    std::fs::write(&project, text).expect("write sluice.yaml");
    let templates = dir.join("templates/orders.yaml");
    let text = std::fs::read_to_string(&templates).expect("orders.yaml");
    assert!(text.contains("https://crm.example.com/hooks/orders"));
    let text = text.replace(
        "https://crm.example.com/hooks/orders",
        &format!("http://127.0.0.1:{crm}/hooks/orders"),
    );
    std::fs::write(&templates, text).expect("write orders.yaml");
}

/// `sluice run` on the shop in `dir` with `store`, on the Project's
/// `port`; killed when dropped.
fn start(dir: &Path, store: &Path, port: u16) -> SluiceRun {
    SluiceRun::new(dir)
        .store(store)
        .listen_on(port)
        .args(&["--drain", "2"])
        .env("SLUICE_INGEST_TOKEN", INGEST)
        .env("SLUICE_ADMIN_TOKEN", ADMIN)
        .env("SHOP_WEBHOOK_SECRET", "dev-secret")
        .ready_within(Duration::from_secs(60))
        .start()
}

/// The shop's CRM: answers every webhook with `status` (which the test
/// changes), and keeps what it got.
struct Crm {
    receiver: Receiver,
    status: Arc<AtomicU16>,
}

impl Crm {
    fn start(status: u16) -> Crm {
        let status = Arc::new(AtomicU16::new(status));
        let answer = Arc::clone(&status);
        let receiver = Receiver::start(move |_, _| Reply::status(answer.load(Ordering::SeqCst)));
        Crm { receiver, status }
    }

    fn port(&self) -> u16 {
        self.receiver.port
    }

    /// From now on, answer `status`.
    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// How many webhooks arrived.
    fn hits(&self) -> usize {
        self.receiver.count()
    }

    /// Their `Idempotency-Key`s, in order.
    fn keys(&self) -> Vec<String> {
        self.receiver
            .requests()
            .iter()
            .map(|r| r.header("idempotency-key").to_owned())
            .collect()
    }
}

fn now() -> String {
    use engine::clock::Clock;
    engine::clock::WallClock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Waits (at most 30 s) until `f` holds.
fn eventually(what: &str, f: impl FnMut() -> bool) {
    support::wait::until(Duration::from_secs(30), Duration::from_millis(100), what, f);
}

/// 2,400 events with ids over 3 batches, a blank line, and bad lines at
/// known places: `(file, good lines, bad line numbers)`.
fn events_file(dir: &Path) -> (PathBuf, usize, Vec<usize>) {
    let ts = now();
    let mut lines = Vec::new();
    let mut good = 0;
    for i in 0..2_400 {
        if i % 10 == 0 {
            lines.push(format!(
                r#"{{"type":"track","user":"u-{i}","ts":"{ts}","id":"su-{i}","event":"signed_up","props":{{"source":"organic"}}}}"#
            ));
        } else {
            lines.push(format!(
                r#"{{"type":"identify","user":"u-{i}","ts":"{ts}","id":"id-{i}","traits":{{"email":"u{i}@example.com","plan":"free"}}}}"#
            ));
        }
        good += 1;
    }
    // 1-based line numbers after the insertions below.
    lines.insert(4, "this is not json".into()); // line 5
    lines.insert(699, String::new()); // line 700: blank, skipped
    lines.insert(
        1_202,
        r#"{"type":"track","id":"no-user","ts":"2026-01-01T00:00:00Z","event":"signed_up"}"#.into(),
    ); // line 1203
    lines.insert(
        2_100,
        r#"{"type":"identify","user":"u-x","id":"bad-ts","ts":"yesterday"}"#.into(),
    ); // line 2101
    let path = dir.join("events.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write events");
    (path, good, vec![5, 1203, 2101])
}

#[test]
fn send_events_reports_lines_and_duplicates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shop");
    let port = free_port();
    let crm = Crm::start(200);
    shop(&dir, port, crm.port());
    let server = start(&dir, &tmp.path().join("store"), port);
    let (file, good, bad) = events_file(tmp.path());

    // The token from the Project's ingest variable, the server from --server.
    let o = run(sluice()
        .arg("send-events")
        .arg(&file)
        .arg("--server")
        .arg(server.base_url())
        .arg("--dir")
        .arg(&dir)
        .env("SLUICE_INGEST_TOKEN", INGEST));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(
        out.contains(&format!("accepted {good}, duplicates 0, rejected 3")),
        "{out}"
    );
    let name = file.display().to_string();
    let rejected: Vec<&str> = out.lines().filter(|l| l.starts_with(&name)).collect();
    assert_eq!(rejected.len(), 3, "{out}");
    for (l, n) in rejected.iter().zip(&bad) {
        let prefix = format!("{name}:{n}: ");
        assert!(l.starts_with(&prefix), "{l} should start with {prefix}");
        assert!(l.len() > prefix.len(), "no message: {l}");
    }
    // The server's own messages come through (the missing user, the bad ts).
    assert!(rejected[0].contains("JSON"), "{}", rejected[0]);

    // Again, with the server from SLUICE_SERVER, the token from
    // SLUICE_TOKEN and small batches: every event is a duplicate.
    let o = run(sluice()
        .arg("send-events")
        .arg(&file)
        .arg("--batch")
        .arg("333")
        .env("SLUICE_SERVER", server.base_url())
        .env("SLUICE_TOKEN", INGEST));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("accepted 0, duplicates {good}, rejected 3")),
        "{out}"
    );
    assert!(out.contains(&format!("{name}:1203: ")), "{out}");

    // --format json: one document with the counts and the rejected lines.
    let o = run(sluice()
        .arg("send-events")
        .arg(&file)
        .arg("--format")
        .arg("json")
        .env("SLUICE_SERVER", server.base_url())
        .env("SLUICE_TOKEN", INGEST));
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value =
        serde_json::from_str(stdout(&o).trim()).expect("one JSON document");
    assert_eq!(doc["accepted"], 0, "{doc}");
    assert_eq!(doc["duplicates"], good as u64, "{doc}");
    assert_eq!(doc["error"], serde_json::Value::Null, "{doc}");
    let lines: Vec<u64> = doc["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
            r["line"].as_u64().expect("line")
        })
        .collect();
    assert_eq!(
        lines,
        bad.iter().map(|&n| n as u64).collect::<Vec<_>>(),
        "{doc}"
    );

    // Only the good lines: nothing rejected, exit 0.
    let text = std::fs::read_to_string(&file).expect("read");
    let clean: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| !bad.contains(&(i + 1)))
        .map(|(_, l)| l)
        .collect();
    let clean_file = tmp.path().join("clean.jsonl");
    std::fs::write(&clean_file, clean.join("\n")).expect("write");
    let o = run(sluice()
        .arg("send-events")
        .arg(&clean_file)
        .arg("--server")
        .arg(server.base_url())
        .arg("--token")
        .arg(ADMIN));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!("accepted 0, duplicates {good}, rejected 0")),
        "{}",
        stdout(&o)
    );

    // A wrong token: refused, exit 1, nothing counted.
    let o = run(sluice()
        .arg("send-events")
        .arg(&clean_file)
        .arg("--server")
        .arg(server.base_url())
        .arg("--token")
        .arg("wrong"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("refused the token"), "{}", stderr(&o));
    drop(server);

    // Nobody listening: retried, then exit 1 with a clear message.
    let started = Instant::now();
    let o = run(sluice()
        .arg("send-events")
        .arg(&clean_file)
        .arg("--server")
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .arg("--token")
        .arg(INGEST));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    assert!(stdout(&o).contains("accepted 0, duplicates 0, rejected 0"));
    // Four pauses between five attempts.
    assert!(started.elapsed() >= Duration::from_secs(3), "not retried");
}

#[test]
fn inspect_user_through_the_api_and_on_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shop");
    let store = tmp.path().join("store");
    let port = free_port();
    let crm = Crm::start(200);
    shop(&dir, port, crm.port());
    let mut server = start(&dir, &store, port);
    let ts = now();
    let file = tmp.path().join("lena.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            format_args!(r#"{{"type":"identify","user":"u-lena","ts":"{ts}","id":"e1","traits":{{"email":"lena@example.com","plan":"free","timezone":"Europe/Berlin"}}}}"#),
            format_args!(r#"{{"type":"track","user":"u-lena","ts":"{ts}","id":"e2","event":"signed_up","props":{{"source":"organic"}}}}"#),
        ),
    )
    .expect("write");
    let o = run(sluice()
        .arg("send-events")
        .arg(&file)
        .arg("--server")
        .arg(server.base_url())
        .arg("--token")
        .arg(INGEST));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    // The store is held by `run`: the client goes through the API at the
    // Project's listen address, with the admin token from its variable.
    let inspect = |extra: &[&str], env: &[(&str, &str)]| {
        let mut c = sluice();
        c.args(["inspect", "user", "u-lena"])
            .arg(&dir)
            .args(extra)
            .args(["--format", "json"]);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    };
    let store_arg = store.display().to_string();
    let o = inspect(&["--store", &store_arg], &[("SLUICE_ADMIN_TOKEN", ADMIN)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("in use by `sluice run`"),
        "{}",
        stderr(&o)
    );
    let via_locked: Value = serde_json::from_str(&stdout(&o)).expect("json");

    // With --server and the ingest token: refused (admin only).
    let url = server.base_url();
    let o = inspect(&["--server", &url, "--token", INGEST], &[]);
    assert_eq!(o.status.code(), Some(1));
    let o = inspect(&["--server", &url, "--token", ADMIN], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let via_api: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(via_locked, via_api);

    // RUN.md §5's shape.
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(&via_api), ["user", "profile", "instances", "messages"]);
    assert_eq!(via_api["user"], "u-lena");
    assert_eq!(via_api["profile"]["email"], "lena@example.com");
    let instances = via_api["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1, "{via_api}");
    assert_eq!(
        keys(&instances[0]),
        [
            "journey",
            "version",
            "step",
            "entered_at",
            "holdout",
            "waiting_until"
        ]
    );
    assert_eq!(instances[0]["journey"], "welcome-series");
    let messages = via_api["messages"].as_array().expect("messages");
    assert!(!messages.is_empty(), "{via_api}");
    assert_eq!(
        keys(&messages[0]),
        ["at", "journey", "step", "channel", "outcome", "reason", "key"]
    );

    // Unknown user, through the API: exit 1 with a clear message.
    let o = run(sluice()
        .args(["inspect", "user", "nobody"])
        .arg(&dir)
        .args(["--server", &url, "--token", ADMIN]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown user `nobody`"),
        "{}",
        stderr(&o)
    );

    // After SIGTERM: straight from the store, the same document.
    server.stop(Duration::from_secs(30));
    let o = inspect(&["--store", &store_arg], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("in use"), "{}", stderr(&o));
    let direct: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(direct, via_api);

    // The human summary.
    let o = run(sluice()
        .args(["inspect", "user", "u-lena"])
        .arg(&dir)
        .args(["--store", &store_arg]));
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.starts_with("user u-lena\n"), "{text}");
    assert!(text.contains("  email: lena@example.com"), "{text}");
    assert!(text.contains("welcome-series v1 at step"), "{text}");

    // Unknown user, on the store.
    let o = run(sluice()
        .args(["inspect", "user", "nobody"])
        .arg(&dir)
        .args(["--store", &store_arg]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown user `nobody`"),
        "{}",
        stderr(&o)
    );

    // No store at all: an error, and none is created.
    let missing = tmp.path().join("missing");
    let o = run(sluice()
        .args(["inspect", "user", "u-lena"])
        .arg(&dir)
        .arg("--store")
        .arg(&missing));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no store at"), "{}", stderr(&o));
    assert!(!missing.exists());
}

fn dlq_list(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let o = run(sluice()
        .args(["dlq", "list"])
        .arg(dir)
        .args(extra)
        .args(["--format", "json"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    match serde_json::from_str(&stdout(&o)) {
        Ok(Value::Array(v)) => v,
        other => panic!("not a JSON array: {other:?}: {}", stdout(&o)),
    }
}

fn order(tmp: &Path, url: &str, n: usize) {
    let ts = now();
    let file = tmp.join(format!("order-{n}.jsonl"));
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            format_args!(r#"{{"type":"identify","user":"u-buyer","ts":"{ts}","id":"b-id-{n}","traits":{{"email":"buyer@example.com","first_name":"Bea"}}}}"#),
            format_args!(r#"{{"type":"track","user":"u-buyer","ts":"{ts}","id":"b-order-{n}","event":"order_completed","props":{{"order_id":"o-{n}","cart_id":"c-{n}","total":42.5,"currency":"EUR"}}}}"#),
        ),
    )
    .expect("write");
    let o = run(sluice()
        .arg("send-events")
        .arg(&file)
        .args(["--server", url, "--token", INGEST]));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn dead_webhook_listed_and_replayed_through_the_api() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shop");
    let port = free_port();
    let crm = Crm::start(400);
    shop(&dir, port, crm.port());
    let server = start(&dir, &tmp.path().join("store"), port);
    let url = server.base_url();
    let api = ["--server", url.as_str(), "--token", ADMIN];
    assert!(dlq_list(&dir, &api).is_empty());
    order(tmp.path(), &url, 1);

    // The CRM answers 400: permanent, a dead letter.
    let mut letters = Vec::new();
    eventually("a dead letter", || {
        letters = dlq_list(&dir, &api);
        letters.iter().any(|l| l["channel"] == "webhook")
    });
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    let keys: Vec<&str> = l
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["id", "at", "user", "journey", "step", "channel", "key", "attempts", "reason"]
    );
    assert_eq!(l["user"], "u-buyer");
    assert_eq!(l["journey"], "order-confirmation");
    assert_eq!(l["step"], "crm-sync");
    assert_eq!(l["channel"], "webhook");
    assert!(
        l["reason"].as_str().is_some_and(|r| r.contains("400")),
        "{l}"
    );
    let key = l["key"].as_str().expect("key").to_owned();
    assert_eq!(crm.hits(), 1);

    // The human list names it too.
    let o = run(sluice().args(["dlq", "list"]).arg(&dir).args(api));
    assert!(stdout(&o).contains(&key), "{}", stdout(&o));

    // Fixed: replay everything; delivered with the same key, gone.
    crm.answer(200);
    let o = run(sluice()
        .args(["dlq", "replay", "--all"])
        .arg(&dir)
        .args(api));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "replayed 1");
    eventually("the replayed delivery", || {
        crm.hits() >= 2 && dlq_list(&dir, &api).is_empty()
    });
    let keys = crm.keys();
    assert_eq!(keys, [key.clone(), key]);

    // Nothing left to replay by id: exit 1.
    let o = run(sluice().args(["dlq", "replay", "1"]).arg(&dir).args(api));
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn dead_webhook_replayed_on_the_store_then_delivered_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shop");
    let store = tmp.path().join("store");
    let store_arg = store.display().to_string();
    let port = free_port();
    let crm = Crm::start(400);
    shop(&dir, port, crm.port());
    let mut server = start(&dir, &store, port);
    order(tmp.path(), &server.base_url(), 1);
    eventually("the refused delivery", || crm.hits() >= 1);
    // Locked store: the list goes through the API (the Project's address).
    eventually("a dead letter", || {
        dlq_list(&dir, &["--store", &store_arg, "--token", ADMIN])
            .iter()
            .any(|l| l["channel"] == "webhook")
    });
    server.stop(Duration::from_secs(30));

    let letters = dlq_list(&dir, &["--store", &store_arg]);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let id = letters[0]["id"].as_u64().expect("id");
    crm.answer(200);
    let o = run(sluice()
        .args(["dlq", "replay", &id.to_string()])
        .arg(&dir)
        .args(["--store", &store_arg]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "replayed 1");
    assert!(stderr(&o).contains("when it next starts"), "{}", stderr(&o));
    // Re-queued, not delivered: still listed until a run delivers it.
    assert_eq!(crm.hits(), 1);

    let server = start(&dir, &store, port);
    eventually("the delivery at start", || crm.hits() >= 2);
    let url = server.base_url();
    eventually("an empty queue", || {
        dlq_list(&dir, &["--server", &url, "--token", ADMIN]).is_empty()
    });
}
