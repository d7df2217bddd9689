//! The shell's side of deployments: running the deployed state kept in the
//! store, and committing what [`crate::deploy`] computes for an apply, a
//! promote, a rollback or a broken guard, with the live instances a
//! `migrate` block moves, in one commit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use journeys::plan::Plan;

use crate::clock::Millis;
use crate::deploy::guard::{self, Verdict};
use crate::deploy::state::{self, ApplyRequest, Change, Loader, Migration, Runtime, Snapshot};
use crate::dispatch::MessageRenderer;
use crate::index::Index;
use crate::machine::instance::Moved;
use crate::policy::Policies;
use crate::store::deployments::{AuditEntry, Deployed, Deployments, SendCounts};
use crate::store::timers::TimerKind;

use super::{Engine, Error, Step};

/// The deployed state the engine runs, and where its generations are
/// written out.
pub(super) struct DeployState {
    loader: Loader,
    deployed: Option<Deployed>,
}

/// How many live instances a migration moved, by what happened to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Migrated {
    pub kept: u64,
    pub restarted: u64,
    pub completed: u64,
    pub exited: u64,
    pub stayed: u64,
}

impl Migrated {
    fn count(&mut self, m: Moved) {
        match m {
            Moved::Kept => self.kept += 1,
            Moved::Restarted => self.restarted += 1,
            Moved::Completed => self.completed += 1,
            Moved::Exited => self.exited += 1,
            Moved::Stayed => self.stayed += 1,
        }
    }
}

/// What an apply did.
#[derive(Debug)]
pub struct Applied {
    pub plan: Plan,
    /// The generation now deployed (unchanged when the plan was empty).
    pub generation: u64,
    /// Per journey migrated.
    pub migrated: BTreeMap<String, Migrated>,
    pub audit: Option<AuditEntry>,
    /// Journeys rolled out again (their config had not changed).
    pub rerolled: Vec<state::Rerollout>,
}

/// One canary as `canary status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CanaryStatus {
    pub journey: String,
    pub stable_version: u32,
    pub canary_version: Option<u32>,
    /// Percent of new entries.
    pub share: f64,
    pub since: Option<Millis>,
    pub min_sends: u64,
    pub stable: Value,
    pub canary: Value,
    pub guards: Vec<Value>,
    /// A broken guard, or a canary that was rolled back.
    pub broken: bool,
    pub rolled_back: Option<Value>,
}

fn rates(c: &SendCounts) -> Value {
    let r = |m: guard::Metric| m.rate(c);
    json!({
        "sends": c.sends(),
        "sent": c.sent,
        "deferred": c.deferred,
        "suppressed": c.suppressed,
        "failed": c.failed,
        "unsubscribed": c.unsubscribed,
        "failed_rate": r(guard::Metric::Failed),
        "suppressed_rate": r(guard::Metric::Suppressed),
        "unsubscribe_rate": r(guard::Metric::Unsubscribe),
    })
}

impl Engine {
    /// Runs the deployed state kept in the store, writing its generations
    /// out under `dir` (`<store>/deployed`). Returns whether something is
    /// deployed (when nothing is, the engine keeps the config it was
    /// opened with until the first apply).
    pub fn open_deployments(&mut self, dir: PathBuf) -> Result<bool, Error> {
        let deployed = self.store.store().deployed()?;
        let mut loader = Loader::new(dir);
        if let Some(d) = &deployed {
            let rt = loader.runtime(self.store.store(), d)?;
            self.use_runtime(rt)?;
        }
        let found = deployed.is_some();
        self.deploy = Some(DeployState { loader, deployed });
        Ok(found)
    }

    /// The deployed state (`None`: nothing deployed, or deployments not
    /// opened).
    pub fn deployed(&self) -> Option<&Deployed> {
        self.deploy.as_ref().and_then(|d| d.deployed.as_ref())
    }

    fn use_runtime(&mut self, rt: Runtime) -> Result<(), Error> {
        let others = rt.versions.others(&rt.config);
        self.index = Arc::new(Index::with_versions(&rt.config, &others));
        self.renderer = MessageRenderer::new(&rt.config);
        let ledgers = self.policies.snapshot();
        let mut policies = Policies::new(&rt.config);
        policies.restore(&ledgers);
        self.policies = policies;
        self.versions = Arc::new(rt.versions);
        self.config = rt.config;
        self.arm_schedules(None)
    }

