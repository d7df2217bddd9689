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
//!
//! Writes are fenced by the stream itself: each carries the sequence its
//! owner last knew for the key (`Nats-Expected-Last-Subject-Sequence`,
//! [`Fence`]), so an owner whose lease ran out with publishes in flight
//! cannot replace a record the next owner restored and wrote: JetStream
//! refuses it, and the stale owner stops ([`publish`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::HeaderMap;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::lease::Lease;
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

/// A partition's records as its new owner restored them, with what it
/// learnt of their stream sequences.
#[derive(Debug)]
pub struct Restored {
    pub records: Vec<Record>,
    pub fence: Fence,
}

/// What an owner knows of its partition's changelog: for each key, the
/// stream sequence of the key's last message, learnt from its restore and
/// from each publish's ack. Every publish expects it
/// (`Nats-Expected-Last-Subject-Sequence`; 0: no message on the subject),
/// so JetStream refuses a write over a record this owner has not seen: a
/// stale owner's late write, once the next owner restored and wrote the
/// key, fails instead of replacing the newer record.
///
/// Keys are held by a 64-bit keyed hash of their name (16 bytes an entry,
/// plus the hash table's own overhead): two names that collide only cost a
/// refused write and a look-up ([`publish`]), never a missed fence, since
/// the server compares with the subject's true last sequence. A deleted
/// key's tombstone is kept as long as the server may still hold it (its
/// TTL and [`TOMBSTONE_SLACK`]), then forgotten by a live owner, so the
/// fence holds the partition's live keys and its recent deletions.
#[derive(Debug, Default)]
pub struct Fence {
    hasher: RandomState,
    last: HashMap<u64, u64>,
    /// Tombstones that expire (slot, sequence, when the server has surely
    /// removed it), oldest first.
    dying: VecDeque<(u64, u64, Instant)>,
    /// How long the changelog keeps a tombstone (`None`: for ever).
    tombstone_ttl: Option<Duration>,
    republished: u64,
}

/// How much longer than its TTL a fence remembers a tombstone: the
/// server's expiry can run late, and a fence that forgot a tombstone the
/// server still holds costs a refused write and a look-up.
pub const TOMBSTONE_SLACK: Duration = Duration::from_secs(60);

impl Fence {
    fn new(tombstone_ttl: Option<Duration>) -> Fence {
        Fence {
            tombstone_ttl,
            ..Fence::default()
        }
    }

    fn slot(&self, name: &str) -> u64 {
        self.hasher.hash_one(name)
    }

    /// The sequence a write of `name` expects (0: no message).
    fn expected(&self, name: &str) -> u64 {
        self.last.get(&self.slot(name)).copied().unwrap_or(0)
    }

    /// `name`'s last message is at `seq` (a restore read it, or its
    /// publish was acknowledged).
    fn learn(&mut self, name: &str, seq: u64, bytes: &[u8]) {
        self.learn_at(name, seq, bytes, Instant::now());
    }

    fn learn_at(&mut self, name: &str, seq: u64, bytes: &[u8], now: Instant) {
        let slot = self.slot(name);
        self.last.insert(slot, seq);
        if let Some(ttl) = self.tombstone_ttl.filter(|_| bytes == TOMBSTONE) {
            self.dying
                .push_back((slot, seq, now + ttl + TOMBSTONE_SLACK));
        }
    }

    /// Forgets the tombstones the server has removed by now. Only a live
    /// owner may: a stale one must keep expecting them, so that its late
    /// write over an expired tombstone is refused too.
    fn prune(&mut self) {
        self.prune_at(Instant::now());
    }

    fn prune_at(&mut self, now: Instant) {
        while let Some(&(slot, seq, gone)) = self.dying.front() {
            if gone > now {
                break;
            }
            self.dying.pop_front();
            if self.last.get(&slot) == Some(&seq) {
                self.last.remove(&slot);
            }
        }
    }

    /// How many keys the fence holds a sequence for.
    pub fn keys(&self) -> usize {
        self.last.len()
    }

