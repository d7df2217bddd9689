//! Running an instance through its journey's states: executing states
//! until one waits, resuming on timers, ending.

use serde_json::Value;

use journeys::compiled::{Action, Journey, Next, UpdateValue};

use crate::calendar;
use crate::hash;
use crate::output::{Kind, Line};
use crate::scope::UserScope;
use crate::store::attrs::Val;
use crate::store::dedupe;
use crate::store::profile;
use crate::store::timers::{TimerKey, TimerKind};
use crate::store::users::UserRecord;

use super::Ctx;

/// A journey may not loop without waiting (validation rejects it); this
/// bounds the damage if one does anyway.
const MAX_STEPS: usize = 1_000;

/// Where instance `id` is in `user.instances`.
pub fn pos(user: &UserRecord, id: u64) -> Option<usize> {
    user.instances.iter().position(|i| i.id == id)
}

/// The state an instance is on in `journey` (by index when the versions
/// agree, else by step id).
pub fn current_state(journey: &Journey, inst: &crate::store::instances::Instance) -> Option<usize> {
    let s = inst.state as usize;
    if inst.version == journey.version && s < journey.states.len() {
        return Some(s);
    }
    journey.state_index(&inst.step)
}

fn set_timer(ctx: &mut Ctx<'_>, user: &mut UserRecord, p: usize, due: i64, kind: TimerKind) {
    let key = ctx.timer(due, kind);
    if let Some(old) = user.instances[p].timer.replace(key) {
        ctx.cancel(old);
    }
}

/// Ends the instance at `p`: `completed`, or `exited` with a reason.
pub fn finish(
    ctx: &mut Ctx<'_>,
    user: &mut UserRecord,
    p: usize,
    kind: Kind,
    reason: Option<&str>,
) {
    let inst = user.instances.remove(p);
    if let Some(k) = inst.timer {
        ctx.cancel(k);
    }
    dedupe::book_mut(&mut user.journeys, &inst.journey).last_ended = Some(ctx.now);
    let mut line = Line::new(ctx.now, kind, user.id(), &inst.journey);
    line.reason = reason.map(str::to_owned);
    ctx.line(line);
}

/// Moves instance `id` along `next`, executing states until one waits or
/// the instance ends. `event` is the event in scope (trigger or awaited).
pub fn advance(ctx: &mut Ctx<'_>, user: &mut UserRecord, id: u64, next: Next, event: Option<&Val>) {
    let Some(p) = pos(user, id) else { return };
    let inst = &user.instances[p];
    let Some(journey) = ctx.journey(&inst.journey, inst.version) else {
        // The journey is gone from the configuration: drop the instance.
        let inst = user.instances.remove(p);
        if let Some(k) = inst.timer {
            ctx.cancel(k);
        }
        return;
    };
    user.instances[p].event = event.cloned().unwrap_or(Val::Null);
    let mut next = next;
    for _ in 0..MAX_STEPS {
        let s = match next {
            Next::End => return finish(ctx, user, p, Kind::Completed, None),
            Next::State(s) => s,
        };
        let Some(state) = journey.states.get(s) else {
            return finish(ctx, user, p, Kind::Completed, None);
        };
        {
            let inst = &mut user.instances[p];
            inst.state = s as u32;
            inst.version = journey.version;
            if inst.step != state.id {
                inst.step.clone_from(&state.id);
            }
        }
        let now = ctx.now;
        match &state.action {
            Action::Wait { duration, next: n } => {
                let due = now.saturating_add(duration.millis());
                if due <= now {
                    next = *n;
                    continue;
                }
                user.instances[p].event = Val::Null;
                return set_timer(ctx, user, p, due, TimerKind::Instance { instance: id });
            }
            Action::WaitUntil {
                time,
                zone,
                days,
                next: n,
            } => {
                let tz =
                    calendar::resolve(*zone, &user.profile, ctx.config.project.default_timezone);
                let due = calendar::next_local_time(now, tz, *time, days);
                if due <= now {
                    next = *n;
                    continue;
                }
                user.instances[p].event = Val::Null;
                return set_timer(ctx, user, p, due, TimerKind::Instance { instance: id });
            }
            Action::WaitFor {
                timeout,
                on_timeout,
                ..
            } => {
                let due = now.saturating_add(timeout.millis());
                if due <= now {
                    next = *on_timeout;
                    continue;
                }
                user.instances[p].event = Val::Null;
                return set_timer(ctx, user, p, due, TimerKind::Instance { instance: id });
            }
            Action::Branch { arms, otherwise } => {
                let inst = &user.instances[p];
                let ev = (!inst.event.is_null()).then_some(&inst.event);
                let scope =
                    UserScope::new(ctx.config, ctx.index, &user.profile, &user.history, now)
                        .with_entry(Some(&inst.entry))
                        .with_event(ev);
                next = arms
                    .iter()
                    .find(|(c, _)| c.as_ref().is_none_or(|c| c.eval(&scope)))
                    .map(|(_, n)| *n)
                    .unwrap_or(*otherwise);
            }
            Action::Split { arms } => {
                let x = hash::split_point(&journey.id, &state.id, user.id());
                next = arms
                    .iter()
                    .find(|(bound, _)| x < *bound)
                    .map(|(_, n)| *n)
                    .unwrap_or(Next::End);
            }
            Action::Send { next: n, .. } => {
                let inst = &user.instances[p];
                if inst.holdout {
                    next = *n;
                    continue;
                }
                let kind = TimerKind::Send {
                    instance: id,
                    due: now,
                    priority: inst.priority,
                    entered_at: inst.entered_at,
                };
                return set_timer(ctx, user, p, now, kind);
            }
            Action::Update { sets, next: n } => {
                if !user.instances[p].holdout {
                    update(ctx, user, p, &journey, &state.id, sets);
                }
                next = *n;
            }
            Action::Exit => next = Next::End,
        }
    }
    tracing::warn!(journey = %journey.id, "instance ran {MAX_STEPS} steps without waiting; ending it");
    finish(ctx, user, p, Kind::Completed, None)
}

