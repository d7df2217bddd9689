//! The commit log: every commit of a journaled store is first written here
//! as one frame, then applied to sled. The log also holds the bytes of the
//! large values (user records): sled keeps a 16-byte [`Pointer`] into it.
//!
//! ## Files
//!
//! `log.<generation>.seg` in the store directory, generations counting up.
//! A frame never spans two generations; a new generation starts when the
//! current one passes [`SEGMENT_BYTES`].
//!
//! ## Entries
//!
//! Every entry is `[len: u32][crc32 of payload: u32][payload]`, and the
//! payload's first byte says what it is:
//!
//! | kind | payload after the kind byte | |
//! |---|---|---|
//! | `B` | `[key len: u16][key][value]` | a blob put; its [`Pointer`] is the entry's offset |
//! | `O` | `([key len: u32][key][0 \| 1][value len: u32][value])*` | ordinary writes (1) and deletions (0) |
//! | `C` | `[lsn: u64][entries: u32]` | the end of a frame: the commit with this sequence number is whole |
//!
//! A frame is the entries of one commit followed by its `C` entry. A frame
//! without its `C` entry never happened.
//!
//! ## Why a prefix of the log is always a consistent store
//!
//! A commit is visible after a crash if and only if its `C` entry is in the
//! log: recovery replays the writes of every whole frame after the last
//! checkpoint, in order, into sled, and drops an incomplete last frame. The
//! writes of a frame are absolute (a value or a deletion), so replaying a
//! frame that sled had already (partly) applied gives the same state.
//! Nothing is written to sled before the frame that contains it is in the
//! log, so sled never holds a pointer into bytes the log does not have (in
//! the synced mode, before the frame is on disk).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use super::Error;

/// A generation grows to about this size before the next one starts.
pub const SEGMENT_BYTES: u64 = 64 << 20;

const HEADER: u64 = 8;
const KIND_BLOB: u8 = b'B';
const KIND_OPS: u8 = b'O';
const KIND_COMMIT: u8 = b'C';
/// A commit entry's payload: kind, lsn, entry count.
const COMMIT_LEN: u32 = 1 + 8 + 4;

/// Where a blob lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    pub generation: u32,
    /// The entry's offset in its generation's file.
    pub offset: u64,
    /// The entry's payload length.
    pub len: u32,
}

impl Pointer {
    pub const SIZE: usize = 16;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[..4].copy_from_slice(&self.generation.to_be_bytes());
        b[4..12].copy_from_slice(&self.offset.to_be_bytes());
        b[12..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Pointer> {
        let g: [u8; 4] = b.get(..4)?.try_into().ok()?;
        let o: [u8; 8] = b.get(4..12)?.try_into().ok()?;
        let l: [u8; 4] = b.get(12..16)?.try_into().ok()?;
        (b.len() == Self::SIZE).then_some(Pointer {
            generation: u32::from_be_bytes(g),
            offset: u64::from_be_bytes(o),
            len: u32::from_be_bytes(l),
        })
    }

    /// Bytes the entry takes in the log.
    pub fn size(&self) -> u64 {
        HEADER + self.len as u64
    }
}

/// A position in the log: a generation and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub generation: u32,
    pub offset: u64,
}

/// Failure injection for tests: every physical write (a log entry, a sled
/// batch, an fsync) spends one unit; when none are left the write fails,
/// a log entry only half written, and so does every later one, as if the
/// process had died there.
#[derive(Debug, Clone)]
pub struct Faults {
    left: Arc<AtomicI64>,
    dead: Arc<AtomicBool>,
}

