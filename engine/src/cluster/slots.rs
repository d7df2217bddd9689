//! Cluster-wide throttles: FORMAT.md §8's strict bound (no half-open
//! window of the rate's length holds more than `count` slots of a
//! throttle) across every worker, with slots handed out in batches from a
//! KV key by compare-and-set. This module owns the shared record, the
//! batches and a worker's local reservoir, served to the engine through
//! [`crate::policy::ledger::Ledger`]; it knows nothing of messages.
//!
//! # The record and the rule
//!
//! Each throttle has one key in the `tokens` bucket (`<hex id>`) holding the
//! starts of the last `count` slots reserved cluster-wide, ascending. A
//! worker reserves a batch of `k` slots by reading the record, appending
//! `k` starts, each `a = max(from, last, starts[len - count] + per + slack)`,
//! and writing it back with the revision it read (compare-and-set; a lost
//! race reads again). So every slot ever reserved, over all workers, forms
//! one sequence in the order of the successful writes, non-decreasing, in
//! which `a[j] >= a[j - count] + per + slack`.
//!
//! A slot is an interval `[a, a + slack)`: the worker that holds it may
//! spend it at any one instant inside (the engine's message goes, or is
//! deferred to go, at that instant), never later (a slot whose interval is
//! over is dropped unspent: wasted). Bound: take any `count + 1` spent
//! slots, lowest index `i`, highest `j >= i + count`; they were spent at
//! `t[i] < a[i] + slack` and `t[j] >= a[j] >= a[i] + slack + per`, so
//! `t[j] - t[i] > per` and no window `[t, t + per)` holds all of them. Only
//! the last `count` starts are read by the rule, so the record stays
//! bounded. A worker that dies wastes at most its unspent batch; nothing
//! it held can be spent by anyone else, and nothing beyond the bound was
//! ever reserved. No clock agreement is needed for the bound in slot
//! instants: every start is computed from the record and `from`.
//!
//! The price of batching without a round trip per message: a throttle
//! that is saturated cluster-wide gives `count` slots per `per + slack`
//! instead of per `per` (`slack` is a tenth of `per`, at most one second:
//! 1.6% for a per-minute rate, 9% for a per-second one), and a throttled
//! message goes at the start of a reserved slot, which lies at least
//! `lead` in the future when the batch is reserved (the batch must still be
//! usable when it arrives), so it is deferred until then (reason
//! `throttle:<id>`) unless a slot is open at the moment it is decided.
//! Oldest-first order holds within one worker's share, not across workers.
//!
//! # The engine's side
//!
//! [`Reservoir`] is what the engine's (synchronous) writer thread reads: a
//! [`ClusterLedger`] answers from the slots it holds, and when it holds
//! none usable it answers [`Slot::Wait`] (the message is deferred a moment)
//! and wakes its refill task, which reserves the next batch on the tokio
//! side ([`refill`]). It also asks for a batch ahead, when fewer than half
//! a batch is left. Unspent slots are not saved with the store (the
//! ledger lives in NATS): a restarted worker wastes them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::{decode, encode, Cluster, Error};
use crate::clock::Clock;
use crate::policy::ledger::{Ledger, LedgerFactory, Slot};

/// How often a reservation retries a compare-and-set lost to another
/// worker.
const MAX_ATTEMPTS: usize = 64;

/// A throttle's rate as the cluster reserves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: usize,
    pub per: TimeDelta,
    /// How long a reserved slot stays spendable after its start.
    pub slack: TimeDelta,
}

