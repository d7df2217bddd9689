//! Entering a journey: the `when` condition, then the refusals (a live
//! instance, a dedupe key seen within the window, the re-entry rule), then
//! the holdout draw, the instance and its first state.

use std::sync::Arc;

use journeys::compiled::{Next, Trigger};
use journeys::scalar::Reentry;

use crate::hash;
use crate::output::{GoalMark, Kind, Line};
use crate::scope::UserScope;
use crate::store::attrs::Val;
use crate::store::dedupe;
use crate::store::goals::GoalWatch;
use crate::store::instances::{self, Instance};
use crate::store::users::UserRecord;

use super::{instance, Ctx};

/// Why an entry was refused (the `reason` of `entry_skipped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Live,
    Dedupe,
    Reentry,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Live => "live",
            Skip::Dedupe => "dedupe",
            Skip::Reentry => "reentry",
        }
    }
}

/// Tries to enter `user` into journey number `j` of the config. `event`:
/// the triggering event's properties (event entries); segment and schedule
/// entries have none. Returns the new instance's id.
pub fn try_enter(
    ctx: &mut Ctx<'_>,
    user: &mut UserRecord,
    j: usize,
    event: Option<&Val>,
) -> Option<u64> {
    let journey = Arc::clone(ctx.versions.entering(&ctx.config.journeys[j], user.id()));
    let now = ctx.now;
    let empty = Val::object();
    let entry_props = event.unwrap_or(&empty);
    let mut key = None;
    {
        let scope = UserScope::new(ctx.config, ctx.index, &user.profile, &user.history, now)
            .with_event(event)
            .with_entry(Some(entry_props));
        if let Some(when) = &journey.entry.when {
            if !when.eval(&scope) {
                return None;
            }
        }
        if let Some(t) = &journey.entry.dedupe_key {
            match scope.render_text(t) {
                Ok(k) => key = Some(k),
                Err(e) => {
                    tracing::warn!(journey = %journey.id, user = user.id(), "dedupe key not rendered, entering without dedupe: {e}")
                }
            }
        }
    }
    let window = journey.entry.dedupe_window.millis();
    // The dedupe key first: the same cart updated again while its journey
    // runs is a duplicate (as in CLI.md's example), not merely a live
    // instance.
    let book = dedupe::book(&user.journeys, &journey.id);
    let skip = if key
        .as_deref()
        .is_some_and(|k| book.is_some_and(|b| b.seen_key(k, now, window)))
    {
        Some(Skip::Dedupe)
    } else if instances::live(&user.instances, &journey.id).is_some() {
        Some(Skip::Live)
    } else {
        {
            match journey.entry.reentry {
                Reentry::Always => None,
                Reentry::Never => book.is_some_and(|b| b.entries > 0).then_some(Skip::Reentry),
                Reentry::After(d) => book
                    .and_then(|b| b.last_ended)
                    .is_some_and(|ended| now < ended.saturating_add(d.millis()))
                    .then_some(Skip::Reentry),
            }
        }
    };
    if let Some(skip) = skip {
        let mut line = Line::new(now, Kind::EntrySkipped, user.id(), &journey.id);
        line.reason = Some(skip.as_str().to_owned());
        ctx.line(line);
        return None;
    }
    let holdout = ctx.holdouts && hash::is_held_out(&journey.id, user.id(), journey.holdout.0);
    let id = ctx.next_seq();
    let book = dedupe::book_mut(&mut user.journeys, &journey.id);
    book.entries += 1;
    let number = book.entries;
    book.last_entered = Some(now);
    if let Some(k) = key {
        book.record_key(k, now, window);
    }
    if let Some(goal) = &journey.goal {
        book.goals.retain(|g| g.until > now);
        book.goals.push(GoalWatch {
            instance: id,
            version: journey.version,
            entered_at: now,
            until: now.saturating_add(goal.within.millis()),
            holdout,
            // Kept only when the goal's condition may read `entry.*`.
            entry: if goal.when.is_some() {
                entry_props.clone()
            } else {
                Val::Null
            },
        });
    }
    let mut line = Line::new(now, Kind::Entered, user.id(), &journey.id);
    line.version = Some(journey.version);
    line.holdout = Some(holdout);
    line.goal = journey.goal.is_some().then_some(GoalMark {
        version: journey.version,
        entered_at: now,
    });
    ctx.line(line);
    let first = journey
        .states
        .first()
        .map(|s| s.id.clone())
        .unwrap_or_default();
    user.instances.push(Instance {
        id,
        number,
        journey: journey.id.clone(),
        version: journey.version,
        state: 0,
        step: first,
        entered_at: now,
        entry: entry_props.clone(),
        holdout,
        priority: journey.priority,
        event: Val::Null,
        timer: None,
        deferred: None,
    });
    let start = if journey.states.is_empty() {
        Next::End
    } else {
        Next::State(0)
    };
    instance::advance(ctx, user, id, start, event);
    Some(id)
}

/// A schedule fired for `user`: enter when they are in the journey's
/// segment (or when it has none).
pub fn on_schedule(ctx: &mut Ctx<'_>, user: &mut UserRecord, j: usize) -> Option<u64> {
    let journey = Arc::clone(&ctx.config.journeys[j]);
    if let Trigger::Schedule {
        segment: Some(segment),
        ..
    } = &journey.entry.trigger
    {
        let scope = UserScope::new(ctx.config, ctx.index, &user.profile, &user.history, ctx.now);
        if !scope.segment(segment) {
            return None;
        }
    }
    try_enter(ctx, user, j, None)
}
