//! Frames that are in the commit log but not yet in sled, and the thread
//! that applies them ([`super::sled_store`] with
//! [`SledOptions::pipeline`](super::sled_store::SledOptions::pipeline)).
//!
//! A commit is made durable by its frame in the log (fsynced before
//! `apply` returns, with `sync_commits`); applying its writes to sled is
//! only there to make reads fast. So the caller need not wait for it: the
//! frame's writes go into an in-memory overlay ([`Pending`]) that every
//! read looks at first, and the applier thread applies queued frames to
//! sled in order, several at a time (the last write to a key wins, so a
//! key put by one frame and deleted by the next costs one sled write, not
//! two), then drops their writes from the overlay. It gathers the frames
//! of up to [`GATHER`] into one pass: consecutive commits touch many of
//! the same users, and each sled insert copies a leaf, so under the ingest
//! bench a pass of that length writes a quarter fewer user pointers than
//! one frame at a time (BENCHMARKS.md, session 15). A drain
//! ([`Applier::drain`]) does not wait for the window.
//!
//! Why this keeps the store's rules ([`super::sled_store`]):
//!
//! - **Nothing reaches sled before its frame is in the log**: a frame is
//!   queued only after its commit entry was written (and fsynced, with
//!   `sync_commits`).
//! - **Recovery replays what sled lacks**: the `applied` marker is
//!   written last in each pass and names the last frame of the pass. A crash in the middle of a pass leaves sled with some writes of
//!   frames after `applied`, all of which are whole in the log; replaying
//!   them in order gives the same state, because every write is absolute.
//! - **Reads see every commit at once**: a key's newest pending write
//!   wins over sled. The applier writes a pass to sled *before* it removes
//!   the pass's writes from the overlay (and only those not overwritten by
//!   a later frame since), so a read that misses the overlay finds the
//!   value in sled. Only the caller's thread queues frames, so a scan's
//!   snapshot of the overlay holds every write sled may receive while the
//!   scan runs.
//! - **Checkpoints wait** until every queued frame is applied before
//!   flushing sled ([`Applier::drain`]).
//! - **Memory is bounded**: at most [`QUEUE`] frames wait, and a pass
//!   takes at most [`PASS_FRAMES`] frames or [`PASS_WRITES`] writes; a
//!   caller committing faster than sled absorbs waits for room.
//! - **Live bytes stay true** for compaction: the applier writes a user
//!   record's pointer with sled's insert, which hands back the pointer it
//!   replaced, and moves that record's bytes out of the live count. A
//!   pointer written by one frame and replaced by the next in the same pass
//!   never reaches sled and is never counted. Until a pass is applied the
//!   count lags behind the log, which only delays compaction a little; a
//!   checkpoint, which deletes generations with no live bytes, drains the
//!   queue first.
//!
//! A sled error in the applier is kept and returned by the next commit
//! (and every later one): the commits it failed to apply are whole in the
//! log, and a restart replays them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::log::Faults;
use super::sled_store::{lock_live, move_live, write_keys, Live};
use super::Error;

/// Frames queued for the applier, at most (the caller waits beyond).
pub const QUEUE: usize = 64;

/// How long the applier gathers frames behind the first one of a pass
/// before it applies them: keys written by several of them (a user's
/// record, rewritten by each commit that touched the user; a timer set
/// and fired) reach sled once.
const GATHER: Duration = Duration::from_millis(200);

/// Frames the applier merges into one pass, at most.
const PASS_FRAMES: usize = 48;

/// Writes the applier merges into one pass, at most (then it applies them
/// and takes the next frames).
const PASS_WRITES: usize = 262_144;

/// Keys dropped from the overlay under one hold of its lock.
const REMOVE_SLICE: usize = 4_096;

/// What the applier is sent.
enum Msg {
    /// A logged frame.
    Frame(Job),
    /// Apply what is queued now (a drain waits for it).
    Flush,
}

/// One write: a value (a blob's pointer, for blob keys) or a deletion.
pub type Write = (Vec<u8>, Option<sled::IVec>);

