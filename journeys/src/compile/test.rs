//! JourneyTests: relative times resolved, events checked, expectations
//! checked against the journeys they name.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Ctx;
use crate::compiled::{Expectation, Journey, JourneyTest};
use crate::diagnostic::{did_you_mean, with_suggestion, Code};
use crate::event::{Event, EventError};
use crate::limits;
use crate::model;
use crate::scalar::parse_duration;
use crate::span::{Node, Span, Spanned};

/// `+1h5m` relative to `start`, or an RFC 3339 instant, within the range
/// of [`limits::check_instant`]; an error comes with its code.
fn resolve(text: &str, start: DateTime<Utc>) -> Result<DateTime<Utc>, (Code, String)> {
    let t = text.trim();
    if let Some(rel) = t.strip_prefix('+') {
        let d = parse_duration(rel).map_err(|e| (Code::InvalidDuration, e))?;
        return limits::add(start, d.to_chrono())
            .map_err(|e| (Code::TimeOutOfRange, format!("`{t}` is {e}")));
    }
    let at = DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| {
            (
                Code::InvalidValue,
                format!(
                    "invalid time `{t}`: expected RFC 3339 (2026-03-02T09:00:00Z) or relative (+1h)"
                ),
            )
        })?;
    limits::check_instant(at).map_err(|e| (Code::TimeOutOfRange, e))
}

fn time(ctx: &mut Ctx<'_>, v: &Spanned<String>, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match resolve(&v.value, start) {
        Ok(t) => Some(t),
        Err((code, e)) => {
            ctx.error(code, v.span, e);
            None
        }
    }
}

/// The keys of an event object (FORMAT.md §4).
const EVENT_KEYS: [&str; 7] = ["type", "user", "ts", "id", "event", "props", "traits"];