    /// How many records this owner wrote again after JetStream refused
    /// them (another writer's record, or nothing once a tombstone expired,
    /// was on the subject), since the fence was made.
    pub fn republished(&self) -> u64 {
        self.republished
    }
}

fn subject(cluster: &Cluster, partition: u32, user: &str) -> String {
    format!("{}.st.{partition}.{}", cluster.prefix(), hex::encode(user))
}

/// Publishes `records` of the lease's partition under its token and waits
/// for every ack. Only then may the checkpoint advance past the events
/// they reflect. A record whose bytes are [`TOMBSTONE`] expires after the
/// cluster's tombstone TTL, where the stream allows it.
///
/// Each write expects the key's last sequence as `fence` knows it. When
/// JetStream refuses one (wrong last sequence, 10071), someone wrote the
/// key since this owner last saw it:
/// - a stale owner (its lease past its TTL, or its checkpoint claimed by a
///   newer owner) stops: [`Error::LeaseLost`], logged with the partition,
///   the subject and the token; its write did not land;
/// - the live owner's state is authoritative (it re-applied every event
///   after its checkpoint), so it reads the subject's last sequence now
///   (none when a tombstone expired) and writes the record once more with
///   it. Refused again, it stops ([`Error::LeaseLost`]): someone else is
///   writing the partition. It never writes again without checking first
///   that its lease is within its TTL.
pub async fn publish(
    cluster: &Cluster,
    lease: &Lease,
    fence: &mut Fence,
    records: &[(&str, bytes::Bytes)],
) -> Result<(), Error> {
    let partition = lease.partition();
    if lease.is_live() {
        fence.prune();
    }
    // A window of publishes at a time (see `PUBLISH_WINDOW`).
    for window in records.chunks(super::PUBLISH_WINDOW) {
        let mut pending = Vec::with_capacity(window.len());
        let mut names = HashSet::with_capacity(window.len());
        for (name, bytes) in window {
            if !names.insert(*name) {
                // The same key twice: the second write expects the first's
                // sequence, known once it is acknowledged.
                settle(cluster, lease, fence, std::mem::take(&mut pending)).await?;
                names.clear();
                names.insert(*name);
            }
            let subject = subject(cluster, partition, name);
            let expected = fence.expected(name);
            let ack = send(cluster, lease, &subject, bytes, expected).await?;
            pending.push((*name, bytes, ack));
        }
        settle(cluster, lease, fence, pending).await?;
    }
    Ok(())
}

/// Publishes one record expecting `expected` as its subject's last
/// sequence; the ack is awaited by the caller.
async fn send(
    cluster: &Cluster,
    lease: &Lease,
    subject: &str,
    bytes: &bytes::Bytes,
    expected: u64,
) -> Result<PublishAckFuture, Error> {
    let timeout = cluster.settings.request_timeout;
    let mut headers = HeaderMap::new();
    headers.insert("Sluice-Token", lease.token().to_string().as_str());
    headers.insert(
        NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        expected.to_string().as_str(),
    );
    if let Some(ttl) = cluster
        .tombstone_ttl
        .filter(|_| bytes.as_ref() == TOMBSTONE)
    {
        headers.insert("Nats-TTL", ttl.as_secs().to_string().as_str());
    }
    tokio::time::timeout(
        timeout,
        cluster
            .js
            .publish_with_headers(subject.to_string(), headers, bytes.clone()),
    )
    .await
    .map_err(|_| Error::Timeout(timeout))?
    .map_err(|e| Error::nats("publish a user record", e))
}

