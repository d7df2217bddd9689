//! A `send` step that is due: what to decide, and the transition once the
//! policies (and, for `sent`, rendering and dispatch) have decided.

use std::sync::Arc;

use journeys::compiled::{Action, Channel, Journey, Next};

use crate::clock::Millis;
use crate::dispatch::Message;
use crate::output::{Kind, Line, Outcome};
use crate::policy::Reservation;
use crate::store::instances::Deferred;
use crate::store::timers::{TimerKey, TimerKind};
use crate::store::users::UserRecord;

use super::{instance, Ctx, Effect};

/// A message waiting for its decision.
#[derive(Debug, Clone)]
pub struct Due {
    pub instance: u64,
    pub journey: Arc<Journey>,
    pub state: usize,
    pub channel: Channel,
    pub template: String,
    pub next: Next,
    /// When it first became due.
    pub due: Millis,
    pub reservations: Vec<Reservation>,
}

/// A send timer fired: the message to decide, unless the instance moved on.
pub fn due(
    ctx: &mut Ctx<'_>,
    user: &mut UserRecord,
    key: TimerKey,
    id: u64,
    due: Millis,
) -> Option<Due> {
    let p = instance::pos(user, id)?;
    if user.instances[p].timer != Some(key) {
        return None;
    }
    user.instances[p].timer = None;
    let journey = ctx.journey(&user.instances[p].journey, user.instances[p].version)?;
    let s = instance::current_state(&journey, &user.instances[p])?;
    let Action::Send {
        channel,
        template,
        next,
    } = &journey.states[s].action
    else {
        return None;
    };
    let reservations = user.instances[p]
        .deferred
        .take()
        .map(|d| d.reservations)
        .unwrap_or_default();
    Some(Due {
        instance: id,
        channel: *channel,
        template: template.clone(),
        next: *next,
        state: s,
        journey,
        due,
        reservations,
    })
}

/// What became of a due message.
#[derive(Debug, Clone, PartialEq)]
pub enum Result {
    /// Rendered: the message goes to the outbox.
    Sent {
        key: String,
        message: Box<Message>,
    },
    Deferred {
        reason: String,
        until: Millis,
        reservations: Vec<Reservation>,
    },
    Suppressed {
        reason: String,
    },
    /// Not renderable or not accepted by its provider; dead-lettered.
    Failed {
        key: String,
        reason: String,
    },
}

/// Reports the decision and moves the instance on (or keeps it on the step
/// until a deferral ends). The `send` line is one of the effects.
pub fn decided(ctx: &mut Ctx<'_>, user: &mut UserRecord, due: &Due, result: Result) {
    let Some(p) = instance::pos(user, due.instance) else {
        return;
    };
    let step = due.journey.states[due.state].id.clone();
    let mut line = Line::new(ctx.now, Kind::Send, user.id(), &due.journey.id);
    line.version = Some(user.instances[p].version);
    line.step = Some(step);
    line.channel = Some(due.channel.as_str());
    line.template = Some(due.template.clone());
    let proceed = match result {
        Result::Sent { key, message } => {
            ctx.effects
                .push(Effect::Outbox(message, due.journey.category.clone()));
            line.outcome = Some(Outcome::Sent);
            line.key = Some(key);
            true
        }
        Result::Failed { key, reason } => {
            line.outcome = Some(Outcome::Failed);
            line.reason = Some(reason);
            line.key = Some(key);
            true
        }
        Result::Suppressed { reason } => {
            line.outcome = Some(Outcome::Suppressed);
            line.reason = Some(reason);
            true
        }
        Result::Deferred {
            reason,
            until,
            reservations,
        } => {
            // A deferral always lies in the future.
            let until = until.max(ctx.now + 1);
            line.outcome = Some(Outcome::Deferred);
            line.reason = Some(reason);
            line.until = Some(until);
            let inst = &user.instances[p];
            let kind = TimerKind::Send {
                instance: due.instance,
                due: due.due,
                priority: inst.priority,
                entered_at: inst.entered_at,
            };
            let key = ctx.timer(until, kind);
            let inst = &mut user.instances[p];
            if let Some(old) = inst.timer.replace(key) {
                ctx.cancel(old);
            }
            inst.deferred = Some(Deferred {
                due: due.due,
                reservations,
            });
            false
        }
    };
    ctx.line(line);
    if proceed {
        let event = user.instances[p].event.clone();
        let event = (!event.is_null()).then_some(event);
        instance::advance(ctx, user, due.instance, due.next, event.as_ref());
    }
}
