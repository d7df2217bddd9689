//! Push into a file (RUN.md §3, the default push provider): one JSON line
//! per message appended to `push.jsonl`, exactly
//! `{"key","at","user","journey","step","tokens","title","body","data"}`.
//!
//! Discipline:
//! - each line is one `write` on a file opened with `O_APPEND`, under a
//!   lock, so lines never interleave;
//! - a delivery counts only once its line is fsynced; concurrent
//!   deliveries share one `fdatasync` (group commit);
//! - a key already written by this process is not written again (the
//!   delivery reports a duplicate); the set of keys is seeded at open from
//!   the file's last [`SEED_BYTES`] and holds at most [`MAX_KEYS`] keys;
//! - at open, a torn last line (a crash in the middle of a write, never
//!   acknowledged) is cut off, so the next line starts on its own.
//!
//! After a crash: a line that was written but whose delivery was not
//! recorded is delivered again when the engine restarts. If it is within
//! the seeded tail it is recognised and not repeated; otherwise the file
//! holds it twice, with the same `key` — at least once, never under two
//! keys. Readers should drop repeated keys.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde_json::{Map, Value};

use journeys::compiled::Channel;

use super::{safety, wrong_content, Attempt, BoxFuture, Delivered, Error, Failure, Provider};
use crate::clock::format_ts;
use crate::dispatch::{Content, Message};

/// How much of the file's end is read at open to learn the keys already
/// written.
pub const SEED_BYTES: u64 = 8 << 20;
/// Keys remembered for duplicate detection (oldest forgotten first): a
/// key comes back only while its delivery is unrecorded, a short window,
/// and 65,536 keys cost ~10 MB.
pub const MAX_KEYS: usize = 1 << 16;

/// One line of `push.jsonl`.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    pub key: &'a str,
    pub at: String,
    pub user: &'a str,
    pub journey: &'a str,
    pub step: &'a str,
    pub tokens: &'a [String],
    pub title: Option<&'a str>,
    pub body: Option<&'a str>,
    pub data: &'a Map<String, Value>,
}

impl<'a> Line<'a> {
    pub fn of(message: &'a Message) -> Result<Line<'a>, Failure> {
        let Content::Push {
            tokens,
            title,
            body,
            data,
        } = &message.content
        else {
            return Err(wrong_content(message, "push"));
        };
        if tokens.is_empty() {
            return Err(Failure::permanent("the user has no push tokens"));
        }
        Ok(Line {
            key: &message.key,
            at: format_ts(message.at),
            user: &message.user,
            journey: &message.journey,
            step: &message.step,
            tokens,
            title: title.as_deref(),
            body: body.as_deref(),
            data,
        })
    }
}

/// The push-file provider.
pub struct PushFile {
    path: PathBuf,
    shared: Arc<Shared>,
}

struct Shared {
    writer: Mutex<Writer>,
    /// The highest sequence number known to be on disk.
    synced: Mutex<u64>,
    sync: bool,
}

struct Writer {
    file: File,
    /// Lines written so far.
    seq: u64,
    /// The file's length.
    len: u64,
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl Writer {
    fn remember(&mut self, key: String) {
        if self.seen.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > MAX_KEYS {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-written line
    // behind the lock's back (the file is append-only), so go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Cuts a torn last line and returns the keys in the file's tail.
fn recover(file: &mut File) -> std::io::Result<Vec<String>> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(SEED_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let complete = match tail.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if start == 0 => 0,
        // A single line longer than the window: keep it.
        None => tail.len(),
    };
    if complete < tail.len() {
        file.set_len(start + complete as u64)?;
        file.sync_all()?;
    }
    #[derive(serde::Deserialize)]
    struct Key {
        key: String,
    }
    let mut lines = tail[..complete].split(|&b| b == b'\n');
    if start > 0 {
        // The first line of the window may be cut.
        lines.next();
    }
    Ok(lines
        .filter_map(|l| serde_json::from_slice::<Key>(l).ok())
        .map(|k| k.key)
        .collect())
}

impl PushFile {
    /// Opens (or creates, with its directory) the push file.
    pub fn open(path: impl Into<PathBuf>) -> Result<PushFile, Error> {
        PushFile::open_with(path, true)
    }

    /// As [`PushFile::open`]; `sync: false` skips the fsync (benchmarks).
    pub fn open_with(path: impl Into<PathBuf>, sync: bool) -> Result<PushFile, Error> {
        let path = path.into();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let keys = recover(&mut file).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut writer = Writer {
            file,
            seq: 0,
            len,
            seen: HashSet::new(),
            order: VecDeque::new(),
        };
        for k in keys {
            writer.remember(k);
        }
        Ok(PushFile {
            path,
            shared: Arc::new(Shared {
                writer: Mutex::new(writer),
                synced: Mutex::new(0),
                sync,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Shared {
    fn append(&self, key: String, mut line: Vec<u8>) -> Result<Delivered, Failure> {
        line.push(b'\n');
        let (seq, file) = {
            let mut w = lock(&self.writer);
            if w.seen.contains(&key) {
                return Ok(Delivered {
                    detail: "push.jsonl".into(),
                    duplicate: true,
                    news: Vec::new(),
                });
            }
            if let Err(e) = w.file.write_all(&line) {
                // A short write leaves a torn line: cut it so the next
                // line starts cleanly.
                let len = w.len;
                let _ = w.file.set_len(len);
                return Err(Failure::transient(format!(
                    "cannot append to the push file: {e}"
                )));
            }
            w.len += line.len() as u64;
            w.seq += 1;
            w.remember(key);
            let file = if self.sync {
                Some(w.file.try_clone())
            } else {
                None
            };
            (w.seq, file)
        };
        if let Some(file) = file {
            let file =
                file.map_err(|e| Failure::transient(format!("cannot sync the push file: {e}")))?;
            // Group commit: whoever holds `synced` syncs everything written
            // so far; later writers find their line already covered.
            let mut synced = lock(&self.synced);
            if *synced < seq {
                let upto = lock(&self.writer).seq;
                file.sync_data()
                    .map_err(|e| Failure::transient(format!("cannot sync the push file: {e}")))?;
                *synced = upto;
            }
        }
        Ok(Delivered {
            detail: "push.jsonl".into(),
            duplicate: false,
            news: Vec::new(),
        })
    }
}

impl Provider for PushFile {
    fn name(&self) -> &'static str {
        "file"
    }

    fn channel(&self) -> Channel {
        Channel::Push
    }

    fn deliver<'a>(
        &'a self,
        message: &'a Message,
        _attempt: Attempt,
    ) -> BoxFuture<'a, Result<Delivered, Failure>> {
        Box::pin(async move {
            safety::key(&message.key)?;
            let line = Line::of(message)?;
            let bytes = serde_json::to_vec(&line)
                .map_err(|e| Failure::permanent(format!("cannot encode the push line: {e}")))?;
            let shared = Arc::clone(&self.shared);
            let key = message.key.clone();
            tokio::task::spawn_blocking(move || shared.append(key, bytes))
                .await
                .map_err(|e| Failure::transient(format!("the push writer stopped: {e}")))?
        })
    }
}
