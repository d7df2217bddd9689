//! A partition's committed user records, as a changelog: after each batch
//! the owner publishes every changed record to `<prefix>.st.<p>.<user>` in
//! the `ST` stream, which keeps one message (the last) per subject. A new
//! owner restores the partition by reading them all. The user id is
//! hex-encoded in the subject (ids may hold `.`, `*`, `>` or spaces). Each
//! record carries its writer's fencing token in `Sluice-Token`.
//!
//! A deleted key is published as a [`TOMBSTONE`]: it replaces the key's
//! value at once (the stream keeps one message per subject), and with a
//! `Nats-TTL` header (when the server and the stream allow per-message
//! TTLs, NATS 2.11+) it expires after [`super::Settings::tombstone_ttl`],
//! so deletions (fired timers, delivered outbox entries) do not pile up.
//! A restore reads every subject's last message; a tombstone that expires
//! while a restore runs is simply not read, which is what it stood for.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use async_nats::HeaderMap;
use futures_util::StreamExt;

use super::{Cluster, Error};

/// The payload of a deleted key's record.
pub const TOMBSTONE: &[u8] = &[0];

/// One user's record as restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub user: String,
    /// The fencing token of the owner that published it.
    pub token: u64,
    /// The record's bytes ([`TOMBSTONE`] for a deleted key).
    pub bytes: bytes::Bytes,
}

fn subject(cluster: &Cluster, partition: u32, user: &str) -> String {
    format!("{}.st.{partition}.{}", cluster.prefix(), hex::encode(user))
}

/// Publishes `records` of `partition` under `token` and waits for every
/// ack. Only then may the checkpoint advance past the events they reflect.
/// A record whose bytes are [`TOMBSTONE`] expires after the cluster's
/// tombstone TTL, where the stream allows it.
pub async fn publish(
    cluster: &Cluster,
    partition: u32,
    token: u64,
    records: &[(&str, bytes::Bytes)],
) -> Result<(), Error> {
    let timeout = cluster.settings.request_timeout;
    // A window of publishes at a time (see `PUBLISH_WINDOW`).
    for window in records.chunks(super::PUBLISH_WINDOW) {
        let mut pending = Vec::with_capacity(window.len());
        for (user, bytes) in window {
            let mut headers = HeaderMap::new();
            headers.insert("Sluice-Token", token.to_string().as_str());
            if let Some(ttl) = cluster
                .tombstone_ttl
                .filter(|_| bytes.as_ref() == TOMBSTONE)
            {
                headers.insert("Nats-TTL", ttl.as_secs().to_string().as_str());
            }
            let ack = tokio::time::timeout(
                timeout,
                cluster.js.publish_with_headers(
                    subject(cluster, partition, user),
                    headers,
                    bytes.clone(),
                ),
            )
            .await
            .map_err(|_| Error::Timeout(timeout))?
            .map_err(|e| Error::nats("publish a user record", e))?;
            pending.push(ack);
        }
        for ack in pending {
            tokio::time::timeout(timeout, ack)
                .await
                .map_err(|_| Error::Timeout(timeout))?
                .map_err(|e| Error::nats("store a user record", e))?;
        }
    }
    Ok(())
}

/// Every record of `partition` (the last per key), deleted keys whose
/// tombstone has not expired included.
pub async fn restore(cluster: &Cluster, partition: u32) -> Result<Vec<Record>, Error> {
    let filter = filter_of(cluster, partition);
    let stream = cluster
        .js
        .get_stream(cluster.name("ST"))
        .await
        .map_err(|e| Error::nats("open the changelog stream", e))?;
    let subjects = stream
        .info_with_subjects(filter.as_str())
        .await
        .map_err(|e| Error::nats(format!("count partition {partition}'s records"), e))?
        .count()
        .await;
    if subjects == 0 {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::nats(format!("restore partition {partition}"), e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| Error::nats(format!("restore partition {partition}"), e))?;
    let timeout = cluster.settings.request_timeout;
    // The last message is the one with nothing pending after it; but a
    // tombstone counted as pending can expire before it is delivered. After
    // a quiet moment, the restore is complete when every subject the
    // stream holds now was read.
    let idle = Duration::from_millis(500).min(timeout);
    let mut quiet = Duration::ZERO;
    let mut read: HashSet<String> = HashSet::with_capacity(subjects);
    let mut out = Vec::with_capacity(subjects);
    loop {
        let message = match tokio::time::timeout(idle, messages.next()).await {
            Ok(None) => return Err(Error::Timeout(timeout)),
            Ok(Some(message)) => {
                message.map_err(|e| Error::nats(format!("restore partition {partition}"), e))?
            }
            Err(_) => {
                if all_read(&stream, &filter_of(cluster, partition), &read).await? {
                    return Ok(out);
                }
                quiet += idle;
                if quiet >= timeout {
                    return Err(Error::Timeout(timeout));
                }
                continue;
            }
        };
        quiet = Duration::ZERO;
        let pending = message
            .info()
            .map_err(|e| {
                Error::nats(
                    "read a record's position",
                    std::io::Error::other(e.to_string()),
                )
            })?
            .pending;
        let subject = message.message.subject.as_str();
        read.insert(subject.to_string());
        let encoded = subject.rsplit('.').next().unwrap_or_default();
        let user = hex::decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                Error::nats(
                    "read a record's user",
                    std::io::Error::other(format!("subject {subject} names no user")),
                )
            })?;
        let token = message
            .message
            .headers
            .as_ref()
            .and_then(|h| h.get("Sluice-Token"))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(0);
        out.push(Record {
            user,
            token,
            bytes: message.message.payload.clone(),
        });
        if pending == 0 {
            return Ok(out);
        }
    }
}

fn filter_of(cluster: &Cluster, partition: u32) -> String {
    format!("{}.st.{partition}.>", cluster.prefix())
}

/// Whether every subject of `filter` the stream holds now is in `read`.
async fn all_read(stream: &Stream, filter: &str, read: &HashSet<String>) -> Result<bool, Error> {
    let mut subjects = stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| Error::nats("list a partition's records", e))?;
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject.map_err(|e| Error::nats("list a partition's records", e))?;
        if !read.contains(&subject) {
            return Ok(false);
        }
    }
    Ok(true)
}