impl Faults {
    /// Fails the `n`-th write from now (0 = the next one).
    pub fn after(n: i64) -> Faults {
        Faults {
            left: Arc::new(AtomicI64::new(n)),
            dead: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Never fails; counts writes (see [`Faults::spent`]).
    pub fn counting() -> Faults {
        Faults::after(i64::MAX)
    }

    /// Writes spent so far (for [`Faults::counting`]).
    pub fn spent(&self) -> i64 {
        i64::MAX - self.left.load(Ordering::SeqCst)
    }

    /// Stops every write from now on, as if the process died here.
    pub fn trip(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    pub fn tripped(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Spends one write; `Err` when this one fails.
    pub fn spend(&self, path: &Path) -> Result<(), Error> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Error::io(path, "write", "injected fault (stopped)"));
        }
        if self.left.fetch_sub(1, Ordering::SeqCst) <= 0 {
            self.dead.store(true, Ordering::SeqCst);
            return Err(Error::io(path, "write", "injected fault"));
        }
        Ok(())
    }
}

fn file_name(dir: &Path, generation: u32) -> PathBuf {
    dir.join(format!("log.{generation}.seg"))
}

/// A write of an `O` entry, or of a replayed frame.
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// An entry with its value's bytes (empty but for blobs).
pub type EntryBytes = (Entry, Vec<u8>);

/// What one entry is.
#[derive(Debug)]
pub enum Entry {
    Blob { key: Vec<u8>, pointer: Pointer },
    Ops(Vec<Op>),
    Commit { lsn: u64 },
}

pub struct CommitLog {
    dir: PathBuf,
    generation: u32,
    writer: BufWriter<File>,
    /// Bytes in the current generation's file (buffered ones included).
    len: u64,
    /// Bytes of the current generation known to be on disk.
    synced: u64,
    /// Bytes handed to the OS.
    written: u64,
    readers: BTreeMap<u32, File>,
    /// Entries in the frame being written.
    frame_entries: u32,
    faults: Option<Faults>,
}

impl CommitLog {
    /// Opens the log in `dir` for appending at `end` (the end of the last
    /// whole frame, found by [`scan`]): anything after it is cut off.
    pub fn open(dir: &Path, end: Position, faults: Option<Faults>) -> Result<CommitLog, Error> {
        let mut readers = BTreeMap::new();
        for g in generations(dir)? {
            if g > end.generation {
                // Generations after the end hold only a torn frame.
                let path = file_name(dir, g);
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, "remove", e))?;
                continue;
            }
            let path = file_name(dir, g);
            readers.insert(
                g,
                File::open(&path).map_err(|e| Error::io(&path, "open", e))?,
            );
        }
        let path = file_name(dir, end.generation);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "open", e))?;
        let on_disk = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat", e))?
            .len();
        if on_disk > end.offset {
            file.set_len(end.offset)
                .map_err(|e| Error::io(&path, "truncate", e))?;
            file.sync_all().map_err(|e| Error::io(&path, "fsync", e))?;
        }
        let mut appender = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "open", e))?;
        appender.flush().map_err(|e| Error::io(&path, "open", e))?;
        readers.insert(
            end.generation,
            File::open(&path).map_err(|e| Error::io(&path, "open", e))?,
        );
        sync_dir(dir)?;
        Ok(CommitLog {
            dir: dir.to_owned(),
            generation: end.generation,
            writer: BufWriter::with_capacity(1 << 20, appender),
            len: end.offset,
            synced: end.offset,
            written: end.offset,
            readers,
            frame_entries: 0,
            faults,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        file_name(&self.dir, self.generation)
    }

    /// The end of what was appended.
    pub fn position(&self) -> Position {
        Position {
            generation: self.generation,
            offset: self.len,
        }
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Generations on disk, oldest first.
    pub fn generations(&self) -> Vec<u32> {
        self.readers.keys().copied().collect()
    }

    /// Bytes in every generation.
    pub fn total_bytes(&self) -> u64 {
        let mut total = self.len;
        for (g, f) in &self.readers {
            if *g != self.generation {
                total += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        total
    }

    /// Starts the next frame, in a new generation when this one is full.
    pub fn begin_frame(&mut self) -> Result<(), Error> {
        self.frame_entries = 0;
        if self.len >= SEGMENT_BYTES {
            self.sync()?;
            self.generation += 1;
            let path = self.path();
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, "create", e))?;
            sync_dir(&self.dir)?;
            self.readers.insert(
                self.generation,
                File::open(&path).map_err(|e| Error::io(&path, "open", e))?,
            );
            self.writer = BufWriter::with_capacity(1 << 20, file);
            self.len = 0;
            self.synced = 0;
            self.written = 0;
        }
        Ok(())
    }

    fn append(&mut self, payload: &[&[u8]]) -> Result<Pointer, Error> {
        let total: usize = payload.iter().map(|p| p.len()).sum();
        let len = u32::try_from(total)
            .map_err(|_| Error::io(&self.path(), "append", "entry larger than 4 GiB"))?;
        let mut crc = crc32fast::Hasher::new();
        for p in payload {
            crc.update(p);
        }
        let crc = crc.finalize();
        if let Some(f) = &self.faults {
            if let Err(e) = f.spend(&self.path()) {
                // Die half-way through the entry.
                let mut bytes = Vec::with_capacity(total + 8);
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(&crc.to_be_bytes());
                for p in payload {
                    bytes.extend_from_slice(p);
                }
                let half = bytes.len() / 2;
                let _ = self.writer.write_all(&bytes[..half]);
                let _ = self.writer.flush();
                return Err(e);
            }
        }
        let path = self.path();
        let w = |e| Error::io(&path, "append", e);
        self.writer.write_all(&len.to_be_bytes()).map_err(w)?;
        self.writer.write_all(&crc.to_be_bytes()).map_err(w)?;
        for p in payload {
            self.writer.write_all(p).map_err(w)?;
        }
        let p = Pointer {
            generation: self.generation,
            offset: self.len,
            len,
        };
        self.len += HEADER + len as u64;
        self.frame_entries += 1;
        Ok(p)
    }

    /// Appends a blob put; its value is readable at once (after
    /// [`CommitLog::write_out`] for other readers).
    pub fn append_blob(&mut self, key: &[u8], value: &[u8]) -> Result<Pointer, Error> {
        let klen = u16::try_from(key.len())
            .map_err(|_| Error::io(&self.path(), "append", "key longer than 64 KiB"))?;
        self.append(&[&[KIND_BLOB], &klen.to_be_bytes(), key, value])
    }

    /// Appends ordinary writes.
    pub fn append_ops(&mut self, ops: &[Op]) -> Result<(), Error> {
        let mut buf = Vec::with_capacity(1 + ops.len() * 48);
        buf.push(KIND_OPS);
        for (k, v) in ops {
            buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
            buf.extend_from_slice(k);
            match v {
                Some(v) => {
                    buf.push(1);
                    buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    buf.extend_from_slice(v);
                }
                None => buf.push(0),
            }
        }
        self.append(&[&buf]).map(|_| ())
    }

    /// Ends the frame: writes its commit entry and hands everything to the
    /// OS (a process crash loses nothing after this; a power loss may,
    /// until [`CommitLog::sync`]).
    pub fn commit(&mut self, lsn: u64) -> Result<(), Error> {
        let n = self.frame_entries;
        self.append(&[&[KIND_COMMIT], &lsn.to_be_bytes(), &n.to_be_bytes()])?;
        self.write_out()
    }

    /// Hands buffered appends to the OS.
    pub fn write_out(&mut self) -> Result<(), Error> {
        if self.written < self.len {
            let path = self.path();
            self.writer
                .flush()
                .map_err(|e| Error::io(&path, "write", e))?;
            self.written = self.len;
        }
        Ok(())
    }

    /// Makes everything appended durable.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.write_out()?;
        if self.synced < self.len {
            if let Some(f) = &self.faults {
                f.spend(&self.path())?;
            }
            let path = self.path();
            self.writer
                .get_ref()
                .sync_data()
                .map_err(|e| Error::io(&path, "fsync", e))?;
            self.synced = self.len;
        }
        Ok(())
    }

    /// Bytes of the current generation that are on disk (for power-loss
    /// tests).
    pub fn synced(&self) -> Position {
        Position {
            generation: self.generation,
            offset: self.synced,
        }
    }

    /// Reads the blob at `p`, checking its length, checksum and kind.
    pub fn read(&mut self, p: Pointer) -> Result<Vec<u8>, Error> {
        if p.generation == self.generation && p.offset + p.size() > self.written {
            self.write_out()?;
        }
        let path = file_name(&self.dir, p.generation);
        let file = self.readers.get(&p.generation).ok_or_else(|| {
            Error::corrupt(
                &path,
                format!(
                    "generation {} is missing but a record points into it",
                    p.generation
                ),
            )
        })?;
        let mut buf = vec![0u8; p.size() as usize];
        file.read_exact_at(&mut buf, p.offset)
            .map_err(|e| Error::io(&path, &format!("read at {}", p.offset), e))?;
        match decode_entry(&buf, p.generation, p.offset) {
            Some((Entry::Blob { key, .. }, _)) => {
                let start = HEADER as usize + 3 + key.len();
                Ok(buf.split_off(start))
            }
            _ => Err(Error::corrupt(
                &path,
                format!("no whole record at offset {} (checksum mismatch)", p.offset),
            )),
        }
    }

    /// Reads up to `max` bytes of whole entries of `generation` from
    /// `offset` (for compaction); returns them with the offset after the
    /// last one read, `None` at the generation's end.
    pub fn read_entries(
        &mut self,
        generation: u32,
        offset: u64,
        max: u64,
    ) -> Result<Option<(Vec<EntryBytes>, u64)>, Error> {
        self.write_out()?;
        let path = file_name(&self.dir, generation);
        let Some(file) = self.readers.get(&generation) else {
            return Ok(None);
        };
        let size = file
            .metadata()
            .map_err(|e| Error::io(&path, "stat", e))?
            .len();
        if offset >= size {
            return Ok(None);
        }
        let want = max.min(size - offset).max(HEADER);
        let mut buf = vec![0u8; want as usize];
        let n = read_at_most(file, &mut buf, offset).map_err(|e| Error::io(&path, "read", e))?;
        buf.truncate(n);
        let mut out = Vec::new();
        let mut at = 0usize;
        while let Some((entry, used)) = decode_entry(&buf[at..], generation, offset + at as u64) {
            let value = match &entry {
                Entry::Blob { key, pointer } => {
                    let start = at + HEADER as usize + 3 + key.len();
                    let end = at + pointer.size() as usize;
                    buf[start..end].to_vec()
                }
                _ => Vec::new(),
            };
            out.push((entry, value));
            at += used;
        }
        if at == 0 {
            // One entry larger than `max`: read it whole.
            let head = &buf[..HEADER as usize];
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
            if offset + HEADER + len > size {
                return Ok(None);
            }
            return self.read_entries(generation, offset, HEADER + len);
        }
        Ok(Some((out, offset + at as u64)))
    }

    /// Deletes whole generations (nothing may point into them any more).
    pub fn remove_generations(&mut self, generations: &[u32]) -> Result<(), Error> {
        for g in generations {
            if *g == self.generation {
                continue;
            }
            self.readers.remove(g);
            let path = file_name(&self.dir, *g);
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, "remove", e))?;
        }
        sync_dir(&self.dir)
    }
}

fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Decodes the entry at the start of `buf`; `None` when it is not whole or
/// its checksum or layout is wrong. Returns the entry and its size.
pub fn decode_entry(buf: &[u8], generation: u32, offset: u64) -> Option<(Entry, usize)> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?);
    let crc = u32::from_be_bytes(buf.get(4..8)?.try_into().ok()?);
    let end = (HEADER as usize).checked_add(len as usize)?;
    let payload = buf.get(HEADER as usize..end)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let (&kind, rest) = payload.split_first()?;
    let entry = match kind {
        KIND_BLOB => {
            let klen = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
            let key = rest.get(2..2 + klen)?.to_vec();
            Entry::Blob {
                key,
                pointer: Pointer {
                    generation,
                    offset,
                    len,
                },
            }
        }
        KIND_OPS => {
            let mut ops = Vec::new();
            let mut at = 0usize;
            while at < rest.len() {
                let klen = u32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?) as usize;
                at += 4;
                let key = rest.get(at..at.checked_add(klen)?)?.to_vec();
                at += klen;
                let flag = *rest.get(at)?;
                at += 1;
                let value = match flag {
                    0 => None,
                    1 => {
                        let vlen =
                            u32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?) as usize;
                        at += 4;
                        let v = rest.get(at..at.checked_add(vlen)?)?.to_vec();
                        at += vlen;
                        Some(v)
                    }
                    _ => return None,
                };
                ops.push((key, value));
            }
            Entry::Ops(ops)
        }
        KIND_COMMIT if len == COMMIT_LEN => Entry::Commit {
            lsn: u64::from_be_bytes(rest.get(..8)?.try_into().ok()?),
        },
        _ => return None,
    };
    Some((entry, end))
}

