//! The `sluice` binary: argument parsing and output formatting only. Every
//! decision is made in the `journeys` and `engine` crates.

#[macro_use]
mod pipe;

mod deploy;
mod dlq;
mod graph;
mod input_file;
mod inspect;
mod lsp;
mod plan;
mod progress;
mod report;
mod run;
mod send_events;
mod simulate;
mod test;
mod validate;

use std::process::ExitCode;

/// The engine allocates many small, short-lived values; mimalloc is much
/// faster at that than the system allocator (see BENCHMARKS.md). Without
/// the default `mimalloc` feature the system allocator is used (heaptrack).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Journey orchestration as code")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output format of commands that report results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, check and compile a config repository; report every problem.
    Validate(validate::Args),
    /// Run the engine on a virtual clock over a JSONL event file.
    Simulate(simulate::SimulateArgs),
    /// Run the engine as a service: HTTP API, timers, deliveries.
    Run(run::Args),
    /// Run every JourneyTest of a config repository.
    Test(test::TestArgs),
    /// Post a JSON lines file of events to a running engine, in batches.
    SendEvents(send_events::Args),
    /// Show what the engine knows: `inspect user ID`.
    Inspect(inspect::Args),
    /// The dead-letter queue: `dlq list`, `dlq replay ID|--all`.
    Dlq(dlq::Args),
    /// A language server over stdio: live diagnostics, definitions,
    /// references, completion and hover for a config repository.
    Lsp(lsp::Args),
    /// What deploying DIR would change, compared with the deployed state
    /// (a store or a server) or another checkout (`--base`): exit 0 no
    /// changes, 2 changes, 1 error.
    Plan(plan::Args),
    /// Per journey and version: entries, holdout, sends by outcome, and
    /// conversion with the uplift and its 95% interval.
    Report(report::Args),
    /// Draw a journey's state machine (Mermaid or Graphviz dot).
    Graph(graph::Args),
    /// Deploy what `plan` shows (DEPLOY.md §3), optionally as a guarded
    /// canary.
    Apply(deploy::ApplyArgs),
    /// Make a journey's canary its stable version for every new entry.
    Promote(deploy::PromoteArgs),
    /// Send a journey's new entries back to its previous version (or drop
    /// its canary); live instances stay where they are.
    Rollback(deploy::JourneyArgs),
    /// Canaries: `canary status [JOURNEY]`.
    Canary(deploy::CanaryArgs),
    /// The audit log of applies, promotions and rollbacks.
    History(deploy::ListArgs),
    /// Write the JSON Schema of every kind to DIR (for editor completion).
    Schemas {
        /// Where to write `<Kind>.schema.json` and `sluice.schema.json`.
        #[arg(default_value = "schemas")]
        dir: std::path::PathBuf,
    },
}

/// Loads and compiles a repository for the commands that run it; on
/// failure prints every diagnostic to stderr and returns `None` (exit 1).
pub fn load_config(dir: &std::path::Path) -> Option<std::sync::Arc<journeys::Config>> {
    match journeys::load(dir) {
        Ok(c) => Some(std::sync::Arc::new(c)),
        Err(diags) => {
            for d in diags.iter() {
                eprintln!("{:?}", d.to_report());
            }
            let n = diags.errors().count();
            eprintln!(
                "{} is invalid: {n} error{}",
                dir.display(),
                if n == 1 { "" } else { "s" }
            );
            None
        }
    }
}

fn main() -> ExitCode {
    // A usage error exits 1, not clap's 2: CLI.md's exit codes are 0 and 1
    // (and `plan`'s 2 means "changes"); `--help` and `--version` exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Test(args) => test::run(args),
        Command::Run(args) => run::run(args),
        Command::SendEvents(args) => send_events::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Dlq(args) => dlq::run(args),
        Command::Lsp(args) => lsp::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Apply(args) => deploy::apply(args),
        Command::Promote(args) => deploy::promote(args),
        Command::Rollback(args) => deploy::rollback(args),
        Command::Canary(args) => deploy::canary(args),
        Command::History(args) => deploy::history(args),
        Command::Report(args) => report::run(args),
        Command::Schemas { dir } => journeys::schema::write_all(&dir)
            .map(|()| {
                outln!("wrote schemas to {}", dir.display());
                ExitCode::SUCCESS
            })
            .map_err(|e| {
                miette::miette!(
                    "cannot write schemas to `{}`: {}",
                    dir.display(),
                    input_file::reason(&e)
                )
            }),
    };
    match result {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    }
}
