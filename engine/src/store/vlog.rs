//! A value log for large records (user records): each record is appended to
//! a log file and the key-value store keeps only a 16-byte pointer to it.
//! sled stays small (keys and pointers fit its page cache, where it is
//! fast and its memory bounded), reads are one `pread` from the OS page
//! cache, writes are sequential appends.
//!
//! Files are `values.<generation>.log` in the store directory. Each entry
//! is `[len: u32][crc32: u32][bytes]`. When the log holds much more than
//! the live records, [`ValueLog::compact_into`] copies the live records into
//! a new generation; the old file is deleted once no pointer refers to it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Error;

fn io(what: &str, e: std::io::Error) -> Error {
    Error::Backend(format!("value log: {what}: {e}"))
}

/// Where a record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    pub generation: u32,
    pub offset: u64,
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
        if b.len() != Self::SIZE {
            return None;
        }
        let mut g = [0u8; 4];
        g.copy_from_slice(&b[..4]);
        let mut o = [0u8; 8];
        o.copy_from_slice(&b[4..12]);
        let mut l = [0u8; 4];
        l.copy_from_slice(&b[12..]);
        Some(Pointer {
            generation: u32::from_be_bytes(g),
            offset: u64::from_be_bytes(o),
            len: u32::from_be_bytes(l),
        })
    }
}

const HEADER: u64 = 8;

pub struct ValueLog {
    dir: PathBuf,
    generation: u32,
    writer: BufWriter<File>,
    /// Bytes in the current generation's file (buffered ones included).
    len: u64,
    /// Whether the writer holds bytes not yet handed to the OS.
    buffered: bool,
    readers: BTreeMap<u32, File>,
    /// Live bytes after the last compaction (or at open).
    pub live_at_compaction: u64,
    /// Bytes appended since.
    pub appended: u64,
}

fn file_name(dir: &Path, generation: u32) -> PathBuf {
    dir.join(format!("values.{generation}.log"))
}

impl ValueLog {
    /// Opens (or creates) the log in `dir`, appending to its newest
    /// generation.
    pub fn open(dir: &Path) -> Result<ValueLog, Error> {
        std::fs::create_dir_all(dir).map_err(|e| io("create dir", e))?;
        let mut generations = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io("read dir", e))? {
            let entry = entry.map_err(|e| io("read dir", e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(g) = name
                .strip_prefix("values.")
                .and_then(|r| r.strip_suffix(".log"))
                .and_then(|g| g.parse::<u32>().ok())
            {
                generations.push(g);
            }
        }
        generations.sort_unstable();
        let generation = generations.last().copied().unwrap_or(0);
        let mut readers = BTreeMap::new();
        for g in &generations {
            let f = File::open(file_name(dir, *g)).map_err(|e| io("open", e))?;
            readers.insert(*g, f);
        }
        let path = file_name(dir, generation);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if let std::collections::btree_map::Entry::Vacant(e) = readers.entry(generation) {
            e.insert(File::open(&path).map_err(|e| io("open", e))?);
        }
        Ok(ValueLog {
            dir: dir.to_owned(),
            generation,
            writer: BufWriter::with_capacity(1 << 20, file),
            len,
            buffered: false,
            readers,
            live_at_compaction: len,
            appended: 0,
        })
    }

    /// Appends a record; it is readable at once, durable after [`ValueLog::sync`].
    pub fn append(&mut self, bytes: &[u8]) -> Result<Pointer, Error> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| Error::Backend("value log: record too large".into()))?;
        let crc = crc32fast::hash(bytes);
        self.writer
            .write_all(&len.to_be_bytes())
            .map_err(|e| io("append", e))?;
        self.writer
            .write_all(&crc.to_be_bytes())
            .map_err(|e| io("append", e))?;
        self.writer.write_all(bytes).map_err(|e| io("append", e))?;
        let p = Pointer {
            generation: self.generation,
            offset: self.len,
            len,
        };
        self.len += HEADER + bytes.len() as u64;
        self.appended += HEADER + bytes.len() as u64;
        self.buffered = true;
        Ok(p)
    }

    /// Hands buffered appends to the OS (a process crash loses nothing
    /// after this; a power loss may, until [`ValueLog::sync`]).
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.buffered {
            self.writer.flush().map_err(|e| io("write", e))?;
            self.buffered = false;
        }
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), Error> {
        self.flush()?;
        self.writer
            .get_ref()
            .sync_data()
            .map_err(|e| io("fsync", e))
    }

    /// Reads the record at `p`, checking its length and checksum.
    pub fn read(&mut self, p: Pointer) -> Result<Vec<u8>, Error> {
        if p.generation == self.generation
            && p.offset + HEADER + p.len as u64 > self.len - self.unflushed()
        {
            self.flush()?;
        }
        let file = self.readers.get(&p.generation).ok_or_else(|| {
            Error::Backend(format!("value log: generation {} is missing", p.generation))
        })?;
        let mut buf = vec![0u8; HEADER as usize + p.len as usize];
        file.read_exact_at(&mut buf, p.offset)
            .map_err(|e| io("read", e))?;
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let crc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let data = buf.split_off(HEADER as usize);
        if len != p.len || crc32fast::hash(&data) != crc {
            return Err(Error::Decode {
                what: "value log record",
                message: format!("checksum mismatch at {}:{}", p.generation, p.offset),
            });
        }
        Ok(data)
    }

    fn unflushed(&self) -> u64 {
        if self.buffered {
            self.writer.buffer().len() as u64
        } else {
            0
        }
    }

    /// Whether the log is worth compacting: it holds over three times what
    /// was live at the last compaction, and at least `min_bytes`.
    pub fn wants_compaction(&self, min_bytes: u64) -> bool {
        let total = self.live_at_compaction + self.appended;
        total > min_bytes && total > 3 * self.live_at_compaction.max(1)
    }

    /// Starts a new generation for compaction: live records are appended to
    /// it; returns the old generations to delete once no pointer refers to
    /// them.
    pub fn start_generation(&mut self) -> Result<Vec<u32>, Error> {
        self.sync()?;
        let old: Vec<u32> = self.readers.keys().copied().collect();
        self.generation += 1;
        let path = file_name(&self.dir, self.generation);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io("open", e))?;
        self.readers.insert(
            self.generation,
            File::open(&path).map_err(|e| io("open", e))?,
        );
        self.writer = BufWriter::with_capacity(1 << 20, file);
        self.len = 0;
        self.appended = 0;
        self.live_at_compaction = 0;
        Ok(old)
    }

    /// Records that compaction copied `live` bytes.
    pub fn finish_generation(&mut self, live: u64) {
        self.live_at_compaction = live;
        self.appended = 0;
    }

    /// Deletes generations no pointer refers to any more.
    pub fn remove_generations(&mut self, generations: &[u32]) -> Result<(), Error> {
        for g in generations {
            if *g == self.generation {
                continue;
            }
            self.readers.remove(g);
            std::fs::remove_file(file_name(&self.dir, *g)).map_err(|e| io("remove", e))?;
        }
        Ok(())
    }

    /// Generations on disk.
    pub fn generations(&self) -> Vec<u32> {
        self.readers.keys().copied().collect()
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }
}