    /// A version's send decisions so far (with unsubscribes from its
    /// messages).
    pub fn version_counts(&self, journey: &str, version: u32) -> SendCounts {
        let mut c = SendCounts::default();
        for (k, n) in self.tally.counts() {
            if k.journey == journey && k.version == version {
                c.sent += n.sent;
                c.deferred += n.deferred;
                c.suppressed += n.suppressed;
                c.failed += n.failed;
            }
        }
        c.unsubscribed = self
            .unsubscribes
            .get(&(journey.to_owned(), version))
            .copied()
            .unwrap_or(0);
        c
    }

    /// Live instances per step of one version.
    pub fn live_per_step(&self, journey: &str, version: u32) -> BTreeMap<String, u64> {
        self.tally
            .counts()
            .iter()
            .filter(|(k, n)| k.journey == journey && k.version == version && n.live > 0)
            .map(|(k, n)| (k.step.clone(), n.live))
            .collect()
    }

    /// The definition of `version` of `journey` when this engine runs it
    /// (the stable, a canary, or a version live instances stay on).
    pub fn definition(
        &self,
        journey: &str,
        version: u32,
    ) -> Option<Arc<journeys::compiled::Journey>> {
        self.versions
            .of_journey(journey)
            .find(|j| j.version == version)
            .cloned()
    }

    fn take_deploy(&mut self) -> Result<DeployState, Error> {
        self.deploy.take().ok_or_else(|| {
            Error::Deploy(state::Error::Refused(
                "deployments are not open on this engine".into(),
            ))
        })
    }

    /// What applying `snapshot` would change, with in-flight counts, and
    /// the generation it was planned against.
    pub fn plan(&mut self, snapshot: &Snapshot) -> Result<(Plan, u64), Error> {
        let mut st = self.take_deploy()?;
        let result = (|| {
            let base = state::base_side(&mut st.loader, self.store.store(), st.deployed.as_ref())?;
            let head = state::head_side(&mut st.loader, st.deployed.as_ref(), snapshot)?;
            let plan = journeys::plan::plan(&base, &head, Some(&Running(self)));
            Ok::<_, state::Error>((plan, st.deployed.as_ref().map_or(0, |d| d.generation)))
        })();
        self.deploy = Some(st);
        Ok(result?)
    }

