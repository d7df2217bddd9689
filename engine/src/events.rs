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
use journeys::limits::MAX_EVENT_ERRORS;

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
    /// Every bad line of a file (the first [`MAX_EVENT_ERRORS`] of them),
    /// found before anything runs.
    #[error("{}", lines_message(path, lines, *total))]
    Lines {
        path: PathBuf,
        /// (line number, message), in file order.
        lines: Vec<(usize, String)>,
        /// How many lines are bad in all.
        total: usize,
    },
}

fn lines_message(path: &Path, lines: &[(usize, String)], total: usize) -> String {
    let mut out = format!(
        "{}: {total} invalid event line{}",
        path.display(),
        if total == 1 { "" } else { "s" }
    );
    for (line, message) in lines {
        out.push_str(&format!("\n{}:{line}: {message}", path.display()));
    }
    if total > lines.len() {
        out.push_str(&format!(
            "\n… and {} more (only the first {MAX_EVENT_ERRORS} are listed)",
            total - lines.len()
        ));
    }
    out
}

/// The longest line of an event file, like the largest HTTP body RUN.md
/// accepts.
pub const MAX_LINE_BYTES: usize = 10 << 20;

/// Just enough of an event to order it, with everything else checked the
/// way [`Event`] would (types, numbers in range) but not kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe<'a> {
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(borrow)]
    user: Cow<'a, str>,
    ts: DateTime<Utc>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default)]
    #[allow(dead_code)]
    props: Object,
    #[serde(default)]
    #[allow(dead_code)]
    traits: Object,
}

/// A JSON object, checked and dropped.
#[derive(Default)]
struct Object;

/// Any JSON value, checked (numbers in range) and dropped.
struct Checked;

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<IgnoredAny, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Object, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Object, A::Error> {
                CheckedVisitor.visit_map(map).map(|_| Object)
            }
        }
        d.deserialize_map(V)
    }
}

/// Checks one line (without its line ending) the way [`Event`] parsing and
/// [`Event::check`] do; returns what ordering needs.
fn probe(text: &[u8]) -> Result<(Probe<'_>, Millis), String> {
    let probe: Probe<'_> =
        serde_json::from_slice(text).map_err(|e| format!("invalid event: {e}"))?;
    if probe.user.is_empty() {
        return Err("`user` must not be empty".into());
    }
    if probe.kind == EventType::Track && probe.event.as_deref().is_none_or(str::is_empty) {
        return Err("`track` needs an `event` name".into());
    }
    let ts = journeys::limits::check_instant(probe.ts).map_err(|e| format!("`ts` {e}"))?;
    Ok((probe, to_millis(ts)))
}

/// Splits a byte stream into lines ended by `\n`, `\r\n` or a lone `\r`,
/// with the offset and length (line ending included) of each.
struct LineSplitter<R> {
    reader: R,
    offset: u64,
    /// A `\r` ended the previous line: skip a `\n` right after it.
    after_cr: bool,
}

/// One line of a file: where it starts, its length with the line ending,
/// and its text (empty when it is longer than [`MAX_LINE_BYTES`]).
struct RawLine {
    offset: u64,
    len: u64,
    too_long: bool,
}

