//! `sluice validate` through the binary: exit codes and the JSON shape of
//! CLI.md, on the example shop and on the error fixtures.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;

use support::cli::sluice_out as sluice;

fn root() -> PathBuf {
    support::fixture::workspace()
}

#[test]
fn the_shop_is_valid() {
    let shop = root().join("examples/shop");
    let (code, stdout, stderr) = sluice(&["validate", shop.to_str().expect("path")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("is valid"), "{stdout}");
    let (code, stdout, _) = sluice(&["validate", shop.to_str().expect("path"), "--format", "json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(
        doc,
        serde_json::json!({"valid": true, "errors": [], "warnings": []})
    );
}

#[test]
fn each_fixture_fails_with_its_code_in_both_formats() {
    let errors = root().join("journeys/tests/errors");
    let mut checked = 0;
    for entry in std::fs::read_dir(&errors).expect("fixtures") {
        let case = entry.expect("entry").path();
        let expected = std::fs::read_to_string(case.join("expected")).expect("expected");
        let parts: Vec<&str> = expected.split_whitespace().collect();
        let (code, file, line, column) = (parts[0], parts[1], parts[2], parts[3]);

        let (exit, stdout, _) =
            sluice(&["validate", case.to_str().expect("path"), "--format", "json"]);
        assert_eq!(exit, 1, "{}", case.display());
        let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
        assert_eq!(doc["valid"], false);
        let errs = doc["errors"].as_array().expect("errors");
        assert_eq!(errs.len(), 1, "{}: {errs:?}", case.display());
        let e = &errs[0];
        assert_eq!(e["code"], code);
        assert_eq!(e["file"], file);
        assert_eq!(e["line"].to_string(), line);
        assert_eq!(e["column"].to_string(), column);
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));

        let (exit, _, stderr) = sluice(&["validate", case.to_str().expect("path")]);
        assert_eq!(exit, 1);
        assert!(stderr.contains(code), "{stderr}");
        assert!(
            stderr.contains(&format!("{file}:{line}:{column}")),
            "{stderr}"
        );
        checked += 1;
    }
    assert!(checked >= 25);
}

#[test]
fn a_missing_directory_is_an_error() {
    let (code, stdout, _) = sluice(&["validate", "/nonexistent/sluice/repo", "--format", "json"]);
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(doc["valid"], false);
}

/// CLI.md's exit codes are 0 and 1 (and `plan`'s 2 for "changes"): a
/// command line the binary cannot parse is an error, exit 1, never clap's
/// 2, which a script running `plan` would read as "changes".
#[test]
fn a_usage_error_exits_1_and_help_exits_0() {
    for args in [
        &["validate", "--format", "xml"][..],
        &["plan", "--no-such-flag"],
        &["test", "--no-such-flag"],
        &["simulate", "."],
        &["graph"],
        &["no-such-command"],
        &[],
    ] {
        let (code, stdout, stderr) = sluice(args);
        assert_eq!(code, 1, "sluice {args:?}: {stdout}{stderr}");
        assert!(!stderr.is_empty(), "sluice {args:?} says why");
    }
    for args in [
        &["--help"][..],
        &["--version"],
        &["validate", "--help"],
        &["plan", "-h"],
    ] {
        let (code, stdout, stderr) = sluice(args);
        assert_eq!(code, 0, "sluice {args:?}: {stdout}{stderr}");
        assert!(!stdout.is_empty(), "sluice {args:?} prints to stdout");
    }
}

/// One mistake, one diagnostic: a journey that does not compile (here, a
/// misspelt template) is reported at its mistake, and the JourneyTests that
/// name it are not also reported as naming an undefined journey.
#[test]
fn a_broken_journey_is_not_reported_again_by_its_tests() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("shop");
    support::fixture::copy_dir(&root().join("examples/shop"), &repo);
    let journey = repo.join("journeys/back-in-stock.yaml");
    let text = std::fs::read_to_string(&journey).expect("journey");
    assert!(text.contains("template: back-in-stock }"), "{text}");
    std::fs::write(
        &journey,
        text.replace("template: back-in-stock }", "template: back-in-stok }"),
    )
    .expect("write");
    let (code, stdout, stderr) =
        sluice(&["validate", repo.to_str().expect("path"), "--format", "json"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    let errors = doc["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{doc}");
    assert_eq!(errors[0]["code"], "unknown_reference", "{doc}");
    assert_eq!(errors[0]["file"], "journeys/back-in-stock.yaml", "{doc}");
    assert!(
        errors[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("template `back-in-stok` is not defined")),
        "{doc}"
    );
}

/// Each `tests/fixtures/diagnostics/<case>/` is a repository whose
/// `expected` lists every diagnostic `validate --format json` must give,
/// in order, one a line: `code file line column text-in-the-message`
/// (`#` lines are comments). Nothing more: one mistake, one diagnostic.
/// The human output names each at `file:line:column` with its code.
#[test]
fn each_diagnostics_fixture_gives_exactly_its_expected_errors() {
    let cases = root().join("tests/fixtures/diagnostics");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&cases)
        .expect("tests/fixtures/diagnostics")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "{dirs:?}");
    let mut failures = Vec::new();
    for case in dirs {
        let expected = std::fs::read_to_string(case.join("expected")).expect("expected");
        let want: Vec<Vec<&str>> = expected
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.splitn(5, ' ').collect())
            .collect();
        let path = case.to_str().expect("path");
        let (exit, stdout, stderr) = sluice(&["validate", path, "--format", "json"]);
        let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
        let errors = doc["errors"].as_array().cloned().unwrap_or_default();
        let got: Vec<String> = errors
            .iter()
            .map(|e| {
                format!(
                    "{} {} {} {} {}",
                    e["code"].as_str().unwrap_or_default(),
                    e["file"].as_str().unwrap_or_default(),
                    e["line"],
                    e["column"],
                    e["message"].as_str().unwrap_or_default()
                )
            })
            .collect();
        let matches = exit == 1
            && doc["valid"] == false
            && got.len() == want.len()
            && got.iter().zip(&want).all(|(g, w)| {
                let prefix = w[..4].join(" ");
                g.starts_with(&format!("{prefix} ")) && w.get(4).is_none_or(|m| g.contains(m))
            });
        if !matches {
            failures.push(format!(
                "{}: exit {exit}, want\n  {}\ngot\n  {}\n{stderr}",
                case.display(),
                want.iter()
                    .map(|w| w.join(" "))
                    .collect::<Vec<_>>()
                    .join("\n  "),
                got.join("\n  ")
            ));
            continue;
        }
        let (exit, _, stderr) = sluice(&["validate", path]);
        assert_eq!(exit, 1, "{}", case.display());
        for w in &want {
            let at = format!("{}:{}:{}", w[1], w[2], w[3]);
            if !stderr.contains(w[0]) || !stderr.contains(&at) {
                failures.push(format!(
                    "{}: {} at {at} not in\n{stderr}",
                    case.display(),
                    w[0]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The summary line agrees in number: `1 journey`, `(1 warning)`.
#[test]
fn the_summary_counts_in_words_that_agree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("j.yaml"),
        "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\nentry: { event: e }\nholdout: 10%\nsteps:\n  - id: w\n    wait: 1h\n",
    )
    .expect("write");
    let (code, stdout, stderr) = sluice(&["validate", tmp.path().to_str().expect("path")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "is valid: 1 journey, 0 segments, 0 templates, 0 policies, 0 tests (1 warning)"
        ),
        "{stdout}"
    );
    assert!(stderr.contains("holdout_without_goal"), "{stderr}");
}
