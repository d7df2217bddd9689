//! The store of a run that is never reopened (`simulate` without
//! `--store`, `test`): every table in one ordered map in memory, the large
//! values (user records) in one append-only file of a temporary directory,
//! read back by offset.
//!
//! It owns nothing of durability: no commit frames, no checkpoints, no
//! recovery, no fsync (nobody reopens it, so a crash loses nothing anyone
//! could see). What it must keep is the [`Kv`] contract the tables are
//! built on: ordered scans, last write wins, blob keys readable with
//! [`Kv::get_blob`] (and, like [`super::sled_store`], a 16-byte pointer as
//! their plain value). It must not know the tables.
//!
//! Why not sled: for a store that lives for one process, sled's page cache,
//! tree nodes and background threads were a tenth of a simulation's time
//! and a sixth of its memory, for writes nobody reads back from disk.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::log::Pointer;
use super::{Batch, Entries, Error, Kv};

/// What a key holds.
enum Slot {
    Value(Box<[u8]>),
    /// A blob: `len` bytes at `offset` of the file.
    Blob {
        offset: u64,
        len: u32,
    },
}

struct Inner {
    tables: BTreeMap<Box<[u8]>, Slot>,
    writer: BufWriter<File>,
    /// Bytes appended (buffered ones included).
    len: u64,
    /// Bytes handed to the OS (readable through `reader`).
    written: u64,
    /// Bytes of blobs that were overwritten or deleted.
    garbage: u64,
}

/// See the module docs.
pub struct ScratchStore {
    inner: Mutex<Inner>,
    reader: File,
    path: PathBuf,
}

impl ScratchStore {
    /// Creates the store's file in `dir` (created if missing; deleting it
    /// is the caller's business).
    pub fn create(dir: &Path) -> Result<ScratchStore, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
        let path = dir.join("records.scratch");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "create", e))?;
        let reader = file.try_clone().map_err(|e| Error::io(&path, "open", e))?;
        Ok(ScratchStore {
            inner: Mutex::new(Inner {
                tables: BTreeMap::new(),
                writer: BufWriter::with_capacity(1 << 20, file),
                len: 0,
                written: 0,
                garbage: 0,
            }),
            reader,
            path,
        })
    }

    fn inner(&self) -> Result<std::sync::MutexGuard<'_, Inner>, Error> {
        self.inner
            .lock()
            .map_err(|_| Error::io(&self.path, "lock", "the scratch store's lock is poisoned"))
    }

    /// Bytes in the file, and how many of them belong to overwritten
    /// records.
    pub fn file_bytes(&self) -> Result<(u64, u64), Error> {
        let inner = self.inner()?;
        Ok((inner.len, inner.garbage))
    }
}

impl Inner {
    fn write_out(&mut self, path: &Path) -> Result<(), Error> {
        if self.written < self.len {
            self.writer
                .flush()
                .map_err(|e| Error::io(path, "write", e))?;
            self.written = self.len;
        }
        Ok(())
    }

    fn forget(&mut self, old: Option<Slot>) {
        if let Some(Slot::Blob { len, .. }) = old {
            self.garbage += u64::from(len);
        }
    }
}

fn pointer(offset: u64, len: u32) -> Pointer {
    Pointer {
        generation: 0,
        offset,
        len,
    }
}

impl Kv for ScratchStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let inner = self.inner()?;
        Ok(inner.tables.get(key).map(|s| match s {
            Slot::Value(v) => v.to_vec(),
            Slot::Blob { offset, len } => pointer(*offset, *len).encode().to_vec(),
        }))
    }

    fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let mut inner = self.inner()?;
        let (offset, len) = match inner.tables.get(key) {
            None => return Ok(None),
            Some(Slot::Value(v)) => return Ok(Some(v.to_vec())),
            Some(Slot::Blob { offset, len }) => (*offset, *len),
        };
        if offset + u64::from(len) > inner.written {
            inner.write_out(&self.path)?;
        }
        drop(inner);
        let mut buf = vec![0u8; len as usize];
        self.reader
            .read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io(&self.path, &format!("read at {offset}"), e))?;
        Ok(Some(buf))
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, Error> {
        let from = after.unwrap_or(prefix);
        if before.is_some_and(|b| b <= from) {
            // An empty range (which `BTreeMap::range` refuses).
            return Ok(Vec::new());
        }
        let inner = self.inner()?;
        let (lo, hi) = super::scan_range(prefix, after, before);
        let mut out = Vec::new();
        for (k, s) in inner.tables.range::<[u8], _>((lo, hi)) {
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            let v = match s {
                Slot::Value(v) => v.to_vec(),
                Slot::Blob { offset, len } => pointer(*offset, *len).encode().to_vec(),
            };
            out.push((k.to_vec(), v));
        }
        Ok(out)
    }

    fn apply(&self, mut batch: Batch) -> Result<(), Error> {
        batch.seal()?;
        let mut inner = self.inner()?;
        for (k, v) in batch.blobs {
            let old = match v {
                Some(v) => {
                    let len = u32::try_from(v.len())
                        .map_err(|_| Error::io(&self.path, "append", "record larger than 4 GiB"))?;
                    let offset = inner.len;
                    inner
                        .writer
                        .write_all(&v)
                        .map_err(|e| Error::io(&self.path, "append", e))?;
                    inner.len += u64::from(len);
                    inner
                        .tables
                        .insert(k.into_boxed_slice(), Slot::Blob { offset, len })
                }
                None => inner.tables.remove(k.as_slice()),
            };
            inner.forget(old);
        }
        for (k, v) in batch.ops {
            let old = match v {
                Some(v) => inner
                    .tables
                    .insert(k.into_boxed_slice(), Slot::Value(v.into_boxed_slice())),
                None => inner.tables.remove(k.as_slice()),
            };
            inner.forget(old);
        }
        Ok(())
    }

    /// Hands buffered records to the OS (nothing is ever fsynced).
    fn flush(&self) -> Result<(), Error> {
        self.inner()?.write_out(&self.path)
    }
}

