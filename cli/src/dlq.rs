//! `sluice dlq list` and `sluice dlq replay ID|--all` (RUN.md §4), on the
//! store when no engine runs on it, else through the API.

use std::process::ExitCode;

use engine::clock::Clock;
use engine::engine::Replay;
use engine::service::client;
use miette::miette;
use serde_json::Value;

use crate::inspect::{text, Source, Via};
use crate::Format;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// The dead letters, oldest first.
    List(ListArgs),
    /// Re-queue dead letters with their keys; one that is delivered leaves
    /// the queue.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub source: Source,
    /// `human` (a line per dead letter) or `json` (one JSON array).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The dead letter's id (from `dlq list`); with `--all`, the first
    /// argument is DIR.
    #[arg(required_unless_present = "all", value_name = "ID")]
    pub id: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub source: Source,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    match args.what {
        What::List(a) => list(a),
        What::Replay(a) => replay(a),
    }
}

/// One dead letter on a line. A cluster worker's letters carry their
/// partition (ids are per partition there), shown after the id.
fn human(l: &Value) -> String {
    let id = match l.get("partition") {
        Some(p) => format!("{} (partition {})", text(&l["id"]), text(p)),
        None => text(&l["id"]),
    };
    format!(
        "{id} {} user {} {}/{} {} attempts {} key {}: {}",
        text(&l["at"]),
        text(&l["user"]),
        text(&l["journey"]),
        text(&l["step"]),
        text(&l["channel"]),
        text(&l["attempts"]),
        text(&l["key"]),
        text(&l["reason"]),
    )
}

fn list(args: ListArgs) -> miette::Result<ExitCode> {
    let (letters, _) = args.source.with(
        |config, store| client::dead_letters_store(config, store, client::DLQ_LIMIT),
        |c| c.dead_letters(client::DLQ_LIMIT),
    )?;
    match args.format {
        Format::Json => outln!("{}", Value::Array(letters)),
        Format::Human => {
            if letters.is_empty() {
                outln!("no dead letters");
            }
            for l in &letters {
                outln!("{}", human(l));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(mut args: ReplayArgs) -> miette::Result<ExitCode> {
    let which = match args.id.take() {
        // `dlq replay --all DIR`: the one positional is the directory.
        Some(dir) if args.all && args.source.dir == std::path::Path::new(".") => {
            args.source.dir = dir.into();
            Replay::All
        }
        None if args.all => Replay::All,
        Some(id) if !args.all => Replay::One(id.parse().map_err(|_| {
            miette!("`{id}` is not a dead letter's id (a number from `sluice dlq list`)")
        })?),
        _ => return Err(miette!("give a dead letter's id or --all, not both")),
    };
    let now = engine::clock::WallClock.now_millis();
    let (n, via) = args.source.with(
        |config, store| client::replay_store(config, store, which, now),
        |c| c.replay(which),
    )?;
    outln!("replayed {n}");
    if n > 0 && via == Via::Store {
        eprintln!("re-queued in the store: `sluice run` delivers them when it next starts");
    }
    if n == 0 {
        if let Replay::One(id) = which {
            eprintln!("no dead letter {id} that can be replayed");
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cluster_workers_letter_shows_its_partition() {
        let mut l = json!({"id": 39, "at": "2026-03-02T09:00:00Z", "user": "u1",
            "journey": "welcome", "step": "hello", "channel": "email",
            "attempts": 3, "key": "k1", "reason": "HTTP 400"});
        assert_eq!(
            human(&l),
            "39 2026-03-02T09:00:00Z user u1 welcome/hello email attempts 3 key k1: HTTP 400"
        );
        l["partition"] = json!(5);
        assert!(human(&l).starts_with("39 (partition 5) 2026-03-02T09:00:00Z user u1"));
    }
}
