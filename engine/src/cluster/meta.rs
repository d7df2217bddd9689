//! The cluster's fixed settings, written once by the first worker into the
//! `meta` bucket (`create` fails when another worker was first) and checked
//! by every worker that joins.

use serde::{Deserialize, Serialize};

use super::{decode, encode, Cluster, Error};

/// What every worker of a cluster must agree on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub partitions: u32,
    pub config_hash: String,
}

const KEY: &str = "cluster";

/// Records `ours` when the cluster is new, else checks it against what the
/// cluster was created with; returns the cluster's settings.
pub async fn join(cluster: &Cluster, ours: &Meta) -> Result<Meta, Error> {
    let kv = cluster.bucket("meta").await?;
    // A replicated bucket just created by the first of several workers
    // started together can answer "no responders" until its stream has
    // elected a leader: retry for up to the request timeout before giving
    // up, so a cluster's workers may start at the same moment.
    let deadline = tokio::time::Instant::now() + cluster.settings.request_timeout;
    let mut pause = std::time::Duration::from_millis(50);
    let created = loop {
        match kv.create(KEY, encode(ours)).await {
            Err(e)
                if e.kind() != async_nats::jetstream::kv::CreateErrorKind::AlreadyExists
                    && tokio::time::Instant::now() + pause < deadline =>
            {
                tracing::debug!("the cluster's settings bucket is not ready yet: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            other => break other,
        }
    };
    let theirs = match created {
        Ok(_) => return Ok(ours.clone()),
        Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
            let entry = kv
                .entry(KEY)
                .await
                .map_err(|e| Error::nats("read the cluster's settings", e))?;
            let Some(entry) = entry else {
                return Err(Error::nats(
                    "read the cluster's settings",
                    std::io::Error::other("the settings key vanished after it existed"),
                ));
            };
            decode::<Meta>(KEY, &entry.value)?
        }
        Err(e) => return Err(Error::nats("record the cluster's settings", e)),
    };
    if theirs.partitions != ours.partitions {
        return Err(Error::PartitionsMismatch {
            prefix: cluster.prefix().to_string(),
            ours: ours.partitions,
            theirs: theirs.partitions,
        });
    }
    if theirs.config_hash != ours.config_hash {
        return Err(Error::ConfigMismatch {
            prefix: cluster.prefix().to_string(),
            ours: ours.config_hash.clone(),
            theirs: theirs.config_hash,
        });
    }
    Ok(theirs)
}
