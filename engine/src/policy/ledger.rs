//! A throttle's ledger: where the slots it granted are kept, behind a trait
//! so that one engine (the [`Local`] ledger, in the store's snapshot) and a
//! cluster of workers (a ledger shared through NATS,
//! `crate::cluster::slots`) run the same admission rules in
//! `throttle.rs`.
//!
//! The trait is synchronous: the engine's writer thread asks it while
//! deciding a message and must not wait on the network. A ledger that
//! needs the network (the cluster's) answers from what it already holds
//! and says [`Slot::Wait`] when it holds nothing usable; the message is
//! then deferred (reason `throttle:<id>`) and asked again at the instant
//! given, while the ledger fetches more on its own.
//!
//! This module knows nothing of messages, channels or journeys: a ledger
//! is a set of instants for one throttle (`count` per `per`).

use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};

use super::add;

/// A ledger's answer to "when can you grant a slot at or after `at`?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The earliest instant, at or after the one asked, at which a slot can
    /// be granted now.
    At(DateTime<Utc>),
    /// No slot can be promised now (a shared ledger's local share is spent
    /// and more is on its way): ask again at this instant.
    Wait(DateTime<Utc>),
}

/// One throttle's granted slots.
pub trait Ledger: Send + std::fmt::Debug {
    /// Forgets what no window containing `now` or later can see. Called
    /// once per decision for every throttle that applies, before
    /// [`Ledger::earliest`].
    fn prune(&mut self, now: DateTime<Utc>);

    /// The earliest instant at or after `at` (itself at or after `now`) at
    /// which the bound allows one more slot.
    fn earliest(&mut self, at: DateTime<Utc>, now: DateTime<Utc>) -> Slot;

    /// Records a slot granted at `at`, an instant [`Ledger::earliest`]
    /// returned for it (or, for the local ledger, any later one: the
    /// bound accepts any later instant).
    fn grant(&mut self, at: DateTime<Utc>);

    /// The slots to persist with the store, ascending (empty for a ledger
    /// kept elsewhere).
    fn snapshot(&self) -> Vec<DateTime<Utc>>;

    /// Restores slots saved by [`Ledger::snapshot`] (any order).
    fn restore(&mut self, slots: Vec<DateTime<Utc>>);
}

/// Makes the ledger of each configured throttle: `(id, count, per)`.
pub type LedgerFactory<'a> = dyn FnMut(&str, usize, TimeDelta) -> Box<dyn Ledger> + 'a;

/// The single engine's ledger, kept in memory and saved with the store.
///
/// Slots are granted in arrival order and never before an earlier grant,
/// so a new slot is only ever appended, and the bound — no half-open
/// window `[t, t + per)` holds more than `count` slots — reduces to one
/// condition on the new slot `s`: `s >= ledger[len - count] + per`. The
/// slot is therefore `max(now, last, ledger[len - count] + per)`, and only
/// the last `count` slots (and none older than `per`) need keeping. With
/// `now` non-decreasing this is also the earliest instant the bound allows
/// (the property tests check it against a brute-force search).
#[derive(Debug)]
pub struct Local {
    per: TimeDelta,
    count: usize,
    /// Granted slots, ascending; at most `count`.
    slots: VecDeque<DateTime<Utc>>,
}

impl Local {
    pub fn new(count: usize, per: TimeDelta) -> Self {
        Local {
            per,
            count: count.max(1),
            slots: VecDeque::new(),
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
}

impl Ledger for Local {
    fn prune(&mut self, now: DateTime<Utc>) {
        while self.slots.front().is_some_and(|&f| add(f, self.per) <= now) {
            self.slots.pop_front();
        }
    }

    fn earliest(&mut self, at: DateTime<Utc>, now: DateTime<Utc>) -> Slot {
        Slot::At(at.max(self.next_slot(now)))
    }

    fn grant(&mut self, at: DateTime<Utc>) {
        debug_assert!(self.slots.back().is_none_or(|&b| b <= at));
        self.slots.push_back(at);
        while self.slots.len() > self.count {
            self.slots.pop_front();
        }
    }

    fn snapshot(&self) -> Vec<DateTime<Utc>> {
        self.slots.iter().copied().collect()
    }

    fn restore(&mut self, mut slots: Vec<DateTime<Utc>>) {
        slots.sort_unstable();
        let skip = slots.len().saturating_sub(self.count);
        self.slots.clear();
        self.slots.extend(slots.into_iter().skip(skip));
    }
}
