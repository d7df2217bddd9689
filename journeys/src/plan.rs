//! `plan`: what changes between two configs (DEPLOY.md §2). Both sides are
//! loaded and compiled; resources are compared as their raw documents
//! without spans, so moving a line or reordering keys is no change (a
//! template's `text_file`/`html_file` compares the file's text, not its
//! name only). For a journey the plan also says which steps were added,
//! removed or changed and, for each changed step, which parts of it: its
//! type, the fields of its type (`send.template`, `wait_for.timeout`…) and
//! where it leads (`next`, counting the implicit "next step in order").
//!
//! A journey whose content changed while its `version` did not grow is the
//! error `version_not_bumped`, at the head's `version:` line.
//!
//! A head journey's `migrate` block (DEPLOY.md §6) becomes a
//! [`MigrationPlan`]: per rule the new step and what a waiting instance's
//! timer does ([`Timer`]). The plan checks the block against the deployed
//! version: `from` no higher than it, and every old step a step of `from`
//! when that version's definition is known (the base's, or a store's).
//!
//! Live instances are not known here: a store-backed caller passes an
//! [`InFlight`] that counts them per step, and each journey change then
//! carries its [`InFlightCounts`], per migration rule too. This module must
//! not know how a store keeps instances or versions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::compiled::{self, Next, TemplateBody};
use crate::diagnostic::{Code, Diagnostic, Diagnostics, SourceFile};
use crate::graph;
use crate::load::{self, Loaded};
use crate::model::{self, Document};

/// The kinds a plan compares, in the order changes are listed (what a
/// journey uses comes before it). JourneyTests are not deployed.
pub const KINDS: &[&str] = &[
    "Project",
    "Catalog",
    "Segment",
    "Template",
    "QuietHours",
    "Throttle",
    "FrequencyCap",
    "Journey",
];

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One side does not validate; its diagnostics say why.
    #[error("{which} config `{}` is invalid: {} error(s)", dir.display(), diagnostics.errors().count())]
    Invalid {
        which: Which,
        dir: PathBuf,
        diagnostics: Diagnostics,
    },
}

/// Which side of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Base,
    Head,
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Which::Base => "base",
            Which::Head => "head",
        })
    }
}

/// One side of a plan: the compiled config and the documents it came from.
pub struct Side {
    pub config: compiled::Config,
    pub documents: Vec<Loaded>,
}

impl Side {
    /// Loads, validates and compiles `root`, keeping its documents.
    pub fn load(root: &Path, which: Which) -> Result<Side, Error> {
        let mut diags = Diagnostics::default();
        let documents = load::load_documents(root, &mut diags);
        let config = crate::compile::compile(root, documents.clone(), &mut diags);
        diags.sort();
        match config {
            Some(config) if !diags.has_errors() => Ok(Side { config, documents }),
            _ => Err(Error::Invalid {
                which,
                dir: root.to_path_buf(),
                diagnostics: diags,
            }),
        }
    }
}

/// What a change does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// The step diff of a journey.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepDiff {
    /// In the head's order.
    pub added: Vec<String>,
    /// In the base's order.
    pub removed: Vec<String>,
    /// In the head's order, each with what changed in it: `type` (a
    /// different step type), a field of its type (`send.template`,
    /// `wait`, `branch`…), `next`.
    pub changed: Vec<(String, Vec<String>)>,
}

impl StepDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Live instances a journey change touches (from a store or server).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InFlightCounts {
    /// Live instances the change touches: those of the deployed (base)
    /// version, plus those of `migrate.from` when that is an older version.
    pub live: u64,
    /// Of the base version's, the ones at a step the head removes (they
    /// finish on the version they entered unless a migration moves them).
    pub at_removed_steps: u64,
    /// Of `migrate.from`'s, the ones the head's `migrate` block moves.
    pub migrated: u64,
    /// Of `migrate.from`'s, the ones `on_unmapped: exit` ends (reason
    /// `migrated_out`); 0 with `on_unmapped: stay`.
    pub exited: u64,
    /// Per `migrate.steps` rule, how many instances it moves (empty without
    /// a migration that applies).
    pub migration: Vec<RuleImpact>,
}

/// What happens to a moved instance's timer (DEPLOY.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The new step waits the same way (wait→wait, wait_until→wait_until,
    /// wait_for→wait_for): the instance keeps its due time.
    Kept,
    /// The new step waits another way: it starts at apply time.
    Restarted,
    /// The new step does not wait, or is `end` (the instance completes).
    None,
    /// The old version's steps are not known to this plan (a `--base`
    /// checkout deploys another version than `migrate.from`).
    Unknown,
}

impl Timer {
    pub fn as_str(self) -> &'static str {
        match self {
            Timer::Kept => "kept",
            Timer::Restarted => "restarted",
            Timer::None => "none",
            Timer::Unknown => "unknown",
        }
    }
}