    /// Applies `req` (DEPLOY.md §3): the records, the new runtime and the
    /// migrated instances in one durable commit. Nothing changes when it
    /// is refused.
    pub fn apply(&mut self, req: &ApplyRequest) -> Result<Applied, Error> {
        self.commit()?;
        let mut st = self.take_deploy()?;
        let prepared = {
            let counts = |j: &str, v: u32| self.version_counts(j, v);
            state::prepare_apply(
                &mut st.loader,
                self.store.store(),
                st.deployed.as_ref(),
                req,
                &Running(self),
                &counts,
            )
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.deploy = Some(st);
                return Err(e.into());
            }
        };
        let generation = st.deployed.as_ref().map_or(0, |d| d.generation);
        let Some(deployed) = prepared.change.deployed.clone() else {
            self.deploy = Some(st);
            return Ok(Applied {
                plan: prepared.plan,
                generation,
                migrated: BTreeMap::new(),
                audit: None,
                rerolled: prepared.rerolled,
            });
        };
        let mut change = prepared.change;
        if let Some(rt) = change.runtime.take() {
            self.use_runtime(rt)?;
        }
        let mut migrated = BTreeMap::new();
        for m in &change.migrations {
            let counts = self.migrate(m, req.at)?;
            migrated.insert(m.journey.clone(), counts);
        }
        if let Some(a) = change.audit.first_mut() {
            if !migrated.is_empty() {
                a.detail["migrated"] = json!(migrated);
            }
        }
        self.write_change(&change)?;
        self.sync()?;
        let audit = change.audit.first().cloned();
        st.deployed = Some(deployed.clone());
        self.deploy = Some(st);
        Ok(Applied {
            plan: prepared.plan,
            generation: deployed.generation,
            migrated,
            audit,
            rerolled: prepared.rerolled,
        })
    }

    fn write_change(&mut self, change: &Change) -> Result<(), Error> {
        let batch = self.store.batch();
        for (hash, bytes) in &change.files {
            batch.put_file(hash, bytes.clone());
        }
        if let Some(g) = &change.generation {
            batch.put_generation(g)?;
        }
        for (seq, v) in &change.versions {
            batch.put_resource_version(*seq, v)?;
        }
        for a in &change.audit {
            batch.put_audit(a)?;
        }
        if let Some(d) = &change.deployed {
            batch.put_deployed(d)?;
        }
        Ok(())
    }

    /// Moves the live instances of `m.journey` at version `m.from`.
    fn migrate(&mut self, m: &Migration, at: Millis) -> Result<Migrated, Error> {
        // Every live instance waits on a timer: the timers name the users
        // who have one. The store is current (committed before).
        let mut users = BTreeSet::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .store()
                .scan(b"t", after.as_deref(), None, 4_096)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (_, v) in page {
                let t: crate::store::timers::Timer = crate::store::codec::decode("timer", &v)?;
                if matches!(t.kind, TimerKind::Instance { .. } | TimerKind::Send { .. }) {
                    users.insert(t.user);
                }
            }
        }
        // No commit until the apply's own: a commit here would make some
        // instances durable on the new version while the store still
        // deploys the old one (a crash then leaves them under a version
        // the deployment does not know, and the rest unmoved). The moved
        // records wait in the write-back buffer, so a migration holds the
        // records of the users it moves in memory until that commit.
        let mut out = Migrated::default();
        for user in users {
            self.unit(&user, at, Step::Migrate(m))?;
            for mv in self.migrated.drain(..) {
                out.count(mv);
            }
        }
        Ok(out)
    }

    /// `promote JOURNEY`.
    pub fn promote(
        &mut self,
        journey: &str,
        force: bool,
        actor: &str,
        at: Millis,
    ) -> Result<AuditEntry, Error> {
        let broken = self.canary_status(Some(journey)).into_iter().find_map(|s| {
            s.guards
                .iter()
                .find(|g| g["state"] == "broken")
                .map(|g| g["guard"].as_str().unwrap_or_default().to_owned())
        });
        self.change_rollout(|d| {
            state::prepare_promote(d, journey, force, broken.as_deref(), actor, at)
        })
    }

    /// `rollback JOURNEY`; with `guard`, an automatic rollback naming the
    /// broken guard and both rates.
    pub fn rollback(
        &mut self,
        journey: &str,
        guard: Option<(String, Value)>,
        actor: &str,
        at: Millis,
    ) -> Result<AuditEntry, Error> {
        self.change_rollout(|d| state::prepare_rollback(d, journey, guard.clone(), actor, at))
    }

    fn change_rollout(
        &mut self,
        f: impl FnOnce(&Deployed) -> Result<(Deployed, AuditEntry), state::Error>,
    ) -> Result<AuditEntry, Error> {
        self.commit()?;
        let mut st = self.take_deploy()?;
        let result = (|| {
            let d = st
                .deployed
                .as_ref()
                .ok_or_else(|| state::Error::Refused("nothing is deployed in this store".into()))?;
            let (d, entry) = f(d)?;
            let rt = st.loader.runtime(self.store.store(), &d)?;
            Ok::<_, state::Error>((d, entry, rt))
        })();
        let (d, entry, rt) = match result {
            Ok(x) => x,
            Err(e) => {
                self.deploy = Some(st);
                return Err(e.into());
            }
        };
        self.use_runtime(rt)?;
        let batch = self.store.batch();
        batch.put_audit(&entry)?;
        batch.put_deployed(&d)?;
        self.sync()?;
        st.deployed = Some(d);
        self.deploy = Some(st);
        Ok(entry)
    }

    /// Each canary (or the one of `journey`): share, counts and rates per
    /// version since it started, and its guards.
    pub fn canary_status(&self, journey: Option<&str>) -> Vec<CanaryStatus> {
        let Some(d) = self.deployed() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (id, r) in &d.journeys {
            if journey.is_some_and(|j| j != id) {
                continue;
            }
            let rolled_back = r.rolled_back.as_ref().map(|b| {
                json!({"version": b.version, "at": crate::clock::format_ts(b.at), "guard": b.guard, "reason": b.reason})
            });
            let Some(c) = &r.canary else {
                if rolled_back.is_some() || journey.is_some() {
                    out.push(CanaryStatus {
                        journey: id.clone(),
                        stable_version: r.stable.version,
                        canary_version: None,
                        share: 0.0,
                        since: None,
                        min_sends: 0,
                        stable: Value::Null,
                        canary: Value::Null,
                        guards: Vec::new(),
                        broken: rolled_back.is_some(),
                        rolled_back,
                    });
                }
                continue;
            };
            let stable = self
                .version_counts(id, r.stable.version)
                .since(&c.baseline_stable);
            let canary = self
                .version_counts(id, c.pin.version)
                .since(&c.baseline_canary);
            let mut broken = false;
            let guards = c
                .guards
                .iter()
                .filter_map(|g| guard::parse(g).ok())
                .map(|g| {
                    let verdict = guard::check(&g, &canary, &stable, c.min_sends);
                    broken |= verdict == Verdict::Broken;
                    let mut v = guard::rates(&g, &canary, &stable);
                    v["state"] = json!(verdict.as_str());
                    v
                })
                .collect();
            out.push(CanaryStatus {
                journey: id.clone(),
                stable_version: r.stable.version,
                canary_version: Some(c.pin.version),
                share: f64::from(c.basis_points) / 100.0,
                since: Some(c.since),
                min_sends: c.min_sends,
                stable: rates(&stable),
                canary: rates(&canary),
                guards,
                broken,
                rolled_back,
            });
        }
        out
    }

    /// Checks every canary's guards (the running engine, each minute): a
    /// broken one rolls its canary back, with an audit entry naming the
    /// guard and both rates.
    pub fn check_guards(&mut self, at: Millis) -> Result<Vec<AuditEntry>, Error> {
        let mut broken = Vec::new();
        for s in self.canary_status(None) {
            if s.canary_version.is_none() {
                continue;
            }
            if let Some(g) = s.guards.iter().find(|g| g["state"] == "broken") {
                let name = g["guard"].as_str().unwrap_or_default().to_owned();
                broken.push((s.journey.clone(), name, g.clone()));
            }
        }
        let mut entries = Vec::new();
        for (journey, name, rates) in broken {
            tracing::warn!(journey = %journey, guard = %name, "canary guard broken: rolling the canary back");
            entries.push(self.rollback(&journey, Some((name, rates)), "sluice (guard)", at)?);
        }
        Ok(entries)
    }

    /// The audit log, oldest first (of one journey, with `journey`).
    pub fn history(&self, journey: Option<&str>) -> Result<Vec<AuditEntry>, Error> {
        let all = self.store.store().audit()?;
        Ok(all
            .into_iter()
            .filter(|e| journey.is_none_or(|j| e.journey.as_deref() == Some(j) || mentions(e, j)))
            .collect())
    }

    /// Counts an unsubscribe from `user`'s message `key` against the
    /// journey version that sent it (what `unsubscribe_rate` guards read).
    pub fn count_unsubscribe(&mut self, user: &str, key: &str) -> Result<(), Error> {
        self.commit()?;
        let lines = self.store.store().user_messages(user, usize::MAX)?;
        let found = lines.iter().rev().find(|l| l["key"] == key).and_then(|l| {
            Some((
                l["journey"].as_str()?.to_owned(),
                u32::try_from(l["version"].as_u64()?).ok()?,
            ))
        });
        if let Some(k) = found {
            *self.unsubscribes.entry(k).or_default() += 1;
        }
        Ok(())
    }
}

