//! Partition ownership. A lease is a key in the `leases` bucket (whose
//! entries age out after the lease TTL): created by the worker that takes
//! the partition (create fails while another holds it), then renewed at a
//! third of the TTL by an update with the expected revision. The revision
//! that created it is the fencing token: larger for every later owner.
//!
//! The partition's checkpoint (the last event sequence whose effects are
//! committed and published) lives in the `checkpoints` bucket, which never
//! ages out. A new owner first claims it (compare-and-set writing its own
//! token), then advances it after each batch, again by compare-and-set:
//! once a newer owner has claimed it, a stale owner's advance fails and the
//! stale owner stops.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{decode, encode, Cluster, Error};

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    owner: String,
}

/// A partition's checkpoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last event-stream sequence applied and committed (0: none).
    pub seq: u64,
    /// The fencing token of the owner that wrote it.
    pub token: u64,
}

/// The worker holding `partition`'s lease now (`None`: nobody, between
/// owners).
pub async fn holder(cluster: &Cluster, partition: u32) -> Result<Option<String>, Error> {
    let leases = cluster.bucket("leases").await?;
    let entry = leases
        .entry(key(partition))
        .await
        .map_err(|e| Error::nats(format!("read partition {partition}'s lease"), e))?;
    match entry.filter(|e| e.operation == kv::Operation::Put) {
        Some(e) => Ok(Some(decode::<Holder>(&key(partition), &e.value)?.owner)),
        None => Ok(None),
    }
}

/// A held lease on one partition, with its checkpoint claimed.
pub struct Lease {
    partition: u32,
    token: u64,
    owner: String,
    revision: u64,
    checkpoint: Checkpoint,
    checkpoint_revision: u64,
    renewed: Instant,
    ttl: Duration,
    leases: kv::Store,
    checkpoints: kv::Store,
}

fn key(partition: u32) -> String {
    format!("p{partition}")
}

/// Whether a KV write failed because the key was not at the expected
/// revision (another worker wrote it). NATS says so with error 10071, or,
/// on a replicated bucket while another write of the same key is still
/// being replicated, with 10164 ("wrong last sequence"), which async-nats
/// reports as an "other" error, not as a wrong revision: read as NATS
/// being unavailable, a take that lost a race to another worker paused the
/// worker's whole round.
pub(crate) fn wrong_revision(e: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::ErrorCode;
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(js) = err.downcast_ref::<async_nats::jetstream::Error>() {
            let code = js.error_code();
            if code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                || code == ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            {
                return true;
            }
        }
        next = err.source();
    }
    false
}

impl Lease {
    /// Takes `partition` for `owner` when nobody holds it; `None` while
    /// another worker's lease is live. Claims the checkpoint under the new
    /// token, so every later write of a previous owner fails.
    pub async fn acquire(
        cluster: &Cluster,
        partition: u32,
        owner: &str,
    ) -> Result<Option<Lease>, Error> {
        let leases = cluster.bucket("leases").await?;
        let checkpoints = cluster.bucket("checkpoints").await?;
        let started = Instant::now();
        let holder = encode(&Holder {
            owner: owner.to_string(),
        });
        let mut adopted = false;
        let token = match leases.create(key(partition), holder).await {
            Ok(revision) => revision,
            Err(e) => {
                // The key is there (or the answer was lost). A holder under
                // this worker's own name is a create of ours whose answer
                // never came (a timeout while the bucket elected its
                // leader, or a checkpoint claim that failed after it):
                // ours to use, names being unique per process. Left
                // alone it would keep the partition unowned for a TTL.
                let held = leases
                    .entry(key(partition))
                    .await
                    .ok()
                    .flatten()
                    .filter(|entry| entry.operation == kv::Operation::Put);
                match held {
                    Some(entry) => {
                        let holder: Result<Holder, _> = decode(&key(partition), &entry.value);
                        if !holder.is_ok_and(|h| h.owner == owner) {
                            return Ok(None);
                        }
                        adopted = true;
                        entry.revision
                    }
                    // Another worker's write of the key won the race: a
                    // create racing another's (over a released or aged-out
                    // lease) can fail as "wrong last sequence" rather than
                    // "already exists".
                    None if e.kind() == CreateErrorKind::AlreadyExists || wrong_revision(&e) => {
                        return Ok(None)
                    }
                    None => return Err(Error::nats(format!("take partition {partition}"), e)),
                }
            }
        };
        let mut lease = Lease {
            partition,
            token,
            owner: owner.to_string(),
            revision: token,
            checkpoint: Checkpoint { seq: 0, token },
            checkpoint_revision: 0,
            renewed: started,
            ttl: cluster.settings.lease_ttl,
            leases,
            checkpoints,
        };
        if adopted {
            // Created an unknown while ago: its TTL counts from now on.
            lease.renew().await?;
        }
        lease.claim_checkpoint().await?;
        Ok(Some(lease))
    }