/// One `migrate.steps` rule of a head journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRule {
    /// A step of the `from` version.
    pub from_step: String,
    /// A step of the head, or `None` for `end`.
    pub to_step: Option<String>,
    pub timer: Timer,
}

impl MigrationRule {
    /// `to_step`, `end` for the end.
    pub fn to_name(&self) -> &str {
        self.to_step.as_deref().unwrap_or("end")
    }
}

/// A rule with the live instances it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleImpact {
    pub rule: MigrationRule,
    pub instances: u64,
}

/// The head's `migrate` block as the plan shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationPlan {
    pub from: u32,
    pub on_unmapped: model::OnUnmapped,
    /// In the order of the old step ids.
    pub rules: Vec<MigrationRule>,
}

/// Counts live instances: for a journey and a version, how many instances
/// are at each step. A plan against a checkout (`--base`) has none.
pub trait InFlight {
    fn live_per_step(&self, journey: &str, version: u32) -> BTreeMap<String, u64>;

    /// The compiled definition of a deployed version, when the caller
    /// keeps older versions (a store does): lets the plan say whether a
    /// migration keeps timers when `migrate.from` is not the base version.
    fn definition(&self, _journey: &str, _version: u32) -> Option<Arc<compiled::Journey>> {
        None
    }
}

impl<F: Fn(&str, u32) -> BTreeMap<String, u64>> InFlight for F {
    fn live_per_step(&self, journey: &str, version: u32) -> BTreeMap<String, u64> {
        self(journey, version)
    }
}

/// One resource that changes.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: &'static str,
    pub id: String,
    pub action: Action,
    /// Top-level fields that differ (updates only; a journey's `version`
    /// is in `from_version`/`to_version` instead).
    pub fields: Vec<String>,
    /// Journeys only.
    pub journey: Option<JourneyChange>,
}

/// What a plan says about a journey on top of its fields.
#[derive(Debug, Clone)]
pub struct JourneyChange {
    pub from_version: Option<u32>,
    pub to_version: Option<u32>,
    pub steps: StepDiff,
    /// Only when the plan was given an [`InFlight`].
    pub in_flight: Option<InFlightCounts>,
    /// The head's `migrate` block (updates only).
    pub migration: Option<MigrationPlan>,
}

/// The changes from a base config to a head config.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Ordered by [`KINDS`], then id.
    pub changes: Vec<Change>,
    /// `version_not_bumped` errors, at the head's `version:` lines.
    pub diagnostics: Diagnostics,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether the plan creates, updates or deletes journey `id`.
    pub fn changes_journey(&self, id: &str) -> bool {
        self.changes
            .iter()
            .any(|c| c.kind == "Journey" && c.id == id)
    }

    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    /// The `plan --format json` document of CLI.md. A journey change
    /// carries `from_version` (unless created), `to_version` (unless
    /// deleted), `steps` and, with in-flight counts, `in_flight`; other
    /// updates carry `fields`. Extensions (documented in docs/deploy.md):
    /// a journey update lists its changed top-level `fields` too, and
    /// `steps.parts` says what changed in each changed step.
    pub fn to_json(&self) -> Value {
        let changes: Vec<Value> = self.changes.iter().map(Change::to_json).collect();
        json!({
            "changes": changes,
            "summary": {
                "create": self.count(Action::Create),
                "update": self.count(Action::Update),
                "delete": self.count(Action::Delete),
            }
        })
    }
}