/// What a plan against this engine knows of live instances: their counts
/// per step, and the definitions of the versions they are on (a
/// `migrate` block from an older version is then checked against its
/// steps, and the plan says which timers are kept).
struct Running<'e>(&'e Engine);

impl journeys::plan::InFlight for Running<'_> {
    fn live_per_step(&self, journey: &str, version: u32) -> BTreeMap<String, u64> {
        self.0.live_per_step(journey, version)
    }

    fn definition(&self, journey: &str, version: u32) -> Option<Arc<journeys::compiled::Journey>> {
        self.0.definition(journey, version)
    }
}

/// Whether an apply entry changed `journey`, rolled it out again or gave
/// its canary another share.
fn mentions(e: &AuditEntry, journey: &str) -> bool {
    let changed = e.detail["changes"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["kind"] == "Journey" && c["id"] == journey)
    });
    let named = |key: &str| {
        e.detail[key]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["journey"] == journey))
    };
    changed || named("rolled_out_again") || named("canary_shares")
}

/// A deployment request, as `/v1/admin/…` and the deploy commands with
/// `--store` make it.
#[derive(Debug, Clone)]
pub enum AdminRequest {
    /// The deployed generation's files and the live instances per step:
    /// what a client plans against.
    Deployed,
    /// What applying these files would change (`{"generation", "plan"}`).
    Plan(Snapshot),
    Apply(ApplyRequest),
    Promote {
        journey: String,
        force: bool,
        actor: String,
    },
    Rollback {
        journey: String,
        actor: String,
    },
    Canary {
        journey: Option<String>,
    },
    History {
        journey: Option<String>,
    },
}

