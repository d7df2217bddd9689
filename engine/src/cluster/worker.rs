//! A worker's partition loop, engine-agnostic: heartbeat into the members
//! bucket, own the partitions rendezvous hashing gives this worker (taking
//! their leases, restoring them from the changelog, reading their events
//! from the checkpoint on), apply events in batches through a
//! [`Processor`], and after each batch publish the changed records and
//! advance the checkpoint under the lease's token. A partition this worker
//! should no longer own is released between batches (a handover); one whose
//! lease it fails to renew, or whose checkpoint another owner claimed, is
//! dropped at once.
//!
//! The order within a batch is what makes a crash harmless: records are
//! published before the checkpoint advances, so a new owner restores every
//! record the checkpoint covers and re-reads the events after it; the
//! processor skips events already in its records by their ids.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::lease::Lease;
use super::{changelog, log, members, Cluster, Error};

/// What a worker runs on its partitions (the engine's shell, or a test's
/// model of it).
pub trait Processor: Send {
    /// `partition` was taken: its users' records as the changelog holds them.
    fn restore(&mut self, partition: u32, records: Vec<changelog::Record>);
    /// Applies `events` (stream sequence, payload) of `partition` in order
    /// and returns the records they changed (user, bytes).
    fn apply(
        &mut self,
        partition: u32,
        events: &[(u64, bytes::Bytes)],
    ) -> Vec<(String, bytes::Bytes)>;
    /// A batch's records are published and the checkpoint advanced to `seq`
    /// under `token`: the batch is committed.
    fn committed(&mut self, partition: u32, token: u64, seq: u64);
    /// `partition` was released or lost: forget its state.
    fn forget(&mut self, partition: u32);
    /// Whether `partition` has work without new events (timers due,
    /// delivery results to record): the loop then runs [`Processor::apply`]
    /// with no events, and publishes and checkpoints it like any batch.
    fn due(&mut self, partition: u32) -> bool {
        let _ = partition;
        false
    }
    /// Why the last [`Processor::apply`] failed, if it did: its records are
    /// not published, the checkpoint does not move, and the worker stops
    /// (another takes the partition over from the changelog).
    fn failure(&mut self) -> Option<String> {
        None
    }
}

/// What a worker loop is tuned with.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub partitions: u32,
    /// Events applied in one batch, at most.
    pub batch: usize,
    /// How long one loop waits for a partition's next event.
    pub poll: Duration,
}

struct Owned {
    lease: Lease,
    reader: log::Reader,
    /// What of the partition's applied events was removed from the stream.
    trim: log::Trim,
    /// The changelog keys' last sequences, which every publish expects.
    fence: changelog::Fence,
}

/// A worker's counters (for metrics and tests).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub leases_lost: u64,
    pub restores: Vec<Duration>,
    /// Changelog records refused once (another writer's record landed on
    /// the key after this owner last knew it) and written again.
    pub changelog_republished: u64,
}

/// One worker: `me` must be unique among live workers (a restarted process
/// takes a new id).
pub struct Worker<P: Processor> {
    cluster: Cluster,
    me: String,
    tuning: Tuning,
    processor: P,
    owned: BTreeMap<u32, Owned>,
    next_heartbeat: Instant,
    pub stats: Stats,
}

impl<P: Processor> Worker<P> {
    pub fn new(cluster: Cluster, me: impl Into<String>, tuning: Tuning, processor: P) -> Self {
        Worker {
            cluster,
            me: me.into(),
            tuning,
            processor,
            owned: BTreeMap::new(),
            next_heartbeat: Instant::now(),
            stats: Stats::default(),
        }
    }

    /// The partitions this worker owns now.
    pub fn owned(&self) -> Vec<u32> {
        self.owned.keys().copied().collect()
    }

    /// Each owned partition's events not yet read, as last seen.
    pub fn lag(&self) -> Vec<(u32, u64)> {
        self.owned
            .iter()
            .map(|(p, o)| (*p, o.reader.pending))
            .collect()
    }

    pub fn processor(&self) -> &P {
        &self.processor
    }

    pub fn processor_mut(&mut self) -> &mut P {
        &mut self.processor
    }

