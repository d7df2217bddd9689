//! `sluice run`: the engine as a service (RUN.md §1).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;
use miette::miette;

/// How `sluice run` writes its logs (on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
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
    /// Log format on stderr: human-readable text, or JSON lines for log
    /// collectors. Levels come from SLUICE_LOG (else RUST_LOG; default
    /// info).
    #[arg(long, value_enum, default_value_t, env = "SLUICE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Seconds in-flight deliveries may take at shutdown.
    #[arg(long, default_value_t = 10)]
    pub drain: u64,
    /// Deliveries at once, per channel.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Run as one worker of a cluster on NATS JetStream (URLs,
    /// comma-separated; docs/cluster.md). Without it, `run` is single-node.
    #[arg(long, value_name = "NATS_URL")]
    pub cluster: Option<String>,
    /// Partitions of the cluster, fixed when it is created (every worker
    /// must say the same).
    #[arg(long, default_value_t = engine::cluster::DEFAULT_PARTITIONS, requires = "cluster", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub partitions: u32,
    /// Names the cluster's streams and buckets in NATS (letters, digits,
    /// `_`, `-`), so several clusters can share one NATS.
    #[arg(long, default_value = "sluice", requires = "cluster")]
    pub cluster_name: String,
    /// Replicas of the cluster's streams and buckets (3 on a three-node
    /// NATS cluster).
    #[arg(long, default_value_t = 1, requires = "cluster", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
}

/// The crates whose logs a bare level (`SLUICE_LOG=debug`) applies to;
/// the others (sled, hyper, …) stay at `warn`.
const OWN_CRATES: [&str; 3] = ["sluice", "engine", "journeys"];

/// The level filter: `SLUICE_LOG`, else `RUST_LOG`, else `info`. A bare
/// level applies to sluice's own crates (dependencies stay at `warn`); a
/// filter with targets (`engine=debug,sled=info`) is taken as it is. An
/// invalid filter is reported and `info` used. Operator notices (the
/// listening address, the credentials path) always pass.
fn log_filter() -> (tracing_subscriber::EnvFilter, Option<String>) {
    use tracing_subscriber::EnvFilter;
    let scoped = |level: &str| {
        let mut f = String::from("warn");
        for c in OWN_CRATES {
            f.push_str(&format!(",{c}={level}"));
        }
        f
    };
    let mut chosen = (scoped("info"), None);
    for var in ["SLUICE_LOG", "RUST_LOG"] {
        let Ok(value) = std::env::var(var) else {
            continue;
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            continue;
        }
        let bare = ["off", "error", "warn", "info", "debug", "trace"]
            .contains(&value.to_ascii_lowercase().as_str());
        let text = if bare { scoped(&value) } else { value.clone() };
        chosen = match EnvFilter::builder().parse(&text) {
            Ok(_) => (text, None),
            Err(e) => (
                scoped("info"),
                Some(format!(
                    "{var}={value:?} is not a log filter ({e}); logging at info"
                )),
            ),
        };
        break;
    }
    let filter = EnvFilter::builder().parse_lossy(format!("{},{NOTICE}=info", chosen.0));
    (filter, chosen.1)
}

/// The target of what `run` tells its operator (also on stderr as plain
/// lines with text logs).
const NOTICE: &str = "sluice::notice";

fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let (filter, problem) = log_filter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    if let Err(e) = installed {
        eprintln!("warning: cannot set up logging: {e}");
    }
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
}

/// The service runs for weeks: transparent huge pages, which mimalloc asks
/// the kernel for (they make `simulate` ~8% faster), keep whole 2 MiB pages
/// resident when a few bytes of them are in use, and the service's memory
/// climbs with them (BENCHMARKS.md, issue 9 soak). Turned off for this
/// process only, before the engine allocates.
#[cfg(target_os = "linux")]
fn without_huge_pages() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!("cannot turn transparent huge pages off for this process: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn without_huge_pages() {}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    init_logs(args.log_format);
    let format = args.log_format;
    match serve(args) {
        // With JSON logs a fatal error (store in use, port taken, an
        // invalid config) is one JSON log line on stderr like any other;
        // with text logs, miette renders it. The exit code is 1 either way.
        Err(e) if format == LogFormat::Json => {
            tracing::error!(target: NOTICE, "{e}");
            Ok(ExitCode::from(1))
        }
        other => other,
    }
}

/// The config of `dir`, or why not: with text logs every diagnostic is
/// rendered on stderr (as `validate` does); with JSON logs they become
/// the error, one line (`file:line:col: code: message` each).
fn config(
    dir: &std::path::Path,
    format: LogFormat,
) -> miette::Result<Option<std::sync::Arc<journeys::Config>>> {
    if format == LogFormat::Text {
        return Ok(crate::load_config(dir));
    }
    match journeys::load(dir) {
        Ok(c) => Ok(Some(std::sync::Arc::new(c))),
        Err(diags) => {
            let errors: Vec<String> = diags
                .errors()
                .map(|d| {
                    let at = d
                        .file
                        .as_ref()
                        .map(|f| {
                            let (line, col) = f.index.line_col(&f.text, d.span.start);
                            format!("{}:{line}:{col}: ", f.name)
                        })
                        .unwrap_or_default();
                    format!("{at}{}: {}", d.code.as_str(), d.message)
                })
                .collect();
            let n = errors.len();
            Err(miette!(
                "{} is invalid: {n} error{}: {}",
                dir.display(),
                if n == 1 { "" } else { "s" },
                errors.join("; ")
            ))
        }
    }
}

fn serve(args: Args) -> miette::Result<ExitCode> {
    without_huge_pages();
    let Some(config) = config(&args.dir, args.log_format)? else {
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
    // With JSON logs every line on stderr is JSON: notices are log events.
    let say = |m: &str| match args.log_format {
        LogFormat::Text => eprintln!("{m}"),
        LogFormat::Json => tracing::info!(target: NOTICE, "{m}"),
    };
    if let Some(url) = args.cluster.clone() {
        let name = &args.cluster_name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(miette!(
                "--cluster-name {name:?}: use letters, digits, `_` and `-` only"
            ));
        }
        let cluster = engine::cluster::serve::ClusterOptions {
            url,
            prefix: name.clone(),
            partitions: args.partitions,
            replicas: usize::from(args.replicas),
        };
        engine::cluster::serve::run(config, options, cluster, &say).map_err(|e| miette!("{e}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    engine::service::run::run(config, options, &say).map_err(|e| miette!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}