/// A frame's writes, in the order they were logged, and its `lsn`.
pub struct Job {
    pub lsn: u64,
    pub writes: Vec<Write>,
}

/// The writes of frames logged and not yet applied to sled.
#[derive(Default)]
pub struct Pending {
    /// Each key's newest pending write and the frame it came from.
    map: BTreeMap<Vec<u8>, (u64, Option<sled::IVec>)>,
    /// The last frame applied to sled.
    applied: u64,
    /// The last frame queued.
    queued: u64,
    /// Why the applier stopped.
    failed: Option<String>,
}

impl Pending {
    /// The newest pending write of `key`: `Some(None)` when it is pending
    /// deletion, `None` when nothing is pending for it.
    pub fn get(&self, key: &[u8]) -> Option<Option<&sled::IVec>> {
        self.map.get(key).map(|(_, v)| v.as_ref())
    }

    /// The pending writes of the keys in `range`, in key order.
    pub fn range(
        &self,
        range: (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>),
    ) -> impl Iterator<Item = (&Vec<u8>, Option<&sled::IVec>)> {
        self.map
            .range::<[u8], _>(range)
            .map(|(k, (_, v))| (k, v.as_ref()))
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when a pass is applied or the applier stops.
    progress: Condvar,
}

/// The applier thread and the overlay it shares with readers.
pub struct Applier {
    shared: Arc<Shared>,
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl Applier {
    /// Starts the thread; `applied` is the last frame sled holds.
    pub fn start(
        db: sled::Db,
        dir: PathBuf,
        applied: u64,
        live: Live,
        faults: Option<Faults>,
    ) -> Result<Applier, Error> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                applied,
                queued: applied,
                ..Pending::default()
            }),
            progress: Condvar::new(),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let worker = Arc::clone(&shared);
        let thread_dir = dir.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-sled-apply".into())
            .spawn(move || {
                let sink = Sink {
                    db: &db,
                    dir: &thread_dir,
                    live: &live,
                    faults: faults.as_ref(),
                };
                run(&sink, &worker, &rx)
            })
            .map_err(|e| Error::io(&dir, "start the sled applier", e))?;
        Ok(Applier {
            shared,
            tx: Some(tx),
            thread: Some(thread),
            dir,
        })
    }

    /// The overlay, for reads.
    pub fn pending(&self) -> Result<MutexGuard<'_, Pending>, Error> {
        lock(&self.shared.pending, &self.dir)
    }

    /// Queues a logged frame: its writes are visible to reads at once, and
    /// reach sled later. Waits while [`QUEUE`] frames are queued already.
    pub fn queue(&self, job: Job) -> Result<(), Error> {
        {
            let mut p = self.pending()?;
            if let Some(why) = &p.failed {
                return Err(Error::io(&self.dir, "apply a commit to sled", why));
            }
            for (k, v) in &job.writes {
                p.map.insert(k.clone(), (job.lsn, v.clone()));
            }
            p.queued = job.lsn;
        }
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::io(&self.dir, "apply a commit to sled", "the applier stopped"))?;
        tx.send(Msg::Frame(job)).map_err(|_| {
            let why = self
                .pending()
                .ok()
                .and_then(|p| p.failed.clone())
                .unwrap_or_else(|| "the applier stopped".into());
            Error::io(&self.dir, "apply a commit to sled", why)
        })
    }

    /// Waits until every queued frame is in sled (or the applier failed).
    pub fn drain(&self) -> Result<(), Error> {
        let behind = {
            let p = self.pending()?;
            p.applied < p.queued
        };
        if behind {
            if let Some(tx) = &self.tx {
                // A stopped applier is reported below.
                let _ = tx.send(Msg::Flush);
            }
        }
        let mut p = self.pending()?;
        while p.applied < p.queued && p.failed.is_none() {
            p = self
                .shared
                .progress
                .wait(p)
                .map_err(|_| poisoned(&self.dir))?;
        }
        match &p.failed {
            Some(why) => Err(Error::io(&self.dir, "apply a commit to sled", why)),
            None => Ok(()),
        }
    }

    /// Whether the applier stopped on an error.
    pub fn failed(&self) -> bool {
        self.pending().map_or(true, |p| p.failed.is_some())
    }

    /// Stops the thread once the queue is applied (or it failed).
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the sled applier thread panicked");
            }
        }
    }
}

