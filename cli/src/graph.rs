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
    #[arg(num_args = 1..=2, value_names = ["DIR", "JOURNEY"], required = true)]
    pub args: Vec<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: GraphFormat,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let (dir, id) = match args.args.as_slice() {
        [id] => (PathBuf::from("."), id.clone()),
        [dir, id] => (PathBuf::from(dir), id.clone()),
        _ => return Err(miette::miette!("usage: sluice graph [DIR] JOURNEY")),
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
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
