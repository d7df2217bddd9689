//! The cluster's event log (the second implementation of ingest's
//! append/read): every event goes to the `EV` stream on subject
//! `<prefix>.ev.<p>`, `p` its user's partition, with `Nats-Msg-Id` so
//! JetStream drops a re-sent copy within its duplicate window. An append
//! returns only after JetStream's ack, i.e. once the event is stored (and
//! replicated, with replicas); the owner of `p` reads them back in order.
//!
//! Retention: a partition's events at or before its checkpoint are never
//! read again (a new owner reads from the checkpoint on), so the owner
//! removes them from the stream ([`purge`]) once the checkpoint covering
//! them is committed, every few seconds or every so many events
//! ([`Retention`], [`Trim`]), never for a sequence past the checkpoint.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::{Cluster, Error};
use crate::hash::partition_of;

/// One event to append.
pub struct Append<'a> {
    pub user: &'a str,
    /// The event's `id`, else a hash of its line: JetStream's dedupe key.
    pub msg_id: &'a str,
    pub payload: bytes::Bytes,
}

impl<'a> Append<'a> {
    /// Appends for events prepared as (user, `Nats-Msg-Id`, payload).
    pub fn all(prepared: &'a [(String, String, bytes::Bytes)]) -> Vec<Append<'a>> {
        prepared
            .iter()
            .map(|(user, msg_id, payload)| Append {
                user,
                msg_id,
                payload: payload.clone(),
            })
            .collect()
    }
}

/// Where an appended event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub seq: u64,
    /// JetStream already held an event with this `Nats-Msg-Id`.
    pub duplicate: bool,
}

/// Subject of partition `p`'s events.
pub fn subject(cluster: &Cluster, partition: u32) -> String {
    format!("{}.ev.{partition}", cluster.prefix())
}

/// Appends `events` (published back to back, then every ack awaited) and
/// returns where each went, in order. An error means some were perhaps not
/// stored: nothing of the call may be acknowledged (a client re-sends; the
/// ids make that harmless).
///
/// An id repeated within the call is published once: the repeats are
/// duplicates of the first (its partition and sequence). Publishing it
/// again would be refused on a replicated stream while the first is still
/// being replicated ("duplicate message id is in process"), failing the
/// whole call.
pub async fn append(
    cluster: &Cluster,
    partitions: u32,
    events: &[Append<'_>],
) -> Result<Vec<Appended>, Error> {
    let timeout = cluster.settings.request_timeout;
    // For each event, the index of the first event of the call with its id.
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let original: Vec<usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| *first.entry(e.msg_id).or_insert(i))
        .collect();
    let unique: Vec<usize> = (0..events.len()).filter(|&i| original[i] == i).collect();
    let mut stored: Vec<Option<Appended>> = vec![None; events.len()];
    // A window of publishes at a time (see `PUBLISH_WINDOW`).
    for window in unique.chunks(super::PUBLISH_WINDOW) {
        let mut pending = Vec::with_capacity(window.len());
        for &i in window {
            let event = &events[i];
            let partition = partition_of(event.user, partitions);
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.msg_id);
            let ack = tokio::time::timeout(
                timeout,
                cluster.js.publish_with_headers(
                    subject(cluster, partition),
                    headers,
                    event.payload.clone(),
                ),
            )
            .await
            .map_err(|_| Error::Timeout(timeout))?
            .map_err(|e| Error::nats("publish an event", e))?;
            pending.push((i, partition, ack));
        }
        for (i, partition, ack) in pending {
            let ack = tokio::time::timeout(timeout, ack)
                .await
                .map_err(|_| Error::Timeout(timeout))?
                .map_err(|e| Error::nats("store an event", e))?;
            stored[i] = Some(Appended {
                partition,
                seq: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
    }
    original
        .iter()
        .enumerate()
        .map(|(i, &o)| {
            let first = stored[o].ok_or_else(|| {
                Error::nats(
                    "store an event",
                    std::io::Error::other("an event of the call was not published"),
                )
            })?;
            Ok(if o == i {
                first
            } else {
                Appended {
                    duplicate: true,
                    ..first
                }
            })
        })
        .collect()
}

/// Partition `p`'s events after a sequence, in order.
pub struct Reader {
    messages: pull::Ordered,
    /// Messages of the partition after the last one read, as the last one
    /// read said (the consumer's lag).
    pub pending: u64,
}

impl Reader {
    /// Reads partition `partition` from just after `after` (a checkpoint).
    pub async fn open(cluster: &Cluster, partition: u32, after: u64) -> Result<Reader, Error> {
        let stream = cluster
            .js
            .get_stream(cluster.name("EV"))
            .await
            .map_err(|e| Error::nats("open the event stream", e))?;
        let deliver_policy = if after == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        };
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject(cluster, partition),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::nats(format!("read partition {partition}'s events"), e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| Error::nats(format!("read partition {partition}'s events"), e))?;
        Ok(Reader {
            messages,
            pending: 0,
        })
    }

    /// The next event (its stream sequence and payload), or `None` when
    /// none arrives within `wait`. The reader ending is an error (the
    /// partition is dropped and taken again with a new reader), never a
    /// quiet "no event": that would leave the partition owned, its lease
    /// renewed, and its events unread.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<(u64, bytes::Bytes)>, Error> {
        let message = match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) => return Ok(None),
            Ok(None) => {
                return Err(Error::nats(
                    "read an event",
                    std::io::Error::other("the partition's event reader ended"),
                ))
            }
            Ok(Some(message)) => message.map_err(|e| Error::nats("read an event", e))?,
        };
        let info = message.info().map_err(|e| {
            Error::nats(
                "read an event's sequence",
                std::io::Error::other(e.to_string()),
            )
        })?;
        let seq = info.stream_sequence;
        self.pending = info.pending;
        Ok(Some((seq, message.message.payload.clone())))
    }
}

