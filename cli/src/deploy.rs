//! `sluice apply`, `promote`, `rollback`, `canary status` and `history`
//! (DEPLOY.md), and the deployed side of `plan --store/--server`: on a
//! store when no engine runs on it, else through `/v1/admin/…`. Every
//! decision is the engine's ([`engine::engine::deploy`]); this module
//! moves requests and prints answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use base64::Engine as _;
use miette::miette;
use serde_json::{json, Value};

use engine::clock::{Clock, WallClock};
use engine::deploy::{ApplyRequest, Snapshot};
use engine::engine::deploy::{AdminFailure, AdminRequest};
use engine::engine::{Delivery, Engine};
use engine::output::{Line, Sink};
use engine::service::client::{self, Client, Role};
use engine::store::sled_store::{SledOptions, SledStore};
use journeys::plan::{Side, Which};

use crate::Format;

/// Where the deployed state is: a store or a running engine.
#[derive(clap::Args, Debug, Clone)]
pub struct Place {
    /// The deployed state in this store (default: the Project's `store`
    /// inside DIR, or the running engine that holds it).
    #[arg(long, conflicts_with = "server")]
    pub store: Option<PathBuf>,
    /// A running engine's URL (or `SLUICE_SERVER`): through its admin API.
    #[arg(long)]
    pub server: Option<String>,
    /// The admin token (default: `SLUICE_TOKEN`, else the Project's admin
    /// token variable, else `.sluice/credentials`).
    #[arg(long)]
    pub token: Option<String>,
}

struct Quiet;

impl Sink for Quiet {
    fn line(&mut self, _line: Line) {}
}

/// An open deployed state.
pub enum Target {
    Store(Box<Engine>),
    Server(Client),
}

impl Target {
    /// Opens `place` for the config repository `dir`: `--server` or
    /// `SLUICE_SERVER`, else the store (the running engine when it holds
    /// the store).
    pub fn open(dir: &Path, place: &Place) -> miette::Result<Target> {
        let server = crate::inspect::chosen_server(place.server.as_deref(), place.store.is_some());
        if let Some(url) = server {
            return Target::server(dir, Some(&url), place);
        }
        let Some(config) = crate::load_config(dir) else {
            return Err(match place.store {
                // The store is opened with the config beside it.
                Some(_) => miette!(
                    "cannot read the config in {}, which a store is opened with: name the config repository (DIR, or --dir), or pass --server",
                    dir.display()
                ),
                None => miette!(
                    "cannot read the config in {}; pass --store or --server",
                    dir.display()
                ),
            });
        };
        let store = place
            .store
            .clone()
            .unwrap_or_else(|| dir.join(&config.project.store));
        match open_store(&store, config) {
            Ok(e) => Ok(Target::Store(Box::new(e))),
            Err(Opened::Locked) => {
                let running = engine::service::client::running_server(&store);
                let t = Target::server(dir, running.as_deref(), place)?;
                if let Target::Server(c) = &t {
                    eprintln!(
                        "{} is in use by `sluice run`; asking it at {}",
                        store.display(),
                        c.url()
                    );
                }
                Ok(t)
            }
            Err(Opened::Failed(e)) => Err(e),
        }
    }

    fn server(dir: &Path, url: Option<&str>, place: &Place) -> miette::Result<Target> {
        let target = crate::send_events::target(dir, url, place.token.as_deref(), Role::Admin)?;
        Ok(Target::Server(
            Client::new(target).map_err(|e| miette!("{e}"))?,
        ))
    }

    /// Carries out `req`: the answer, or a refusal (status and body).
    pub fn ask(&mut self, req: AdminRequest) -> miette::Result<Result<Value, AdminFailure>> {
        match self {
            Target::Store(e) => {
                let now = WallClock.now_millis();
                e.admin(req, now).map_err(|e| miette!("{e}"))
            }
            Target::Server(c) => over_http(c, req),
        }
    }
}

enum Opened {
    Locked,
    Failed(miette::Report),
}

