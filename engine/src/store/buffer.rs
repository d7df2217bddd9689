//! The write-back layer between the engine and a [`Store`]: a bounded cache
//! of hot users and the pending writes of the current batch, committed
//! together by [`Buffered::commit`] as one atomic batch.
//!
//! Nothing here is durable until `commit` (and, for a crash, the backend's
//! `flush`): the engine commits at safe points (between instants), before
//! acknowledging anything, and periodically in long simulations. A timer
//! set and fired (or cancelled) between two commits never reaches the
//! backend at all.

use std::collections::{BTreeMap, HashMap};

use crate::clock::Millis;

use super::timers::{Timer, TimerKey};
use super::users::UserRecord;
use super::{Batch, Error, Store};

struct Cached {
    rec: UserRecord,
    dirty: bool,
    used: u64,
}

/// A user's record taken out of the cache.
pub struct Taken {
    pub rec: UserRecord,
    /// Whether the user existed before.
    pub known: bool,
    /// Whether the record has uncommitted changes.
    pub dirty: bool,
}

enum TimerOp {
    /// Set since the last commit (so not in the backend).
    Put(Timer),
    /// In the backend, to delete at the next commit.
    Delete,
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferStats {
    pub user_hits: u64,
    pub user_loads: u64,
    pub user_writes: u64,
    pub commits: u64,
}

pub struct Buffered {
    store: Box<dyn Store>,
    cache: HashMap<String, Cached>,
    capacity: usize,
    tick: u64,
    /// Dirty users evicted from the cache, encoded, awaiting commit.
    evicted: HashMap<String, Vec<u8>>,
    timers: BTreeMap<TimerKey, TimerOp>,
    /// Every backend timer at or before this key has fired or been deleted.
    cursor: Option<TimerKey>,
    /// Other writes (zones, message log, dead letters).
    batch: Batch,
    meta: BTreeMap<String, Vec<u8>>,
    pub stats: BufferStats,
}

impl Buffered {
    /// `capacity`: how many users the cache holds (at least 16).
    pub fn new(store: Box<dyn Store>, capacity: usize) -> Self {
        Buffered {
            store,
            cache: HashMap::new(),
            capacity: capacity.max(16),
            tick: 0,
            evicted: HashMap::new(),
            timers: BTreeMap::new(),
            cursor: None,
            batch: Batch::default(),
            meta: BTreeMap::new(),
            stats: BufferStats::default(),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Takes a user's record out of the cache (loading it, or creating it
    /// when unknown); give it back with [`Buffered::put_user`].
    pub fn take_user(&mut self, id: &str) -> Result<Taken, Error> {
        if let Some(c) = self.cache.remove(id) {
            self.stats.user_hits += 1;
            return Ok(Taken {
                rec: c.rec,
                known: true,
                dirty: c.dirty,
            });
        }
        if let Some(bytes) = self.evicted.remove(id) {
            self.stats.user_hits += 1;
            return Ok(Taken {
                rec: UserRecord::decode(&bytes)?,
                known: true,
                dirty: true,
            });
        }
        self.stats.user_loads += 1;
        Ok(match self.store.user(id)? {
            Some(rec) => Taken {
                rec,
                known: true,
                dirty: false,
            },
            None => Taken {
                rec: UserRecord::new(id),
                known: false,
                dirty: false,
            },
        })
    }

    /// Returns a record to the cache; `dirty` when it changed since it was
    /// last committed.
    pub fn put_user(&mut self, id: String, rec: UserRecord, dirty: bool) -> Result<(), Error> {
        self.tick += 1;
        self.cache.insert(
            id,
            Cached {
                rec,
                dirty,
                used: self.tick,
            },
        );
        if self.cache.len() > self.capacity {
            self.evict()?;
        }
        Ok(())
    }

    /// Drops the least recently used eighth of the cache, encoding the
    /// dirty ones for the next commit.
    fn evict(&mut self) -> Result<(), Error> {
        let n = (self.capacity / 8).max(1);
        let mut ages: Vec<u64> = self.cache.values().map(|c| c.used).collect();
        let (_, nth, _) = ages.select_nth_unstable(n - 1);
        let limit = *nth;
        let old: Vec<String> = self
            .cache
            .iter()
            .filter(|(_, c)| c.used <= limit)
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            if let Some(c) = self.cache.remove(&k) {
                if c.dirty {
                    self.evicted.insert(k, c.rec.encode()?);
                }
            }
        }
        Ok(())
    }

    pub fn set_timer(&mut self, key: TimerKey, timer: Timer) {
        self.timers.insert(key, TimerOp::Put(timer));
    }

    pub fn cancel_timer(&mut self, key: TimerKey) {
        match self.timers.get(&key) {
            Some(TimerOp::Put(_)) => {
                self.timers.remove(&key);
            }
            Some(TimerOp::Delete) => {}
            None => {
                self.timers.insert(key, TimerOp::Delete);
            }
        }
    }

    /// Every timer of the earliest instant at or before `until` that has
    /// timers, in key order. They stay pending until [`Buffered::fired`].
    pub fn next_instant(&mut self, until: Millis) -> Result<Option<(Millis, Vec<(TimerKey, Timer)>)>, Error> {
        const CHUNK: usize = 1024;
        let overlay_first = self
            .timers
            .range((
                self.cursor.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                std::ops::Bound::Unbounded,
            ))
            .find(|(_, op)| matches!(op, TimerOp::Put(_)))
            .map(|(k, _)| *k);
        // The first backend timer that is not deleted.
        let mut after = self.cursor;
        let mut backend_first: Option<(TimerKey, Timer)> = None;
        'scan: loop {
            let chunk = self.store.timers(after, until, CHUNK)?;
            let full = chunk.len() == CHUNK;
            for (k, t) in chunk {
                after = Some(k);
                if matches!(self.timers.get(&k), Some(TimerOp::Delete)) {
                    continue;
                }
                backend_first = Some((k, t));
                break 'scan;
            }
            if !full {
                break;
            }
        }
        let due = match (overlay_first.map(|k| k.due), backend_first.as_ref().map(|(k, _)| k.due)) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return Ok(None),
        };
        if due > until {
            return Ok(None);
        }
        let mut out: Vec<(TimerKey, Timer)> = Vec::new();
        // Backend timers of that instant.
        if let Some((k, t)) = backend_first {
            if k.due == due {
                out.push((k, t));
                let mut after = Some(k);
                loop {
                    let chunk = self.store.timers(after, due, CHUNK)?;
                    let full = chunk.len() == CHUNK;
                    for (k, t) in chunk {
                        after = Some(k);
                        if !matches!(self.timers.get(&k), Some(TimerOp::Delete)) {
                            out.push((k, t));
                        }
                    }
                    if !full {
                        break;
                    }
                }
            }
        }
        let lo = TimerKey { due, seq: 0 };
        let hi = TimerKey { due, seq: u64::MAX };
        for (k, op) in self.timers.range(lo..=hi) {
            if let TimerOp::Put(t) = op {
                if self.cursor.is_none_or(|c| *k > c) {
                    out.push((*k, t.clone()));
                }
            }
        }
        out.sort_by_key(|(k, _)| *k);
        out.dedup_by_key(|(k, _)| *k);
        Ok(Some((due, out)))
    }

