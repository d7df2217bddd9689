//! The deployed state (DEPLOY.md §1): every deployed config as a
//! generation of content-addressed files, every version of every
//! resource, the journeys' rollouts, and the audit log. Records are JSON
//! (small, rare, and read by people debugging a store).
//!
//! | key | holds |
//! |---|---|
//! | `g` generation (big-endian) | [`Generation`]: the files of one applied config, by path and SHA-256 |
//! | `f` SHA-256 (hex) | the bytes of one file |
//! | `v` kind `\0` id `\0` seq (big-endian) | [`ResourceVersion`]: a resource's deployed versions, oldest first |
//! | `h` seq (big-endian) | [`AuditEntry`]: applies, promotions, rollbacks, automatic rollbacks |
//! | meta `deployed` | [`Deployed`]: the current generation and each journey's rollout |

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Millis;

use super::{Batch, Error, Kv};

const GENERATION: u8 = b'g';
const FILE: u8 = b'f';
const VERSION: u8 = b'v';
const AUDIT: u8 = b'h';
/// The meta name of [`Deployed`].
pub const DEPLOYED: &str = "deployed";

/// The layout of the deployment records this sluice writes and reads.
pub const FORMAT: u32 = 1;

/// One applied config: its files, by path relative to the repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u64,
    pub at: Millis,
    pub actor: String,
    /// Path → SHA-256 of the bytes (hex).
    pub files: BTreeMap<String, String>,
}

/// One deployed version of one resource, immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceVersion {
    pub kind: String,
    pub id: String,
    /// A journey's `version`; for other kinds the how-manieth deployment of
    /// the resource (1, 2, …).
    pub version: u32,
    /// FORMAT.md's canonical content hash (empty for a delete).
    pub hash: String,
    /// `create`, `update` or `delete`.
    pub action: String,
    pub generation: u64,
    pub at: Millis,
    pub actor: String,
}

/// A journey version, and the generation whose files define it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub version: u32,
    pub generation: u64,
}

/// Send decisions of one version by outcome (guards compare rates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendCounts {
    pub sent: u64,
    pub deferred: u64,
    pub suppressed: u64,
    pub failed: u64,
    pub unsubscribed: u64,
}

impl SendCounts {
    /// Every send decision.
    pub fn sends(&self) -> u64 {
        self.sent + self.deferred + self.suppressed + self.failed
    }

    /// What happened since `base` was taken.
    pub fn since(&self, base: &SendCounts) -> SendCounts {
        SendCounts {
            sent: self.sent.saturating_sub(base.sent),
            deferred: self.deferred.saturating_sub(base.deferred),
            suppressed: self.suppressed.saturating_sub(base.suppressed),
            failed: self.failed.saturating_sub(base.failed),
            unsubscribed: self.unsubscribed.saturating_sub(base.unsubscribed),
        }
    }
}

/// A canary: a newer version taking a share of new entries, with guards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryRollout {
    pub pin: Pin,
    /// Share of new entries, in basis points (1,000 = 10%).
    pub basis_points: u32,
    /// Guard expressions as written (`failed_rate < 2%`).
    pub guards: Vec<String>,
    pub min_sends: u64,
    pub since: Millis,
    /// Both versions' counts when the canary started: guards compare what
    /// happened since.
    pub baseline_stable: SendCounts,
    pub baseline_canary: SendCounts,
}

/// A journey's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// New entries go here (but for the canary's share).
    pub stable: Pin,
    /// Earlier stables, most recent last (`rollback` pops one).
    #[serde(default)]
    pub previous: Vec<Pin>,
    #[serde(default)]
    pub canary: Option<CanaryRollout>,
    /// The last canary rolled back (automatically or by hand), until the
    /// next apply: `canary status` reports it (exit 1).
    #[serde(default)]
    pub rolled_back: Option<RolledBack>,
    /// Versions live instances may still be on (besides stable and canary).
    #[serde(default)]
    pub retained: Vec<Pin>,
    /// Deleted from the config: no new entries; live instances finish.
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolledBack {
    pub version: u32,
    pub at: Millis,
    /// The broken guard, for an automatic rollback.
    pub guard: Option<String>,
    pub reason: String,
}

/// The current deployed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployed {
    /// The layout of these records ([`FORMAT`]).
    pub format: u32,
    /// The generation whose non-journey resources are in effect.
    pub generation: u64,
    pub journeys: BTreeMap<String, Rollout>,
    /// The last audit entry's sequence number.
    pub audit_seq: u64,
    /// The last resource-version sequence number.
    pub version_seq: u64,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: Millis,
    pub actor: String,
    /// `apply`, `promote`, `rollback`, `auto_rollback`.
    pub action: String,
    #[serde(default)]
    pub journey: Option<String>,
    /// What it did: versions, generation, canary share, the broken guard
    /// and both rates, instances migrated.
    #[serde(default)]
    pub detail: Value,
}

fn decode<T: DeserializeOwned>(what: &'static str, key: &[u8], bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Decode {
        what,
        message: format!("{} (key {}): {e}", what, String::from_utf8_lossy(key)),
    })
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Encode {
        what,
        message: e.to_string(),
    })
}

