//! `GET /metrics` and the logs of `sluice run`, end to end through the real
//! binary (RUN.md §6, docs/metrics.md).
//!
//! A known workload (identify and track events through `/v1/events`,
//! Segment's `/v1/track` and `/v1/batch`, bad lines, a duplicate, webhooks
//! that succeed, fail transiently and fail for good) runs against
//! `tests/fixtures/metrics/workload`; `/metrics` is then scraped in both
//! formats and parsed by the reference parsers of Python's
//! `prometheus_client` (OpenMetrics and text 0.0.4; installed by
//! `.ci/install/metrics.sh`), and every counter and gauge is compared with
//! the value the workload implies. The logs of the whole run, in text and
//! in JSON, must hold no token, no address, no subject and no body; every
//! metric the example Grafana dashboard queries must exist.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::events::{identify, now_ts, track};
use support::fixture::workspace as root;
use support::http::{request as http, Response as Resp};
use support::receiver::{Receiver, Reply};
use support::server::SluiceRun;

const INGEST: &str = "ingest-token-METRICS-4f9a";
const ADMIN: &str = "admin-token-METRICS-b7c1";
/// Users with an address, users without one.
const WITH_EMAIL: [&str; 8] = ["e00", "e01", "e02", "e03", "e04", "e05", "e06", "e07"];
const WITHOUT_EMAIL: [&str; 2] = ["n00", "n01"];

fn email(user: &str) -> String {
    format!("{user}.buyer@shop-metrics.example")
}

// ------------------------------------------------------ webhook receiver

