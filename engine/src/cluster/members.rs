//! Live workers: each puts its id into the `members` bucket at a third of
//! the lease TTL (the bucket's entries age out after the TTL), and
//! rendezvous hashing over the live ids says who should own what.
//!
//! The live ids are read from the bucket stream's subject list (a stream
//! info request), never through a consumer: a worker lists the members
//! every round, and a consumer per listing (what a KV `keys()` does) piles
//! up ephemeral consumers faster than the server reaps them (30 s after
//! their last use) until it refuses new ones ("maximum consumers limit
//! reached") and every worker stalls. A clean leave therefore removes the
//! member's subject from the stream (a purge of its messages), leaving no
//! marker behind to be listed.

use futures_util::StreamExt;

use super::{Cluster, Error};
use crate::hash::rendezvous_score;

/// Announces `member` as live (call at a third of the lease TTL).
pub async fn heartbeat(cluster: &Cluster, member: &str) -> Result<(), Error> {
    let kv = cluster.bucket("members").await?;
    kv.put(member, bytes::Bytes::from_static(b"1"))
        .await
        .map_err(|e| Error::nats("heartbeat into the members bucket", e))?;
    Ok(())
}

/// Removes `member` at once (a clean shutdown), so its partitions move
/// without waiting for its heartbeat to age out.
pub async fn leave(cluster: &Cluster, member: &str) -> Result<(), Error> {
    let stream = stream(cluster).await?;
    stream
        .purge()
        .filter(format!("{}{member}", subject_prefix(cluster)))
        .await
        .map_err(|e| Error::nats("leave the members bucket", e))?;
    Ok(())
}

/// The subjects of the members bucket's stream: `$KV.<bucket>.<member>`.
fn subject_prefix(cluster: &Cluster) -> String {
    format!("$KV.{}.", cluster.name("members"))
}

async fn stream(cluster: &Cluster) -> Result<async_nats::jetstream::stream::Stream, Error> {
    cluster
        .js
        .get_stream(format!("KV_{}", cluster.name("members")))
        .await
        .map_err(|e| Error::nats("open the members bucket", e))
}

/// The ids of the live members, sorted: the subjects holding a heartbeat
/// younger than the TTL (older ones aged out of the stream). No consumer
/// is created (see the module doc).
pub async fn live(cluster: &Cluster) -> Result<Vec<String>, Error> {
    let prefix = subject_prefix(cluster);
    let mut subjects = stream(cluster)
        .await?
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(|e| Error::nats("list the members", e))?;
    let mut out = Vec::new();
    while let Some(subject) = subjects.next().await {
        let (subject, _) = subject.map_err(|e| Error::nats("list the members", e))?;
        if let Some(member) = subject.strip_prefix(&prefix) {
            out.push(member.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// The member that should own `partition` (none when `members` is empty).
pub fn owner(partition: u32, members: &[String]) -> Option<&str> {
    members
        .iter()
        .max_by_key(|m| (rendezvous_score(m, partition), m.as_str()))
        .map(String::as_str)
}

/// The partitions (of `partitions`) that `me` should own among `members`.
pub fn assigned(me: &str, partitions: u32, members: &[String]) -> Vec<u32> {
    (0..partitions)
        .filter(|&p| owner(p, members) == Some(me))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("w{i}")).collect()
    }

    #[test]
    fn every_partition_has_one_owner_and_a_joiner_moves_only_what_it_wins() {
        let three = ids(3);
        let mut owned: Vec<u32> = three.iter().flat_map(|m| assigned(m, 64, &three)).collect();
        owned.sort();
        assert_eq!(owned, (0..64).collect::<Vec<_>>());
        for m in &three {
            assert!(!assigned(m, 64, &three).is_empty(), "{m} owns some of 64");
        }
        let four = ids(4);
        for p in 0..64 {
            let before = owner(p, &three);
            let after = owner(p, &four);
            assert!(
                after == before || after == Some("w4"),
                "partition {p} moved between old members"
            );
        }
        assert_eq!(owner(0, &[]), None);
    }
}
