//! The outbox: key = `o` + entry id (big-endian), value = one rendered
//! message awaiting delivery, as JSON ([`OutboxEntry`]).
//!
//! A message the policies let through is put here in the same commit as
//! the state change that decided it; it leaves when a later commit records
//! its delivery (or moves it to the dead-letter queue). Whatever is here
//! after a crash is delivered again, with the same key.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::dispatch::Message;

use super::{Batch, Error, Kv};

const PREFIX: u8 = b'o';

/// A message awaiting delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Unique in the store; orders the outbox.
    pub id: u64,
    pub message: Message,
    /// The journey's category (`transactional` messages carry no
    /// unsubscribe link).
    pub category: String,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// Not to be tried before this instant (a retry's backoff).
    pub not_before: Millis,
    /// The last attempt's failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The dead letter (time, sequence) this entry replays: it leaves the
    /// queue when the entry is delivered, and is updated if it fails again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<(Millis, u64)>,
}

pub fn key(id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(PREFIX);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn decode(bytes: &[u8]) -> Result<OutboxEntry, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Decode {
        what: "outbox entry",
        message: e.to_string(),
    })
}

/// Reads of the outbox.
pub trait Outbox {
    /// Up to `limit` entries after `after`, oldest first.
    fn outbox(&self, after: Option<u64>, limit: usize) -> Result<Vec<OutboxEntry>, Error>;
    fn outbox_entry(&self, id: u64) -> Result<Option<OutboxEntry>, Error>;
}

impl<T: Kv + ?Sized> Outbox for T {
    fn outbox(&self, after: Option<u64>, limit: usize) -> Result<Vec<OutboxEntry>, Error> {
        let after = after.map(key);
        self.scan(&[PREFIX], after.as_deref(), None, limit)?
            .into_iter()
            .map(|(_, v)| decode(&v))
            .collect()
    }

    fn outbox_entry(&self, id: u64) -> Result<Option<OutboxEntry>, Error> {
        self.get(&key(id))?.map(|v| decode(&v)).transpose()
    }
}

impl Batch {
    pub fn put_outbox(&mut self, entry: &OutboxEntry) -> Result<(), Error> {
        let bytes = serde_json::to_vec(entry).map_err(|e| Error::Encode {
            what: "outbox entry",
            message: e.to_string(),
        })?;
        self.put(key(entry.id), bytes);
        Ok(())
    }

    /// Removes a delivered entry. One put in this same batch (never
    /// committed) simply disappears.
    pub fn delete_outbox(&mut self, id: u64, put_in_this_batch: bool) {
        if put_in_this_batch {
            self.ops.remove(&key(id));
        } else {
            self.delete(key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Content;
    use journeys::compiled::Channel;

    #[test]
    fn an_entry_roundtrips() {
        let e = OutboxEntry {
            id: 7,
            message: Message {
                key: "k".into(),
                at: 5,
                user: "u".into(),
                journey: "j".into(),
                version: 2,
                step: "s".into(),
                channel: Channel::Webhook,
                template: "t".into(),
                content: Content::Webhook {
                    method: "POST".into(),
                    url: "http://127.0.0.1/x".into(),
                    headers: vec![("a".into(), "b".into())],
                    body: Some(serde_json::json!({"n": 1.5, "s": "é"})),
                },
            },
            category: "marketing".into(),
            attempts: 1,
            not_before: 9,
            last_error: Some("500".into()),
            dead_letter: None,
        };
        let mut b = Batch::default();
        b.put_outbox(&e).expect("encode");
        let (_, v) = b.ops.iter().next().expect("one");
        assert_eq!(decode(v.as_deref().expect("put")).expect("decode"), e);
    }
}
