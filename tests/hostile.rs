//! Hostile and careless input through the binary (issue 13): no panic, no
//! hang, no memory blow-up, no file read outside the repository, and each
//! case a clear error at the right place. The large inputs are generated
//! here, not committed. Bounds on time are generous ceilings (they catch a
//! hang or a quadratic blow-up, not a slow machine); bounds on work are
//! counts checked exactly.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

// A panic exits with 101 and a signal (stack overflow) with none (-1).
use support::cli::sluice_out as sluice;
use support::fixture::shop;

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn write(path: &Path, text: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

const JOURNEY: &str = "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\nentry: { event: signed_up }\nsteps:\n  - id: bye\n    exit: true\n";

/// A repository with one trivial journey.
fn minimal() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("journeys/j.yaml"), JOURNEY);
    dir
}

fn validate_json(dir: &Path) -> (i32, serde_json::Value) {
    let (code, stdout, stderr) = sluice(&["validate", p(dir), "--format", "json"]);
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}{stderr}"));
    (code, doc)
}

fn codes(doc: &serde_json::Value) -> Vec<String> {
    doc["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["code"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_huge_until_is_an_error_not_a_panic() {
    let events = shop().join("events/sample.jsonl");
    for until in ["+1000000000w", "+5300w", "+99999999999999999999s"] {
        let (code, stdout, stderr) = sluice(&[
            "simulate",
            p(&shop()),
            "--events",
            p(&events),
            "--until",
            until,
        ]);
        assert_eq!(code, 1, "{until}: {stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains("too large"), "{stderr}");
    }
    let (code, _, stderr) = sluice(&[
        "simulate",
        p(&shop()),
        "--events",
        p(&events),
        "--start",
        "2026-03-10T00:00:00Z",
        "--until",
        "2026-03-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("before its start"), "{stderr}");
}

#[test]
fn every_bad_event_line_is_reported_before_anything_runs() {
    let dir = minimal();
    let events = dir.path().join("events.jsonl");
    let good = r#"{"type":"track","user":"u1","event":"signed_up","ts":"2026-03-02T09:00:00Z"}"#;
    let lines = [
        good,
        r#"{"type":"track","user":"u1","event":"signed_up","ts":"2026-03-02T09:00:00Z","props":[1]}"#,
        good,
        r#"{"type":"identify","user":"u1","ts":"2026-03-02T09:00:00Z","traits":{"x":1e400}}"#,
        r#"{"type":"track","user":"u1","event":"signed_up","ts":"2026-03-02T09:00:00Z","id":5}"#,
        r#"{"type":"track","user":"u1","event":"signed_up","ts":"1969-12-31T23:59:59Z"}"#,
    ];
    write(&events, lines.join("\n"));
    let (code, stdout, stderr) = sluice(&["simulate", p(dir.path()), "--events", p(&events)]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "nothing runs before the file is checked");
    assert!(stderr.contains("4 invalid event lines"), "{stderr}");
    for line in [2, 4, 5, 6] {
        assert!(
            stderr.contains(&format!("events.jsonl:{line}:")),
            "{line}: {stderr}"
        );
    }
    assert!(!stderr.contains("events.jsonl:3:"), "{stderr}");

    // Hundreds of bad lines: the first 100 listed, and the count.
    let many: Vec<&str> = std::iter::repeat_n("{", 250).collect();
    write(&events, many.join("\n"));
    let (code, _, stderr) = sluice(&["simulate", p(dir.path()), "--events", p(&events)]);
    assert_eq!(code, 1);
    assert!(stderr.contains("250 invalid event lines"), "{stderr}");
    assert!(stderr.contains("events.jsonl:100:"), "{stderr}");
    assert!(!stderr.contains("events.jsonl:101:"), "{stderr}");
    assert!(stderr.contains("150 more"), "{stderr}");
}

#[test]
fn bom_and_any_line_ending_read_the_same() {
    let dir = minimal();
    let events = dir.path().join("events.jsonl");
    let a = r#"{"type":"track","user":"u1","event":"signed_up","ts":"2026-03-02T09:00:00Z"}"#;
    let b = r#"{"type":"track","user":"u2","event":"signed_up","ts":"2026-03-02T09:01:00Z"}"#;
    let mut outputs = Vec::new();
    for text in [
        format!("{a}\n{b}\n"),
        format!("\u{feff}{a}\r\n{b}\r\n"),
        format!("{a}\r{b}\r"),
        format!("\u{feff}{a}\r\r\n{b}"),
    ] {
        write(&events, &text);
        let (code, stdout, stderr) = sluice(&["simulate", p(dir.path()), "--events", p(&events)]);
        assert_eq!(code, 0, "{text:?}: {stderr}");
        outputs.push(stdout);
    }
    assert_eq!(outputs[0].lines().count(), 4, "{}", outputs[0]);
    assert!(outputs.iter().all(|o| *o == outputs[0]), "{outputs:?}");

    // A bad line after CR-only line endings is reported at its own line.
    write(&events, format!("{a}\r{b}\r{{\"type\":\"nope\"}}\r"));
    let (code, _, stderr) = sluice(&["simulate", p(dir.path()), "--events", p(&events)]);
    assert_eq!(code, 1);
    assert!(stderr.contains("events.jsonl:3:"), "{stderr}");
}

#[test]
fn timestamps_stay_in_rfc3339_range() {
    let dir = minimal();
    let events = dir.path().join("events.jsonl");
    write(
        &events,
        r#"{"type":"track","user":"u1","event":"signed_up","ts":"9999-12-31T00:00:00Z"}"#,
    );
    let (code, stdout, stderr) = sluice(&["simulate", p(dir.path()), "--events", p(&events)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.is_empty());
    for line in stdout
        .lines()
        .chain(stderr.lines().filter(|l| l.contains('→')))
    {
        assert!(!line.contains("+10000"), "{line}");
    }
    assert!(stderr.contains("9999-12-31T23:59:59Z"), "{stderr}");
}

#[test]
fn a_test_that_produces_too_much_stops_at_its_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        &dir.path().join("journeys/j.yaml"),
        "apiVersion: sluice/v1\nkind: Journey\nid: every-second\nversion: 1\nentry: { schedule: \"* * * * * *\", reentry: always }\nsteps:\n  - id: bye\n    exit: true\n",
    );
    write(
        &dir.path().join("tests/t.yaml"),
        "apiVersion: sluice/v1\nkind: JourneyTest\nid: forever\nstart: 2026-03-02T00:00:00Z\nrun_until: +1000w\nevents:\n  - { type: identify, user: u1, ts: +0s, traits: { email: a@example.com } }\nexpect:\n  - { user: u1, kind: entered }\n",
    );
    let began = Instant::now();
    let (code, stdout, stderr) = sluice(&["test", p(dir.path()), "--format", "json"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let error = doc["tests"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("more than 100000 lines"), "{error}");
    // Stopped within a day of virtual time, not after 1000 weeks.
    assert!(began.elapsed() < Duration::from_secs(300));
}

#[cfg(unix)]
#[test]
fn body_files_stay_inside_the_repository() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = "apiVersion: sluice/v1\nkind: Template\nid: t\nchannel: email\nsubject: Hi\n";
    write(
        &dir.path().join("templates/t.yaml"),
        format!("{t}text_file: zero.txt\n"),
    );
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("templates/zero.txt")).expect("link");
    let (code, doc) = validate_json(dir.path());
    assert_eq!(code, 1);
    assert_eq!(codes(&doc), ["path_outside_repository"], "{doc}");
    assert_eq!(doc["errors"][0]["line"], 6);

    // A body file inside the repository that is too large.
    write(
        &dir.path().join("templates/t.yaml"),
        format!("{t}text_file: big.txt\n"),
    );
    write(&dir.path().join("templates/big.txt"), "x".repeat(2 << 20));
    let (_, doc) = validate_json(dir.path());
    assert_eq!(codes(&doc), ["file_too_large"], "{doc}");

    // The contents of a file outside never appear in a diagnostic.
    let outside = tempfile::tempdir().expect("tempdir");
    write(&outside.path().join("secret.txt"), "{{#if}} top secret");
    let rel = format!(
        "../../{}/secret.txt",
        outside.path().file_name().expect("name").to_string_lossy()
    );
    let inner = dir.path().join("repo");
    write(
        &inner.join("templates/t.yaml"),
        format!("{t}text_file: \"{rel}\"\n"),
    );
    let (code, stdout, stderr) = sluice(&["validate", p(&inner)]);
    assert_eq!(code, 1);
    assert!(!stdout.contains("top secret") && !stderr.contains("top secret"));
    assert!(stderr.contains("path_outside_repository"), "{stderr}");

    // Nor through a YAML file that is a link to a file outside.
    std::fs::remove_file(inner.join("templates/t.yaml")).expect("rm");
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        inner.join("templates/t.yaml"),
    )
    .expect("link");
    let (code, stdout, stderr) = sluice(&["validate", p(&inner)]);
    assert_eq!(code, 1);
    assert!(!stdout.contains("top secret") && !stderr.contains("top secret"));
    assert!(stderr.contains("path_outside_repository"), "{stderr}");

    // A FIFO as a body file is refused without blocking on it.
    std::fs::remove_dir_all(&inner).expect("rm");
    write(
        &dir.path().join("templates/t.yaml"),
        format!("{t}text_file: fifo\n"),
    );
    let made = Command::new("mkfifo")
        .arg(dir.path().join("templates/fifo"))
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let (_, doc) = validate_json(dir.path());
        assert_eq!(codes(&doc), ["file_not_found"], "{doc}");
    }
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_is_one_diagnostic_and_the_scan_goes_on() {
    let dir = minimal();
    std::fs::create_dir_all(dir.path().join("loop")).expect("mkdir");
    std::os::unix::fs::symlink("..", dir.path().join("loop/back")).expect("link");
    write(
        &dir.path().join("segments/z.yaml"),
        "apiVersion: sluice/v1\nkind: Segment\nid: z\nwhen: { user.x: 1 }\ncolour: red\n",
    );
    let (code, doc) = validate_json(dir.path());
    assert_eq!(code, 1);
    let mut found = codes(&doc);
    found.sort();
    assert_eq!(found, ["file_not_found", "unknown_field"], "{doc}");
}

#[test]
fn long_chains_validate_without_overflowing_the_stack() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 20,000 segments, each referencing the next.
    let n = 20_000;
    let mut segments = String::new();
    for i in 0..n {
        let when = if i + 1 < n {
            format!("{{ segment: s{} }}", i + 1)
        } else {
            "{ user.x: 1 }".to_owned()
        };
        segments.push_str(&format!(
            "---\napiVersion: sluice/v1\nkind: Segment\nid: s{i}\nwhen: {when}\n"
        ));
    }
    write(&dir.path().join("segments/chain.yaml"), segments);
    // A journey of 50,000 steps chained through `branch`.
    let n = 50_000;
    let mut journey = String::from(
        "apiVersion: sluice/v1\nkind: Journey\nid: long\nversion: 1\nentry: { event: e }\nsteps:\n",
    );
    for i in 0..n {
        let next = if i + 1 < n {
            format!("s{}", i + 1)
        } else {
            "end".to_owned()
        };
        journey.push_str(&format!(
            "  - id: s{i}\n    branch:\n      - when: {{ user.x: 1 }}\n        next: {next}\n    next: {next}\n"
        ));
    }
    write(&dir.path().join("journeys/long.yaml"), journey);
    let began = Instant::now();
    let (code, doc) = validate_json(dir.path());
    assert_eq!(code, 0, "{doc}");
    assert!(began.elapsed() < Duration::from_secs(300));
}

#[test]
fn a_long_line_and_many_errors_take_linear_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A 400 KB flow list on one line (it took 14 s).
    let names: Vec<String> = (0..40_000).map(|i| format!("\"j{i}\"")).collect();
    write(
        &dir.path().join("policies/t.yaml"),
        format!(
            "apiVersion: sluice/v1\nkind: Throttle\nid: t\nchannel: email\nrate: 10 per second\njourneys: [{}]\n",
            names.join(",")
        ),
    );
    let began = Instant::now();
    let (code, doc) = validate_json(dir.path());
    assert_eq!(code, 1);
    assert_eq!(doc["errors"].as_array().map(Vec::len), Some(40_000));
    assert!(began.elapsed() < Duration::from_secs(120));

    // 8,000 errors in one file, human output (it took 17 s).
    let mut text = String::new();
    for i in 0..8_000 {
        text.push_str(&format!(
            "---\napiVersion: sluice/v1\nkind: Segment\nid: s{i}\nwhen: {{ user.x: 1 }}\ncolour: red\n"
        ));
    }
    std::fs::remove_file(dir.path().join("policies/t.yaml")).expect("rm");
    write(&dir.path().join("segments/s.yaml"), text);
    let began = Instant::now();
    let (code, _, stderr) = sluice(&["validate", p(dir.path())]);
    assert_eq!(code, 1);
    assert_eq!(stderr.matches("unknown_field").count(), 8_000);
    assert!(began.elapsed() < Duration::from_secs(120));
}