fn open_store(store: &Path, config: Arc<journeys::Config>) -> Result<Engine, Opened> {
    if !store.exists() {
        return Err(Opened::Failed(miette!(
            "no store at {}: nothing is deployed there (sluice run deploys DIR when it starts; or pass --store or --server)",
            store.display()
        )));
    }
    let s = match SledStore::open(
        store,
        &SledOptions {
            sync_commits: true,
            ..SledOptions::default()
        },
    ) {
        Ok(s) => s,
        Err(engine::store::Error::Locked { .. }) => return Err(Opened::Locked),
        Err(e) => return Err(Opened::Failed(miette!("{e}"))),
    };
    let clock: Arc<dyn Clock> = Arc::new(WallClock);
    let mut e = Engine::open(
        config,
        Box::new(s),
        clock,
        Delivery::Workers,
        Box::new(Quiet),
        engine::engine::Options::default(),
    )
    .map_err(|e| Opened::Failed(miette!("{e}")))?;
    e.open_deployments(store.join("deployed"))
        .map_err(|e| Opened::Failed(miette!("{e}")))?;
    Ok(e)
}

fn b64(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect()
}

fn over_http(c: &Client, req: AdminRequest) -> miette::Result<Result<Value, AdminFailure>> {
    use reqwest::Method;
    let enc = |s: &str| client::encode_segment(s);
    let (method, path, body) = match req {
        AdminRequest::Deployed => (Method::GET, "/v1/admin/deployed".to_owned(), None),
        AdminRequest::Plan(s) => (
            Method::POST,
            "/v1/admin/plan".to_owned(),
            Some(json!({"files": b64(&s.files)})),
        ),
        AdminRequest::Apply(r) => (
            Method::POST,
            "/v1/admin/apply".to_owned(),
            Some(json!({
                "files": b64(&r.snapshot.files),
                "expected_generation": r.expected,
                "actor": r.actor,
                "canary": r.canary.map(|bp| format!("{}%", f64::from(bp) / 100.0)),
                "guards": r.guards,
                "min_sends": r.min_sends,
            })),
        ),
        AdminRequest::Promote {
            journey,
            force,
            actor,
        } => (
            Method::POST,
            "/v1/admin/promote".to_owned(),
            Some(json!({"journey": journey, "force": force, "actor": actor})),
        ),
        AdminRequest::Rollback { journey, actor } => (
            Method::POST,
            "/v1/admin/rollback".to_owned(),
            Some(json!({"journey": journey, "actor": actor})),
        ),
        AdminRequest::Canary { journey } => (
            Method::GET,
            match journey {
                Some(j) => format!("/v1/admin/canary?journey={}", enc(&j)),
                None => "/v1/admin/canary".to_owned(),
            },
            None,
        ),
        AdminRequest::History { journey } => (
            Method::GET,
            match journey {
                Some(j) => format!("/v1/admin/history?journey={}", enc(&j)),
                None => "/v1/admin/history".to_owned(),
            },
            None,
        ),
    };
    let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
    let a = c.request(method, &path, body).map_err(|e| miette!("{e}"))?;
    if (200..300).contains(&a.status) {
        Ok(Ok(a.body))
    } else if a.status == 404 && a.body["error"] == "not found" {
        Err(miette!(
            "{} does not serve /v1/admin (an older sluice?)",
            c.url()
        ))
    } else {
        Ok(Err(AdminFailure {
            status: a.status,
            body: a.body,
        }))
    }
}

/// Prints a refusal: its message, and the diagnostics when the config
/// does not validate.
fn refused(f: &AdminFailure) {
    eprintln!("error: {}", f.body["error"].as_str().unwrap_or("refused"));
    // The engine answers validate's document (`errors`).
    if let Some(ds) = f.body["diagnostics"]["errors"]
        .as_array()
        .or_else(|| f.body["diagnostics"]["diagnostics"].as_array())
        .or_else(|| f.body["diagnostics"].as_array())
    {
        for d in ds {
            eprintln!(
                "  {}:{}:{}: {}: {}",
                d["file"].as_str().unwrap_or(""),
                d["line"],
                d["column"],
                d["code"].as_str().unwrap_or(""),
                d["message"].as_str().unwrap_or("")
            );
        }
    }
}

/// The deployed side of a plan: the deployed files written to a temporary
/// directory and loaded, the live instances per step, the generation.
pub struct Deployed {
    pub side: Side,
    pub live: Live,
    pub generation: u64,
    pub dir: tempfile::TempDir,
    /// Per journey, the versions its new entries go to: stable, canary.
    pub running: BTreeMap<String, (u32, Option<u32>)>,
    /// Per journey with a canary, its share of new entries in basis points.
    pub shares: BTreeMap<String, u32>,
}

/// A journey whose config did not change but whose new entries run another
/// version (after a rollback): apply rolls the config's version out again.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rerollout {
    pub journey: String,
    pub running: u32,
    pub version: u32,
}