/// Answers webhooks by the body's `outcome`: `ok` 200, `flaky` 500, `bad`
/// 400. Counts what it got.
fn receiver() -> Receiver {
    Receiver::start(|request, _| {
        let outcome = request
            .json()
            .and_then(|v| v["outcome"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Reply::status(match outcome.as_str() {
            "ok" => 200,
            "bad" => 400,
            _ => 500,
        })
    })
}

// ---------------------------------------------------------- sluice run

/// `sluice run` on a fresh copy of `tests/fixtures/metrics/workload`,
/// logging everything (debug included) in `log_format`.
struct Service {
    run: SluiceRun,
    _root: tempfile::TempDir,
}

impl Service {
    /// Starts `sluice run` on a fresh copy of the fixture and waits until
    /// `/readyz` answers 200.
    fn start(hook: u16, log_format: &str) -> Service {
        let (root, repo) =
            support::fixture::temp_copy("metrics/workload", &[("__HOOK__", hook.to_string())]);
        let run = SluiceRun::new(&repo)
            .args(&["--drain", "5", "--log-format", log_format])
            .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
            // Everything sluice logs, debug included.
            .env("SLUICE_LOG", "debug")
            .env_remove("RUST_LOG")
            .env_remove("SLUICE_LOG_FORMAT")
            .start();
        Service { run, _root: root }
    }

    /// Starts the process again on the same repository and store (another
    /// port); its log follows the earlier ones in [`Service::logs`].
    fn spawn(&mut self) {
        self.run.restart();
    }

    fn port(&self) -> u16 {
        self.run.port()
    }

    /// Everything every start logged.
    fn logs(&self) -> String {
        self.run.logs()
    }

    /// SIGTERM and wait (the logs are complete afterwards).
    fn stop(&mut self) {
        self.run.stop(Duration::from_secs(15));
    }

    fn post(&self, path: &str, lines: &[Value]) -> Resp {
        let body: String = lines.iter().map(|e| format!("{e}\n")).collect();
        self.post_raw(path, body.as_bytes())
    }

    fn post_raw(&self, path: &str, body: &[u8]) -> Resp {
        self.run.request_with(
            "POST",
            path,
            Some(INGEST),
            &[("Content-Type", "application/json")],
            body,
        )
    }

    fn scrape(&self, accept: Option<&str>) -> Resp {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let r = http(self.port(), "GET", "/metrics", &headers, b"");
        assert_eq!(r.status, 200, "{}", r.text);
        r
    }
}

// ------------------------------------------------------------- workload

fn held_out(user: &str) -> bool {
    // The fixture's `holdout: 20%`, in basis points.
    engine::hash::is_held_out("welcome", user, 2_000)
}

/// Runs the workload; returns what every metric must then say.
fn workload(s: &Service) -> BTreeMap<String, f64> {
    // 1. Sign-ups: an address for WITH_EMAIL, none for WITHOUT_EMAIL.
    let mut first = Vec::new();
    for u in WITH_EMAIL {
        first.push(identify(
            u,
            &format!("{u}-id"),
            json!({"email": email(u), "first_name": "Ana"}),
        ));
        first.push(track(u, &format!("{u}-up"), "signed_up", json!({})));
    }
    for u in WITHOUT_EMAIL {
        first.push(identify(u, &format!("{u}-id"), json!({"first_name": "Bo"})));
        first.push(track(u, &format!("{u}-up"), "signed_up", json!({})));
    }
    let r = s.post("/v1/events", &first);
    assert_eq!(r.status, 202, "{}", r.text);
    // 2. Signed up again (live), carts (one without a total).
    let mut second = Vec::new();
    for u in WITH_EMAIL {
        second.push(track(u, &format!("{u}-up2"), "signed_up", json!({})));
    }
    for u in &WITH_EMAIL[..4] {
        second.push(track(
            u,
            &format!("{u}-cart"),
            "cart_updated",
            json!({"cart_id": format!("c-{u}"), "cart_total": 30}),
        ));
    }
    second.push(track(
        "e04",
        "e04-cart",
        "cart_updated",
        json!({"cart_id": "c-e04"}),
    ));
    let r = s.post("/v1/events", &second);
    assert_eq!(r.status, 202, "{}", r.text);
    // 3. The same carts again (dedupe), views (deferred by the cap),
    //    orders (webhooks: ok, flaky, bad).
    let mut third = Vec::new();
    for u in &WITH_EMAIL[..4] {
        third.push(track(
            u,
            &format!("{u}-cart2"),
            "cart_updated",
            json!({"cart_id": format!("c-{u}"), "cart_total": 31}),
        ));
    }
    for u in &WITH_EMAIL[..3] {
        third.push(track(u, &format!("{u}-view"), "product_viewed", json!({})));
    }
    for (u, outcome) in [("e05", "ok"), ("e06", "flaky"), ("e07", "bad")] {
        third.push(track(
            u,
            &format!("{u}-order"),
            "order_completed",
            json!({"outcome": outcome}),
        ));
    }
    let r = s.post("/v1/events", &third);
    assert_eq!(r.status, 202, "{}", r.text);
    // 4. A second order (reentry) and a duplicate.
    let fourth = vec![
        track(
            "e05",
            "e05-order2",
            "order_completed",
            json!({"outcome": "ok"}),
        ),
        identify(
            "e00",
            "e00-id",
            json!({"email": email("e00"), "first_name": "Ana"}),
        ),
    ];
    let r = s.post("/v1/events", &fourth);
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        serde_json::from_str::<Value>(&r.text).expect("json"),
        json!({"accepted": 1, "duplicates": 1})
    );
    // 5. Two bad lines beside a good one.
    let body = format!(
        "{}\n{}\nnot json at all\n",
        track("e01", "e01-page", "page_viewed", json!({})),
        json!({"type": "track", "id": "no-user", "event": "x", "ts": now_ts()}),
    );
    let r = s.post_raw("/v1/events", body.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text);
    // 6. Segment's API: one track call, a batch of two.
    let call = json!({"userId": "e02", "event": "page_viewed", "messageId": "seg-1", "timestamp": now_ts()});
    let r = s.post("/v1/track", &[call]);
    assert_eq!(r.status, 200, "{}", r.text);
    let batch = json!({"batch": [
        {"type": "identify", "userId": "e03", "traits": {"plan": "pro"}, "messageId": "seg-2", "timestamp": now_ts()},
        {"type": "track", "userId": "e03", "event": "page_viewed", "messageId": "seg-3", "timestamp": now_ts()},
    ]});
    let r = s.post_raw("/v1/batch", batch.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.text);
    // 7. Requests whose path or query must not reach the logs.
    let admin = format!("Bearer {ADMIN}");
    let r = http(
        s.port(),
        "GET",
        "/v1/users/e00",
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = http(
        s.port(),
        "GET",
        "/v1/unsubscribe/SECRET-LINK-TOKEN-9d2e",
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    let r = http(
        s.port(),
        "GET",
        "/metrics?token=QUERY-SECRET-51ab",
        &[],
        b"",
    );
    assert_eq!(r.status, 200);

    // What that must make the metrics say.
    let all: Vec<&str> = WITH_EMAIL.iter().chain(&WITHOUT_EMAIL).copied().collect();
    let holdout = all.iter().filter(|u| held_out(u)).count() as f64;
    let mailed = WITH_EMAIL.iter().filter(|u| !held_out(u)).count() as f64;
    let unreachable = WITHOUT_EMAIL.iter().filter(|u| !held_out(u)).count() as f64;
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: f64| {
        m.insert(k.to_owned(), v);
    };
    put(
        "sluice_events_ingested_total{source=events}",
        20.0 + 13.0 + 10.0 + 1.0 + 1.0,
    );
    put("sluice_events_ingested_total{source=track}", 1.0);
    put("sluice_events_ingested_total{source=batch}", 2.0);
    put("sluice_events_ingested_total{source=identify}", 0.0);
    put("sluice_events_ingested_total{source=segment}", 0.0);
    put("sluice_events_duplicate_total{source=events}", 1.0);
    put("sluice_events_rejected_total{}", 2.0);
    put(
        "sluice_entries_total{journey=welcome,outcome=entered}",
        all.len() as f64 - holdout,
    );
    put(
        "sluice_entries_total{journey=welcome,outcome=holdout}",
        holdout,
    );
    put("sluice_entries_total{journey=welcome,outcome=live}", 8.0);
    put("sluice_entries_total{journey=welcome,outcome=dedupe}", 0.0);
    put("sluice_entries_total{journey=welcome,outcome=reentry}", 0.0);
    put("sluice_entries_total{journey=cart,outcome=entered}", 5.0);
    put("sluice_entries_total{journey=cart,outcome=dedupe}", 4.0);
    put("sluice_entries_total{journey=cart,outcome=live}", 0.0);
    put("sluice_entries_total{journey=browse,outcome=entered}", 3.0);
    put("sluice_entries_total{journey=order,outcome=entered}", 3.0);
    put("sluice_entries_total{journey=order,outcome=reentry}", 1.0);
    put("sluice_entries_total{journey=order,outcome=holdout}", 0.0);
    put(
        "sluice_sends_total{channel=email,journey=welcome,outcome=sent}",
        mailed,
    );
    put(
        "sluice_sends_total{channel=email,journey=welcome,outcome=suppressed}",
        unreachable,
    );
    put(
        "sluice_sends_total{channel=email,journey=welcome,outcome=deferred}",
        0.0,
    );
    put(
        "sluice_sends_total{channel=email,journey=welcome,outcome=failed}",
        0.0,
    );
    put(
        "sluice_sends_total{channel=email,journey=cart,outcome=sent}",
        4.0,
    );
    put(
        "sluice_sends_total{channel=email,journey=cart,outcome=failed}",
        1.0,
    );
    put(
        "sluice_sends_total{channel=email,journey=browse,outcome=deferred}",
        3.0,
    );
    put(
        "sluice_sends_total{channel=email,journey=browse,outcome=sent}",
        0.0,
    );
    put(
        "sluice_sends_total{channel=webhook,journey=order,outcome=sent}",
        3.0,
    );
    put(
        "sluice_sends_total{channel=webhook,journey=order,outcome=failed}",
        2.0,
    );
    put(
        "sluice_deliveries_total{channel=email,result=ok}",
        mailed + 4.0,
    );
    put("sluice_deliveries_total{channel=email,result=retry}", 0.0);
    put("sluice_deliveries_total{channel=email,result=dead}", 0.0);
    put("sluice_deliveries_total{channel=webhook,result=ok}", 1.0);
    put("sluice_deliveries_total{channel=webhook,result=retry}", 1.0);
    put("sluice_deliveries_total{channel=webhook,result=dead}", 2.0);
    put("sluice_deliveries_total{channel=push,result=ok}", 0.0);
    put("sluice_outbox_depth{channel=email}", 0.0);
    put("sluice_outbox_depth{channel=push}", 0.0);
    put("sluice_outbox_depth{channel=webhook}", 0.0);
    // A week's wait per welcome instance, a deferred send per view.
    put("sluice_timers_pending{}", all.len() as f64 + 3.0);
    // A render failure, two dead webhooks.
    put("sluice_dead_letters{}", 3.0);
    // Attempts: email once each; webhooks ok 1, flaky 2, bad 1.
    put(
        "sluice_delivery_duration_seconds_count{channel=email}",
        mailed + 4.0,
    );
    put(
        "sluice_delivery_duration_seconds_count{channel=webhook}",
        4.0,
    );
    put("sluice_delivery_duration_seconds_count{channel=push}", 0.0);
    // Timers fired: a send timer per treatment entry of welcome, cart,
    // browse and order, and the flaky webhook's retry.
    put(
        "sluice_timer_lag_seconds_count{}",
        (all.len() as f64 - holdout) + 5.0 + 3.0 + 3.0 + 1.0,
    );
    put("sluice_writer_state{state=ready}", 1.0);
    put("sluice_writer_state{state=failed}", 0.0);
    put("sluice_deliveries_in_flight{}", 0.0);
    put(
        "sluice_http_requests_total{method=POST,route=/v1/events,status=202}",
        4.0,
    );
    put(
        "sluice_http_requests_total{method=POST,route=/v1/events,status=400}",
        1.0,
    );
    m
}

// ----------------------------------------------------------- parsing

/// One sample as `name{k=v,…}` (labels sorted, values unquoted) → value.
type Samples = BTreeMap<String, f64>;

const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as text
parse = openmetrics if sys.argv[1] == "openmetrics" else text
out = []
for family in parse(sys.stdin.read()):
    for s in family.samples:
        labels = dict(s.labels)
        if "le" in labels:
            labels["le"] = repr(float(labels["le"]))
        out.append([s.name, labels, s.value, family.type])
print(json.dumps(out))
"#;

/// A Python with the reference parsers: `python3`, else Debian's.
fn python() -> &'static str {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args([
                "-c",
                "import prometheus_client.openmetrics.parser, prometheus_client.parser",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py;
        }
    }
    panic!(
        "this test parses /metrics with Python's prometheus_client: run .ci/install/metrics.sh \
         (apt-get install python3-prometheus-client)"
    );
}

