//! The optional Catalog: parsing its types, and checking conditions,
//! template variables and event names against it.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;

use serde_json::Value;

use super::Ctx;
use crate::compiled::{Catalog, FieldType};
use crate::condition::{Comparison, Condition, Op, Operand, Root};
use crate::diagnostic::{with_suggestion, Code, SourceFile};
use crate::model;
use crate::span::{Node, Span, Spanned};
use crate::template::Text;

const TYPE_NAMES: &[&str] = &["string", "number", "boolean", "list", "map", "timestamp"];

fn parse_type(node: &Spanned<Node>, ctx: &mut Ctx<'_>) -> Option<FieldType> {
    match &node.value {
        Node::Scalar(s) => Some(match s.text.as_str() {
            "string" => FieldType::String,
            "number" | "integer" => FieldType::Number,
            "boolean" | "bool" => FieldType::Boolean,
            "list" => FieldType::List,
            "map" => FieldType::Map,
            "timestamp" => FieldType::Timestamp,
            other => {
                let message = with_suggestion(
                    format!(
                        "unknown type `{other}`, expected one of {} or `{{ enum: [...] }}`",
                        TYPE_NAMES.join(", ")
                    ),
                    other,
                    TYPE_NAMES.iter().copied(),
                );
                ctx.error(Code::InvalidValue, node.span, message);
                return None;
            }
        }),
        Node::Map(_) => match node.value.get("enum").and_then(|e| e.value.as_seq()) {
            Some(items) if node.value.as_map().map(<[_]>::len) == Some(1) => Some(FieldType::Enum(
                items.iter().map(|i| i.value.to_json()).collect(),
            )),
            _ => {
                ctx.error(
                    Code::InvalidValue,
                    node.span,
                    "a type is a name or `{ enum: [values...] }`",
                );
                None
            }
        },
        Node::Seq(_) => {
            ctx.error(
                Code::InvalidValue,
                node.span,
                "a type is a name or `{ enum: [values...] }`",
            );
            None
        }
    }
}

pub(crate) fn parse(c: &model::Catalog, ctx: &mut Ctx<'_>) -> Catalog {
    let mut out = Catalog::default();
    if let Some(user) = &c.user {
        match user.value.as_map() {
            Some(entries) => {
                for (k, v) in entries {
                    if let Some(t) = parse_type(v, ctx) {
                        out.user.insert(k.value.clone(), t);
                    }
                }
            }
            None if user.value.is_null() => {}
            None => ctx.error(
                Code::InvalidValue,
                user.span,
                "`user` maps attribute names to types",
            ),
        }
    }
    if let Some(events) = &c.events {
        match events.value.as_map() {
            Some(entries) => {
                for (name, props) in entries {
                    let mut fields = std::collections::BTreeMap::new();
                    match props.value.as_map() {
                        Some(ps) => {
                            for (k, v) in ps {
                                if let Some(t) = parse_type(v, ctx) {
                                    fields.insert(k.value.clone(), t);
                                }
                            }
                        }
                        None if props.value.is_null() => {}
                        None => ctx.error(
                            Code::InvalidValue,
                            props.span,
                            "an event maps property names to types",
                        ),
                    }
                    out.events.insert(name.value.clone(), fields);
                }
            }
            None if events.value.is_null() => {}
            None => ctx.error(
                Code::InvalidValue,
                events.span,
                "`events` maps event names to their properties",
            ),
        }
    }
    out
}

/// What the Catalog says about one path.
enum Lookup {
    /// No Catalog, or a path below a `map`: nothing can be said.
    Unchecked,
    Known(FieldType),
    Unknown(Vec<String>),
}

/// One check against the Catalog with everything it reads besides the
/// Catalog, so that it can be run again when only the Catalog changed
/// (`ide`: a Catalog edit re-runs these instead of compiling the files).
#[derive(Debug, Clone)]
pub enum TypeCheck {
    /// An event name (entry, exit, goal, `wait_for`).
    Event(Spanned<String>),
    /// Every comparison of a condition: the event in scope and the entry
    /// event.
    Condition {
        condition: Condition,
        event: Option<String>,
        entry: Option<String>,
    },
    /// The variables of a template text, reported inside `span`: the
    /// entry event's name (`None` where `entry.*` is not judged,
    /// `Some(None)` where the journey is not entered by an event) and the
    /// event in scope.
    Text {
        variables: BTreeSet<String>,
        span: Span,
        entry: Option<Option<String>>,
        event: Option<String>,
    },
}