    async fn claim_checkpoint(&mut self) -> Result<(), Error> {
        let k = key(self.partition);
        let entry = self.checkpoints.entry(k.clone()).await.map_err(|e| {
            Error::nats(format!("read partition {}'s checkpoint", self.partition), e)
        })?;
        let (seq, written) = match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let old: Checkpoint = decode(&k, &entry.value)?;
                if old.token > self.token {
                    return Err(self.lost());
                }
                let claimed = Checkpoint {
                    seq: old.seq,
                    token: self.token,
                };
                let written = self
                    .checkpoints
                    .update(k.as_str(), encode(&claimed), entry.revision)
                    .await;
                (
                    old.seq,
                    written.map_err(|e| {
                        (
                            e.kind() == UpdateErrorKind::WrongLastRevision || wrong_revision(&e),
                            e.to_string(),
                        )
                    }),
                )
            }
            _ => {
                let claimed = Checkpoint {
                    seq: 0,
                    token: self.token,
                };
                let written = self.checkpoints.create(k.as_str(), encode(&claimed)).await;
                (
                    0,
                    written.map_err(|e| {
                        (
                            e.kind() == CreateErrorKind::AlreadyExists || wrong_revision(&e),
                            e.to_string(),
                        )
                    }),
                )
            }
        };
        match written {
            Ok(revision) => {
                self.checkpoint = Checkpoint {
                    seq,
                    token: self.token,
                };
                self.checkpoint_revision = revision;
                Ok(())
            }
            Err((true, _)) => Err(self.lost()),
            Err((false, message)) => Err(Error::nats(
                format!("claim partition {}'s checkpoint", self.partition),
                std::io::Error::other(message),
            )),
        }
    }

    fn lost(&self) -> Error {
        Error::LeaseLost {
            partition: self.partition,
            token: self.token,
        }
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The fencing token: logged with every commit of this owner.
    pub fn token(&self) -> u64 {
        self.token
    }

    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// Whether the lease is certainly still ours: renewed less than a TTL
    /// ago (measured from before the renewal was sent). A worker commits a
    /// batch of the partition only while this holds.
    pub fn is_live(&self) -> bool {
        self.renewed.elapsed() < self.ttl
    }

    /// When the next renewal is due (a third of the TTL after the last).
    pub fn renew_at(&self) -> Instant {
        self.renewed + self.ttl / 3
    }

    /// Renews the lease. Any failure means the partition must stop at once:
    /// [`Error::LeaseLost`] when another worker took it, another error when
    /// NATS did not confirm in time.
    pub async fn renew(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        let holder = encode(&Holder {
            owner: self.owner.clone(),
        });
        match self
            .leases
            .update(key(self.partition), holder, self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                self.renewed = started;
                Ok(())
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision || wrong_revision(&e) => {
                Err(self.lost())
            }
            Err(e) => Err(Error::nats(
                format!("renew partition {}'s lease", self.partition),
                e,
            )),
        }
    }

    /// Advances the checkpoint to `seq` under this lease's token; fails with
    /// [`Error::LeaseLost`] once a newer owner has claimed the partition.
    pub async fn advance(&mut self, seq: u64) -> Result<(), Error> {
        if !self.is_live() {
            return Err(self.lost());
        }
        let next = Checkpoint {
            seq,
            token: self.token,
        };
        match self
            .checkpoints
            .update(key(self.partition), encode(&next), self.checkpoint_revision)
            .await
        {
            Ok(revision) => {
                self.checkpoint = next;
                self.checkpoint_revision = revision;
                Ok(())
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision || wrong_revision(&e) => {
                Err(self.lost())
            }
            Err(e) => Err(Error::nats(
                format!("advance partition {}'s checkpoint", self.partition),
                e,
            )),
        }
    }

    /// Whether the checkpoint is still as this owner last wrote it (no
    /// newer owner has claimed it since): read from NATS. The changelog
    /// asks before it writes a key again over another writer's record.
    pub async fn holds_checkpoint(&self) -> Result<bool, Error> {
        let entry = self
            .checkpoints
            .entry(key(self.partition))
            .await
            .map_err(|e| {
                Error::nats(format!("read partition {}'s checkpoint", self.partition), e)
            })?;
        Ok(entry.is_some_and(|e| {
            e.operation == kv::Operation::Put && e.revision == self.checkpoint_revision
        }))
    }

    /// Gives the partition up at a batch boundary (a handover): deletes the
    /// lease only if it is still this one, so the next owner need not wait
    /// for it to age out.
    pub async fn release(self) -> Result<(), Error> {
        match self
            .leases
            .purge_expect_revision(key(self.partition), Some(self.revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::nats(
                format!("release partition {}'s lease", self.partition),
                e,
            )),
        }
    }
}
