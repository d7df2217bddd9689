//! The sled implementation: every table in one sled tree, told apart by a
//! one-byte key prefix; user records in the [commit log](super::log), sled
//! holding 16-byte pointers to them.
//!
//! ## The rule
//!
//! **A commit ([`Kv::apply`]) becomes visible after a crash entirely or not
//! at all.** How:
//!
//! 1. The commit is written to the log as one frame: its user records, its
//!    other writes, then a commit entry with its sequence number (`lsn`).
//!    With [`SledOptions::sync_commits`] the frame is fsynced before
//!    anything else happens; otherwise it is handed to the OS, which keeps
//!    it across a process crash (SIGKILL), not a power loss.
//! 2. Only then are its writes applied to sled, one key at a time
//!    ([`write_keys`]: no sled batches, which stall readers and grow
//!    sled's memory), then the frame's `lsn` under the meta key `applied`. With
//!    [`SledOptions::pipeline`] (`sluice run`) `apply` returns once the
//!    frame is logged, and a thread of its own applies queued frames to
//!    sled, several at a time, while reads see their writes in an overlay
//!    ([`super::pending`], which gives the reasoning): the `applied` marker
//!    then names the last frame of each pass, and the rules below hold
//!    unchanged.
//! 3. Every so often (and on [`Kv::flush`]) a checkpoint: the queued
//!    frames are applied, the log is fsynced, sled is flushed, and the
//!    `CHECKPOINT` file (written to a
//!    temporary file, fsynced, renamed) records the last `lsn` and the log
//!    position after it. Log generations before the checkpoint that no
//!    pointer refers to any more are deleted.
//!
//! ## Recovery, on open
//!
//! sled recovers a prefix of the writes and batches it was given, at least
//! everything up to its last flush; so after a crash sled holds every frame
//! up to the checkpoint, possibly some frames after it, and possibly part
//! of one (or, pipelined, part of a pass over several).
//! Opening therefore replays every whole frame of the log after the
//! checkpoint whose `lsn` is above sled's `applied`, in order. A frame's
//! writes are absolute (a value, a pointer, a deletion), so re-applying a
//! partly applied frame yields the frame's state. The torn frame at the
//! end of the log (no commit entry, or a bad checksum with nothing whole
//! after it) never happened: it is cut off, silently — that is a crash
//! during a commit that nobody was told about. Everything else is checked,
//! and a store that cannot be trusted is not opened:
//!
//! - sled's `applied` below the checkpoint: sled lost writes it had
//!   flushed (a truncated or replaced `db` file) → [`Error::Corrupt`];
//! - sled's `applied` beyond the end of the log: the log lost frames
//!   (truncated, or lost in a power loss without `sync_commits`) →
//!   [`Error::Corrupt`];
//! - a bad entry with whole frames after it (damage in the middle): the
//!   store opens with every commit before the damage, the damaged part is
//!   kept aside as `log.<g>.seg.damaged-<offset>`, and [`Recovery::damage`]
//!   names the commits that were lost, for the caller to report.
//!
//! ## Compaction
//!
//! Rewriting a user appends a new copy; the old one is garbage. When the
//! log holds more than twice the live bytes (and at least
//! [`COMPACT_MIN_BYTES`]), each commit also carries forward a bounded slice
//! of the oldest generation's still-live records (read from twice as many
//! bytes of it as the commit's own records take, which outpaces the garbage
//! the commit makes while the log holds more than twice the live bytes;
//! no fixed minimum, so a small commit carries a small slice): compaction
//! is part of ordinary commits, so it
//! is crash-atomic like them and never stalls the engine for long. A
//! generation whose records have all moved is deleted after the next
//! checkpoint.
//!
//! Layout of a store directory: `FORMAT` ([`super::format`]), `LOCK`,
//! `CHECKPOINT`, `sled/`, `log.<generation>.seg`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::log::{self, CommitLog, Damage, Faults, Frame, Pointer, Position};
use super::pending::{Applier, Job, Write};
use super::{Batch, Error, Kv};

/// Prefixes whose values are blob pointers.
const BLOB_PREFIXES: &[u8] = &[super::users::PREFIX];

/// The meta key holding the last frame applied to sled.
const APPLIED: &[u8] = b"x\0applied";

/// Start compacting once the log holds at least this much.
pub const COMPACT_MIN_BYTES: u64 = 128 << 20;

/// Checkpoint after this many bytes of log.
const CHECKPOINT_BYTES: u64 = 256 << 20;

/// Writes per sled batch.
pub(super) const CHUNK: usize = 128;

