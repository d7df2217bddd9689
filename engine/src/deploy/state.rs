//! The deployed state as the engine runs it: a repository's config files
//! kept as numbered generations in the store, each generation written out
//! under the store directory and compiled once, and the runtime composed
//! from them (the stable version of each journey for new entries, its
//! canary, and every older version live instances stay on). Also what an
//! apply, a promote and a rollback change in that state, computed purely
//! from the state and a plan: the shell ([`crate::engine`]) commits it and
//! moves live instances.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use journeys::compiled::{Config, Journey, Next, Trigger};
use journeys::model::OnUnmapped;
use journeys::plan::{self, Action, InFlight, Plan, Side, Which};
use journeys::Diagnostics;

use crate::clock::Millis;
use crate::store::deployments::{
    AuditEntry, CanaryRollout, Deployed, Deployments, Generation, Pin, ResourceVersion, RolledBack,
    Rollout, SendCounts, FORMAT,
};
use crate::store::{self, Kv};

use super::guard::{self, Guard};
use super::versions::{Canary, Versions};

/// The largest config a deployment takes (all files together).
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

/// Why a deployment step was refused or failed. Nothing is changed then.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot {what} {path}: {message}")]
    Io {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The config to apply (or a deployed generation) does not validate.
    #[error("{what} does not validate")]
    Invalid {
        what: String,
        diagnostics: Diagnostics,
    },
    /// `version_not_bumped` and other plan errors.
    #[error("the plan has errors")]
    Plan { diagnostics: Diagnostics },
    /// The deployed state changed since the plan was made.
    #[error("the deployed state changed since it was read (generation {read}, now {now}): nothing was applied; run plan again")]
    Moved { read: u64, now: u64 },
    #[error("{0}")]
    Refused(String),
    #[error("the deployment records are damaged: {0}")]
    Corrupt(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    move |e| Error::Io {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn digest(files: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (name, hash) in files {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(hash.as_bytes());
        h.update([b'\n']);
    }
    hex::encode(h.finalize())
}

/// The files of a config repository that a deployment keeps
/// ([`journeys::load::config_files`]), by path relative to the repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Snapshot {
    /// Reads the config files of `root`. A file that cannot be read is an
    /// error naming it; YAML problems are left to validation.
    pub fn read(root: &Path) -> Result<Snapshot, Error> {
        let mut diags = Diagnostics::default();
        let names = journeys::load::config_files(root, &mut diags);
        let mut files = BTreeMap::new();
        let mut total = 0usize;
        for name in names {
            let path = root.join(&name);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                // A template naming a missing file: validation says so.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("read", &path)(e)),
            };
            total += bytes.len();
            if total > MAX_SNAPSHOT_BYTES {
                return Err(Error::Refused(format!(
                    "the config in {} is larger than {} MiB",
                    root.display(),
                    MAX_SNAPSHOT_BYTES >> 20
                )));
            }
            files.insert(name, bytes);
        }
        Ok(Snapshot { files })
    }

    /// Checks paths a client sent: relative, inside the repository.
    pub fn check_paths(&self) -> Result<(), Error> {
        for name in self.files.keys() {
            let p = Path::new(name);
            let bad = name.is_empty()
                || p.is_absolute()
                || p.components().any(|c| {
                    !matches!(c, std::path::Component::Normal(_))
                        || c.as_os_str().to_string_lossy().starts_with('.')
                });
            if bad {
                return Err(Error::Refused(format!(
                    "config file path `{name}` is not a plain relative path"
                )));
            }
        }
        let total: usize = self.files.values().map(Vec::len).sum();
        if total > MAX_SNAPSHOT_BYTES {
            return Err(Error::Refused(format!(
                "the config is larger than {} MiB",
                MAX_SNAPSHOT_BYTES >> 20
            )));
        }
        Ok(())
    }

    /// What identifies these files: a hash of their names and hashes.
    pub fn digest(&self) -> String {
        digest(
            &self
                .files
                .iter()
                .map(|(n, b)| (n.clone(), sha256_hex(b)))
                .collect(),
        )
    }

    /// Writes the files under `dir` (created; existing files replaced).
    fn write_to(&self, dir: &Path) -> Result<(), Error> {
        for (name, bytes) in &self.files {
            let path = dir.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            std::fs::write(&path, bytes).map_err(io("write", &path))?;
        }
        Ok(())
    }
}

/// What the engine runs: the config new entries use (every journey at its
/// stable version, the templates, segments and policies of the current
/// generation, one renderer holding every version's texts) and every
/// runnable version.
pub struct Runtime {
    pub config: Arc<Config>,
    pub versions: Versions,
}

/// Writes generations out under the store directory and compiles them,
/// each once.
pub struct Loader {
    dir: PathBuf,
    configs: HashMap<u64, Arc<Config>>,
    /// The generation last written out by [`Loader::stage`] (the head of a
    /// plan or an apply, not in the store until committed) and its digest.
    staged: Option<(u64, String)>,
}

const COMPLETE: &str = ".complete";

fn compile_dir(dir: &Path, what: impl FnOnce() -> String) -> Result<Config, Error> {
    let (config, diagnostics) = journeys::check(dir);
    match config {
        Some(c) if !diagnostics.has_errors() => Ok(c),
        _ => Err(Error::Invalid {
            what: what(),
            diagnostics,
        }),
    }
}

impl Loader {
    /// `dir`: where generations are written (`<store>/deployed`).
    pub fn new(dir: PathBuf) -> Loader {
        Loader {
            dir,
            configs: HashMap::new(),
            staged: None,
        }
    }

    fn generation_dir(&self, n: u64) -> PathBuf {
        self.dir.join(format!("g{n}"))
    }

    /// Generation `n`'s files on disk, written from the store when missing
    /// (each file checked against its hash).
    pub fn dir_of(&mut self, kv: &dyn Kv, n: u64) -> Result<PathBuf, Error> {
        let dir = self.generation_dir(n);
        if let Some((_, digest)) = self.staged.as_ref().filter(|(s, _)| *s == n) {
            if std::fs::read(dir.join(COMPLETE)).ok().as_deref() == Some(digest.as_bytes()) {
                return Ok(dir);
            }
        }
        let g = kv
            .generation(n)?
            .ok_or_else(|| Error::Corrupt(format!("generation {n} is not in the store")))?;
        // Written out earlier, and of these very files (a plan may have
        // staged other files under the same number).
        if std::fs::read(dir.join(COMPLETE)).ok().as_deref() == Some(digest(&g.files).as_bytes()) {
            return Ok(dir);
        }
        let mut snapshot = Snapshot::default();
        for (name, hash) in &g.files {
            let bytes = kv.file(hash)?.ok_or_else(|| {
                Error::Corrupt(format!("file {name} of generation {n} is missing"))
            })?;
            if sha256_hex(&bytes) != *hash {
                return Err(Error::Corrupt(format!(
                    "file {name} of generation {n} does not match its hash"
                )));
            }
            snapshot.files.insert(name.clone(), bytes);
        }
        self.stage(n, &snapshot)
    }

    /// Writes `snapshot` as generation `n`'s directory (replacing a partial
    /// one): a temporary directory renamed into place.
    pub fn stage(&mut self, n: u64, snapshot: &Snapshot) -> Result<PathBuf, Error> {
        self.configs.remove(&n);
        let dir = self.generation_dir(n);
        let tmp = self.dir.join(format!(".g{n}.{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
        snapshot.write_to(&tmp)?;
        std::fs::write(tmp.join(COMPLETE), snapshot.digest()).map_err(io("write", &tmp))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(io("rename", &dir))?;
        self.staged = Some((n, snapshot.digest()));
        Ok(dir)
    }

    /// Generation `n`, compiled (cached).
    pub fn config(&mut self, kv: &dyn Kv, n: u64) -> Result<Arc<Config>, Error> {
        if let Some(c) = self.configs.get(&n) {
            return Ok(Arc::clone(c));
        }
        let dir = self.dir_of(kv, n)?;
        let c = Arc::new(compile_dir(&dir, || format!("deployed generation {n}"))?);
        self.configs.insert(n, Arc::clone(&c));
        Ok(c)
    }

    /// The journey of a pin.
    fn journey(&mut self, kv: &dyn Kv, id: &str, pin: Pin) -> Result<Arc<Journey>, Error> {
        let c = self.config(kv, pin.generation)?;
        match c.journey(id) {
            Some(j) if j.version == pin.version => Ok(Arc::clone(j)),
            Some(j) => Err(Error::Corrupt(format!(
                "journey {id} is version {} in generation {}, not {}",
                j.version, pin.generation, pin.version
            ))),
            None => Err(Error::Corrupt(format!(
                "journey {id} is not in generation {}",
                pin.generation
            ))),
        }
    }

    /// The runtime of a deployed state.
    pub fn runtime(&mut self, kv: &dyn Kv, d: &Deployed) -> Result<Runtime, Error> {
        let dir = self.dir_of(kv, d.generation)?;
        let mut config = compile_dir(&dir, || format!("deployed generation {}", d.generation))?;
        let mut versions = Versions::default();
        let mut stable = Vec::new();
        for (id, r) in &d.journeys {
            for pin in r.previous.iter().chain(&r.retained) {
                versions.add(self.journey(kv, id, *pin)?);
            }
            let s = self.journey(kv, id, r.stable)?;
            versions.add(Arc::clone(&s));
            if !r.deleted {
                stable.push(s);
            }
            if let Some(c) = &r.canary {
                versions.set_canary(Canary {
                    journey: self.journey(kv, id, c.pin)?,
                    basis_points: c.basis_points,
                });
            }
        }
        stable.sort_by(|a, b| a.id.cmp(&b.id));
        let mut renderer = (*config.renderer).clone();
        for j in versions.all() {
            for t in &j.texts {
                renderer.register(t);
            }
        }
        config.journeys = stable;
        config.renderer = Arc::new(renderer);
        Ok(Runtime {
            config: Arc::new(config),
            versions,
        })
    }
}

/// Whether two entry triggers are the same (a canary may not change how
/// a journey is entered: the index that routes events is the stable's).
fn same_trigger(a: &Trigger, b: &Trigger) -> bool {
    match (a, b) {
        (Trigger::Event(x), Trigger::Event(y)) | (Trigger::Segment(x), Trigger::Segment(y)) => {
            x == y
        }
        (
            Trigger::Schedule {
                source: s1,
                zone: z1,
                segment: g1,
                ..
            },
            Trigger::Schedule {
                source: s2,
                zone: z2,
                segment: g2,
                ..
            },
        ) => s1 == s2 && z1 == z2 && g1 == g2,
        _ => false,
    }
}

/// A move of live instances from one version to another (DEPLOY.md §6).
#[derive(Debug, Clone)]
pub struct Migration {
    pub journey: String,
    pub from: u32,
    pub to: Arc<Journey>,
    /// Old step → new state or end.
    pub steps: BTreeMap<String, Next>,
    pub on_unmapped: OnUnmapped,
}

/// What an apply asks for.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    pub snapshot: Snapshot,
    pub actor: String,
    pub at: Millis,
    /// The canary share of each changed journey, in basis points.
    pub canary: Option<u32>,
    pub guards: Vec<String>,
    pub min_sends: u64,
    /// The generation the caller's plan was made against (0: nothing
    /// deployed); `None` applies against whatever is deployed.
    pub expected: Option<u64>,
}

/// The records an apply writes, and what follows.
#[derive(Default)]
pub struct Change {
    pub deployed: Option<Deployed>,
    pub generation: Option<Generation>,
    /// New file contents by hash.
    pub files: Vec<(String, Vec<u8>)>,
    /// Resource versions with their sequence numbers.
    pub versions: Vec<(u64, ResourceVersion)>,
    pub audit: Vec<AuditEntry>,
    pub migrations: Vec<Migration>,
    /// The runtime to switch to.
    pub runtime: Option<Runtime>,
}

/// What an apply would do, and the records doing it.
pub struct Prepared {
    pub plan: Plan,
    pub change: Change,
    /// Journeys whose config did not change but whose new entries run
    /// another version (a rollback): the apply rolls this one out again.
    pub rerolled: Vec<Rerollout>,
}

/// A journey whose deployed config holds `version` while its new entries
/// go to `running` (after a rollback): applying the same config rolls
/// `version` out again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rerollout {
    pub journey: String,
    pub running: u32,
    pub version: u32,
}

/// Journeys of `head` unchanged from the deployed config (`base`: the
/// same version) whose version is neither the stable nor the canary
/// version their rollout runs. A journey whose version changed is an
/// update of the plan, not a rollout again.
pub fn rerollouts(d: &Deployed, base: &Config, head: &Config) -> Vec<Rerollout> {
    head.journeys
        .iter()
        .filter_map(|j| {
            base.journeys
                .iter()
                .find(|b| b.id == j.id && b.version == j.version)?;
            let r = d.journeys.get(&j.id).filter(|r| !r.deleted)?;
            let canary = r.canary.as_ref().map(|c| c.pin.version);
            (r.stable.version != j.version && canary != Some(j.version)).then(|| Rerollout {
                journey: j.id.clone(),
                running: canary.unwrap_or(r.stable.version),
                version: j.version,
            })
        })
        .collect()
}

/// A running canary whose share an apply with `--canary` changes: its
/// journey is unchanged and its version is the canary's (DEPLOY.md §1:
/// the same users stay in the canary as it grows).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reshare {
    pub journey: String,
    pub version: u32,
    /// Percent of new entries before and after.
    pub from_share: f64,
    pub to_share: f64,
}