fn update(
    ctx: &mut Ctx<'_>,
    user: &mut UserRecord,
    p: usize,
    journey: &Journey,
    step: &str,
    sets: &[(String, UpdateValue)],
) {
    for (attr, value) in sets {
        let v = match value {
            UpdateValue::Value(v) => v.clone(),
            UpdateValue::Template(t) => {
                let inst = &user.instances[p];
                let ev = (!inst.event.is_null()).then_some(&inst.event);
                let scope =
                    UserScope::new(ctx.config, ctx.index, &user.profile, &user.history, ctx.now)
                        .with_entry(Some(&inst.entry))
                        .with_event(ev);
                let mut context = scope.context();
                if let Some(m) = context.as_object_mut() {
                    m.insert(
                        "journey".into(),
                        serde_json::json!({"id": journey.id, "version": journey.version, "step": step}),
                    );
                }
                let rendered = match t.sole_path.is_some() {
                    true => scope.render_text(t),
                    false => ctx.config.renderer.render(t, &context),
                };
                match rendered {
                    Ok(s) => Value::String(s),
                    Err(e) => {
                        tracing::warn!(journey = %journey.id, step, attr = %attr, "update skipped: {e}");
                        continue;
                    }
                }
            }
        };
        if profile::set(&mut user.profile, attr, v) {
            ctx.profile_changed = true;
            ctx.touched = true;
        }
    }
}

/// A timer of instance `id` fired: a wait is over or a `wait_for` timed
/// out. Stale timers (the instance moved on) are ignored.
pub fn on_timer(ctx: &mut Ctx<'_>, user: &mut UserRecord, key: TimerKey, id: u64) {
    let Some(p) = pos(user, id) else { return };
    if user.instances[p].timer != Some(key) {
        return;
    }
    user.instances[p].timer = None;
    let inst = &user.instances[p];
    let Some(journey) = ctx.journey(&inst.journey, inst.version) else {
        user.instances.remove(p);
        return;
    };
    let Some(s) = current_state(&journey, &user.instances[p]) else {
        return finish(ctx, user, p, Kind::Completed, None);
    };
    let next = match &journey.states[s].action {
        Action::Wait { next, .. } | Action::WaitUntil { next, .. } => *next,
        Action::WaitFor { on_timeout, .. } => *on_timeout,
        _ => return,
    };
    advance(ctx, user, id, next, None);
}

/// What a migration did to one live instance (DEPLOY.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// Moved to a step of the same kind: its timer (due time) kept.
    Kept,
    /// Moved to a step of another kind: started it at the migration.
    Restarted,
    /// Mapped to `end`: completed.
    Completed,
    /// Unmapped, `on_unmapped: exit`: ended with reason `migrated_out`.
    Exited,
    /// Unmapped, `on_unmapped: stay`: finishes on its version.
    Stayed,
}

/// Moves instance `id` to version `to` at `target` (`None`: its step is
/// unmapped). `to` must be among the context's versions.
pub fn migrate(
    ctx: &mut Ctx<'_>,
    user: &mut UserRecord,
    id: u64,
    to: &Journey,
    target: Option<Next>,
    exit_unmapped: bool,
) -> Moved {
    let Some(p) = pos(user, id) else {
        return Moved::Stayed;
    };
    let s = match target {
        None if exit_unmapped => {
            finish(ctx, user, p, Kind::Exited, Some("migrated_out"));
            return Moved::Exited;
        }
        None => return Moved::Stayed,
        Some(Next::End) => {
            finish(ctx, user, p, Kind::Completed, None);
            return Moved::Completed;
        }
        Some(Next::State(s)) => s,
    };
    let Some(new) = to.states.get(s) else {
        return Moved::Stayed;
    };
    let inst = &user.instances[p];
    let old_kind = ctx.journey(&inst.journey, inst.version).and_then(|old| {
        current_state(&old, inst).map(|i| std::mem::discriminant(&old.states[i].action))
    });
    let same = old_kind == Some(std::mem::discriminant(&new.action));
    let inst = &mut user.instances[p];
    inst.version = to.version;
    inst.state = s as u32;
    inst.step.clone_from(&new.id);
    if same && inst.timer.is_some() {
        return Moved::Kept;
    }
    if let Some(k) = inst.timer.take() {
        ctx.cancel(k);
    }
    inst.deferred = None;
    advance(ctx, user, id, Next::State(s), None);
    Moved::Restarted
}
