//! The seen-event-ids section of a user record: ingestion is idempotent on
//! an event's `id`. Ids are remembered per user (an id belongs to one
//! user's event) for the history retention, at most [`MAX_IDS`] of them.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

pub const MAX_IDS: usize = 2_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeenIds {
    /// (64-bit hash of the id, event ts), oldest first. Two ids of one user
    /// collide with a probability of about n²/2⁶⁵.
    pub ids: Vec<(u64, Millis)>,
}

fn hash(id: &str) -> u64 {
    let d = <sha2::Sha256 as sha2::Digest>::digest(id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

impl SeenIds {
    pub fn contains(&self, id: &str) -> bool {
        let h = hash(id);
        self.ids.iter().any(|(i, _)| *i == h)
    }

    /// Remembers `id` unless it was seen (`false` then, and nothing
    /// changes); forgets ids older than `max_age` before `ts`. One hash for
    /// both the check and the insert.
    pub fn insert_new(&mut self, id: &str, ts: Millis, max_age: Option<Millis>) -> bool {
        let h = hash(id);
        if self.ids.iter().any(|(i, _)| *i == h) {
            return false;
        }
        self.remember(h, ts, max_age);
        true
    }

    /// Remembers `id`; forgets ids older than `max_age` before `ts`.
    pub fn insert(&mut self, id: &str, ts: Millis, max_age: Option<Millis>) {
        self.remember(hash(id), ts, max_age);
    }

    fn remember(&mut self, h: u64, ts: Millis, max_age: Option<Millis>) {
        self.ids.push((h, ts));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_new_once() {
        let mut seen = SeenIds::default();
        assert!(seen.insert_new("e1", 10, None));
        assert!(!seen.insert_new("e1", 20, None), "seen before");
        assert!(seen.contains("e1"));
        assert_eq!(seen.ids.len(), 1, "a repeat changes nothing");
        assert!(seen.insert_new("e2", 20, Some(5)));
        assert!(!seen.contains("e1"), "older than the age forgotten");
    }
}
