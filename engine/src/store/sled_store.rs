//! The sled implementation: every table in one sled tree, told apart by a
//! one-byte key prefix, so that one `apply_batch` commits a whole batch
//! atomically.

use std::path::Path;

use super::{Batch, Error, Kv};

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
            cache_bytes: 64 << 20,
            temporary: false,
        }
    }
}

pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    pub fn open(path: &Path, options: &SledOptions) -> Result<SledStore, Error> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .temporary(options.temporary)
            .flush_every_ms(if options.temporary { None } else { Some(500) })
            .open()
            .map_err(backend)?;
        Ok(SledStore { db })
    }
}

impl Kv for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.db.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
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
        self.db.apply_batch(b).map_err(backend)
    }

    fn flush(&self) -> Result<(), Error> {
        self.db.flush().map(|_| ()).map_err(backend)
    }
}
