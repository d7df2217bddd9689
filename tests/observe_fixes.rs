//! Defects an observability audit found in what the on-call engineer reads
//! (RUN.md §2, §5, §6), each driven through the real binary:
//!
//! - a dead letter replayed successfully reads `sent` in `inspect` and in
//!   the console's timeline, via the API and store-direct, while report and
//!   metrics counts stay as documented (docs/report.md, docs/metrics.md);
//! - log lines never carry a webhook receiver's answer (which may echo our
//!   message body), text and JSON, at debug; the dead letter keeps its
//!   bounded excerpt;
//! - with `--log-format json` a fatal start-up error is one JSON log line;
//! - `POST /v1/events` and `send-events` say the line and the column of a
//!   bad line, whatever the batching.

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use support::cli::{output, sluice, stderr, stdout};
use support::events::{identify, track};
use support::http::try_request;
use support::receiver::{Receiver, Reply};
use support::server::{sample, SluiceRun};
use support::wait::until;

const INGEST: &str = "ingest-token-FIXOBSERVE-5e1a";
const ADMIN: &str = "admin-token-FIXOBSERVE-0b7c";
/// In every webhook body the fixture's `order-hook` template renders.
const BODY_MARKER: &str = "BODY-MARKER-order";

/// Answers every webhook with 400 and the request's body (a receiver that
/// echoes what it refuses) until `accept` is set, then 200.
fn echoing_receiver(accept: Arc<AtomicBool>) -> Receiver {
    Receiver::start(move |request, _| {
        if accept.load(Ordering::SeqCst) {
            Reply::status(200)
        } else {
            Reply {
                status: 400,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: String::from_utf8_lossy(&request.body).into_owned(),
            }
        }
    })
}

/// The metrics workload fixture, its webhooks going to `hook`.
fn repo(hook: &Receiver) -> (tempfile::TempDir, std::path::PathBuf) {
    support::fixture::temp_copy("metrics/workload", &[("__HOOK__", hook.port.to_string())])
}

/// `sluice run` on `repo` with the tokens and `--log-format FORMAT`, not
/// started yet.
fn service(repo: &std::path::Path, format: &str) -> SluiceRun {
    SluiceRun::new(repo)
        .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
        .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
        .args(&["--log-format", format])
}

fn start(repo: &std::path::Path, format: &str) -> SluiceRun {
    service(repo, format).env("SLUICE_LOG", "debug").start()
}

