//! The sled implementation: every table in one sled tree, told apart by a
//! one-byte key prefix, so that one `apply_batch` commits a batch
//! atomically; large values (user records) in a [`ValueLog`] beside it,
//! sled holding their pointers.
//!
//! Layout of a store directory: `sled/` (the tree) and
//! `values.<generation>.log` (the value log).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::vlog::{Pointer, ValueLog};
use super::{Batch, Error, Kv};

/// Prefixes whose values are blob pointers.
const BLOB_PREFIXES: &[u8] = &[super::users::PREFIX];

/// Compact the value log once it holds at least this much.
const COMPACT_MIN_BYTES: u64 = 256 << 20;

fn backend(e: sled::Error) -> Error {
    Error::Backend(e.to_string())
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// sled's page cache, in bytes (its default of 1 GiB would dominate
    /// the engine's memory).
    pub cache_bytes: u64,
    /// Delete the directory when the store is dropped (simulate, test).
    pub temporary: bool,
}

impl Default for SledOptions {
    fn default() -> Self {
        SledOptions {
            cache_bytes: 32 << 20,
            temporary: false,
        }
    }
}

pub struct SledStore {
    db: sled::Db,
    vlog: Mutex<ValueLog>,
    dir: PathBuf,
    temporary: bool,
}

impl SledStore {
    pub fn open(path: &Path, options: &SledOptions) -> Result<SledStore, Error> {
        // sled flushes only when asked ([`Kv::flush`]): the value log must
        // be durable before the pointers to it are.
        let db = sled::Config::new()
            .path(path.join("sled"))
            .cache_capacity(options.cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open()
            .map_err(backend)?;
        let mut vlog = ValueLog::open(path)?;
        // Which generations are still referenced, and how much is live.
        let mut live = 0u64;
        let mut referenced = std::collections::BTreeSet::new();
        for prefix in BLOB_PREFIXES {
            for item in db.scan_prefix([*prefix]) {
                let (_, v) = item.map_err(backend)?;
                if let Some(p) = Pointer::decode(&v) {
                    live += p.len as u64 + 8;
                    referenced.insert(p.generation);
                }
            }
        }
        let unused: Vec<u32> = vlog
            .generations()
            .into_iter()
            .filter(|g| !referenced.contains(g) && *g != vlog.generation())
            .collect();
        vlog.remove_generations(&unused)?;
        vlog.finish_generation(live);
        Ok(SledStore {
            db,
            vlog: Mutex::new(vlog),
            dir: path.to_owned(),
            temporary: options.temporary,
        })
    }

    fn vlog(&self) -> Result<std::sync::MutexGuard<'_, ValueLog>, Error> {
        self.vlog
            .lock()
            .map_err(|_| Error::Backend("value log: lock poisoned".into()))
    }

    /// Copies every live record into a new generation of the value log and
    /// drops the old ones.
    fn compact(&self, vlog: &mut ValueLog) -> Result<(), Error> {
        let old = vlog.start_generation()?;
        let mut live = 0u64;
        for prefix in BLOB_PREFIXES {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = self.scan(&[*prefix], after.as_deref(), None, 128)?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                let mut b = sled::Batch::default();
                for (k, v) in page {
                    let Some(p) = Pointer::decode(&v) else {
                        continue;
                    };
                    let bytes = vlog.read(p)?;
                    let np = vlog.append(&bytes)?;
                    live += np.len as u64 + 8;
                    b.insert(k, &np.encode()[..]);
                }
                vlog.flush()?;
                self.db.apply_batch(b).map_err(backend)?;
            }
        }
        vlog.sync()?;
        self.db.flush().map_err(backend)?;
        vlog.remove_generations(&old)?;
        vlog.finish_generation(live);
        Ok(())
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Kv for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let Some(v) = self.db.get(key).map_err(backend)? else {
            return Ok(None);
        };
        let p = Pointer::decode(&v).ok_or_else(|| Error::Decode {
            what: "value pointer",
            message: format!("{} bytes", v.len()),
        })?;
        self.vlog()?.read(p).map(Some)
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<super::Entries, Error> {
        use std::ops::Bound;
        let mut out = Vec::new();
        let lo = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Included(prefix),
        };
        let hi = match before {
            Some(b) => Bound::Excluded(b),
            None => Bound::Unbounded,
        };
        let iter = self.db.range::<&[u8], _>((lo, hi));
        for item in iter {
            let (k, v) = item.map_err(backend)?;
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

    fn apply(&self, batch: Batch) -> Result<(), Error> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        if !batch.blobs.is_empty() {
            let mut vlog = self.vlog()?;
            if vlog.wants_compaction(COMPACT_MIN_BYTES) {
                self.compact(&mut vlog)?;
            }
            for (k, v) in batch.blobs {
                match v {
                    Some(v) => {
                        let p = vlog.append(&v)?;
                        b.insert(k, &p.encode()[..]);
                    }
                    None => b.remove(k),
                }
            }
            // Readable (and safe from a process crash) before the pointers.
            vlog.flush()?;
        }
        self.db.apply_batch(b).map_err(backend)
    }

    fn flush(&self) -> Result<(), Error> {
        self.vlog()?.sync()?;
        self.db.flush().map(|_| ()).map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_survive_compaction_and_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("store");
        let key = |i: u32| {
            let mut k = vec![super::super::users::PREFIX];
            k.extend_from_slice(format!("user-{i}").as_bytes());
            k
        };
        {
            let store = SledStore::open(&path, &SledOptions::default()).expect("open");
            for round in 0..3u8 {
                let mut b = Batch::default();
                for i in 0..200 {
                    b.put_blob(key(i), vec![round; 300 + i as usize]);
                }
                store.apply(b).expect("apply");
            }
            let mut vlog = store.vlog().expect("vlog");
            let before = vlog.generations();
            store.compact(&mut vlog).expect("compact");
            assert_ne!(
                vlog.generations(),
                before,
                "a new generation replaced the old"
            );
            assert_eq!(vlog.generations().len(), 1);
            drop(vlog);
            store.flush().expect("flush");
        }
        let store = SledStore::open(&path, &SledOptions::default()).expect("reopen");
        for i in 0..200 {
            assert_eq!(
                store.get_blob(&key(i)).expect("read"),
                Some(vec![2u8; 300 + i as usize])
            );
        }
    }
}