/// Parses an exposition with the reference parser for `format`
/// (`openmetrics` or `text`); panics with the parser's message if it is
/// not valid.
fn parse(text: &str, format: &str) -> (Samples, BTreeMap<String, String>) {
    let mut child = Command::new(python())
        .args(["-c", PARSE, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "the {format} parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, BTreeMap<String, String>, f64, String)> =
        serde_json::from_slice(&out.stdout).expect("parser output");
    let mut samples = Samples::new();
    let mut types = BTreeMap::new();
    for (name, labels, value, kind) in rows {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let key = format!("{name}{{{}}}", labels.join(","));
        assert!(
            samples.insert(key.clone(), value).is_none(),
            "{key} twice in {format}"
        );
        types.insert(name, kind);
    }
    (samples, types)
}

/// A sample's value in the Prometheus text format, found by its line (for
/// polling without a parser).
fn quick(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix) && l[line_prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until every delivery the workload implies is recorded.
fn settle(s: &Service, expected: &Samples) {
    let want = |k: &str| expected.get(k).copied().expect(k);
    let email_ok = want("sluice_deliveries_total{channel=email,result=ok}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = s.scrape(None).text;
        let done = quick(
            &t,
            "sluice_deliveries_total{channel=\"webhook\",result=\"dead\"}",
        ) == Some(2.0)
            && quick(
                &t,
                "sluice_deliveries_total{channel=\"webhook\",result=\"ok\"}",
            ) == Some(1.0)
            && quick(
                &t,
                "sluice_deliveries_total{channel=\"email\",result=\"ok\"}",
            ) == Some(email_ok);
        if done {
            // One more round for the gauges of the last commit.
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        assert!(Instant::now() < deadline, "deliveries never settled:\n{t}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check(samples: &Samples, expected: &Samples, format: &str) {
    let mut wrong = Vec::new();
    for (k, v) in expected {
        match samples.get(k) {
            Some(got) if got == v => {}
            got => wrong.push(format!("{k}: expected {v}, got {got:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{format}: {} wrong:\n{}\nall samples:\n{samples:#?}",
        wrong.len(),
        wrong.join("\n")
    );
    // No per-user label anywhere.
    for k in samples.keys() {
        for u in WITH_EMAIL.iter().chain(&WITHOUT_EMAIL) {
            assert!(!k.contains(&format!("={u}")), "a user in a label: {k}");
        }
        assert!(!k.contains('@'), "an address in a label: {k}");
    }
}

/// Runs the workload on a fresh service with logs in `format`, checks the
/// metrics in both expositions, stops the service; returns the samples and
/// the whole log.
fn full_run(log_format: &str) -> (Samples, String) {
    let receiver = receiver();
    let mut s = Service::start(receiver.port, log_format);
    let expected = workload(&s);
    settle(&s, &expected);

    let om = s.scrape(Some(
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    ));
    let content_type = |r: &Resp| r.header("content-type").unwrap_or("").to_ascii_lowercase();
    assert!(
        content_type(&om).starts_with("application/openmetrics-text; version=1.0.0"),
        "{:?}",
        om.headers
    );
    let plain = s.scrape(None);
    assert!(
        content_type(&plain).starts_with("text/plain; version=0.0.4"),
        "{:?}",
        plain.headers
    );
    let (om_samples, om_types) = parse(&om.text, "openmetrics");
    let (text_samples, text_types) = parse(&plain.text, "text");
    check(&om_samples, &expected, "openmetrics");
    check(&text_samples, &expected, "text 0.0.4");
    for (name, kind) in [
        ("sluice_events_ingested_total", "counter"),
        ("sluice_timer_lag_seconds_bucket", "histogram"),
        ("sluice_outbox_depth", "gauge"),
    ] {
        assert_eq!(om_types.get(name).map(String::as_str), Some(kind), "{name}");
        assert_eq!(
            text_types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    // The same numbers in both formats (the info metric aside, typed
    // differently).
    let strip = |m: &Samples| -> Samples {
        m.iter()
            .filter(|(k, _)| {
                !k.starts_with("sluice_build_info")
                    && !k.starts_with("sluice_http_requests_total{method=GET,route=/metrics")
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    assert_eq!(strip(&om_samples), strip(&text_samples));
    assert!(receiver.count() >= 4);
    s.stop();

    // Restarted on the same store: the gauges come from the start-up count
    // (the same numbers), the counters start again from zero.
    s.spawn();
    let (again, _) = parse(&s.scrape(None).text, "text");
    for k in [
        "sluice_timers_pending{}",
        "sluice_dead_letters{}",
        "sluice_outbox_depth{channel=email}",
        "sluice_outbox_depth{channel=webhook}",
    ] {
        assert_eq!(again.get(k), expected.get(k), "{k} after a restart");
    }
    assert_eq!(
        again.get("sluice_events_ingested_total{source=events}"),
        Some(&0.0)
    );
    s.stop();
    (om_samples, s.logs())
}

/// What must never appear in a log: the tokens, every address, subjects,
/// bodies, a token in a path, a query string.
fn secrets() -> Vec<String> {
    let mut out: Vec<String> = vec![
        INGEST.into(),
        ADMIN.into(),
        "SUBJECT-MARKER".into(),
        "BODY-MARKER".into(),
        "SECRET-LINK-TOKEN".into(),
        "QUERY-SECRET".into(),
        "shop-metrics.example".into(),
    ];
    out.extend(WITH_EMAIL.iter().map(|u| email(u)));
    out
}

fn assert_clean(logs: &str, format: &str) {
    for s in secrets() {
        let hits: Vec<&str> = logs.lines().filter(|l| l.contains(&s)).take(3).collect();
        assert!(
            hits.is_empty(),
            "{format} logs hold `{s}`:\n{}",
            hits.join("\n")
        );
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn metrics_count_a_known_workload_exactly_and_text_logs_keep_secrets() {
    let (samples, logs) = full_run("text");
    assert_clean(&logs, "text");
    // The logs say what happened: a span per request and per delivery.
    assert!(logs.contains("http{method=POST route=/v1/events"), "{logs}");
    assert!(logs.contains("route=/v1/users/{id}"), "{logs}");
    assert!(
        logs.contains("deliver{channel=webhook journey=order"),
        "{logs}"
    );
    assert!(logs.contains("delivery failed"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "colours in a log file");

    // Every metric the example dashboard queries exists.
    let dashboard = root().join("examples/grafana/sluice-dashboard.json");
    let board: Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).expect("dashboard"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&board, &mut exprs);
    assert!(exprs.len() >= 9, "{exprs:?}");
    let names: BTreeSet<String> = samples
        .keys()
        .map(|k| k.split('{').next().unwrap_or("").to_owned())
        .collect();
    let mut used = BTreeSet::new();
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("sluice_") {
                used.insert(word.to_owned());
                assert!(
                    names.contains(word),
                    "the dashboard queries {word}, which /metrics does not have ({e})"
                );
            }
        }
    }
    for needed in [
        "sluice_events_ingested_total",
        "sluice_events_rejected_total",
        "sluice_entries_total",
        "sluice_sends_total",
        "sluice_deliveries_total",
        "sluice_outbox_depth",
        "sluice_timer_lag_seconds_bucket",
        "sluice_delivery_duration_seconds_bucket",
        "sluice_ingest_commit_duration_seconds_bucket",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard has no panel on {needed}"
        );
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_owned());
                    }
                } else {
                    collect_exprs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn json_logs_are_json_lines_with_spans_and_keep_secrets() {
    let (_, logs) = full_run("json");
    assert_clean(&logs, "json");
    let mut requests = 0;
    let mut deliveries = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        let span = &v["span"];
        if span["name"] == "http" && v["fields"]["message"] == "answered" {
            assert!(
                span["route"].is_string() && span["method"].is_string(),
                "{line}"
            );
            assert!(
                span["status"].is_number() || span["status"].is_string(),
                "{line}"
            );
            requests += 1;
        }
        if span["name"] == "deliver" {
            assert!(
                span["key"].is_string() && span["channel"].is_string(),
                "{line}"
            );
            deliveries += 1;
        }
    }
    assert!(requests >= 8, "{requests} request lines:\n{logs}");
    assert!(deliveries >= 4, "{deliveries} delivery lines:\n{logs}");
}
