//! `sluice report` (RUN.md §5): per journey and version, the entries, the
//! holdout's size, the `send` decisions by outcome, and the conversion of
//! treatment and holdout with the uplift (treatment rate minus holdout
//! rate) and its 95% interval ([`interval`], Newcombe's hybrid score
//! method).
//!
//! A [`Tally`] reads the report journal ([`crate::store::journal`]) page by
//! page: memory holds one page and one row per journey version however
//! large the store, and a caller can show progress or, on the service's
//! single writer, read one page per round so that ingest keeps going.
//!
//! Counting rules (docs/report.md): an entry counts at its entry time, a
//! send decision at its decision time, a conversion with the entry it
//! belongs to (so `--since` keeps the conversions of the entries it
//! keeps). The conversion groups hold the entries whose journey had a goal:
//! `users` is the number of such entries in the group (a user who entered
//! twice counts twice: each entry has its own conversion window).
//!
//! Knows nothing of the command line or HTTP; reads the store only through
//! the journal's trait.

pub mod interval;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use journeys::compiled::Config;

use crate::clock::{format_ts, Millis};
use crate::store::journal::{self, Cursor, Fact, Journal, SendOutcome};
use crate::store::Error as StoreError;

/// Records read per page.
pub const PAGE: usize = 8_192;

/// What a report covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// One journey, or every journey.
    pub journey: Option<String>,
    /// Entries and decisions at or after this instant.
    pub since: Option<Millis>,
}

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown journey `{0}`: it is not in the config and nothing was recorded for it")]
    UnknownJourney(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `send` decisions by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sends {
    pub sent: u64,
    pub deferred: u64,
    pub suppressed: u64,
    pub failed: u64,
}

/// One side of the comparison: entries whose conversion is watched, and
/// how many converted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Group {
    pub users: u64,
    pub converted: u64,
}

impl Group {
    /// The conversion rate; `None` for an empty group.
    pub fn rate(&self) -> Option<f64> {
        (self.users > 0).then(|| self.converted as f64 / self.users as f64)
    }

    fn to_json(self) -> Value {
        json!({"users": self.users, "converted": self.converted, "rate": self.rate()})
    }
}

/// The report of one journey version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub journey: String,
    pub version: u32,
    pub entries: u64,
    /// Entries held out.
    pub holdout: u64,
    pub sends: Sends,
    pub treatment: Group,
    pub held_out: Group,
}

impl Row {
    fn new(journey: &str, version: u32) -> Row {
        Row {
            journey: journey.to_owned(),
            version,
            ..Row::default()
        }
    }

    /// Treatment rate minus holdout rate; `None` when a group is empty.
    pub fn uplift(&self) -> Option<f64> {
        Some(self.treatment.rate()? - self.held_out.rate()?)
    }

    /// The 95% interval of the uplift (Newcombe's hybrid score method);
    /// `None` when a group is empty.
    pub fn ci95(&self) -> Option<(f64, f64)> {
        interval::newcombe(
            self.treatment.converted,
            self.treatment.users,
            self.held_out.converted,
            self.held_out.users,
            interval::Z95,
        )
    }

    /// RUN.md §5's object; `null` where a group is empty.
    pub fn to_json(&self) -> Value {
        json!({
            "journey": self.journey,
            "version": self.version,
            "entries": self.entries,
            "holdout": self.holdout,
            "sends": {
                "sent": self.sends.sent,
                "deferred": self.sends.deferred,
                "suppressed": self.sends.suppressed,
                "failed": self.sends.failed,
            },
            "conversion": {
                "treatment": self.treatment.to_json(),
                "holdout": self.held_out.to_json(),
                "uplift": self.uplift(),
                "ci95": self.ci95().map(|(lo, hi)| [lo, hi]),
            },
        })
    }

    fn apply(&mut self, fact: Fact) {
        match fact {
            Fact::Entered { holdout, goal } => {
                self.entries += 1;
                let group = if holdout {
                    self.holdout += 1;
                    &mut self.held_out
                } else {
                    &mut self.treatment
                };
                if goal {
                    group.users += 1;
                }
            }
            Fact::Send { outcome } => {
                let n = match outcome {
                    SendOutcome::Sent => &mut self.sends.sent,
                    SendOutcome::Deferred => &mut self.sends.deferred,
                    SendOutcome::Suppressed => &mut self.sends.suppressed,
                    SendOutcome::Failed => &mut self.sends.failed,
                };
                *n += 1;
            }
            Fact::Converted { holdout, .. } => {
                if holdout {
                    self.held_out.converted += 1;
                } else {
                    self.treatment.converted += 1;
                }
            }
        }
    }
}

