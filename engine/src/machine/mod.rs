//! The journeys' state machines, as pure transitions: each function takes a
//! user's record (the transaction's view of that user) and an input (an
//! event, a timer, a policy decision), changes the record, and returns what
//! must happen outside as data ([`Effect`]s: lines to report, timers to set
//! or cancel, messages for the outbox). Nothing here touches the store, the clock, the policies'
//! ledgers or the network.

pub mod entry;
pub mod event;
pub mod instance;
pub mod segments;
pub mod send;

use journeys::compiled::Config;

use std::sync::Arc;

use journeys::compiled::Journey;

use crate::clock::Millis;
use crate::deploy::Versions;
use crate::dispatch::Message;
use crate::index::Index;
use crate::output::Line;
use crate::store::timers::{TimerKey, TimerKind};

/// What a transition asks the engine to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Report a decision (and log it).
    Line(Line),
    /// Set a timer for this user.
    SetTimer(TimerKey, TimerKind),
    /// Cancel a timer set earlier.
    CancelTimer(TimerKey),
    /// Put a rendered message in the outbox, committed with this change
    /// (with its journey's category).
    Outbox(Box<Message>, String),
}

/// The inputs every transition shares.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub index: &'a Index,
    /// Every runnable version: instances run on the one they entered.
    pub versions: &'a Versions,
    /// The instant being processed (an event's own `ts`, a timer's due time).
    pub now: Millis,
    /// Whether holdouts apply (`ignore_holdouts` turns them off in tests).
    pub holdouts: bool,
    /// The store-wide sequence: instance ids and timer keys.
    pub seq: &'a mut u64,
    pub effects: Vec<Effect>,
    /// Set when the profile changed (segments must be re-evaluated).
    pub profile_changed: bool,
    /// Set (and never cleared) when the profile or history changed, or
    /// time may have changed segment membership: indexes must be checked.
    pub touched: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(
        config: &'a Config,
        index: &'a Index,
        versions: &'a Versions,
        now: Millis,
        holdouts: bool,
        seq: &'a mut u64,
    ) -> Self {
        Ctx {
            config,
            index,
            versions,
            now,
            holdouts,
            seq,
            effects: Vec::new(),
            profile_changed: false,
            touched: false,
        }
    }

    /// The version `version` of `journey` (an instance's own).
    pub fn journey(&self, journey: &str, version: u32) -> Option<Arc<Journey>> {
        self.versions
            .get(self.config, journey, version)
            .map(Arc::clone)
    }

    pub fn next_seq(&mut self) -> u64 {
        *self.seq += 1;
        *self.seq
    }

    pub fn line(&mut self, line: Line) {
        self.effects.push(Effect::Line(line));
    }

    /// A new timer key at `due`.
    pub fn timer(&mut self, due: Millis, kind: TimerKind) -> TimerKey {
        let key = TimerKey {
            due,
            seq: self.next_seq(),
        };
        self.effects.push(Effect::SetTimer(key, kind));
        key
    }

    pub fn cancel(&mut self, key: TimerKey) {
        self.effects.push(Effect::CancelTimer(key));
    }
}

#[cfg(test)]
mod tests;