/// Awaits the acks of `pending`, learning each key's new sequence; the
/// records JetStream refused for a wrong last sequence are resolved after
/// (see [`publish`]).
async fn settle(
    cluster: &Cluster,
    lease: &Lease,
    fence: &mut Fence,
    pending: Vec<(&str, &bytes::Bytes, PublishAckFuture)>,
) -> Result<(), Error> {
    let timeout = cluster.settings.request_timeout;
    let mut refused = Vec::new();
    for (name, bytes, ack) in pending {
        let expected = fence.expected(name);
        match tokio::time::timeout(timeout, ack)
            .await
            .map_err(|_| Error::Timeout(timeout))?
        {
            Ok(ack) => fence.learn(name, ack.sequence, bytes),
            Err(e) if wrong_last_sequence(&e) => {
                // A stale owner stops at its first refusal and sends
                // nothing more (the rest of this window is already out).
                stale(cluster, lease, name, expected, "refused").await?;
                refused.push((name, bytes));
            }
            Err(e) => return Err(Error::nats("store a user record", e)),
        }
    }
    for (name, bytes) in refused {
        republish(cluster, lease, fence, name, bytes).await?;
    }
    Ok(())
}

/// [`Error::LeaseLost`] (logged) when this owner may no longer write the
/// partition: its lease is past its TTL, or a newer owner claimed the
/// checkpoint.
async fn stale(
    cluster: &Cluster,
    lease: &Lease,
    name: &str,
    expected: u64,
    what: &str,
) -> Result<(), Error> {
    if lease.is_live() && lease.holds_checkpoint().await? {
        return Ok(());
    }
    tracing::warn!(
        target: "sluice::cluster",
        partition = lease.partition(),
        subject = %subject(cluster, lease.partition(), name),
        token = lease.token(),
        expected,
        "changelog write {what}: another owner wrote this key, and this owner's lease is past \
         its TTL or a newer owner claimed the checkpoint; stopping the partition"
    );
    Err(Error::LeaseLost {
        partition: lease.partition(),
        token: lease.token(),
    })
}

/// The live owner writes `name` again over what is on its subject now
/// (another writer's record, or nothing once a tombstone expired): once,
/// after checking its lease.
async fn republish(
    cluster: &Cluster,
    lease: &Lease,
    fence: &mut Fence,
    name: &str,
    bytes: &bytes::Bytes,
) -> Result<(), Error> {
    let partition = lease.partition();
    let subject = subject(cluster, partition, name);
    let stream = cluster
        .js
        .get_stream_no_info(cluster.name("ST"))
        .await
        .map_err(|e| Error::nats("open the changelog stream", e))?;
    let (current, writer) = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => (m.sequence, token_of(&m.headers)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => (0, 0),
        Err(e) => return Err(Error::nats("read a changelog key's last sequence", e)),
    };
    if writer > lease.token() {
        // Only a newer owner writes with a larger token, and it claimed
        // the checkpoint before it wrote.
        tracing::warn!(
            target: "sluice::cluster",
            partition,
            subject = %subject,
            token = lease.token(),
            writer,
            "a newer owner wrote this key; stopping the partition"
        );
        return Err(Error::LeaseLost {
            partition,
            token: lease.token(),
        });
    }
    if writer != 0 && writer != lease.token() {
        tracing::warn!(
            target: "sluice::cluster",
            partition,
            subject = %subject,
            token = lease.token(),
            writer,
            current,
            "another owner's record landed on a key after this owner restored it; \
             writing this owner's record over it"
        );
    } else {
        tracing::debug!(
            target: "sluice::cluster",
            partition,
            subject = %subject,
            token = lease.token(),
            current,
            "a changelog key changed under its owner (its tombstone expired); writing it again"
        );
    }
    // Never write again without knowing the lease is still ours.
    stale(cluster, lease, name, current, "not retried").await?;
    let ack = send(cluster, lease, &subject, bytes, current).await?;
    let timeout = cluster.settings.request_timeout;
    match tokio::time::timeout(timeout, ack)
        .await
        .map_err(|_| Error::Timeout(timeout))?
    {
        Ok(ack) => {
            fence.learn(name, ack.sequence, bytes);
            fence.republished += 1;
            Ok(())
        }
        Err(e) if wrong_last_sequence(&e) => {
            tracing::warn!(
                target: "sluice::cluster",
                partition,
                subject = %subject,
                token = lease.token(),
                expected = current,
                "changelog write refused twice: another writer is writing this partition; \
                 stopping it"
            );
            Err(Error::LeaseLost {
                partition,
                token: lease.token(),
            })
        }
        Err(e) => Err(Error::nats("store a user record", e)),
    }
}