    /// Marks timers returned by [`Buffered::next_instant`] as fired.
    pub fn fired(&mut self, keys: &[TimerKey]) {
        for k in keys {
            self.cancel_timer(*k);
            if self.cursor.is_none_or(|c| *k > c) {
                self.cursor = Some(*k);
            }
        }
    }

    pub fn batch(&mut self) -> &mut Batch {
        &mut self.batch
    }

    pub fn put_meta(&mut self, name: &str, value: Vec<u8>) {
        self.meta.insert(name.to_owned(), value);
    }

    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        match self.meta.get(name) {
            Some(v) => Ok(Some(v.clone())),
            None => self.store.meta(name),
        }
    }

    /// How many writes wait for the next commit (roughly).
    pub fn pending(&self) -> usize {
        self.evicted.len() + self.timers.len() + self.batch.len()
    }

    /// Commits every pending write, and every dirty cached user, as one
    /// atomic batch.
    pub fn commit(&mut self) -> Result<(), Error> {
        let mut batch = std::mem::take(&mut self.batch);
        for (k, op) in std::mem::take(&mut self.timers) {
            match op {
                TimerOp::Put(t) => batch.put_timer(k, &t)?,
                TimerOp::Delete => batch.delete_timer(k),
            }
        }
        for (id, bytes) in self.evicted.drain() {
            batch.put_user_bytes(&id, bytes);
            self.stats.user_writes += 1;
        }
        for (id, c) in self.cache.iter_mut() {
            if c.dirty {
                batch.put_user_bytes(id, c.rec.encode()?);
                c.dirty = false;
                self.stats.user_writes += 1;
            }
        }
        for (name, v) in std::mem::take(&mut self.meta) {
            batch.put_meta(&name, v);
        }
        if !batch.is_empty() {
            self.store.apply(batch)?;
            self.stats.commits += 1;
        }
        Ok(())
    }

    /// Makes every commit durable.
    pub fn sync(&self) -> Result<(), Error> {
        self.store.flush()
    }
}
