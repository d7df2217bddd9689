//! `sluice test [DIR]`: every JourneyTest, a pass/fail line each and a
//! readable expected-vs-actual diff for each failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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

fn print_human(report: &TestReport) {
    let place = format!("{}:{}", report.file, report.line);
    if report.passed() {
        println!("PASS {} ({place})", report.id);
        return;
    }
    println!("FAIL {} ({place})", report.id);
    if let Some(e) = &report.error {
        println!("  error: {e}");
    }
    for e in &report.missing {
        println!("  - expected ({}:{}): {}", report.file, e.line, pattern(e));
        let lines = lines_of(report, e.user.as_deref());
        match (lines.is_empty(), &e.user) {
            (true, Some(u)) => println!("    no line at all for user {u}"),
            (true, None) => println!("    the test produced no line at all"),
            (false, Some(u)) => println!("    no such line; the lines of user {u}:"),
            (false, None) => println!("    no such line; every line:"),
        }
        for l in lines.iter().take(40) {
            println!("    + {l}");
        }
        if lines.len() > 40 {
            println!("    … {} more", lines.len() - 40);
        }
    }
    for (e, hits) in &report.unexpected {
        println!(
            "  - expected none ({}:{}): {}",
            report.file,
            e.line,
            pattern(e)
        );
        println!("    but found:");
        for l in hits {
            println!("    + {l}");
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
    let config = match journeys::load(&args.dir) {
        Ok(c) => Arc::new(c),
        Err(diags) => {
            for d in diags.iter() {
                eprintln!("{:?}", d.to_report());
            }
            eprintln!(
                "{} is invalid: {} errors",
                args.dir.display(),
                diags.errors().count()
            );
            return Ok(ExitCode::from(1));
        }
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
            println!("{doc}");
        }
        Format::Human => {
            for r in &reports {
                print_human(r);
            }
            println!("{passed} passed, {failed} failed");
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
