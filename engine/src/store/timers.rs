//! The timers table, in due order: key = `t` + due time (big-endian ms) +
//! a sequence number, so a range scan yields timers in the order they fire
//! and ties in the order they were set.

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

use super::codec::{self, time_bytes, time_from_bytes};
use super::{Batch, Error, Kv};

const PREFIX: u8 = b't';

/// When a timer fires, and a unique sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimerKey {
    pub due: Millis,
    pub seq: u64,
}

impl TimerKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(17);
        k.push(PREFIX);
        k.extend_from_slice(&time_bytes(self.due));
        k.extend_from_slice(&self.seq.to_be_bytes());
        k
    }

    pub fn decode(k: &[u8]) -> Option<TimerKey> {
        if k.len() != 17 || k[0] != PREFIX {
            return None;
        }
        let mut due = [0u8; 8];
        due.copy_from_slice(&k[1..9]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&k[9..17]);
        Some(TimerKey {
            due: time_from_bytes(due),
            seq: u64::from_be_bytes(seq),
        })
    }
}

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimerKind {
    /// Resume a live instance (wait over, wait_for timeout). Ignored when
    /// the instance moved on meanwhile.
    Instance { instance: u64 },
    /// A live instance's `send` is due (first at the instant it reaches the
    /// step, again when a deferral ends). Messages due at one instant are
    /// decided oldest `due` first, then by higher `priority`, then earlier
    /// entry.
    Send {
        instance: u64,
        due: Millis,
        priority: i64,
        entered_at: Millis,
    },
    /// Re-evaluate the user's entry segments: a `history … within` window
    /// lets an event go.
    Segments,
    /// A schedule-triggered journey fires for the users of one zone (the
    /// journey's fixed zone, or one of the users' zones).
    Schedule { journey: String, zone: String },
    /// An outbox entry's next delivery attempt (after a transient failure).
    Retry { outbox: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    /// Empty for schedule timers.
    pub user: String,
    pub kind: TimerKind,
}

/// Reads of the timers table.
pub trait Timers {
    /// Up to `limit` timers due at or before `until`, after `after`, in order.
    fn timers(
        &self,
        after: Option<TimerKey>,
        until: Millis,
        limit: usize,
    ) -> Result<Vec<(TimerKey, Timer)>, Error>;
}

/// How many timers the store holds (one pass over their keys).
pub fn count<T: Kv + ?Sized>(kv: &T) -> Result<i64, Error> {
    let mut n = 0i64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = kv.scan(&[PREFIX], after.as_deref(), None, 4_096)?;
        let Some((last, _)) = page.last() else {
            return Ok(n);
        };
        after = Some(last.clone());
        n += i64::try_from(page.len()).unwrap_or(i64::MAX);
    }
}

impl<T: Kv + ?Sized> Timers for T {
    fn timers(
        &self,
        after: Option<TimerKey>,
        until: Millis,
        limit: usize,
    ) -> Result<Vec<(TimerKey, Timer)>, Error> {
        let after_key = after.map(|a| a.encode());
        let before = until
            .checked_add(1)
            .map(|due| TimerKey { due, seq: 0 }.encode());
        let mut out = Vec::new();
        for (k, v) in self.scan(&[PREFIX], after_key.as_deref(), before.as_deref(), limit)? {
            let Some(key) = TimerKey::decode(&k) else {
                continue;
            };
            out.push((key, codec::decode("timer", &v)?));
        }
        Ok(out)
    }
}

impl Batch {
    pub fn put_timer(&mut self, key: TimerKey, timer: &Timer) -> Result<(), Error> {
        self.put(key.encode(), codec::encode("timer", timer)?);
        Ok(())
    }

    pub fn delete_timer(&mut self, key: TimerKey) {
        self.delete(key.encode());
    }
}