impl TypeCheck {
    /// Whether what the check finds may depend on one of these user
    /// attributes or events (an event's presence or any of its
    /// properties). Errs on the side of yes; a check that found nothing
    /// and reads none of them finds nothing again. (What it suggests for
    /// an unknown name depends on every name: a check that found something
    /// is run again whatever it reads.)
    pub fn reads(&self, user: &BTreeSet<String>, events: &BTreeSet<String>) -> bool {
        let event = |e: &Option<String>| e.as_ref().is_some_and(|e| events.contains(e));
        match self {
            TypeCheck::Event(name) => events.contains(&name.value),
            TypeCheck::Condition {
                condition,
                event: scope,
                entry,
            } => {
                let mut reads = event(scope) || event(entry);
                condition.walk(&mut |c| match c {
                    Condition::Compare(cmp) => {
                        let mut paths = vec![&cmp.path];
                        let mut operands = vec![&cmp.operand];
                        while let Some(o) = operands.pop() {
                            match o {
                                Operand::Path(p) => paths.push(p),
                                Operand::List(items) => operands.extend(items),
                                Operand::Value(_) | Operand::Template(_) => {}
                            }
                        }
                        reads |= paths.iter().any(|p| {
                            p.root == Root::User && p.keys.first().is_some_and(|k| user.contains(k))
                        });
                    }
                    Condition::History(h) => reads |= events.contains(&h.event.value),
                    _ => {}
                });
                reads
            }
            TypeCheck::Text {
                variables,
                entry,
                event: scope,
                ..
            } => {
                let entry = entry.as_ref().is_some_and(event);
                variables.iter().any(|v| {
                    let mut parts = v.split('.');
                    match (parts.next(), parts.next()) {
                        (Some("user"), Some(k)) => user.contains(k),
                        (Some("entry"), _) => entry,
                        (Some("event"), _) => event(scope),
                        _ => false,
                    }
                })
            }
        }
    }
}

/// A check run during compilation, as [`TypeEnv::record`] keeps it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub check: TypeCheck,
    /// The file it reports into.
    pub file: Arc<SourceFile>,
    /// The diagnostics it reported: their indices in the compilation's
    /// diagnostics, before they are sorted.
    pub found: Range<usize>,
    /// Whether what it reports decides if its journey compiles (a sent
    /// template's `entry.*` variables): then JourneyTests and partial
    /// checks, which see compiled journeys only, depend on it too.
    pub gates: bool,
}

/// Type checks against an optional Catalog.
pub(crate) struct TypeEnv<'a> {
    catalog: Option<&'a Catalog>,
    /// Every check run in the files named, in order, when asked for
    /// ([`TypeEnv::record`]).
    log: Option<(RefCell<Vec<Recorded>>, &'a FileFilter<'a>)>,
}

/// Which files' checks [`TypeEnv::record`] keeps, by name.
pub(crate) type FileFilter<'f> = dyn Fn(&str) -> bool + 'f;

fn reserved(attr: &str) -> Option<FieldType> {
    Some(match attr {
        "id" | "email" | "timezone" => FieldType::String,
        "push_tokens" => FieldType::List,
        "subscriptions" => FieldType::Map,
        _ => return None,
    })
}

impl<'a> TypeEnv<'a> {
    pub fn new(catalog: Option<&'a Catalog>) -> Self {
        TypeEnv { catalog, log: None }
    }

    /// Like [`TypeEnv::new`], keeping every check run in a file `files`
    /// names ([`TypeEnv::into_log`]).
    pub fn record(catalog: Option<&'a Catalog>, files: &'a FileFilter<'a>) -> Self {
        TypeEnv {
            catalog,
            log: Some((RefCell::new(Vec::new()), files)),
        }
    }

    /// The checks kept, in order (none when not recording).
    pub fn into_log(self) -> Vec<Recorded> {
        self.log
            .map(|(log, _)| log.into_inner())
            .unwrap_or_default()
    }

