//! `sluice inspect user ID`: a user's profile, live instances and recent
//! messages (RUN.md §5), from the store when no engine runs on it, else
//! through the API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use engine::service::client::{self, Client, Role};
use miette::miette;
use serde_json::Value;

use crate::Format;

/// Where `inspect` and `dlq` read: a store or a server.
#[derive(clap::Args, Debug, Clone)]
pub struct Source {
    /// The config repository.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
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
}

/// The server a command goes through: `--server`, else `SLUICE_SERVER`
/// unless `--store` was given; `None`: the store.
pub fn chosen_server(flag: Option<&str>, store_given: bool) -> Option<String> {
    flag.map(str::to_owned).or_else(|| {
        if store_given {
            None
        } else {
            std::env::var(client::SERVER_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty())
        }
    })
}

/// Which way a command went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Store,
    Server,
}

impl Source {
    fn client(&self, server: Option<&str>) -> miette::Result<Client> {
        let target =
            crate::send_events::target(&self.dir, server, self.token.as_deref(), Role::Admin)?;
        Client::new(target).map_err(|e| miette!("{e}"))
    }

    /// Runs `direct` on the store when no engine holds it, else `api`
    /// through the server (`--server`, `SLUICE_SERVER`, or, when `run`
    /// holds the store, the address it wrote there, else the Project's
    /// listen address).
    pub fn with<T>(
        &self,
        direct: impl FnOnce(&Arc<journeys::Config>, &Path) -> Result<T, client::Error>,
        api: impl FnOnce(&Client) -> Result<T, client::Error>,
    ) -> miette::Result<(T, Via)> {
        let server = chosen_server(self.server.as_deref(), self.store.is_some());
        if let Some(url) = server {
            let c = self.client(Some(&url))?;
            return api(&c)
                .map(|t| (t, Via::Server))
                .map_err(|e| miette!("{e}"));
        }
        let Some(config) = crate::load_config(&self.dir) else {
            return Err(miette!(
                "cannot read the config in {}; pass --server to ask a running engine",
                self.dir.display()
            ));
        };
        let store = self
            .store
            .clone()
            .unwrap_or_else(|| self.dir.join(&config.project.store));
        match direct(&config, &store) {
            Ok(t) => Ok((t, Via::Store)),
            Err(e) if e.is_locked() => {
                let c = self.client(client::running_server(&store).as_deref())?;
                eprintln!(
                    "{} is in use by `sluice run`; asking it at {}",
                    store.display(),
                    c.url()
                );
                api(&c)
                    .map(|t| (t, Via::Server))
                    .map_err(|e| miette!("{e}"))
            }
            Err(e) => Err(miette!("{e}")),
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// A user's profile, live instances and recent messages.
    User(UserArgs),
}

#[derive(clap::Args)]
pub struct UserArgs {
    /// The user's id.
    pub id: String,
    #[command(flatten)]
    pub source: Source,
    /// `human` (a summary) or `json` (RUN.md §5's document, the same from the store and the API).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let What::User(args) = args.what;
    let id = args.id.clone();
    let (found, _) = args.source.with(
        |config, store| client::inspect_store(config, store, &id),
        |c| c.user(&id),
    )?;
    let Some(view) = found else {
        eprintln!("unknown user `{}`", args.id);
        return Ok(ExitCode::from(1));
    };
    match args.format {
        Format::Json => outln!("{view}"),
        Format::Human => out!("{}", human(&view)),
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON value as a human line shows it: strings bare, null as `-`.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// The readable summary.
fn human(view: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "user {}", text(&view["user"]));
    match view["profile"].as_object() {
        Some(p) if !p.is_empty() => {
            let _ = writeln!(out, "profile:");
            for (k, v) in p {
                let _ = writeln!(out, "  {k}: {}", text(v));
            }
        }
        _ => {
            let _ = writeln!(out, "profile: (empty)");
        }
    }
    let empty = Vec::new();
    let instances = view["instances"].as_array().unwrap_or(&empty);
    let _ = writeln!(out, "instances: {}", instances.len());
    for i in instances {
        let _ = write!(
            out,
            "  {} v{} at step {}, entered {}",
            text(&i["journey"]),
            text(&i["version"]),
            text(&i["step"]),
            text(&i["entered_at"]),
        );
        if i["holdout"].as_bool() == Some(true) {
            let _ = write!(out, ", holdout");
        }
        if !i["waiting_until"].is_null() {
            let _ = write!(out, ", waiting until {}", text(&i["waiting_until"]));
        }
        let _ = writeln!(out);
    }
    let messages = view["messages"].as_array().unwrap_or(&empty);
    let _ = writeln!(out, "messages: {} (most recent first)", messages.len());
    for m in messages {
        let _ = write!(
            out,
            "  {} {}/{} {} {}",
            text(&m["at"]),
            text(&m["journey"]),
            text(&m["step"]),
            text(&m["channel"]),
            text(&m["outcome"]),
        );
        if !m["reason"].is_null() {
            let _ = write!(out, " ({})", text(&m["reason"]));
        }
        if !m["key"].is_null() {
            let _ = write!(out, " key {}", text(&m["key"]));
        }
        let _ = writeln!(out);
    }
    out
}