impl Change {
    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("kind".into(), json!(self.kind));
        o.insert("id".into(), json!(self.id));
        o.insert("action".into(), json!(self.action.as_str()));
        match &self.journey {
            Some(j) => {
                if let Some(v) = j.from_version {
                    o.insert("from_version".into(), json!(v));
                }
                if let Some(v) = j.to_version {
                    o.insert("to_version".into(), json!(v));
                }
                if self.action == Action::Update {
                    o.insert("fields".into(), json!(self.fields));
                }
                let changed: Vec<&str> =
                    j.steps.changed.iter().map(|(id, _)| id.as_str()).collect();
                let parts: Map<String, Value> = j
                    .steps
                    .changed
                    .iter()
                    .map(|(id, parts)| (id.clone(), json!(parts)))
                    .collect();
                o.insert(
                    "steps".into(),
                    json!({
                        "added": j.steps.added,
                        "removed": j.steps.removed,
                        "changed": changed,
                        "parts": parts,
                    }),
                );
                if let Some(m) = &j.migration {
                    let steps: Vec<Value> = m
                        .rules
                        .iter()
                        .map(|r| {
                            json!({
                                "from_step": r.from_step,
                                "to_step": r.to_name(),
                                "timer": r.timer.as_str(),
                            })
                        })
                        .collect();
                    o.insert(
                        "migrate".into(),
                        json!({
                            "from": m.from,
                            "on_unmapped": on_unmapped_str(m.on_unmapped),
                            "steps": steps,
                        }),
                    );
                }
                if let Some(f) = &j.in_flight {
                    let mut inf = Map::new();
                    inf.insert("live".into(), json!(f.live));
                    inf.insert("at_removed_steps".into(), json!(f.at_removed_steps));
                    inf.insert("migrated".into(), json!(f.migrated));
                    inf.insert("exited".into(), json!(f.exited));
                    if j.migration.is_some() {
                        let rules: Vec<Value> = f
                            .migration
                            .iter()
                            .map(|r| {
                                json!({
                                    "from_step": r.rule.from_step,
                                    "to_step": r.rule.to_name(),
                                    "instances": r.instances,
                                    "timer": r.rule.timer.as_str(),
                                })
                            })
                            .collect();
                        inf.insert("migration".into(), json!(rules));
                    }
                    o.insert("in_flight".into(), Value::Object(inf));
                }
            }
            None => {
                if self.action == Action::Update {
                    o.insert("fields".into(), json!(self.fields));
                }
            }
        }
        Value::Object(o)
    }
}

/// `stay` or `exit`, as FORMAT.md §7 spells them.
pub fn on_unmapped_str(o: model::OnUnmapped) -> &'static str {
    match o {
        model::OnUnmapped::Stay => "stay",
        model::OnUnmapped::Exit => "exit",
    }
}

/// A document of one side, ready to compare.
struct Resource<'a> {
    loaded: &'a Loaded,
    /// The document without spans; object equality ignores key order.
    value: Value,
}

fn kind_rank(kind: &str) -> usize {
    KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len())
}

/// Every deployable document of a side by (kind rank, id).
fn resources(side: &Side) -> BTreeMap<(usize, String), Resource<'_>> {
    let mut out = BTreeMap::new();
    for loaded in &side.documents {
        if matches!(loaded.document, Document::JourneyTest(_)) {
            continue;
        }
        let kind = loaded.document.kind();
        let mut value = document_json(&loaded.document);
        if let Document::Template(t) = &loaded.document {
            with_file_texts(&mut value, t, side.config.templates.get(&t.id.value));
        }
        // The ids were validated unique per kind; a Project's id may differ
        // between sides, but there is one Project: key it by kind alone.
        let id = match loaded.document {
            Document::Project(_) => String::new(),
            _ => loaded.document.id().value.clone(),
        };
        out.insert((kind_rank(kind), id), Resource { loaded, value });
    }
    out
}

/// Each deployable resource's canonical content hash (FORMAT.md: key
/// order and positions ignored; a template's body files by their text),
/// by kind and id (the Project's id is empty). What a deployment records.
pub fn content_hashes(side: &Side) -> BTreeMap<(&'static str, String), String> {
    resources(side)
        .into_iter()
        .map(|((_, id), r)| {
            (
                (r.loaded.document.kind(), id),
                model::canonical_hash(&r.value),
            )
        })
        .collect()
}

fn document_json(doc: &Document) -> Value {
    let v = match doc {
        Document::Project(d) => serde_json::to_value(d),
        Document::Journey(d) => serde_json::to_value(d),
        Document::Segment(d) => serde_json::to_value(d),
        Document::Template(d) => serde_json::to_value(d),
        Document::QuietHours(d) => serde_json::to_value(d),
        Document::Throttle(d) => serde_json::to_value(d),
        Document::FrequencyCap(d) => serde_json::to_value(d),
        Document::Catalog(d) => serde_json::to_value(d),
        Document::JourneyTest(d) => serde_json::to_value(d),
    };
    // The model holds strings, numbers, maps and lists only: it always
    // serialises; Null would compare equal to Null, never hide a change.
    v.unwrap_or(Value::Null)
}

/// A body in a file changes with the file: compare its text, not its name.
fn with_file_texts(
    value: &mut Value,
    doc: &model::Template,
    compiled: Option<&compiled::MessageTemplate>,
) {
    let Some(TemplateBody::Email { text, html, .. }) = compiled.map(|c| &c.body) else {
        return;
    };
    let Value::Object(o) = value else { return };
    for (key, path, body) in [
        ("text_file", &doc.text_file, text),
        ("html_file", &doc.html_file, html),
    ] {
        if let (Some(path), Some(body)) = (path, body) {
            o.insert(
                key.to_owned(),
                json!({"path": path.value, "text": body.source}),
            );
        }
    }
}