fn generation_key(n: u64) -> Vec<u8> {
    let mut k = vec![GENERATION];
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn file_key(hash: &str) -> Vec<u8> {
    let mut k = vec![FILE];
    k.extend_from_slice(hash.as_bytes());
    k
}

fn version_prefix(kind: &str, id: &str) -> Vec<u8> {
    let mut k = vec![VERSION];
    k.extend_from_slice(kind.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k
}

fn audit_key(seq: u64) -> Vec<u8> {
    let mut k = vec![AUDIT];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Reads of the deployment tables.
pub trait Deployments {
    /// The deployed state; `None` on a store with nothing deployed. A
    /// record written by a newer sluice is an error naming both formats.
    fn deployed(&self) -> Result<Option<Deployed>, Error>;
    fn generation(&self, n: u64) -> Result<Option<Generation>, Error>;
    fn file(&self, hash: &str) -> Result<Option<Vec<u8>>, Error>;
    /// A resource's versions, oldest first.
    fn resource_versions(&self, kind: &str, id: &str) -> Result<Vec<ResourceVersion>, Error>;
    /// The audit log, oldest first.
    fn audit(&self) -> Result<Vec<AuditEntry>, Error>;
}

impl<T: Kv + ?Sized> Deployments for T {
    fn deployed(&self) -> Result<Option<Deployed>, Error> {
        let key = super::meta::key(DEPLOYED);
        let Some(bytes) = self.get(&key)? else {
            return Ok(None);
        };
        // The format first, so a newer layout is named as such rather than
        // failing on a field this sluice does not know.
        let head: Value = decode("deployed state", &key, &bytes)?;
        let format = head.get("format").and_then(Value::as_u64).unwrap_or(0);
        if format != u64::from(FORMAT) {
            return Err(Error::Decode {
                what: "deployed state",
                message: format!(
                    "the deployment records have format {format}, and this sluice reads format {FORMAT}{}",
                    if format > u64::from(FORMAT) {
                        ": they were written by a newer sluice; upgrade sluice"
                    } else {
                        ""
                    }
                ),
            });
        }
        decode("deployed state", &key, &bytes).map(Some)
    }

    fn generation(&self, n: u64) -> Result<Option<Generation>, Error> {
        let key = generation_key(n);
        self.get(&key)?
            .map(|b| decode("deployment generation", &key, &b))
            .transpose()
    }

    fn file(&self, hash: &str) -> Result<Option<Vec<u8>>, Error> {
        self.get(&file_key(hash))
    }

    fn resource_versions(&self, kind: &str, id: &str) -> Result<Vec<ResourceVersion>, Error> {
        let prefix = version_prefix(kind, id);
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.scan(&prefix, after.as_deref(), None, 256)?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            after = Some(last.clone());
            for (k, v) in &page {
                out.push(decode("resource version", k, v)?);
            }
        }
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, Error> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.scan(&[AUDIT], after.as_deref(), None, 256)?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            after = Some(last.clone());
            for (k, v) in &page {
                out.push(decode("audit entry", k, v)?);
            }
        }
    }
}

impl Batch {
    pub fn put_deployed(&mut self, d: &Deployed) -> Result<(), Error> {
        self.put_meta(DEPLOYED, encode("deployed state", d)?);
        Ok(())
    }

    pub fn put_generation(&mut self, g: &Generation) -> Result<(), Error> {
        self.put(
            generation_key(g.number),
            encode("deployment generation", g)?,
        );
        Ok(())
    }

    pub fn put_file(&mut self, hash: &str, bytes: Vec<u8>) {
        self.put(file_key(hash), bytes);
    }

    pub fn put_resource_version(&mut self, seq: u64, v: &ResourceVersion) -> Result<(), Error> {
        let mut k = version_prefix(&v.kind, &v.id);
        k.extend_from_slice(&seq.to_be_bytes());
        self.put(k, encode("resource version", v)?);
        Ok(())
    }

    pub fn put_audit(&mut self, e: &AuditEntry) -> Result<(), Error> {
        self.put(audit_key(e.seq), encode("audit entry", e)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::{SledOptions, SledStore};

    fn deployed() -> Deployed {
        Deployed {
            format: FORMAT,
            generation: 1,
            journeys: BTreeMap::new(),
            audit_seq: 0,
            version_seq: 0,
        }
    }

    #[test]
    fn records_round_trip_and_scan_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), &SledOptions::default()).expect("open");
        assert_eq!(store.deployed().expect("read"), None);
        let mut b = Batch::default();
        b.put_deployed(&deployed()).expect("encode");
        for seq in [2u64, 1, 10] {
            b.put_audit(&AuditEntry {
                seq,
                at: 0,
                actor: "ana".into(),
                action: "apply".into(),
                journey: None,
                detail: Value::Null,
            })
            .expect("encode");
        }
        store.apply(b).expect("apply");
        assert_eq!(store.deployed().expect("read"), Some(deployed()));
        let seqs: Vec<u64> = store.audit().expect("read").iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 10]);
    }

    #[test]
    fn a_newer_format_and_a_corrupt_record_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), &SledOptions::default()).expect("open");
        let mut b = Batch::default();
        b.put_meta(
            DEPLOYED,
            br#"{"format":7,"generation":1,"journeys":{}}"#.to_vec(),
        );
        store.apply(b).expect("apply");
        let e = store.deployed().expect_err("newer").to_string();
        assert!(e.contains("format 7") && e.contains("newer sluice"), "{e}");
        let mut b = Batch::default();
        b.put_meta(DEPLOYED, b"{not json".to_vec());
        store.apply(b).expect("apply");
        let e = store.deployed().expect_err("corrupt").to_string();
        assert!(e.contains("deployed state"), "{e}");
    }
}
