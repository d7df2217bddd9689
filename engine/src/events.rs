//! Event files (JSONL, FORMAT.md §4) for `simulate`: checked and indexed in
//! one pass, then read back in timestamp order (stable) without holding
//! every event in memory.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::de::IgnoredAny;
use serde::Deserialize;

use journeys::event::{Event, EventType};

use crate::clock::{from_millis, to_millis, Millis};

/// A problem with an event file.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Just enough of an event to check it and order it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe<'a> {
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(borrow)]
    user: Cow<'a, str>,
    ts: DateTime<Utc>,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<IgnoredAny>,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default)]
    #[allow(dead_code)]
    props: Option<IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    traits: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ts: Millis,
    offset: u64,
    len: u32,
    line: u32,
}

/// An indexed event file.
#[derive(Debug)]
pub struct EventFile {
    path: PathBuf,
    entries: Vec<Entry>,
    /// Distinct users among the kept events.
    pub users: usize,
    /// Lines skipped because of the `users` limit.
    pub skipped: usize,
}

impl EventFile {
    /// Checks every line and indexes the file. With `max_users`, only the
    /// events of the first `max_users` distinct users (in file order) are
    /// kept.
    pub fn open(path: &Path, max_users: Option<usize>) -> Result<EventFile, EventsError> {
        let io = |source| EventsError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut buf = Vec::new();
        let mut offset = 0u64;
        let mut entries = Vec::new();
        let mut users: HashSet<String> = HashSet::new();
        let mut skipped = 0;
        let mut sorted = true;
        let mut line_no = 0usize;
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            line_no += 1;
            let start = offset;
            offset += n as u64;
            let text = trim(&buf);
            if text.is_empty() {
                continue;
            }
            let bad = |message: String| EventsError::Line {
                path: path.to_owned(),
                line: line_no,
                message,
            };
            let probe: Probe<'_> =
                serde_json::from_slice(text).map_err(|e| bad(format!("invalid event: {e}")))?;
            if probe.user.is_empty() {
                return Err(bad("`user` must not be empty".into()));
            }
            if probe.kind == EventType::Track && probe.event.as_deref().is_none_or(str::is_empty) {
                return Err(bad("`track` needs an `event` name".into()));
            }
            if !users.contains(probe.user.as_ref()) {
                if max_users.is_some_and(|m| users.len() >= m) {
                    skipped += 1;
                    continue;
                }
                users.insert(probe.user.into_owned());
            }
            let ts = to_millis(probe.ts);
            if entries.last().is_some_and(|e: &Entry| e.ts > ts) {
                sorted = false;
            }
            entries.push(Entry {
                ts,
                offset: start,
                len: n as u32,
                line: line_no as u32,
            });
        }
        if !sorted {
            entries.sort_by_key(|e| e.ts);
        }
        Ok(EventFile {
            path: path.to_owned(),
            entries,
            users: users.len(),
            skipped,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn first_ts(&self) -> Option<DateTime<Utc>> {
        self.entries.first().map(|e| from_millis(e.ts))
    }

    pub fn last_ts(&self) -> Option<DateTime<Utc>> {
        self.entries.last().map(|e| from_millis(e.ts))
    }

    /// The events in timestamp order (file order among equal timestamps).
    pub fn events(&self) -> Result<Events<'_>, EventsError> {
        let file = File::open(&self.path).map_err(|source| EventsError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(Events {
            file: self,
            reader: BufReader::with_capacity(1 << 20, file),
            pos: 0,
            next: 0,
            buf: Vec::new(),
        })
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let mut s = b;
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Reads an [`EventFile`] back in order.
pub struct Events<'f> {
    file: &'f EventFile,
    reader: BufReader<File>,
    pos: u64,
    next: usize,
    buf: Vec<u8>,
}

impl Iterator for Events<'_> {
    type Item = Result<Event, EventsError>;

    fn next(&mut self) -> Option<Self::Item> {
        let e = *self.file.entries.get(self.next)?;
        self.next += 1;
        let io = |source| EventsError::Io {
            path: self.file.path.clone(),
            source,
        };
        if e.offset != self.pos {
            if let Err(err) = self.reader.seek(SeekFrom::Start(e.offset)) {
                return Some(Err(io(err)));
            }
        }
        self.buf.resize(e.len as usize, 0);
        if let Err(err) = self.reader.read_exact(&mut self.buf) {
            return Some(Err(io(err)));
        }
        self.pos = e.offset + e.len as u64;
        let text = trim(&self.buf);
        Some(
            serde_json::from_slice::<Event>(text)
                .map_err(|err| err.to_string())
                .and_then(|ev| ev.check().map(|_| ev).map_err(|err| err.to_string()))
                .map_err(|message| EventsError::Line {
                    path: self.file.path.clone(),
                    line: e.line as usize,
                    message: format!("invalid event: {message}"),
                }),
        )
    }
}