/// Top-level keys whose values differ, head's order first.
fn changed_fields(base: &Value, head: &Value, skip: &[&str]) -> Vec<String> {
    let empty = Map::new();
    let b = base.as_object().unwrap_or(&empty);
    let h = head.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = h.keys().collect();
    keys.extend(b.keys().filter(|k| !h.contains_key(*k)));
    keys.into_iter()
        .filter(|k| !skip.contains(&k.as_str()))
        .filter(|k| {
            let bv = b.get(*k).unwrap_or(&Value::Null);
            let hv = h.get(*k).unwrap_or(&Value::Null);
            bv != hv
        })
        .cloned()
        .collect()
}

/// Compares `head` with `base`. With `in_flight`, every journey update or
/// delete carries its live-instance counts.
pub fn plan(base: &Side, head: &Side, in_flight: Option<&dyn InFlight>) -> Plan {
    let b = resources(base);
    let h = resources(head);
    let keys: BTreeSet<&(usize, String)> = b.keys().chain(h.keys()).collect();
    let mut out = Plan::default();
    for key in keys {
        match (b.get(key), h.get(key)) {
            (None, Some(hr)) => out.changes.push(created(hr, head)),
            (Some(br), None) => out.changes.push(deleted(br, base, in_flight)),
            (Some(br), Some(hr)) => {
                if let Some(c) = updated(br, hr, base, head, in_flight, &mut out.diagnostics) {
                    out.changes.push(c);
                }
            }
            (None, None) => {}
        }
    }
    out.diagnostics.sort();
    out
}

/// The compiled journey of a Journey document (a Segment or Template may
/// share a journey's id).
fn journey_of<'s>(side: &'s Side, r: &Resource<'_>) -> Option<&'s Arc<compiled::Journey>> {
    match &r.loaded.document {
        Document::Journey(j) => side.config.journey(&j.id.value),
        _ => None,
    }
}

fn created(r: &Resource<'_>, side: &Side) -> Change {
    let journey = journey_of(side, r).map(|j| JourneyChange {
        from_version: None,
        to_version: Some(j.version),
        steps: StepDiff {
            added: j.states.iter().map(|s| s.id.clone()).collect(),
            ..StepDiff::default()
        },
        in_flight: None,
        migration: None,
    });
    Change {
        kind: r.loaded.document.kind(),
        id: r.loaded.document.id().value.clone(),
        action: Action::Create,
        fields: Vec::new(),
        journey,
    }
}

fn deleted(r: &Resource<'_>, side: &Side, in_flight: Option<&dyn InFlight>) -> Change {
    let journey = journey_of(side, r).map(|j| {
        let removed: Vec<String> = j.states.iter().map(|s| s.id.clone()).collect();
        JourneyChange {
            from_version: Some(j.version),
            to_version: None,
            in_flight: in_flight.map(|f| counts(f, j, &removed, None)),
            steps: StepDiff {
                removed,
                ..StepDiff::default()
            },
            migration: None,
        }
    });
    Change {
        kind: r.loaded.document.kind(),
        id: r.loaded.document.id().value.clone(),
        action: Action::Delete,
        fields: Vec::new(),
        journey,
    }
}

/// The way a step waits, if it does.
fn wait_kind(action: &compiled::Action) -> Option<&'static str> {
    match action {
        compiled::Action::Wait { .. } => Some("wait"),
        compiled::Action::WaitUntil { .. } => Some("wait_until"),
        compiled::Action::WaitFor { .. } => Some("wait_for"),
        _ => None,
    }
}

/// The head's `migrate` rules with what each does to a timer; `old` is
/// the `from` version's definition when this plan knows it.
fn migration_plan(
    head: &compiled::Journey,
    old: Option<&compiled::Journey>,
) -> Option<MigrationPlan> {
    let m = head.migrate.as_ref()?;
    let rules = m
        .steps
        .iter()
        .map(|(from_step, to)| {
            let target = match to {
                Next::End => None,
                Next::State(i) => head.states.get(*i),
            };
            let timer = match target.and_then(|t| wait_kind(&t.action)) {
                None => Timer::None,
                Some(kind) => {
                    match old.and_then(|o| o.states.iter().find(|s| &s.id == from_step)) {
                        Some(s) if wait_kind(&s.action) == Some(kind) => Timer::Kept,
                        Some(_) => Timer::Restarted,
                        None => Timer::Unknown,
                    }
                }
            };
            MigrationRule {
                from_step: from_step.clone(),
                to_step: target.map(|t| t.id.clone()),
                timer,
            }
        })
        .collect();
    Some(MigrationPlan {
        from: m.from,
        on_unmapped: m.on_unmapped,
        rules,
    })
}

