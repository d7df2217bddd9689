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
    let theirs = match kv.create(KEY, encode(ours)).await {
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