/// `sluice ARGS… --server URL --token ADMIN`, required to succeed: stdout.
fn admin(run: &SluiceRun, args: &[&str]) -> String {
    let url = run.base_url();
    let o = output(
        sluice()
            .args(args)
            .args(["--server", url.as_str(), "--token", ADMIN]),
    );
    assert!(
        o.status.success(),
        "sluice {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn inspect(run: &SluiceRun, user: &str) -> Value {
    let repo = support::fixture::utf8(run.repo()).to_owned();
    let text = admin(run, &["inspect", "user", user, &repo, "--format", "json"]);
    serde_json::from_str(&text).expect("inspect's JSON")
}

fn order_messages(view: &Value) -> Vec<Value> {
    view["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["journey"] == "order")
        .cloned()
        .collect()
}

fn dead_letters(run: &SluiceRun) -> Vec<Value> {
    let repo = support::fixture::utf8(run.repo()).to_owned();
    let text = admin(run, &["dlq", "list", &repo, "--format", "json"]);
    serde_json::from_str::<Value>(&text)
        .expect("dlq list's JSON")
        .as_array()
        .expect("an array")
        .clone()
}

/// An order whose webhook the echoing receiver refuses: a dead letter.
fn failed_order(run: &SluiceRun, user: &str) {
    let r = run.post_events(
        INGEST,
        &[
            identify(
                user,
                &format!("id-{user}"),
                json!({"email": format!("{user}@observe.example")}),
            ),
            track(
                user,
                &format!("ord-{user}"),
                "order_completed",
                json!({"outcome": "bad"}),
            ),
        ],
    );
    assert_eq!(r.status, 202, "{}", r.text);
    until(
        Duration::from_secs(15),
        Duration::from_millis(100),
        "the refused webhook in the dead-letter queue",
        || dead_letters(run).iter().any(|l| l["user"] == user),
    );
}

/// A replayed message that was delivered reads `sent`, with the earlier
/// failure in its reason.
fn assert_replayed_sent(run: &SluiceRun, user: &str) {
    until(
        Duration::from_secs(15),
        Duration::from_millis(100),
        "inspect to read the replayed message as sent",
        || {
            order_messages(&inspect(run, user))
                .first()
                .map(|m| m["outcome"].clone())
                == Some(json!("sent"))
        },
    );
    let messages = order_messages(&inspect(run, user));
    assert_eq!(messages.len(), 1, "one line per key: {messages:?}");
    let reason = messages[0]["reason"].as_str().expect("a reason");
    assert!(
        reason.starts_with("replayed; failed before: delivery:HTTP 400"),
        "{reason}"
    );
    assert!(
        !dead_letters(run).iter().any(|l| l["user"] == user),
        "the delivered letter left the queue"
    );
}

/// RUN.md §4/§5: after `sluice dlq replay` delivers a dead letter, `inspect`
/// (and the console's timeline) read `sent` — via the API, and after a
/// store-direct replay picked up by the next `run`. The report and
/// `sluice_sends_total` keep counting decisions: one `sent`, one `failed`
/// per message, not moved by the replay (docs/report.md); the delivery
/// counts in `sluice_deliveries_total{result="ok"}`.
#[test]
fn a_replayed_dead_letter_that_is_delivered_reads_sent() {
    let accept = Arc::new(AtomicBool::new(false));
    let hook = echoing_receiver(Arc::clone(&accept));
    let (_root, repo) = repo(&hook);
    let repo_arg = support::fixture::utf8(&repo).to_owned();
    let mut run = start(&repo, "json");

    failed_order(&run, "u1");
    let before = order_messages(&inspect(&run, "u1"));
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["outcome"], "failed");

    // Replayed through the API.
    accept.store(true, Ordering::SeqCst);
    let replayed = admin(&run, &["dlq", "replay", "--all", &repo_arg]);
    assert!(replayed.contains("replayed 1"), "{replayed}");
    assert_replayed_sent(&run, "u1");

    // The console's timeline says the same.
    let login = format!("token={ADMIN}&next=%2F");
    let r = try_request(
        run.port(),
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        login.as_bytes(),
    )
    .expect("login");
    assert_eq!(r.status, 303, "{}", r.text);
    let cookie = r.header("set-cookie").expect("a session cookie").to_owned();
    let session = cookie.split(';').next().expect("pair").to_owned();
    let page = try_request(
        run.port(),
        "GET",
        "/users?id=u1",
        &[("Cookie", &session)],
        b"",
    )
    .expect("the timeline");
    assert_eq!(page.status, 200);
    assert!(
        page.text
            .contains("webhook sent: replayed; failed before: delivery:HTTP 400"),
        "{}",
        page.text
    );
    assert!(!page.text.contains("outcome-failed"), "{}", page.text);

    let metrics = run.metrics();
    let sends = |outcome: &str| {
        sample(
            &metrics,
            &format!(
                r#"sluice_sends_total{{journey="order",channel="webhook",outcome="{outcome}"}}"#
            ),
        )
    };
    assert_eq!(sends("sent"), Some(1.0), "{metrics}");
    assert_eq!(sends("failed"), Some(1.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            r#"sluice_deliveries_total{channel="webhook",result="ok"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"sluice_deliveries_total{channel="webhook",result="dead"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    let report = |run: &SluiceRun| -> Value {
        let text = admin(run, &["report", "order", &repo_arg, "--format", "json"]);
        let all: Value = serde_json::from_str(&text).expect("report's JSON");
        all[0]["sends"].clone()
    };
    assert_eq!(
        report(&run),
        json!({"sent": 1, "deferred": 0, "suppressed": 0, "failed": 1})
    );

    // Store-direct: the letter re-queued in the store while `run` is down
    // is delivered when it starts again.
    accept.store(false, Ordering::SeqCst);
    failed_order(&run, "u2");
    run.stop(Duration::from_secs(15));
    accept.store(true, Ordering::SeqCst);
    let o = output(sluice().args(["dlq", "replay", "--all", &repo_arg]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("replayed 1"), "{}", stdout(&o));
    run.restart();
    assert_replayed_sent(&run, "u2");
    assert_replayed_sent(&run, "u1");
    assert_eq!(
        report(&run),
        json!({"sent": 2, "deferred": 0, "suppressed": 0, "failed": 2}),
        "decisions, not moved by replays, also after a restart"
    );
    assert!(hook.requests().iter().filter(|r| r.status == 200).count() >= 2);
}

/// RUN.md §6: logs never carry a message body. A receiver that echoes the
/// request answers with our body; at debug level, in text and in JSON,
/// no log line quotes it (the `delivery failed` line says the status),
/// while the dead letter keeps its bounded excerpt.
#[test]
fn logs_never_quote_a_receivers_answer() {
    for format in ["text", "json"] {
        let accept = Arc::new(AtomicBool::new(false));
        let hook = echoing_receiver(Arc::clone(&accept));
        let (_root, repo) = repo(&hook);
        let run = start(&repo, format);
        failed_order(&run, "u1");
        assert!(
            hook.requests()
                .iter()
                .any(|r| String::from_utf8_lossy(&r.body).contains(BODY_MARKER)),
            "the receiver got the body"
        );
        let letters = dead_letters(&run);
        let reason = letters[0]["reason"].as_str().expect("a reason");
        assert!(
            reason.starts_with("delivery:HTTP 400 Bad Request: ") && reason.contains(BODY_MARKER),
            "the dead letter keeps the excerpt: {reason}"
        );
        let logs = run.logs();
        assert!(
            logs.contains("delivery failed") && logs.contains("HTTP 400 Bad Request"),
            "{format}: the failure is logged with its status:\n{logs}"
        );
        assert!(
            logs.contains("decision"),
            "{format}: debug decision lines are on:\n{logs}"
        );
        assert!(
            !logs.contains(BODY_MARKER),
            "{format}: a log line quotes the receiver's answer:\n{logs}"
        );
        if format == "json" {
            for line in logs.lines().filter(|l| !l.trim().is_empty()) {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            }
        }
    }
}

/// Every non-empty stderr line of a `--log-format json` start that failed
/// is JSON; the error is one `ERROR` line whose message contains `says`.
fn assert_one_json_error(status: std::process::ExitStatus, logs: &str, says: &str) {
    assert_eq!(status.code(), Some(1), "{logs}");
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{logs}")))
        .collect();
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{logs}");
    let message = errors[0]["fields"]["message"].as_str().expect("a message");
    assert!(message.contains(says), "{message}");
}

/// With `--log-format json`, a fatal start-up error (store in use, port
/// taken, invalid config) is one JSON log line on stderr, exit 1; with
/// text logs it stays miette's rendering.
#[test]
fn a_fatal_start_up_error_is_a_json_line_with_json_logs() {
    let hook = Receiver::ok();
    let (_root, repo) = repo(&hook);
    let first = start(&repo, "json");

    // The store in use by `first`.
    let (status, logs) = service(&repo, "json").run_to_exit(Duration::from_secs(20));
    assert_one_json_error(status, &logs, "in use");

    // The port taken (by `first`), on another store.
    let other = tempfile::tempdir().expect("tmp");
    let (status, logs) = service(&repo, "json")
        .store(&other.path().join("store"))
        .listen_on(first.port())
        .run_to_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{logs}");
    assert_one_json_error(status, &logs, &first.port().to_string());
    drop(first);

    // An invalid config: each error with its file and position.
    std::fs::write(
        repo.join("journeys/broken.yaml"),
        "apiVersion: sluice/v1\nkind: Journey\nid: broken\nversion: 1\nentry: { event: x }\nsteps:\n  - id: s\n    send: { channel: email, template: nowhere }\n",
    )
    .expect("write");
    let (status, logs) = service(&repo, "json").run_to_exit(Duration::from_secs(20));
    assert_one_json_error(status, &logs, "journeys/broken.yaml:8:");
    assert!(logs.contains("is invalid: 1 error"), "{logs}");

    // Text logs: miette's rendering, not JSON.
    let (status, logs) = service(&repo, "text").run_to_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(logs.contains("is invalid: 1 error"), "{logs}");
    assert!(
        !logs.lines().any(|l| l.trim_start().starts_with('{')),
        "{logs}"
    );
}

/// RUN.md §2: per-line 400s with line numbers. The message says the
/// body's line and the column within it (serde alone says `line 1` of
/// every line), and `send-events` says the file's line and the same
/// column whatever `--batch` groups the lines into.
#[test]
fn a_bad_line_is_placed_by_its_line_and_column_whatever_the_batching() {
    let hook = Receiver::ok();
    let (_root, repo) = repo(&hook);
    let run = start(&repo, "text");

    let good = |n: u32| identify(&format!("g{n}"), &format!("good-{n}"), json!({}));
    // No `ts`: serde's "missing field" error comes at the object's end.
    let bad = r#"{"type":"track","user":"b1","id":"bad-1","event":"order_completed"}"#;
    let column = bad.chars().count();
    let body = format!("{}\n{}\n{bad}\n", good(1), good(2));
    let r = run.request("POST", "/v1/events", Some(INGEST), body.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text);
    let errors = r.json()["errors"].clone();
    assert_eq!(
        errors,
        json!([{"line": 3, "message": format!("invalid event: missing field `ts` at line 3 column {column}")}])
    );

    let file = repo.join("events.jsonl");
    let lines = [
        good(3).to_string(),
        good(4).to_string(),
        bad.replace("bad-1", "bad-2"),
        good(5).to_string(),
        String::new(),
        bad.replace("bad-1", "bad-3"),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    let file_arg = support::fixture::utf8(&file).to_owned();
    let url = run.base_url();
    for batch in ["1", "2", "3", "500"] {
        let o = output(sluice().args([
            "send-events",
            &file_arg,
            "--server",
            &url,
            "--token",
            INGEST,
            "--batch",
            batch,
            "--format",
            "json",
        ]));
        assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
        let v: Value = serde_json::from_str(stdout(&o).trim()).expect("send-events' JSON");
        assert_eq!(
            v["rejected"],
            json!([
                {"line": 3, "message": format!("invalid event: missing field `ts` at line 3 column {column}")},
                {"line": 6, "message": format!("invalid event: missing field `ts` at line 6 column {column}")},
            ]),
            "--batch {batch}"
        );
    }
}
