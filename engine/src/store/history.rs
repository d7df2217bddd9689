//! The history section of a user record: the user's tracked events that a
//! `history` condition may ask about, bounded in age and count.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

use super::attrs::{self, Val};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistEntry {
    pub ts: Millis,
    pub name: String,
    #[serde(with = "attrs::tagged")]
    pub props: Val,
}

/// How much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Events older than this (relative to the newest) are dropped; `None`
    /// keeps them regardless of age.
    pub max_age: Option<Millis>,
    /// At most this many events per user, newest kept.
    pub max_count: usize,
}

/// Inserts `entry` in timestamp order (events may arrive out of order) and
/// applies the retention.
pub fn record(history: &mut Vec<HistEntry>, entry: HistEntry, retention: Retention) {
    let pos = history.partition_point(|e| e.ts <= entry.ts);
    history.insert(pos, entry);
    if let (Some(age), Some(newest)) = (retention.max_age, history.last().map(|e| e.ts)) {
        let cutoff = newest.saturating_sub(age);
        let old = history.partition_point(|e| e.ts < cutoff);
        if old > 0 {
            history.drain(..old);
        }
    }
    if history.len() > retention.max_count {
        let extra = history.len() - retention.max_count;
        history.drain(..extra);
    }
}

/// The entries named `name` that happened in `(now - within, now]`
/// (`within: None`: at or before now).
pub fn window<'h>(
    history: &'h [HistEntry],
    name: &'h str,
    now: Millis,
    within: Option<Millis>,
) -> impl Iterator<Item = &'h HistEntry> + 'h {
    let from = within.map(|w| now.saturating_sub(w));
    history
        .iter()
        .filter(move |e| e.name == name && e.ts <= now && from.is_none_or(|f| e.ts > f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(ts: Millis, name: &str) -> HistEntry {
        HistEntry {
            ts,
            name: name.to_owned(),
            props: Val::Null,
        }
    }

    #[test]
    fn ordered_bounded_windowed() {
        let r = Retention {
            max_age: Some(100),
            max_count: 3,
        };
        let mut h = Vec::new();
        record(&mut h, e(50, "a"), r);
        record(&mut h, e(10, "b"), r);
        record(&mut h, e(120, "a"), r);
        assert_eq!(h.iter().map(|x| x.ts).collect::<Vec<_>>(), vec![50, 120]);
        record(&mut h, e(121, "a"), r);
        record(&mut h, e(122, "a"), r);
        assert_eq!(h.len(), 3);
        assert_eq!(window(&h, "a", 121, Some(1)).count(), 1);
        assert_eq!(window(&h, "a", 200, None).count(), 3);
    }
}