/// Live instances of the base version and, with a migration that applies
/// (`from` not above the base version), of its `from` version.
fn counts(
    f: &dyn InFlight,
    base: &compiled::Journey,
    removed: &[String],
    migration: Option<&MigrationPlan>,
) -> InFlightCounts {
    let per_step = f.live_per_step(&base.id, base.version);
    let mut out = InFlightCounts {
        live: per_step.values().sum(),
        at_removed_steps: removed.iter().filter_map(|s| per_step.get(s)).sum(),
        ..InFlightCounts::default()
    };
    let Some(m) = migration.filter(|m| m.from <= base.version) else {
        return out;
    };
    let from_steps = if m.from == base.version {
        per_step
    } else {
        let older = f.live_per_step(&base.id, m.from);
        out.live += older.values().sum::<u64>();
        older
    };
    out.migration = m
        .rules
        .iter()
        .map(|r| RuleImpact {
            rule: r.clone(),
            instances: from_steps.get(&r.from_step).copied().unwrap_or(0),
        })
        .collect();
    out.migrated = out.migration.iter().map(|r| r.instances).sum();
    if m.on_unmapped == model::OnUnmapped::Exit {
        out.exited = from_steps
            .iter()
            .filter(|(step, _)| !m.rules.iter().any(|r| &r.from_step == *step))
            .map(|(_, n)| n)
            .sum();
    }
    out
}

fn updated(
    br: &Resource<'_>,
    hr: &Resource<'_>,
    base: &Side,
    head: &Side,
    in_flight: Option<&dyn InFlight>,
    diags: &mut Diagnostics,
) -> Option<Change> {
    let kind = hr.loaded.document.kind();
    let id = hr.loaded.document.id().value.clone();
    let (Some(bj), Some(hj)) = (journey_of(base, br), journey_of(head, hr)) else {
        let fields = changed_fields(&br.value, &hr.value, &["apiVersion", "kind"]);
        return (!fields.is_empty()).then_some(Change {
            kind,
            id,
            action: Action::Update,
            fields,
            journey: None,
        });
    };
    let mut fields = changed_fields(&br.value, &hr.value, &["apiVersion", "kind", "version"]);
    let steps = step_diff(bj, hj, &br.value, &hr.value);
    if !steps.is_empty() && !fields.iter().any(|f| f == "steps") {
        // Same steps, written alike, but the order moved an implicit `next`.
        fields.push("steps".to_owned());
    }
    let content_changed = bj.hash != hj.hash || !fields.is_empty();
    if !content_changed && bj.version == hj.version {
        return None;
    }
    let doc = match &hr.loaded.document {
        Document::Journey(doc) => Some(doc),
        _ => None,
    };
    if content_changed && hj.version <= bj.version {
        if let Some(doc) = doc {
            diags.push(version_not_bumped(&hr.loaded.file, doc, bj.version));
        }
    }
    // The `from` version's definition: the base's, or a store's.
    let older = match hj.migrate.as_ref().map(|m| m.from) {
        Some(from) if from < bj.version => in_flight.and_then(|f| f.definition(&id, from)),
        _ => None,
    };
    let old: Option<&compiled::Journey> = match hj.migrate.as_ref() {
        Some(m) if m.from == bj.version => Some(bj),
        _ => older.as_deref(),
    };
    if let Some(doc) = doc {
        check_migrate(&hr.loaded.file, doc, bj.version, old, diags);
    }
    let migration = migration_plan(hj, old);
    let in_flight = in_flight.map(|f| counts(f, bj, &steps.removed, migration.as_ref()));
    Some(Change {
        kind,
        id,
        action: Action::Update,
        fields,
        journey: Some(JourneyChange {
            from_version: Some(bj.version),
            to_version: Some(hj.version),
            steps,
            in_flight,
            migration,
        }),
    })
}

/// `migrate.from` must name a version the base has deployed, and every
/// old step of `migrate.steps` must be a step of that version (checked
/// when its definition is known).
fn check_migrate(
    file: &Arc<SourceFile>,
    doc: &model::Journey,
    deployed: u32,
    old: Option<&compiled::Journey>,
    diags: &mut Diagnostics,
) {
    let Some(m) = &doc.migrate else { return };
    let from = &m.value.from;
    if from.value > deployed {
        diags.push(
            Diagnostic::error(
                Code::InvalidValue,
                format!(
                    "`migrate.from` is {} but the deployed version of journey `{}` is {deployed}: no live instance is on version {}",
                    from.value, doc.id.value, from.value
                ),
            )
            .at(file, from.span)
            .with_help(format!(
                "migrate from the deployed version: `from: {deployed}`"
            )),
        );
        return;
    }
    let Some(old) = old else { return };
    for step in m.value.steps.keys() {
        if old.states.iter().any(|s| s.id == step.value) {
            continue;
        }
        let message = crate::diagnostic::with_suggestion(
            format!(
                "`migrate.steps` maps `{}`, which is not a step of version {} of journey `{}`",
                step.value, from.value, doc.id.value
            ),
            &step.value,
            old.states.iter().map(|s| s.id.as_str()),
        );
        diags.push(
            Diagnostic::error(Code::UnknownReference, message)
                .at(file, step.span)
                .with_help(format!(
                    "the keys of `migrate.steps` are steps of version {}; the values are steps of this version or `end`",
                    from.value
                )),
        );
    }
}

