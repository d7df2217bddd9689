//! `sluice report [JOURNEY]`: per journey and version, entries, holdout
//! size, sends by outcome, and conversion in treatment and holdout with the
//! uplift and its 95% interval (RUN.md §5). The counting and the
//! statistics are in `engine::report`; this file parses arguments and
//! prints a table (or RUN.md's JSON).

use std::path::PathBuf;
use std::process::ExitCode;

use engine::report::{Query, Tally};
use engine::service::client;
use serde_json::Value;

use crate::inspect::Source;
use crate::Format;

#[derive(clap::Args)]
pub struct Args {
    /// Only this journey (every journey when omitted).
    pub journey: Option<String>,
    /// The config repository (default `.`; or `--dir`). When it is the
    /// only argument and names a directory, it is taken as the repository.
    pub dir: Option<PathBuf>,
    /// The config repository (default `.`).
    #[arg(long = "dir", conflicts_with = "dir")]
    pub dir_flag: Option<PathBuf>,
    /// Entries and decisions at or after this instant (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// The store directory (default: the Project's `store`, inside DIR).
    #[arg(long, conflicts_with = "server")]
    pub store: Option<PathBuf>,
    /// A running engine's URL (or `SLUICE_SERVER`): go through its API.
    #[arg(long)]
    pub server: Option<String>,
    /// The admin token for the API (default: `SLUICE_TOKEN`, else the
    /// Project's admin token variable, else `.sluice/credentials`).
    #[arg(long)]
    pub token: Option<String>,
    /// `human` (a table) or `json` (one array, an object per journey version).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

impl Args {
    /// The journey and the repository, from the positionals and `--dir`.
    fn journey_and_dir(&self) -> (Option<String>, PathBuf) {
        if let Some(d) = self.dir.clone().or_else(|| self.dir_flag.clone()) {
            return (self.journey.clone(), d);
        }
        match &self.journey {
            Some(j) if PathBuf::from(j).is_dir() => (None, PathBuf::from(j)),
            other => (other.clone(), PathBuf::from(".")),
        }
    }
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let (journey, dir) = args.journey_and_dir();
    let since = args
        .since
        .as_deref()
        .map(|s| crate::simulate::parse_ts("since", s).map(|t| t.timestamp_millis()))
        .transpose()?;
    let query = Query { journey, since };
    let source = Source {
        dir,
        store: args.store.clone(),
        server: args.server.clone(),
        token: args.token.clone(),
    };
    let bar =
        crate::progress::spinner("{spinner} reading the report journal: {human_pos} records {msg}");
    let mut progress = |t: &Tally| {
        if let Some(b) = &bar {
            b.set_position(t.records);
            if let Some(at) = t.last_at {
                b.set_message(format!("at {}", engine::clock::format_ts(at)));
            }
        }
    };
    let result = source.with(
        |config, store| {
            client::report_store(config, store, query.clone(), &mut progress).map(|r| r.to_json())
        },
        |c| c.report(&query),
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let (rows, _) = result?;
    match args.format {
        Format::Json => outln!("{rows}"),
        Format::Human => out!("{}", table(&rows, since)),
    }
    Ok(ExitCode::SUCCESS)
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn percent(v: &Value) -> Option<f64> {
    v.as_f64().map(|r| r * 100.0)
}

/// `converted/users rate%`, or `-` for an empty group.
fn group(g: &Value) -> String {
    match percent(&g["rate"]) {
        Some(r) => format!("{}/{} {r:.1}%", count(&g["converted"]), count(&g["users"])),
        None => "-".to_owned(),
    }
}

/// What a reader should know about a row whose numbers are missing.
fn note(row: &Value) -> Option<&'static str> {
    let c = &row["conversion"];
    let treated = count(&c["treatment"]["users"]);
    let held = count(&c["holdout"]["users"]);
    if count(&row["entries"]) == 0 {
        Some("no entries")
    } else if treated == 0 && held == 0 {
        Some("no goal: conversion is not measured")
    } else if held == 0 {
        Some("no holdout: the uplift cannot be estimated")
    } else if treated == 0 {
        Some("every entry was held out: the uplift cannot be estimated")
    } else {
        None
    }
}

/// The readable table, with a note under it for each row that lacks a
/// number.
pub fn table(rows: &Value, since: Option<i64>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if let Some(s) = since {
        let _ = writeln!(out, "since {}", engine::clock::format_ts(s));
    }
    let empty = Vec::new();
    let rows = rows.as_array().unwrap_or(&empty);
    if rows.is_empty() {
        let _ = writeln!(out, "no entries recorded: nothing to report");
        return out;
    }
    let header = [
        "journey",
        "version",
        "entries",
        "holdout",
        "sent",
        "deferred",
        "suppressed",
        "failed",
        "treatment",
        "holdout conv.",
        "uplift",
        "95% interval",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    let mut notes = Vec::new();
    for r in rows {
        let c = &r["conversion"];
        let journey = r["journey"].as_str().unwrap_or("?").to_owned();
        let version = count(&r["version"]);
        let uplift = percent(&c["uplift"]).map_or("-".to_owned(), |u| format!("{u:+.1} pp"));
        let interval = match c["ci95"].as_array().map(Vec::as_slice) {
            Some([lo, hi]) => match (percent(lo), percent(hi)) {
                (Some(lo), Some(hi)) => format!("[{lo:+.1}, {hi:+.1}] pp"),
                _ => "-".to_owned(),
            },
            _ => "-".to_owned(),
        };
        if let Some(n) = note(r) {
            notes.push(format!("{journey} v{version}: {n}"));
        }
        cells.push(vec![
            journey,
            version.to_string(),
            count(&r["entries"]).to_string(),
            count(&r["holdout"]).to_string(),
            count(&r["sends"]["sent"]).to_string(),
            count(&r["sends"]["deferred"]).to_string(),
            count(&r["sends"]["suppressed"]).to_string(),
            count(&r["sends"]["failed"]).to_string(),
            group(&c["treatment"]),
            group(&c["holdout"]),
            uplift,
            interval,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &cells {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if i == 0 {
                let _ = write!(line, "{cell:<w$}", w = widths[i]);
            } else {
                let _ = write!(line, "{cell:>w$}", w = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_and_missing_groups_say_so() {
        assert_eq!(
            table(&json!([]), None),
            "no entries recorded: nothing to report\n"
        );
        let row = json!({"journey":"j","version":1,"entries":4,"holdout":0,
            "sends":{"sent":4,"deferred":0,"suppressed":0,"failed":0},
            "conversion":{"treatment":{"users":4,"converted":1,"rate":0.25},
            "holdout":{"users":0,"converted":0,"rate":null},"uplift":null,"ci95":null}});
        let t = table(&json!([row]), Some(0));
        assert!(t.starts_with("since 1970-01-01T00:00:00Z\n"), "{t}");
        assert!(t.contains("1/4 25.0%"), "{t}");
        assert!(
            t.ends_with("j v1: no holdout: the uplift cannot be estimated\n"),
            "{t}"
        );
        assert!(!t.contains("NaN"), "{t}");
    }
}
