//! `sluice test [DIR]`: every JourneyTest, a pass/fail line each and a
//! readable expected-vs-actual diff for each failure.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{json, Value};

use journeys::compiled::Expectation;

use engine::test::{run_all, TestReport};

use crate::Format;

#[derive(clap::Args)]
pub struct TestArgs {
    /// The config repository.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// `human` (a line per test, diffs) or `json` (one document).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// An expectation as the compact object it was written as.
pub fn pattern(e: &Expectation) -> Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), Value::String(v.clone()));
        }
    };
    put("user", &e.user);
    put("journey", &e.journey);
    put("kind", &e.kind);
    put("step", &e.step);
    put("channel", &e.channel);
    put("template", &e.template);
    put("outcome", &e.outcome);
    put("reason", &e.reason);
    if let Some(h) = e.holdout {
        m.insert("holdout".into(), Value::Bool(h));
    }
    if let Some(at) = e.at {
        m.insert(
            "at".into(),
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        );
    }
    Value::Object(m)
}

fn lines_of<'a>(report: &'a TestReport, user: Option<&str>) -> Vec<&'a Value> {
    report
        .lines
        .iter()
        .filter(|l| user.is_none_or(|u| l.get("user").and_then(Value::as_str) == Some(u)))
        .collect()
}

/// A key a line differs in: (key, expected, actual).
type Difference = (String, String, String);

/// The line that matches the most keys of an expectation, with the keys
/// it differs in, when one differs in at most two.
fn closest<'a>(e: &Expectation, lines: &[&'a Value]) -> Option<(&'a Value, Vec<Difference>)> {
    let want = pattern(e);
    let want = want.as_object()?;
    lines
        .iter()
        .map(|l| {
            let diffs: Vec<Difference> = want
                .iter()
                .filter_map(|(k, v)| {
                    let got = l.get(k);
                    let same = match (k.as_str(), got.and_then(Value::as_str), v.as_str()) {
                        ("at", Some(g), Some(w)) => {
                            chrono::DateTime::parse_from_rfc3339(g).ok()
                                == chrono::DateTime::parse_from_rfc3339(w).ok()
                        }
                        _ => got == Some(v),
                    };
                    (!same).then(|| {
                        let show = |x: Option<&Value>| match x {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => "nothing".to_owned(),
                        };
                        (k.clone(), show(Some(v)), show(got))
                    })
                })
                .collect();
            (*l, diffs)
        })
        .filter(|(_, d)| !d.is_empty() && d.len() <= 2)
        .min_by_key(|(_, d)| d.len())
}

fn print_human(report: &TestReport) {
    let place = format!("{}:{}", report.file, report.line);
    if report.passed() {
        outln!("PASS {} ({place})", report.id);
        return;
    }
    outln!("FAIL {} ({place})", report.id);
    if let Some(e) = &report.error {
        outln!("  error: {e}");
    }
    for e in &report.missing {
        outln!("  - expected ({}:{}): {}", report.file, e.line, pattern(e));
        let lines = lines_of(report, e.user.as_deref());
        match (lines.is_empty(), &e.user) {
            (true, Some(u)) => outln!("    no line at all for user {u}"),
            (true, None) => outln!("    the test produced no line at all"),
            (false, Some(u)) => outln!("    no such line; the lines of user {u}:"),
            (false, None) => outln!("    no such line; every line:"),
        }
        let near = closest(e, &lines);
        for l in lines.iter().take(40) {
            let mark = if near.as_ref().is_some_and(|(n, _)| std::ptr::eq(*n, *l)) {
                "~"
            } else {
                "+"
            };
            outln!("    {mark} {l}");
        }
        if let Some((_, diffs)) = &near {
            for (k, want, got) in diffs {
                outln!("    ~ closest line differs in `{k}`: expected {want}, got {got}");
            }
        }
        if lines.len() > 40 {
            outln!("    … {} more", lines.len() - 40);
        }
    }
    for (e, hits) in &report.unexpected {
        outln!(
            "  - expected none ({}:{}): {}",
            report.file,
            e.line,
            pattern(e)
        );
        outln!("    but found:");
        for l in hits {
            outln!("    + {l}");
        }
    }
}

fn to_json(report: &TestReport) -> Value {
    json!({
        "id": report.id,
        "file": report.file,
        "line": report.line,
        "passed": report.passed(),
        "error": report.error,
        "missing": report.missing.iter().map(|e| json!({
            "line": e.line,
            "expect": pattern(e),
            "actual": lines_of(report, e.user.as_deref()),
        })).collect::<Vec<_>>(),
        "unexpected": report.unexpected.iter().map(|(e, hits)| json!({
            "line": e.line,
            "expect_none": pattern(e),
            "found": hits,
        })).collect::<Vec<_>>(),
    })
}

pub fn run(args: TestArgs) -> miette::Result<ExitCode> {
    let config = match args.format {
        // One JSON document either way: an invalid config is `validate`'s.
        Format::Json => match journeys::check(&args.dir) {
            (Some(config), _) => std::sync::Arc::new(config),
            (None, diags) => {
                outln!("{}", diags.to_json());
                return Ok(ExitCode::from(1));
            }
        },
        Format::Human => match crate::load_config(&args.dir) {
            Some(config) => config,
            None => return Ok(ExitCode::from(1)),
        },
    };
    let reports = run_all(&config);
    let passed = reports.iter().filter(|r| r.passed()).count();
    let failed = reports.len() - passed;
    match args.format {
        Format::Json => {
            let doc = json!({
                "tests": reports.iter().map(to_json).collect::<Vec<_>>(),
                "passed": passed,
                "failed": failed,
            });
            outln!("{doc}");
        }
        Format::Human => {
            for r in &reports {
                print_human(r);
            }
            outln!("{passed} passed, {failed} failed");
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
