//! The write-back layer between the engine and a [`Store`]: a bounded cache
//! of hot users and the pending writes of the current batch, committed
//! together by [`Buffered::commit`] as one atomic batch.
//!
//! Nothing here is durable until `commit` (and, for a crash, the backend's
//! `flush`): the engine commits at safe points (between instants), before
//! acknowledging anything, and periodically in long simulations. A timer
//! set and fired (or cancelled) between two commits never reaches the
//! backend at all.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use crate::clock::Millis;

use super::timers::{Timer, TimerKey};
use super::users::UserRecord;
use super::{Batch, Error, Kv, Store};

struct Cached {
    /// Boxed: a unit of work moves it out of the map and back, and the
    /// map's buckets stay small.
    rec: Box<UserRecord>,
    dirty: bool,
    used: u64,
    /// The record's encoded size when last read or written (its weight in
    /// the cache's byte bound).
    bytes: usize,
}

/// The weight of a record whose encoded size is not known yet (a new
/// user, until the commit encodes it).
const UNKNOWN_RECORD_BYTES: usize = 512;

/// The default bound on the cached records' encoded bytes. Decoded, a
/// record takes about three to four times its encoded size in memory.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

/// A record read ahead and its encoded size, or `None`: no such user.
type ReadAhead = Option<(UserRecord, usize)>;

/// A user's record as stored, and its encoded size.
fn read_user(store: &dyn Store, id: &str) -> Result<ReadAhead, Error> {
    match store.get_blob(&super::users::key(id))? {
        Some(b) => Ok(Some((UserRecord::decode(&b)?, b.len()))),
        None => Ok(None),
    }
}

/// Records read ahead per thread, at least (fewer are not worth a thread).
const PREFETCH_PER_THREAD: usize = 64;

/// Records a commit encodes per thread, at least (fewer are not worth a
/// thread).
const ENCODE_PER_THREAD: usize = 256;

/// Encodes `recs` in order, on up to `threads` threads: a commit's
/// records are independent, and encoding them is a tenth of the engine
/// thread's time under ingest, which every acknowledgement waits for.
fn encode_all(recs: &[&UserRecord], threads: usize) -> Vec<Result<Vec<u8>, Error>> {
    let per = recs.len().div_ceil(threads.max(1)).max(ENCODE_PER_THREAD);
    if recs.len() <= per {
        return recs.iter().map(|r| r.encode()).collect();
    }
    let encode = |chunk: &[&UserRecord]| -> Vec<Result<Vec<u8>, Error>> {
        chunk.iter().map(|r| r.encode()).collect()
    };
    let encode = &encode;
    let mut chunks = recs.chunks(per);
    let mine = chunks.next().unwrap_or(&[]);
    std::thread::scope(|scope| {
        let others: Vec<_> = chunks
            .map(|c| (c.len(), scope.spawn(move || encode(c))))
            .collect();
        let mut out = encode(mine);
        for (n, h) in others {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(_) => out.extend((0..n).map(|_| {
                    Err(Error::Backend(
                        "a thread encoding user records panicked".into(),
                    ))
                })),
            }
        }
        out
    })
}

/// How many new timers a spill may keep in memory.
const MAX_TIMERS_IN_MEMORY: usize = 1_000_000;

/// The timers of one instant: when, and which.
pub type Instant = (Millis, Vec<(TimerKey, Timer)>);

/// A user's record taken out of the cache.
pub struct Taken {
    pub rec: Box<UserRecord>,
    /// Whether the user existed before.
    pub known: bool,
    /// Whether the record has uncommitted changes.
    pub dirty: bool,
}