impl Drop for Applier {
    fn drop(&mut self) {
        self.stop();
    }
}

fn poisoned(dir: &std::path::Path) -> Error {
    Error::io(dir, "lock", "the pending writes' lock is poisoned")
}

fn lock<'a, T>(m: &'a Mutex<T>, dir: &std::path::Path) -> Result<MutexGuard<'a, T>, Error> {
    m.lock().map_err(|_| poisoned(dir))
}

/// Where the applier writes.
struct Sink<'a> {
    db: &'a sled::Db,
    dir: &'a std::path::Path,
    live: &'a Live,
    faults: Option<&'a Faults>,
}

/// The applier's loop: a pass takes the next frame and the frames queued
/// behind it within [`GATHER`] (up to [`PASS_FRAMES`] frames or
/// [`PASS_WRITES`] writes, or at once when a drain asks for it), applies
/// their merged writes, then drops them from the overlay.
fn run(sink: &Sink, shared: &Shared, rx: &Receiver<Msg>) {
    let mut open = true;
    while open {
        let first = match rx.recv() {
            Ok(Msg::Frame(job)) => job,
            Ok(Msg::Flush) => continue,
            Err(_) => return,
        };
        let deadline = Instant::now() + GATHER;
        let mut last = first.lsn;
        let mut frames = 1;
        let mut merged: BTreeMap<Vec<u8>, Option<sled::IVec>> = BTreeMap::new();
        let mut n = first.writes.len();
        merged.extend(first.writes);
        while n < PASS_WRITES && frames < PASS_FRAMES {
            let wait = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Frame(job)) => {
                    last = job.lsn;
                    frames += 1;
                    n += job.writes.len();
                    merged.extend(job.writes);
                }
                Ok(Msg::Flush) => {
                    // Take what is queued already, then apply.
                    while let Ok(Msg::Frame(job)) = rx.try_recv() {
                        last = job.lsn;
                        merged.extend(job.writes);
                    }
                    break;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let result = apply_pass(sink, &merged, last);
        match result {
            Ok(()) => {
                // In slices, so that reads waiting for the overlay's lock
                // never wait for a whole pass.
                let keys: Vec<&Vec<u8>> = merged.keys().collect();
                for slice in keys.chunks(REMOVE_SLICE) {
                    let Ok(mut p) = shared.pending.lock() else {
                        return;
                    };
                    for k in slice {
                        if p.map.get(*k).is_some_and(|(lsn, _)| *lsn <= last) {
                            p.map.remove(*k);
                        }
                    }
                }
                let Ok(mut p) = shared.pending.lock() else {
                    return;
                };
                p.applied = last;
            }
            Err(e) => {
                tracing::error!("applying commits to sled: {e}");
                let Ok(mut p) = shared.pending.lock() else {
                    return;
                };
                p.failed = Some(e.to_string());
                shared.progress.notify_all();
                return;
            }
        }
        shared.progress.notify_all();
    }
}

/// Applies a pass's merged writes ([`write_keys`]: one key at a time, so
/// the engine's reads never wait for a sled batch; the `applied` marker of
/// frame `lsn` last), then moves the live bytes of the records it wrote.
fn apply_pass(
    sink: &Sink,
    merged: &BTreeMap<Vec<u8>, Option<sled::IVec>>,
    lsn: u64,
) -> Result<(), Error> {
    let mut moved = Vec::new();
    write_keys(
        sink.db,
        sink.dir,
        sink.faults,
        merged.iter().map(|(k, v)| (k, v.clone())),
        lsn,
        |old, new| moved.push((old, new)),
    )?;
    let mut live = lock_live(sink.live, sink.dir)?;
    for (old, new) in moved {
        move_live(&mut live, old, new);
    }
    Ok(())
}
