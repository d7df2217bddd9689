//! Step 4: throttles.
//!
//! Each throttle keeps a [`Ledger`] of the slots it granted: dispatches at
//! `now` and reservations in the future (the rules of the bound are the
//! ledger's; see `ledger.rs`). A message subject to several throttles gets
//! one instant valid for all (the earliest instant every ledger accepts,
//! found by a fixed point: each accepts any instant at or after its answer,
//! the local one any later instant at all) and a reservation in each. A
//! message that comes back at its reservation's instant passes that
//! throttle without taking a new slot. A reservation it cannot use is left
//! in the ledger: a wasted slot, never an extra dispatch. That is the case
//! when a different instant was needed, and when the message comes back
//! *after* its reservation: its timer fell due while no engine ran (a
//! `run` restarted after downtime, a partition taken over by another
//! worker) and fires late, at the instant the engine opened. Sent then on
//! its old reservation, every message deferred over the downtime would go
//! at once, beyond the bound; instead each takes a new slot from the
//! ledger like a message due now. A ledger that cannot promise any slot
//! now ([`Slot::Wait`]) defers the message to the instant it names,
//! keeping the reservations it holds that are still ahead.
//!
//! An instant inside `delay` quiet hours holding the message is skipped:
//! the search goes on from the windows' release. Reserved there, the slot
//! would be wasted (the message deferred again at it), and repeated every
//! night such slots can fill another user's open hours for good.

use chrono::{DateTime, TimeDelta, Utc};
use journeys::compiled::Throttle;
use serde_json::{Map, Value};

use super::ledger::{Ledger, LedgerFactory, Slot};
use super::{channel_index, delta, Decision, Outgoing, Reservation};

/// How many times one admission moves past quiet hours before it gives up
/// and defers the message, slot-less, to the last window's end (where it is
/// checked again). Reached by windows that together cover every minute, or
/// by a backlog that fills the throttle's open hours for weeks ahead.
const MAX_QUIET_MOVES: u32 = 32;

#[derive(Debug)]
struct State {
    def: Throttle,
    /// `throttle:<id>`.
    reason: String,
    ledger: Box<dyn Ledger>,
}

#[derive(Debug)]
pub(super) struct Throttles {
    states: Vec<State>,
    /// Per channel, the throttles on it, in configuration order.
    by_channel: [Vec<usize>; 3],
}

/// Whether a held reservation `at` lets the message pass a throttle when it
/// is dispatched at `s` (`now`, or a later instant it is deferred to): only
/// at the reservation's own instant. The ledger counted the slot there and
/// nowhere else; a message coming back after it (a timer fired late, after
/// downtime or a takeover) takes a new slot (see the module doc).
fn usable(held: Option<DateTime<Utc>>, s: DateTime<Utc>) -> bool {
    held.is_some_and(|at| at == s)
}

impl Throttles {
    pub(super) fn new(defs: &[Throttle], ledger: &mut LedgerFactory<'_>) -> Self {
        let mut by_channel: [Vec<usize>; 3] = Default::default();
        let states = defs
            .iter()
            .enumerate()
            .map(|(i, def)| {
                by_channel[channel_index(def.channel)].push(i);
                let per: TimeDelta = delta(def.rate.per);
                let count = (def.rate.count as usize).max(1);
                State {
                    def: def.clone(),
                    reason: format!("throttle:{}", def.id),
                    ledger: ledger(&def.id, count, per),
                }
            })
            .collect();
        Throttles { states, by_channel }
    }