enum TimerOp {
    /// Set since the last commit (so not in the backend).
    Put(Timer),
    /// In the backend, to delete at the next commit. `fired`: read from
    /// the backend, so known to be there (a cancelled key may not be).
    Delete { fired: bool },
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferStats {
    pub user_hits: u64,
    pub user_loads: u64,
    pub user_writes: u64,
    pub user_bytes_written: u64,
    pub evictions: u64,
    pub commits: u64,
}

pub struct Buffered {
    store: Box<dyn Store>,
    /// Keyed by user id with a randomly seeded aHash: ids come from the
    /// network, and SipHash cost a few per cent of a simulation here.
    cache: HashMap<String, Cached, ahash::RandomState>,
    capacity: usize,
    /// The bound on the encoded bytes of the cached records, and their sum.
    max_bytes: usize,
    bytes: usize,
    /// The last record taken out, its weight and whether it was dirty
    /// (then it is in `dirty` already), for its return.
    taken: Option<(String, usize, bool)>,
    /// Users put back dirty since the last commit (some may have been
    /// evicted or taken out since): a commit encodes these, not the whole
    /// cache.
    dirty: Vec<String>,
    tick: u64,
    /// Dirty users evicted from the cache, encoded, awaiting commit.
    evicted: HashMap<String, Vec<u8>, ahash::RandomState>,
    timers: BTreeMap<TimerKey, TimerOp>,
    /// Every backend timer at or before this key has fired or been deleted.
    cursor: Option<TimerKey>,
    /// Backend timer keys read ahead (after the cursor).
    window: std::collections::VecDeque<TimerKey>,
    window_last: Option<TimerKey>,
    /// Whether the window reaches the backend's last timer.
    window_end: bool,
    /// Other writes (zones, message log, dead letters).
    batch: Batch,
    /// Users created since the last commit (not yet in the backend).
    new_users: std::collections::BTreeSet<String>,
    /// Records read ahead by [`Buffered::prefetch`] (`None`: no such
    /// user), each taken at most once, dropped at the next commit.
    prefetched: HashMap<String, ReadAhead, ahash::RandomState>,
    meta: BTreeMap<String, Vec<u8>>,
    pub stats: BufferStats,
    /// Timers in the backend, once counted ([`Buffered::count_timers`]);
    /// then kept up to date by each commit.
    timer_count: Option<i64>,
    /// Threads a commit encodes its records on, at most.
    encoders: usize,
}

impl Buffered {
    /// `capacity`: how many users the cache holds (at least 16), and
    /// at most [`DEFAULT_CACHE_BYTES`] of them encoded.
    pub fn new(store: Box<dyn Store>, capacity: usize) -> Self {
        Self::with_bounds(store, capacity, DEFAULT_CACHE_BYTES)
    }