/// A refused deployment request: an HTTP status and a JSON body with
/// `error` (and `diagnostics` when the config does not validate).
#[derive(Debug, Clone)]
pub struct AdminFailure {
    pub status: u16,
    pub body: Value,
}

impl AdminFailure {
    fn of(e: state::Error) -> AdminFailure {
        let message = e.to_string();
        match e {
            state::Error::Moved { read, now } => AdminFailure {
                status: 409,
                body: json!({"error": message, "read_generation": read, "generation": now}),
            },
            state::Error::Invalid { diagnostics, .. } | state::Error::Plan { diagnostics } => {
                AdminFailure {
                    status: 422,
                    body: json!({"error": message, "diagnostics": diagnostics.to_json()}),
                }
            }
            state::Error::Refused(_) => AdminFailure {
                status: 400,
                body: json!({ "error": message }),
            },
            state::Error::Corrupt(_) | state::Error::Io { .. } | state::Error::Store(_) => {
                AdminFailure {
                    status: 500,
                    body: json!({ "error": message }),
                }
            }
        }
    }
}

/// An audit entry as `history` prints it.
pub fn audit_json(e: &AuditEntry) -> Value {
    json!({
        "seq": e.seq,
        "at": crate::clock::format_ts(e.at),
        "actor": e.actor,
        "action": e.action,
        "journey": e.journey,
        "detail": e.detail,
    })
}

impl Engine {
    /// Carries out a deployment request. The outer error is the store's
    /// (fatal for a service); the inner one a refusal that changed nothing.
    pub fn admin(
        &mut self,
        req: AdminRequest,
        now: Millis,
    ) -> Result<Result<Value, AdminFailure>, Error> {
        let out = match req {
            AdminRequest::Deployed => self.deployed_answer(),
            AdminRequest::Plan(snapshot) => self.plan(&snapshot).and_then(|(plan, generation)| {
                if plan.diagnostics.has_errors() {
                    return Err(Error::Deploy(state::Error::Plan {
                        diagnostics: plan.diagnostics,
                    }));
                }
                Ok(json!({"generation": generation, "plan": plan.to_json()}))
            }),
            AdminRequest::Apply(req) => self.apply(&req).map(|a| {
                json!({
                    "applied": a.audit.is_some(),
                    "generation": a.generation,
                    "plan": a.plan.to_json(),
                    "migrated": a.migrated,
                    "rolled_out_again": a.rerolled,
                    "audit": a.audit.as_ref().map(audit_json),
                })
            }),
            AdminRequest::Promote {
                journey,
                force,
                actor,
            } => self
                .promote(&journey, force, &actor, now)
                .map(|e| audit_json(&e)),
            AdminRequest::Rollback { journey, actor } => self
                .rollback(&journey, None, &actor, now)
                .map(|e| audit_json(&e)),
            AdminRequest::Canary { journey } => {
                let list = self.canary_status(journey.as_deref());
                if let Some(j) = &journey {
                    if self.deployed().is_none_or(|d| !d.journeys.contains_key(j)) {
                        return Ok(Err(AdminFailure::of(state::Error::Refused(format!(
                            "journey `{j}` is not deployed"
                        )))));
                    }
                }
                Ok(json!(list
                    .iter()
                    .map(|s| {
                        let mut v = json!(s);
                        v["since"] = json!(s.since.map(crate::clock::format_ts));
                        v
                    })
                    .collect::<Vec<_>>()))
            }
            AdminRequest::History { journey } => self
                .history(journey.as_deref())
                .map(|es| json!(es.iter().map(audit_json).collect::<Vec<_>>())),
        };
        match out {
            Ok(v) => Ok(Ok(v)),
            Err(Error::Deploy(e)) => Ok(Err(AdminFailure::of(e))),
            Err(e) => Err(e),
        }
    }