impl<R: BufRead> LineSplitter<R> {
    fn next_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<RawLine>> {
        buf.clear();
        let start = self.offset;
        let mut len = 0u64;
        let mut too_long = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok((len > 0).then_some(RawLine {
                    offset: start,
                    len,
                    too_long,
                }));
            }
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    self.reader.consume(1);
                    self.offset += 1;
                    // Belongs to the previous line: this one starts after it.
                    return self.next_line(buf);
                }
            }
            match chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(i) => {
                    let cr = chunk[i] == b'\r';
                    if !too_long {
                        buf.extend_from_slice(&chunk[..i]);
                    }
                    self.reader.consume(i + 1);
                    self.offset += i as u64 + 1;
                    len += i as u64 + 1;
                    self.after_cr = cr;
                    let mut line = RawLine {
                        offset: start,
                        len,
                        too_long,
                    };
                    if cr {
                        // Include a `\n` that follows in this line's length
                        // when it is already buffered.
                        if let Ok(next) = self.reader.fill_buf() {
                            if next.first() == Some(&b'\n') {
                                self.reader.consume(1);
                                self.offset += 1;
                                line.len += 1;
                                self.after_cr = false;
                            }
                        }
                    }
                    if buf.len() > MAX_LINE_BYTES {
                        line.too_long = true;
                    }
                    return Ok(Some(line));
                }
                None => {
                    let n = chunk.len();
                    if !too_long {
                        buf.extend_from_slice(chunk);
                        if buf.len() > MAX_LINE_BYTES {
                            too_long = true;
                            buf.clear();
                        }
                    }
                    self.reader.consume(n);
                    self.offset += n as u64;
                    len += n as u64;
                }
            }
        }
    }
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
    /// kept. Every bad line is found before anything runs, and the first
    /// [`MAX_EVENT_ERRORS`] are reported with their line numbers. Lines end
    /// with `\n`, `\r\n` or `\r`; a UTF-8 byte order mark is skipped.
    pub fn open(path: &Path, max_users: Option<usize>) -> Result<EventFile, EventsError> {
        Self::open_with_progress(path, max_users, &mut |_| {})
    }

    /// [`EventFile::open`], telling `progress` how many bytes have been
    /// checked (every MiB or so, and at the end).
    ///
    /// Without `max_users`, a large file is checked in as many ranges as
    /// there are cores (at most [`MAX_INDEX_THREADS`]), each on its own
    /// thread, split at line ends: the ranges' lines, bad lines and users
    /// are put together in file order, so the result is the one a single
    /// pass gives. With `max_users` the first users are those of file
    /// order, which only a single pass knows.
    pub fn open_with_progress(
        path: &Path,
        max_users: Option<usize>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<EventFile, EventsError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_INDEX_THREADS);
        Self::open_in_ranges(path, max_users, progress, PARALLEL_INDEX_BYTES, threads)
    }

    /// [`EventFile::open_with_progress`], checking a file of at least
    /// `parallel_from` bytes in up to `threads` ranges.
    fn open_in_ranges(
        path: &Path,
        max_users: Option<usize>,
        progress: &mut dyn FnMut(u64),
        parallel_from: u64,
        threads: usize,
    ) -> Result<EventFile, EventsError> {
        let io = |source| EventsError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let size = meta.len();
        // Empty: one pass.
        let ranges = if max_users.is_none() && threads > 1 && size >= parallel_from {
            split(&file, size, threads).map_err(io)?
        } else {
            Vec::new()
        };
        drop(file);
        let mut scans = if ranges.len() <= 1 {
            vec![scan(path, 0..size, max_users, &mut |n| {
                progress(n);
            })
            .map_err(io)?]
        } else {
            let done = std::sync::atomic::AtomicU64::new(0);
            let add = |n: u64| done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
            std::thread::scope(|scope| {
                let workers: Vec<_> = ranges[1..]
                    .iter()
                    .map(|r| {
                        let r = r.clone();
                        let add = &add;
                        scope.spawn(move || {
                            let mut last = r.start;
                            scan(path, r, None, &mut |at| {
                                add(at - last);
                                last = at;
                            })
                        })
                    })
                    .collect();
                let mut last = 0;
                let first = scan(path, ranges[0].clone(), None, &mut |at| {
                    progress(add(at - last));
                    last = at;
                });
                let mut scans = vec![first];
                for w in workers {
                    scans.push(
                        w.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    );
                }
                scans.into_iter().collect::<std::io::Result<Vec<Scan>>>()
            })
            .map_err(io)?
        };
        progress(size);
        let mut whole = scans.remove(0);
        for next in scans {
            whole.append(next);
        }
        if whole.bad_total > 0 {
            return Err(EventsError::Lines {
                path: path.to_owned(),
                lines: whole.bad,
                total: whole.bad_total,
            });
        }
        let mut entries = whole.entries;
        if !whole.sorted {
            entries.sort_by_key(|e| e.ts);
        }
        // The index lives as long as the run: without the doubling's slack
        // (up to half of it, 25 MB for a million events).
        entries.shrink_to_fit();
        Ok(EventFile {
            path: path.to_owned(),
            entries,
            users: whole.users.len(),
            skipped: whole.skipped,
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
        let jump = File::open(&self.path).map_err(|source| EventsError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(Events {
            file: self,
            reader: BufReader::with_capacity(1 << 20, file),
            jump,
            pos: 0,
            next: 0,
            buf: Vec::new(),
        })
    }
}

/// Files smaller than this are checked in one pass.
const PARALLEL_INDEX_BYTES: u64 = 8 << 20;
/// At most this many threads check one event file.
pub const MAX_INDEX_THREADS: usize = 4;

/// Splits `0..size` into up to `parts` ranges that start at the start of a
/// line (after a `\n`, a `\r\n` or a lone `\r`), so that reading each with
/// its own [`LineSplitter`] sees the lines of one pass over the file.
fn split(file: &File, size: u64, parts: usize) -> std::io::Result<Vec<std::ops::Range<u64>>> {
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let mut starts = vec![0u64];
    for i in 1..parts as u64 {
        let nominal = size / parts as u64 * i;
        let previous = starts.last().copied().unwrap_or(0);
        if nominal <= previous {
            continue;
        }
        // A line end just before `nominal` (a `\r` whose `\n` is at
        // `nominal`) is found by starting one byte early.
        let from = nominal - 1;
        reader.seek(SeekFrom::Start(from))?;
        let mut at = from;
        let start = loop {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                break size;
            }
            match chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(i) => {
                    let end = at + i as u64;
                    let cr = chunk[i] == b'\r';
                    reader.consume(i + 1);
                    if !cr {
                        break end + 1;
                    }
                    let next = reader.fill_buf()?;
                    break if next.first() == Some(&b'\n') {
                        end + 2
                    } else {
                        end + 1
                    };
                }
                None => {
                    let n = chunk.len();
                    reader.consume(n);
                    at += n as u64;
                }
            }
        };
        if start > previous && start < size {
            starts.push(start);
        }
    }
    let mut ranges = Vec::with_capacity(starts.len());
    for (i, s) in starts.iter().enumerate() {
        ranges.push(*s..starts.get(i + 1).copied().unwrap_or(size));
    }
    Ok(ranges)
}