fn version_not_bumped(file: &Arc<SourceFile>, doc: &model::Journey, base: u32) -> Diagnostic {
    let head = doc.version.value;
    let message = if head == base {
        format!(
            "journey `{}` changed but its version is still {head}",
            doc.id.value
        )
    } else {
        format!(
            "journey `{}` changed but its version went from {base} down to {head}",
            doc.id.value
        )
    };
    Diagnostic::error(Code::VersionNotBumped, message)
        .at(file, doc.version.span)
        .with_help(format!(
            "set `version: {}`: live users stay on the version they entered",
            base.saturating_add(1)
        ))
}

/// The steps of a journey document by id, as JSON without spans.
fn steps_json(doc: &Value) -> BTreeMap<String, &Value> {
    doc.get("steps")
        .and_then(Value::as_array)
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| Some((s.get("id")?.as_str()?.to_owned(), s)))
                .collect()
        })
        .unwrap_or_default()
}

fn step_type(step: &Value) -> Option<&'static str> {
    model::STEP_TYPES
        .iter()
        .copied()
        .find(|t| step.get(*t).is_some_and(|v| !v.is_null()))
}

/// Where each way out of a step leads, by step id (`end` for the end):
/// catches a `next` that changed because the step order did.
fn exits(j: &compiled::Journey, index: usize) -> Vec<String> {
    let Some(state) = j.states.get(index) else {
        return Vec::new();
    };
    graph::edges(&state.action)
        .into_iter()
        .map(|e| match e.to {
            Next::End => "end".to_owned(),
            Next::State(i) => j.states.get(i).map(|s| s.id.clone()).unwrap_or_default(),
        })
        .collect()
}

