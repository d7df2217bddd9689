//! A partition's local store in cluster mode and how it travels on the
//! changelog. The owner keeps a partition's state in a store of its own
//! ([`crate::store::scratch`]: the same tables, kept for the life of the
//! ownership only; the durable copy is the changelog). Every write the
//! engine's commits apply to it is caught by [`Replica`] and published,
//! key by key, on `<prefix>.st.<p>.<name>` (one message kept per subject):
//! user records, timers, outbox entries, the meta (sequence, schedule
//! cursors, throttle ledgers), the message log, dead letters. A new owner
//! loads them into an empty store and opens the engine on it: timers,
//! outbox and cursors come back exactly as committed.
//!
//! A batch's writes must land together (the sequence and the outbox ids it
//! numbers, a user's record and the timers it waits on): before its
//! records, a batch is published whole as a write-ahead record, in chunks
//! named `w<i>`. A restore applies the newest complete one over the
//! records, so a worker killed halfway through publishing leaves either
//! the batch before (its write-ahead record incomplete) or the whole batch.
//!
//! Owns the record names and their encoding; knows nothing of the
//! machine's rules, NATS, or which partition is whose.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::store::scratch::ScratchStore;
use crate::store::{Batch, Entries, Error, Kv};

/// The writes applied since the last [`Replica::take`].
#[derive(Debug, Default)]
struct Unpublished {
    ops: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    blobs: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// A partition's store: a scratch store whose applied writes are kept
/// until they are published.
pub struct Replica {
    inner: ScratchStore,
    unpublished: Arc<Mutex<Unpublished>>,
}

/// The side of a [`Replica`] that takes its writes out (the store itself
/// goes into the engine).
#[derive(Clone)]
pub struct Writes(Arc<Mutex<Unpublished>>);

impl Replica {
    pub fn new(inner: ScratchStore) -> (Replica, Writes) {
        let unpublished = Arc::new(Mutex::new(Unpublished::default()));
        (
            Replica {
                inner,
                unpublished: Arc::clone(&unpublished),
            },
            Writes(unpublished),
        )
    }
}

fn poisoned() -> Error {
    Error::Backend("a partition's write list is poisoned".into())
}

impl Writes {
    /// The writes applied since the last call, as changelog records
    /// (name, bytes): the write-ahead chunks of `batch` first, then one
    /// record per key. Empty when nothing was written.
    pub fn take(&self, batch: u64) -> Result<Vec<(String, bytes::Bytes)>, Error> {
        let u = std::mem::take(&mut *self.0.lock().map_err(|_| poisoned())?);
        if u.ops.is_empty() && u.blobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut records = Vec::with_capacity(u.ops.len() + u.blobs.len() + 1);
        let mut body = Vec::new();
        for (kind, map) in [(b'k', &u.ops), (b'b', &u.blobs)] {
            for (key, value) in map {
                encode_write(&mut body, kind, key, value.as_deref());
            }
        }
        let chunks: Vec<&[u8]> = body.chunks(WAL_CHUNK).collect();
        let n = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        for (i, chunk) in chunks.iter().enumerate() {
            let mut payload = Vec::with_capacity(chunk.len() + 24);
            payload.extend_from_slice(&batch.to_be_bytes());
            payload.extend_from_slice(&(i as u32).to_be_bytes());
            payload.extend_from_slice(&n.to_be_bytes());
            payload.extend_from_slice(chunk);
            records.push((format!("w{i}"), bytes::Bytes::from(payload)));
        }
        for (kind, map) in [('k', &u.ops), ('b', &u.blobs)] {
            for (key, value) in map {
                let payload = match value {
                    Some(v) => {
                        let mut p = Vec::with_capacity(v.len() + 1);
                        p.push(1);
                        p.extend_from_slice(v);
                        p
                    }
                    None => super::changelog::TOMBSTONE.to_vec(),
                };
                records.push((format!("{kind}{}", hex::encode(key)), payload.into()));
            }
        }
        Ok(records)
    }