/// Whether JetStream refused a write for its expected last sequence:
/// error 10071, or 10164 from a replicated stream while another write of
/// the same subject is being replicated (which async-nats does not map to
/// a wrong last sequence).
fn wrong_last_sequence(e: &PublishError) -> bool {
    e.kind() == PublishErrorKind::WrongLastSequence || super::lease::wrong_revision(e)
}

fn token_of(headers: &HeaderMap) -> u64 {
    headers
        .get("Sluice-Token")
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .unwrap_or(0)
}

/// Every record of `partition` (the last per key), deleted keys whose
/// tombstone has not expired included.
pub async fn restore(cluster: &Cluster, partition: u32) -> Result<Vec<Record>, Error> {
    Ok(restore_fenced(cluster, partition).await?.records)
}

/// [`restore`] for the partition's new owner: the records, and the
/// [`Fence`] its publishes then expect (each live key's stream sequence as
/// read).
pub async fn restore_fenced(cluster: &Cluster, partition: u32) -> Result<Restored, Error> {
    let mut fence = Fence::new(cluster.tombstone_ttl);
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
        return Ok(Restored {
            records: Vec::new(),
            fence,
        });
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
                    return Ok(Restored {
                        records: out,
                        fence,
                    });
                }
                quiet += idle;
                if quiet >= timeout {
                    return Err(Error::Timeout(timeout));
                }
                continue;
            }
        };
        quiet = Duration::ZERO;
        let info = message.info().map_err(|e| {
            Error::nats(
                "read a record's position",
                std::io::Error::other(e.to_string()),
            )
        })?;
        let (pending, seq) = (info.pending, info.stream_sequence);
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
        let token = message.message.headers.as_ref().map_or(0, token_of);
        fence.learn(&user, seq, &message.message.payload);
        out.push(Record {
            user,
            token,
            bytes: message.message.payload.clone(),
        });
        if pending == 0 {
            return Ok(Restored {
                records: out,
                fence,
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_expects_each_keys_last_sequence_and_forgets_expired_tombstones() {
        let ttl = Duration::from_secs(600);
        let mut fence = Fence::new(Some(ttl));
        let now = Instant::now();
        assert_eq!(fence.expected("k"), 0, "no message yet");
        fence.learn_at("k", 5, b"\x01v", now);
        fence.learn_at("j", 6, b"\x01v", now);
        assert_eq!((fence.expected("k"), fence.expected("j")), (5, 6));
        assert_eq!(fence.keys(), 2);

        // Deleted: the tombstone is expected while the server may hold it.
        fence.learn_at("k", 7, TOMBSTONE, now);
        fence.prune_at(now + ttl);
        assert_eq!(fence.expected("k"), 7);
        fence.prune_at(now + ttl + TOMBSTONE_SLACK + Duration::from_secs(1));
        assert_eq!(fence.expected("k"), 0, "gone from the server: no message");
        assert_eq!(fence.expected("j"), 6, "live keys stay");
        assert_eq!(fence.keys(), 1);

        // Written again after its deletion: the new record is kept when
        // the old tombstone's time is up.
        fence.learn_at("j", 8, TOMBSTONE, now);
        fence.learn_at("j", 9, b"\x01w", now);
        fence.prune_at(now + ttl + TOMBSTONE_SLACK + Duration::from_secs(1));
        assert_eq!(fence.expected("j"), 9);
    }

    #[test]
    fn without_expiring_tombstones_a_fence_keeps_them() {
        let mut fence = Fence::new(None);
        let now = Instant::now();
        fence.learn_at("k", 3, TOMBSTONE, now);
        fence.prune_at(now + Duration::from_secs(86_400));
        assert_eq!(fence.expected("k"), 3);
    }
}