/// Live bytes per log generation: what the records sled points to take.
/// Shared with the applier thread of a pipelined store, which moves bytes
/// from the pointers it replaces to the ones it writes.
pub(super) type Live = Arc<Mutex<BTreeMap<u32, u64>>>;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// sled's page cache, in bytes (its default of 1 GiB would dominate
    /// the engine's memory).
    pub cache_bytes: u64,
    /// Delete the directory when the store is dropped (simulate, test).
    /// A temporary store keeps no frames and no checkpoints: it is never
    /// reopened.
    pub temporary: bool,
    /// fsync every commit's frame before applying it (what `run` needs to
    /// acknowledge); otherwise commits survive a process crash and become
    /// durable at the next [`Kv::flush`].
    pub sync_commits: bool,
    /// Apply commits to sled on a thread of its own, after `apply` has
    /// returned ([`super::pending`]): a commit costs the caller its log
    /// write (and fsync), not sled's inserts. Reads see every commit at
    /// once either way.
    pub pipeline: bool,
    /// Failure injection, for tests.
    pub faults: Option<Faults>,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            cache_bytes: 32 << 20,
            temporary: false,
            sync_commits: false,
            pipeline: false,
            faults: None,
        }
    }
}

/// What opening the store found and repaired.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Whole frames replayed into sled.
    pub replayed: u64,
    /// Bytes of a torn last frame that were cut off.
    pub torn_bytes: u64,
    /// Damage in the middle of the log, and the commits lost with it.
    pub damage: Option<Damage>,
}

struct Inner {
    log: CommitLog,
    /// The last frame written.
    lsn: u64,
    /// Where compaction goes on.
    compact: Option<Position>,
    since_checkpoint: u64,
    checkpoint: Checkpoint,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Checkpoint {
    lsn: u64,
    at: Position,
}

pub struct SledStore {
    db: sled::Db,
    /// With [`SledOptions::pipeline`]: the thread applying logged frames
    /// to sled, and their writes until it has.
    applier: Option<Applier>,
    /// Live bytes per generation (lock order: `inner`, then `live`).
    live: Live,
    inner: Mutex<Inner>,
    dir: PathBuf,
    options: SledOptions,
    recovery: Recovery,
    _lock: File,
}

fn sled_err(path: &Path) -> impl Fn(sled::Error) -> Error + '_ {
    move |e| Error::io(path, "use sled database", e)
}

/// Takes the store directory `path` for this process (created if need
/// be): its `LOCK` file, held while the returned file lives.
/// [`Error::Locked`] when another process holds it.
pub fn lock(path: &Path) -> Result<std::fs::File, Error> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, "create", e))?;
    let lock_path = path.join("LOCK");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, "open", e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: path.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&lock_path, "lock", e)),
    }
}