/// A report being read: feed it pages with [`Tally::step`], then
/// [`Tally::finish`].
#[derive(Debug)]
pub struct Tally {
    query: Query,
    rows: BTreeMap<(String, u32), Row>,
    cursor: Option<Cursor>,
    done: bool,
    /// Journal records read so far.
    pub records: u64,
    /// The time of the last record read.
    pub last_at: Option<Millis>,
}

impl Tally {
    pub fn new(query: Query) -> Tally {
        let cursor = query.since.map(journal::cursor_before);
        Tally {
            query,
            rows: BTreeMap::new(),
            cursor,
            done: false,
            records: 0,
            last_at: None,
        }
    }

    pub fn query(&self) -> &Query {
        &self.query
    }

    /// Reads the next page of up to `limit` records; `false` once the
    /// journal has been read to its end.
    pub fn step<J: Journal + ?Sized>(
        &mut self,
        journal: &J,
        limit: usize,
    ) -> Result<bool, StoreError> {
        if self.done {
            return Ok(false);
        }
        let page = journal.journal_page(self.cursor.as_deref(), limit)?;
        for (at, record) in page.records {
            // A page is keyed by its latest record: the first pages read
            // may hold earlier ones (`store::journal`).
            if self.query.since.is_some_and(|s| at < s) {
                continue;
            }
            self.records += 1;
            self.last_at = Some(self.last_at.map_or(at, |l| l.max(at)));
            if self
                .query
                .journey
                .as_ref()
                .is_some_and(|j| *j != record.journey)
            {
                continue;
            }
            if let Fact::Converted { entered_at, .. } = record.fact {
                // The entry it belongs to must be in the report too.
                if self.query.since.is_some_and(|s| entered_at < s) || entered_at > at {
                    continue;
                }
            }
            let row = self
                .rows
                .entry((record.journey, record.version))
                .or_insert_with_key(|(j, v)| Row::new(j, *v));
            row.apply(record.fact);
        }
        match page.next {
            Some(next) => {
                self.cursor = Some(next);
                Ok(true)
            }
            None => {
                self.done = true;
                Ok(false)
            }
        }
    }

    /// Reads to the end, calling `progress` after each page.
    pub fn run<J: Journal + ?Sized>(
        &mut self,
        journal: &J,
        progress: &mut dyn FnMut(&Tally),
    ) -> Result<(), Error> {
        while self.step(journal, PAGE)? {
            progress(self);
        }
        progress(self);
        Ok(())
    }

    /// The rows, by journey and version. A journey asked for by name that
    /// has no records gets an empty row for its deployed version; one that
    /// is neither in `config` nor in the journal is an error.
    pub fn finish(self, config: &Config) -> Result<Report, Error> {
        let mut rows: Vec<Row> = self.rows.into_values().collect();
        if let Some(j) = &self.query.journey {
            if rows.is_empty() {
                match config.journey(j) {
                    Some(journey) => rows.push(Row::new(j, journey.version)),
                    None => return Err(Error::UnknownJourney(j.clone())),
                }
            }
        }
        Ok(Report {
            rows,
            since: self.query.since,
        })
    }
}

/// A finished report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub rows: Vec<Row>,
    pub since: Option<Millis>,
}

impl Report {
    /// The `--format json` document: an array of RUN.md §5 objects, one per
    /// journey version.
    pub fn to_json(&self) -> Value {
        Value::Array(self.rows.iter().map(Row::to_json).collect())
    }

    /// `since` as printed.
    pub fn since_text(&self) -> Option<String> {
        self.since.map(format_ts)
    }
}

