//! `sluice plan --base` through the binary: the three formats snapshotted
//! over the fixture pairs of tests/fixtures/plan/<case>/{base,head}, and
//! the exit codes of CLI.md (0 no changes, 2 changes, 1 error).

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;

use support::cli::sluice_out as sluice;

fn root() -> PathBuf {
    support::fixture::workspace()
}

fn case(name: &str) -> (PathBuf, PathBuf) {
    let dir = root().join("tests/fixtures/plan").join(name);
    (dir.join("base"), dir.join("head"))
}

fn plan(name: &str, format: &str) -> (i32, String, String) {
    let (base, head) = case(name);
    sluice(&[
        "plan",
        head.to_str().expect("path"),
        "--base",
        base.to_str().expect("path"),
        "--format",
        format,
    ])
}

fn snapshot_all(name: &str, exit: i32) {
    for format in ["human", "json", "markdown"] {
        let (code, stdout, stderr) = plan(name, format);
        assert_eq!(code, exit, "{name} {format}: {stdout}{stderr}");
        insta::assert_snapshot!(format!("plan_{name}_{format}"), stdout);
    }
}

#[test]
fn added_removed_and_changed_steps() {
    snapshot_all("steps", 2);
}

#[test]
fn migrate_rules_with_their_timers_without_a_store() {
    snapshot_all("migrate", 2);
    let (_, stdout, _) = plan("migrate", "json");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let cart = &doc["changes"][0];
    assert!(cart.get("in_flight").is_none(), "{cart}");
    assert_eq!(cart["migrate"]["on_unmapped"], "exit");
    assert_eq!(cart["migrate"]["steps"][2]["timer"], "restarted");
}

#[test]
fn migrate_blocks_that_do_not_fit_the_base_are_errors() {
    let (code, stdout, stderr) = plan("migrate-errors", "json");
    assert_eq!(code, 1, "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let found: Vec<(&str, &str, u64, u64)> = doc["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap_or_default(),
                e["file"].as_str().unwrap_or_default(),
                e["line"].as_u64().unwrap_or_default(),
                e["column"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("unknown_reference", "journeys/cart.yaml", 19, 12),
            ("invalid_value", "journeys/winback.yaml", 14, 9),
        ]
    );
    assert!(stderr.contains("did you mean `wait-1h`?"), "{stderr}");
    assert!(
        stderr.contains("a journey's `migrate` block does not fit the deployed version"),
        "{stderr}"
    );
    let (code, stdout, _) = plan("migrate-errors", "markdown");
    assert_eq!(code, 1);
    assert!(
        stdout.starts_with("<!-- sluice-plan -->\n### sluice plan: failed"),
        "{stdout}"
    );
}

#[test]
fn every_kind_created_updated_or_deleted() {
    snapshot_all("kinds", 2);
    let (_, stdout, _) = plan("kinds", "json");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let mut seen: Vec<(String, String)> = doc["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| (c["kind"].to_string(), c["action"].to_string()))
        .collect();
    seen.sort();
    seen.dedup();
    for kind in [
        "Project",
        "Catalog",
        "Segment",
        "Template",
        "QuietHours",
        "Throttle",
        "FrequencyCap",
        "Journey",
    ] {
        assert!(
            seen.iter().any(|(k, _)| k == &format!("\"{kind}\"")),
            "{kind} missing from {seen:?}"
        );
    }
    let summary = &doc["summary"];
    let total = doc["changes"].as_array().map(Vec::len).unwrap_or(0) as u64;
    let sum: u64 = ["create", "update", "delete"]
        .iter()
        .map(|k| summary[*k].as_u64().expect("count"))
        .sum();
    assert_eq!(sum, total);
}

#[test]
fn moved_lines_and_reordered_keys_are_no_change() {
    snapshot_all("moved", 0);
    let (_, stdout, _) = plan("moved", "json");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        doc,
        serde_json::json!({"changes": [], "summary": {"create": 0, "update": 0, "delete": 0}})
    );
}

#[test]
fn a_config_compared_with_itself_has_no_changes() {
    let shop = root().join("examples/shop");
    let shop = shop.to_str().expect("path");
    let (code, stdout, stderr) = sluice(&["plan", shop, "--base", shop]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("No changes"), "{stdout}");
}

#[test]
fn version_not_bumped_is_an_error_at_the_version_line() {
    let (code, stdout, stderr) = plan("not-bumped", "json");
    assert_eq!(code, 1, "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        doc["errors"],
        serde_json::json!([{
            "code": "version_not_bumped",
            "message": "journey `cart-abandonment` changed but its version is still 2",
            "file": "journeys/cart.yaml",
            "line": 6,
            "column": 10,
        }])
    );
    let (code, stdout, stderr) = plan("not-bumped", "human");
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("version_not_bumped"), "{stderr}");
    assert!(stderr.contains("journeys/cart.yaml"), "{stderr}");
    let (code, stdout, _) = plan("not-bumped", "markdown");
    assert_eq!(code, 1);
    insta::assert_snapshot!("plan_not_bumped_markdown", stdout);
}

#[test]
fn an_invalid_side_is_reported_as_validate_does() {
    let (base, _) = case("steps");
    let broken = root().join("journeys/tests/errors");
    let first = std::fs::read_dir(&broken)
        .expect("error fixtures")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .min()
        .expect("one fixture");
    for (head, base) in [(&first, &base), (&base, &first)] {
        let (code, stdout, stderr) = sluice(&[
            "plan",
            head.to_str().expect("path"),
            "--base",
            base.to_str().expect("path"),
            "--format",
            "json",
        ]);
        assert_eq!(code, 1, "{stdout}{stderr}");
        let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        assert_eq!(doc["valid"], false);
        assert!(!doc["errors"].as_array().expect("errors").is_empty());
        assert!(stderr.contains("is invalid"), "{stderr}");
    }
}

#[test]
fn a_plan_against_a_missing_store_or_an_unreachable_server_says_so() {
    let shop = root().join("examples/shop");
    let shop = shop.to_str().expect("path");
    let (code, stdout, stderr) = sluice(&["plan", shop, "--store", "/tmp/sluice-no-such-store"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("no store at /tmp/sluice-no-such-store"),
        "{stderr}"
    );
    let (code, stdout, stderr) = sluice(&[
        "plan",
        shop,
        "--server",
        "http://127.0.0.1:1",
        "--token",
        "t",
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}
