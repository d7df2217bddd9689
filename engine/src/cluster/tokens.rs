//! Cluster-wide throttle tokens (FORMAT.md §8's strict bound across
//! workers). A throttle's window has one key in the `tokens` bucket holding
//! how many sends were handed out in it; a worker takes a batch by
//! compare-and-set (retrying when another worker moved it first) and
//! spends it locally. The sum of every batch never exceeds the limit: a
//! worker that dies wastes at most its unused batch.

use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};

use super::{decode, encode, Cluster, Error};

/// How often a take retries a compare-and-set lost to another worker.
const MAX_ATTEMPTS: usize = 64;

fn key(throttle: &str, window: i64) -> String {
    format!("{}.{window}", hex::encode(throttle))
}

/// Takes up to `batch` sends of `throttle`'s window number `window` whose
/// limit is `limit`; returns how many were granted (0 once the window is
/// spent).
pub async fn take(
    cluster: &Cluster,
    throttle: &str,
    window: i64,
    limit: u64,
    batch: u64,
) -> Result<u64, Error> {
    let kv = cluster.bucket("tokens").await?;
    let k = key(throttle, window);
    for _ in 0..MAX_ATTEMPTS {
        let entry = kv
            .entry(k.as_str())
            .await
            .map_err(|e| Error::nats("read a throttle window", e))?;
        let (granted, revision) = match entry {
            Some(entry) if entry.operation == Operation::Put => {
                (decode::<u64>(&k, &entry.value)?, Some(entry.revision))
            }
            _ => (0, None),
        };
        let grant = batch.min(limit.saturating_sub(granted));
        if grant == 0 {
            return Ok(0);
        }
        let value = encode(&(granted + grant));
        let won = match revision {
            Some(revision) => match kv.update(k.as_str(), value, revision).await {
                Ok(_) => true,
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => false,
                Err(e) => return Err(Error::nats("take throttle tokens", e)),
            },
            None => match kv.create(k.as_str(), value).await {
                Ok(_) => true,
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => false,
                Err(e) => return Err(Error::nats("take throttle tokens", e)),
            },
        };
        if won {
            return Ok(grant);
        }
    }
    Err(Error::nats(
        "take throttle tokens",
        std::io::Error::other(format!(
            "{MAX_ATTEMPTS} compare-and-set attempts lost to other workers"
        )),
    ))
}

/// One worker's share of a global throttle: it spends a batch taken by
/// [`take`] locally and takes another when it runs out, per window.
pub struct Spender {
    throttle: String,
    limit: u64,
    batch: u64,
    window: i64,
    left: u64,
}

impl Spender {
    pub fn new(throttle: impl Into<String>, limit: u64, batch: u64) -> Self {
        Spender {
            throttle: throttle.into(),
            limit,
            batch: batch.max(1),
            window: i64::MIN,
            left: 0,
        }
    }

    /// Spends one send in window `window` (windows only move forward; the
    /// unused rest of an older window's batch is dropped). `false` when the
    /// window's limit is spent cluster-wide.
    pub async fn spend(&mut self, cluster: &Cluster, window: i64) -> Result<bool, Error> {
        if window != self.window {
            self.window = window;
            self.left = 0;
        }
        if self.left == 0 {
            self.left = take(cluster, &self.throttle, window, self.limit, self.batch).await?;
            if self.left == 0 {
                return Ok(false);
            }
        }
        self.left -= 1;
        Ok(true)
    }

    /// Sends taken but not spent in the current window (what a crash now
    /// would waste).
    pub fn unspent(&self) -> u64 {
        self.left
    }
}