impl SledStore {
    pub fn open(path: &Path, options: &SledOptions) -> Result<SledStore, Error> {
        if path.exists() && !path.is_dir() {
            return Err(Error::io(
                path,
                "open",
                "it is a file, and a store is a directory (pass another --store)",
            ));
        }
        let lock = lock(path)?;
        let new = super::format::check(path)?;
        let sled_dir = path.join("sled");
        if !new && !sled_dir.exists() {
            return Err(Error::corrupt(
                &sled_dir,
                "the sled database is missing (the store has a FORMAT file, so it was created)",
            ));
        }
        let db = open_sled(&sled_dir, options.cache_bytes)?;
        let ck_path = path.join("CHECKPOINT");
        let checkpoint = if new {
            // Creating: the checkpoint, then FORMAT last, so that a store
            // cut short while being created is recognised and made again.
            let ck = Checkpoint::default();
            if !options.temporary {
                write_checkpoint(path, ck)?;
            }
            super::format::create(path)?;
            ck
        } else if options.temporary {
            Checkpoint::default()
        } else {
            read_checkpoint(&ck_path)?
        };
        let applied = db
            .get(APPLIED)
            .map_err(sled_err(&sled_dir))?
            .map(|v| {
                decode_u64(&v).ok_or_else(|| Error::corrupt(&sled_dir, "bad `applied` marker"))
            })
            .transpose()?
            .unwrap_or(0);
        if applied < checkpoint.lsn {
            return Err(Error::corrupt(
                &sled_dir,
                format!(
                    "sled holds commits up to {applied}, but the checkpoint says {} were flushed: \
                     the sled files were truncated or replaced by an older copy",
                    checkpoint.lsn
                ),
            ));
        }
        // Live bytes per generation, from every pointer.
        let mut live: BTreeMap<u32, u64> = BTreeMap::new();
        for prefix in BLOB_PREFIXES {
            for item in db.scan_prefix([*prefix]) {
                let (k, v) = item.map_err(sled_err(&sled_dir))?;
                let p = Pointer::decode(&v).ok_or_else(|| {
                    Error::corrupt(
                        &sled_dir,
                        format!(
                            "bad record pointer under key {:?}",
                            String::from_utf8_lossy(&k)
                        ),
                    )
                })?;
                *live.entry(p.generation).or_default() += p.size();
            }
        }
        let mut recovery = Recovery::default();
        let end = if options.temporary {
            Position::default()
        } else {
            let scanned = log::scan(path, checkpoint.at, |frame| {
                if frame.lsn > applied {
                    recovery.replayed += 1;
                    apply_frame(&db, &sled_dir, &mut live, frame, None)?;
                }
                Ok(())
            })?;
            let last = scanned.last_lsn.unwrap_or(checkpoint.lsn);
            if applied > last {
                return Err(Error::corrupt(
                    path,
                    format!(
                        "sled holds commit {applied} but the commit log ends at commit {last}: \
                         the log was truncated, or lost writes that were never made durable"
                    ),
                ));
            }
            recovery.torn_bytes = scanned.torn_bytes;
            if let Some(d) = &scanned.damage {
                keep_damaged(d, path)?;
            }
            recovery.damage = scanned.damage;
            scanned.end
        };
        let log = CommitLog::open(path, end, options.faults.clone())?;
        let lsn = if options.temporary {
            0
        } else {
            applied.max(recovery_last(&db, &sled_dir)?)
        };
        for (g, _) in live.iter().filter(|(_, n)| **n > 0) {
            if !log.generations().contains(g) {
                return Err(Error::corrupt(
                    path,
                    format!("records point into log generation {g}, which is missing"),
                ));
            }
        }
        let live: Live = Arc::new(Mutex::new(live));
        let applier = if options.pipeline && !options.temporary {
            Some(Applier::start(
                db.clone(),
                sled_dir.clone(),
                lsn,
                Arc::clone(&live),
                options.faults.clone(),
            )?)
        } else {
            None
        };
        let store = SledStore {
            db,
            applier,
            live,
            inner: Mutex::new(Inner {
                log,
                lsn,
                compact: None,
                since_checkpoint: 0,
                checkpoint,
            }),
            dir: path.to_owned(),
            options: options.clone(),
            recovery,
            _lock: lock,
        };
        if store.recovery.replayed > 0 || store.recovery.torn_bytes > 0 {
            let mut inner = store.inner()?;
            store.checkpoint(&mut inner)?;
        }
        Ok(store)
    }