/// The canaries of `d` that an apply of `head` with `--canary` at `bp`
/// basis points gives another share: journeys `plan` does not change
/// whose version is their running canary's.
pub fn reshares(d: &Deployed, head: &Config, plan: &Plan, bp: u32) -> Vec<Reshare> {
    head.journeys
        .iter()
        .filter(|j| !plan.changes_journey(&j.id))
        .filter_map(|j| {
            let r = d.journeys.get(&j.id).filter(|r| !r.deleted)?;
            let c = r
                .canary
                .as_ref()
                .filter(|c| c.pin.version == j.version && c.basis_points != bp)?;
            Some(Reshare {
                journey: j.id.clone(),
                version: j.version,
                from_share: f64::from(c.basis_points) / 100.0,
                to_share: f64::from(bp) / 100.0,
            })
        })
        .collect()
}

fn empty_side(loader: &mut Loader) -> Result<Side, Error> {
    let dir = loader.dir.join(".empty");
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    Side::load(&dir, Which::Base).map_err(|plan::Error::Invalid { diagnostics, .. }| {
        Error::Invalid {
            what: "an empty config".into(),
            diagnostics,
        }
    })
}

/// The base side of a plan: the current generation's files.
pub fn base_side(loader: &mut Loader, kv: &dyn Kv, d: Option<&Deployed>) -> Result<Side, Error> {
    match d {
        None => empty_side(loader),
        Some(d) => {
            let dir = loader.dir_of(kv, d.generation)?;
            Side::load(&dir, Which::Base).map_err(|plan::Error::Invalid { diagnostics, .. }| {
                Error::Invalid {
                    what: format!("deployed generation {}", d.generation),
                    diagnostics,
                }
            })
        }
    }
}