/// Generations on disk in `dir`, oldest first.
pub fn generations(dir: &Path) -> Result<Vec<u32>, Error> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, "read dir", e))? {
        let entry = entry.map_err(|e| Error::io(dir, "read dir", e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(g) = name
            .strip_prefix("log.")
            .and_then(|r| r.strip_suffix(".seg"))
            .and_then(|g| g.parse::<u32>().ok())
        {
            out.push(g);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// fsyncs a directory, so that created, renamed and removed files in it
/// survive a power loss.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "fsync directory", e))
}

/// One whole frame found by [`scan`].
#[derive(Debug)]
pub struct Frame {
    pub lsn: u64,
    pub blobs: Vec<(Vec<u8>, Pointer)>,
    pub ops: Vec<Op>,
    /// Where the frame ends.
    pub end: Position,
}

/// Damage found in the middle of the log: whole frames after it were lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    pub offset: u64,
    /// Commits (by sequence number) after the damage that could not be
    /// replayed.
    pub lost_commits: Vec<u64>,
}

/// What [`scan`] found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The end of the last whole frame: where appending goes on.
    pub end: Position,
    /// Bytes after `end` that were dropped (a torn last frame).
    pub torn_bytes: u64,
    pub damage: Option<Damage>,
    /// The sequence number of the last whole frame, if any was read.
    pub last_lsn: Option<u64>,
}

/// Reads every whole frame from `from` on, in order, handing each to
/// `apply`. A frame cut short at the end of the log (a crash while it was
/// written) is dropped. Damage before the end — a bad entry followed by
/// a whole frame further on — is reported in [`Scanned::damage`] with the
/// commits after it that are lost; scanning stops at the damage either way.
pub fn scan(
    dir: &Path,
    from: Position,
    mut apply: impl FnMut(Frame) -> Result<(), Error>,
) -> Result<Scanned, Error> {
    let gens: Vec<u32> = generations(dir)?
        .into_iter()
        .filter(|g| *g >= from.generation)
        .collect();
    let mut out = Scanned {
        end: from,
        ..Scanned::default()
    };
    let mut frame = Frame {
        lsn: 0,
        blobs: Vec::new(),
        ops: Vec::new(),
        end: from,
    };
    for (i, &g) in gens.iter().enumerate() {
        let path = file_name(dir, g);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, "read", e))?;
        let mut at = if g == from.generation {
            from.offset as usize
        } else {
            0
        };
        if at > bytes.len() {
            return Err(Error::corrupt(
                &path,
                format!(
                    "the checkpoint is at offset {at} but the file has only {} bytes",
                    bytes.len()
                ),
            ));
        }
        while at < bytes.len() {
            match decode_entry(&bytes[at..], g, at as u64) {
                Some((Entry::Blob { key, pointer }, used)) => {
                    frame.blobs.push((key, pointer));
                    at += used;
                }
                Some((Entry::Ops(ops), used)) => {
                    frame.ops.extend(ops);
                    at += used;
                }
                Some((Entry::Commit { lsn }, used)) => {
                    at += used;
                    let end = Position {
                        generation: g,
                        offset: at as u64,
                    };
                    let whole = std::mem::replace(
                        &mut frame,
                        Frame {
                            lsn: 0,
                            blobs: Vec::new(),
                            ops: Vec::new(),
                            end,
                        },
                    );
                    apply(Frame { lsn, end, ..whole })?;
                    out.end = end;
                    out.last_lsn = Some(lsn);
                }
                None => {
                    // Torn tail, or damage? Look for a whole commit entry
                    // further on, in this file or a later one.
                    let mut lost = later_commits(&bytes[at + 1..]);
                    for &later in &gens[i + 1..] {
                        let p = file_name(dir, later);
                        let b = std::fs::read(&p).map_err(|e| Error::io(&p, "read", e))?;
                        lost.extend(later_commits(&b));
                    }
                    let torn: u64 = (bytes.len() - at) as u64;
                    if lost.is_empty() {
                        out.torn_bytes = torn;
                    } else {
                        out.damage = Some(Damage {
                            path: path.clone(),
                            offset: at as u64,
                            lost_commits: lost,
                        });
                    }
                    return Ok(out);
                }
            }
        }
        if i + 1 < gens.len() && !frame.blobs.is_empty() | !frame.ops.is_empty() {
            // A frame never spans generations: what is left is torn.
            out.torn_bytes += frame_bytes(&frame);
            frame.blobs.clear();
            frame.ops.clear();
        }
    }
    if !frame.blobs.is_empty() || !frame.ops.is_empty() {
        out.torn_bytes += frame_bytes(&frame);
    }
    Ok(out)
}