fn step_diff(
    bj: &compiled::Journey,
    hj: &compiled::Journey,
    bdoc: &Value,
    hdoc: &Value,
) -> StepDiff {
    let bsteps = steps_json(bdoc);
    let hsteps = steps_json(hdoc);
    let mut diff = StepDiff::default();
    for s in &hj.states {
        let Some(hs) = hsteps.get(&s.id) else {
            continue;
        };
        let Some(bs) = bsteps.get(&s.id) else {
            diff.added.push(s.id.clone());
            continue;
        };
        let mut parts = Vec::new();
        let (bt, ht) = (step_type(bs), step_type(hs));
        if bt != ht {
            parts.push("type".to_owned());
        } else if let Some(t) = ht {
            let (bv, hv) = (&bs[t], &hs[t]);
            match (bv, hv) {
                (Value::Object(_), Value::Object(_)) if t != "update" && t != "exit" => {
                    for f in changed_fields(bv, hv, &[]) {
                        parts.push(format!("{t}.{f}"));
                    }
                }
                _ if bv != hv => parts.push(t.to_owned()),
                _ => {}
            }
        }
        let edges_moved = match (bj.state_index(&s.id), hj.state_index(&s.id)) {
            (Some(bi), Some(hi)) => exits(bj, bi) != exits(hj, hi),
            _ => false,
        };
        if bs.get("next") != hs.get("next") || edges_moved {
            parts.push("next".to_owned());
        }
        if !parts.is_empty() {
            diff.changed.push((s.id.clone(), parts));
        }
    }
    for s in &bj.states {
        if !hsteps.contains_key(&s.id) {
            diff.removed.push(s.id.clone());
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_fields_ignore_key_order_and_skipped_keys() {
        let a = json!({"id": "x", "limit": 3, "per": "1d", "kind": "FrequencyCap"});
        let b = json!({"kind": "FrequencyCap", "per": "1d", "id": "x", "limit": 4});
        assert_eq!(changed_fields(&a, &b, &["kind"]), vec!["limit".to_owned()]);
        let c = json!({"per": "1d", "kind": "FrequencyCap", "limit": 3, "id": "x"});
        assert!(changed_fields(&a, &c, &[]).is_empty());
    }

    #[test]
    fn a_removed_key_is_a_changed_field() {
        let a = json!({"id": "x", "action": "drop"});
        let b = json!({"id": "x"});
        assert_eq!(changed_fields(&a, &b, &[]), vec!["action".to_owned()]);
    }

    fn fixture(case: &str) -> (Side, Side) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/plan");
        let load = |which: Which, dir: &str| match Side::load(&root.join(case).join(dir), which) {
            Ok(s) => s,
            Err(Error::Invalid { diagnostics, .. }) => {
                let first: Vec<String> = diagnostics.iter().map(|d| d.message.clone()).collect();
                panic!("{case}/{dir} must be valid: {first:?}")
            }
        };
        (load(Which::Base, "base"), load(Which::Head, "head"))
    }

    #[test]
    fn moved_lines_and_reordered_keys_are_no_change() {
        let (base, head) = fixture("moved");
        let plan = plan(&base, &head, None);
        assert!(plan.is_empty(), "{:?}", plan.changes);
        assert!(plan.diagnostics.is_empty());
    }

    #[test]
    fn the_step_diff_names_what_changed_in_each_step() {
        let (base, head) = fixture("steps");
        let plan = plan(&base, &head, None);
        assert!(plan.diagnostics.is_empty());
        assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);
        let c = &plan.changes[0];
        assert_eq!(
            (c.kind, c.id.as_str(), c.action),
            ("Journey", "cart-abandonment", Action::Update)
        );
        let j = c.journey.as_ref().expect("journey");
        assert_eq!((j.from_version, j.to_version), (Some(2), Some(3)));
        assert_eq!(j.steps.added, vec!["last-call"]);
        assert_eq!(j.steps.removed, vec!["old-step"]);
        let changed: Vec<(&str, Vec<&str>)> = j
            .steps
            .changed
            .iter()
            .map(|(id, p)| (id.as_str(), p.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            changed,
            vec![
                ("wait-1h", vec!["wait"]),
                ("reminder", vec!["send.template", "next"]),
                ("wait-purchase", vec!["wait_for.timeout"]),
                ("nudge", vec!["next"]),
            ]
        );
        assert!(j.in_flight.is_none());
    }

    #[test]
    fn in_flight_counts_come_from_the_hook() {
        let (base, head) = fixture("steps");
        let hook = |journey: &str, version: u32| {
            assert_eq!((journey, version), ("cart-abandonment", 2));
            BTreeMap::from([
                ("wait-1h".to_owned(), 5u64),
                ("old-step".to_owned(), 3),
                ("nudge".to_owned(), 2),
            ])
        };
        let plan = plan(&base, &head, Some(&hook));
        let f = plan.changes[0]
            .journey
            .as_ref()
            .and_then(|j| j.in_flight.clone())
            .expect("counts");
        // migrate from 2 maps wait-1h (wait 1h → wait 30m: same kind) and
        // old-step (a send in v2) → wait-purchase (a wait_for).
        let rule = |from: &str, to: &str, timer| MigrationRule {
            from_step: from.to_owned(),
            to_step: Some(to.to_owned()),
            timer,
        };
        assert_eq!(
            f,
            InFlightCounts {
                live: 10,
                at_removed_steps: 3,
                migrated: 8,
                exited: 0,
                migration: vec![
                    RuleImpact {
                        rule: rule("old-step", "wait-purchase", Timer::Restarted),
                        instances: 3
                    },
                    RuleImpact {
                        rule: rule("wait-1h", "wait-1h", Timer::Kept),
                        instances: 5
                    },
                ],
            }
        );
        assert_eq!(plan.to_json()["changes"][0]["in_flight"]["live"], 10);
    }

    #[test]
    fn a_changed_journey_without_a_new_version_is_an_error_at_its_version_line() {
        let (base, head) = fixture("not-bumped");
        let plan = plan(&base, &head, None);
        let errors: Vec<&Diagnostic> = plan.diagnostics.errors().collect();
        assert_eq!(errors.len(), 1);
        let d = errors[0];
        assert_eq!(d.code, Code::VersionNotBumped);
        assert_eq!(d.file_name(), "journeys/cart.yaml");
        // Two comment lines push `version: 2` from line 4 to line 6.
        assert_eq!((d.span.line, d.span.column), (6, 10));
    }

    /// Live instances of the migrate fixture: cart-abandonment v3 and
    /// win-back v2 (deployed) and v1 (older, what win-back v3 migrates).
    fn migrate_counts(journey: &str, version: u32) -> BTreeMap<String, u64> {
        let steps: &[(&str, u64)] = match (journey, version) {
            ("cart-abandonment", 3) => &[
                ("wait-1h", 5),
                ("reminder", 1),
                ("wait-morning", 4),
                ("nudge", 2),
                ("wait-purchase", 3),
            ],
            ("win-back", 2) => &[("wait-week", 6)],
            ("win-back", 1) => &[("wait-week", 2), ("offer", 1)],
            other => panic!("the plan asked for {other:?}"),
        };
        steps.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect()
    }

    #[test]
    fn migration_impact_per_rule_with_timers_and_exits() {
        let (base, head) = fixture("migrate");
        let plan = plan(&base, &head, Some(&migrate_counts));
        assert!(plan.diagnostics.is_empty(), "{:?}", plan.diagnostics);
        let cart = plan.changes[0].journey.as_ref().expect("journey");
        let f = cart.in_flight.as_ref().expect("counts");
        // 15 live v3 instances; wait-1h, wait-morning and nudge are removed
        // (11); every mapped step moves (5 + 4 + 2 + 3); the one at the
        // unmapped `reminder` exits (`on_unmapped: exit`).
        assert_eq!(
            (f.live, f.at_removed_steps, f.migrated, f.exited),
            (15, 11, 14, 1)
        );
        let rules: Vec<(&str, &str, u64, Timer)> = f
            .migration
            .iter()
            .map(|r| {
                (
                    r.rule.from_step.as_str(),
                    r.rule.to_name(),
                    r.instances,
                    r.rule.timer,
                )
            })
            .collect();
        assert_eq!(
            rules,
            vec![
                ("nudge", "end", 2, Timer::None),
                ("wait-1h", "wait-2h", 5, Timer::Kept),
                ("wait-morning", "wait-purchase", 4, Timer::Restarted),
                ("wait-purchase", "wait-purchase", 3, Timer::Kept),
            ]
        );
        // win-back v3 migrates v1 while v2 is deployed: both are counted
        // live, only v1's mapped step moves, `stay` ends nobody.
        let winback = plan.changes[1].journey.as_ref().expect("journey");
        let f = winback.in_flight.as_ref().expect("counts");
        assert_eq!(
            (f.live, f.at_removed_steps, f.migrated, f.exited),
            (9, 0, 2, 0)
        );
        assert_eq!(f.migration[0].rule.timer, Timer::Unknown);
        insta::assert_snapshot!(
            "plan_migrate_json_in_flight",
            serde_json::to_string_pretty(&plan.to_json()).expect("json")
        );
    }

    /// A store that also keeps the definition of older versions.
    struct Store {
        older: Side,
    }

    impl InFlight for Store {
        fn live_per_step(&self, journey: &str, version: u32) -> BTreeMap<String, u64> {
            migrate_counts(journey, version)
        }

        fn definition(&self, journey: &str, version: u32) -> Option<Arc<compiled::Journey>> {
            assert_eq!((journey, version), ("win-back", 1));
            self.older.config.journey(journey).cloned()
        }
    }

    #[test]
    fn an_older_from_version_is_judged_on_the_definition_the_store_keeps() {
        let (base, head) = fixture("migrate");
        // The base's win-back (a wait step) stands in for the stored v1.
        let (older, _) = fixture("migrate");
        let plan = plan(&base, &head, Some(&Store { older }));
        let winback = plan.changes[1].journey.as_ref().expect("journey");
        let m = winback.migration.as_ref().expect("migration");
        assert_eq!((m.from, m.rules[0].timer), (1, Timer::Kept));
    }

    #[test]
    fn without_a_store_the_migration_is_shown_without_counts() {
        let (base, head) = fixture("migrate");
        let plan = plan(&base, &head, None);
        let json = plan.to_json();
        let cart = &json["changes"][0];
        assert!(cart.get("in_flight").is_none());
        assert_eq!(
            cart["migrate"],
            json!({"from": 3, "on_unmapped": "exit", "steps": [
                {"from_step": "nudge", "to_step": "end", "timer": "none"},
                {"from_step": "wait-1h", "to_step": "wait-2h", "timer": "kept"},
                {"from_step": "wait-morning", "to_step": "wait-purchase", "timer": "restarted"},
                {"from_step": "wait-purchase", "to_step": "wait-purchase", "timer": "kept"},
            ]})
        );
    }

    #[test]
    fn migrate_blocks_that_do_not_fit_the_deployed_version_are_errors_at_their_keys() {
        let (base, head) = fixture("migrate-errors");
        let plan = plan(&base, &head, None);
        let errors: Vec<(Code, &str, usize, usize, &str)> = plan
            .diagnostics
            .errors()
            .map(|d| {
                (
                    d.code,
                    d.file_name(),
                    d.span.line,
                    d.span.column,
                    d.message.as_str(),
                )
            })
            .collect();
        assert_eq!(
            errors,
            vec![
                (
                    Code::UnknownReference,
                    "journeys/cart.yaml",
                    19,
                    12,
                    "`migrate.steps` maps `wait-1hr`, which is not a step of version 3 of journey \
                     `cart-abandonment`, did you mean `wait-1h`?"
                ),
                (
                    Code::InvalidValue,
                    "journeys/winback.yaml",
                    14,
                    9,
                    "`migrate.from` is 3 but the deployed version of journey `win-back` is 2: \
                     no live instance is on version 3"
                ),
            ]
        );
    }
}