/// The head side of a plan: a snapshot written out as the next generation
/// (not recorded until applied).
pub fn head_side(loader: &mut Loader, d: Option<&Deployed>, s: &Snapshot) -> Result<Side, Error> {
    let next = d.map_or(1, |d| d.generation + 1);
    let dir = loader.stage(next, s)?;
    Side::load(&dir, Which::Head).map_err(|plan::Error::Invalid { diagnostics, .. }| {
        Error::Invalid {
            what: "the config to apply".into(),
            diagnostics,
        }
    })
}

fn new_deployed() -> Deployed {
    Deployed {
        format: FORMAT,
        generation: 0,
        journeys: BTreeMap::new(),
        audit_seq: 0,
        version_seq: 0,
    }
}

fn audit(
    d: &mut Deployed,
    at: Millis,
    actor: &str,
    action: &str,
    journey: Option<&str>,
    detail: Value,
) -> AuditEntry {
    d.audit_seq += 1;
    AuditEntry {
        seq: d.audit_seq,
        at,
        actor: actor.to_owned(),
        action: action.to_owned(),
        journey: journey.map(str::to_owned),
        detail,
    }
}

/// Plans `req` against the deployed state and computes the records that
/// apply it. `counts` gives a version's send counts now (a canary's
/// baselines). Refuses, changing nothing, when the deployed state moved
/// since `req.expected`, when the config does not validate, when a
/// journey changed without a new version, or when a canary would change
/// how its journey is entered.
pub fn prepare_apply(
    loader: &mut Loader,
    kv: &dyn Kv,
    current: Option<&Deployed>,
    req: &ApplyRequest,
    in_flight: &dyn InFlight,
    counts: &dyn Fn(&str, u32) -> SendCounts,
) -> Result<Prepared, Error> {
    let now_gen = current.map_or(0, |d| d.generation);
    if let Some(read) = req.expected {
        if read != now_gen {
            return Err(Error::Moved { read, now: now_gen });
        }
    }
    if let Some(bp) = req.canary {
        if bp > 10_000 {
            return Err(Error::Refused(format!(
                "a canary share is between 0% and 100%, not {}%",
                f64::from(bp) / 100.0
            )));
        }
    }
    let guards: Vec<Guard> = req
        .guards
        .iter()
        .map(|g| guard::parse(g).map_err(Error::Refused))
        .collect::<Result<_, _>>()?;
    if !guards.is_empty() && req.canary.is_none() {
        return Err(Error::Refused(
            "--guard needs --canary: guards compare a canary with its stable version".into(),
        ));
    }
    req.snapshot.check_paths()?;
    let base = base_side(loader, kv, current)?;
    let head = head_side(loader, current, &req.snapshot)?;
    let plan = plan::plan(&base, &head, Some(in_flight));
    if plan.diagnostics.has_errors() {
        return Err(Error::Plan {
            diagnostics: plan.diagnostics,
        });
    }
    let rerolled = current
        .map(|d| rerollouts(d, &base.config, &head.config))
        .unwrap_or_default();
    let reshared = match (current, req.canary) {
        (Some(d), Some(bp)) => reshares(d, &head.config, &plan, bp),
        _ => Vec::new(),
    };
    if plan.is_empty() && rerolled.is_empty() && reshared.is_empty() {
        return Ok(Prepared {
            plan,
            change: Change::default(),
            rerolled,
        });
    }
    let mut d = current.cloned().unwrap_or_else(new_deployed);
    let n = now_gen + 1;
    d.generation = n;
    let mut change = Change::default();

    // The files, content-addressed.
    let mut files = BTreeMap::new();
    for (name, bytes) in &req.snapshot.files {
        let hash = sha256_hex(bytes);
        if kv.file(&hash)?.is_none() && !change.files.iter().any(|(h, _)| *h == hash) {
            change.files.push((hash.clone(), bytes.clone()));
        }
        files.insert(name.clone(), hash);
    }
    change.generation = Some(Generation {
        number: n,
        at: req.at,
        actor: req.actor.clone(),
        files,
    });

    // Resource versions.
    let hashes = plan::content_hashes(&head);
    for c in &plan.changes {
        let version = match &c.journey {
            Some(j) => j.to_version.or(j.from_version).unwrap_or(0),
            None => {
                let id = if c.kind == "Project" {
                    ""
                } else {
                    c.id.as_str()
                };
                let before = kv.resource_versions(c.kind, id)?;
                u32::try_from(before.len() + 1).unwrap_or(u32::MAX)
            }
        };
        let id = if c.kind == "Project" {
            String::new()
        } else {
            c.id.clone()
        };
        let hash = hashes
            .get(&(c.kind, id.clone()))
            .cloned()
            .unwrap_or_default();
        d.version_seq += 1;
        change.versions.push((
            d.version_seq,
            ResourceVersion {
                kind: c.kind.to_owned(),
                id,
                version,
                hash,
                action: c.action.as_str().to_owned(),
                generation: n,
                at: req.at,
                actor: req.actor.clone(),
            },
        ));
    }

    // Rollouts.
    let changed: HashMap<&str, &plan::Change> = plan
        .changes
        .iter()
        .filter(|c| c.kind == "Journey")
        .map(|c| (c.id.as_str(), c))
        .collect();
    for j in &head.config.journeys {
        let pin = Pin {
            version: j.version,
            generation: n,
        };
        let action = changed.get(j.id.as_str()).map(|c| c.action).or_else(|| {
            rerolled
                .iter()
                .any(|r| r.journey == j.id)
                .then_some(Action::Update)
        });
        match action {
            Some(Action::Create) => {
                let old = d.journeys.remove(&j.id);
                if let Some(top) = old.as_ref().and_then(top_version) {
                    if j.version <= top {
                        return Err(Error::Refused(format!(
                            "journey `{}` was deleted at v{top} and its old versions may still \
                             have users: created again it needs `version: {}` or more (v{} would \
                             be two journeys under one number)",
                            j.id,
                            top.saturating_add(1),
                            j.version
                        )));
                    }
                }
                d.journeys.insert(j.id.clone(), created(old, pin));
            }
            Some(Action::Update) => {
                let Some(r) = d.journeys.get_mut(&j.id) else {
                    return Err(Error::Corrupt(format!(
                        "journey {} is deployed but has no rollout",
                        j.id
                    )));
                };
                r.deleted = false;
                r.rolled_back = None;
                if let Some(old) = r.canary.take() {
                    r.retained.push(old.pin);
                }
                match req.canary {
                    Some(bp) => {
                        let stable = loader.journey(kv, &j.id, r.stable)?;
                        if !same_trigger(&stable.entry.trigger, &j.entry.trigger) {
                            return Err(Error::Refused(format!(
                                "journey {} version {} enters differently from version {} (entry event, segment or schedule): a canary cannot change how a journey is entered; apply it without --canary",
                                j.id, j.version, stable.version
                            )));
                        }
                        r.canary = Some(CanaryRollout {
                            pin,
                            basis_points: bp,
                            guards: req.guards.clone(),
                            min_sends: req.min_sends,
                            since: req.at,
                            baseline_stable: counts(&j.id, r.stable.version),
                            baseline_canary: counts(&j.id, j.version),
                        });
                    }
                    None => {
                        r.previous.push(r.stable);
                        r.stable = pin;
                    }
                }
                let planned = changed.contains_key(j.id.as_str());
                if let (Some(m), true) = (&j.migrate, planned) {
                    change.migrations.push(Migration {
                        journey: j.id.clone(),
                        from: m.from,
                        to: Arc::clone(j),
                        steps: m.steps.clone(),
                        on_unmapped: m.on_unmapped,
                    });
                }
            }
            _ => {
                // Unchanged: the same version, now read from this
                // generation (older generations are then needed only for
                // older versions).
                if let Some(r) = d.journeys.get_mut(&j.id) {
                    if r.stable.version == j.version {
                        r.stable = pin;
                    }
                    if let Some(c) = r.canary.as_mut().filter(|c| c.pin.version == j.version) {
                        c.pin = pin;
                        if let (Some(bp), true) =
                            (req.canary, reshared.iter().any(|x| x.journey == j.id))
                        {
                            // Its guards stay unless the apply names others.
                            c.basis_points = bp;
                            if !req.guards.is_empty() {
                                c.guards = req.guards.clone();
                                c.min_sends = req.min_sends;
                            }
                        }
                    }
                }
            }
        }
    }
    for c in plan
        .changes
        .iter()
        .filter(|c| c.kind == "Journey" && c.action == Action::Delete)
    {
        if let Some(r) = d.journeys.get_mut(&c.id) {
            r.deleted = true;
            if let Some(old) = r.canary.take() {
                r.retained.push(old.pin);
            }
        }
    }
    let changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|c| {
            let mut o = json!({"kind": c.kind, "id": c.id, "action": c.action.as_str()});
            if let Some(j) = &c.journey {
                o["from_version"] = json!(j.from_version);
                o["to_version"] = json!(j.to_version);
            }
            o
        })
        .collect();
    let entry = audit(
        &mut d,
        req.at,
        &req.actor,
        "apply",
        None,
        json!({
            "generation": n,
            "changes": changes,
            "canary": req.canary.map(|bp| f64::from(bp) / 100.0),
            "guards": req.guards,
            "rolled_out_again": rerolled,
            "canary_shares": reshared,
        }),
    );
    change.audit.push(entry);
    change.runtime = Some(loader.runtime(kv, &d)?);
    change.deployed = Some(d);
    Ok(Prepared {
        plan,
        change,
        rerolled,
    })
}

