//! The live-instances section of a user record: each instance of a journey
//! the user is in, with its current step and what it waits for.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::policy::Reservation;

use super::attrs::{self, Val};
use super::timers::TimerKey;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique across the store; also the entry order.
    pub id: u64,
    /// The how-manieth entry of this user into this journey (1-based): with
    /// the user and journey, a stable name for the instance (message keys
    /// derive from it).
    pub number: u64,
    pub journey: String,
    pub version: u32,
    /// Index of the current state in the journey's state machine.
    pub state: u32,
    /// Id of the current step (survives a reordering of states).
    pub step: String,
    pub entered_at: Millis,
    /// The properties of the event that started the instance (`entry.*`);
    /// an empty object for segment and schedule entries.
    #[serde(with = "attrs::tagged")]
    pub entry: Val,
    pub holdout: bool,
    pub priority: i64,
    /// The event in scope for templates (`event.*`): the trigger or the
    /// awaited event, until the instance next waits on a timer.
    #[serde(with = "attrs::tagged")]
    pub event: Val,
    /// The pending timer, cancelled when the instance moves on or exits.
    pub timer: Option<TimerKey>,
    /// A message deferred by the policies, to re-decide at the timer.
    pub deferred: Option<Deferred>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deferred {
    /// When the message first became due.
    pub due: Millis,
    pub reservations: Vec<Reservation>,
}

/// The live instance of `journey`, if any.
pub fn live<'i>(instances: &'i [Instance], journey: &str) -> Option<&'i Instance> {
    instances.iter().find(|i| i.journey == journey)
}
