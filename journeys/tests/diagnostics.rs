//! Every error case in `tests/errors/<case>/` is a small repository with
//! exactly one mistake; its `expected` file names the code, file, line and
//! column the diagnostic must carry. The rendered miette report and the
//! JSON output are pinned with insta snapshots.

use std::path::Path;

use miette::{GraphicalReportHandler, GraphicalTheme};

fn render(d: &journeys::Diagnostic) -> String {
    let handler =
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(80);
    let mut out = String::new();
    handler.render_report(&mut out, d).expect("render");
    out
}

#[test]
fn every_error_case_reports_its_code_at_its_position() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/errors");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/errors")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "expected a fixture per error code");
    let mut failures = Vec::new();
    for case in cases {
        let name = case
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let expected = std::fs::read_to_string(case.join("expected")).expect("expected file");
        let mut parts = expected.split_whitespace();
        let (code, file, line, column) = (
            parts.next().expect("code"),
            parts.next().expect("file"),
            parts
                .next()
                .expect("line")
                .parse::<usize>()
                .expect("line number"),
            parts
                .next()
                .expect("column")
                .parse::<usize>()
                .expect("column number"),
        );
        let (config, diags) = journeys::check(&case);
        assert!(config.is_none(), "{name}: must not compile");
        let errors: Vec<_> = diags.errors().collect();
        let got: Vec<String> = errors
            .iter()
            .map(|d| {
                format!(
                    "{} {} {} {}",
                    d.code,
                    d.file_name(),
                    d.span.line,
                    d.span.column
                )
            })
            .collect();
        if got != [format!("{code} {file} {line} {column}")] {
            failures.push(format!(
                "{name}: expected `{code} {file} {line} {column}`, got {got:?}"
            ));
            continue;
        }
        let json = serde_json::to_string_pretty(&diags.to_json()).expect("json");
        let rendered = render(errors[0]);
        insta::assert_snapshot!(name.clone(), format!("{rendered}\n{json}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn reports_all_problems_sorted_by_file_and_line() {
    let dir = tempdir("sorted");
    let j = "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\npriorty: 1\nentry: { event: e }\nholdout: 200%\nsteps:\n  - id: a\n    wait: 3 days\n    next: b\n";
    std::fs::write(dir.join("b.yaml"), j).expect("write");
    let p = "apiVersion: sluice/v1\nkind: QuietHours\nid: q\nstart: \"25:00\"\nend: \"08:00\"\ntimezone: Mars/Base\n";
    std::fs::write(dir.join("a.yaml"), p).expect("write");
    let (_, diags) = journeys::check(&dir);
    let got: Vec<String> = diags
        .errors()
        .map(|d| format!("{}:{} {}", d.file_name(), d.span.line, d.code))
        .collect();
    assert_eq!(
        got,
        vec![
            "a.yaml:4 invalid_time_of_day",
            "a.yaml:6 invalid_timezone",
            "b.yaml:5 unknown_field",
            "b.yaml:7 invalid_percentage",
            "b.yaml:10 invalid_duration",
            "b.yaml:11 unknown_reference",
        ]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_mistake_in_three_files_is_reported() {
    let dir = tempdir("five");
    std::fs::create_dir_all(&dir).expect("dir");
    // Two in one document: a step missing its template, then a bad wait.
    let j = "apiVersion: sluice/v1\nkind: Journey\nid: j\nentry: { event: e }\nsteps:\n  - id: a\n    send: { channel: email }\n  - id: b\n    wait: soon\n";
    std::fs::write(dir.join("j.yaml"), j).expect("write");
    let t =
        "apiVersion: sluice/v1\nkind: Template\nid: t\nchannel: email\nsubjct: Hi\ntext: Hello\n";
    std::fs::write(dir.join("t.yaml"), t).expect("write");
    let s = "apiVersion: sluice/v1\nkind: Segment\nid: s\nwhen: { user.plan: { eqq: pro } }\n";
    std::fs::write(dir.join("s.yaml"), s).expect("write");
    let (_, diags) = journeys::check(&dir);
    let got: Vec<String> = diags
        .errors()
        .map(|d| format!("{}:{} {}", d.file_name(), d.span.line, d.code))
        .collect();
    assert_eq!(
        got,
        vec![
            "j.yaml:3 missing_field",
            "j.yaml:7 missing_field",
            "j.yaml:9 invalid_duration",
            "s.yaml:4 invalid_condition",
            // `subjct` is reported once: not again as `subject` missing.
            "t.yaml:5 unknown_field",
        ]
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_example_shop_is_valid() {
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let (config, diags) = journeys::check(&shop);
    let problems: Vec<String> = diags
        .iter()
        .map(|d| format!("{}:{} {}", d.file_name(), d.span.line, d.message))
        .collect();
    assert!(config.is_some(), "{problems:#?}");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-diag-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

#[test]
fn a_holdout_without_a_goal_is_a_warning_not_an_error() {
    let dir = tempdir("warning");
    let j = "apiVersion: sluice/v1\nkind: Journey\nid: j\nversion: 1\nentry: { event: e }\nholdout: 10%\nsteps:\n  - id: w\n    wait: 1h\n";
    std::fs::write(dir.join("j.yaml"), j).expect("write");
    let (config, diags) = journeys::check(&dir);
    assert!(config.is_some());
    let json = diags.to_json();
    assert_eq!(json["valid"], true);
    assert_eq!(json["errors"], serde_json::json!([]));
    assert_eq!(json["warnings"][0]["code"], "holdout_without_goal");
    assert_eq!(json["warnings"][0]["line"], 6);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn quiet_hours_covering_the_whole_day_are_a_warning() {
    let dir = tempdir("quiet-all-day");
    let q = |id: &str, start: &str, end: &str| {
        format!("apiVersion: sluice/v1\nkind: QuietHours\nid: {id}\nstart: \"{start}\"\nend: \"{end}\"\n---\n")
    };
    // Two windows that meet: 22:00–08:00 and 08:00–22:00.
    std::fs::write(
        dir.join("q.yaml"),
        q("nights", "22:00", "08:00") + &q("days", "08:00", "22:00"),
    )
    .expect("write");
    let (config, diags) = journeys::check(&dir);
    assert!(config.is_some());
    let json = diags.to_json();
    assert_eq!(json["warnings"][0]["code"], "quiet_hours_all_day", "{json}");
    assert_eq!(json["warnings"][0]["line"], 3);
    assert_eq!(json["warnings"].as_array().map(Vec::len), Some(1));

    // A minute's gap, another channel, or `drop`: no warning.
    for second in [
        q("days", "08:01", "22:00"),
        q("days", "08:00", "22:00") + "channels: [push]\n",
    ] {
        let text = q("nights", "22:00", "08:00") + "channels: [email]\n---\n" + &second;
        std::fs::write(
            dir.join("q.yaml"),
            text.replace("---\nchannels", "channels"),
        )
        .expect("write");
        let (_, diags) = journeys::check(&dir);
        assert_eq!(diags.to_json()["warnings"], serde_json::json!([]));
    }
    std::fs::remove_dir_all(&dir).ok();
}
