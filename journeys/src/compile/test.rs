//! JourneyTests: relative times resolved, events checked, expectations
//! checked against the journeys they name.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Ctx;
use crate::compiled::{Expectation, Journey, JourneyTest};
use crate::diagnostic::{with_suggestion, Code};
use crate::event::{Event, EventError};
use crate::limits;
use crate::model;
use crate::scalar::parse_duration;
use crate::span::{Span, Spanned};

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

/// `journeys` are the journeys that compiled; `declared` every journey id
/// of the repository, so a test of a journey that is declared but did not
/// compile (its own errors are reported where it is) is skipped quietly
/// rather than reported as naming an undefined journey.
pub(crate) fn compile(
    t: &model::JourneyTest,
    journeys: &[Arc<Journey>],
    declared: &std::collections::BTreeMap<String, Span>,
    ctx: &mut Ctx<'_>,
) -> Option<JourneyTest> {
    let start = time(ctx, &t.start, DateTime::<Utc>::UNIX_EPOCH)?;
    let mut ok = true;
    let mut events = Vec::new();
    for node in &t.events.value {
        let mut json = node.value.to_json();
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
        Some(r) => time(ctx, r, start)?,
        None => limits::default_until(events.last().map(|e| e.ts).unwrap_or(start).max(start)),
    };
    if let Err(e) = limits::check_horizon(start, run_until) {
        let span = t.run_until.as_ref().map_or(t.start.span, |r| r.span);
        ctx.error(Code::HorizonTooLong, span, format!("the test {e}"));
        return None;
    }
    let expectation = |e: &Spanned<model::Expectation>, ctx: &mut Ctx<'_>| -> Option<Expectation> {
        let x = &e.value;
        let s = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.value.clone());
        let at = match &x.at {
            Some(a) => Some(time(ctx, a, start)?),
            None => None,
        };
        if let Some(j) = &x.journey {
            match journeys.iter().find(|k| k.id == j.value) {
                None if declared.contains_key(&j.value) => return None,
                None => {
                    let message = with_suggestion(
                        format!("journey `{}` is not defined", j.value),
                        &j.value,
                        journeys.iter().map(|k| k.id.as_str()),
                    );
                    ctx.error(Code::UnknownReference, j.span, message);
                    return None;
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
                            return None;
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
                return None;
            }
        }
        if let Some(o) = &x.outcome {
            const OUTCOMES: [&str; 4] = ["sent", "deferred", "suppressed", "failed"];
            if !OUTCOMES.contains(&o.value.as_str()) {
                let message =
                    with_suggestion(format!("unknown outcome `{}`", o.value), &o.value, OUTCOMES);
                ctx.error(Code::InvalidValue, o.span, message);
                return None;
            }
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