    /// A cache of at most `capacity` users (at least 16) whose records
    /// take at most `max_bytes` encoded: users with a long history weigh
    /// more, so a count alone does not bound the memory.
    pub fn with_bounds(store: Box<dyn Store>, capacity: usize, max_bytes: usize) -> Self {
        Buffered {
            store,
            cache: HashMap::default(),
            capacity: capacity.max(16),
            max_bytes,
            bytes: 0,
            taken: None,
            dirty: Vec::new(),
            tick: 0,
            evicted: HashMap::default(),
            prefetched: HashMap::default(),
            timers: BTreeMap::new(),
            cursor: None,
            window: std::collections::VecDeque::new(),
            window_last: None,
            window_end: false,
            batch: Batch::default(),
            new_users: std::collections::BTreeSet::new(),
            meta: BTreeMap::new(),
            stats: BufferStats::default(),
            timer_count: None,
            encoders: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Takes a user's record out of the cache (loading it, or creating it
    /// when unknown); give it back with [`Buffered::put_user`].
    pub fn take_user(&mut self, id: &str) -> Result<Taken, Error> {
        // The key comes back with the record and goes back with it in
        // `put_user`: no allocation per unit of work on a hit.
        if let Some((key, c)) = self.cache.remove_entry(id) {
            self.stats.user_hits += 1;
            self.bytes = self.bytes.saturating_sub(c.bytes);
            self.taken = Some((key, c.bytes, c.dirty));
            return Ok(Taken {
                rec: c.rec,
                known: true,
                dirty: c.dirty,
            });
        }
        if let Some((key, bytes)) = self.evicted.remove_entry(id) {
            self.stats.user_hits += 1;
            self.taken = Some((key, bytes.len(), true));
            return Ok(Taken {
                rec: Box::new(UserRecord::decode(&bytes)?),
                known: true,
                dirty: true,
            });
        }
        self.stats.user_loads += 1;
        let erased = matches!(self.batch.blobs.get(&super::users::key(id)), Some(None));
        let ahead = self.prefetched.remove(id);
        let stored = match ahead {
            _ if erased => None,
            Some(read) => read,
            None => read_user(self.store.as_ref(), id)?,
        };
        let (rec, bytes, known) = match stored {
            Some((rec, bytes)) => (rec, bytes, true),
            None => (UserRecord::new(id), UNKNOWN_RECORD_BYTES, false),
        };
        let rec = Box::new(rec);
        self.taken = Some((id.to_owned(), bytes, false));
        Ok(Taken {
            rec,
            known,
            dirty: false,
        })
    }

    /// Reads ahead the records of those of `ids` that are neither cached
    /// nor already read ahead, on `threads` threads at once (this one among
    /// them): each is a read of the store and a decode, which the engine's
    /// thread would otherwise do one by one in [`Buffered::take_user`].
    /// What is read is taken by `take_user` (or dropped at the next
    /// commit); reading ahead changes nothing else, so the records are
    /// the same as `take_user` would read: only this thread writes, and
    /// not while this runs.
    pub fn prefetch<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a str>,
        threads: usize,
    ) -> Result<(), Error> {
        let mut want: Vec<&str> = ids
            .into_iter()
            .filter(|id| {
                !self.cache.contains_key(*id)
                    && !self.evicted.contains_key(*id)
                    && !self.prefetched.contains_key(*id)
            })
            .collect();
        want.sort_unstable();
        want.dedup();
        if want.is_empty() {
            return Ok(());
        }
        let per = want.len().div_ceil(threads.max(1)).max(PREFETCH_PER_THREAD);
        let store: &dyn Store = self.store.as_ref();
        let read = |chunk: &[&'a str]| -> Result<Vec<(String, ReadAhead)>, Error> {
            let mut out = Vec::with_capacity(chunk.len());
            for id in chunk {
                out.push(((*id).to_owned(), read_user(store, id)?));
            }
            Ok(out)
        };
        let mut chunks = want.chunks(per);
        let mine = chunks.next().unwrap_or(&[]);
        let read = &read;
        let results = std::thread::scope(|scope| {
            let others: Vec<_> = chunks.map(|c| scope.spawn(move || read(c))).collect();
            let mut results = vec![read(mine)];
            for h in others {
                results.push(h.join().unwrap_or_else(|_| {
                    Err(Error::Backend(
                        "a thread reading user records ahead panicked".into(),
                    ))
                }));
            }
            results
        });
        for r in results {
            self.prefetched.extend(r?);
        }
        Ok(())
    }

    /// Returns a record to the cache; `dirty` when it changed since it was
    /// last committed.
    /// `new`: the user did not exist before (see [`Taken::known`]).
    pub fn put_user(
        &mut self,
        id: &str,
        rec: Box<UserRecord>,
        dirty: bool,
        new: bool,
    ) -> Result<(), Error> {
        self.tick += 1;
        if new {
            self.new_users.insert(id.to_owned());
        }
        if !self.prefetched.is_empty() {
            self.prefetched.remove(id);
        }
        let (id, bytes, listed) = match self.taken.take() {
            Some((taken, bytes, was_dirty)) if taken == id => (taken, bytes, was_dirty),
            _ => (id.to_owned(), UNKNOWN_RECORD_BYTES, false),
        };
        self.bytes += bytes;
        if dirty && !listed {
            self.dirty.push(id.clone());
        }
        if let Some(old) = self.cache.insert(
            id,
            Cached {
                rec,
                dirty,
                used: self.tick,
                bytes,
            },
        ) {
            self.bytes = self.bytes.saturating_sub(old.bytes);
        }
        if self.cache.len() > self.capacity || self.bytes > self.max_bytes {
            self.evict()?;
        }
        Ok(())
    }

    /// Users in the cache, and their records' encoded bytes (as last read
    /// or written).
    pub fn cached(&self) -> (usize, usize) {
        (self.cache.len(), self.bytes)
    }

    /// Drops the least recently used eighth of the cache, encoding the
    /// dirty ones for the next commit.
    fn evict(&mut self) -> Result<(), Error> {
        if self.cache.is_empty() {
            return Ok(());
        }
        let n = (self.cache.len() / 8).clamp(1, self.cache.len());
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
                self.bytes = self.bytes.saturating_sub(c.bytes);
                if c.dirty {
                    self.stats.evictions += 1;
                    self.evicted.insert(k, c.rec.encode()?);
                }
            }
        }
        Ok(())
    }

    /// Drops a user from the cache (after erasure: the record's deletion
    /// is in the batch).
    pub fn forget_user(&mut self, id: &str) {
        self.prefetched.remove(id);
        if let Some(c) = self.cache.remove(id) {
            self.bytes = self.bytes.saturating_sub(c.bytes);
        }
        self.evicted.remove(id);
        self.new_users.remove(id);
    }

    pub fn set_timer(&mut self, key: TimerKey, timer: Timer) {
        // A timer due before others that already fired (an event that
        // arrived late): move the cursor back so that it is seen. Every
        // timer that fired is deleted (in the overlay or the backend), so
        // the cursor is only a shortcut.
        if self.cursor.is_some_and(|c| key <= c) {
            self.cursor = match key.seq.checked_sub(1) {
                Some(seq) => Some(TimerKey { due: key.due, seq }),
                None => key
                    .due
                    .checked_sub(1)
                    .map(|due| TimerKey { due, seq: u64::MAX }),
            };
        }
        self.timers.insert(key, TimerOp::Put(timer));
    }