/// Reads a whole report from a journal.
pub fn report<J: Journal + ?Sized>(
    config: &Config,
    journal: &J,
    query: Query,
    progress: &mut dyn FnMut(&Tally),
) -> Result<Report, Error> {
    let mut tally = Tally::new(query);
    tally.run(journal, progress)?;
    tally.finish(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::journal::Record;
    use crate::store::{Batch, Entries, Kv};
    use std::collections::BTreeMap as Map;
    use std::sync::Mutex;

    /// An in-memory ordered store.
    #[derive(Default)]
    struct Memory(Mutex<Map<Vec<u8>, Vec<u8>>>);

    impl Kv for Memory {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.0.lock().expect("lock").get(key).cloned())
        }
        fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.get(key)
        }
        fn scan(
            &self,
            prefix: &[u8],
            after: Option<&[u8]>,
            before: Option<&[u8]>,
            limit: usize,
        ) -> Result<Entries, StoreError> {
            Ok(self
                .0
                .lock()
                .expect("lock")
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
                .filter(|(k, _)| before.is_none_or(|b| k.as_slice() < b))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        }
        fn apply(&self, mut batch: Batch) -> Result<(), StoreError> {
            batch.seal()?;
            let mut m = self.0.lock().expect("lock");
            for (k, v) in batch.ops {
                match v {
                    Some(v) => m.insert(k, v),
                    None => m.remove(&k),
                };
            }
            Ok(())
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn config() -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("journeys.yaml"),
            r#"
apiVersion: sluice/v1
kind: Journey
id: cart
version: 3
holdout: 10%
entry:
  event: cart_updated
goal: { event: purchase, within: 2d }
steps:
  - id: pause
    wait: 1h
"#,
        )
        .expect("write");
        journeys::load(dir.path()).expect("valid config")
    }

    /// Records a fact; every fourth ends a commit, so that the journal
    /// holds several pages (`store::journal`), some straddling the
    /// `since` of the tests.
    fn record(
        m: &Memory,
        b: &mut Batch,
        seq: &mut u64,
        at: Millis,
        journey: &str,
        version: u32,
        fact: Fact,
    ) {
        if (*seq).is_multiple_of(4) {
            m.apply(std::mem::take(b)).expect("apply");
        }
        *seq += 1;
        b.journal(
            at,
            *seq,
            &Record {
                journey: journey.into(),
                version,
                fact,
            },
        )
        .expect("encode");
    }

    /// 10 treated entries of which 4 convert, 5 held out of which 1
    /// converts; one conversion belongs to an entry before `since`.
    fn sample() -> Memory {
        let m = Memory::default();
        let mut b = Batch::default();
        let mut seq = 0;
        let entered = |holdout| Fact::Entered {
            holdout,
            goal: true,
        };
        record(&m, &mut b, &mut seq, 50, "cart", 2, entered(false));
        for i in 0..10 {
            record(&m, &mut b, &mut seq, 100 + i, "cart", 3, entered(false));
        }
        for i in 0..5 {
            record(&m, &mut b, &mut seq, 200 + i, "cart", 3, entered(true));
        }
        for (at, outcome) in [
            (300, SendOutcome::Sent),
            (301, SendOutcome::Sent),
            (302, SendOutcome::Deferred),
            (303, SendOutcome::Suppressed),
            (304, SendOutcome::Failed),
        ] {
            record(&m, &mut b, &mut seq, at, "cart", 3, Fact::Send { outcome });
        }
        for i in 0..4 {
            let fact = Fact::Converted {
                holdout: false,
                entered_at: 100 + i,
            };
            record(&m, &mut b, &mut seq, 400 + i, "cart", 3, fact);
        }
        let fact = Fact::Converted {
            holdout: true,
            entered_at: 200,
        };
        record(&m, &mut b, &mut seq, 410, "cart", 3, fact);
        let fact = Fact::Converted {
            holdout: false,
            entered_at: 50,
        };
        record(&m, &mut b, &mut seq, 420, "cart", 2, fact);
        record(&m, &mut b, &mut seq, 500, "other", 1, entered(false));
        m.apply(b).expect("apply");
        m
    }

    #[test]
    fn counts_by_journey_and_version() {
        let m = sample();
        let mut pages = 0;
        let mut tally = Tally::new(Query::default());
        // Small pages: the result does not depend on the page size.
        while tally.step(&m, 3).expect("read") {
            pages += 1;
        }
        assert!(pages > 5);
        assert_eq!(tally.records, 28);
        let r = tally.finish(&config()).expect("report");
        assert_eq!(r.rows.len(), 3);
        let v3 = &r.rows[1];
        assert_eq!((v3.journey.as_str(), v3.version), ("cart", 3));
        assert_eq!((v3.entries, v3.holdout), (15, 5));
        assert_eq!(
            v3.sends,
            Sends {
                sent: 2,
                deferred: 1,
                suppressed: 1,
                failed: 1
            }
        );
        assert_eq!(
            v3.treatment,
            Group {
                users: 10,
                converted: 4
            }
        );
        assert_eq!(
            v3.held_out,
            Group {
                users: 5,
                converted: 1
            }
        );
        let uplift = v3.uplift().expect("both groups");
        assert!((uplift - 0.2).abs() < 1e-12);
        // By hand (Wilson 4/10: 0.1682–0.6873; 1/5: 0.0362–0.6245):
        // 0.2 − √(0.2318² + 0.4245²) = −0.2837,
        // 0.2 + √(0.2873² + 0.1638²) = 0.5307.
        let (lo, hi) = v3.ci95().expect("both groups");
        assert!((lo + 0.2837).abs() < 1e-3, "{lo}");
        assert!((hi - 0.5307).abs() < 1e-3, "{hi}");
        // Version 2: one treated entry that converted, no holdout.
        let v2 = &r.rows[0];
        assert_eq!(
            (v2.version, v2.treatment.converted, v2.held_out.users),
            (2, 1, 0)
        );
        let j = v2.to_json();
        assert_eq!(j["conversion"]["holdout"]["rate"], Value::Null);
        assert_eq!(j["conversion"]["uplift"], Value::Null);
        assert_eq!(j["conversion"]["ci95"], Value::Null);
        assert_eq!(j["conversion"]["treatment"]["rate"], 1.0);
    }

    #[test]
    fn since_keeps_later_entries_and_their_conversions() {
        let m = sample();
        let q = Query {
            journey: Some("cart".into()),
            since: Some(100),
        };
        let r = report(&config(), &m, q, &mut |_| {}).expect("report");
        // Version 2's entry (at 50) is out, and so is its conversion at 420.
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].version, 3);
        let q = Query {
            journey: Some("cart".into()),
            since: Some(150),
        };
        let r = report(&config(), &m, q, &mut |_| {}).expect("report");
        let v3 = &r.rows[0];
        assert_eq!((v3.entries, v3.holdout), (5, 5));
        assert_eq!(v3.treatment, Group::default());
        assert_eq!(v3.held_out.converted, 1);
        assert_eq!(v3.uplift(), None);
    }

    #[test]
    fn empty_journal_and_unknown_journeys() {
        let m = Memory::default();
        let r = report(&config(), &m, Query::default(), &mut |_| {}).expect("report");
        assert!(r.rows.is_empty());
        assert_eq!(r.to_json(), json!([]));
        let q = Query {
            journey: Some("cart".into()),
            since: None,
        };
        let r = report(&config(), &m, q, &mut |_| {}).expect("known journey");
        assert_eq!(r.rows, vec![Row::new("cart", 3)]);
        let j = r.to_json();
        assert_eq!(j[0]["entries"], 0);
        assert_eq!(j[0]["conversion"]["treatment"]["rate"], Value::Null);
        let q = Query {
            journey: Some("nope".into()),
            since: None,
        };
        assert!(matches!(
            report(&config(), &m, q, &mut |_| {}),
            Err(Error::UnknownJourney(j)) if j == "nope"
        ));
        // A journey gone from the config but recorded is reported.
        let q = Query {
            journey: Some("other".into()),
            since: None,
        };
        let r = report(&config(), &sample(), q, &mut |_| {}).expect("recorded");
        assert_eq!(r.rows[0].entries, 1);
    }

    #[test]
    fn json_has_the_run_md_shape() {
        let mut row = Row::new("cart", 3);
        row.entries = 3;
        row.holdout = 1;
        row.treatment = Group {
            users: 2,
            converted: 1,
        };
        row.held_out = Group {
            users: 1,
            converted: 0,
        };
        let text = row.to_json().to_string();
        assert!(
            text.starts_with(
                r#"{"journey":"cart","version":3,"entries":3,"holdout":1,"sends":{"sent":0,"deferred":0,"suppressed":0,"failed":0},"conversion":{"treatment":{"users":2,"converted":1,"rate":0.5},"holdout":{"users":1,"converted":0,"rate":0.0},"uplift":0.5,"ci95":["#
            ),
            "{text}"
        );
    }
}
