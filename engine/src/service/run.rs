//! `sluice run` as a library: opens the store, resolves the tokens and the
//! unsubscribe secret, starts the writer thread, the delivery workers and
//! the HTTP API, and shuts down on SIGTERM or SIGINT (stop accepting,
//! drain deliveries up to a deadline, commit, return).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use journeys::compiled::Config;

use crate::api::{self, Tokens};
use crate::clock::{Clock, WallClock};
use crate::deliver::sign::UnsubscribeSigner;
use crate::deliver::Providers;
use crate::engine::{self, Delivery, Engine};
use crate::metrics::{Decisions, Metrics};
use crate::output::{Line, Sink};
use crate::store::sled_store::{SledOptions, SledStore};

use super::{workers, Command, Writer, DRAINING};

/// How `sluice run` runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The config repository (outbox paths and `.sluice/credentials` are
    /// relative to it).
    pub dir: PathBuf,
    pub store: PathBuf,
    pub listen: String,
    /// How long in-flight deliveries may take at shutdown.
    pub drain: Duration,
    /// Deliveries at once, per channel.
    pub concurrency: usize,
}

/// Why the service could not start (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Engine(#[from] engine::Error),
    #[error(transparent)]
    Memory(#[from] super::memory::BadSetting),
    #[error("cannot set up the channels: {0}")]
    Providers(#[from] crate::deliver::Error),
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: String, message: String },
    #[error("cannot {what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(String),
    /// The service failed after it started; the message says what failed.
    #[error("{0}")]
    Failed(String),
    /// The cluster (NATS JetStream) failed: connecting, joining, leaving.
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("the SendGrid verification key in ${var} cannot be read: {message}")]
    SendgridKey { var: String, message: String },
}

/// Why binding the listen address failed, in words a user can act on
/// (never a bare `os error N`).
pub fn listen_failure(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::AddrInUse => "the address is already in use (another `sluice run` or another program listens there): stop it, or pass --listen with another address".to_owned(),
        K::AddrNotAvailable => "the address is not one of this machine's: pass --listen with a local address such as 127.0.0.1:7878".to_owned(),
        K::PermissionDenied => "permission denied (ports below 1024 need privileges): pass --listen with a port above 1023".to_owned(),
        _ => crate::os::reason(e),
    }
}