#[cfg(test)]
mod tests {
    //! The scratch store against a `BTreeMap` model: whatever batches are
    //! applied, every read (get, get_blob, scan with any bounds) answers
    //! what the model does.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Write {
        Put(u8, Vec<u8>),
        Delete(u8),
        PutBlob(u8, Vec<u8>),
        DeleteBlob(u8),
    }

    fn key(prefix: u8, k: u8) -> Vec<u8> {
        vec![prefix, b'/', k]
    }

    fn write() -> impl Strategy<Value = Write> {
        prop_oneof![
            3 => (0u8..24, prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(k, v)| Write::Put(k, v)),
            1 => (0u8..24).prop_map(Write::Delete),
            3 => (0u8..24, prop::collection::vec(any::<u8>(), 0..3000)).prop_map(|(k, v)| Write::PutBlob(k, v)),
            1 => (0u8..24).prop_map(Write::DeleteBlob),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn reads_answer_what_a_model_does(
            batches in prop::collection::vec(prop::collection::vec(write(), 0..12), 1..10),
            after in prop::option::of(0u8..24),
            before in prop::option::of(0u8..24),
            limit in 1usize..30,
        ) {
            let dir = tempfile::tempdir().expect("tmp");
            let store = ScratchStore::create(dir.path()).expect("create");
            // Plain values under `o`, blobs under `u`.
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (i, writes) in batches.iter().enumerate() {
                let mut b = Batch::default();
                for w in writes {
                    match w {
                        Write::Put(k, v) => b.put(key(b'o', *k), v.clone()),
                        Write::Delete(k) => b.delete(key(b'o', *k)),
                        Write::PutBlob(k, v) => b.put_blob(key(b'u', *k), v.clone()),
                        Write::DeleteBlob(k) => b.delete_blob(key(b'u', *k)),
                    }
                }
                for (k, v) in b.ops.iter().chain(b.blobs.iter()) {
                    match v {
                        Some(v) => model.insert(k.clone(), v.clone()),
                        None => model.remove(k),
                    };
                }
                store.apply(b).expect("apply");
                if i % 3 == 0 {
                    store.flush().expect("flush");
                }
            }
            for k in 0u8..24 {
                let plain = key(b'o', k);
                prop_assert_eq!(store.get(&plain).expect("get"), model.get(&plain).cloned());
                let blob = key(b'u', k);
                prop_assert_eq!(store.get_blob(&blob).expect("get_blob"), model.get(&blob).cloned());
                prop_assert_eq!(
                    store.get(&blob).expect("get").map(|p| p.len()),
                    model.get(&blob).map(|_| Pointer::SIZE)
                );
            }
            for prefix in [b'o', b'u'] {
                let after = after.map(|a| key(prefix, a));
                let before = before.map(|b| key(prefix, b));
                let got: Vec<Vec<u8>> = store
                    .scan(&[prefix], after.as_deref(), before.as_deref(), limit)
                    .expect("scan")
                    .into_iter()
                    .map(|(k, v)| {
                        if prefix == b'o' {
                            prop_assert_eq!(Some(&v), model.get(&k));
                        }
                        Ok(k)
                    })
                    .collect::<Result<_, TestCaseError>>()?;
                let want: Vec<Vec<u8>> = model
                    .keys()
                    .filter(|k| k[0] == prefix)
                    .filter(|k| after.as_ref().is_none_or(|a| *k > a))
                    .filter(|k| before.as_ref().is_none_or(|b| *k < b))
                    .take(limit)
                    .cloned()
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn overwritten_records_are_counted_as_garbage() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = ScratchStore::create(dir.path()).expect("create");
        let mut b = Batch::default();
        b.put_blob(b"ua".to_vec(), vec![1; 100]);
        store.apply(b).expect("apply");
        let mut b = Batch::default();
        b.put_blob(b"ua".to_vec(), vec![2; 50]);
        store.apply(b).expect("apply");
        assert_eq!(store.file_bytes().expect("bytes"), (150, 100));
        assert_eq!(store.get_blob(b"ua").expect("read"), Some(vec![2; 50]));
    }
}