    /// What opening found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn inner(&self) -> Result<std::sync::MutexGuard<'_, Inner>, Error> {
        self.inner
            .lock()
            .map_err(|_| Error::io(&self.dir, "lock", "the commit log's lock is poisoned"))
    }

    fn live(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<u32, u64>>, Error> {
        lock_live(&self.live, &self.dir)
    }

    /// A key's value as of the last commit: its pending write when a
    /// logged frame is not yet applied to sled, else sled's.
    fn raw_get(&self, key: &[u8]) -> Result<Option<sled::IVec>, Error> {
        if let Some(a) = &self.applier {
            if let Some(v) = a.pending()?.get(key) {
                return Ok(v.cloned());
            }
        }
        self.db.get(key).map_err(sled_err(&self.dir))
    }

    /// Log bytes durable so far (for power-loss tests): everything after
    /// this position may be lost by a power loss.
    pub fn synced(&self) -> Result<Position, Error> {
        Ok(self.inner()?.log.synced())
    }

    /// Log generations on disk.
    pub fn generations(&self) -> Result<Vec<u32>, Error> {
        Ok(self.inner()?.log.generations())
    }

    /// fsyncs the log, flushes sled, records the checkpoint, deletes log
    /// generations nothing needs any more.
    fn checkpoint(&self, inner: &mut Inner) -> Result<(), Error> {
        if self.options.temporary {
            return Ok(());
        }
        if inner.lsn == inner.checkpoint.lsn && inner.log.position() == inner.checkpoint.at {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // sled is flushed with every frame up to the checkpoint's in it,
        // and the live bytes count every pointer.
        if let Some(a) = &self.applier {
            a.drain()?;
        }
        inner.log.sync()?;
        if let Some(f) = &self.options.faults {
            f.spend(&self.dir)?;
        }
        let synced = started.elapsed();
        let flushed = self.db.flush().map_err(sled_err(&self.dir))?;
        tracing::debug!(
            target: "sluice::store",
            log_sync_ms = synced.as_millis() as u64,
            sled_flush_ms = (started.elapsed() - synced).as_millis() as u64,
            sled_flush_bytes = flushed,
            "checkpoint"
        );
        let ck = Checkpoint {
            lsn: inner.lsn,
            at: inner.log.position(),
        };
        if ck != inner.checkpoint {
            if let Some(f) = &self.options.faults {
                f.spend(&self.dir)?;
            }
            write_checkpoint(&self.dir, ck)?;
            inner.checkpoint = ck;
        }
        inner.since_checkpoint = 0;
        let current = inner.log.generation();
        let mut live = self.live()?;
        let unused: Vec<u32> = inner
            .log
            .generations()
            .into_iter()
            .filter(|g| *g < ck.at.generation && *g != current)
            .filter(|g| live.get(g).copied().unwrap_or(0) == 0)
            .collect();
        if !unused.is_empty() {
            inner.log.remove_generations(&unused)?;
            for g in &unused {
                live.remove(g);
            }
        }
        Ok(())
    }

    /// Adds to `batch` the still-live records of a slice of the oldest
    /// generation, when the log is worth compacting.
    fn compact_into(&self, inner: &mut Inner, batch: &mut Batch, budget: u64) -> Result<(), Error> {
        let total = inner.log.total_bytes();
        let current = inner.log.generation();
        let oldest = {
            let live = self.live()?;
            let bytes: u64 = live.values().sum();
            if total < COMPACT_MIN_BYTES || total <= 2 * bytes {
                return Ok(());
            }
            live.iter()
                .find(|(g, n)| **g < current && **n > 0)
                .map(|(g, _)| *g)
        };
        let Some(oldest) = oldest else {
            return Ok(());
        };
        let from = match inner.compact {
            Some(p) if p.generation == oldest => p.offset,
            _ => 0,
        };
        let Some((entries, next)) = inner.log.read_entries(oldest, from, budget)? else {
            inner.compact = Some(Position {
                generation: oldest + 1,
                offset: 0,
            });
            return Ok(());
        };
        for (entry, value) in entries {
            let log::Entry::Blob { key, pointer } = entry else {
                continue;
            };
            if batch.blobs.contains_key(&key) {
                continue;
            }
            let current = self.raw_get(&key)?;
            if current.as_deref().and_then(Pointer::decode) == Some(pointer) {
                batch.blobs.insert(key, Some(value));
            }
        }
        inner.compact = Some(Position {
            generation: oldest,
            offset: next,
        });
        Ok(())
    }
}

/// The last frame sled holds (after replay).
fn recovery_last(db: &sled::Db, dir: &Path) -> Result<u64, Error> {
    Ok(db
        .get(APPLIED)
        .map_err(sled_err(dir))?
        .and_then(|v| decode_u64(&v))
        .unwrap_or(0))
}

fn decode_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// A frame's writes as sled takes them: each user record's pointer, then
/// the other writes (deletions of records among them), in log order.
fn frame_writes(frame: Frame) -> Vec<Write> {
    let mut writes = Vec::with_capacity(frame.blobs.len() + frame.ops.len());
    for (k, p) in frame.blobs {
        writes.push((k, Some(sled::IVec::from(&p.encode()[..]))));
    }
    for (k, v) in frame.ops {
        writes.push((k, v.map(sled::IVec::from)));
    }
    writes
}

/// Applies a frame's writes to sled ([`write_keys`]), keeping the
/// live-bytes accounting: what recovery replays, and what a store that is
/// not pipelined applies as it commits.
fn apply_frame(
    db: &sled::Db,
    dir: &Path,
    live: &mut BTreeMap<u32, u64>,
    frame: Frame,
    faults: Option<&Faults>,
) -> Result<(), Error> {
    let lsn = frame.lsn;
    write_keys(db, dir, faults, frame_writes(frame), lsn, |old, new| {
        move_live(live, old, new)
    })
}

/// Writes to sled one key at a time, then (when `lsn` is not 0) the
/// `applied` marker naming frame `lsn`. `moved` is told, for each user
/// record written or deleted, the pointer sled handed back (whose bytes
/// stop being live) and the one written: a record costs one descent of
/// the tree instead of a read and a write.
///
/// Not in sled batches: a batch takes sled's concurrency-control lock for
/// writing, which stalls every read while it is applied (the engine's,
/// when a pipelined store applies on a thread of its own), and large
/// batches make sled's memory grow. Nothing needs a batch's atomicity:
/// every write is absolute, and recovery replays every whole frame after
/// the marker, which is written last.
pub(super) fn write_keys<K: AsRef<[u8]>>(
    db: &sled::Db,
    dir: &Path,
    faults: Option<&Faults>,
    writes: impl IntoIterator<Item = (K, Option<sled::IVec>)>,
    lsn: u64,
    mut moved: impl FnMut(Option<Pointer>, Option<Pointer>),
) -> Result<(), Error> {
    for (i, (k, v)) in writes.into_iter().enumerate() {
        if i % CHUNK == 0 {
            if let Some(f) = faults {
                f.spend(dir)?;
            }
        }
        let k = k.as_ref();
        let blob = is_blob_key(k);
        let new = v.as_deref().filter(|_| blob).and_then(Pointer::decode);
        let old = match v {
            Some(v) => db.insert(k, v),
            None => db.remove(k),
        }
        .map_err(sled_err(dir))?;
        if blob {
            moved(old.as_deref().and_then(Pointer::decode), new);
        }
    }
    if lsn > 0 {
        if let Some(f) = faults {
            f.spend(dir)?;
        }
        db.insert(APPLIED, &lsn.to_be_bytes()[..])
            .map_err(sled_err(dir))?;
    }
    Ok(())
}

pub(super) fn lock_live<'a>(
    live: &'a Live,
    dir: &Path,
) -> Result<std::sync::MutexGuard<'a, BTreeMap<u32, u64>>, Error> {
    live.lock()
        .map_err(|_| Error::io(dir, "lock", "the live bytes' lock is poisoned"))
}

