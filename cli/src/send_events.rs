//! `sluice send-events FILE`: posts a JSONL file to a running engine
//! (RUN.md §5). The batching, retries and line mapping are in
//! `engine::service::client`.

use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use engine::service::client::{self, Client, Progress, Role, Target};
use miette::miette;
use serde_json::json;

use crate::Format;

#[derive(clap::Args)]
pub struct Args {
    /// The JSON lines file of events (FORMAT.md §4).
    pub file: PathBuf,
    /// The engine's URL (default: `SLUICE_SERVER`, else the Project's
    /// `api.listen`).
    #[arg(long)]
    pub server: Option<String>,
    /// The ingest (or admin) token (default: `SLUICE_TOKEN`, else the
    /// Project's token variable, else `.sluice/credentials`).
    #[arg(long)]
    pub token: Option<String>,
    /// Lines per request.
    #[arg(long, default_value_t = client::DEFAULT_BATCH as u64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    /// The config repository whose Project names the server and tokens.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// `json`: one document at the end,
    /// `{"accepted":…,"duplicates":…,"rejected":[{"line":…,"message":…}],"error":…}`.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// The server and token for a client command: flags and variables first;
/// the Project of `dir` only when they do not say.
pub fn target(
    dir: &Path,
    server: Option<&str>,
    token: Option<&str>,
    role: Role,
) -> miette::Result<Target> {
    let env = |k: &str| std::env::var(k).ok();
    let mut cached: Option<client::ApiSettings> = None;
    let mut project = || -> miette::Result<client::ApiSettings> {
        if let Some(a) = &cached {
            return Ok(a.clone());
        }
        let config = crate::load_config(dir).ok_or_else(|| {
            miette!(
                "cannot read the Project in {} (needed for the server or token); pass --server and --token",
                dir.display()
            )
        })?;
        let a = client::ApiSettings::of(&config);
        cached = Some(a.clone());
        Ok(a)
    };
    let url = client::server_url(server, &env, &mut project)?;
    match client::token(token, role, dir, &env, &mut project)? {
        Ok(token) => Ok(Target { url, token }),
        Err(variable) => Err(miette!(
            "{}",
            client::Error::NoToken {
                url,
                variable,
                credentials: engine::service::run::credentials_path(dir),
            }
        )),
    }
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    crate::input_file::check("the events file", &args.file).map_err(|m| miette!("{m}"))?;
    let file = std::fs::File::open(&args.file).map_err(|e| {
        miette!(
            "cannot read the events file `{}`: {}",
            args.file.display(),
            crate::input_file::reason(&e)
        )
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let target = target(
        &args.dir,
        args.server.as_deref(),
        args.token.as_deref(),
        Role::Ingest,
    )?;
    let client = Client::new(target).map_err(|e| miette!("{e}"))?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let name = args.file.display().to_string();
    let json = args.format == Format::Json;
    let mut rejected = Vec::new();
    let mut on = |p: Progress<'_>| match p {
        Progress::Bytes(n) => {
            if let Some(b) = &bar {
                b.set_position(n);
            }
        }
        Progress::Rejected { line, message } if json => {
            rejected.push(json!({"line": line, "message": message}));
        }
        Progress::Rejected { line, message } => {
            let print = || outln!("{name}:{line}: {message}");
            match &bar {
                Some(b) => b.suspend(print),
                None => print(),
            }
        }
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let result = client::send_events(
        &client,
        &mut reader,
        &args.file,
        args.batch as usize,
        &mut on,
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let (sent, error) = match result {
        Ok(s) => (s, None),
        Err((s, e)) => (s, Some(e)),
    };
    if json {
        let doc = json!({
            "accepted": sent.accepted,
            "duplicates": sent.duplicates,
            "rejected": rejected,
            "error": error.as_ref().map(|e| format!(
                "{e}; the lines after the last answered batch were not sent"
            )),
        });
        outln!("{doc}");
    } else {
        outln!(
            "accepted {}, duplicates {}, rejected {}",
            sent.accepted,
            sent.duplicates,
            sent.rejected
        );
    }
    if let Some(e) = error {
        return Err(miette!(
            "{e}; the lines after the last answered batch were not sent"
        ));
    }
    Ok(if sent.rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