    /// Keeps a check that reported `ctx.diags[before..]`, if recording.
    fn note(&self, ctx: &Ctx<'_>, before: usize, gates: bool, check: impl FnOnce() -> TypeCheck) {
        if let Some((log, files)) = &self.log {
            if !files(&ctx.file.name) {
                return;
            }
            log.borrow_mut().push(Recorded {
                check: check(),
                file: ctx.file.clone(),
                found: before..ctx.diags.len(),
                gates,
            });
        }
    }

    /// Runs a recorded check again (against this environment's Catalog).
    pub fn run(&self, check: &TypeCheck, ctx: &mut Ctx<'_>) {
        match check {
            TypeCheck::Event(name) => self.event(name, ctx),
            TypeCheck::Condition {
                condition,
                event,
                entry,
            } => self.condition(condition, event.as_deref(), entry.as_deref(), ctx),
            TypeCheck::Text {
                variables,
                span,
                entry,
                event,
            } => self.variables(
                variables,
                *span,
                entry.as_ref().map(Option::as_deref),
                event.as_deref(),
                ctx,
            ),
        }
    }

    /// Reports an event name the Catalog does not declare.
    pub fn check_event(&self, name: &Spanned<String>, ctx: &mut Ctx<'_>) {
        let before = ctx.diags.len();
        self.event(name, ctx);
        self.note(ctx, before, false, || TypeCheck::Event(name.clone()));
    }

    fn event(&self, name: &Spanned<String>, ctx: &mut Ctx<'_>) {
        let Some(cat) = self.catalog else { return };
        if !cat.events.contains_key(&name.value) {
            let message = with_suggestion(
                format!("event `{}` is not declared in the Catalog", name.value),
                &name.value,
                cat.events.keys().map(String::as_str),
            );
            ctx.error(Code::UnknownReference, name.span, message);
        }
    }

    fn lookup(
        &self,
        root: Root,
        keys: &[String],
        event: Option<&str>,
        entry: Option<&str>,
    ) -> Lookup {
        let Some(cat) = self.catalog else {
            return Lookup::Unchecked;
        };
        let Some(first) = keys.first() else {
            return Lookup::Unchecked;
        };
        let (fields, reserved_type) = match root {
            Root::User => (Some(&cat.user), reserved(first)),
            Root::Event => (event.and_then(|e| cat.events.get(e)), None),
            Root::Entry => (entry.and_then(|e| cat.events.get(e)), None),
        };
        let Some(fields) = fields else {
            // The event itself is unknown (reported elsewhere) or not in scope.
            return Lookup::Unchecked;
        };
        let t = match fields.get(first).cloned().or(reserved_type) {
            Some(t) => t,
            None => return Lookup::Unknown(fields.keys().cloned().collect()),
        };
        match (&t, keys.len()) {
            (_, 1) => Lookup::Known(t),
            (FieldType::Map, _) => Lookup::Unchecked,
            _ => Lookup::Unknown(Vec::new()),
        }
    }

    fn report_unknown(&self, path: &str, candidates: &[String], span: Span, ctx: &mut Ctx<'_>) {
        // Suggest the whole path as it would be written.
        let prefix = path.rfind('.').map_or("", |i| &path[..=i]);
        let full: Vec<String> = candidates.iter().map(|c| format!("{prefix}{c}")).collect();
        let message = with_suggestion(
            format!("`{path}` is not declared in the Catalog"),
            path,
            full.iter().map(String::as_str),
        );
        ctx.error(Code::UnknownVariable, span, message);
    }

    /// Checks every comparison of a condition: unknown attributes and
    /// properties, and values of the wrong type.
    pub fn check_condition(
        &self,
        c: &Condition,
        event: Option<&str>,
        entry: Option<&str>,
        ctx: &mut Ctx<'_>,
    ) {
        let before = ctx.diags.len();
        self.condition(c, event, entry, ctx);
        if self.log.is_none() {
            return;
        }
        // Only comparisons and history read the Catalog.
        let mut reads = false;
        c.walk(&mut |c| reads |= matches!(c, Condition::Compare(_) | Condition::History(_)));
        if !reads {
            return;
        }
        self.note(ctx, before, false, || TypeCheck::Condition {
            condition: c.clone(),
            event: event.map(str::to_owned),
            entry: entry.map(str::to_owned),
        });
    }