/// When an owner removes its partition's applied events from the stream.
///
/// A purge is one JetStream API request (through the stream's leader and,
/// with replicas, its Raft log), so it is not sent after every batch: a
/// busy worker commits hundreds of batches a second. A partition is purged
/// at most every `every` (and at once after a take, to clear what a dead
/// owner left), or sooner once `events` events were applied since the last
/// attempt: a cluster of P partitions sends at most about P / `every`
/// purges a second on a steady load, and a partition's stream holds its
/// unapplied tail plus at most `every`'s or `events`' worth of applied
/// events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub every: Duration,
    pub events: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            every: Duration::from_secs(5),
            events: 10_000,
        }
    }
}

/// One owned partition's retention: what was purged, and when it is due
/// again. A new owner starts from nothing: its first committed checkpoint
/// is purged at once.
#[derive(Debug, Default, Clone)]
pub struct Trim {
    /// The sequence the partition's events were last purged through.
    through: u64,
    /// Events applied since the last attempt.
    applied: u64,
    /// When the last attempt was made (succeeded or failed).
    last: Option<Instant>,
}

impl Trim {
    /// `n` more events of the partition were applied and committed.
    pub fn applied(&mut self, n: usize) {
        self.applied = self.applied.saturating_add(n as u64);
    }

    /// Whether the events through `checkpoint` (committed) should be
    /// purged now: something is left at or before it, and the last attempt
    /// is `every` old or `events` events were applied since.
    pub fn due(&self, checkpoint: u64, now: Instant, retention: &Retention) -> bool {
        checkpoint > self.through
            && match self.last {
                None => true,
                Some(at) => {
                    now.saturating_duration_since(at) >= retention.every
                        || self.applied >= retention.events
                }
            }
    }

    /// The purge through `through` succeeded.
    pub fn purged(&mut self, through: u64, now: Instant) {
        self.through = self.through.max(through);
        self.applied = 0;
        self.last = Some(now);
    }

    /// The purge failed: it is tried again at the next occasion (once it
    /// is due again), never in a loop.
    pub fn failed(&mut self, now: Instant) {
        self.applied = 0;
        self.last = Some(now);
    }

    /// The sequence the partition's events were purged through.
    pub fn through(&self) -> u64 {
        self.through
    }
}

/// Removes partition `partition`'s events at or before `through` from the
/// event stream (JetStream's purge request with `filter` the partition's
/// subject and `seq` = `through + 1`: the messages below it). `through`
/// must be a committed checkpoint: no event after it is touched, and no
/// other partition's. Returns how many messages were removed.
pub async fn purge(cluster: &Cluster, partition: u32, through: u64) -> Result<u64, Error> {
    if through == 0 {
        return Ok(0);
    }
    let stream = cluster
        .js
        .get_stream_no_info(cluster.name("EV"))
        .await
        .map_err(|e| Error::nats("open the event stream", e))?;
    let done = stream
        .purge()
        .filter(subject(cluster, partition))
        .sequence(through + 1)
        .await
        .map_err(|e| Error::nats(format!("purge partition {partition}'s applied events"), e))?;
    Ok(done.purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_purged_after_a_take_then_every_so_often_or_so_many_events() {
        let r = Retention {
            every: Duration::from_secs(5),
            events: 100,
        };
        let t0 = Instant::now();
        let mut trim = Trim::default();
        assert!(!trim.due(0, t0, &r), "nothing committed, nothing to purge");
        assert!(trim.due(7, t0, &r), "the first checkpoint after a take");
        trim.purged(7, t0);
        assert!(
            !trim.due(7, t0 + Duration::from_secs(60), &r),
            "nothing new"
        );
        trim.applied(10);
        assert!(!trim.due(20, t0 + Duration::from_secs(1), &r), "too soon");
        assert!(trim.due(20, t0 + Duration::from_secs(5), &r), "every 5 s");
        trim.applied(90);
        assert!(trim.due(120, t0 + Duration::from_secs(1), &r), "100 events");
        trim.purged(120, t0 + Duration::from_secs(1));
        assert_eq!(trim.through(), 120);
        // A failure waits for the next occasion.
        trim.applied(150);
        assert!(trim.due(300, t0 + Duration::from_secs(2), &r));
        trim.failed(t0 + Duration::from_secs(2));
        assert!(
            !trim.due(300, t0 + Duration::from_secs(3), &r),
            "no retry loop"
        );
        assert!(trim.due(300, t0 + Duration::from_secs(7), &r), "retried");
        assert_eq!(trim.through(), 120, "a failure purged nothing");
    }
}
