//! The message log, by user, and the dead-letter queue, in time order:
//! key = `M` + user + `\0` + time (big-endian ms) + sequence number (`d` +
//! time + sequence number for dead letters); values are JSON objects (the
//! `send` line of CLI.md; for dead letters, the message with its reason and
//! render context).
//!
//! Stores written before this version also hold the log in time order
//! (`m` + time + sequence number): nothing read it, so it is no longer
//! written (it was a quarter of the service's sled inserts); erasing a
//! user still deletes those keys.

use crate::clock::Millis;

use super::codec::time_bytes;
use super::{Batch, Error, Kv};

/// The message log in time order, in stores written before it was dropped.
const LOG: u8 = b'm';
const DEAD: u8 = b'd';
/// The message log again, by user: `M` + user + `\0` + time + seq.
pub(super) const BY_USER: u8 = b'M';

fn user_prefix(user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 2);
    k.push(BY_USER);
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k
}

/// The time and sequence number at the end of a log or dead-letter key.
fn time_seq(key: &[u8]) -> Option<(Millis, u64)> {
    let n = key.len();
    let t: [u8; 8] = key.get(n.checked_sub(16)?..n - 8)?.try_into().ok()?;
    let s: [u8; 8] = key.get(n - 8..)?.try_into().ok()?;
    Some((super::codec::time_from_bytes(t), u64::from_be_bytes(s)))
}

fn key(prefix: u8, at: Millis, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(prefix);
    k.extend_from_slice(&time_bytes(at));
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Reads of the message log and dead-letter queue.
pub trait Messages {
    /// Up to `limit` dead letters (JSON), oldest first.
    fn dead_letters(&self, limit: usize) -> Result<Vec<serde_json::Value>, Error>;
    /// Up to `limit` dead letters, oldest first, each with its `id` (the
    /// sequence number in its key) and `at_ms`.
    fn dead_letter_entries(&self, limit: usize) -> Result<Vec<serde_json::Value>, Error>;
    /// The most recent `limit` logged messages of one user, oldest first.
    fn user_messages(&self, user: &str, limit: usize) -> Result<Vec<serde_json::Value>, Error>;
    /// The keys of one user's logged messages (for erasure).
    /// Every key of `user`'s message log, in both orders (what erasure
    /// deletes).
    fn user_message_keys(&self, user: &str) -> Result<Vec<Vec<u8>>, Error>;
    /// The keys of `user`'s dead letters (they name the user and hold the
    /// rendered message: erasure deletes them too).
    fn user_dead_letter_keys(&self, user: &str) -> Result<Vec<Vec<u8>>, Error>;
    /// How many dead letters there are (one pass over their keys).
    fn dead_letter_count(&self) -> Result<i64, Error>;
    /// Whether the dead letter (time, sequence) is still in the queue.
    fn has_dead_letter(&self, at: Millis, seq: u64) -> Result<bool, Error>;
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
    fn dead_letters(&self, limit: usize) -> Result<Vec<serde_json::Value>, Error> {
        read(self, DEAD, limit)
    }

    fn dead_letter_entries(&self, limit: usize) -> Result<Vec<serde_json::Value>, Error> {
        let mut out = Vec::new();
        for (k, v) in self.scan(&[DEAD], None, None, limit)? {
            let mut value: serde_json::Value =
                serde_json::from_slice(&v).map_err(|e| Error::Decode {
                    what: "dead letter",
                    message: e.to_string(),
                })?;
            if let (Some((at, seq)), Some(m)) = (time_seq(&k), value.as_object_mut()) {
                m.insert("id".into(), seq.into());
                m.insert("at_ms".into(), at.into());
            }
            out.push(value);
        }
        Ok(out)
    }

    fn user_messages(&self, user: &str, limit: usize) -> Result<Vec<serde_json::Value>, Error> {
        let prefix = user_prefix(user);
        let all = self.scan(&prefix, None, None, usize::MAX)?;
        let skip = all.len().saturating_sub(limit);
        all.into_iter()
            .skip(skip)
            .map(|(_, v)| {
                serde_json::from_slice(&v).map_err(|e| Error::Decode {
                    what: "message",
                    message: e.to_string(),
                })
            })
            .collect()
    }

    fn user_message_keys(&self, user: &str) -> Result<Vec<Vec<u8>>, Error> {
        let mut keys = Vec::new();
        for (k, _) in self.scan(&user_prefix(user), None, None, usize::MAX)? {
            // The same line in time order: `m` + the by-user key's time
            // and sequence number.
            if let Some((at, seq)) = time_seq(&k) {
                keys.push(key(LOG, at, seq));
            }
            keys.push(k);
        }
        Ok(keys)
    }

    fn user_dead_letter_keys(&self, user: &str) -> Result<Vec<Vec<u8>>, Error> {
        let mut keys = Vec::new();
        for (k, v) in self.scan(&[DEAD], None, None, usize::MAX)? {
            let letter: serde_json::Value =
                serde_json::from_slice(&v).map_err(|e| Error::Decode {
                    what: "dead letter",
                    message: e.to_string(),
                })?;
            if letter.get("user").and_then(serde_json::Value::as_str) == Some(user) {
                keys.push(k);
            }
        }
        Ok(keys)
    }

    fn dead_letter_count(&self) -> Result<i64, Error> {
        let mut n = 0i64;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.scan(&[DEAD], after.as_deref(), None, 4_096)?;
            let Some((last, _)) = page.last() else {
                return Ok(n);
            };
            after = Some(last.clone());
            n += i64::try_from(page.len()).unwrap_or(i64::MAX);
        }
    }

    fn has_dead_letter(&self, at: Millis, seq: u64) -> Result<bool, Error> {
        Ok(self.get(&key(DEAD, at, seq))?.is_some())
    }
}

impl Batch {
    /// Logs a `send` decision in its user's log.
    pub fn log_message(&mut self, user: &str, at: Millis, seq: u64, json: Vec<u8>) {
        let mut by_user = user_prefix(user);
        by_user.extend_from_slice(&key(LOG, at, seq)[1..]);
        self.put(by_user, json);
    }

    /// Replaces a dead letter (a replayed message that failed again).
    pub fn put_dead_letter(&mut self, at: Millis, seq: u64, json: Vec<u8>) {
        self.put(key(DEAD, at, seq), json);
    }

    pub fn delete_dead_letter(&mut self, at: Millis, seq: u64) {
        self.delete(key(DEAD, at, seq));
    }

    pub fn dead_letter(&mut self, at: Millis, seq: u64, json: Vec<u8>) {
        self.put(key(DEAD, at, seq), json);
    }
}