impl Deployed {
    /// The running canaries an apply of `head` with `--canary` at `bp`
    /// basis points gives another share (the engine's
    /// `deploy::state::reshares`): journeys `plan` does not change whose
    /// version is their canary's. Each: journey, version, share before.
    pub fn reshares(
        &self,
        head: &Side,
        plan: &journeys::plan::Plan,
        bp: u32,
    ) -> Vec<(String, u32, u32)> {
        head.config
            .journeys
            .iter()
            .filter(|j| !plan.changes_journey(&j.id))
            .filter_map(|j| {
                let (_, canary) = *self.running.get(&j.id)?;
                let share = *self.shares.get(&j.id)?;
                (canary == Some(j.version) && share != bp).then(|| (j.id.clone(), j.version, share))
            })
            .collect()
    }

    /// The journeys of `head` unchanged from the deployed config (the same
    /// version) whose version their rollout does not run. A journey whose
    /// version changed is an update of the plan, not a rollout again.
    pub fn rerollouts(&self, head: &Side) -> Vec<Rerollout> {
        head.config
            .journeys
            .iter()
            .filter_map(|j| {
                self.side
                    .config
                    .journeys
                    .iter()
                    .find(|b| b.id == j.id && b.version == j.version)?;
                let (stable, canary) = *self.running.get(&j.id)?;
                (stable != j.version && canary != Some(j.version)).then(|| Rerollout {
                    journey: j.id.clone(),
                    running: canary.unwrap_or(stable),
                    version: j.version,
                })
            })
            .collect()
    }
}

/// One line per journey rolled out again.
pub fn rerollout_lines(rs: &[Rerollout]) -> String {
    rs.iter()
        .map(|r| {
            format!(
                "~ roll out Journey {} v{} again (new entries run v{} since a rollback)\n",
                r.journey, r.version, r.running
            )
        })
        .collect()
}

/// Live instances per journey version and step, and the definitions of
/// the older versions they are on (from the generations that hold them).
#[derive(Debug, Default)]
pub struct Live {
    per_step: BTreeMap<(String, u32), BTreeMap<String, u64>>,
    definitions: BTreeMap<(String, u32), Arc<journeys::compiled::Journey>>,
}

