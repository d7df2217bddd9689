//! The cluster's event log (the second implementation of ingest's
//! append/read): every event goes to the `EV` stream on subject
//! `<prefix>.ev.<p>`, `p` its user's partition, with `Nats-Msg-Id` so
//! JetStream drops a re-sent copy within its duplicate window. An append
//! returns only after JetStream's ack, i.e. once the event is stored (and
//! replicated, with replicas); the owner of `p` reads them back in order.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::HeaderMap;
use futures_util::StreamExt;

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
pub async fn append(
    cluster: &Cluster,
    partitions: u32,
    events: &[Append<'_>],
) -> Result<Vec<Appended>, Error> {
    let timeout = cluster.settings.request_timeout;
    let mut out = Vec::with_capacity(events.len());
    // A window of publishes at a time (see `PUBLISH_WINDOW`).
    for window in events.chunks(super::PUBLISH_WINDOW) {
        let mut pending = Vec::with_capacity(window.len());
        for event in window {
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
            pending.push((partition, ack));
        }
        for (partition, ack) in pending {
            let ack = tokio::time::timeout(timeout, ack)
                .await
                .map_err(|_| Error::Timeout(timeout))?
                .map_err(|e| Error::nats("store an event", e))?;
            out.push(Appended {
                partition,
                seq: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
    }
    Ok(out)
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