#[test]
fn recursive_partials_are_refused_before_anything_is_sent() {
    let dir = minimal();
    write(
        &dir.path().join("templates/t.yaml"),
        "apiVersion: sluice/v1\nkind: Template\nid: t\nchannel: email\nsubject: Hi\ntext: '{{#*inline \"p\"}}x{{> p}}{{/inline}}{{> p}}'\n",
    );
    let (code, doc) = validate_json(dir.path());
    assert_eq!(code, 1);
    assert_eq!(codes(&doc), ["partial_cycle"]);
    let (code, _, stderr) = sluice(&["test", p(dir.path())]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("partial_cycle"), "{stderr}");
}

#[test]
fn a_repository_of_too_many_documents_stops_at_the_limit() {
    // 551,000 small documents needed 2.8 GB; reading stops at 100,000.
    let dir = tempfile::tempdir().expect("tempdir");
    for f in 0..3 {
        let mut text = String::new();
        for i in 0..40_000 {
            text.push_str(&format!(
                "---\napiVersion: sluice/v1\nkind: Segment\nid: s{f}-{i}\nwhen: {{ user.x: 1 }}\n"
            ));
        }
        write(&dir.path().join(format!("segments/s{f}.yaml")), text);
    }
    let (code, doc) = validate_json(dir.path());
    assert_eq!(code, 1);
    assert_eq!(codes(&doc), ["too_many_documents"], "{doc}");
    assert_eq!(doc["errors"][0]["file"], "segments/s2.yaml");
}

