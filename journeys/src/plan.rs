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
//! Live instances are not known here: a store-backed caller passes an
//! [`InFlight`] that counts them per step, and each journey change then
//! carries its [`InFlightCounts`].

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlightCounts {
    /// Live instances of the deployed (base) version.
    pub live: u64,
    /// Of those, the ones waiting at a step the head removes.
    pub at_removed_steps: u64,
    /// Of those, the ones the head's `migrate` block moves.
    pub migrated: u64,
}

/// Counts live instances: for a journey and a version, how many instances
/// are at each step. A plan against a checkout (`--base`) has none.
pub trait InFlight {
    fn live_per_step(&self, journey: &str, version: u32) -> BTreeMap<String, u64>;
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
                if let Some(f) = &j.in_flight {
                    o.insert(
                        "in_flight".into(),
                        json!({
                            "live": f.live,
                            "at_removed_steps": f.at_removed_steps,
                            "migrated": f.migrated,
                        }),
                    );
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

fn counts(
    f: &dyn InFlight,
    base: &compiled::Journey,
    removed: &[String],
    head: Option<&compiled::Journey>,
) -> InFlightCounts {
    let per_step = f.live_per_step(&base.id, base.version);
    let live = per_step.values().sum();
    let at_removed_steps = removed.iter().filter_map(|s| per_step.get(s)).sum::<u64>();
    let migrated = head
        .and_then(|h| h.migrate.as_ref())
        .filter(|m| m.from == base.version)
        .map(|m| m.steps.keys().filter_map(|s| per_step.get(s)).sum::<u64>())
        .unwrap_or(0);
    InFlightCounts {
        live,
        at_removed_steps,
        migrated,
    }
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
    if content_changed && hj.version <= bj.version {
        if let Document::Journey(doc) = &hr.loaded.document {
            diags.push(version_not_bumped(&hr.loaded.file, doc, bj.version));
        }
    }
    let in_flight = in_flight.map(|f| counts(f, bj, &steps.removed, Some(hj)));
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
        }),
    })
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
            .and_then(|j| j.in_flight)
            .expect("counts");
        // migrate from 2 maps wait-1h and old-step.
        assert_eq!(
            f,
            InFlightCounts {
                live: 10,
                at_removed_steps: 3,
                migrated: 8
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
}