    /// Admits `msg` at `now`. `quiet` says, of an instant the message
    /// would be deferred to, when the quiet hours holding the message
    /// there would release it, and their reason (`None`: free then, or a
    /// `drop` window).
    pub(super) fn admit<'q>(
        &mut self,
        msg: &Outgoing<'_>,
        now: DateTime<Utc>,
        quiet: &mut dyn FnMut(DateTime<Utc>) -> Option<(DateTime<Utc>, &'q str)>,
    ) -> Decision {
        let idx = &self.by_channel[channel_index(msg.channel)];
        let held = |id: &str| {
            msg.reservations
                .iter()
                .find(|r| r.throttle == id)
                .map(|r| r.at)
        };
        let applies = |st: &State| st.def.applies(msg.channel, msg.journey);

        // A reservation still ahead (an early release) holds the message until it.
        let mut s = now;
        // The throttle that set `s` last: the reason of a deferral.
        let mut reason: Option<usize> = None;
        let mut any = false;
        for &i in idx {
            let st = &mut self.states[i];
            if !applies(st) {
                continue;
            }
            any = true;
            st.ledger.prune(now);
            if let Some(at) = held(&st.def.id) {
                if at > s {
                    s = at;
                    reason = Some(i);
                }
            }
        }
        if !any {
            return Decision::Send;
        }
        // Fixed point: the earliest instant every applicable throttle
        // accepts, given the reservations usable at it, that quiet hours do
        // not hold. `s` only grows, over finitely many candidate values
        // (quiet hours covering every minute aside: bounded below).
        let mut quiet_moves = 0;
        loop {
            let mut next = s;
            for &i in idx {
                let st = &mut self.states[i];
                if applies(st) && !usable(held(&st.def.id), s) {
                    match st.ledger.earliest(s, now) {
                        Slot::At(slot) => {
                            if slot > next {
                                next = slot;
                                reason = Some(i);
                            }
                        }
                        Slot::Wait(until) => {
                            // Reservations not ahead of now are of no use
                            // when the message comes back.
                            return Decision::Defer {
                                reason: st.reason.clone(),
                                until: until.max(now),
                                reservations: msg
                                    .reservations
                                    .iter()
                                    .filter(|r| r.at > now)
                                    .cloned()
                                    .collect(),
                            };
                        }
                    }
                }
            }
            // A slot inside quiet hours is of no use: the message would
            // come back only to be deferred to the window's end, and the
            // slot would stay taken. Taken every day alike, such slots can
            // fill another user's open hours for good (one user's night is
            // another's morning), and that user would never be sent to.
            if next > now {
                if let Some((release, why)) = quiet(next) {
                    if quiet_moves == MAX_QUIET_MOVES {
                        // Quiet hours hold it as far as this looks: no
                        // slot is taken; it is checked again at `release`.
                        return Decision::Defer {
                            reason: why.to_owned(),
                            until: release,
                            reservations: Vec::new(),
                        };
                    }
                    next = release;
                    quiet_moves += 1;
                }
            }
            if next == s {
                break;
            }
            s = next;
        }

        if s == now {
            for &i in idx {
                let st = &mut self.states[i];
                if applies(st) && !usable(held(&st.def.id), s) {
                    st.ledger.grant(now);
                }
            }
            return Decision::Send;
        }

        let mut reservations = Vec::new();
        for &i in idx {
            let st = &mut self.states[i];
            if !applies(st) {
                continue;
            }
            if !usable(held(&st.def.id), s) {
                st.ledger.grant(s);
            }
            reservations.push(Reservation {
                throttle: st.def.id.clone(),
                at: s,
            });
        }
        let reason =
            reason.map_or_else(|| "throttle".to_owned(), |i| self.states[i].reason.clone());
        Decision::Defer {
            reason,
            until: s,
            reservations,
        }
    }

    pub(super) fn snapshot(&self) -> Value {
        let ledgers: Map<String, Value> = self
            .states
            .iter()
            .map(|st| {
                let slots = st
                    .ledger
                    .snapshot()
                    .iter()
                    .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
                    .collect();
                (st.def.id.clone(), Value::Array(slots))
            })
            .collect();
        let mut out = Map::new();
        out.insert("throttles".to_owned(), Value::Object(ledgers));
        Value::Object(out)
    }

    pub(super) fn restore(&mut self, state: &Value) {
        let ledgers = state.get("throttles").and_then(Value::as_object);
        for st in &mut self.states {
            let slots = ledgers
                .and_then(|l| l.get(&st.def.id))
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(Value::as_str)
                        .filter_map(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map(|t| t.with_timezone(&Utc))
                        .collect()
                })
                .unwrap_or_default();
            st.ledger.restore(slots);
        }
    }
}
