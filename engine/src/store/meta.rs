//! Engine bookkeeping: key = `x` + name. Holds the sequence counter, the
//! policies' ledgers and the schedules' cursors, written with every batch.

use super::{Batch, Error, Kv};

const PREFIX: u8 = b'x';

pub(crate) fn key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1);
    k.push(PREFIX);
    k.extend_from_slice(name.as_bytes());
    k
}

pub const SEQ: &str = "seq";
pub const POLICIES: &str = "policies";
pub const SCHEDULES: &str = "schedules";
/// Unsubscribes per journey version (canary guards).
pub const UNSUBSCRIBES: &str = "unsubscribes";

/// Reads of the meta table.
pub trait Meta {
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error>;
}

impl<T: Kv + ?Sized> Meta for T {
    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, Error> {
        self.get(&key(name))
    }
}

impl Batch {
    pub fn put_meta(&mut self, name: &str, value: Vec<u8>) {
        self.put(key(name), value);
    }
}