    pub fn cancel_timer(&mut self, key: TimerKey) {
        self.remove_timer(key, false);
    }

    fn remove_timer(&mut self, key: TimerKey, fired: bool) {
        // One walk down the overlay's tree, not a look-up then a change.
        match self.timers.entry(key) {
            Entry::Occupied(op) => {
                if matches!(op.get(), TimerOp::Put(_)) {
                    op.remove();
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(TimerOp::Delete { fired });
            }
        }
    }

    /// Counts the timers in the backend (call right after a commit), and
    /// keeps the count up to date from then on.
    pub fn count_timers(&mut self) -> Result<i64, Error> {
        let n = super::timers::count(self.store.as_ref())?;
        self.timer_count = Some(n);
        Ok(n)
    }

    /// Timers in the backend as of the last commit, when counted.
    pub fn timer_count(&self) -> Option<i64> {
        self.timer_count
    }

    /// The first backend timer after the cursor that is not deleted in the
    /// overlay. Backend keys are read ahead in windows, valid until the
    /// next commit changes the backend.
    fn backend_head(&mut self) -> Result<Option<TimerKey>, Error> {
        const CHUNK: usize = 256;
        loop {
            while let Some(&k) = self.window.front() {
                let gone = self.cursor.is_some_and(|c| k <= c)
                    || matches!(self.timers.get(&k), Some(TimerOp::Delete { .. }));
                if !gone {
                    return Ok(Some(k));
                }
                self.window.pop_front();
            }
            if self.window_end {
                return Ok(None);
            }
            let after = match (self.cursor, self.window_last) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let chunk = self.store.timers(after, Millis::MAX - 1, CHUNK)?;
            self.window_end = chunk.len() < CHUNK;
            for (k, _) in chunk {
                self.window.push_back(k);
                self.window_last = Some(k);
            }
        }
    }

    /// When the next pending timer is due.
    pub fn next_due(&mut self) -> Result<Option<Millis>, Error> {
        let overlay = self
            .timers
            .range((
                self.cursor
                    .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                std::ops::Bound::Unbounded,
            ))
            .find(|(_, op)| matches!(op, TimerOp::Put(_)))
            .map(|(k, _)| k.due);
        let backend = self.backend_head()?.map(|k| k.due);
        Ok(match (overlay, backend) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Every timer of the earliest instant at or before `until` that has
    /// timers, in key order. They stay pending until [`Buffered::fired`].
    pub fn next_instant(&mut self, until: Millis) -> Result<Option<Instant>, Error> {
        const CHUNK: usize = 1024;
        let Some(due) = self.next_due()? else {
            return Ok(None);
        };
        if due > until {
            return Ok(None);
        }
        let mut out: Vec<(TimerKey, Timer)> = Vec::new();
        if self.backend_head()?.is_some_and(|k| k.due == due) {
            let mut after = self.cursor;
            loop {
                let chunk = self.store.timers(after, due, CHUNK)?;
                let full = chunk.len() == CHUNK;
                for (k, t) in chunk {
                    after = Some(k);
                    if !matches!(self.timers.get(&k), Some(TimerOp::Delete { .. })) {
                        out.push((k, t));
                    }
                }
                if !full {
                    break;
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
            self.remove_timer(*k, true);
            if self.cursor.is_none_or(|c| *k > c) {
                self.cursor = Some(*k);
            }
        }
    }

    pub fn batch(&mut self) -> &mut Batch {
        &mut self.batch
    }

    /// The store as it will be after the next commit, for reading indexes
    /// (zones, audiences, user ids) without committing. User records
    /// themselves are read with [`Buffered::take_user`].
    pub fn view(&self) -> View<'_> {
        View { buffered: self }
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

    /// How many writes wait for the next commit, weighted by what they cost
    /// in memory (an evicted user record weighs most).
    pub fn pending(&self) -> usize {
        self.evicted.len() + self.timers.len() / 32 + self.batch.len() / 4
    }

    /// Commits every pending write and every dirty cached user as one
    /// batch, which the backend applies atomically (see
    /// [`super::sled_store`]): after a crash the store holds all of this
    /// commit or none of it.
    pub fn commit(&mut self) -> Result<(), Error> {
        self.commit_with(true)
    }

    /// Writes out what bounds memory (evicted records, timers, other
    /// writes) but leaves dirty cached records for later. Not a restart
    /// point: only for stores that are never reopened (simulate, test).
    pub fn spill(&mut self) -> Result<(), Error> {
        self.commit_with(false)
    }

    fn commit_with(&mut self, cached: bool) -> Result<(), Error> {
        let mut batch = std::mem::take(&mut self.batch);
        for (name, v) in std::mem::take(&mut self.meta) {
            batch.put_meta(&name, v);
        }
        // A spill keeps new timers in memory (most fire or are cancelled
        // before the end) unless there are very many.
        let keep_puts = !cached && self.timers.len() < MAX_TIMERS_IN_MEMORY;
        // The change in the backend's timer count, when it is kept: a put
        // adds one (keys are never reused), a deletion removes one if the
        // key is there (a fired timer is; a cancelled one is looked up).
        let counting = self.timer_count.is_some();
        let mut timers_delta = 0i64;
        for (k, op) in std::mem::take(&mut self.timers) {
            match op {
                TimerOp::Put(t) if keep_puts => {
                    self.timers.insert(k, TimerOp::Put(t));
                }
                TimerOp::Put(t) => {
                    timers_delta += 1;
                    batch.put(k.encode(), super::codec::encode("timer", &t)?);
                }
                TimerOp::Delete { fired } => {
                    let key = k.encode();
                    if counting && (fired || self.store.get(&key)?.is_some()) {
                        timers_delta -= 1;
                    }
                    batch.delete(key);
                }
            }
        }
        self.prefetched.clear();
        for (id, bytes) in self.evicted.drain() {
            self.stats.user_bytes_written += bytes.len() as u64;
            self.stats.user_writes += 1;
            batch.put_blob(super::users::key(&id), bytes);
        }
        let dirty = if cached {
            // A record out of the cache now is not in this commit: its
            // return must list it again.
            self.taken = None;
            std::mem::take(&mut self.dirty)
        } else {
            Vec::new()
        };
        // The dirty records, each with its id, in one look-up each.
        let (dirty, recs): (Vec<String>, Vec<&UserRecord>) = dirty
            .into_iter()
            .filter_map(|id| {
                let c = self.cache.get(&id).filter(|c| c.dirty)?;
                Some((id, &*c.rec))
            })
            .unzip();
        let encoded = encode_all(&recs, self.encoders);
        for (id, bytes) in dirty.into_iter().zip(encoded) {
            let bytes = bytes?;
            let Some(c) = self.cache.get_mut(&id) else {
                continue;
            };
            self.stats.user_bytes_written += bytes.len() as u64;
            self.stats.user_writes += 1;
            self.bytes = self.bytes.saturating_sub(c.bytes) + bytes.len();
            c.bytes = bytes.len();
            batch.put_blob(super::users::key(&id), bytes);
            c.dirty = false;
        }
        self.new_users.clear();
        self.window.clear();
        self.window_last = None;
        self.window_end = false;
        if !batch.is_empty() {
            self.store.apply(batch)?;
            self.stats.commits += 1;
        }
        if let Some(n) = &mut self.timer_count {
            *n += timers_delta;
        }
        // The records' sizes are up to date now: drop what exceeds the
        // byte bound (clean records after a full commit, nothing to write).
        while cached && self.bytes > self.max_bytes && self.cache.len() > 16 {
            self.evict()?;
        }
        Ok(())
    }

    /// Makes every commit durable.
    pub fn sync(&self) -> Result<(), Error> {
        self.store.flush()
    }
}

/// A read-only view of a [`Buffered`] store: the backend with the pending
/// batch and the new users laid over it.
pub struct View<'a> {
    buffered: &'a Buffered,
}

impl Kv for View<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.buffered.batch.ops.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.buffered.store.get(key),
        }
    }

    fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.buffered.batch.blobs.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.buffered.store.get_blob(key),
        }
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<super::Entries, Error> {
        use std::ops::Bound;
        let lo = match after {
            Some(a) => Bound::Excluded(a.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let in_range = |k: &[u8]| k.starts_with(prefix) && before.is_none_or(|b| k < b);
        // Pending writes and new users in range, in key order.
        let mut pending: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (k, v) in self
            .buffered
            .batch
            .ops
            .range((lo.clone(), Bound::Unbounded))
        {
            if !in_range(k) {
                break;
            }
            pending.insert(k.clone(), v.clone());
            if pending.len() > limit.saturating_mul(2) {
                break;
            }
        }
        if prefix == [b'u'] {
            for id in &self.buffered.new_users {
                let k = super::users::key(id);
                let after_ok = after.is_none_or(|a| k.as_slice() > a);
                if after_ok && in_range(&k) {
                    pending.entry(k).or_insert(Some(Vec::new()));
                }
            }
        }
        // Merge with the backend, page by page, until `limit` live entries.
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut cursor: Option<Vec<u8>> = after.map(<[u8]>::to_vec);
        let mut backend_done = false;
        let mut backend: std::collections::VecDeque<(Vec<u8>, Vec<u8>)> =
            std::collections::VecDeque::new();
        while out.len() < limit {
            if backend.is_empty() && !backend_done {
                let page =
                    self.buffered
                        .store
                        .scan(prefix, cursor.as_deref(), before, limit.max(64))?;
                backend_done = page.len() < limit.max(64);
                if let Some((k, _)) = page.last() {
                    cursor = Some(k.clone());
                }
                backend.extend(page);
            }
            let next_pending = pending.keys().next().cloned();
            let take_pending = match (backend.front(), &next_pending) {
                (None, None) => break,
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some((bk, _)), Some(pk)) => pk <= bk,
            };
            if take_pending {
                let Some(pk) = next_pending else { break };
                let v = pending.remove(&pk).flatten();
                if backend.front().is_some_and(|(bk, _)| *bk == pk) {
                    backend.pop_front();
                }
                if let Some(v) = v {
                    out.push((pk, v));
                }
            } else if let Some(e) = backend.pop_front() {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn apply(&self, _batch: Batch) -> Result<(), Error> {
        Err(Error::Backend("a view is read-only".into()))
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The write-back buffer against a model: a `BTreeMap` of users and a
    //! set of timers, through random takes, puts, timer sets and cancels,
    //! index writes, commits, spills and reopenings (small caches, so
    //! records are evicted and read back).

    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use serde_json::json;

    use super::super::attrs::Val;
    use super::super::profile;
    use super::super::sled_store::{SledOptions, SledStore};
    use super::super::timers::{Timer, TimerKey, TimerKind};
    use super::super::zones::Zones;
    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u16),
        SetTimer(i64),
        CancelTimer(usize),
        Zone(u8, bool),
        Commit,
        Spill,
        Reopen,
        Fire(i64),
        /// Read these users ahead (as `run` does before a round).
        Prefetch(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..40, any::<u16>()).prop_map(|(u, v)| Op::Put(u, v)),
            3 => (0i64..50).prop_map(Op::SetTimer),
            2 => any::<usize>().prop_map(Op::CancelTimer),
            2 => (0u8..40, any::<bool>()).prop_map(|(u, b)| Op::Zone(u, b)),
            1 => Just(Op::Commit),
            1 => Just(Op::Spill),
            1 => Just(Op::Reopen),
            1 => (0i64..50).prop_map(Op::Fire),
            2 => prop::collection::vec(0u8..40, 0..160).prop_map(Op::Prefetch),
        ]
    }

    /// The store as `run` opens it: sled's inserts on a thread of their
    /// own, reads through the overlay.
    fn open(path: &std::path::Path) -> Buffered {
        let options = SledOptions {
            pipeline: true,
            ..SledOptions::default()
        };
        let store = SledStore::open(path, &options).expect("open");
        Buffered::new(Box::new(store), 16)
    }

    fn user(i: u8) -> String {
        format!("user-{i:02}")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn the_buffer_behaves_like_a_map(ops in prop::collection::vec(op(), 1..120)) {
            let dir = tempfile::tempdir().expect("tmp");
            let path = dir.path().join("store");
            let mut b = open(&path);
            let mut users: BTreeMap<String, u16> = BTreeMap::new();
            let mut timers: BTreeSet<TimerKey> = BTreeSet::new();
            let mut zones: BTreeSet<String> = BTreeSet::new();
            let mut seq = 0u64;
            // What a spill leaves uncommitted is not a restart point.
            let mut spilled = false;
            for op in ops {
                match op {
                    Op::Put(u, v) => {
                        let id = user(u);
                        let mut t = b.take_user(&id).expect("take");
                        prop_assert_eq!(t.known, users.contains_key(&id));
                        let expected = users.get(&id).map(|v| json!(v));
                        prop_assert_eq!(t.rec.profile.get("v").map(Val::to_json), expected);
                        profile::set(&mut t.rec.profile, "v", json!(v));
                        b.put_user(&id, t.rec, true, !t.known).expect("put");
                        users.insert(id, v);
                    }
                    Op::SetTimer(due) => {
                        seq += 1;
                        let key = TimerKey { due, seq };
                        b.set_timer(key, Timer { user: String::new(), kind: TimerKind::Segments });
                        timers.insert(key);
                    }
                    Op::CancelTimer(i) => {
                        if let Some(&k) = timers.iter().nth(i % timers.len().max(1)) {
                            b.cancel_timer(k);
                            timers.remove(&k);
                        }
                    }
                    Op::Zone(u, on) => {
                        let id = user(u);
                        if on {
                            b.batch().put_zone("Europe/Berlin", &id);
                            zones.insert(id);
                        } else {
                            b.batch().delete_zone("Europe/Berlin", &id);
                            zones.remove(&id);
                        }
                    }
                    Op::Commit => {
                        b.commit().expect("commit");
                        spilled = false;
                    }
                    Op::Spill => {
                        b.spill().expect("spill");
                        spilled = true;
                    }
                    Op::Reopen => {
                        if !spilled {
                            b.commit().expect("commit");
                            drop(b);
                            b = open(&path);
                        }
                    }
                    Op::Prefetch(ids) => {
                        let ids: Vec<String> = ids.into_iter().map(user).collect();
                        b.prefetch(ids.iter().map(String::as_str), 2).expect("prefetch");
                    }
                    Op::Fire(until) => {
                        while let Some((due, fired)) = b.next_instant(until).expect("next") {
                            let keys: Vec<TimerKey> = fired.iter().map(|(k, _)| *k).collect();
                            let expected: Vec<TimerKey> =
                                timers.iter().filter(|k| k.due == due).copied().collect();
                            prop_assert_eq!(&keys, &expected);
                            prop_assert_eq!(timers.iter().next().map(|k| k.due), Some(due));
                            b.fired(&keys);
                            for k in keys {
                                timers.remove(&k);
                            }
                        }
                        prop_assert!(timers.iter().next().is_none_or(|k| k.due > until));
                    }
                }
                prop_assert_eq!(b.next_due().expect("due"), timers.iter().next().map(|k| k.due));
                let indexed: BTreeSet<String> = b
                    .view()
                    .zone_users("Europe/Berlin", None, 1_000)
                    .expect("zones")
                    .into_iter()
                    .collect();
                prop_assert_eq!(&indexed, &zones);
            }
            for (id, v) in &users {
                let t = b.take_user(id).expect("take");
                prop_assert!(t.known);
                prop_assert_eq!(t.rec.profile.get("v").map(Val::to_json), Some(json!(v)));
            }
        }
    }

    /// A commit of more records than one thread encodes: each user gets
    /// its own record back (in memory and after reopening), whatever
    /// thread encoded it.
    #[test]
    fn a_commit_encoded_on_several_threads_keeps_each_users_record() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("store");
        let ids: Vec<String> = (0..3 * ENCODE_PER_THREAD + 7)
            .map(|i| format!("user-{i:05}"))
            .collect();
        {
            let mut b = open(&path);
            b.encoders = 4;
            for (i, id) in ids.iter().enumerate() {
                let mut t = b.take_user(id).expect("take");
                // Records of different sizes, so that a mix-up shows.
                profile::set(&mut t.rec.profile, "v", json!("x".repeat(i % 97)));
                b.put_user(id, t.rec, true, !t.known).expect("put");
            }
            b.commit().expect("commit");
            assert_eq!(b.stats.user_writes, ids.len() as u64);
        }
        let b = open(&path);
        for (i, id) in ids.iter().enumerate() {
            let rec = b.store().user(id).expect("read").expect("committed");
            assert_eq!(rec.id(), id);
            assert_eq!(
                rec.profile.get("v").map(Val::to_json),
                Some(json!("x".repeat(i % 97)))
            );
        }
    }

    #[derive(Debug, Clone)]
    enum TimerOp2 {
        Set(i64),
        /// Cancels a key set earlier, whether it is still pending, already
        /// fired or already cancelled (the engine may cancel stale keys).
        Cancel(usize),
        Fire(i64),
        Commit,
        Spill,
        Reopen,
    }

    fn timer_op() -> impl Strategy<Value = TimerOp2> {
        prop_oneof![
            4 => (0i64..40).prop_map(TimerOp2::Set),
            3 => any::<usize>().prop_map(TimerOp2::Cancel),
            2 => (0i64..40).prop_map(TimerOp2::Fire),
            2 => Just(TimerOp2::Commit),
            1 => Just(TimerOp2::Spill),
            1 => Just(TimerOp2::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// The timer count kept commit by commit (for `sluice_timers_pending`)
        /// always equals a full count of the backend's timers.
        #[test]
        fn the_timer_count_matches_the_store(ops in prop::collection::vec(timer_op(), 1..150)) {
            let dir = tempfile::tempdir().expect("tmp");
            let path = dir.path().join("store");
            let mut b = open(&path);
            prop_assert_eq!(b.count_timers().expect("count"), 0);
            let mut keys: Vec<TimerKey> = Vec::new();
            let mut seq = 0u64;
            for op in ops {
                match op {
                    TimerOp2::Set(due) => {
                        seq += 1;
                        let key = TimerKey { due, seq };
                        b.set_timer(key, Timer { user: String::new(), kind: TimerKind::Segments });
                        keys.push(key);
                    }
                    TimerOp2::Cancel(i) => {
                        if !keys.is_empty() {
                            b.cancel_timer(keys[i % keys.len()]);
                        }
                    }
                    TimerOp2::Fire(until) => {
                        while let Some((_, fired)) = b.next_instant(until).expect("next") {
                            let fired: Vec<TimerKey> = fired.iter().map(|(k, _)| *k).collect();
                            b.fired(&fired);
                        }
                    }
                    TimerOp2::Commit => b.commit().expect("commit"),
                    TimerOp2::Spill => b.spill().expect("spill"),
                    TimerOp2::Reopen => {
                        b.commit().expect("commit");
                        drop(b);
                        // sled's flusher thread lets go of the lock a moment
                        // after the store is dropped.
                        let mut tries = 0;
                        b = loop {
                            match SledStore::open(&path, &SledOptions::default()) {
                                Ok(store) => break Buffered::new(Box::new(store), 16),
                                Err(_) if tries < 100 => {
                                    tries += 1;
                                    std::thread::sleep(std::time::Duration::from_millis(20));
                                }
                                Err(e) => panic!("reopen: {e}"),
                            }
                        };
                        b.count_timers().expect("count");
                    }
                }
                if matches!(op, TimerOp2::Commit | TimerOp2::Spill | TimerOp2::Reopen) {
                    let real = crate::store::timers::count(b.store()).expect("count");
                    prop_assert_eq!(b.timer_count(), Some(real));
                }
            }
        }
    }

    /// A user whose record weighs `kb` kilobytes encoded.
    fn heavy(b: &mut Buffered, id: &str, kb: usize) {
        let mut t = b.take_user(id).expect("take");
        profile::set(&mut t.rec.profile, "pad", json!("x".repeat(kb * 1024)));
        b.put_user(id, t.rec, true, !t.known).expect("put");
    }

    #[test]
    fn the_cache_keeps_to_its_byte_bound() {
        let dir = tempfile::tempdir().expect("tmp");
        let store =
            SledStore::open(&dir.path().join("store"), &SledOptions::default()).expect("open");
        // Room for 1,000 users by count, but only ~100 kB of records.
        let mut b = Buffered::with_bounds(Box::new(store), 1_000, 100 << 10);
        for i in 0..200 {
            heavy(&mut b, &format!("u{i}"), 4);
            if i % 10 == 9 {
                b.commit().expect("commit");
                let (users, bytes) = b.cached();
                assert!(bytes <= 100 << 10, "{bytes} bytes cached after a commit");
                assert!(users <= 25, "{users} users of 4 kB cached");
            }
        }
        // Evicted records were written and read back whole, with their
        // weight known from the store.
        b.commit().expect("commit");
        let t = b.take_user("u3").expect("take");
        assert!(t.known);
        assert_eq!(t.rec.profile["pad"].as_str().map(str::len), Some(4096));
        b.put_user("u3", t.rec, false, false).expect("put");
        let (_, bytes) = b.cached();
        assert!(bytes <= (100 << 10) + 5_000, "{bytes}");
    }

    #[test]
    fn light_users_are_bounded_by_count() {
        let dir = tempfile::tempdir().expect("tmp");
        let store =
            SledStore::open(&dir.path().join("store"), &SledOptions::default()).expect("open");
        let mut b = Buffered::with_bounds(Box::new(store), 64, DEFAULT_CACHE_BYTES);
        for i in 0..500 {
            heavy(&mut b, &format!("u{i}"), 0);
            assert!(b.cached().0 <= 64);
        }
        b.commit().expect("commit");
        assert!(b.cached().0 > 32, "a count-bound cache stays mostly full");
    }
}