pub(super) fn is_blob_key(key: &[u8]) -> bool {
    BLOB_PREFIXES.contains(&key.first().copied().unwrap_or(0))
}

/// Merges a scan of sled with the pending writes over the same range (a
/// pending write wins; a pending deletion hides the key), up to `limit`
/// entries whose keys start with `prefix`.
fn merge<'a>(
    prefix: &[u8],
    overlay: impl Iterator<Item = (&'a Vec<u8>, Option<&'a sled::IVec>)>,
    mut sled: sled::Iter,
    limit: usize,
    out: &mut super::Entries,
) -> Result<(), sled::Error> {
    let mut overlay = overlay
        .take_while(|(k, _)| k.starts_with(prefix))
        .peekable();
    let mut next_sled = sled.next().transpose()?;
    while out.len() < limit {
        let from_sled = next_sled
            .as_ref()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone());
        let take_overlay = match (overlay.peek(), &from_sled) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((ok, _)), Some(sk)) => ok.as_slice() <= sk.as_ref(),
        };
        if take_overlay {
            let Some((k, v)) = overlay.next() else { break };
            if from_sled
                .as_ref()
                .is_some_and(|sk| sk.as_ref() == k.as_slice())
            {
                next_sled = sled.next().transpose()?;
            }
            if let Some(v) = v {
                out.push((k.clone(), v.to_vec()));
            }
        } else if let Some((k, v)) = next_sled.take() {
            out.push((k.to_vec(), v.to_vec()));
            next_sled = sled.next().transpose()?;
        }
    }
    Ok(())
}

/// Moves live bytes from the record at `old` to `new`.
pub(super) fn move_live(live: &mut BTreeMap<u32, u64>, old: Option<Pointer>, new: Option<Pointer>) {
    if let Some(old) = old {
        let n = live.entry(old.generation).or_default();
        *n = n.saturating_sub(old.size());
    }
    if let Some(p) = new {
        *live.entry(p.generation).or_default() += p.size();
    }
}

fn write_checkpoint(dir: &Path, ck: Checkpoint) -> Result<(), Error> {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&ck.lsn.to_be_bytes());
    b.extend_from_slice(&ck.at.generation.to_be_bytes());
    b.extend_from_slice(&ck.at.offset.to_be_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    let tmp = dir.join("CHECKPOINT.tmp");
    let path = dir.join("CHECKPOINT");
    std::fs::write(&tmp, &b)
        .and_then(|()| File::open(&tmp)?.sync_all())
        .map_err(|e| Error::io(&tmp, "write", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, "replace", e))?;
    log::sync_dir(dir)
}

fn read_checkpoint(path: &Path) -> Result<Checkpoint, Error> {
    let b = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::corrupt(path, "the checkpoint file is missing")
        } else {
            Error::io(path, "read", e)
        }
    })?;
    let bad = || Error::corrupt(path, "the checkpoint file is damaged (checksum mismatch)");
    if b.len() != 24 {
        return Err(bad());
    }
    let crc = u32::from_be_bytes(b[20..24].try_into().map_err(|_| bad())?);
    if crc32fast::hash(&b[..20]) != crc {
        return Err(bad());
    }
    let lsn = u64::from_be_bytes(b[..8].try_into().map_err(|_| bad())?);
    let generation = u32::from_be_bytes(b[8..12].try_into().map_err(|_| bad())?);
    let offset = u64::from_be_bytes(b[12..20].try_into().map_err(|_| bad())?);
    Ok(Checkpoint {
        lsn,
        at: Position { generation, offset },
    })
}

