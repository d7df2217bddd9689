//! `sluice run`: the engine as a service (RUN.md §1).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use miette::miette;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct Args {
    /// The config repository.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The store directory (default: the Project's `store`, inside DIR).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Address to listen on (default: the Project's `api.listen`).
    #[arg(long)]
    pub listen: Option<String>,
    /// Log format: text on a terminal, JSON lines for log collectors.
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Seconds in-flight deliveries may take at shutdown.
    #[arg(long, default_value_t = 10)]
    pub drain: u64,
    /// Deliveries at once, per channel.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    init_logs(args.log_format);
    let Some(config) = crate::load_config(&args.dir) else {
        return Ok(ExitCode::from(1));
    };
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| args.dir.join(&config.project.store));
    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| config.project.api.listen.clone());
    let options = engine::service::run::RunOptions {
        dir: args.dir.clone(),
        store,
        listen,
        drain: Duration::from_secs(args.drain),
        concurrency: args.concurrency,
    };
    engine::service::run::run(config, options, &|m| eprintln!("{m}"))
        .map_err(|e| miette!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}