    fn condition(
        &self,
        c: &Condition,
        event: Option<&str>,
        entry: Option<&str>,
        ctx: &mut Ctx<'_>,
    ) {
        if self.catalog.is_none() {
            return;
        }
        c.walk(&mut |node| match node {
            Condition::Compare(cmp) => self.check_comparison(cmp, event, entry, ctx),
            Condition::History(h) => {
                self.event(&h.event, ctx);
                if let Some(w) = &h.where_ {
                    // `event.*` inside `where` is the historical event.
                    self.condition(w, Some(&h.event.value), entry, ctx);
                }
            }
            _ => {}
        });
    }

    fn check_comparison(
        &self,
        cmp: &Comparison,
        event: Option<&str>,
        entry: Option<&str>,
        ctx: &mut Ctx<'_>,
    ) {
        let t = match self.lookup(cmp.path.root, &cmp.path.keys, event, entry) {
            Lookup::Unchecked => return,
            Lookup::Unknown(candidates) => {
                self.report_unknown(&cmp.path.dotted(), &candidates, cmp.path_span, ctx);
                return;
            }
            Lookup::Known(t) => t,
        };
        if cmp.op == Op::Exists {
            return;
        }
        let operands: Vec<&Operand> = match &cmp.operand {
            Operand::List(items) => items.iter().collect(),
            other => vec![other],
        };
        for o in operands {
            let found = match o {
                Operand::Value(v) => {
                    if let Some(problem) = value_mismatch(&t, cmp.op, v) {
                        ctx.error(
                            Code::TypeMismatch,
                            cmp.operand_span,
                            format!("`{}` is {problem}", cmp.path.dotted()),
                        );
                    }
                    continue;
                }
                Operand::Path(p) => match self.lookup(p.root, &p.keys, event, entry) {
                    Lookup::Known(other) => other,
                    Lookup::Unknown(candidates) => {
                        self.report_unknown(&p.dotted(), &candidates, cmp.operand_span, ctx);
                        continue;
                    }
                    Lookup::Unchecked => continue,
                },
                Operand::Template(_) => FieldType::String,
                Operand::List(_) => continue,
            };
            if !compatible(&t, &found, cmp.op) {
                ctx.error(
                    Code::TypeMismatch,
                    cmp.operand_span,
                    format!(
                        "`{}` is a {} but is compared with a {}",
                        cmp.path.dotted(),
                        t.name(),
                        found.name()
                    ),
                );
            }
        }
    }

    /// Checks the variables a template reads. `entry`: the entry event's
    /// name (`None` for segment and schedule entries); `event`: the event
    /// in scope, if any.
    pub fn check_text(
        &self,
        text: &Text,
        span: Span,
        entry: Option<Option<&str>>,
        event: Option<&str>,
        ctx: &mut Ctx<'_>,
    ) {
        self.check_text_gating(&text.variables, span, entry, event, false, ctx);
    }

    /// [`TypeEnv::check_text`] for a template a journey sends: whether it
    /// reported anything, which decides whether the journey compiles. Only
    /// its `entry.*` variables depend on the journey; the others were
    /// checked (and any problem reported, once) with the template itself.
    pub fn check_sent_text(
        &self,
        text: &Text,
        span: Span,
        entry: Option<Option<&str>>,
        ctx: &mut Ctx<'_>,
    ) -> bool {
        let entry_only: BTreeSet<String> = text
            .variables
            .iter()
            .filter(|v| v.starts_with("entry."))
            .cloned()
            .collect();
        self.check_text_gating(&entry_only, span, entry, None, true, ctx)
    }

    fn check_text_gating(
        &self,
        variables: &BTreeSet<String>,
        span: Span,
        entry: Option<Option<&str>>,
        event: Option<&str>,
        gates: bool,
        ctx: &mut Ctx<'_>,
    ) -> bool {
        let before = ctx.diags.len();
        self.variables(variables, span, entry, event, ctx);
        let reported = ctx.diags.len() > before;
        if self.log.is_none() {
            return reported;
        }
        // Only paths below `user`, `entry` and `event` read the Catalog.
        let reads = variables.iter().any(|v| {
            v.split_once('.')
                .is_some_and(|(root, _)| matches!(root, "user" | "entry" | "event"))
        });
        if !reads {
            return reported;
        }
        self.note(ctx, before, gates, || TypeCheck::Text {
            variables: variables.clone(),
            span,
            entry: entry.map(|e| e.map(str::to_owned)),
            event: event.map(str::to_owned),
        });
        reported
    }