    /// Adds `writes` to what the next [`Writes::take`] publishes: the
    /// batch a restore rolled forward from its write-ahead record, whose
    /// key records the dead owner may not have published. Without this,
    /// the next batch's write-ahead record would overwrite the only copy
    /// of those writes on the changelog.
    pub fn republish(&self, writes: Batch) -> Result<(), Error> {
        let mut u = self.0.lock().map_err(|_| poisoned())?;
        for (k, v) in writes.ops {
            u.ops.entry(k).or_insert(v);
        }
        for (k, v) in writes.blobs {
            u.blobs.entry(k).or_insert(v);
        }
        Ok(())
    }

    /// Forgets what was not published (a failed batch: the partition is
    /// given up and restored again from the changelog).
    pub fn discard(&self) {
        if let Ok(mut u) = self.0.lock() {
            *u = Unpublished::default();
        }
    }
}

/// Write-ahead chunks stay well under NATS's default 1 MiB payload.
const WAL_CHUNK: usize = 512 * 1024;

fn encode_write(out: &mut Vec<u8>, kind: u8, key: &[u8], value: Option<&[u8]>) {
    out.push(kind);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    match value {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
        None => out.push(0),
    }
}

fn damaged(what: impl Into<String>) -> Error {
    Error::Decode {
        what: "a changelog record",
        message: what.into(),
    }
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
    if bytes.len() < n {
        return Err(damaged("truncated write-ahead record"));
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn u32_of(bytes: &mut &[u8]) -> Result<u32, Error> {
    let b = take(bytes, 4)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_of(bytes: &mut &[u8]) -> Result<u64, Error> {
    let b = take(bytes, 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_be_bytes(a))
}

/// What a restore found: how many keys, the batch rolled forward and its
/// writes (to publish again: [`Writes::republish`]), and the highest batch
/// number any write-ahead chunk carries (complete or not): the next owner
/// numbers its batches after it, so its chunks never mix with a dead
/// owner's half-written ones.
#[derive(Debug, Default)]
pub struct Loaded {
    pub keys: usize,
    pub rolled_forward: Option<u64>,
    pub replayed: Batch,
    pub last_batch: u64,
}

/// Builds the store's content from a partition's changelog records
/// (name, bytes): every key's last record, then the newest complete
/// write-ahead batch over them.
pub fn load(store: &ScratchStore, records: &[(String, bytes::Bytes)]) -> Result<Loaded, Error> {
    let mut batch = Batch::default();
    let mut chunks: BTreeMap<u64, (u32, BTreeMap<u32, &[u8]>)> = BTreeMap::new();
    for (name, bytes) in records {
        let (kind, rest) = name.split_at(name.len().min(1));
        match kind {
            "k" | "b" => {
                let key = hex::decode(rest)
                    .map_err(|_| damaged(format!("record name {name} is not hex")))?;
                let Some((&flag, value)) = bytes.split_first() else {
                    return Err(damaged(format!("record {name} is empty")));
                };
                let value = (flag == 1).then(|| value.to_vec());
                let target = if kind == "k" {
                    &mut batch.ops
                } else {
                    &mut batch.blobs
                };
                target.insert(key, value);
            }
            "w" => {
                let mut b: &[u8] = bytes;
                let id = u64_of(&mut b)?;
                let i = u32_of(&mut b)?;
                let n = u32_of(&mut b)?;
                let entry = chunks.entry(id).or_insert((n, BTreeMap::new()));
                entry.1.insert(i, b);
            }
            _ => return Err(damaged(format!("unknown record name {name}"))),
        }
    }
    let last_batch = chunks.keys().next_back().copied().unwrap_or(0);
    let complete = chunks.into_iter().rev().find(|(_, (n, parts))| {
        parts.len() == *n as usize && (0..*n).all(|i| parts.contains_key(&i))
    });
    let mut rolled_forward = None;
    let mut replayed = Batch::default();
    if let Some((id, (_, parts))) = complete {
        rolled_forward = Some(id);
        let body: Vec<u8> = parts.values().flat_map(|c| c.iter().copied()).collect();
        let mut b: &[u8] = &body;
        while !b.is_empty() {
            let kind = take(&mut b, 1)?[0];
            let len = u32_of(&mut b)? as usize;
            let key = take(&mut b, len)?.to_vec();
            let value = match take(&mut b, 1)?[0] {
                1 => {
                    let len = u32_of(&mut b)? as usize;
                    Some(take(&mut b, len)?.to_vec())
                }
                _ => None,
            };
            let (all, replay) = match kind {
                b'k' => (&mut batch.ops, &mut replayed.ops),
                b'b' => (&mut batch.blobs, &mut replayed.blobs),
                _ => return Err(damaged("unknown write kind in a write-ahead record")),
            };
            all.insert(key.clone(), value.clone());
            replay.insert(key, value);
        }
    }
    // Deleted keys leave nothing behind in a fresh store.
    batch.ops.retain(|_, v| v.is_some());
    batch.blobs.retain(|_, v| v.is_some());
    let keys = batch.len();
    store.apply(batch)?;
    Ok(Loaded {
        keys,
        rolled_forward,
        replayed,
        last_batch,
    })
}

impl Kv for Replica {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get(key)
    }

    fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.inner.get_blob(key)
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, Error> {
        self.inner.scan(prefix, after, before, limit)
    }

    fn apply(&self, batch: Batch) -> Result<(), Error> {
        {
            let mut u = self.unpublished.lock().map_err(|_| poisoned())?;
            for (k, v) in &batch.ops {
                u.ops.insert(k.clone(), v.clone());
            }
            for (k, v) in &batch.blobs {
                u.blobs.insert(k.clone(), v.clone());
            }
        }
        self.inner.apply(batch)
    }

    fn flush(&self) -> Result<(), Error> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (tempfile::TempDir, ScratchStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = ScratchStore::create(dir.path()).expect("scratch store");
        (dir, s)
    }

    fn put(r: &Replica, ops: &[(&str, Option<&str>)], blobs: &[(&str, Option<&str>)]) {
        let mut b = Batch::default();
        for (k, v) in ops {
            b.ops
                .insert(k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
        }
        for (k, v) in blobs {
            b.blobs
                .insert(k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
        }
        r.apply(b).expect("apply");
    }

    fn content(s: &ScratchStore) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = s.scan(b"k", None, None, 100).expect("scan");
        for key in [b"ua".to_vec(), b"ub".to_vec()] {
            if let Some(v) = s.get_blob(&key).expect("blob") {
                out.push((key, v));
            }
        }
        out
    }

    /// Publishes in the worker's order: every write-ahead chunk, then the
    /// records; `upto` cuts the list off (a worker killed mid-publish).
    fn publish(
        log: &mut BTreeMap<String, bytes::Bytes>,
        records: Vec<(String, bytes::Bytes)>,
        upto: usize,
    ) {
        for (name, bytes) in records.into_iter().take(upto) {
            log.insert(name, bytes);
        }
    }

    #[test]
    fn a_restore_sees_each_batch_whole_wherever_publishing_stopped() {
        let (_d, s) = scratch();
        let (r, writes) = Replica::new(s);
        let mut log = BTreeMap::new();
        put(
            &r,
            &[("k1", Some("a")), ("k2", Some("a"))],
            &[("ua", Some("A"))],
        );
        let first = writes.take(1).expect("take");
        publish(&mut log, first, usize::MAX);
        put(&r, &[("k1", Some("b")), ("k2", None)], &[("ub", Some("B"))]);
        let second = writes.take(2).expect("take");
        let after_first: Vec<_> = {
            let (_d2, s2) = scratch();
            load(
                &s2,
                &log.iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>(),
            )
            .expect("load");
            content(&s2)
        };
        let (_d3, whole) = scratch();
        let mut all = log.clone();
        publish(&mut all, second.clone(), usize::MAX);
        load(&whole, &all.into_iter().collect::<Vec<_>>()).expect("load");
        let after_second = content(&whole);
        assert_ne!(after_first, after_second);
        for cut in 0..=second.len() {
            let mut l = log.clone();
            publish(&mut l, second.clone(), cut);
            let (_d4, s4) = scratch();
            load(&s4, &l.into_iter().collect::<Vec<_>>()).expect("load");
            let got = content(&s4);
            // The write-ahead record is the first record: from it on, the
            // batch is whole.
            let want = if cut == 0 {
                &after_first
            } else {
                &after_second
            };
            assert_eq!(&got, want, "cut after {cut} records");
        }
    }

    /// A worker killed after a batch's write-ahead record but before its
    /// key records: the next owner rolls the batch forward and publishes
    /// its writes again with its first batch, so they survive that batch
    /// overwriting the write-ahead record (and a deletion in it leaves a
    /// tombstone, not the old value).
    #[test]
    fn a_rolled_forward_batch_is_published_again_by_the_next_owner() {
        let (_d, s) = scratch();
        let (r, writes) = Replica::new(s);
        let mut log = BTreeMap::new();
        put(&r, &[("k1", Some("a")), ("k2", Some("a"))], &[]);
        publish(&mut log, writes.take(1).expect("take"), usize::MAX);
        put(&r, &[("k1", Some("b")), ("k2", None)], &[("ua", Some("A"))]);
        let second = writes.take(2).expect("take");
        let wal = second.iter().filter(|(n, _)| n.starts_with('w')).count();
        let want = content(&r.inner);
        // Killed right after the write-ahead record.
        publish(&mut log, second, wal);

        let (_d2, s2) = scratch();
        let all: Vec<_> = log.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut loaded = load(&s2, &all).expect("load");
        assert_eq!(loaded.rolled_forward, Some(2));
        assert_eq!(content(&s2), want);
        let (r2, writes2) = Replica::new(s2);
        writes2
            .republish(std::mem::take(&mut loaded.replayed))
            .expect("republish");
        // The new owner's first batch writes something else entirely.
        put(&r2, &[("k3", Some("c"))], &[]);
        let third = writes2.take(loaded.last_batch + 1).expect("take");
        assert!(third
            .iter()
            .any(|(n, b)| n == &format!("k{}", hex::encode("k2"))
                && b.as_ref() == crate::cluster::changelog::TOMBSTONE));
        publish(&mut log, third, usize::MAX);
        let want = content(&r2.inner);
        // Whatever the write-ahead records say now, the keys hold it all.
        let keys_only: Vec<_> = log
            .iter()
            .filter(|(k, _)| !k.starts_with('w'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (_d3, s3) = scratch();
        load(&s3, &keys_only).expect("load");
        assert_eq!(content(&s3), want);
        assert!(want.iter().any(|(k, _)| k == b"k3"));
        assert!(!want.iter().any(|(k, _)| k == b"k2"));
    }

    #[test]
    fn nothing_written_publishes_nothing_and_damage_is_named() {
        let (_d, s) = scratch();
        let (_r, writes) = Replica::new(s);
        assert!(writes.take(1).expect("take").is_empty());
        let (_d2, s2) = scratch();
        let err =
            load(&s2, &[("kzz".into(), bytes::Bytes::from_static(b"\x01v"))]).expect_err("bad hex");
        assert!(err.to_string().contains("kzz"), "{err}");
        let err = load(&s2, &[("x00".into(), bytes::Bytes::from_static(b"\x01v"))])
            .expect_err("unknown name");
        assert!(err.to_string().contains("x00"), "{err}");
    }
}
