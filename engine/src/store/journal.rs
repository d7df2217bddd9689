//! The report journal: one small, anonymous record per entry, `send`
//! decision and conversion, in time order, for `sluice report`
//! ([`crate::report`]). Key = `j` + time (big-endian ms) + sequence number;
//! value = a [`Record`] ([`super::codec`]).
//!
//! No user id is kept, only the journey, its version, the holdout flag and
//! the outcome: the journal holds counts, not people. Erasing a user
//! (`DELETE /v1/users/{id}`) therefore leaves it as it is, which is what
//! RUN.md asks of `report` ("keep anonymous totals").
//!
//! Size: a record's value is about 20 bytes plus the journey id, its key
//! 17; on disk, with sled's overhead and the commit log, about 180 bytes
//! per record were measured (BENCHMARKS.md), so roughly 0.6 GB per million
//! entries of a journey with two sends and a goal. It is kept for the life
//! of the store, like the message log (docs/report.md, "Size and
//! retention").
//!
//! Knows nothing of the statistics: it stores facts and reads them back.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::output::{Kind, Line, Outcome};

use super::codec::{self, time_bytes, time_from_bytes};
use super::{Batch, Error, Kv};

const PREFIX: u8 = b'j';

/// One fact about a journey version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub journey: String,
    pub version: u32,
    pub fact: Fact,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fact {
    /// An instance entered; `goal`: its conversion is watched (the journey
    /// has a goal).
    Entered { holdout: bool, goal: bool },
    /// A `send` decision.
    Send { outcome: SendOutcome },
    /// The instance that entered at `entered_at` reached its goal.
    Converted { holdout: bool, entered_at: Millis },
}

/// The outcome of a `send` decision (CLI.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendOutcome {
    Sent,
    Deferred,
    Suppressed,
    Failed,
}

impl Record {
    /// The record an output line makes, if it makes one: `entered`,
    /// `send` and `converted` lines do.
    pub fn of(line: &Line) -> Option<Record> {
        let (version, fact) = match line.kind {
            Kind::Entered => (
                line.version?,
                Fact::Entered {
                    holdout: line.holdout.unwrap_or(false),
                    goal: line.goal.is_some(),
                },
            ),
            Kind::Send => (
                line.version?,
                Fact::Send {
                    outcome: match line.outcome? {
                        Outcome::Sent => SendOutcome::Sent,
                        Outcome::Deferred => SendOutcome::Deferred,
                        Outcome::Suppressed => SendOutcome::Suppressed,
                        Outcome::Failed => SendOutcome::Failed,
                    },
                },
            ),
            Kind::Converted => {
                let goal = line.goal?;
                (
                    goal.version,
                    Fact::Converted {
                        holdout: line.holdout.unwrap_or(false),
                        entered_at: goal.entered_at,
                    },
                )
            }
            Kind::EntrySkipped | Kind::Exited | Kind::Completed => return None,
        };
        Some(Record {
            journey: line.journey.clone(),
            version,
            fact,
        })
    }
}

fn key(at: Millis, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(PREFIX);
    k.extend_from_slice(&time_bytes(at));
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A position in the journal: read what comes after it.
pub type Cursor = Vec<u8>;

/// The position just before the first record at or after `since`.
pub fn cursor_before(since: Millis) -> Cursor {
    key(since.saturating_sub(1), u64::MAX)
}

/// The time in a journal key.
fn time_of(key: &[u8]) -> Option<Millis> {
    let t: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(time_from_bytes(t))
}

/// One page of the journal.
#[derive(Debug, Default)]
pub struct Page {
    /// The records, each with its time, in time order.
    pub records: Vec<(Millis, Record)>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<Cursor>,
}

/// Reads of the journal.
pub trait Journal {
    /// Up to `limit` records after `after` (from the start when `None`).
    fn journal_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Page, Error>;
}

impl<T: Kv + ?Sized> Journal for T {
    fn journal_page(&self, after: Option<&[u8]>, limit: usize) -> Result<Page, Error> {
        let limit = limit.max(1);
        let entries = self.scan(&[PREFIX], after, None, limit)?;
        let full = entries.len() >= limit;
        let mut page = Page {
            records: Vec::with_capacity(entries.len()),
            next: None,
        };
        for (k, v) in &entries {
            let at = time_of(k).ok_or_else(|| Error::Decode {
                what: "report journal key",
                message: format!("{} bytes, expected 17", k.len()),
            })?;
            page.records
                .push((at, codec::decode("report journal record", v)?));
        }
        if full {
            page.next = entries.last().map(|(k, _)| k.clone());
        }
        Ok(page)
    }
}

impl Batch {
    /// Records a fact at `at` (`seq` keeps facts of one instant apart).
    pub fn journal(&mut self, at: Millis, seq: u64, record: &Record) -> Result<(), Error> {
        self.put(
            key(at, seq),
            codec::encode("report journal record", record)?,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::GoalMark;

    #[test]
    fn lines_make_records() {
        let mut l = Line::new(10, Kind::Entered, "u1", "cart");
        l.version = Some(3);
        l.holdout = Some(true);
        assert_eq!(
            Record::of(&l).map(|r| r.fact),
            Some(Fact::Entered {
                holdout: true,
                goal: false
            })
        );
        let mut c = Line::new(20, Kind::Converted, "u1", "cart");
        c.holdout = Some(false);
        assert_eq!(Record::of(&c), None, "a conversion needs its goal mark");
        c.goal = Some(GoalMark {
            version: 2,
            entered_at: 5,
        });
        assert_eq!(
            Record::of(&c),
            Some(Record {
                journey: "cart".into(),
                version: 2,
                fact: Fact::Converted {
                    holdout: false,
                    entered_at: 5
                }
            })
        );
        let mut s = Line::new(30, Kind::Send, "u1", "cart");
        s.version = Some(3);
        s.outcome = Some(Outcome::Suppressed);
        assert_eq!(
            Record::of(&s).map(|r| r.fact),
            Some(Fact::Send {
                outcome: SendOutcome::Suppressed
            })
        );
        assert_eq!(
            Record::of(&Line::new(40, Kind::Completed, "u1", "cart")),
            None
        );
    }

    #[test]
    fn keys_order_by_time_and_cursors_start_at_since() {
        assert!(key(-5, 9) < key(3, 1));
        assert!(key(3, 1) < key(3, 2));
        assert!(cursor_before(3) < key(3, 0));
        assert!(cursor_before(3) > key(2, u64::MAX - 1));
        assert_eq!(time_of(&key(-7, 4)), Some(-7));
        assert_eq!(cursor_before(Millis::MIN), key(Millis::MIN, u64::MAX));
    }
}
