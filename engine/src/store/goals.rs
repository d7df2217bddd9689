//! The goal-watch section of a user record: an entered instance (treatment
//! or holdout) converts on the first matching event within the goal's
//! `within`, whether or not the instance is still live.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

use super::attrs::{self, Val};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoalWatch {
    pub instance: u64,
    pub version: u32,
    pub entered_at: Millis,
    /// Exclusive end of the conversion window.
    pub until: Millis,
    pub holdout: bool,
    /// The entry event's properties, for `entry.*` in the goal's condition.
    #[serde(with = "attrs::tagged")]
    pub entry: Val,
}
