//! Step 4: throttles.
//!
//! Each throttle keeps a ledger of the slots it granted: dispatches at
//! `now` and reservations in the future, ascending. Slots are granted in
//! arrival order and never before an earlier grant, so a new slot is only
//! ever appended, and the bound — no half-open window `[t, t + per)` holds
//! more than `count` slots — reduces to one condition on the new slot `s`:
//! `s >= ledger[len - count] + per`. The slot is therefore
//! `max(now, last, ledger[len - count] + per)`, and only the last `count`
//! slots (and none older than `per`) need keeping. With `now`
//! non-decreasing this is also the earliest instant the bound allows (the
//! property tests check it against a brute-force search).
//!
//! A message subject to several throttles gets one instant valid for all
//! (the maximum of their slots: each throttle accepts any later instant)
//! and a reservation in each. A message that comes back with a reservation
//! at or before `now` passes that throttle without taking a new slot; a
//! reservation it cannot use (released late for another reason, or a
//! different instant was needed) is left in the ledger: a wasted slot, never
//! an extra dispatch.

use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};
use journeys::compiled::Throttle;
use serde_json::{Map, Value};

use super::{add, channel_index, delta, Decision, Outgoing, Reservation};

#[derive(Debug)]
struct State {
    def: Throttle,
    per: TimeDelta,
    count: usize,
    /// `throttle:<id>`.
    reason: String,
    /// Granted slots, ascending; at most `count`.
    slots: VecDeque<DateTime<Utc>>,
}

impl State {
    /// Forgets slots that no window containing `now` or later can see.
    fn prune(&mut self, now: DateTime<Utc>) {
        while self.slots.front().is_some_and(|&f| add(f, self.per) <= now) {
            self.slots.pop_front();
        }
    }

    /// The earliest instant at or after `now` this throttle can grant.
    fn next_slot(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut t = now;
        if let Some(&last) = self.slots.back() {
            t = t.max(last);
        }
        if self.slots.len() >= self.count {
            t = t.max(add(self.slots[self.slots.len() - self.count], self.per));
        }
        t
    }

    /// Records a grant at `at` (never before the last one).
    fn push(&mut self, at: DateTime<Utc>) {
        debug_assert!(self.slots.back().is_none_or(|&b| b <= at));
        self.slots.push_back(at);
        while self.slots.len() > self.count {
            self.slots.pop_front();
        }
    }
}

#[derive(Debug)]
pub(super) struct Throttles {
    states: Vec<State>,
    /// Per channel, the throttles on it, in configuration order.
    by_channel: [Vec<usize>; 3],
}

/// Whether a held reservation `at` lets the message pass a throttle when it
/// is dispatched at `s` (`now` when `s == now`).
fn usable(held: Option<DateTime<Utc>>, s: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    held.is_some_and(|at| if s == now { at <= now } else { at == s })
}

impl Throttles {
    pub(super) fn new(defs: &[Throttle]) -> Self {
        let mut by_channel: [Vec<usize>; 3] = Default::default();
        let states = defs
            .iter()
            .enumerate()
            .map(|(i, def)| {
                by_channel[channel_index(def.channel)].push(i);
                State {
                    def: def.clone(),
                    per: delta(def.rate.per),
                    count: (def.rate.count as usize).max(1),
                    reason: format!("throttle:{}", def.id),
                    slots: VecDeque::new(),
                }
            })
            .collect();
        Throttles { states, by_channel }
    }

    pub(super) fn admit(&mut self, msg: &Outgoing<'_>, now: DateTime<Utc>) -> Decision {
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
            st.prune(now);
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
        // accepts, given the reservations usable at it. `s` only grows, over
        // finitely many candidate values.
        loop {
            let mut next = s;
            for &i in idx {
                let st = &self.states[i];
                if applies(st) && !usable(held(&st.def.id), s, now) {
                    let slot = st.next_slot(now);
                    if slot > next {
                        next = slot;
                        reason = Some(i);
                    }
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
                if applies(st) && !usable(held(&st.def.id), s, now) {
                    st.push(now);
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
            if !usable(held(&st.def.id), s, now) {
                st.push(s);
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
                    .slots
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
            st.slots.clear();
            let Some(list) = ledgers
                .and_then(|l| l.get(&st.def.id))
                .and_then(Value::as_array)
            else {
                continue;
            };
            let mut slots: Vec<DateTime<Utc>> = list
                .iter()
                .filter_map(Value::as_str)
                .filter_map(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
                .collect();
            slots.sort_unstable();
            let skip = slots.len().saturating_sub(st.count);
            st.slots.extend(slots.into_iter().skip(skip));
        }
    }
}