fn frame_bytes(f: &Frame) -> u64 {
    f.blobs.iter().map(|(_, p)| p.size()).sum::<u64>() + f.ops.len() as u64
}

/// The sequence numbers of every whole commit entry anywhere in `bytes`
/// (commit entries have a fixed size and a checksum, so a false match is
/// as unlikely as a CRC collision on 13 bytes).
fn later_commits(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = 0;
    let need = HEADER as usize + COMMIT_LEN as usize;
    while at + need <= bytes.len() {
        if bytes[at..at + 4] == COMMIT_LEN.to_be_bytes() && bytes[at + 8] == KIND_COMMIT {
            if let Some((Entry::Commit { lsn }, used)) = decode_entry(&bytes[at..], 0, 0) {
                out.push(lsn);
                at += used;
                continue;
            }
        }
        at += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &Path) -> CommitLog {
        CommitLog::open(dir, Position::default(), None).expect("open")
    }

    #[test]
    fn frames_replay_in_order_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut l = log(dir.path());
        for lsn in 1..=3u64 {
            l.begin_frame().expect("begin");
            let p = l.append_blob(b"ukey", &[lsn as u8; 100]).expect("blob");
            assert_eq!(l.read(p).expect("read"), vec![lsn as u8; 100]);
            l.append_ops(&[
                (b"tkey".to_vec(), Some(vec![lsn as u8])),
                (b"x".to_vec(), None),
            ])
            .expect("ops");
            l.commit(lsn).expect("commit");
        }
        // A fourth frame, cut short.
        l.begin_frame().expect("begin");
        l.append_blob(b"ukey", &[9; 100]).expect("blob");
        l.write_out().expect("write");
        let whole = l.position().offset;
        drop(l);
        let mut seen = Vec::new();
        let s = scan(dir.path(), Position::default(), |f| {
            seen.push((f.lsn, f.blobs.len(), f.ops.len()));
            Ok(())
        })
        .expect("scan");
        assert_eq!(seen, vec![(1, 1, 2), (2, 1, 2), (3, 1, 2)]);
        assert!(s.torn_bytes > 0 && s.damage.is_none());
        assert!(s.end.offset < whole);
        assert_eq!(s.last_lsn, Some(3));
        // Appending goes on after the last whole frame.
        let mut l = CommitLog::open(dir.path(), s.end, None).expect("reopen");
        l.begin_frame().expect("begin");
        l.append_blob(b"ukey", &[4; 10]).expect("blob");
        l.commit(4).expect("commit");
        drop(l);
        let s = scan(dir.path(), Position::default(), |_| Ok(())).expect("scan");
        assert_eq!((s.last_lsn, s.torn_bytes), (Some(4), 0));
    }

    #[test]
    fn damage_in_the_middle_names_the_lost_commits() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut l = log(dir.path());
        let mut ends = Vec::new();
        for lsn in 1..=4u64 {
            l.begin_frame().expect("begin");
            l.append_blob(b"ukey", &[lsn as u8; 50]).expect("blob");
            l.commit(lsn).expect("commit");
            ends.push(l.position().offset);
        }
        drop(l);
        // Flip a byte inside frame 2.
        let path = file_name(dir.path(), 0);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[ends[0] as usize + 20] ^= 0xff;
        std::fs::write(&path, bytes).expect("write");
        let mut seen = Vec::new();
        let s = scan(dir.path(), Position::default(), |f| {
            seen.push(f.lsn);
            Ok(())
        })
        .expect("scan");
        assert_eq!(seen, vec![1]);
        let d = s.damage.expect("damage");
        assert_eq!(d.offset, ends[0]);
        assert_eq!(d.lost_commits, vec![2, 3, 4]);
    }

    #[test]
    fn random_truncation_never_errors_and_keeps_a_prefix() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut l = log(dir.path());
        let mut ends = Vec::new();
        for lsn in 1..=20u64 {
            l.begin_frame().expect("begin");
            for i in 0..3u8 {
                l.append_blob(&[b'u', i], &vec![i; 10 + lsn as usize])
                    .expect("blob");
            }
            l.commit(lsn).expect("commit");
            ends.push(l.position().offset);
        }
        drop(l);
        let path = file_name(dir.path(), 0);
        let full = std::fs::read(&path).expect("read");
        for cut in (0..full.len()).step_by(7) {
            std::fs::write(&path, &full[..cut]).expect("write");
            let mut n = 0;
            let s = scan(dir.path(), Position::default(), |_| {
                n += 1;
                Ok(())
            })
            .expect("scan");
            let whole = ends.iter().filter(|e| **e as usize <= cut).count();
            assert_eq!(n, whole, "cut at {cut}");
            assert!(s.damage.is_none());
        }
    }
}
