//! Per-step counters: key = `c` + journey + `\0` + version (big-endian) +
//! step id, value = [`Counts`]: how many live instances stand on the step,
//! and how many `send` decisions it made by outcome (sent, deferred,
//! suppressed, failed). The console draws them on each journey.
//!
//! The counters are kept in memory by the engine shell ([`Tally`]) and
//! written with the commit that holds the state change they count, so they
//! are exactly as durable as the user records: after a crash both come back
//! from the same commit. A stamp in the meta table (the sequence number of
//! the last commit that wrote them) tells whether the counters belong to
//! the store: a store written by a sluice without counters (or by an older
//! one after a newer one) has no stamp or a stale one, and the counters are
//! rebuilt on open by a scan ([`rebuild`]) of every user record (live
//! instances) and of the message log by user (sends).
//!
//! Sends count the decisions in the message log. Erasing a user takes their
//! live instances out; their sends stay counted (the counters are
//! anonymous, as RUN.md's erasure keeps them): they move to a second set of
//! counters, key `C` + the same, that a rebuild adds to what the message
//! log still holds, so a rebuild always finds the same numbers.
//!
//! Knows nothing of the machine's rules: the shell says what moved.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::output::Outcome;

use super::users::{self, UserRecord};
use super::{codec, Batch, Error, Kv};

const PREFIX: u8 = b'c';
/// Sends of erased users, by step.
const ERASED: u8 = b'C';
/// Meta name of the stamp: the sequence number the counters were last
/// written with.
pub const STAMP: &str = "tally";

/// One step of one version of one journey.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepKey {
    pub journey: String,
    pub version: u32,
    pub step: String,
}

impl StepKey {
    pub fn new(journey: &str, version: u32, step: &str) -> StepKey {
        StepKey {
            journey: journey.to_owned(),
            version,
            step: step.to_owned(),
        }
    }

    fn encode(&self, prefix: u8) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.journey.len() + self.step.len() + 6);
        k.push(prefix);
        k.extend_from_slice(self.journey.as_bytes());
        k.push(0);
        k.extend_from_slice(&self.version.to_be_bytes());
        k.extend_from_slice(self.step.as_bytes());
        k
    }

    fn decode(key: &[u8]) -> Option<StepKey> {
        let rest = key.get(1..)?;
        let nul = rest.iter().position(|&b| b == 0)?;
        let journey = std::str::from_utf8(&rest[..nul]).ok()?.to_owned();
        let v: [u8; 4] = rest.get(nul + 1..nul + 5)?.try_into().ok()?;
        let step = std::str::from_utf8(rest.get(nul + 5..)?).ok()?.to_owned();
        Some(StepKey {
            journey,
            version: u32::from_be_bytes(v),
            step,
        })
    }
}

/// The counters of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Live instances standing on the step now.
    pub live: u64,
    pub sent: u64,
    pub deferred: u64,
    pub suppressed: u64,
    pub failed: u64,
}

impl Counts {
    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }

    fn outcome(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::Sent => &mut self.sent,
            Outcome::Deferred => &mut self.deferred,
            Outcome::Suppressed => &mut self.suppressed,
            Outcome::Failed => &mut self.failed,
        }
    }
}

/// Where a live instance stands: what [`Tally::moved`] compares.
pub type Position = (String, u32, String);

/// The positions of a user's live instances.
pub fn positions(rec: &UserRecord) -> Vec<Position> {
    let mut out = Vec::new();
    positions_into(rec, &mut out);
    out
}

/// [`positions`] into `out`, reusing its strings (the engine takes this
/// snapshot before every transition: allocating it each time was a tenth
/// of all allocations).
pub fn positions_into(rec: &UserRecord, out: &mut Vec<Position>) {
    out.truncate(rec.instances.len());
    for (i, inst) in rec.instances.iter().enumerate() {
        match out.get_mut(i) {
            Some((journey, version, step)) => {
                journey.clone_from(&inst.journey);
                *version = inst.version;
                step.clone_from(&inst.step);
            }
            None => out.push((inst.journey.clone(), inst.version, inst.step.clone())),
        }
    }
}