/// The highest version a journey's rollout knows (its live instances may
/// be on any of them).
fn top_version(r: &Rollout) -> Option<u32> {
    r.previous
        .iter()
        .chain(&r.retained)
        .chain(std::iter::once(&r.stable))
        .chain(r.canary.as_ref().map(|c| &c.pin))
        .map(|p| p.version)
        .max()
}

/// The rollout of a journey created at `pin`. A journey deleted earlier
/// may still have live instances on its versions: they stay known (to
/// their end, DEPLOY.md §1), never run on the new journey by step id.
fn created(old: Option<Rollout>, pin: Pin) -> Rollout {
    let mut retained = Vec::new();
    if let Some(o) = old {
        retained.extend(o.previous);
        retained.extend(o.retained);
        retained.push(o.stable);
        retained.extend(o.canary.map(|c| c.pin));
    }
    Rollout {
        stable: pin,
        previous: Vec::new(),
        canary: None,
        rolled_back: None,
        retained,
        deleted: false,
    }
}

fn rollout_mut<'d>(d: &'d mut Deployed, journey: &str) -> Result<&'d mut Rollout, Error> {
    d.journeys
        .get_mut(journey)
        .ok_or_else(|| Error::Refused(format!("journey `{journey}` is not deployed")))
}

/// `promote JOURNEY`: the canary becomes stable for every new entry.
/// Refused without a canary, and while a guard is broken unless `force`.
pub fn prepare_promote(
    d: &Deployed,
    journey: &str,
    force: bool,
    broken: Option<&str>,
    actor: &str,
    at: Millis,
) -> Result<(Deployed, AuditEntry), Error> {
    let mut d = d.clone();
    let r = rollout_mut(&mut d, journey)?;
    let Some(c) = r.canary.take() else {
        return Err(Error::Refused(format!(
            "journey `{journey}` has no canary to promote"
        )));
    };
    if let (Some(b), false) = (broken, force) {
        return Err(Error::Refused(format!(
            "journey `{journey}`'s canary breaks its guard `{b}`: promote refused (--force to promote anyway)"
        )));
    }
    let from = r.stable.version;
    r.previous.push(r.stable);
    r.stable = c.pin;
    r.rolled_back = None;
    let detail = json!({"from_version": from, "to_version": c.pin.version, "forced": force && broken.is_some()});
    let e = audit(&mut d, at, actor, "promote", Some(journey), detail);
    Ok((d, e))
}