    fn variables(
        &self,
        variables: &BTreeSet<String>,
        span: Span,
        entry: Option<Option<&str>>,
        event: Option<&str>,
        ctx: &mut Ctx<'_>,
    ) {
        for var in variables {
            let span = ctx.locate(span, var);
            let mut parts = var.split('.');
            let root = parts.next().unwrap_or_default();
            let keys: Vec<String> = parts.map(str::to_owned).collect();
            match root {
                "user" => {
                    if keys.is_empty() {
                        continue;
                    }
                    if let Lookup::Unknown(c) = self.lookup(Root::User, &keys, None, None) {
                        self.report_unknown(var, &c, span, ctx);
                    }
                }
                "entry" => match entry {
                    Some(None) => ctx.error(
                        Code::UnknownVariable,
                        span,
                        format!("`{var}`: this journey is not entered by an event, so `entry.*` is empty"),
                    ),
                    Some(Some(e)) => {
                        if let Lookup::Unknown(c) = self.lookup(Root::Entry, &keys, None, Some(e)) {
                            self.report_unknown(var, &c, span, ctx);
                        }
                    }
                    None => {}
                },
                "event" => {
                    if let Some(e) = event {
                        if let Lookup::Unknown(c) = self.lookup(Root::Event, &keys, Some(e), None) {
                            self.report_unknown(var, &c, span, ctx);
                        }
                    }
                }
                "journey" => {
                    if !matches!(keys.as_slice(), [k] if k == "id" || k == "version" || k == "step") {
                        ctx.error(
                            Code::UnknownVariable,
                            span,
                            format!("unknown variable `{var}`: `journey` has `id`, `version` and `step`"),
                        );
                    }
                }
                "message" => {
                    if !matches!(keys.as_slice(), [k] if k == "key" || k == "unsubscribe_url") {
                        ctx.error(
                            Code::UnknownVariable,
                            span,
                            format!("unknown variable `{var}`: `message` has `key` and `unsubscribe_url`"),
                        );
                    }
                }
                "@root" | "@index" | "@key" | "@first" | "@last" => {}
                other => {
                    let message = with_suggestion(
                        format!("unknown variable `{var}`: variables start with user., entry., event., journey. or message."),
                        other,
                        ["user", "entry", "event", "journey", "message"],
                    );
                    ctx.error(Code::UnknownVariable, span, message);
                }
            }
        }
    }
}

/// Why a literal does not fit a declared type, if it does not.
fn value_mismatch(t: &FieldType, op: Op, v: &Value) -> Option<String> {
    let ok = match (t, v) {
        (FieldType::Enum(values), v) => {
            if values.contains(v) {
                return None;
            }
            let list: Vec<String> = values
                .iter()
                .map(|x| x.to_string().trim_matches('"').to_owned())
                .collect();
            return Some(format!("one of {}, and {v} is not", list.join(", ")));
        }
        (FieldType::Number, Value::Number(_)) => true,
        (FieldType::String | FieldType::Timestamp, Value::String(_)) => true,
        (FieldType::Boolean, Value::Bool(_)) => true,
        (FieldType::List, _) => matches!(op, Op::Contains) || matches!(v, Value::Array(_)),
        (FieldType::Map, _) => true,
        _ => false,
    };
    (!ok).then(|| format!("a {} but is compared with {}", t.name(), describe(v)))
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string \"{s}\""),
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Null => "null".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn compatible(a: &FieldType, b: &FieldType, op: Op) -> bool {
    use FieldType as T;
    match (a, b) {
        (T::Enum(_), T::String) | (T::String, T::Enum(_)) | (T::Enum(_), T::Enum(_)) => true,
        (T::List, _) => matches!(op, Op::Contains),
        (T::Map, _) | (_, T::Map) => true,
        (T::Timestamp, T::String) | (T::String, T::Timestamp) => true,
        _ => a == b,
    }
}