/// A [`StepKey`] seen through borrowed parts, so that the counters are
/// looked up without allocating a key. Orders exactly as `StepKey`'s
/// derived order (journey, version, step).
trait StepRef {
    fn parts(&self) -> (&str, u32, &str);
}

impl StepRef for StepKey {
    fn parts(&self) -> (&str, u32, &str) {
        (&self.journey, self.version, &self.step)
    }
}

impl StepRef for (&str, u32, &str) {
    fn parts(&self) -> (&str, u32, &str) {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn StepRef + 'a> for StepKey {
    fn borrow(&self) -> &(dyn StepRef + 'a) {
        self
    }
}

impl PartialEq for dyn StepRef + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn StepRef + '_ {}

impl PartialOrd for dyn StepRef + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn StepRef + '_ {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// The counters in memory, with the keys changed since they were last
/// written.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    counts: BTreeMap<StepKey, Counts>,
    dirty: BTreeSet<StepKey>,
    /// Sends of erased users (in `counts` too).
    erased: BTreeMap<StepKey, Counts>,
    erased_dirty: BTreeSet<StepKey>,
    /// Bumped by every change (for publishing a snapshot only when needed).
    generation: u64,
}

impl Tally {
    /// Every counter, in key order.
    pub fn counts(&self) -> &BTreeMap<StepKey, Counts> {
        &self.counts
    }

    /// Changes so far (any change bumps it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Changes the counters of one step, marking them for the next flush.
    fn update(&mut self, journey: &str, version: u32, step: &str, f: impl FnOnce(&mut Counts)) {
        self.generation += 1;
        let probe = (journey, version, step);
        let probe: &dyn StepRef = &probe;
        if !self.dirty.contains(probe) {
            self.dirty.insert(StepKey::new(journey, version, step));
        }
        match self.counts.get_mut(probe) {
            Some(c) => f(c),
            None => f(self
                .counts
                .entry(StepKey::new(journey, version, step))
                .or_default()),
        }
    }

    fn live(&mut self, (journey, version, step): &Position, up: bool) {
        self.update(journey, *version, step, |c| {
            if up {
                c.live += 1;
            } else if c.live == 0 {
                // A bug, not a user's doing: say so, and keep counting.
                tracing::warn!(
                    journey = %journey,
                    version = *version,
                    step = %step,
                    "tally: a live instance left a step that counted none"
                );
            } else {
                c.live -= 1;
            }
        });
    }

    /// A user's live instances moved from `before` to `after` (positions
    /// in instance order): each one that is not in both lists leaves or
    /// joins its step.
    pub fn moved(&mut self, before: &[Position], after: &[Position]) {
        if before == after {
            return;
        }
        let mut rest: Vec<&Position> = after.iter().collect();
        for b in before {
            match rest.iter().position(|a| *a == b) {
                Some(i) => {
                    rest.swap_remove(i);
                }
                None => self.live(b, false),
            }
        }
        for a in rest {
            self.live(a, true);
        }
    }

    /// A `send` decision at a step (as logged).
    pub fn send(&mut self, journey: &str, version: u32, step: &str, outcome: Outcome) {
        self.update(journey, version, step, |c| *c.outcome(outcome) += 1);
    }

    /// Counts a logged message (a `send` line as JSON). Lines without an
    /// outcome or a step are not sends at a step.
    pub fn logged(&mut self, line: &serde_json::Value) {
        if let Some((journey, version, step, outcome)) = logged_send(line) {
            self.send(journey, version, step, outcome);
        }
    }