/// What checking one range of an event file found. Line numbers count
/// from 1 at the range's start.
struct Scan {
    entries: Vec<Entry>,
    users: HashSet<String>,
    skipped: usize,
    sorted: bool,
    lines: usize,
    bad: Vec<(usize, String)>,
    bad_total: usize,
}

impl Scan {
    /// `next` (the range after this one's) appended: its line numbers
    /// shifted by this range's lines.
    fn append(&mut self, mut next: Scan) {
        let shift = self.lines;
        let room = MAX_EVENT_ERRORS.saturating_sub(self.bad.len());
        self.bad.extend(
            next.bad
                .into_iter()
                .take(room)
                .map(|(line, message)| (line + shift, message)),
        );
        self.bad_total += next.bad_total;
        self.lines += next.lines;
        if self.bad_total > 0 {
            return;
        }
        let shift = u32::try_from(shift).unwrap_or(u32::MAX);
        for e in &mut next.entries {
            e.line = e.line.saturating_add(shift);
        }
        if let (Some(a), Some(b)) = (self.entries.last(), next.entries.first()) {
            if a.ts > b.ts {
                self.sorted = false;
            }
        }
        self.sorted &= next.sorted;
        self.entries.append(&mut next.entries);
        if next.users.len() > self.users.len() {
            std::mem::swap(&mut self.users, &mut next.users);
        }
        self.users.extend(next.users);
        self.skipped += next.skipped;
    }
}