    /// Runs rounds for ever; while NATS is unreachable it pauses (a third
    /// of the lease TTL) and tries again. Returns on any other error.
    pub async fn run(&mut self) -> Result<(), Error> {
        loop {
            match self.round().await {
                Ok(()) => {}
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(error = %e, "cluster unavailable; processing paused");
                    tokio::time::sleep(self.cluster.settings.lease_ttl / 3).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Leaves the cluster cleanly: releases every lease between batches and
    /// removes the heartbeat, so the others take over without waiting.
    pub async fn leave(mut self) -> Result<(), Error> {
        let owned = std::mem::take(&mut self.owned);
        for (p, o) in owned {
            self.processor.forget(p);
            o.lease.release().await?;
        }
        members::leave(&self.cluster, &self.me).await
    }

    /// One round: heartbeat, rebalance, renew, one batch per partition.
    pub async fn round(&mut self) -> Result<(), Error> {
        let ttl = self.cluster.settings.lease_ttl;
        self.heartbeat_if_due().await?;
        let live = members::live(&self.cluster).await?;
        let want = members::assigned(&self.me, self.tuning.partitions, &live);

        // Hand over, between batches, what another member should own.
        let give: Vec<u32> = self
            .owned
            .keys()
            .copied()
            .filter(|p| !want.contains(p))
            .collect();
        for p in give {
            if let Some(o) = self.owned.remove(&p) {
                tracing::debug!(me = %self.me, partition = p, "hand over");
                self.processor.forget(p);
                o.lease.release().await?;
            }
        }
        // Take what is ours and free.
        for p in want {
            if self.owned.contains_key(&p) {
                continue;
            }
            let started = Instant::now();
            let mut lease = match Lease::acquire(&self.cluster, p, &self.me).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    tracing::trace!(me = %self.me, partition = p, "held by another");
                    continue;
                }
                // A newer owner claimed the checkpoint between our create
                // and our claim: not ours this round; try again next one.
                Err(Error::LeaseLost { .. }) => {
                    tracing::debug!(me = %self.me, partition = p, "checkpoint claimed by another");
                    continue;
                }
                Err(e) => return Err(e),
            };
            tracing::debug!(me = %self.me, partition = p, token = lease.token(),
                checkpoint = lease.checkpoint().seq, "taken");
            // Reading a large partition's changelog can take longer than
            // the lease's TTL: keep this lease and every owned one renewed
            // meanwhile, or they would age out under a live worker and the
            // partitions bounce between owners.
            let (records, lost) = {
                let restore = changelog::restore_fenced(&self.cluster, p);
                tokio::pin!(restore);
                let mut lost = Vec::new();
                let records = loop {
                    tokio::select! {
                        records = &mut restore => break Some(records),
                        () = tokio::time::sleep(ttl / 6) => {
                            if Instant::now() >= self.next_heartbeat {
                                members::heartbeat(&self.cluster, &self.me).await?;
                                self.next_heartbeat = Instant::now() + ttl / 3;
                            }
                            if Instant::now() >= lease.renew_at() {
                                match lease.renew().await {
                                    Ok(()) => {}
                                    Err(Error::LeaseLost { .. }) => break None,
                                    Err(e) => return Err(e),
                                }
                            }
                            lost.extend(renew_due(&mut self.owned).await?);
                        }
                    }
                };
                (records, lost)
            };
            for q in lost {
                tracing::debug!(me = %self.me, partition = q, "lease lost");
                self.lose(q);
            }
            let Some(records) = records else {
                tracing::debug!(me = %self.me, partition = p, "lease lost while restoring");
                self.stats.leases_lost += 1;
                continue;
            };
            let changelog::Restored { records, fence } = records?;
            self.processor.restore(p, records);
            if Instant::now() >= lease.renew_at() {
                match lease.renew().await {
                    Ok(()) => {}
                    Err(Error::LeaseLost { .. }) => {
                        tracing::debug!(me = %self.me, partition = p, "lease lost while restoring");
                        self.processor.forget(p);
                        self.stats.leases_lost += 1;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let reader = log::Reader::open(&self.cluster, p, lease.checkpoint().seq).await?;
            self.stats.restores.push(started.elapsed());
            self.owned.insert(
                p,
                Owned {
                    lease,
                    reader,
                    trim: log::Trim::default(),
                    fence,
                },
            );
            // Restoring took time the other partitions' leases count too.
            for q in renew_due(&mut self.owned).await? {
                tracing::debug!(me = %self.me, partition = q, "lease lost");
                self.lose(q);
            }
        }

        let partitions: Vec<u32> = self.owned.keys().copied().collect();
        for p in partitions {
            // A round over many partitions with a backlog can last longer
            // than the TTL: renew every due lease before each batch, not
            // only the batch's own, or the partitions later in the round
            // age out under their live owner; and the heartbeat, or this
            // worker drops out of the members for a moment and every
            // partition is handed around.
            self.heartbeat_if_due().await?;
            for q in renew_due(&mut self.owned).await? {
                tracing::debug!(me = %self.me, partition = q, "lease lost");
                self.lose(q);
            }
            match self.batch(p).await {
                Ok(()) => self.trim(p).await,
                Err(Error::LeaseLost { .. }) => {
                    tracing::debug!(me = %self.me, partition = p, "lease lost");
                    self.lose(p)
                }
                Err(e) if e.is_unavailable() => {
                    tracing::debug!(me = %self.me, partition = p, error = %e, "unavailable");
                    // NATS did not confirm: the lease may be gone; stop the
                    // partition now rather than risk a second writer.
                    self.lose(p);
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Heartbeats into the members bucket when a third of the TTL has
    /// passed since the last one.
    async fn heartbeat_if_due(&mut self) -> Result<(), Error> {
        if Instant::now() >= self.next_heartbeat {
            members::heartbeat(&self.cluster, &self.me).await?;
            self.next_heartbeat = Instant::now() + self.cluster.settings.lease_ttl / 3;
        }
        Ok(())
    }

    /// Removes partition `p`'s events at or before its committed
    /// checkpoint from the event stream when that is due
    /// ([`log::Retention`]). Only while this worker holds `p` and its
    /// lease is live (the guard of its commits): a partition whose lease
    /// was lost or whose checkpoint advance failed is no longer owned, and
    /// the sequence is one this lease's compare-and-set wrote or claimed,
    /// never beyond. A failed purge is logged and tried again at the next
    /// occasion; it never stops processing.
    async fn trim(&mut self, p: u32) {
        let retention = self.cluster.settings.retention;
        let Some(o) = self.owned.get_mut(&p) else {
            return;
        };
        let checkpoint = o.lease.checkpoint().seq;
        let now = Instant::now();
        if !o.lease.is_live() || !o.trim.due(checkpoint, now, &retention) {
            return;
        }
        match log::purge(&self.cluster, p, checkpoint).await {
            Ok(removed) => {
                tracing::trace!(me = %self.me, partition = p, through = checkpoint, removed,
                    "applied events purged");
                o.trim.purged(checkpoint, now);
            }
            Err(e) => {
                tracing::warn!(target: "sluice::cluster", me = %self.me, partition = p,
                    through = checkpoint, error = %e,
                    "cannot purge the partition's applied events; trying again later");
                o.trim.failed(now);
            }
        }
    }

    fn lose(&mut self, p: u32) {
        if self.owned.remove(&p).is_some() {
            self.processor.forget(p);
            self.stats.leases_lost += 1;
        }
    }

    async fn batch(&mut self, p: u32) -> Result<(), Error> {
        let Some(o) = self.owned.get_mut(&p) else {
            return Ok(());
        };
        if Instant::now() >= o.lease.renew_at() {
            o.lease.renew().await?;
        }
        let mut events = Vec::new();
        let mut wait = self.tuning.poll;
        while events.len() < self.tuning.batch {
            match o.reader.next(wait).await? {
                Some(e) => events.push(e),
                None => break,
            }
            wait = Duration::from_millis(1);
        }
        let last = match events.last() {
            Some(&(last, _)) => last,
            None if self.processor.due(p) => o.lease.checkpoint().seq,
            None => return Ok(()),
        };
        if !o.lease.is_live() {
            return Err(Error::LeaseLost {
                partition: p,
                token: o.lease.token(),
            });
        }
        let changed = self.processor.apply(p, &events);
        if let Some(message) = self.processor.failure() {
            return Err(Error::Processor {
                partition: p,
                message,
            });
        }
        let records: Vec<(&str, bytes::Bytes)> = changed
            .iter()
            .map(|(u, b)| (u.as_str(), b.clone()))
            .collect();
        let republished = o.fence.republished();
        let published = changelog::publish(&self.cluster, &o.lease, &mut o.fence, &records).await;
        self.stats.changelog_republished += o.fence.republished().saturating_sub(republished);
        published?;
        o.lease.advance(last).await?;
        o.trim.applied(events.len());
        let token = o.lease.token();
        self.processor.committed(p, token, last);
        Ok(())
    }
}

/// Renews every owned lease that is due; returns the partitions whose lease
/// was lost (another owner's now). NATS being unavailable is an error: the
/// caller stops rather than risk a second writer.
async fn renew_due(owned: &mut BTreeMap<u32, Owned>) -> Result<Vec<u32>, Error> {
    let mut lost = Vec::new();
    let now = Instant::now();
    for (&p, o) in owned.iter_mut() {
        if now < o.lease.renew_at() {
            continue;
        }
        match o.lease.renew().await {
            Ok(()) => {}
            Err(Error::LeaseLost { .. }) => lost.push(p),
            Err(e) => return Err(e),
        }
    }
    Ok(lost)
}
