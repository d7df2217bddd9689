//! `sluice test`: a pass/fail line per JourneyTest, a readable diff per
//! failure, exit 0 only when all pass.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    support::fixture::workspace().join(path)
}

fn sluice_test(dir: &Path, json: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("test").arg(dir);
    if json {
        cmd.args(["--format", "json"]);
    }
    let out = cmd.output().expect("run sluice");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_example_shop_passes() {
    let (code, out) = sluice_test(&repo("examples/shop"), false);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.ends_with(" passed, 0 failed")),
        "{out}"
    );
    assert!(out.contains("PASS cart-reminder-sent"), "{out}");
}

#[test]
fn a_failure_exits_1_with_expected_and_actual() {
    let (code, out) = sluice_test(&repo("tests/fixtures/journey-tests-fail"), false);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("PASS reminder-when-holdouts-ignored (tests/tests.yaml:4)"),
        "{out}"
    );
    assert!(out.contains("PASS holdout-gets-nothing"), "{out}");
    assert!(
        out.contains("FAIL wrong-time-on-purpose (tests/tests.yaml:32)"),
        "{out}"
    );
    // The unmatched expectation with its place, then the user's actual lines.
    assert!(
        out.contains(r#"- expected (tests/tests.yaml:40): {"user":"a","journey":"nudge","step":"remind","outcome":"sent","at":"2026-03-02T11:00:00Z"}"#),
        "{out}"
    );
    assert!(
        out.contains(
            r#"~ {"at":"2026-03-02T10:05:00Z","kind":"send","user":"a","journey":"nudge""#
        ),
        "{out}"
    );
    // The closest line is marked, with what differs.
    assert!(
        out.contains("~ closest line differs in `at`: expected 2026-03-02T11:00:00Z, got 2026-03-02T10:05:00Z"),
        "{out}"
    );
    assert!(
        out.contains("- expected none (tests/tests.yaml:42)"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("2 passed, 1 failed"), "{out}");
}

#[test]
fn json_format_is_one_document() {
    let (code, out) = sluice_test(&repo("tests/fixtures/journey-tests-fail"), true);
    assert_eq!(code, Some(1));
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["passed"], 2);
    assert_eq!(doc["failed"], 1);
    let failed = &doc["tests"][2];
    assert_eq!(failed["id"], "wrong-time-on-purpose");
    assert_eq!(failed["passed"], false);
    assert_eq!(failed["missing"][0]["line"], 40);
    assert_eq!(failed["unexpected"][0]["found"][0]["kind"], "entered");
}

/// A JourneyTest's run ends at `run_until`, as `simulate --until` does: an
/// event after it never happens, so it enters nobody.
#[test]
fn nothing_happens_after_run_until() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("j.yaml"),
        "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\nentry: { event: go, reentry: always }\nsteps:\n  - id: a\n    wait: 1m\n",
    )
    .expect("write journey");
    std::fs::write(
        dir.path().join("t.yaml"),
        "apiVersion: sluice/v1\nkind: JourneyTest\nid: stops\nstart: 2026-03-02T09:00:00Z\nevents:\n  - { type: track, user: u1, ts: \"+0s\", event: go }\n  - { type: track, user: u1, ts: \"+2h\", event: go }\nrun_until: \"+1h\"\nexpect:\n  - { user: u1, kind: entered, at: \"+0s\" }\n  - { user: u1, kind: completed, at: \"+1m\" }\nexpect_none:\n  - { user: u1, kind: entered, at: \"+2h\" }\n",
    )
    .expect("write test");
    let (code, out) = sluice_test(dir.path(), false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("PASS stops"), "{out}");
}

/// `--format json` prints one JSON document even when the config does not
/// validate: `validate`'s, with exit 1.
#[test]
fn json_format_of_an_invalid_config_is_the_validate_document() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("j.yaml"),
        "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\nentry: { event: go }\nsteps:\n  - id: a\n    wiat: 1m\n",
    )
    .expect("write journey");
    let (code, out) = sluice_test(dir.path(), true);
    assert_eq!(code, Some(1), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["valid"], false, "{doc}");
    assert!(
        doc["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["code"] == "unknown_field")),
        "{doc}"
    );
}
