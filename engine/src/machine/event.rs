//! An event arrives for a user, evaluated at its own `ts`: idempotency on
//! `id`, the profile or history update, then exits, awaited events, goals
//! and entries, in that order.

use journeys::compiled::Action;
use journeys::event::{Event, EventType};

use crate::output::{GoalMark, Kind, Line};
use crate::scope::UserScope;
use crate::store::attrs::{Obj, Val};
use crate::store::history::{self, HistEntry};
use crate::store::profile;
use crate::store::users::UserRecord;

use super::{entry, instance, segments, Ctx};

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Applied.
    Applied,
    /// Its `id` was seen before: ignored.
    Duplicate,
}

/// Applies `event` to `user` at `ctx.now` (the event's ts). With `import`,
/// only the profile, history and segment baseline change: no journey
/// reacts (events before a simulation's start). `props`: the event's
/// properties already in the record's form (`Obj::from_json`, done on
/// another thread), or `None` to convert them here when read.
pub fn on_event(
    ctx: &mut Ctx<'_>,
    user: &mut UserRecord,
    event: &Event,
    import: bool,
    props: Option<Obj>,
) -> Ingested {
    let max_age = ctx.index.retention.max_age;
    if let Some(id) = &event.id {
        // Remembered as a hash, unless seen before.
        let age = max_age.or(Some(ctx.config.project.history_retention.millis()));
        if !user.seen.insert_new(id, ctx.now, age) {
            return Ingested::Duplicate;
        }
    }
    let mut history_changed = false;
    match event.kind {
        EventType::Identify => {
            if profile::merge(&mut user.profile, &event.traits) {
                ctx.profile_changed = true;
            }
        }
        EventType::Track => {
            let name = event.name().unwrap_or_default();
            // Who reads the event (each name looked up once), and its
            // properties in the record's form, once, when anything does.
            let ix = ctx.index;
            let in_history = ix.history.contains(name);
            let (exiting, awaited_by, goal, entering) = match import {
                true => (false, false, false, None),
                false => (
                    ix.exits.contains(name),
                    ix.awaited.contains(name),
                    ix.goals.contains(name),
                    ix.entries.get(name),
                ),
            };
            let read = in_history || exiting || awaited_by || goal || entering.is_some();
            let props = if read {
                Val::Obj(props.unwrap_or_else(|| Obj::from_json(&event.props)))
            } else {
                Val::Null
            };
            if in_history {
                let entry = HistEntry {
                    ts: ctx.now,
                    name: name.to_owned(),
                    props: if ctx.index.history_props.contains(name) {
                        props.clone()
                    } else {
                        Val::Null
                    },
                };
                history::record(&mut user.history, entry, ctx.index.retention);
                history_changed = true;
            }
            if exiting {
                exits(ctx, user, name, &props);
            }
            if awaited_by {
                awaited(ctx, user, name, &props);
            }
            if goal {
                goals(ctx, user, name, &props);
            }
            for &j in entering.into_iter().flatten() {
                entry::try_enter(ctx, user, j, Some(&props));
            }
        }
    }
    if ctx.profile_changed || history_changed {
        ctx.touched = true;
        ctx.profile_changed = false;
        segments::reevaluate(ctx, user, !import);
    }
    Ingested::Applied
}

/// Exit rules: any match ends the instance at once, cancelling its timer.
fn exits(ctx: &mut Ctx<'_>, user: &mut UserRecord, name: &str, props: &Val) {
    let mut p = 0;
    while p < user.instances.len() {
        let inst = &user.instances[p];
        let hit = ctx.journey(&inst.journey, inst.version).is_some_and(|j| {
            j.exits.iter().any(|rule| {
                rule.event == name
                    && rule.when.as_ref().is_none_or(|w| {
                        let scope = UserScope::new(
                            ctx.config,
                            ctx.index,
                            &user.profile,
                            &user.history,
                            ctx.now,
                        )
                        .with_event(Some(props))
                        .with_entry(Some(&inst.entry));
                        w.eval(&scope)
                    })
            })
        });
        if hit {
            instance::finish(ctx, user, p, Kind::Exited, Some("exit_event"));
        } else {
            p += 1;
        }
    }
}

/// `wait_for`: an instance waiting for this event (with `where` holding)
/// resumes at `on_event`.
fn awaited(ctx: &mut Ctx<'_>, user: &mut UserRecord, name: &str, props: &Val) {
    let ids: Vec<u64> = user.instances.iter().map(|i| i.id).collect();
    for id in ids {
        let Some(p) = instance::pos(user, id) else {
            continue;
        };
        let inst = &user.instances[p];
        if inst.timer.is_none() {
            continue;
        }
        let Some(journey) = ctx.journey(&inst.journey, inst.version) else {
            continue;
        };
        let Some(s) = instance::current_state(&journey, inst) else {
            continue;
        };
        let Action::WaitFor {
            event,
            where_,
            on_event,
            ..
        } = &journey.states[s].action
        else {
            continue;
        };
        if event != name {
            continue;
        }
        let ok = where_.as_ref().is_none_or(|w| {
            let scope =
                UserScope::new(ctx.config, ctx.index, &user.profile, &user.history, ctx.now)
                    .with_event(Some(props))
                    .with_entry(Some(&inst.entry));
            w.eval(&scope)
        });
        if !ok {
            continue;
        }
        if let Some(k) = user.instances[p].timer.take() {
            ctx.cancel(k);
        }
        instance::advance(ctx, user, id, *on_event, Some(props));
    }
}

/// Goals: the first matching event within `within` of entry converts the
/// instance, live or not, treatment or holdout.
fn goals(ctx: &mut Ctx<'_>, user: &mut UserRecord, name: &str, props: &Val) {
    let now = ctx.now;
    let mut lines = Vec::new();
    for b in 0..user.journeys.len() {
        if user.journeys[b].goals.is_empty() {
            continue;
        }
        let id = user.journeys[b].journey.clone();
        user.journeys[b].goals.retain(|g| g.until > now);
        let mut converted = Vec::new();
        for (i, g) in user.journeys[b].goals.iter().enumerate() {
            if now < g.entered_at {
                continue;
            }
            // The goal of the version the instance entered.
            let Some(journey) = ctx.journey(&id, g.version) else {
                continue;
            };
            let Some(goal) = &journey.goal else { continue };
            if goal.event != name {
                continue;
            }
            let ok = goal.when.as_ref().is_none_or(|w| {
                let scope =
                    UserScope::new(ctx.config, ctx.index, &user.profile, &user.history, now)
                        .with_event(Some(props))
                        .with_entry(Some(&g.entry));
                w.eval(&scope)
            });
            if ok {
                converted.push(i);
                let mut line = Line::new(now, Kind::Converted, user.id(), &journey.id);
                line.holdout = Some(g.holdout);
                line.goal = Some(GoalMark {
                    version: g.version,
                    entered_at: g.entered_at,
                });
                lines.push(line);
            }
        }
        for i in converted.into_iter().rev() {
            user.journeys[b].goals.remove(i);
        }
    }
    for l in lines {
        ctx.line(l);
    }
}
