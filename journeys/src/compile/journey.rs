//! One journey: entry, exits, goal, steps as a state machine, and the
//! checks that belong to it (references, reachability, wait-free loops,
//! channels, types against the Catalog).

use std::collections::BTreeMap;

use super::graph;
use super::message::inline_text;
use super::{Ctx, Ids, TypeEnv};
use crate::compiled::{
    Action, Entry, ExitRule, Goal, Journey, MessageTemplate, Migration, Next, State, Trigger,
    UpdateValue,
};
use crate::condition::Allowed;
use crate::diagnostic::{with_suggestion, Code};
use crate::model::{self, STEP_TYPES};
use crate::scalar::{self, Duration, Percent, Reentry, Zone};
use crate::span::{Node, Resolved, Span, Spanned};
use crate::template::Text;

pub(crate) struct Env<'a> {
    pub ids: &'a Ids,
    pub types: &'a TypeEnv<'a>,
    pub templates: &'a BTreeMap<String, MessageTemplate>,
    /// The Project's zone, for schedules without `timezone`.
    pub default_zone: chrono_tz::Tz,
}

struct Builder<'j, 'c, 'd> {
    journey: &'j model::Journey,
    env: &'j Env<'j>,
    ctx: &'c mut Ctx<'d>,
    texts: Vec<Text>,
    ok: bool,
    step_ids: BTreeMap<String, usize>,
    entry_event: Option<String>,
    /// Whether the entry says how the journey is entered: when it does
    /// not (no trigger, or two), `entry.*` is not judged (one mistake).
    entry_known: bool,
    /// Steps whose action could not be compiled: their edges are every
    /// step they name, so that one mistake is reported once, not again as
    /// an unreachable next step or a loop.
    placeholders: Vec<usize>,
    /// How many step references named no step so far: a step whose
    /// `next` (or arm, or `on_event`…) is unknown may have meant any step.
    unknown_targets: usize,
}

impl Builder<'_, '_, '_> {
    fn name(&self, what: &str) -> String {
        // The version is part of the name: a running engine registers
        // several versions of one journey in one renderer.
        format!(
            "journey/{}@{}/{what}",
            self.journey.id.value, self.journey.version.value
        )
    }

    fn fail(&mut self, code: Code, span: Span, message: impl Into<String>) {
        self.ctx.error(code, span, message);
        self.ok = false;
    }

    fn target(&mut self, id: &Spanned<String>) -> Next {
        if id.value == "end" {
            return Next::End;
        }
        match self.step_ids.get(&id.value) {
            Some(i) => Next::State(*i),
            None => {
                let message = with_suggestion(
                    format!(
                        "step `{}` is not defined in journey `{}`",
                        id.value, self.journey.id.value
                    ),
                    &id.value,
                    self.step_ids.keys().map(String::as_str).chain(["end"]),
                );
                self.fail(Code::UnknownReference, id.span, message);
                self.unknown_targets += 1;
                Next::End
            }
        }
    }

    fn condition(
        &mut self,
        node: &Spanned<Node>,
        what: &str,
        event: Option<&str>,
    ) -> Option<journeys_condition::Condition> {
        let allowed = Allowed {
            event: event.is_some(),
            entry: true,
        };
        let name = self.name(what);
        let parsed = self.ctx.condition(node, &name, allowed);
        let Some((c, texts)) = parsed else {
            self.ok = false;
            return None;
        };
        self.texts.extend(texts);
        super::references(&c, self.env.ids, self.ctx);
        let entry = self.entry_event.clone();
        self.env
            .types
            .check_condition(&c, event, entry.as_deref(), self.ctx);
        Some(c)
    }

    fn event_name(&mut self, name: &Spanned<String>) {
        self.env.types.check_event(name, self.ctx);
    }

    fn duration(&mut self, v: &Spanned<String>) -> Duration {
        match self
            .ctx
            .scalar(v, Code::InvalidDuration, scalar::parse_duration)
        {
            Some(d) => d,
            None => {
                self.ok = false;
                Duration(0)
            }
        }
    }
}

use crate::condition as journeys_condition;