    /// A logged message whose user is erased: it stays counted, among the
    /// erased users' sends (the log line goes).
    pub fn erased(&mut self, line: &serde_json::Value) {
        if let Some((journey, version, step, outcome)) = logged_send(line) {
            let key = StepKey::new(journey, version, step);
            self.generation += 1;
            self.erased_dirty.insert(key.clone());
            *self.erased.entry(key).or_default().outcome(outcome) += 1;
        }
    }

    /// Writes the changed counters into `batch` (a counter back at zero is
    /// deleted).
    pub fn flush(&mut self, batch: &mut Batch) -> Result<(), Error> {
        for key in std::mem::take(&mut self.dirty) {
            match self.counts.get(&key) {
                Some(c) if !c.is_zero() => {
                    batch.put(key.encode(PREFIX), codec::encode("tally", c)?)
                }
                _ => {
                    self.counts.remove(&key);
                    batch.delete(key.encode(PREFIX));
                }
            }
        }
        for key in std::mem::take(&mut self.erased_dirty) {
            if let Some(c) = self.erased.get(&key) {
                batch.put(key.encode(ERASED), codec::encode("tally", c)?);
            }
        }
        Ok(())
    }

    /// Whether counters wait to be written.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.erased_dirty.is_empty()
    }

    /// Reads the stored counters.
    pub fn load<K: Kv + ?Sized>(kv: &K) -> Result<Tally, Error> {
        Ok(Tally {
            counts: read(kv, PREFIX)?,
            erased: read(kv, ERASED)?,
            ..Tally::default()
        })
    }
}

/// The counters stored under `prefix`.
fn read<K: Kv + ?Sized>(kv: &K, prefix: u8) -> Result<BTreeMap<StepKey, Counts>, Error> {
    let mut out = BTreeMap::new();
    for (k, v) in kv.scan(&[prefix], None, None, usize::MAX)? {
        let key = StepKey::decode(&k).ok_or_else(|| Error::Decode {
            what: "tally key",
            message: format!(
                "{:?} is not journey\\0version step",
                String::from_utf8_lossy(&k)
            ),
        })?;
        out.insert(key, codec::decode("tally", &v)?);
    }
    Ok(out)
}

/// The field that marks a logged line as a replayed dead letter's
/// delivery (`engine::outbox`): the message was counted when it was
/// decided and when it failed; its delivery on replay is not a decision.
pub const REPLAYED_MARK: &str = "replayed";

/// The journey, version, step and outcome of a logged `send` line (a
/// replayed delivery's line is none).
fn logged_send(line: &serde_json::Value) -> Option<(&str, u32, &str, Outcome)> {
    if line.get(REPLAYED_MARK).and_then(serde_json::Value::as_bool) == Some(true) {
        return None;
    }
    let outcome = match line.get("outcome")?.as_str()? {
        "sent" => Outcome::Sent,
        "deferred" => Outcome::Deferred,
        "suppressed" => Outcome::Suppressed,
        "failed" => Outcome::Failed,
        _ => return None,
    };
    let journey = line.get("journey")?.as_str()?;
    let version = u32::try_from(line.get("version")?.as_u64()?).ok()?;
    let step = line.get("step")?.as_str()?;
    Some((journey, version, step, outcome))
}

/// Counts what the store holds, from scratch: every user record's live
/// instances, every logged message by user, and the stored sends of erased
/// users. The result replaces the stored counters entirely (stale keys are
/// deleted at the next flush).
pub fn rebuild<K: Kv + ?Sized>(kv: &K) -> Result<Tally, Error> {
    let mut t = Tally {
        erased: read(kv, ERASED)?,
        ..Tally::default()
    };
    for (key, c) in &t.erased {
        let total = t.counts.entry(key.clone()).or_default();
        total.sent += c.sent;
        total.deferred += c.deferred;
        total.suppressed += c.suppressed;
        total.failed += c.failed;
    }
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = kv.scan(&[users::PREFIX], after.as_deref(), None, 1_000)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (k, _) in &page {
            let Some(bytes) = kv.get_blob(k)? else {
                continue;
            };
            let rec = UserRecord::decode(&bytes)?;
            for p in positions(&rec) {
                t.live(&p, true);
            }
        }
    }
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = kv.scan(&[super::messages::BY_USER], after.as_deref(), None, 4_096)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (_, v) in &page {
            let line: serde_json::Value = serde_json::from_slice(v).map_err(|e| Error::Decode {
                what: "message",
                message: e.to_string(),
            })?;
            t.logged(&line);
        }
    }
    // Stale stored counters are deleted at the next flush.
    for (k, _) in kv.scan(&[PREFIX], None, None, usize::MAX)? {
        if let Some(key) = StepKey::decode(&k) {
            t.dirty.insert(key);
        }
    }
    t.dirty.extend(t.counts.keys().cloned());
    Ok(t)
}