/// Checks and indexes the lines of `range` (which starts at a line's
/// start), telling `progress` the offset reached every MiB or so.
fn scan(
    path: &Path,
    range: std::ops::Range<u64>,
    max_users: Option<usize>,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<Scan> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(range.start))?;
    let mut lines = LineSplitter {
        reader: BufReader::with_capacity(1 << 20, file.take(range.end - range.start)),
        offset: range.start,
        after_cr: false,
    };
    let mut out = Scan {
        entries: Vec::new(),
        users: HashSet::new(),
        skipped: 0,
        sorted: true,
        lines: 0,
        bad: Vec::new(),
        bad_total: 0,
    };
    let mut buf = Vec::new();
    let mut told = range.start;
    while let Some(raw) = lines.next_line(&mut buf)? {
        out.lines += 1;
        let line_no = out.lines;
        if raw.offset >= told + (1 << 20) {
            told = raw.offset;
            progress(told);
        }
        let mut offset = raw.offset;
        let mut body: &[u8] = &buf;
        if raw.offset == 0 && body.starts_with(b"\xEF\xBB\xBF") {
            body = &body[3..];
            offset += 3;
        }
        if raw.too_long {
            out.bad_total += 1;
            if out.bad.len() < MAX_EVENT_ERRORS {
                out.bad.push((
                    line_no,
                    format!("line longer than {} MiB", MAX_LINE_BYTES >> 20),
                ));
            }
            continue;
        }
        let text = trim(body);
        if text.is_empty() {
            continue;
        }
        let (probe, ts) = match probe(text) {
            Ok(p) => p,
            Err(message) => {
                out.bad_total += 1;
                if out.bad.len() < MAX_EVENT_ERRORS {
                    out.bad.push((line_no, message));
                }
                continue;
            }
        };
        if out.bad_total > 0 {
            continue; // only checking from here on
        }
        if !out.users.contains(probe.user.as_ref()) {
            if max_users.is_some_and(|m| out.users.len() >= m) {
                out.skipped += 1;
                continue;
            }
            out.users.insert(probe.user.into_owned());
        }
        if out.entries.last().is_some_and(|e: &Entry| e.ts > ts) {
            out.sorted = false;
        }
        out.entries.push(Entry {
            ts,
            offset,
            len: (raw.len - (offset - raw.offset)) as u32,
            line: u32::try_from(line_no).unwrap_or(u32::MAX),
        });
    }
    progress(lines.offset);
    Ok(out)
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
///
/// Files are mostly in time order with some events far out of place (an
/// import of old orders, clients' clock skew). The buffered reader follows
/// the file's order; an event that lies ahead within its buffer is reached
/// by skipping, and one elsewhere is read on its own through a second
/// handle, so the buffer (and its megabyte of reading) is kept for the
/// events that come next in file order. Seeking the buffered reader
/// instead discarded the buffer on every such event: with 5% of the
/// events out of place, that was gigabytes of reads for a 170 MB file.
pub struct Events<'f> {
    file: &'f EventFile,
    reader: BufReader<File>,
    /// For events out of file order.
    jump: File,
    /// The buffered reader's position in the file.
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
        self.buf.resize(e.len as usize, 0);
        let ahead = e.offset.checked_sub(self.pos);
        let read = match ahead {
            Some(skip) if skip <= self.reader.buffer().len() as u64 => {
                // In order, or a little ahead within what is buffered.
                let skipped = match i64::try_from(skip) {
                    Ok(0) => Ok(()),
                    Ok(n) => self.reader.seek_relative(n),
                    Err(_) => Ok(()),
                };
                skipped
                    .and_then(|()| self.reader.read_exact(&mut self.buf))
                    .map(|()| self.pos = e.offset + u64::from(e.len))
            }
            _ => self
                .jump
                .seek(SeekFrom::Start(e.offset))
                .and_then(|_| self.jump.read_exact(&mut self.buf)),
        };
        if let Err(err) = read {
            return Some(Err(io(err)));
        }
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

#[cfg(test)]
mod tests {
    //! The event reader against hostile files: the index pass accepts a
    //! line exactly when [`Event`] parsing does, bad lines are reported at
    //! their own numbers whatever the line endings, and nothing panics.
    //! `SLUICE_FUZZ_CASES` raises the number of cases (default 2048).

    use super::*;
    use proptest::prelude::*;