/// The content hash: SHA-256 of the journey's canonical JSON, without its
/// version and without spans.
fn content_hash(j: &model::Journey) -> String {
    let mut value = serde_json::to_value(j).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("version");
    }
    model::canonical_hash(&value)
}

pub(crate) fn compile(
    j: &model::Journey,
    env: &Env<'_>,
    ctx: &mut Ctx<'_>,
) -> Option<(Journey, Vec<Text>)> {
    let mut b = Builder {
        journey: j,
        env,
        ctx,
        texts: Vec::new(),
        ok: true,
        step_ids: BTreeMap::new(),
        entry_event: None,
        entry_known: true,
        placeholders: Vec::new(),
        unknown_targets: 0,
    };

    // Step ids first, so every reference can be resolved.
    for (i, step) in j.steps.value.iter().enumerate() {
        let id = &step.value.id;
        if id.value == "end" {
            b.fail(
                Code::InvalidId,
                id.span,
                "`end` is reserved: it ends the instance",
            );
        }
        if b.step_ids.insert(id.value.clone(), i).is_some() {
            b.fail(
                Code::DuplicateId,
                id.span,
                format!(
                    "duplicate step id `{}` in journey `{}`",
                    id.value, j.id.value
                ),
            );
        }
    }
    if j.steps.value.is_empty() {
        b.fail(
            Code::MissingField,
            j.steps.span,
            "a journey needs at least one step",
        );
    }

    let entry = entry(&mut b);
    let holdout = match &j.holdout {
        Some(h) => b
            .ctx
            .scalar(h, Code::InvalidPercentage, scalar::parse_percent)
            .unwrap_or_else(|| {
                b.ok = false;
                Percent(0)
            }),
        None => Percent(0),
    };

    if let (Some(h), None, true) = (&j.holdout, &j.goal, holdout.0 > 0) {
        b.ctx.diags.push(
            crate::diagnostic::Diagnostic::error(
                Code::HoldoutWithoutGoal,
                format!(
                    "journey `{}` holds out {} of its users but has no `goal`, so the holdout measures nothing",
                    j.id.value, holdout
                ),
            )
            .warning()
            .at(b.ctx.file, h.span)
            .with_help("add `goal: { event: <conversion event>, within: <duration> }`"),
        );
    }

    let mut exits = Vec::new();
    for (i, e) in j.exit.iter().enumerate() {
        b.event_name(&e.value.event);
        let when = match &e.value.when {
            Some(w) => b.condition(w, &format!("exit/{i}"), Some(&e.value.event.value)),
            None => None,
        };
        exits.push(ExitRule {
            event: e.value.event.value.clone(),
            when,
        });
    }

    let goal = j.goal.as_ref().map(|g| {
        b.event_name(&g.value.event);
        let when = match &g.value.when {
            Some(w) => b.condition(w, "goal", Some(&g.value.event.value)),
            None => None,
        };
        let within = match &g.value.within {
            Some(w) => b.duration(w),
            None => Duration(30 * 86_400),
        };
        Goal {
            event: g.value.event.value.clone(),
            when,
            within,
        }
    });

    // Steps that name a step that does not exist (reported there).
    let mut dangling = Vec::new();
    let states: Vec<State> = j
        .steps
        .value
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let before = b.unknown_targets;
            let state = step(&mut b, i, s);
            if b.unknown_targets > before {
                dangling.push(i);
            }
            state
        })
        .collect();

    // Graph checks.
    let edges: Vec<Vec<Next>> = states.iter().map(|s| successors(&s.action)).collect();
    if !states.is_empty() {
        let reached = graph::reachable(&edges);
        // A reachable step whose next step is unknown may have meant any
        // step: what looks unreachable then is the same mistake again.
        let guessing = dangling.iter().any(|i| reached[*i]);
        for (i, r) in reached.iter().enumerate() {
            if !r && !guessing {
                let id = &j.steps.value[i].value.id;
                b.fail(
                    Code::UnreachableStep,
                    id.span,
                    format!(
                        "step `{}` can never be reached in journey `{}`",
                        id.value, j.id.value
                    ),
                );
            }
        }
        let waits: Vec<bool> = states
            .iter()
            .enumerate()
            .map(|(i, s)| s.action.waits() || b.placeholders.contains(&i))
            .collect();
        for cycle in graph::wait_free_cycles(&edges, &waits) {
            let first = cycle[0];
            let names: Vec<&str> = cycle
                .iter()
                .chain(std::iter::once(&first))
                .map(|i| states[*i].id.as_str())
                .collect();
            let id = &j.steps.value[first].value.id;
            b.ctx.diags.push(
                crate::diagnostic::Diagnostic::error(
                    Code::WaitFreeLoop,
                    format!(
                        "these steps loop without a wait, wait_until or wait_for: {}",
                        names.join(" → ")
                    ),
                )
                .at(b.ctx.file, id.span)
                .with_help("add a `wait` step inside the loop, or end it with `next: end`"),
            );
            b.ok = false;
        }
    }

    let migrate = j.migrate.as_ref().map(|m| {
        if m.value.from.value >= j.version.value {
            b.fail(
                Code::InvalidValue,
                m.value.from.span,
                format!(
                    "`migrate.from` ({}) must be lower than the journey's version ({})",
                    m.value.from.value, j.version.value
                ),
            );
        }
        let mut steps = BTreeMap::new();
        for (old, new) in &m.value.steps {
            let target = b.target(new);
            steps.insert(old.value.clone(), target);
        }
        Migration {
            from: m.value.from.value,
            steps,
            on_unmapped: m
                .value
                .on_unmapped
                .as_ref()
                .map(|o| o.value)
                .unwrap_or_default(),
        }
    });

    let category = j
        .category
        .as_ref()
        .map(|c| c.value.clone())
        .unwrap_or_else(|| "marketing".into());
    let priority = j.priority.as_ref().map(|p| p.value).unwrap_or(0);
    let ok = b.ok;
    let texts = b.texts;
    if !ok {
        return None;
    }
    Some((
        Journey {
            id: j.id.value.clone(),
            version: j.version.value,
            name: j.name.as_ref().map(|n| n.value.clone()),
            category,
            priority,
            entry: entry?,
            holdout,
            exits,
            goal,
            states,
            migrate,
            hash: content_hash(j),
            texts: texts.clone(),
        },
        texts,
    ))
}

