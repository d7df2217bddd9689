//! The seen-event-ids section of a user record: ingestion is idempotent on
//! an event's `id`. Ids are remembered per user (an id belongs to one
//! user's event) for the history retention, at most [`MAX_IDS`] of them.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

pub const MAX_IDS: usize = 2_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeenIds {
    /// (id, event ts), oldest first.
    pub ids: Vec<(String, Millis)>,
}

impl SeenIds {
    pub fn contains(&self, id: &str) -> bool {
        self.ids.iter().any(|(i, _)| i == id)
    }

    /// Remembers `id`; forgets ids older than `max_age` before `ts`.
    pub fn insert(&mut self, id: &str, ts: Millis, max_age: Option<Millis>) {
        self.ids.push((id.to_owned(), ts));
        if let Some(age) = max_age {
            let cutoff = ts.saturating_sub(age);
            self.ids.retain(|(_, t)| *t >= cutoff);
        }
        if self.ids.len() > MAX_IDS {
            let extra = self.ids.len() - MAX_IDS;
            self.ids.drain(..extra);
        }
    }
}