/// Checks the shape of one event of a test where it is written: each
/// unknown key at the key, a bad `type` at its value, a missing key at the
/// event. Whether it reported anything.
fn event_shape(node: &Spanned<Node>, ctx: &mut Ctx<'_>) -> bool {
    let Some(entries) = node.value.as_map() else {
        ctx.error(
            Code::InvalidValue,
            node.span,
            format!(
                "an event is a mapping with `type`, `user` and `ts`, found {}",
                node.value.type_name()
            ),
        );
        return true;
    };
    let mut bad = false;
    // The keys the misspelt ones stand for: not reported missing again.
    let mut meant = Vec::new();
    for (k, _) in entries {
        if !EVENT_KEYS.contains(&k.value.as_str()) {
            let message =
                with_suggestion(format!("unknown field `{}`", k.value), &k.value, EVENT_KEYS);
            ctx.error(Code::UnknownField, k.span, message);
            meant.extend(did_you_mean(&k.value, EVENT_KEYS));
            bad = true;
        }
    }
    let kind = node.value.get("type");
    if let Some(t) = kind {
        let name = t.value.as_str().unwrap_or_default();
        if name != "identify" && name != "track" {
            let message = match did_you_mean(name, ["identify", "track"]) {
                Some(s) => format!("unknown event type `{name}`, did you mean `{s}`?"),
                None => format!("unknown event type `{name}`, expected `identify` or `track`"),
            };
            ctx.error(Code::InvalidValue, t.span, message);
            bad = true;
        }
    }
    for key in ["type", "user", "ts"] {
        if node.value.get(key).is_none() && !meant.contains(&key) {
            ctx.error(
                Code::MissingField,
                node.span,
                format!("missing field `{key}`"),
            );
            bad = true;
        }
    }
    // Each value of the wrong shape at the value.
    for (k, v) in entries {
        let problem = match (k.value.as_str(), &v.value) {
            ("props" | "traits", Node::Map(_)) => None,
            ("props" | "traits", other) => Some(format!(
                "`{}` is a mapping of names to values, found {}",
                k.value,
                other.type_name()
            )),
            ("user", Node::Scalar(_)) if v.value.as_str().is_some_and(str::is_empty) => {
                Some("`user` must not be empty".to_owned())
            }
            ("user" | "ts" | "id" | "event", Node::Map(_) | Node::Seq(_)) => Some(format!(
                "`{}` is a string, found {}",
                k.value,
                v.value.type_name()
            )),
            ("user" | "ts", Node::Scalar(sc)) if sc.resolve() == crate::span::Resolved::Null => {
                Some(format!("`{}` is a string, found null", k.value))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            ctx.error(Code::InvalidValue, v.span, problem);
            bad = true;
        }
    }
    let is_track = kind.and_then(|t| t.value.as_str()) == Some("track");
    if is_track && node.value.get("event").is_none() && !meant.contains(&"event") {
        ctx.error(
            Code::MissingField,
            node.span,
            "`track` needs an `event` name",
        );
        bad = true;
    }
    bad
}

/// `journeys` are the journeys that compiled; `ids` every id of the
/// repository, so a test of a journey that is declared but did not
/// compile (its own errors are reported where it is) is skipped quietly
/// rather than reported as naming an undefined journey. Every problem of the test is reported, not just the first.
pub(crate) fn compile(
    t: &model::JourneyTest,
    journeys: &[Arc<Journey>],
    ids: &super::Ids,
    ctx: &mut Ctx<'_>,
) -> Option<JourneyTest> {
    let (declared, templates) = (&ids.journeys, &ids.templates);
    let mut ok = true;
    // An invalid `start` is reported; the rest is still read, relative to
    // a stand-in start, so that its own problems are found too.
    let given = time(ctx, &t.start, DateTime::<Utc>::UNIX_EPOCH);
    let start_ok = given.is_some();
    ok &= start_ok;
    let start = given.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let mut events = Vec::new();
    for node in &t.events.value {
        if event_shape(node, ctx) {
            ok = false;
            continue;
        }
        let mut json = node.value.to_json();
        // Ids and names are strings as written, as in a journey
        // (`event: 404`, `user: 7`).
        for key in ["user", "event", "id"] {
            if let (Some(Node::Scalar(sc)), Some(obj)) =
                (node.value.get(key).map(|n| &n.value), json.as_object_mut())
            {
                if !matches!(sc.resolve(), crate::span::Resolved::Null) {
                    obj.insert(key.to_owned(), sc.text.clone().into());
                }
            }
        }
        if let Some(ts) = json.get("ts").and_then(|v| v.as_str()).map(str::to_owned) {
            let spanned_ts = node.value.get("ts").map(|n| n.span).unwrap_or(node.span);
            match resolve(&ts, start) {
                Ok(at) => {
                    if let Some(obj) = json.as_object_mut() {
                        obj.insert(
                            "ts".into(),
                            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                                .into(),
                        );
                    }
                }
                Err((code, e)) => {
                    ctx.error(code, spanned_ts, e);
                    ok = false;
                    continue;
                }
            }
        }
        match Event::from_json(json) {
            Ok(e) => events.push(e),
            Err(e) => {
                // CLI.md's codes: a key the event lacks is `missing_field`,
                // one it cannot have `unknown_field`.
                let code = match &e {
                    EventError::MissingName => Code::MissingField,
                    EventError::Shape(m) if m.starts_with("missing field") => Code::MissingField,
                    EventError::Shape(m) if m.starts_with("unknown field") => Code::UnknownField,
                    _ => Code::InvalidValue,
                };
                ctx.error(code, node.span, e.to_string());
                ok = false;
            }
        }
    }
    events.sort_by_key(|e| e.ts);
    let run_until = match &t.run_until {
        Some(r) => time(ctx, r, start),
        None => Some(limits::default_until(
            events.last().map(|e| e.ts).unwrap_or(start).max(start),
        )),
    };
    let run_until = match run_until {
        Some(until) if start_ok => {
            if let Err(e) = limits::check_horizon(start, until) {
                let span = t.run_until.as_ref().map_or(t.start.span, |r| r.span);
                ctx.error(Code::HorizonTooLong, span, format!("the test {e}"));
                ok = false;
            }
            until
        }
        Some(until) => until,
        None => {
            ok = false;
            start
        }
    };
    let expectation = |e: &Spanned<model::Expectation>, ctx: &mut Ctx<'_>| -> Option<Expectation> {
        let x = &e.value;
        let s = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.value.clone());
        // Every problem of the expectation is reported.
        let mut bad = false;
        let at = match &x.at {
            Some(a) => {
                let at = time(ctx, a, start);
                bad |= at.is_none();
                at
            }
            None => None,
        };
        if let Some(j) = &x.journey {
            match journeys.iter().find(|k| k.id == j.value) {
                None if declared.contains_key(&j.value) || ids.is_unread(&j.value) => bad = true,
                None => {
                    let message = with_suggestion(
                        format!("journey `{}` is not defined", j.value),
                        &j.value,
                        declared.keys().map(String::as_str),
                    );
                    ctx.error(Code::UnknownReference, j.span, message);
                    bad = true;
                }
                Some(journey) => {
                    if let Some(step) = &x.step {
                        if journey.state_index(&step.value).is_none() {
                            let message = with_suggestion(
                                format!(
                                    "step `{}` is not defined in journey `{}`",
                                    step.value, j.value
                                ),
                                &step.value,
                                journey.states.iter().map(|s| s.id.as_str()),
                            );
                            ctx.error(Code::UnknownReference, step.span, message);
                            bad = true;
                        }
                    }
                }
            }
        }
        if let Some(k) = &x.kind {
            const KINDS: [&str; 6] = [
                "entered",
                "entry_skipped",
                "send",
                "exited",
                "completed",
                "converted",
            ];
            if !KINDS.contains(&k.value.as_str()) {
                let message =
                    with_suggestion(format!("unknown kind `{}`", k.value), &k.value, KINDS);
                ctx.error(Code::InvalidValue, k.span, message);
                bad = true;
            }
        }
        if let Some(c) = &x.channel {
            bad |= ctx.channel(c).is_none();
        }
        if let Some(tpl) = &x.template {
            if !templates.contains_key(&tpl.value) && !ids.is_unread(&tpl.value) {
                let message = with_suggestion(
                    format!("template `{}` is not defined", tpl.value),
                    &tpl.value,
                    templates.keys().map(String::as_str),
                );
                ctx.error(Code::UnknownReference, tpl.span, message);
                bad = true;
            }
        }
        if let Some(o) = &x.outcome {
            const OUTCOMES: [&str; 4] = ["sent", "deferred", "suppressed", "failed"];
            if !OUTCOMES.contains(&o.value.as_str()) {
                let message =
                    with_suggestion(format!("unknown outcome `{}`", o.value), &o.value, OUTCOMES);
                ctx.error(Code::InvalidValue, o.span, message);
                bad = true;
            }
        }
        if bad {
            return None;
        }
        Some(Expectation {
            line: e.span.line,
            user: s(&x.user),
            journey: s(&x.journey),
            kind: s(&x.kind),
            step: s(&x.step),
            channel: s(&x.channel),
            template: s(&x.template),
            outcome: s(&x.outcome),
            reason: s(&x.reason),
            holdout: x.holdout.as_ref().map(|h| h.value),
            at,
        })
    };
    let mut expect = Vec::new();
    for e in &t.expect {
        match expectation(e, ctx) {
            Some(x) => expect.push(x),
            None => ok = false,
        }
    }
    let mut expect_none = Vec::new();
    for e in &t.expect_none {
        match expectation(e, ctx) {
            Some(x) => expect_none.push(x),
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    let _: Span = t.id.span;
    Some(JourneyTest {
        id: t.id.value.clone(),
        name: t.name.as_ref().map(|n| n.value.clone()),
        file: ctx.file.name.clone(),
        line: t.id.span.line,
        start,
        events,
        run_until,
        ignore_holdouts: t.ignore_holdouts.as_ref().is_some_and(|v| v.value),
        expect,
        expect_none,
    })
}