fn file_err<'a>(what: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> RunError + 'a {
    move |e| RunError::File {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Writes `text` to a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), RunError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(file_err("create", parent))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_err("write", &tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(file_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(file_err("write", path))
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

/// Reads `NAME=value` lines.
pub fn read_credentials(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Where `run` keeps generated tokens.
pub fn credentials_path(dir: &Path) -> PathBuf {
    dir.join(".sluice/credentials")
}

/// The variable holding the Segment webhook secret when the Project names
/// none (RUN.md §1's `api.segment_secret_env`, default shown there). Unset:
/// no signature is accepted.
pub const DEFAULT_SEGMENT_SECRET_ENV: &str = "SEGMENT_WEBHOOK_SECRET";

/// The tokens: from the Project's env vars, else from
/// `.sluice/credentials` (written by an earlier run), else generated and
/// written there (0600). Returns the path when the file was written.
pub fn resolve_tokens(
    config: &Config,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Tokens, Option<PathBuf>), RunError> {
    let api = &config.project.api;
    let path = credentials_path(dir);
    let saved = read_credentials(&path);
    let from_file = |name: &str| {
        saved
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let mut generated = false;
    let mut token = |name: &str| -> String {
        if let Some(v) = env(name).filter(|v| !v.is_empty()) {
            return v;
        }
        if let Some(v) = from_file(name) {
            return v;
        }
        generated = true;
        random_hex(24)
    };
    let ingest = token(&api.ingest_token_env);
    let admin = token(&api.admin_token_env);
    let written = if generated || (!saved.is_empty() && env(&api.ingest_token_env).is_none()) {
        let text = format!(
            "{}={ingest}\n{}={admin}\n",
            api.ingest_token_env, api.admin_token_env
        );
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            write_private(&path, &text)?;
        }
        Some(path)
    } else {
        None
    };
    let segment_secret = env(api
        .segment_secret_env
        .as_deref()
        .unwrap_or(DEFAULT_SEGMENT_SECRET_ENV))
    .filter(|v| !v.is_empty());
    Ok((
        Tokens {
            ingest,
            admin,
            segment_secret,
        },
        written,
    ))
}

/// The secret that signs unsubscribe links, kept in the store directory
/// (links in mail already sent must keep working across restarts).
fn unsubscribe_secret(store: &Path) -> Result<Vec<u8>, RunError> {
    let path = store.join("SECRET");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().as_bytes().to_vec()),
        _ => {
            let s = random_hex(32);
            write_private(&path, &format!("{s}\n"))?;
            Ok(s.into_bytes())
        }
    }
}

/// The env var that lets SNS certificates and subscription confirmations
/// come from URLs starting with its value instead of SNS's own hosts
/// (tests serve their own certificate on loopback; docs/feedback.md).
pub const SNS_URL_PREFIX_ENV: &str = "SLUICE_SNS_URL_PREFIX";

/// Feedback intake's settings from the Project (`api.feedback`) and the
/// environment. An unset SendGrid key variable leaves signed SendGrid
/// posts refused (a token still works); one that is set and unreadable
/// stops the start.
pub fn feedback_settings(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<api::feedback::Settings, RunError> {
    let f = &config.project.api.feedback;
    let mut settings = api::feedback::Settings {
        sns_topics: f.sns_topic_arns.clone(),
        ..api::feedback::Settings::default()
    };
    if let Some(var) = &f.sendgrid_public_key_env {
        if let Some(text) = env(var).filter(|v| !v.trim().is_empty()) {
            let key = crate::feedback::sendgrid::PublicKey::parse(&text).map_err(|message| {
                RunError::SendgridKey {
                    var: var.clone(),
                    message,
                }
            })?;
            settings.sendgrid_key = Some(key);
        }
    }
    if let Some(prefix) = env(SNS_URL_PREFIX_ENV).filter(|v| !v.is_empty()) {
        settings.sns_hosts = crate::feedback::sns::Hosts::Prefix(prefix);
    }
    Ok(settings)
}

/// Decisions go to the log (the store keeps the message log), at `debug`:
/// the journey, step, outcome and reason, never the user.
pub(crate) struct LogSink;

impl Sink for LogSink {
    fn line(&mut self, line: Line) {
        tracing::debug!(
            target: "sluice::decision",
            kind = %line.kind.as_str(),
            journey = %line.journey,
            step = line.step.as_deref().unwrap_or(""),
            outcome = line.outcome.map_or("", |o| o.as_str()),
            reason = %crate::metrics::redact_addresses(
                line.logged_reason
                    .as_deref()
                    .or(line.reason.as_deref())
                    .unwrap_or("")
            ),
            "decision"
        );
    }
}

/// Who deploys: `explicit` (`--actor`), else `$SLUICE_ACTOR`, else the OS
/// user.
pub fn actor(explicit: Option<&str>) -> String {
    actor_from(explicit, &|name| match name {
        OS_USER => os_user(),
        _ => std::env::var(name).ok(),
    })
}

/// The name [`actor_from`] asks for the OS user by: the account of the
/// process's real uid, read from the user database (`USER` and `LOGNAME`
/// are unset under cron, systemd and in containers).
const OS_USER: &str = "(uid)";

fn os_user() -> Option<String> {
    let uid = nix::unistd::Uid::current();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => Some(user.name),
        Ok(None) => Some(format!("uid {uid}")),
        Err(e) => {
            tracing::debug!("cannot look up uid {uid}: {e}");
            Some(format!("uid {uid}"))
        }
    }
}

/// [`actor`] with the environment given: the first of `explicit`,
/// `SLUICE_ACTOR`, `USER`, `LOGNAME` and the uid's account ([`OS_USER`])
/// that is not blank (an empty `SLUICE_ACTOR` falls through to the OS
/// user).
fn actor_from(explicit: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> String {
    explicit
        .map(str::to_owned)
        .into_iter()
        .chain(
            ["SLUICE_ACTOR", "USER", "LOGNAME", OS_USER]
                .into_iter()
                .filter_map(env),
        )
        .find(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Runs the deployed state of the store (DEPLOY.md §1): on a store with
/// nothing deployed, DIR is deployed first; when DIR differs from what is
/// deployed, the deployed state runs and `say` tells so. Returns the
/// config the engine now runs.
pub fn deploy_at_start(
    engine: &mut Engine,
    options: &RunOptions,
    now: crate::clock::Millis,
    say: &dyn Fn(&str),
) -> Result<Arc<Config>, RunError> {
    let deployed = engine.open_deployments(options.store.join("deployed"))?;
    let snapshot = crate::deploy::Snapshot::read(&options.dir).map_err(engine::Error::from)?;
    if !deployed {
        let applied = engine.apply(&crate::deploy::ApplyRequest {
            snapshot,
            actor: actor(None),
            at: now,
            canary: None,
            guards: Vec::new(),
            min_sends: 100,
            expected: Some(0),
        })?;
        say(&format!(
            "deployed {} as generation {} (nothing was deployed in {})",
            options.dir.display(),
            applied.generation,
            options.store.display()
        ));
    } else {
        let (plan, generation) = engine.plan(&snapshot)?;
        if !plan.is_empty() || plan.diagnostics.has_errors() {
            say(&format!(
                "{} differs from the deployed state (generation {generation}, {} change(s)): running the deployed state; run sluice plan / apply",
                options.dir.display(),
                plan.changes.len()
            ));
        }
    }
    Ok(Arc::clone(engine.config()))
}

/// Runs until SIGTERM or SIGINT. `say` prints what the operator must know
/// on stderr (never a token).
pub fn run(config: Arc<Config>, options: RunOptions, say: &dyn Fn(&str)) -> Result<(), RunError> {
    let env = |name: &str| std::env::var(name).ok();
    let (tokens, written) = resolve_tokens(&config, &options.dir, &env)?;
    let feedback = feedback_settings(&config, &env)?;
    if let crate::feedback::sns::Hosts::Prefix(p) = &feedback.sns_hosts {
        say(&format!(
            "warning: SNS certificates are fetched from {p} ({SNS_URL_PREFIX_ENV}), not from SNS"
        ));
    }
    if let Some(p) = written {
        say(&format!(
            "tokens: some token variables are unset; the tokens are in {}",
            p.display()
        ));
    }
    let bounds = super::memory::Bounds::from_env()?;
    let store = SledStore::open(
        &options.store,
        &SledOptions {
            sync_commits: true,
            pipeline: true,
            cache_bytes: bounds.store_cache_bytes,
            ..SledOptions::default()
        },
    )?;
    let recovered = store.recovery().to_string();
    if !recovered.is_empty() {
        say(&format!("warning: {recovered}"));
    }
    let clock: Arc<dyn Clock> = Arc::new(WallClock);
    let metrics = Metrics::new();
    let mut engine = Engine::open(
        Arc::clone(&config),
        Box::new(store),
        Arc::clone(&clock),
        Delivery::Workers,
        Box::new(Decisions::new(metrics.clone(), Box::new(LogSink))),
        engine::Options {
            log_messages: true,
            durable: true,
            cache_bytes: bounds.user_cache_bytes,
            ..engine::Options::default()
        },
    )?;
    let config = deploy_at_start(&mut engine, &options, clock.now_millis(), say)?;
    metrics.declare(&config);
    let secret = unsubscribe_secret(&options.store)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&options.listen))
        .map_err(|e| RunError::Listen {
            addr: options.listen.clone(),
            message: listen_failure(&e),
        })?;
    // The address bound, not the one asked for: `--listen 127.0.0.1:0`
    // serves (and links to) the port the OS picked.
    let listening = listener
        .local_addr()
        .map_or_else(|_| options.listen.clone(), |a| a.to_string());
    let public_url = config
        .project
        .api
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{listening}"));
    engine.set_unsubscribe_base(format!("{public_url}/v1/unsubscribe"));
    let signer = Arc::new(UnsubscribeSigner::for_config(&public_url, &secret, &config));
    let providers = Arc::new(Providers::from_project(
        &config.project,
        &options.dir,
        &env,
        Arc::clone(&signer) as Arc<dyn crate::deliver::UnsubscribeLinks>,
    )?);
    engine.set_signer(Arc::clone(&signer));

    // An unreachable SMTP server is said now, naming it, not at the
    // first send.
    rt.block_on(providers.ready())?;
    let (handle, rx) = super::channel();
    let (outlet, busy) = workers::spawn_with(
        rt.handle(),
        providers,
        handle.clone(),
        Arc::clone(&clock),
        options.concurrency,
        1_024,
        metrics.clone(),
    );
    metrics.watch(handle.state_cell(), busy.cell());
    let console = api::console::Settings::new(Arc::clone(&config), &public_url);
    let mut writer = Writer::new(
        engine,
        Arc::clone(&clock),
        outlet,
        handle.clone(),
        Some(signer),
    );
    writer.set_metrics(metrics.clone());
    writer.set_config_cell(console.config.clone());
    let writer_thread = std::thread::Builder::new()
        .name("sluice-writer".into())
        .spawn(move || -> Result<(), engine::Error> {
            writer.start()?;
            writer.run(&rx);
            Ok(())
        })
        .map_err(|e| RunError::Failed(format!("cannot start the writer thread: {e}")))?;
    say(&format!("listening on http://{listening}"));
    // Where commands that find the store held ask this engine.
    let server_file = options.store.join(super::client::SERVER_FILE);
    if let Err(e) = std::fs::write(&server_file, format!("http://{listening}\n")) {
        say(&format!(
            "warning: cannot write {}: {e}; commands on this store need --server",
            server_file.display()
        ));
    }

    let app = api::router_with(
        Arc::new(handle.clone()),
        tokens,
        api::Options {
            clock: Arc::clone(&clock),
            console: Some(console),
            feedback,
            metrics,
            ..api::Options::default()
        },
    );
    let draining = handle.clone();
    rt.block_on(api::serve(
        listener,
        app,
        async move {
            shutdown_signal().await;
            draining.set_state(DRAINING);
        },
        api::ServeOptions::default(),
    ));
    say("shutting down: draining deliveries");
    let deadline = Instant::now() + options.drain;
    while busy.count() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the last results reach the writer, then stop it (it commits).
    std::thread::sleep(Duration::from_millis(50));
    handle.send(Command::Stop);
    match writer_thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(RunError::Failed("the writer thread panicked".into())),
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    match std::fs::remove_file(&server_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => say(&format!(
            "warning: cannot remove {}: {e}",
            server_file.display()
        )),
    }
    say("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (`run` and `run --cluster` drain then).
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(api: &str) -> Config {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(
            dir.path().join("sluice.yaml"),
            format!("apiVersion: sluice/v1\nkind: Project\nid: t\n{api}"),
        )
        .expect("write");
        journeys::load(dir.path()).unwrap_or_else(|d| panic!("{d:?}"))
    }

    #[test]
    fn the_actor_is_the_first_of_flag_sluice_actor_and_os_user_not_blank() {
        let env = |name: &str| match name {
            "SLUICE_ACTOR" => Some(String::new()),
            "USER" => Some("ana".to_owned()),
            _ => None,
        };
        assert_eq!(actor_from(Some("ci"), &env), "ci");
        assert_eq!(actor_from(Some(" "), &env), "ana");
        assert_eq!(actor_from(None, &env), "ana", "an empty SLUICE_ACTOR");
        let set = |name: &str| (name == "SLUICE_ACTOR").then(|| "bot".to_owned());
        assert_eq!(actor_from(None, &set), "bot");
        assert_eq!(actor_from(None, &|_: &str| None), "unknown");
        // Without USER and LOGNAME (cron, systemd, containers): the uid's
        // account.
        let bare = |name: &str| (name == OS_USER).then(|| "root".to_owned());
        assert_eq!(actor_from(None, &bare), "root");
    }

    #[test]
    fn the_os_user_is_the_account_of_the_uid() {
        let name = os_user().expect("a name");
        // What `id -un` says, from the same user database.
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .expect("id runs");
        let want = String::from_utf8_lossy(&id.stdout).trim().to_owned();
        assert_eq!(name, want);
        assert!(!name.trim().is_empty());
    }

    #[test]
    fn the_segment_secret_comes_from_segment_webhook_secret_unless_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let env = |name: &str| match name {
            "SEGMENT_WEBHOOK_SECRET" => Some("default-secret".to_owned()),
            "MY_SEGMENT_SECRET" => Some("named-secret".to_owned()),
            _ => Some(format!("token-of-{name}")),
        };
        let (tokens, _) = resolve_tokens(&config(""), dir.path(), &env).expect("tokens");
        assert_eq!(tokens.segment_secret.as_deref(), Some("default-secret"));
        let named = config("api:\n  segment_secret_env: MY_SEGMENT_SECRET\n");
        let (tokens, _) = resolve_tokens(&named, dir.path(), &env).expect("tokens");
        assert_eq!(tokens.segment_secret.as_deref(), Some("named-secret"));
        let unset = |name: &str| (name != "SEGMENT_WEBHOOK_SECRET").then(|| format!("t-{name}"));
        let (tokens, _) = resolve_tokens(&config(""), dir.path(), &unset).expect("tokens");
        assert_eq!(
            tokens.segment_secret, None,
            "no secret: no signature accepted"
        );
    }
}