#[test]
fn line_breaks_never_reach_a_webhook_url_or_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        &dir.path().join("journeys/j.yaml"),
        "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\nentry: { event: signed_up }\nsteps:\n  - id: hook\n    send: { channel: webhook, template: hook }\n",
    );
    write(
        &dir.path().join("templates/hook.yaml"),
        "apiVersion: sluice/v1\nkind: Template\nid: hook\nchannel: webhook\nurl: \"https://example.com/u/{{user.name}}\"\nheaders:\n  X-Name: \"{{user.name}}\"\n",
    );
    let events = dir.path().join("events.jsonl");
    let mut outcomes = Vec::new();
    for name in ["ana", "ana\\r\\nSet-Cookie: x=1", "ana\\nb"] {
        write(
            &events,
            format!(
                "{{\"type\":\"identify\",\"user\":\"u1\",\"ts\":\"2026-03-02T09:00:00Z\",\"traits\":{{\"name\":\"{name}\"}}}}\n{{\"type\":\"track\",\"user\":\"u1\",\"event\":\"signed_up\",\"ts\":\"2026-03-02T09:01:00Z\"}}\n"
            ),
        );
        let (code, stdout, stderr) = sluice(&[
            "simulate",
            p(dir.path()),
            "--events",
            p(&events),
            "--only",
            "sends",
        ]);
        assert_eq!(code, 0, "{stderr}");
        let line: serde_json::Value =
            serde_json::from_str(stdout.lines().next().expect("a send")).expect("json");
        outcomes.push((line["outcome"].clone(), line["reason"].clone()));
    }
    assert_eq!(outcomes[0].0, "sent", "{outcomes:?}");
    for (outcome, reason) in &outcomes[1..] {
        assert_eq!(outcome, "failed", "{outcomes:?}");
        assert!(
            reason.as_str().is_some_and(|r| r.contains("line break")),
            "{reason}"
        );
    }
}

#[test]
fn a_closed_pipe_ends_the_output_not_in_a_panic() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let names: Vec<String> = (0..20_000).map(|i| format!("\"j{i}\"")).collect();
    write(
        &dir.path().join("policies/t.yaml"),
        format!(
            "apiVersion: sluice/v1\nkind: Throttle\nid: t\nchannel: email\nrate: 10 per second\njourneys: [{}]\n",
            names.join(",")
        ),
    );
    for args in [vec!["--format", "json"], vec![]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("validate")
            .arg(dir.path())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // Read a little of each stream, then close them (`| head`).
        let mut buf = [0u8; 64];
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        if args.is_empty() {
            let _ = stderr.read(&mut buf);
        } else {
            let _ = stdout.read(&mut buf);
        }
        drop(stdout);
        drop(stderr);
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(1), "{args:?}");
    }
}