/// `rollback JOURNEY`: new entries go back to the previous stable version
/// (or the canary is removed). Live instances stay where they are.
/// `guard`: the broken guard and both rates, for an automatic rollback.
pub fn prepare_rollback(
    d: &Deployed,
    journey: &str,
    guard: Option<(String, Value)>,
    actor: &str,
    at: Millis,
) -> Result<(Deployed, AuditEntry), Error> {
    let mut d = d.clone();
    let r = rollout_mut(&mut d, journey)?;
    if r.deleted {
        return Err(Error::Refused(format!(
            "journey `{journey}` was deleted: it takes no new entries to send back; apply a config with it to bring it back"
        )));
    }
    let detail;
    if let Some(c) = r.canary.take() {
        r.retained.push(c.pin);
        r.rolled_back = Some(RolledBack {
            version: c.pin.version,
            at,
            guard: guard.as_ref().map(|(g, _)| g.clone()),
            reason: match &guard {
                Some((g, _)) => format!("guard `{g}` broken"),
                None => format!("rolled back by {actor}"),
            },
        });
        detail = json!({
            "canary_version": c.pin.version,
            "stable_version": r.stable.version,
            "guard": guard.as_ref().map(|(g, _)| g),
            "rates": guard.as_ref().map(|(_, v)| v),
        });
    } else if let Some(prev) = r.previous.pop() {
        let from = r.stable.version;
        r.retained.push(r.stable);
        r.stable = prev;
        detail = json!({"from_version": from, "to_version": prev.version});
    } else {
        return Err(Error::Refused(format!(
            "journey `{journey}` has no canary and no earlier version to roll back to"
        )));
    }
    let action = if guard.is_some() {
        "auto_rollback"
    } else {
        "rollback"
    };
    let e = audit(&mut d, at, actor, action, Some(journey), detail);
    Ok((d, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(version: u32, generation: u64) -> Pin {
        Pin {
            version,
            generation,
        }
    }

    fn with_canary() -> Deployed {
        let mut journeys = BTreeMap::new();
        journeys.insert(
            "cart".to_owned(),
            Rollout {
                stable: pin(1, 1),
                previous: Vec::new(),
                canary: Some(CanaryRollout {
                    pin: pin(2, 2),
                    basis_points: 1000,
                    guards: vec!["failed_rate < 2%".into()],
                    min_sends: 100,
                    since: 0,
                    baseline_stable: SendCounts::default(),
                    baseline_canary: SendCounts::default(),
                }),
                rolled_back: None,
                retained: Vec::new(),
                deleted: false,
            },
        );
        Deployed {
            format: FORMAT,
            generation: 2,
            journeys,
            audit_seq: 3,
            version_seq: 9,
        }
    }

    #[test]
    fn promote_makes_the_canary_stable_and_is_refused_while_a_guard_is_broken() {
        let d = with_canary();
        let e = prepare_promote(&d, "cart", false, Some("failed_rate < 2%"), "ana", 5)
            .expect_err("broken guard");
        assert!(e.to_string().contains("--force"), "{e}");
        let (p, entry) =
            prepare_promote(&d, "cart", true, Some("failed_rate < 2%"), "ana", 5).expect("forced");
        let r = &p.journeys["cart"];
        assert_eq!(r.stable, pin(2, 2));
        assert_eq!(r.previous, vec![pin(1, 1)]);
        assert!(r.canary.is_none());
        assert_eq!(entry.seq, 4);
        assert_eq!(entry.detail["forced"], true);
        let e = prepare_promote(&p, "cart", false, None, "ana", 6).expect_err("no canary");
        assert!(e.to_string().contains("has no canary"), "{e}");
        let e = prepare_promote(&p, "nope", false, None, "ana", 6).expect_err("unknown");
        assert!(e.to_string().contains("not deployed"), "{e}");
    }

    #[test]
    fn rollback_drops_the_canary_first_then_returns_to_the_previous_stable() {
        let d = with_canary();
        let guard = Some(("failed_rate < 2%".to_owned(), json!({"canary_rate": 0.5})));
        let (d1, e1) = prepare_rollback(&d, "cart", guard, "sluice", 7).expect("auto");
        assert_eq!(e1.action, "auto_rollback");
        let r = &d1.journeys["cart"];
        assert!(r.canary.is_none());
        assert_eq!(r.stable, pin(1, 1));
        assert_eq!(r.retained, vec![pin(2, 2)], "its live instances still run");
        assert_eq!(
            r.rolled_back.as_ref().and_then(|b| b.guard.as_deref()),
            Some("failed_rate < 2%")
        );
        let e = prepare_rollback(&d1, "cart", None, "ana", 8).expect_err("nothing left");
        assert!(e.to_string().contains("no earlier version"), "{e}");
        let (p, _) = prepare_promote(&d, "cart", false, None, "ana", 5).expect("promote");
        let (d2, e2) = prepare_rollback(&p, "cart", None, "ana", 9).expect("manual");
        assert_eq!(e2.action, "rollback");
        assert_eq!(d2.journeys["cart"].stable, pin(1, 1));
        assert_eq!(d2.journeys["cart"].retained, vec![pin(2, 2)]);
    }

    #[test]
    fn a_deleted_journey_is_not_rolled_back_and_created_again_keeps_its_versions() {
        let (mut d, _) =
            prepare_promote(&with_canary(), "cart", false, None, "ana", 5).expect("promote");
        let r = d.journeys.get_mut("cart").expect("cart");
        r.retained.push(pin(3, 3));
        r.deleted = true;
        let e = prepare_rollback(&d, "cart", None, "ana", 6).expect_err("deleted");
        assert!(e.to_string().contains("was deleted"), "{e}");
        assert_eq!(d.journeys["cart"].stable, pin(2, 2), "nothing changed");

        // Created again: the old versions' live instances still run them.
        let r = created(d.journeys.remove("cart"), pin(4, 7));
        assert_eq!(r.stable, pin(4, 7));
        assert!(!r.deleted && r.previous.is_empty() && r.canary.is_none());
        assert_eq!(r.retained, vec![pin(1, 1), pin(3, 3), pin(2, 2)]);
        assert_eq!(created(None, pin(1, 1)).retained, Vec::new());
        d.journeys.insert("cart".into(), r);
        d.journeys.get_mut("cart").expect("cart").deleted = true;
        assert_eq!(top_version(&d.journeys["cart"]), Some(4));
    }

    #[test]
    fn client_paths_must_be_plain_and_relative() {
        for bad in [
            "/etc/passwd",
            "../x.yaml",
            "a/../../b",
            ".sluice/credentials",
            "",
        ] {
            let mut s = Snapshot::default();
            s.files.insert(bad.to_owned(), b"x".to_vec());
            assert!(s.check_paths().is_err(), "{bad}");
        }
        let mut s = Snapshot::default();
        s.files.insert("journeys/a.yaml".into(), b"x".to_vec());
        assert!(s.check_paths().is_ok());
    }
}