/// Copies the damaged part of a log generation aside before it is cut off.
fn keep_damaged(d: &Damage, dir: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(&d.path).map_err(|e| Error::io(&d.path, "read", e))?;
    let name = format!(
        "{}.damaged-{}",
        d.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        d.offset
    );
    let aside = dir.join(name);
    let from = (d.offset as usize).min(bytes.len());
    std::fs::write(&aside, &bytes[from..]).map_err(|e| Error::io(&aside, "write", e))?;
    Ok(())
}

impl std::fmt::Display for Recovery {
    /// What a user should be told, if anything (empty when the store was
    /// closed cleanly or only a torn last commit was dropped).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(d) = &self.damage {
            let lost = &d.lost_commits;
            write!(
                f,
                "the commit log {} is damaged at offset {}: {} later commit(s) were lost ({}–{}); \
                 the store was opened with every commit before the damage, and the damaged part was kept beside it",
                d.path.display(),
                d.offset,
                lost.len(),
                lost.first().copied().unwrap_or(0),
                lost.last().copied().unwrap_or(0),
            )?;
        }
        Ok(())
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if self.options.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        if self.options.faults.as_ref().is_some_and(Faults::tripped) {
            if let Some(a) = &mut self.applier {
                a.stop();
            }
            return;
        }
        let result = match self.inner.lock() {
            Ok(mut inner) => self.checkpoint(&mut inner),
            Err(_) => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!("closing the store: {e}");
        }
    }
}

