//! The report journal: one small, anonymous record per entry, `send`
//! decision and conversion, for `sluice report` ([`crate::report`]).
//!
//! Records are gathered into pages of up to [`PAGE_RECORDS`], one sled
//! write each instead of one per record (the journal was a third of the
//! service's sled inserts): key = `j` + the time of the page's latest
//! record (big-endian ms) + the sequence number of its last record + `p`;
//! value = the page's records with their times, in (time, sequence) order
//! ([`super::codec`]). A page is written by the commit that made its
//! records ([`Batch::seal`]). Stores written before pages existed hold one
//! record per key (`j` + time + sequence, no `p`); both are read.
//!
//! Keying a page by its *latest* time is what keeps `--since` exact: every
//! page with a record at or after `since` has a key at or after it, so the
//! read starts at [`cursor_before`] and drops the earlier records of the
//! first pages ([`crate::report::Tally`] filters by time). Pages are in
//! time order by their latest record, records within a page by time; the
//! report's counts do not depend on the order between pages.
//!
//! No user id is kept, only the journey, its version, the holdout flag and
//! the outcome: the journal holds counts, not people. Erasing a user
//! (`DELETE /v1/users/{id}`) therefore leaves it as it is, which is what
//! RUN.md asks of `report` ("keep anonymous totals").
//!
//! Size: a record is about 20 bytes plus the journey id; it is kept for the
//! life of the store, like the message log (docs/report.md, "Size and
//! retention").
//!
//! Knows nothing of the statistics: it stores facts and reads them back.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::output::{Kind, Line, Outcome};

use super::codec::{self, time_bytes, time_from_bytes};
use super::{Batch, Error, Kv};

const PREFIX: u8 = b'j';
/// The last byte of a page's key (a single record's key has none).
const PAGE: u8 = b'p';
/// Records in one page, at most.
pub const PAGE_RECORDS: usize = 256;

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
        let mut page = Page::default();
        let mut cursor: Option<Vec<u8>> = after.map(<[u8]>::to_vec);
        // Whole keys only: a page of records is never split, so a page of
        // the report may hold up to `PAGE_RECORDS - 1` records more than
        // `limit`.
        let chunk = (limit / PAGE_RECORDS).clamp(16, 4_096);
        loop {
            let entries = self.scan(&[PREFIX], cursor.as_deref(), None, chunk)?;
            let end = entries.len() < chunk;
            for (k, v) in entries {
                read_entry(&k, &v, &mut page.records)?;
                cursor = Some(k);
                if page.records.len() >= limit {
                    // More may follow: the next read says.
                    page.next = cursor;
                    return Ok(page);
                }
            }
            if end {
                return Ok(page);
            }
        }
    }
}

/// Decodes one journal entry: a page of records, or a single record of a
/// store written before pages.
fn read_entry(key: &[u8], value: &[u8], out: &mut Vec<(Millis, Record)>) -> Result<(), Error> {
    let bad_key = || Error::Decode {
        what: "report journal key",
        message: format!("{} bytes, expected 17 or 18", key.len()),
    };
    match key.len() {
        17 => {
            let at = time_of(key).ok_or_else(bad_key)?;
            out.push((at, codec::decode("report journal record", value)?));
        }
        18 if key.last() == Some(&PAGE) => {
            let records: Vec<(Millis, Record)> = codec::decode("report journal page", value)?;
            out.extend(records);
        }
        _ => return Err(bad_key()),
    }
    Ok(())
}

impl Batch {
    /// Records a fact at `at` (`seq` keeps facts of one instant apart); it
    /// is written with the batch's other journal records, in pages in time
    /// order, when the batch is sealed.
    pub fn journal(&mut self, at: Millis, seq: u64, record: &Record) -> Result<(), Error> {
        self.journal.push((at, seq, record.clone()));
        Ok(())
    }

    /// Writes the journal records gathered so far as pages. Every backend
    /// calls it before applying a batch; calling it again is harmless.
    pub fn seal(&mut self) -> Result<(), Error> {
        if self.journal.is_empty() {
            return Ok(());
        }
        let mut records = std::mem::take(&mut self.journal);
        records.sort_by_key(|(at, seq, _)| (*at, *seq));
        for chunk in records.chunks(PAGE_RECORDS) {
            let Some(&(last_at, _, _)) = chunk.last() else {
                continue;
            };
            let last_seq = chunk.iter().map(|(_, seq, _)| *seq).max().unwrap_or(0);
            let mut k = key(last_at, last_seq);
            k.push(PAGE);
            let page: Vec<(Millis, &Record)> = chunk.iter().map(|(at, _, r)| (*at, r)).collect();
            self.ops
                .insert(k, Some(codec::encode("report journal page", &page)?));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::GoalMark;
    use crate::store::Kv;

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

    fn rec(journey: &str) -> Record {
        Record {
            journey: journey.into(),
            version: 1,
            fact: Fact::Send {
                outcome: SendOutcome::Sent,
            },
        }
    }

    /// A sled store holding single records (as stores written before pages
    /// did) and then pages: both are read, in key order, each page whole.
    #[test]
    fn pages_and_old_single_records_are_read_alike() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::sled_store::SledStore::open(
            dir.path(),
            &crate::store::sled_store::SledOptions::default(),
        )
        .expect("open");
        // The old layout: one key per record.
        let mut old = Batch::default();
        for (at, seq) in [(10, 1), (20, 2)] {
            old.put(
                key(at, seq),
                codec::encode("report journal record", &rec("old")).expect("encode"),
            );
        }
        store.apply(old).expect("apply");
        // 600 records in one commit, out of time order: three pages.
        let mut b = Batch::default();
        for i in 0..600u64 {
            let at = 1_000 + ((i * 7) % 600) as Millis;
            b.journal(at, 100 + i, &rec("new")).expect("journal");
        }
        // And a commit of two.
        b.seal().expect("seal");
        store.apply(b).expect("apply");
        let mut small = Batch::default();
        small.journal(5_000, 900, &rec("late")).expect("journal");
        small.journal(4_000, 901, &rec("late")).expect("journal");
        store.apply(small).expect("apply");

        let mut all = Vec::new();
        let mut cursor: Option<Cursor> = None;
        let mut reads = 0;
        loop {
            let page = store.journal_page(cursor.as_deref(), 100).expect("read");
            reads += 1;
            all.extend(page.records);
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        // 2 old records and the first page; the second page; the last two.
        assert_eq!(
            reads, 3,
            "whole pages of up to 256 records against a limit of 100"
        );
        assert_eq!(all.len(), 604);
        assert_eq!(all[0], (10, rec("old")));
        assert_eq!(all[1], (20, rec("old")));
        // Within each page, time order; every record once.
        let times: Vec<Millis> = all[2..602].iter().map(|(at, _)| *at).collect();
        let mut sorted = times.clone();
        sorted.sort_unstable();
        assert_eq!(
            times, sorted,
            "one commit's pages follow each other in time order"
        );
        assert_eq!(sorted, (1_000..1_600).collect::<Vec<Millis>>());
        assert_eq!(all[602], (4_000, rec("late")));
        assert_eq!(all[603], (5_000, rec("late")));

        // From a time in the middle of a page: the page is read whole (its
        // key is its latest record's time), so `since` falls inside it.
        let page = store
            .journal_page(Some(&cursor_before(1_300)), usize::MAX)
            .expect("read");
        assert!(page.records.iter().any(|(at, _)| *at < 1_300));
        assert_eq!(
            page.records.iter().filter(|(at, _)| *at >= 1_300).count(),
            302
        );
    }
}
