//! `sluice graph [DIR] JOURNEY [--format mermaid|dot]`: one journey's state
//! machine, drawn by `journeys::graph`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum GraphFormat {
    /// A Mermaid `flowchart` (GitHub renders it in Markdown).
    #[default]
    Mermaid,
    /// A Graphviz `digraph`.
    Dot,
}

#[derive(clap::Args)]
pub struct Args {
    /// `[DIR] JOURNEY`: the config repository (default `.`) and the
    /// journey's id.
    #[arg(num_args = 0..=2, value_names = ["DIR", "JOURNEY"])]
    pub args: Vec<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: GraphFormat,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let (dir, id) = match args.args.as_slice() {
        // `sluice graph examples/shop`: a repository without the journey.
        [dir] if names_a_repository(dir) => {
            return missing_journey(&PathBuf::from(dir), &format!("sluice graph {dir} JOURNEY"))
        }
        [id] => (PathBuf::from("."), id.clone()),
        [dir, id] => (PathBuf::from(dir), id.clone()),
        _ => return missing_journey(&PathBuf::from("."), "sluice graph [DIR] JOURNEY"),
    };
    let Some(config) = crate::load_config(&dir) else {
        return Ok(ExitCode::from(1));
    };
    let Some(journey) = config.journey(&id) else {
        let message = journeys::diagnostic::with_suggestion(
            format!("no journey `{id}` in `{}`", dir.display()),
            &id,
            config.journeys.iter().map(|j| j.id.as_str()),
        );
        let known: Vec<&str> = config.journeys.iter().map(|j| j.id.as_str()).collect();
        return Err(miette::miette!(
            help = format!("journeys: {}", known.join(", ")),
            "{message}"
        ));
    };
    let text = match args.format {
        GraphFormat::Mermaid => {
            journeys::graph::mermaid(journey, &journeys::graph::Marks::default())
        }
        GraphFormat::Dot => journeys::graph::dot(journey),
    };
    out!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// No journey named: say so, with the journeys of `dir` when it loads.
fn missing_journey(dir: &std::path::Path, usage: &str) -> miette::Result<ExitCode> {
    let Some(config) = crate::load_config(dir) else {
        return Ok(ExitCode::from(1));
    };
    let known: Vec<&str> = config.journeys.iter().map(|j| j.id.as_str()).collect();
    Err(miette::miette!(
        help = format!("journeys in `{}`: {}", dir.display(), known.join(", ")),
        "name the journey to draw: `{usage}`"
    ))
}

/// Whether the only argument is a directory rather than a journey id: it
/// is a directory, and it could not be an id (ids are
/// `[a-z0-9][a-z0-9_-]*`) or it holds a `sluice.yaml`.
fn names_a_repository(arg: &str) -> bool {
    let path = std::path::Path::new(arg);
    let id_like = arg.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && arg
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    path.is_dir() && (!id_like || path.join("sluice.yaml").is_file())
}