impl Rate {
    /// `count` per `per`, with the default slack: a tenth of `per`, at
    /// most one second, at least a millisecond.
    pub fn new(count: usize, per: TimeDelta) -> Rate {
        // Whole milliseconds, as the record keeps them.
        let slack = TimeDelta::milliseconds((per.num_milliseconds() / 10).clamp(1, 1_000));
        Rate {
            count: count.max(1),
            per,
            slack,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// Starts (Unix milliseconds) of the last `count` slots reserved,
    /// ascending.
    starts: Vec<i64>,
}

fn key(throttle: &str) -> String {
    hex::encode(throttle)
}

fn millis(t: DateTime<Utc>) -> i64 {
    // Round up: a start is never before the instant asked for.
    let ms = t.timestamp_millis();
    if t.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms
    } else {
        ms.saturating_add(1)
    }
}

fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Appends `k` starts at or after `from` to `starts` by the rule (see the
/// module doc) and keeps the last `count`; returns the new starts.
fn extend(starts: &mut Vec<i64>, rate: Rate, from: i64, k: usize) -> Vec<i64> {
    let gap = rate
        .per
        .num_milliseconds()
        .saturating_add(rate.slack.num_milliseconds());
    let mut new = Vec::with_capacity(k);
    for _ in 0..k {
        let mut a = from;
        if let Some(&last) = starts.last() {
            a = a.max(last);
        }
        if starts.len() >= rate.count {
            a = a.max(starts[starts.len() - rate.count].saturating_add(gap));
        }
        starts.push(a);
        new.push(a);
    }
    let skip = starts.len().saturating_sub(rate.count);
    starts.drain(..skip);
    new
}

/// Reserves `k` slots of `throttle` starting at or after `from`,
/// cluster-wide; returns their starts, ascending (each spendable until
/// `start + rate.slack`, exclusive).
pub async fn reserve(
    cluster: &Cluster,
    throttle: &str,
    rate: Rate,
    from: DateTime<Utc>,
    k: usize,
) -> Result<Vec<DateTime<Utc>>, Error> {
    let kv = cluster.bucket("tokens").await?;
    let key = key(throttle);
    for _ in 0..MAX_ATTEMPTS {
        let entry = kv
            .entry(key.as_str())
            .await
            .map_err(|e| Error::nats("read a throttle's slots", e))?;
        let (mut record, revision) = match entry {
            Some(entry) if entry.operation == Operation::Put => {
                (decode::<Record>(&key, &entry.value)?, Some(entry.revision))
            }
            _ => (Record::default(), None),
        };
        let new = extend(&mut record.starts, rate, millis(from), k);
        let value = encode(&record);
        let won = match revision {
            Some(revision) => match kv.update(key.as_str(), value, revision).await {
                Ok(_) => true,
                // Another worker's reservation won (NATS error 10071, or 10164
                // on a replicated bucket: `lease::wrong_revision`): read again.
                Err(e)
                    if e.kind() == UpdateErrorKind::WrongLastRevision
                        || super::lease::wrong_revision(&e) =>
                {
                    false
                }
                Err(e) => return Err(Error::nats("reserve throttle slots", e)),
            },
            None => match kv.create(key.as_str(), value).await {
                Ok(_) => true,
                Err(e)
                    if e.kind() == CreateErrorKind::AlreadyExists
                        || super::lease::wrong_revision(&e) =>
                {
                    false
                }
                // A create racing another's can also fail as "wrong last
                // sequence": read again.
                Err(e) if e.kind() == CreateErrorKind::Other => {
                    let now = kv.entry(key.as_str()).await.ok().flatten();
                    if now.is_some_and(|e| e.operation == Operation::Put) {
                        false
                    } else {
                        return Err(Error::nats("reserve throttle slots", e));
                    }
                }
                Err(e) => return Err(Error::nats("reserve throttle slots", e)),
            },
        };
        if won {
            return Ok(new.into_iter().map(instant).collect());
        }
    }
    Err(Error::nats(
        "reserve throttle slots",
        std::io::Error::other(format!(
            "{MAX_ATTEMPTS} compare-and-set attempts lost to other workers"
        )),
    ))
}

/// A worker's slots of one throttle, shared by the engine's ledger and the
/// refill task.
#[derive(Debug, Default)]
pub struct Reservoir {
    state: Mutex<Held>,
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Held {
    /// Starts of the slots held, ascending.
    starts: VecDeque<DateTime<Utc>>,
    /// Slots dropped unspent (their interval ended).
    wasted: u64,
    /// Slots spent.
    spent: u64,
}

impl Reservoir {
    fn held(&self) -> MutexGuard<'_, Held> {
        // The lock guards plain data left consistent at every step.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the refill task for a batch (kept if it is busy).
    pub fn ask(&self) {
        self.wake.notify_one();
    }

    /// Slots held now.
    pub fn len(&self) -> usize {
        self.held().starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots dropped unspent so far (what a stall or a surplus wasted).
    pub fn wasted(&self) -> u64 {
        self.held().wasted
    }

    /// Slots spent so far.
    pub fn spent(&self) -> u64 {
        self.held().spent
    }

    /// The last start held (a refill reserves after it).
    fn last(&self) -> Option<DateTime<Utc>> {
        self.held().starts.back().copied()
    }

    fn push(&self, starts: Vec<DateTime<Utc>>) {
        let mut held = self.held();
        for s in starts {
            debug_assert!(held.starts.back().is_none_or(|&b| b <= s));
            held.starts.push_back(s);
        }
    }
}

/// Keeps `reservoir` supplied: each time it is asked (and once at start),
/// reserves `batch` slots of `throttle` starting at least `lead` after
/// `clock`'s now (the engine's clock). Runs until the task is aborted; a
/// failed reservation is logged and retried after `lead`.
pub async fn refill(
    cluster: Cluster,
    throttle: String,
    rate: Rate,
    shares: Shares,
    clock: Arc<dyn Clock>,
    reservoir: Arc<Reservoir>,
) {
    let Shares { batch, lead } = shares;
    let lead_delta = TimeDelta::from_std(lead).unwrap_or(TimeDelta::MAX);
    loop {
        reservoir.wake.notified().await;
        let mut from = clock
            .now()
            .checked_add_signed(lead_delta)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if let Some(last) = reservoir.last() {
            from = from.max(last);
        }
        match reserve(&cluster, &throttle, rate, from, batch.max(1)).await {
            Ok(starts) => reservoir.push(starts),
            Err(e) => {
                tracing::warn!(throttle = %throttle, error = %e, "cannot reserve throttle slots");
                tokio::time::sleep(lead).await;
                reservoir.ask();
            }
        }
    }
}

/// One throttle's ledger on a worker of the cluster (see the module doc).
#[derive(Debug)]
pub struct ClusterLedger {
    reservoir: Arc<Reservoir>,
    slack: TimeDelta,
    batch: usize,
    /// How long a message waits when no slot is held.
    retry: TimeDelta,
}

impl ClusterLedger {
    pub fn new(reservoir: Arc<Reservoir>, rate: Rate, batch: usize, retry: Duration) -> Self {
        ClusterLedger {
            reservoir,
            slack: rate.slack,
            batch: batch.max(1),
            retry: TimeDelta::from_std(retry).unwrap_or(TimeDelta::MAX),
        }
    }

    fn end(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        start
            .checked_add_signed(self.slack)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

impl Ledger for ClusterLedger {
    fn prune(&mut self, now: DateTime<Utc>) {
        let mut held = self.reservoir.held();
        while held.starts.front().is_some_and(|&a| self.end(a) <= now) {
            held.starts.pop_front();
            held.wasted += 1;
        }
    }

    fn earliest(&mut self, at: DateTime<Utc>, now: DateTime<Utc>) -> Slot {
        let (found, left) = {
            let held = self.reservoir.held();
            let found = held
                .starts
                .iter()
                .position(|&a| self.end(a) > at)
                .map(|i| (held.starts[i].max(at), held.starts.len() - i));
            (found.map(|f| f.0), found.map_or(0, |f| f.1))
        };
        if left < self.batch.div_ceil(2) {
            self.reservoir.ask();
        }
        match found {
            Some(t) => Slot::At(t),
            None => Slot::Wait(now.checked_add_signed(self.retry).unwrap_or(now)),
        }
    }

    fn grant(&mut self, at: DateTime<Utc>) {
        let mut held = self.reservoir.held();
        if let Some(i) = held
            .starts
            .iter()
            .position(|&a| a <= at && at < self.end(a))
        {
            held.starts.remove(i);
            held.spent += 1;
        }
    }

    fn snapshot(&self) -> Vec<DateTime<Utc>> {
        Vec::new()
    }

    fn restore(&mut self, _slots: Vec<DateTime<Utc>>) {}
}

/// How a worker's throttles take their share of the cluster's slots.
#[derive(Debug, Clone)]
pub struct Shares {
    /// Slots reserved per compare-and-set.
    pub batch: usize,
    /// How far ahead of now a batch starts (more than a reservation's
    /// round trip, so the slots are still open when they arrive).
    pub lead: Duration,
}

impl Default for Shares {
    fn default() -> Self {
        Shares {
            batch: 16,
            lead: Duration::from_millis(100),
        }
    }
}

/// A ledger factory for `Policies::with_ledgers` on a worker: each
/// throttle gets a [`ClusterLedger`] and a [`refill`] task spawned on
/// `runtime`, reading `clock` (the engine's). The tasks run until the runtime shuts down (or the caller
/// aborts the handles pushed into `tasks`).
pub fn ledgers<'a>(
    cluster: Cluster,
    runtime: tokio::runtime::Handle,
    shares: Shares,
    clock: Arc<dyn Clock>,
    tasks: &'a mut Vec<tokio::task::JoinHandle<()>>,
) -> Box<LedgerFactory<'a>> {
    Box::new(move |id: &str, count: usize, per: TimeDelta| {
        let rate = Rate::new(count, per);
        let reservoir = Arc::new(Reservoir::default());
        reservoir.ask();
        tasks.push(runtime.spawn(refill(
            cluster.clone(),
            id.to_string(),
            rate,
            shares.clone(),
            clock.clone(),
            reservoir.clone(),
        )));
        Box::new(ClusterLedger::new(
            reservoir,
            rate,
            shares.batch,
            shares.lead,
        )) as Box<dyn Ledger>
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule alone, as several workers' batches interleave: any
    /// `count + 1` consecutive starts span more than `per + slack`.
    #[test]
    fn batches_appended_in_any_interleaving_keep_the_gap() {
        let rate = Rate::new(3, TimeDelta::seconds(10));
        assert_eq!(rate.slack, TimeDelta::seconds(1));
        let mut record = Vec::new();
        let mut all = Vec::new();
        for (from, k) in [(0, 2), (500, 4), (100, 1), (30_000, 5), (30_001, 2)] {
            all.extend(extend(&mut record, rate, from, k));
            assert!(record.len() <= rate.count);
        }
        assert_eq!(all.len(), 14);
        for w in all.windows(rate.count + 1) {
            assert!(w[rate.count] - w[0] >= 11_000, "{w:?}");
        }
        assert!(all.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(&all[..4], &[0, 0, 500, 11_000]);
    }

    #[test]
    fn starts_are_never_before_the_instant_asked() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.0005Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(instant(millis(t)) >= t);
        let exact = DateTime::from_timestamp_millis(1_000).unwrap();
        assert_eq!(millis(exact), 1_000);
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn the_ledger_spends_inside_a_slot_drops_ended_ones_and_waits_when_empty() {
        let rate = Rate::new(2, TimeDelta::seconds(10));
        let reservoir = Arc::new(Reservoir::default());
        let mut ledger = ClusterLedger::new(reservoir.clone(), rate, 4, Duration::from_millis(50));
        assert_eq!(ledger.earliest(at(0), at(0)), Slot::Wait(at(50)));
        reservoir.push(vec![at(100), at(100), at(11_100), at(11_100)]);
        // Before a slot: deferred to its start; inside: at once.
        assert_eq!(ledger.earliest(at(0), at(0)), Slot::At(at(100)));
        assert_eq!(ledger.earliest(at(500), at(500)), Slot::At(at(500)));
        ledger.grant(at(500));
        assert_eq!((reservoir.len(), reservoir.spent()), (3, 1));
        // The second slot at 100 ends at 1100: dropped at 1100, unspent.
        ledger.prune(at(1_100));
        assert_eq!((reservoir.len(), reservoir.wasted()), (2, 1));
        assert_eq!(ledger.earliest(at(1_100), at(1_100)), Slot::At(at(11_100)));
        ledger.grant(at(11_100));
        ledger.grant(at(11_100));
        assert!(reservoir.is_empty());
        assert_eq!(
            ledger.earliest(at(11_100), at(11_100)),
            Slot::Wait(at(11_150))
        );
        assert!(ledger.snapshot().is_empty());
    }
}