/// Reads of the tally table.
pub trait Tallies {
    /// The stored counters (as of the last commit).
    fn tallies(&self) -> Result<BTreeMap<StepKey, Counts>, Error>;
}

impl<T: Kv + ?Sized> Tallies for T {
    fn tallies(&self) -> Result<BTreeMap<StepKey, Counts>, Error> {
        Ok(Tally::load(self)?.counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(j: &str, v: u32, s: &str) -> Position {
        (j.to_owned(), v, s.to_owned())
    }

    #[test]
    fn keys_round_trip() {
        let k = StepKey::new("cart-abandonment", 3, "wait-1h");
        assert_eq!(StepKey::decode(&k.encode(PREFIX)), Some(k));
        assert_eq!(StepKey::decode(b"cx"), None);
    }

    #[test]
    fn moves_count_only_what_changed() {
        let mut t = Tally::default();
        t.moved(&[], &[p("a", 1, "s1"), p("b", 1, "w")]);
        t.moved(
            &[p("a", 1, "s1"), p("b", 1, "w")],
            &[p("b", 1, "w"), p("a", 1, "s2")],
        );
        let live = |j: &str, s: &str| t.counts().get(&StepKey::new(j, 1, s)).map_or(0, |c| c.live);
        assert_eq!(
            (live("a", "s1"), live("a", "s2"), live("b", "w")),
            (0, 1, 1)
        );
        t.moved(&[p("b", 1, "w"), p("a", 1, "s2")], &[]);
        let live = |j: &str, s: &str| t.counts().get(&StepKey::new(j, 1, s)).map_or(0, |c| c.live);
        assert_eq!((live("a", "s2"), live("b", "w")), (0, 0));
    }

    #[test]
    fn zero_counters_are_deleted_when_flushed() {
        let mut t = Tally::default();
        t.moved(&[], &[p("a", 1, "s1")]);
        let mut b = Batch::default();
        t.flush(&mut b).unwrap();
        assert_eq!(b.ops.values().filter(|v| v.is_some()).count(), 1);
        t.moved(&[p("a", 1, "s1")], &[]);
        let mut b = Batch::default();
        t.flush(&mut b).unwrap();
        assert_eq!(b.ops.values().filter(|v| v.is_none()).count(), 1);
        assert!(t.counts().is_empty());
    }

    #[test]
    fn logged_sends_count_by_outcome_and_stay_counted_when_erased() {
        let mut t = Tally::default();
        let line = serde_json::json!({"kind":"send","journey":"j","version":2,"step":"s","outcome":"deferred"});
        t.logged(&line);
        t.logged(&line);
        t.erased(&line);
        let c = t.counts()[&StepKey::new("j", 2, "s")];
        assert_eq!((c.deferred, c.sent), (2, 0));
        let mut b = Batch::default();
        t.flush(&mut b).unwrap();
        assert!(b
            .ops
            .contains_key(&StepKey::new("j", 2, "s").encode(ERASED)));
        // Not a send at a step: ignored.
        t.logged(&serde_json::json!({"kind":"send","journey":"j"}));
        assert_eq!(t.counts().len(), 1);
    }
}
