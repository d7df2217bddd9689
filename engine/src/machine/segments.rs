//! Entry by segment: a user enters when they become a member (not-member →
//! member). Membership is re-evaluated whenever the profile or history
//! changes, and at the instants when an event leaves a `history … within`
//! window of an entry segment (a timer per user).

use crate::scope::UserScope;
use crate::store::timers::TimerKind;
use crate::store::users::UserRecord;

use super::{entry, Ctx};

/// Re-evaluates the entry segments for `user` at `ctx.now`; enters the
/// journeys of segments the user just joined (unless `enter` is false: an
/// imported past event only sets the baseline), and keeps the
/// re-evaluation timer at the next window boundary.
pub fn reevaluate(ctx: &mut Ctx<'_>, user: &mut UserRecord, enter: bool) {
    let index = ctx.index;
    if index.segment_entries.is_empty() && index.audiences.is_empty() {
        return;
    }
    let mut joined: Vec<usize> = Vec::new();
    for (segment, journeys) in &index.segment_entries {
        let member = UserScope::new(ctx.config, index, &user.profile, &user.history, ctx.now)
            .segment(segment);
        let was = user.segments.iter().any(|s| s == segment);
        if member && !was {
            user.segments.push(segment.clone());
            joined.extend(journeys.iter().copied());
        } else if !member && was {
            user.segments.retain(|s| s != segment);
        }
    }
    if enter {
        for j in joined {
            entry::try_enter(ctx, user, j, None);
        }
    }
    let next = index.next_boundary(&user.history, ctx.now);
    if user.reevaluate.map(|k| k.due) != next {
        if let Some(old) = user.reevaluate.take() {
            ctx.cancel(old);
        }
        if let Some(due) = next {
            user.reevaluate = Some(ctx.timer(due, TimerKind::Segments));
        }
    }
}

/// The re-evaluation timer fired.
pub fn on_timer(ctx: &mut Ctx<'_>, user: &mut UserRecord, key: crate::store::timers::TimerKey) {
    if user.reevaluate != Some(key) {
        return;
    }
    user.reevaluate = None;
    ctx.touched = true;
    reevaluate(ctx, user, true);
}
