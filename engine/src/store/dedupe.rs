//! The per-journey bookkeeping section of a user record: when the user last
//! entered and left each journey (for `reentry`), and the dedupe keys seen
//! within `dedupe_window`.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

use super::goals::GoalWatch;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JourneyBook {
    pub journey: String,
    /// How many instances were entered (treatment and holdout).
    pub entries: u64,
    pub last_entered: Option<Millis>,
    pub last_ended: Option<Millis>,
    /// (rendered dedupe key, when it was recorded).
    pub keys: Vec<(String, Millis)>,
    pub goals: Vec<GoalWatch>,
}

impl JourneyBook {
    pub fn new(journey: &str) -> Self {
        JourneyBook {
            journey: journey.to_owned(),
            ..JourneyBook::default()
        }
    }

    /// Whether `key` was recorded within `window` before `now`.
    pub fn seen_key(&self, key: &str, now: Millis, window: Millis) -> bool {
        self.keys
            .iter()
            .any(|(k, at)| k == key && *at <= now && now < at.saturating_add(window))
    }

    /// Records `key` at `now`, forgetting keys older than `window`.
    pub fn record_key(&mut self, key: String, now: Millis, window: Millis) {
        self.keys.retain(|(_, at)| now < at.saturating_add(window));
        self.keys.push((key, now));
    }

    /// Whether the book carries nothing worth keeping.
    pub fn is_empty(&self) -> bool {
        self.entries == 0 && self.keys.is_empty() && self.goals.is_empty()
    }
}

/// The book of `journey` in `books`, created when missing.
pub fn book_mut<'b>(books: &'b mut Vec<JourneyBook>, journey: &str) -> &'b mut JourneyBook {
    let pos = match books.iter().position(|b| b.journey == journey) {
        Some(p) => p,
        None => {
            books.push(JourneyBook::new(journey));
            books.len() - 1
        }
    };
    &mut books[pos]
}

pub fn book<'b>(books: &'b [JourneyBook], journey: &str) -> Option<&'b JourneyBook> {
    books.iter().find(|b| b.journey == journey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_expire_with_the_window() {
        let mut b = JourneyBook::new("j");
        b.record_key("c1".into(), 100, 50);
        assert!(b.seen_key("c1", 149, 50));
        assert!(!b.seen_key("c1", 150, 50));
        assert!(!b.seen_key("c2", 120, 50));
        b.record_key("c2".into(), 200, 50);
        assert_eq!(b.keys.len(), 1);
    }
}