fn successors(a: &Action) -> Vec<Next> {
    match a {
        Action::Wait { next, .. }
        | Action::WaitUntil { next, .. }
        | Action::Send { next, .. }
        | Action::Update { next, .. } => vec![*next],
        Action::WaitFor {
            on_event,
            on_timeout,
            ..
        } => vec![*on_event, *on_timeout],
        Action::Branch { arms, otherwise } => {
            arms.iter().map(|(_, n)| *n).chain([*otherwise]).collect()
        }
        Action::Split { arms } => arms.iter().map(|(_, n)| *n).collect(),
        Action::Exit => Vec::new(),
    }
}

fn entry(b: &mut Builder<'_, '_, '_>) -> Option<Entry> {
    let j = b.journey;
    let e = &j.entry.value;
    let given: Vec<&str> = [
        e.event.as_ref().map(|_| "event"),
        e.schedule.as_ref().map(|_| "schedule"),
        e.segment
            .as_ref()
            .filter(|_| e.schedule.is_none())
            .map(|_| "segment"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.is_empty() {
        b.fail(
            Code::MissingField,
            j.entry.span,
            "`entry` needs exactly one of `event`, `segment` or `schedule`",
        );
        b.entry_known = false;
        return None;
    }
    if given.len() > 1 {
        b.entry_known = false;
        b.fail(
            Code::ConflictingFields,
            j.entry.span,
            format!(
                "`entry` has {}: give exactly one of `event`, `segment` or `schedule`",
                given.join(" and ")
            ),
        );
        return None;
    }
    let segment_ref = |b: &mut Builder<'_, '_, '_>, s: &Spanned<String>| {
        if !b.env.ids.segments.contains_key(&s.value) && !b.env.ids.is_unread(&s.value) {
            let message = with_suggestion(
                format!("segment `{}` is not defined", s.value),
                &s.value,
                b.env.ids.segments.keys().map(String::as_str),
            );
            b.fail(Code::UnknownReference, s.span, message);
        }
    };
    let trigger = if let Some(ev) = &e.event {
        b.event_name(ev);
        b.entry_event = Some(ev.value.clone());
        Trigger::Event(ev.value.clone())
    } else if let Some(s) = &e.schedule {
        let cron = b.ctx.scalar(s, Code::InvalidCron, scalar::parse_cron);
        let zone = match &e.timezone {
            Some(z) => b.ctx.scalar(z, Code::InvalidTimezone, scalar::parse_zone),
            None => Some(Zone::Fixed(b.env.default_zone)),
        };
        if let Some(seg) = &e.segment {
            segment_ref(b, seg);
        }
        match (cron, zone) {
            (Some(cron), Some(zone)) => Trigger::Schedule {
                cron: Box::new(cron),
                source: s.value.clone(),
                zone,
                segment: e.segment.as_ref().map(|s| s.value.clone()),
            },
            _ => {
                b.ok = false;
                return None;
            }
        }
    } else if let Some(seg) = &e.segment {
        segment_ref(b, seg);
        Trigger::Segment(seg.value.clone())
    } else {
        return None;
    };
    if e.timezone.is_some() && e.schedule.is_none() {
        if let Some(tz) = &e.timezone {
            b.fail(
                Code::InvalidValue,
                tz.span,
                "`timezone` applies only to `schedule` entries",
            );
        }
    }
    let event = b.entry_event.clone();
    let when = match &e.when {
        Some(w) => b.condition(w, "entry/when", event.as_deref()),
        None => None,
    };
    let dedupe_key = match &e.dedupe_key {
        Some(k) => {
            let name = b.name("entry/dedupe_key");
            let t = inline_text(name, k, false, b.ctx);
            if let Some(t) = &t {
                b.env
                    .types
                    .check_text(t, k.span, Some(event.as_deref()), event.as_deref(), b.ctx);
                b.texts.push(t.clone());
            } else {
                b.ok = false;
            }
            t
        }
        None => None,
    };
    let dedupe_window = match &e.dedupe_window {
        Some(w) => b.duration(w),
        None => Duration(30 * 86_400),
    };
    let reentry = match &e.reentry {
        Some(r) => match scalar::parse_reentry(&r.value) {
            Ok(v) => v,
            Err(msg) => {
                let code = if r.value.trim().starts_with("after") {
                    Code::InvalidDuration
                } else {
                    Code::InvalidValue
                };
                b.fail(code, r.span, msg);
                Reentry::Never
            }
        },
        None => Reentry::Never,
    };
    Some(Entry {
        trigger,
        when,
        dedupe_key,
        dedupe_window,
        reentry,
    })
}

fn step(b: &mut Builder<'_, '_, '_>, index: usize, s: &Spanned<model::Step>) -> State {
    let step = &s.value;
    let id = step.id.value.clone();
    let fallthrough = if index + 1 < b.journey.steps.value.len() {
        Next::State(index + 1)
    } else {
        Next::End
    };
    let next = match &step.next {
        Some(n) => b.target(n),
        None => fallthrough,
    };
    let kinds: Vec<&str> = [
        step.wait.as_ref().map(|_| "wait"),
        step.wait_until.as_ref().map(|_| "wait_until"),
        step.wait_for.as_ref().map(|_| "wait_for"),
        step.branch.as_ref().map(|_| "branch"),
        step.split.as_ref().map(|_| "split"),
        step.send.as_ref().map(|_| "send"),
        step.update.as_ref().map(|_| "update"),
        step.exit.as_ref().map(|_| "exit"),
    ]
    .into_iter()
    .flatten()
    .collect();
    // What stands for a step that does not compile: every step it names.
    let exit = {
        let resolve = |n: &Spanned<String>| match n.value.as_str() {
            "end" => Some(Next::End),
            other => b.step_ids.get(other).map(|i| Next::State(*i)),
        };
        let mut named: Vec<&Spanned<String>> = Vec::new();
        if let Some(w) = &step.wait_for {
            named.extend(w.value.on_event.iter().chain(w.value.on_timeout.iter()));
        }
        if let Some(arms) = &step.branch {
            named.extend(arms.value.iter().map(|a| &a.value.next));
        }
        if let Some(arms) = &step.split {
            named.extend(arms.value.iter().map(|a| &a.value.next));
        }
        let arms = named
            .into_iter()
            .filter_map(resolve)
            .map(|n| (None, n))
            .collect();
        State {
            id: id.clone(),
            action: Action::Branch {
                arms,
                otherwise: next,
            },
        }
    };
    b.placeholders.push(index);
    if kinds.is_empty() {
        b.fail(
            Code::MissingField,
            step.id.span,
            format!(
                "step `{id}` needs one of {}",
                STEP_TYPES
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return exit;
    }
    if kinds.len() > 1 {
        b.fail(
            Code::ConflictingFields,
            step.id.span,
            format!(
                "step `{id}` has {}: a step does exactly one thing",
                kinds.join(" and ")
            ),
        );
        return exit;
    }
    let action = if let Some(w) = &step.wait {
        Action::Wait {
            duration: b.duration(w),
            next,
        }
    } else if let Some(w) = &step.wait_until {
        let time = b.ctx.scalar(
            &w.value.time,
            Code::InvalidTimeOfDay,
            scalar::parse_time_of_day,
        );
        let zone = match &w.value.timezone {
            Some(z) => b.ctx.scalar(z, Code::InvalidTimezone, scalar::parse_zone),
            None => Some(Zone::User),
        };
        let mut days = Vec::new();
        for d in w.value.days.iter().flatten() {
            match scalar::parse_weekday(&d.value) {
                Ok(day) => days.push(day),
                Err(e) => b.fail(Code::InvalidValue, d.span, e),
            }
        }
        match (time, zone) {
            (Some(time), Some(zone)) => Action::WaitUntil {
                time,
                zone,
                days,
                next,
            },
            _ => {
                b.ok = false;
                return exit;
            }
        }
    } else if let Some(w) = &step.wait_for {
        let w = &w.value;
        b.event_name(&w.event);
        let where_ = match &w.where_ {
            Some(c) => b.condition(c, &format!("steps/{id}/where"), Some(&w.event.value)),
            None => None,
        };
        let timeout = b.duration(&w.timeout);
        let on_event = match &w.on_event {
            Some(n) => b.target(n),
            None => next,
        };
        let on_timeout = match &w.on_timeout {
            Some(n) => b.target(n),
            None => next,
        };
        Action::WaitFor {
            event: w.event.value.clone(),
            where_,
            timeout,
            on_event,
            on_timeout,
        }
    } else if let Some(arms) = &step.branch {
        let mut out = Vec::new();
        let mut default_seen = false;
        for (i, arm) in arms.value.iter().enumerate() {
            let target = b.target(&arm.value.next);
            let when = match &arm.value.when {
                Some(w) => b.condition(w, &format!("steps/{id}/branch/{i}"), None),
                None => {
                    if default_seen {
                        b.fail(
                            Code::InvalidValue,
                            arm.span,
                            "a branch has at most one default arm (without `when`)",
                        );
                    }
                    default_seen = true;
                    None
                }
            };
            out.push((when, target));
        }
        // The default arm is the fallback wherever it is listed: taken only
        // when no arm with a `when` holds (a stable sort keeps their order).
        out.sort_by_key(|(when, _)| when.is_none());
        Action::Branch {
            arms: out,
            otherwise: next,
        }
    } else if let Some(arms) = &step.split {
        let mut cumulative = 0u32;
        let mut out = Vec::new();
        let mut valid = true;
        for arm in &arms.value {
            let target = b.target(&arm.value.next);
            match b.ctx.scalar(
                &arm.value.percent,
                Code::InvalidPercentage,
                scalar::parse_percent,
            ) {
                Some(p) => {
                    cumulative += p.0;
                    out.push((cumulative, target));
                }
                None => valid = false,
            }
        }
        if valid && cumulative != Percent::HUNDRED.0 {
            b.fail(
                Code::InvalidPercentage,
                arms.span,
                format!("split percentages sum to {}, not 100%", Percent(cumulative)),
            );
        }
        if !valid {
            b.ok = false;
        }
        Action::Split { arms: out }
    } else if let Some(send) = &step.send {
        send_step(b, &id, send, next)
    } else if let Some(u) = &step.update {
        update_step(b, &id, u, next)
    } else if let Some(e) = &step.exit {
        let fine = match &e.value {
            Node::Scalar(s) => matches!(s.resolve(), Resolved::Null | Resolved::Bool(true)),
            Node::Map(m) => m.is_empty(),
            Node::Seq(_) => false,
        };
        if !fine {
            b.fail(
                Code::InvalidValue,
                e.span,
                "write an exit step as `exit: true`",
            );
        }
        if let Some(n) = &step.next {
            b.fail(Code::InvalidValue, n.span, "an `exit` step has no `next`");
        }
        Action::Exit
    } else {
        Action::Exit
    };
    b.placeholders.pop();
    State { id, action }
}

fn send_step(
    b: &mut Builder<'_, '_, '_>,
    id: &str,
    send: &Spanned<model::Send>,
    next: Next,
) -> Action {
    let channel = b.ctx.channel(&send.value.channel);
    if channel.is_none() {
        b.ok = false;
    }
    let tpl = &send.value.template;
    let Some(template) = b.env.templates.get(&tpl.value) else {
        if b.env.ids.templates.contains_key(&tpl.value) || b.env.ids.is_unread(&tpl.value) {
            // Defined, but invalid: already reported.
            b.ok = false;
        } else {
            let message = with_suggestion(
                format!("template `{}` is not defined", tpl.value),
                &tpl.value,
                b.env.ids.templates.keys().map(String::as_str),
            );
            b.fail(Code::UnknownReference, tpl.span, message);
        }
        return Action::Update {
            sets: Vec::new(),
            next,
        };
    };
    let channel = channel.unwrap_or(template.channel);
    if template.channel != channel {
        b.fail(
            Code::ChannelMismatch,
            tpl.span,
            format!(
                "template `{}` is {} {} template, but step `{id}` sends {}",
                tpl.value,
                if template.channel.to_string().starts_with('e') {
                    "an"
                } else {
                    "a"
                },
                template.channel,
                channel
            ),
        );
    }
    // Variables of the template against this journey's entry event.
    let entry = b.entry_event.clone();
    let entry_scope = b.entry_known.then_some(entry.as_deref());
    let texts = template.texts();
    for t in texts {
        let only_entry: Vec<&String> = t
            .variables
            .iter()
            .filter(|v| v.starts_with("entry."))
            .collect();
        if only_entry.is_empty() {
            continue;
        }
        if b.env.types.check_sent_text(t, tpl.span, entry_scope, b.ctx) {
            b.ok = false;
        }
    }
    Action::Send {
        channel,
        template: template.id.clone(),
        next,
    }
}

fn update_step(b: &mut Builder<'_, '_, '_>, id: &str, u: &Spanned<Node>, next: Next) -> Action {
    let Some(entries) = u.value.as_map() else {
        b.fail(
            Code::InvalidValue,
            u.span,
            "`update` maps `user.<attr>` to values",
        );
        return Action::Update {
            sets: Vec::new(),
            next,
        };
    };
    let mut sets = Vec::new();
    for (k, v) in entries {
        let Some(attr) = k
            .value
            .strip_prefix("user.")
            .filter(|a| !a.is_empty() && !a.contains('.'))
        else {
            b.fail(
                Code::InvalidValue,
                k.span,
                format!(
                    "`{}`: update sets profile attributes, written `user.<attr>`",
                    k.value
                ),
            );
            continue;
        };
        let value = match &v.value {
            Node::Scalar(s) if matches!(s.resolve(), Resolved::Str(t) if t.contains("{{")) => {
                let name = b.name(&format!("steps/{id}/update/{attr}"));
                let value = Spanned::new(s.text.clone(), v.span);
                match inline_text(name, &value, false, b.ctx) {
                    Some(t) => {
                        let entry = b.entry_event.clone();
                        let scope = b.entry_known.then_some(entry.as_deref());
                        b.env.types.check_text(&t, v.span, scope, None, b.ctx);
                        b.texts.push(t.clone());
                        UpdateValue::Template(t)
                    }
                    None => {
                        b.ok = false;
                        continue;
                    }
                }
            }
            other => UpdateValue::Value(other.to_json()),
        };
        sets.push((attr.to_owned(), value));
    }
    Action::Update { sets, next }
}