/// Writes `files` (`{path: base64}`) under `dir`.
fn write_files(dir: &Path, files: &serde_json::Map<String, Value>) -> miette::Result<()> {
    let mut snapshot = Snapshot::default();
    for (name, b) in files {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b.as_str().unwrap_or_default())
            .map_err(|e| miette!("the deployed file {name} is not base64: {e}"))?;
        snapshot.files.insert(name.clone(), bytes);
    }
    snapshot.check_paths().map_err(|e| miette!("{e}"))?;
    for (name, bytes) in &snapshot.files {
        let path = dir.join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| miette!("cannot write {}: {e}", p.display()))?;
        }
        std::fs::write(&path, bytes)
            .map_err(|e| miette!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

pub fn deployed(target: &mut Target) -> miette::Result<Deployed> {
    let v = match target.ask(AdminRequest::Deployed)? {
        Ok(v) => v,
        Err(f) => {
            refused(&f);
            return Err(miette!("cannot read the deployed state"));
        }
    };
    let dir =
        tempfile::tempdir().map_err(|e| miette!("cannot create a temporary directory: {e}"))?;
    if let Some(files) = v["files"].as_object() {
        write_files(dir.path(), files)?;
    }
    let side = Side::load(dir.path(), Which::Base)
        .map_err(|e| miette!("the deployed config does not validate with this sluice: {e}"))?;
    let mut live: BTreeMap<(String, u32), BTreeMap<String, u64>> = BTreeMap::new();
    for l in v["live"].as_array().into_iter().flatten() {
        let (Some(j), Some(ver), Some(step), Some(n)) = (
            l["journey"].as_str(),
            l["version"].as_u64().and_then(|v| u32::try_from(v).ok()),
            l["step"].as_str(),
            l["live"].as_u64(),
        ) else {
            continue;
        };
        live.entry((j.to_owned(), ver))
            .or_default()
            .insert(step.to_owned(), n);
    }
    // Older versions live instances are on: a `migrate` block from one of
    // them is checked against its steps. A generation this sluice cannot
    // compile any more leaves its versions unknown to the plan.
    let mut definitions = BTreeMap::new();
    for files in v["older"].as_object().into_iter().flat_map(|o| o.values()) {
        let Some(files) = files.as_object() else {
            continue;
        };
        let older =
            tempfile::tempdir().map_err(|e| miette!("cannot create a temporary directory: {e}"))?;
        write_files(older.path(), files)?;
        if let Ok(side) = Side::load(older.path(), Which::Base) {
            for j in &side.config.journeys {
                definitions
                    .entry((j.id.clone(), j.version))
                    .or_insert_with(|| Arc::clone(j));
            }
        }
    }
    let running = v["running"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(j, r)| {
            let stable = u32::try_from(r["stable"].as_u64()?).ok()?;
            let canary = r["canary"].as_u64().and_then(|c| u32::try_from(c).ok());
            Some((j.clone(), (stable, canary)))
        })
        .collect();
    let shares = v["running"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(j, r)| {
            let share = r["share"].as_f64()?;
            Some((j.clone(), (share * 100.0).round() as u32))
        })
        .collect();
    Ok(Deployed {
        side,
        live: Live {
            per_step: live,
            definitions,
        },
        generation: v["generation"].as_u64().unwrap_or(0),
        dir,
        running,
        shares,
    })
}

impl journeys::plan::InFlight for Live {
    fn live_per_step(&self, journey: &str, version: u32) -> BTreeMap<String, u64> {
        self.per_step
            .get(&(journey.to_owned(), version))
            .cloned()
            .unwrap_or_default()
    }

    fn definition(&self, journey: &str, version: u32) -> Option<Arc<journeys::compiled::Journey>> {
        self.definitions
            .get(&(journey.to_owned(), version))
            .cloned()
    }
}

// ---------------------------------------------------------------- apply

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// The config repository to deploy.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Send this share of each changed journey's new entries to its new
    /// version (e.g. `10%`); the previous stable keeps the rest.
    #[arg(long, value_name = "PCT")]
    pub canary: Option<String>,
    /// Guards the running engine checks each minute, comma-separated:
    /// `failed_rate < 2%, suppressed_rate < +50%`. A broken one rolls the
    /// canary back.
    #[arg(long, value_name = "EXPR", requires = "canary")]
    pub guard: Vec<String>,
    /// Send decisions each version needs before guards are checked.
    #[arg(long, default_value_t = 100)]
    pub min_sends: u64,
    /// Who applies (default: `SLUICE_ACTOR`, else the OS user).
    #[arg(long)]
    pub actor: Option<String>,
    #[command(flatten)]
    pub place: Place,
    /// `human` (readable lines) or `json` (one JSON document).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn apply(args: ApplyArgs) -> miette::Result<ExitCode> {
    let canary = args
        .canary
        .as_deref()
        .map(engine::api::admin::parse_share)
        .transpose()
        .map_err(|e| miette!("{e}"))?;
    let guards: Vec<String> = args
        .guard
        .iter()
        .flat_map(|g| engine::api::admin::split_guards(g))
        .collect();
    for g in &guards {
        engine::deploy::guard::parse(g).map_err(|e| miette!("{e}"))?;
    }
    // The head must validate here first: nothing is sent otherwise.
    let head = match Side::load(&args.dir, Which::Head) {
        Ok(h) => h,
        Err(journeys::plan::Error::Invalid {
            diagnostics, dir, ..
        }) => {
            for d in diagnostics.iter() {
                eprintln!("{:?}", d.to_report());
            }
            eprintln!("{} is invalid: nothing was applied", dir.display());
            return Ok(ExitCode::from(1));
        }
    };
    let snapshot = Snapshot::read(&args.dir).map_err(|e| miette!("{e}"))?;
    let mut target = Target::open(&args.dir, &args.place)?;
    let base = deployed(&mut target)?;
    let plan = journeys::plan::plan(&base.side, &head, Some(&base.live));
    if plan.diagnostics.has_errors() {
        for d in plan.diagnostics.iter() {
            eprintln!("{:?}", d.to_report());
        }
        eprintln!(
            "{}: nothing was applied",
            crate::plan::blocked_title(&plan.diagnostics)
        );
        return Ok(ExitCode::from(1));
    }
    let rerolled = base.rerollouts(&head);
    let reshared = canary
        .map(|bp| base.reshares(&head, &plan, bp))
        .unwrap_or_default();
    let nothing = plan.is_empty() && rerolled.is_empty();
    if args.format == Format::Human {
        for (j, version, from) in &reshared {
            outln!(
                "~ canary Journey {j} v{version}: {}% → {}% of new entries",
                f64::from(*from) / 100.0,
                f64::from(canary.unwrap_or_default()) / 100.0
            );
        }
        if !nothing || reshared.is_empty() {
            out!(
                "{}",
                crate::plan::human_against_deployed_with(&plan, &base.side, &head, &rerolled)
            );
        }
    }
    if nothing && reshared.is_empty() {
        if args.format == Format::Json {
            outln!(
                "{}",
                json!({"applied": false, "generation": base.generation, "plan": plan.to_json()})
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let request = ApplyRequest {
        snapshot,
        actor: engine::service::run::actor(args.actor.as_deref()),
        at: WallClock.now_millis(),
        canary,
        guards,
        min_sends: args.min_sends,
        expected: Some(base.generation),
    };
    // What a running engine sets up once, at start.
    let restart: Vec<&String> = plan
        .changes
        .iter()
        .filter(|c| c.kind == "Project")
        .flat_map(|c| c.fields.iter())
        .filter(|f| matches!(f.as_str(), "channels" | "api" | "store"))
        .collect();
    match target.ask(AdminRequest::Apply(request))? {
        Ok(v) => {
            if !restart.is_empty() && matches!(target, Target::Server(_)) {
                let names: Vec<&str> = restart.iter().map(|s| s.as_str()).collect();
                eprintln!(
                    "note: the Project's {} changed: a running engine takes them up when it restarts (its journeys, templates, segments and policies changed now)",
                    names.join(", ")
                );
            }
            match args.format {
                Format::Json => outln!("{v}"),
                Format::Human => {
                    outln!(
                        "applied: generation {}{}",
                        v["generation"],
                        match canary {
                            Some(bp) => format!(
                                ", changed journeys' new versions take {}% of new entries",
                                f64::from(bp) / 100.0
                            ),
                            None => String::new(),
                        }
                    );
                    if let Some(m) = v["migrated"].as_object() {
                        for (j, c) in m {
                            outln!(
                                "migrated {j}: {} kept their timer, {} restarted at apply, {} completed, {} exited (migrated_out), {} stayed",
                                c["kept"], c["restarted"], c["completed"], c["exited"], c["stayed"]
                            );
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(f) if f.status == 409 => {
            eprintln!(
                "error: {}",
                f.body["error"]
                    .as_str()
                    .unwrap_or("the deployed state moved")
            );
            // Re-plan against what is deployed now, so the change is seen.
            let now = deployed(&mut target)?;
            let again = journeys::plan::plan(&now.side, &head, Some(&now.live));
            eprintln!("what apply would do now (generation {}):", now.generation);
            eprint!(
                "{}",
                crate::plan::human_against_deployed(&again, &now.side, &head)
            );
            Ok(ExitCode::from(1))
        }
        Err(f) => {
            refused(&f);
            Ok(ExitCode::from(1))
        }
    }
}

// ------------------------------------------------- promote, rollback

#[derive(clap::Args)]
pub struct JourneyArgs {
    /// The journey.
    pub journey: String,
    /// The config repository (for the Project: store, server, token).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Who does it (default: `SLUICE_ACTOR`, else the OS user).
    #[arg(long)]
    pub actor: Option<String>,
    #[command(flatten)]
    pub place: Place,
    /// `human` (readable lines) or `json` (one JSON document).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// `promote`'s arguments: a journey's, and `--force` (`rollback` has none).
#[derive(clap::Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub journey: JourneyArgs,
    /// Promote even while a guard is broken.
    #[arg(long)]
    pub force: bool,
}

fn print_audit(v: &Value, format: Format) {
    match format {
        Format::Json => outln!("{v}"),
        Format::Human => outln!("{}", audit_line(v)),
    }
}

fn audit_line(v: &Value) -> String {
    let d = &v["detail"];
    let what = match v["action"].as_str().unwrap_or("") {
        "apply" => {
            let n = d["changes"].as_array().map_or(0, Vec::len);
            let mut s = format!("apply generation {}: {n} change(s)", d["generation"]);
            if let Some(c) = d["canary"].as_f64() {
                s.push_str(&format!(", canary {c}%"));
            }
            if let Some(g) = d["guards"].as_array().filter(|g| !g.is_empty()) {
                let g: Vec<&str> = g.iter().filter_map(Value::as_str).collect();
                s.push_str(&format!(", guards: {}", g.join(", ")));
            }
            if let Some(r) = d["rolled_out_again"].as_array().filter(|r| !r.is_empty()) {
                let r: Vec<String> = r
                    .iter()
                    .map(|r| format!("{} v{}", r["journey"].as_str().unwrap_or(""), r["version"]))
                    .collect();
                s.push_str(&format!(", rolled out again: {}", r.join(", ")));
            }
            for r in d["canary_shares"].as_array().into_iter().flatten() {
                s.push_str(&format!(
                    ", canary {} v{} {}% → {}%",
                    r["journey"].as_str().unwrap_or(""),
                    r["version"],
                    r["from_share"].as_f64().unwrap_or_default(),
                    r["to_share"].as_f64().unwrap_or_default()
                ));
            }
            if let Some(m) = d["migrated"].as_object() {
                for (j, c) in m {
                    s.push_str(&format!(
                        ", migrated {j}: {} kept, {} restarted, {} completed, {} exited, {} stayed",
                        c["kept"], c["restarted"], c["completed"], c["exited"], c["stayed"]
                    ));
                }
            }
            s
        }
        "promote" => format!(
            "promote {}: v{} → v{}{}",
            v["journey"].as_str().unwrap_or(""),
            d["from_version"],
            d["to_version"],
            if d["forced"] == true { " (forced)" } else { "" }
        ),
        "rollback" | "auto_rollback" => {
            let j = v["journey"].as_str().unwrap_or("");
            let mut s = if d.get("canary_version").is_some_and(|c| !c.is_null()) {
                format!(
                    "{} {j}: canary v{} removed, new entries back on v{}",
                    v["action"].as_str().unwrap_or(""),
                    d["canary_version"],
                    d["stable_version"]
                )
            } else {
                format!(
                    "{} {j}: v{} → v{}",
                    v["action"].as_str().unwrap_or(""),
                    d["from_version"],
                    d["to_version"]
                )
            };
            if let Some(g) = d["guard"].as_str() {
                s.push_str(&format!(
                    " (guard `{g}` broken: canary {}, stable {})",
                    pct(&d["rates"]["canary_rate"]),
                    pct(&d["rates"]["stable_rate"])
                ));
            }
            s
        }
        other => other.to_owned(),
    };
    format!(
        "{}  {:<14} {}",
        v["at"].as_str().unwrap_or(""),
        v["actor"].as_str().unwrap_or(""),
        what
    )
}

fn pct(v: &Value) -> String {
    match v.as_f64() {
        Some(r) => format!("{:.2}%", r * 100.0),
        None => "–".into(),
    }
}

pub fn promote(args: PromoteArgs) -> miette::Result<ExitCode> {
    let PromoteArgs {
        journey: args,
        force,
    } = args;
    let req = AdminRequest::Promote {
        journey: args.journey.clone(),
        force,
        actor: engine::service::run::actor(args.actor.as_deref()),
    };
    audited(&args, req)
}

pub fn rollback(args: JourneyArgs) -> miette::Result<ExitCode> {
    let req = AdminRequest::Rollback {
        journey: args.journey.clone(),
        actor: engine::service::run::actor(args.actor.as_deref()),
    };
    audited(&args, req)
}

/// Carries out a request whose answer is an audit entry, and prints it.
fn audited(args: &JourneyArgs, req: AdminRequest) -> miette::Result<ExitCode> {
    let mut target = Target::open(&args.dir, &args.place)?;
    match target.ask(req)? {
        Ok(v) => {
            print_audit(&v, args.format);
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            refused(&f);
            Ok(ExitCode::from(1))
        }
    }
}

// ------------------------------------------------- history, canary status

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only this journey.
    pub journey: Option<String>,
    /// The config repository (for the Project: store, server, token).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub place: Place,
    /// `human` (readable lines) or `json` (one JSON document).
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub fn history(args: ListArgs) -> miette::Result<ExitCode> {
    let mut target = Target::open(&args.dir, &args.place)?;
    match target.ask(AdminRequest::History {
        journey: args.journey.clone(),
    })? {
        Ok(v) => {
            match args.format {
                Format::Json => outln!("{v}"),
                Format::Human => {
                    for e in v.as_array().into_iter().flatten() {
                        outln!("{}", audit_line(e));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            refused(&f);
            Ok(ExitCode::from(1))
        }
    }
}

#[derive(clap::Args)]
pub struct CanaryArgs {
    #[command(subcommand)]
    pub what: CanaryWhat,
}

#[derive(clap::Subcommand)]
pub enum CanaryWhat {
    /// Each canary's share, sends and rates per version, and its guards;
    /// exit 1 when a guard is broken or a canary was rolled back.
    Status(ListArgs),
}

pub fn canary(args: CanaryArgs) -> miette::Result<ExitCode> {
    let CanaryWhat::Status(args) = args.what;
    let mut target = Target::open(&args.dir, &args.place)?;
    let v = match target.ask(AdminRequest::Canary {
        journey: args.journey.clone(),
    })? {
        Ok(v) => v,
        Err(f) => {
            refused(&f);
            return Ok(ExitCode::from(1));
        }
    };
    let list = v.as_array().cloned().unwrap_or_default();
    let broken = list.iter().any(|s| s["broken"] == true);
    match args.format {
        Format::Json => outln!("{v}"),
        Format::Human => {
            if list.is_empty() {
                outln!("no canaries");
            }
            for s in &list {
                let j = s["journey"].as_str().unwrap_or("");
                match s["canary_version"].as_u64() {
                    None => {
                        let rb = &s["rolled_back"];
                        if rb.is_null() {
                            outln!("{j}: no canary (stable v{})", s["stable_version"]);
                        } else {
                            outln!(
                                "{j}: canary v{} ROLLED BACK at {}: {} (stable v{})",
                                rb["version"],
                                rb["at"].as_str().unwrap_or(""),
                                rb["reason"].as_str().unwrap_or(""),
                                s["stable_version"]
                            );
                        }
                    }
                    Some(cv) => {
                        outln!(
                            "{j}: canary v{cv} takes {}% of new entries since {} (stable v{})",
                            s["share"],
                            s["since"].as_str().unwrap_or(""),
                            s["stable_version"]
                        );
                        for (name, c) in [("stable", &s["stable"]), ("canary", &s["canary"])] {
                            outln!(
                                "  {name:<6} sends {:>7}  failed {}  suppressed {}  unsubscribed {}",
                                c["sends"],
                                pct(&c["failed_rate"]),
                                pct(&c["suppressed_rate"]),
                                pct(&c["unsubscribe_rate"])
                            );
                        }
                        for g in s["guards"].as_array().into_iter().flatten() {
                            outln!(
                                "  guard {:<28} {:<8} canary {}  stable {}",
                                g["guard"].as_str().unwrap_or(""),
                                g["state"].as_str().unwrap_or(""),
                                pct(&g["canary_rate"]),
                                pct(&g["stable_rate"])
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(if broken {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apply_line_names_what_it_rolled_out_again_and_migrated() {
        let rolled = json!({
            "at": "2026-03-02T09:00:00.000Z", "actor": "ci", "action": "apply",
            "detail": {"generation": 3, "changes": [], "canary": null, "guards": [],
                       "rolled_out_again": [{"journey": "onboard", "running": 1, "version": 2}]},
        });
        assert!(
            audit_line(&rolled)
                .ends_with("apply generation 3: 0 change(s), rolled out again: onboard v2"),
            "{}",
            audit_line(&rolled)
        );
        let reshared = json!({
            "at": "2026-03-02T09:00:00.000Z", "actor": "ci", "action": "apply",
            "detail": {"generation": 5, "changes": [], "canary": 60.0, "guards": [],
                       "canary_shares": [{"journey": "onboard", "version": 2, "from_share": 10.0, "to_share": 60.0}]},
        });
        assert!(
            audit_line(&reshared).ends_with(
                "apply generation 5: 0 change(s), canary 60%, canary onboard v2 10% → 60%"
            ),
            "{}",
            audit_line(&reshared)
        );
        let migrated = json!({
            "at": "2026-03-02T09:00:00.000Z", "actor": "ci", "action": "apply",
            "detail": {"generation": 4, "changes": [{"kind": "Journey", "id": "onboard"}],
                       "rolled_out_again": [],
                       "migrated": {"onboard": {"kept": 20, "restarted": 0, "completed": 1, "exited": 10, "stayed": 0}}},
        });
        assert!(
            audit_line(&migrated).ends_with(
                "apply generation 4: 1 change(s), migrated onboard: 20 kept, 0 restarted, 1 completed, 10 exited, 0 stayed"
            ),
            "{}",
            audit_line(&migrated)
        );
    }
}
