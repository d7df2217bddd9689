//! The message log and the dead-letter queue, in time order: key = `m` (or
//! `d`) + time (big-endian ms) + sequence number; values are JSON objects
//! (the `send` line of CLI.md; for dead letters, the message with its
//! reason and render context).

use crate::clock::Millis;

use super::codec::time_bytes;
use super::{Batch, Error, Kv};

const LOG: u8 = b'm';
const DEAD: u8 = b'd';

fn key(prefix: u8, at: Millis, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(prefix);
    k.extend_from_slice(&time_bytes(at));
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Reads of the message log and dead-letter queue.
pub trait Messages {
    /// Up to `limit` logged messages (JSON), oldest first.
    fn messages(&self, limit: usize) -> Result<Vec<serde_json::Value>, Error>;
    /// Up to `limit` dead letters (JSON), oldest first.
    fn dead_letters(&self, limit: usize) -> Result<Vec<serde_json::Value>, Error>;
}

fn read<T: Kv + ?Sized>(kv: &T, prefix: u8, limit: usize) -> Result<Vec<serde_json::Value>, Error> {
    kv.scan(&[prefix], None, None, limit)?
        .into_iter()
        .map(|(_, v)| {
            serde_json::from_slice(&v).map_err(|e| Error::Decode {
                what: "message",
                message: e.to_string(),
            })
        })
        .collect()
}

impl<T: Kv + ?Sized> Messages for T {
    fn messages(&self, limit: usize) -> Result<Vec<serde_json::Value>, Error> {
        read(self, LOG, limit)
    }

    fn dead_letters(&self, limit: usize) -> Result<Vec<serde_json::Value>, Error> {
        read(self, DEAD, limit)
    }
}

impl Batch {
    pub fn log_message(&mut self, at: Millis, seq: u64, json: Vec<u8>) {
        self.put(key(LOG, at, seq), json);
    }

    pub fn dead_letter(&mut self, at: Millis, seq: u64, json: Vec<u8>) {
        self.put(key(DEAD, at, seq), json);
    }
}