    /// What `GET /v1/admin/deployed` answers (docs/deploy.md): the
    /// deployed generation's files, the live instances per step, the
    /// versions new entries go to, and the files of the older generations
    /// that hold the versions live instances are on (what a client needs
    /// to plan a `migrate` block from such a version).
    fn deployed_answer(&mut self) -> Result<Value, Error> {
        use base64::Engine as _;
        fn b64(files: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
            files
                .into_iter()
                .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v)))
                .collect()
        }
        let (generation, files) = self.deployed_files()?;
        let live: Vec<Value> = self
            .tally
            .counts()
            .iter()
            .filter(|(_, n)| n.live > 0)
            .map(|(k, n)| json!({"journey": k.journey, "version": k.version, "step": k.step, "live": n.live}))
            .collect();
        // The versions each journey's new entries go to.
        let running: BTreeMap<&String, Value> = self
            .deployed()
            .map(|d| {
                d.journeys
                    .iter()
                    .filter(|(_, r)| !r.deleted)
                    .map(|(id, r)| {
                        (id, json!({"stable": r.stable.version, "canary": r.canary.as_ref().map(|c| c.pin.version), "share": r.canary.as_ref().map(|c| f64::from(c.basis_points) / 100.0)}))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut older_generations = BTreeSet::new();
        if let Some(d) = self.deployed() {
            for (k, n) in self.tally.counts().iter() {
                let Some(r) = d.journeys.get(&k.journey).filter(|_| n.live > 0) else {
                    continue;
                };
                let pin = r
                    .previous
                    .iter()
                    .chain(&r.retained)
                    .chain(std::iter::once(&r.stable))
                    .chain(r.canary.as_ref().map(|c| &c.pin))
                    .find(|p| p.version == k.version);
                if let Some(p) = pin.filter(|p| p.generation != generation) {
                    older_generations.insert(p.generation);
                }
            }
        }
        let mut older = BTreeMap::new();
        for g in older_generations {
            older.insert(g.to_string(), b64(self.generation_files(g)?));
        }
        let running = json!(running);
        Ok(
            json!({"generation": generation, "files": b64(files), "live": live, "running": running, "older": older}),
        )
    }

    /// The files of the deployed generation (none when nothing is deployed).
    pub fn deployed_files(&mut self) -> Result<(u64, BTreeMap<String, Vec<u8>>), Error> {
        let Some(g) = self.deployed().map(|d| d.generation) else {
            return Ok((0, BTreeMap::new()));
        };
        Ok((g, self.generation_files(g)?))
    }

    /// The files of generation `g`.
    fn generation_files(&self, g: u64) -> Result<BTreeMap<String, Vec<u8>>, Error> {
        let gen =
            self.store.store().generation(g)?.ok_or_else(|| {
                state::Error::Corrupt(format!("generation {g} is not in the store"))
            })?;
        let mut files = BTreeMap::new();
        for (name, hash) in gen.files {
            let bytes = self.store.store().file(&hash)?.ok_or_else(|| {
                state::Error::Corrupt(format!("file {name} of generation {g} is missing"))
            })?;
            files.insert(name, bytes);
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    use crate::clock::{Clock, VirtualClock};
    use crate::engine::{Delivery, Options};
    use crate::output::Discard;
    use crate::store::log::Faults;
    use crate::store::sled_store::{SledOptions, SledStore};

    const PROJECT: &str = "apiVersion: sluice/v1\nkind: Project\nid: migrate-crash\ndefault_timezone: UTC\nchannels:\n  email: { provider: maildir, from: \"T <t@migrate.example>\" }\n";
    const TEMPLATES: &str = "apiVersion: sluice/v1\nkind: Template\nid: hello\nchannel: email\nsubject: \"Hi\"\ntext: \"Hi.\"\n";
    const V1: &str = "apiVersion: sluice/v1\nkind: Journey\nid: onboard\nversion: 1\nentry: { event: signed_up }\nsteps:\n  - id: hello\n    send: { channel: email, template: hello }\n  - id: plan-check\n    branch:\n      - when: { user.plan: plus }\n        next: wait-plus\n      - next: wait-a\n  - id: wait-a\n    wait: 1d\n  - id: wait-plus\n    wait: 2d\n";
    const V2: &str = "apiVersion: sluice/v1\nkind: Journey\nid: onboard\nversion: 2\nmigrate:\n  from: 1\n  steps: { wait-a: wait-a2, hello: end }\n  on_unmapped: exit\nentry: { event: signed_up }\nsteps:\n  - id: hello\n    send: { channel: email, template: hello }\n  - id: wait-a2\n    wait: 1d\n";

    fn checkout(root: &Path, name: &str, journey: &str) -> std::path::PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("sluice.yaml"), PROJECT).expect("project");
        std::fs::write(dir.join("templates.yaml"), TEMPLATES).expect("templates");
        std::fs::write(dir.join("journeys.yaml"), journey).expect("journey");
        dir
    }

    /// An engine on `store` whose writes fail from the `faults`' n-th on;
    /// a small cache and a commit threshold of one write, so that anything
    /// allowed to commit along the way does.
    fn open_engine(config_dir: &Path, store: &Path, faults: Option<Faults>) -> Engine {
        let config = Arc::new(journeys::load(config_dir).expect("config"));
        let s = SledStore::open(
            store,
            &SledOptions {
                sync_commits: true,
                faults,
                ..SledOptions::default()
            },
        )
        .expect("store");
        let start = chrono::DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
            .expect("ts")
            .to_utc();
        let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(start));
        let mut e = Engine::open(
            config,
            Box::new(s),
            clock,
            Delivery::Workers,
            Box::new(Discard),
            Options {
                cache_users: 16,
                commit_every: 1,
                ..Options::default()
            },
        )
        .expect("engine");
        e.open_deployments(store.join("deployed"))
            .expect("deployments");
        e
    }

    fn request(dir: &Path, at: Millis) -> ApplyRequest {
        ApplyRequest {
            snapshot: Snapshot::read(dir).expect("snapshot"),
            actor: "test".into(),
            at,
            canary: None,
            guards: Vec::new(),
            min_sends: 100,
            expected: None,
        }
    }

    const PLAIN: usize = 24;
    const PLUS: usize = 6;

    /// v1 deployed, 40 users waiting at `wait-a` and 10 at `wait-plus`,
    /// then v2 (which migrates them) applied; returns the engine's error
    /// when a write failed.
    fn deploy_then_migrate(root: &Path, store: &Path, faults: Option<Faults>) -> Result<(), Error> {
        let v1 = checkout(root, "v1", V1);
        let v2 = checkout(root, "v2", V2);
        let mut e = open_engine(&v1, store, faults);
        let at = e.clock().now_millis();
        e.apply(&request(&v1, at))?;
        let mut lines = Vec::new();
        for n in 0..PLAIN + PLUS {
            let u = format!("u{n:03}");
            if n >= PLAIN {
                lines.push(format!(r#"{{"type":"identify","user":"{u}","id":"i-{u}","ts":"2026-03-02T10:00:00Z","traits":{{"plan":"plus"}}}}"#));
            }
            lines.push(format!(r#"{{"type":"track","user":"{u}","event":"signed_up","id":"s-{u}","ts":"2026-03-02T10:00:00Z"}}"#));
        }
        for l in lines {
            e.ingest(&journeys::event::Event::from_line(&l).expect("event"))?;
        }
        // The welcome email is sent: everyone waits.
        e.run_due(at)?;
        e.sync()?;
        e.apply(&request(&v2, at + 1_000))?;
        Ok(())
    }

    /// Each user's `onboard` instances as (version, step).
    fn instances(e: &mut Engine) -> Vec<(String, Vec<(u32, String)>)> {
        (0..PLAIN + PLUS)
            .map(|n| {
                let u = format!("u{n:03}");
                let rec = e.user(&u).expect("user").expect("known user");
                let is = rec
                    .instances
                    .iter()
                    .filter(|i| i.journey == "onboard")
                    .map(|i| (i.version, i.step.to_string()))
                    .collect();
                (u, is)
            })
            .collect()
    }

    /// DEPLOY.md: an apply and the instances its `migrate` block moves are
    /// one change. Whatever write of the apply fails (as a SIGKILL there
    /// would stop it), the store reopens on the old generation with every
    /// instance where it was, or on the new one with every instance
    /// moved: never the new version's instances under the old deployment.
    #[test]
    fn an_apply_that_dies_at_any_write_leaves_the_migration_whole_or_undone() {
        let tmp = tempfile::tempdir().expect("tmp");
        let counting = Faults::counting();
        let store = tmp.path().join("whole");
        deploy_then_migrate(tmp.path(), &store, Some(counting.clone())).expect("whole run");
        let total = counting.spent();
        let mut old = 0;
        let mut new = 0;
        for n in 0..total {
            let store = tmp.path().join(format!("cut-{n}"));
            if deploy_then_migrate(tmp.path(), &store, Some(Faults::after(n))).is_ok() {
                continue;
            }
            let mut e = open_engine(&tmp.path().join("v1"), &store, None);
            let Some(generation) = e.deployed().map(|d| d.generation) else {
                // Died before v1 was deployed.
                continue;
            };
            let Ok(Some(_)) = e.user("u000") else {
                // Died before the users signed up.
                continue;
            };
            let history = e.history(None).expect("history").len();
            let is = instances(&mut e);
            if generation == 1 {
                old += 1;
                assert_eq!(history, 1, "write {n}: history of the old generation");
                for (u, i) in &is {
                    let step = if u.as_str() < "u024" {
                        "wait-a"
                    } else {
                        "wait-plus"
                    };
                    assert_eq!(
                        i,
                        &vec![(1, step.to_owned())],
                        "write {n}: {u} under generation 1"
                    );
                }
            } else {
                new += 1;
                assert_eq!(generation, 2, "write {n}");
                assert_eq!(history, 2, "write {n}: history of the new generation");
                for (u, i) in &is {
                    let want = if u.as_str() < "u024" {
                        vec![(2, "wait-a2".to_owned())]
                    } else {
                        Vec::new()
                    };
                    assert_eq!(i, &want, "write {n}: {u} under generation 2");
                }
            }
            drop(e);
            std::fs::remove_dir_all(&store).expect("cleanup");
        }
        assert!(
            old > 0 && new > 0,
            "faults hit before and after the apply was durable: {old} old, {new} new"
        );
    }

    fn apply_entry(detail: Value) -> AuditEntry {
        AuditEntry {
            seq: 1,
            at: 0,
            actor: "a".into(),
            action: "apply".into(),
            journey: None,
            detail,
        }
    }

    #[test]
    fn an_apply_mentions_the_journeys_it_changed_or_rolled_out_again() {
        let changed = apply_entry(json!({
            "changes": [{"kind": "Journey", "id": "onboard", "action": "update"}],
            "rolled_out_again": [],
        }));
        assert!(mentions(&changed, "onboard"));
        assert!(!mentions(&changed, "other"));
        // An apply that only rolled `onboard` out again (after a rollback)
        // changed no resource, yet it is part of the journey's history.
        let rolled = apply_entry(json!({
            "changes": [],
            "rolled_out_again": [{"journey": "onboard", "running": 1, "version": 2}],
        }));
        assert!(mentions(&rolled, "onboard"));
        assert!(!mentions(&rolled, "other"));
        let reshared = apply_entry(json!({
            "changes": [],
            "canary_shares": [{"journey": "onboard", "version": 2, "from_share": 10.0, "to_share": 60.0}],
        }));
        assert!(mentions(&reshared, "onboard"));
        assert!(!mentions(&reshared, "other"));
        // A Segment of the same id is not the journey.
        let segment = apply_entry(json!({
            "changes": [{"kind": "Segment", "id": "onboard", "action": "update"}],
        }));
        assert!(!mentions(&segment, "onboard"));
    }
}