impl Kv for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.raw_get(key)?.map(|v| v.to_vec()))
    }

    fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let Some(v) = self.raw_get(key)? else {
            return Ok(None);
        };
        let p = Pointer::decode(&v).ok_or_else(|| {
            Error::corrupt(
                &self.dir,
                format!(
                    "bad record pointer ({} bytes) under {:?}",
                    v.len(),
                    String::from_utf8_lossy(key)
                ),
            )
        })?;
        self.inner()?.log.read(p).map(Some)
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<super::Entries, Error> {
        let mut out = Vec::new();
        let (lo, hi) = super::scan_range(prefix, after, before);
        let iter = self.db.range::<&[u8], _>((lo, hi));
        if let Some(a) = &self.applier {
            let pending = a.pending()?;
            if !pending.is_empty() {
                // The lock is held for the whole scan: the applier cannot
                // drop a write from the overlay while sled is read.
                let overlay = pending.range((lo, hi));
                merge(prefix, overlay, iter, limit, &mut out).map_err(sled_err(&self.dir))?;
                return Ok(out);
            }
        }
        for item in iter {
            let (k, v) = item.map_err(sled_err(&self.dir))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn apply(&self, mut batch: Batch) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        batch.seal()?;
        let mut inner = self.inner()?;
        let journal = !self.options.temporary;
        if journal {
            let size: u64 = batch
                .blobs
                .values()
                .map(|v| v.as_ref().map_or(0, |v| v.len() as u64))
                .sum();
            let budget = 2 * size;
            self.compact_into(&mut inner, &mut batch, budget)?;
        }
        inner.log.begin_frame()?;
        let mut frame = Frame {
            lsn: 0,
            blobs: Vec::with_capacity(batch.blobs.len()),
            ops: Vec::with_capacity(batch.ops.len()),
            end: Position::default(),
        };
        let mut bytes = 0u64;
        for (k, v) in batch.blobs {
            match v {
                Some(v) => {
                    let p = inner.log.append_blob(&k, &v)?;
                    bytes += p.size();
                    frame.blobs.push((k, p));
                }
                None => frame.ops.push((k, None)),
            }
        }
        frame.ops.extend(batch.ops);
        if journal {
            // Ordinary writes in entries of about 1 MiB.
            let mut start = 0;
            let mut size = 0usize;
            for i in 0..frame.ops.len() {
                let (k, v) = &frame.ops[i];
                size += k.len() + v.as_ref().map_or(0, Vec::len) + 9;
                if size >= 1 << 20 || i + 1 == frame.ops.len() {
                    inner.log.append_ops(&frame.ops[start..=i])?;
                    start = i + 1;
                    bytes += size as u64;
                    size = 0;
                }
            }
            inner.lsn += 1;
            frame.lsn = inner.lsn;
            inner.log.commit(frame.lsn)?;
            if self.options.sync_commits {
                inner.log.sync()?;
            }
        } else {
            inner.log.write_out()?;
        }
        match &self.applier {
            Some(a) => {
                // The applier moves the live bytes as it writes.
                a.queue(Job {
                    lsn: frame.lsn,
                    writes: frame_writes(frame),
                })?;
            }
            None => {
                let mut live = self.live()?;
                apply_frame(
                    &self.db,
                    &self.dir,
                    &mut live,
                    frame,
                    self.options.faults.as_ref(),
                )?;
            }
        }
        inner.since_checkpoint += bytes;
        if journal && inner.since_checkpoint >= CHECKPOINT_BYTES {
            self.checkpoint(&mut inner)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), Error> {
        let mut inner = self.inner()?;
        if self.options.temporary {
            return inner.log.write_out();
        }
        self.checkpoint(&mut inner)
    }
}

/// Opens sled's database. We hold the store's `LOCK`, so no other store
/// has it open; but a store of this process that was just dropped may
/// still hold sled's own file lock for a moment (its background threads
/// let go of the file after the drop returns). That lock is waited for, a
/// few seconds at most; anything else is an error at once.
fn open_sled(dir: &Path, cache_bytes: u64) -> Result<sled::Db, Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            // sled reports its lock as an `Other` I/O error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            // The disk, not the store: a full disk, a read-only or
            // unreadable directory is said as such (a store called
            // damaged invites deleting it).
            Err(sled::Error::Io(e)) => return Err(Error::io(dir, "open", e)),
            Err(e) => return Err(Error::corrupt(dir, format!("sled cannot open it: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_failure_opening_sled_is_said_as_one_not_as_damage() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = dir.path().join("store");
        drop(SledStore::open(&store, &SledOptions::default()).expect("a new store"));
        // sled's directory cannot be opened (as on a full disk, ENOSPC):
        // the store is not damaged, and the message says what failed.
        let sled = store.join("sled");
        std::fs::remove_dir_all(&sled).expect("remove sled");
        std::fs::write(&sled, b"not a directory").expect("a file in its place");
        let e = match SledStore::open(&store, &SledOptions::default()) {
            Err(e) => e,
            Ok(_) => panic!("opened a store whose sled directory is a file"),
        };
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains(&sled.display().to_string()), "{text}");
        assert!(
            !text.contains("damaged") && !text.contains("os error"),
            "{text}"
        );
    }

    fn key(i: u32) -> Vec<u8> {
        let mut k = vec![super::super::users::PREFIX];
        k.extend_from_slice(format!("user-{i}").as_bytes());
        k
    }

    #[test]
    fn blobs_survive_compaction_and_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("store");
        {
            let store = SledStore::open(&path, &SledOptions::default()).expect("open");
            // Enough rewrites to pass COMPACT_MIN_BYTES and roll generations.
            for round in 0..60u8 {
                let mut b = Batch::default();
                for i in 0..400 {
                    b.put_blob(key(i), vec![round; 8_000 + i as usize]);
                }
                store.apply(b).expect("apply");
                store.flush().expect("flush");
            }
            let gens = store.generations().expect("gens");
            assert!(
                gens.len() <= 3,
                "old generations were compacted away: {gens:?}"
            );
        }
        let store = SledStore::open(&path, &SledOptions::default()).expect("reopen");
        for i in 0..400 {
            assert_eq!(
                store.get_blob(&key(i)).expect("read"),
                Some(vec![59u8; 8_000 + i as usize])
            );
        }
    }

    #[test]
    fn a_truncated_sled_file_is_an_error_naming_the_store() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("store");
        {
            let store = SledStore::open(&path, &SledOptions::default()).expect("open");
            for round in 0..20u8 {
                let mut b = Batch::default();
                for i in 0..50 {
                    b.put_blob(key(i), vec![round; 2_000]);
                    b.put(vec![b't', round, i as u8], vec![round; 100]);
                }
                store.apply(b).expect("apply");
            }
            store.flush().expect("checkpoint");
        }
        let db = path.join("sled/db");
        let len = std::fs::metadata(&db).expect("db").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .expect("open db");
        f.set_len(len / 3).expect("truncate");
        drop(f);
        let e = SledStore::open(&path, &SledOptions::default())
            .err()
            .expect("a truncated sled file is not opened silently");
        assert!(
            e.to_string().contains(&path.display().to_string()),
            "names the store: {e}"
        );
    }

    /// The state a reader sees: every user record and every other key.
    fn read_all(store: &SledStore) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut out = BTreeMap::new();
        for (k, _) in store.scan(b"u", None, None, usize::MAX).expect("scan") {
            let v = store.get_blob(&k).expect("blob").expect("present");
            out.insert(k, v);
        }
        for (k, v) in store.scan(b"t", None, None, usize::MAX).expect("scan") {
            assert_eq!(
                store.get(&k).expect("get"),
                Some(v.clone()),
                "get agrees with scan"
            );
            out.insert(k, v);
        }
        out
    }

    /// Commit `i` of a run: blob puts and deletions, ordinary puts and
    /// deletions (some cancelling the previous commit's), in a few keys.
    fn commit(i: u32, model: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> Batch {
        let mut b = Batch::default();
        for j in 0..12u32 {
            let n = (i * 7 + j * 13) % 23;
            let (blob, key) = if n.is_multiple_of(3) {
                (true, key(n))
            } else {
                (false, vec![b't', n as u8])
            };
            if (i + j).is_multiple_of(5) {
                if blob {
                    b.delete_blob(key.clone());
                } else {
                    b.delete(key.clone());
                }
                model.remove(&key);
            } else {
                let v = vec![(i + j) as u8; 100 + (n as usize) * 40];
                if blob {
                    b.put_blob(key.clone(), v.clone());
                } else {
                    b.put(key.clone(), v.clone());
                }
                model.insert(key, v);
            }
        }
        b
    }

    fn pipelined(faults: Option<Faults>) -> SledOptions {
        SledOptions {
            sync_commits: true,
            pipeline: true,
            faults,
            ..SledOptions::default()
        }
    }

    #[test]
    fn a_pipelined_store_reads_every_commit_at_once_and_after_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("store");
        let mut model = BTreeMap::new();
        {
            let store = SledStore::open(&path, &pipelined(None)).expect("open");
            for i in 0..200 {
                store.apply(commit(i, &mut model)).expect("apply");
                assert_eq!(read_all(&store), model, "after commit {i}");
                if i % 50 == 49 {
                    store.flush().expect("checkpoint");
                }
            }
        }
        let store = SledStore::open(&path, &SledOptions::default()).expect("reopen");
        assert_eq!(read_all(&store), model);
    }

    /// A failure at any physical write of a pipelined store (a log entry,
    /// an fsync, one of the applier's sled batches) as if the process died
    /// there: reopened, the store holds some commit's state, and never one
    /// before the last commit `apply` returned for.
    #[test]
    fn a_pipelined_store_keeps_every_acknowledged_commit_whatever_write_fails() {
        const COMMITS: u32 = 30;
        let mut states = vec![BTreeMap::new()];
        let mut model = BTreeMap::new();
        for i in 0..COMMITS {
            commit(i, &mut model);
            states.push(model.clone());
        }
        let counting = Faults::counting();
        {
            let dir = tempfile::tempdir().expect("tmp");
            let store = SledStore::open(&dir.path().join("s"), &pipelined(Some(counting.clone())))
                .expect("open");
            let mut m = BTreeMap::new();
            for i in 0..COMMITS {
                store.apply(commit(i, &mut m)).expect("apply");
            }
            store.flush().expect("flush");
        }
        let total = counting.spent();
        for n in 0..total {
            let dir = tempfile::tempdir().expect("tmp");
            let path = dir.path().join("s");
            let faults = Faults::after(n);
            let mut acknowledged = 0;
            {
                let Ok(store) = SledStore::open(&path, &pipelined(Some(faults.clone()))) else {
                    continue;
                };
                let mut m = BTreeMap::new();
                for i in 0..COMMITS {
                    if store.apply(commit(i, &mut m)).is_err() {
                        break;
                    }
                    acknowledged = i as usize + 1;
                }
                faults.trip();
            }
            let store = SledStore::open(&path, &SledOptions::default())
                .unwrap_or_else(|e| panic!("reopen after a failure at write {n}: {e}"));
            let got = read_all(&store);
            let j = states
                .iter()
                .rposition(|s| *s == got)
                .unwrap_or_else(|| panic!("failure at write {n}: the store is no commit's state"));
            assert!(
                j >= acknowledged,
                "failure at write {n}: commit {acknowledged} was acknowledged, the store is at {j}"
            );
        }
    }

    #[test]
    fn a_second_open_is_refused_with_one_sentence() {
        let dir = tempfile::tempdir().expect("tmp");
        let _a = SledStore::open(dir.path(), &SledOptions::default()).expect("open");
        let e = SledStore::open(dir.path(), &SledOptions::default())
            .err()
            .expect("locked");
        assert!(matches!(e, Error::Locked { .. }), "{e}");
        assert!(e.to_string().contains("in use by another sluice process"));
    }
}