    fn cases() -> u32 {
        std::env::var("SLUICE_FUZZ_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(2048)
    }

    /// JSON-ish event lines: mostly well-formed, with wrong types, odd
    /// numbers, odd timestamps, unknown fields and broken syntax mixed in.
    fn line() -> impl Strategy<Value = String> {
        let ts = prop_oneof![
            Just("\"2026-03-02T09:00:00Z\"".to_owned()),
            Just("\"9999-12-31T23:59:59Z\"".to_owned()),
            Just("\"1969-12-31T23:59:59Z\"".to_owned()),
            Just("\"0000-01-01T00:00:00Z\"".to_owned()),
            Just("\"2026-03-02\"".to_owned()),
            Just("5".to_owned()),
        ];
        let value = prop_oneof![
            Just("1".to_owned()),
            Just("1e400".to_owned()),
            Just("-0.5".to_owned()),
            Just("\"s\"".to_owned()),
            Just("null".to_owned()),
            Just("[1,{\"a\":2}]".to_owned()),
            Just("{\"k\":1e999}".to_owned()),
            Just("{\"k\":\"v\"}".to_owned()),
            Just("true".to_owned()),
        ];
        let field = prop_oneof![
            Just("\"type\":\"track\"".to_owned()),
            Just("\"type\":\"identify\"".to_owned()),
            Just("\"type\":\"nope\"".to_owned()),
            Just("\"user\":\"u1\"".to_owned()),
            Just("\"user\":\"\"".to_owned()),
            Just("\"user\":7".to_owned()),
            Just("\"event\":\"e\"".to_owned()),
            Just("\"event\":\"\"".to_owned()),
            ts.prop_map(|t| format!("\"ts\":{t}")),
            value.clone().prop_map(|v| format!("\"id\":{v}")),
            value.clone().prop_map(|v| format!("\"props\":{v}")),
            value.clone().prop_map(|v| format!("\"traits\":{v}")),
            value.prop_map(|v| format!("\"other\":{v}")),
        ];
        prop_oneof![
            4 => prop::collection::vec(field, 0..7).prop_map(|f| format!("{{{}}}", f.join(","))),
            1 => "[ -~]{0,40}",
            1 => Just("  ".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        #[test]
        fn the_index_pass_accepts_exactly_what_event_parsing_does(l in line()) {
            let text = trim(l.as_bytes());
            if !text.is_empty() {
                let full = std::str::from_utf8(text)
                    .map_err(|e| e.to_string())
                    .and_then(|t| Event::from_line(t).map_err(|e| e.to_string()));
                prop_assert_eq!(probe(text).is_ok(), full.is_ok(), "{} {:?}", l, full);
            }
        }

        #[test]
        fn bad_lines_are_reported_at_their_numbers_whatever_the_endings(
            lines in prop::collection::vec((line(), 0u8..3), 0..40),
            bom in any::<bool>(),
        ) {
            let (path, text) = write_lines(&lines, bom);
            // The oracle: split on CRLF, CR or LF, as text editors do.
            let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
            let normalised = body.replace("\r\n", "\n").replace('\r', "\n");
            let mut expected_bad = Vec::new();
            let mut good = 0;
            for (n, l) in normalised.split('\n').enumerate() {
                let t = l.trim();
                if t.is_empty() {
                    continue;
                }
                if Event::from_line(t).is_err() {
                    expected_bad.push(n + 1);
                } else {
                    good += 1;
                }
            }
            let result = EventFile::open(&path, None);
            let read = result.as_ref().ok().map(|f| f.events().expect("events").collect::<Vec<_>>());
            std::fs::remove_file(&path).ok();
            match result {
                Ok(_) => {
                    prop_assert!(expected_bad.is_empty(), "{:?}", expected_bad);
                    let read = read.unwrap_or_default();
                    prop_assert!(read.iter().all(Result::is_ok));
                    prop_assert_eq!(read.len(), good);
                }
                Err(EventsError::Lines { lines: bad, total, .. }) => {
                    let numbers: Vec<usize> = bad.iter().map(|(n, _)| *n).collect();
                    prop_assert_eq!(numbers, expected_bad.clone());
                    prop_assert_eq!(total, expected_bad.len());
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases() / 4, ..ProptestConfig::default() })]

        /// Checked in ranges on several threads, a file gives what one
        /// pass gives: the same events in the same order with the same
        /// line numbers, the same users, the same bad lines.
        #[test]
        fn ranges_on_threads_index_what_one_pass_does(
            lines in prop::collection::vec((prop_oneof![
                3 => (0u32..6, 0u32..4).prop_map(|(u, t)| format!(
                    r#"{{"type":"track","user":"u{u}","event":"e","ts":"2026-03-02T09:0{t}:00Z"}}"#)),
                1 => line(),
            ], 0u8..3), 0..60),
            bom in any::<bool>(),
            threads in 2usize..6,
        ) {
            let (path, text) = write_lines(&lines, bom);
            let one = EventFile::open_in_ranges(&path, None, &mut |_| {}, u64::MAX, 1);
            let mut told = Vec::new();
            let many = EventFile::open_in_ranges(&path, None, &mut |n| told.push(n), 0, threads);
            std::fs::remove_file(&path).ok();
            prop_assert!(told.windows(2).all(|w| w[0] <= w[1]), "{:?}", told);
            prop_assert_eq!(told.last().copied(), Some(text.len() as u64));
            match (one, many) {
                (Ok(a), Ok(b)) => {
                    prop_assert_eq!(format!("{:?}", a.entries), format!("{:?}", b.entries));
                    prop_assert_eq!(a.users, b.users);
                    prop_assert_eq!(a.skipped, b.skipped);
                }
                (Err(EventsError::Lines { lines: a, total: ta, .. }),
                 Err(EventsError::Lines { lines: b, total: tb, .. })) => {
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(ta, tb);
                }
                (a, b) => prop_assert!(false, "{:?} / {:?}", a.err(), b.err()),
            }
        }
    }

    /// A file of `lines`, each with its ending (`\n`, `\r\n`, `\r`), after
    /// a byte order mark with `bom`: its path and text.
    fn write_lines(lines: &[(String, u8)], bom: bool) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("sluice-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(format!("{}.jsonl", rand_name()));
        let mut text = String::new();
        if bom {
            text.push('\u{feff}');
        }
        for (l, ending) in lines {
            text.push_str(l);
            text.push_str(["\n", "\r\n", "\r"][*ending as usize]);
        }
        std::fs::write(&path, &text).expect("write");
        (path, text)
    }

    fn rand_name() -> String {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        format!("f{}", N.fetch_add(1, Ordering::Relaxed))
    }
}
