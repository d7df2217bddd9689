//! `sluice run --cluster`'s substrate: NATS JetStream (2.10 or later)
//! through `async-nats`. This module holds what the cluster relies on NATS
//! for and nothing of the machine's rules:
//!
//! - [`meta`]: the cluster's fixed settings (partition count, config hash)
//!   in a KV bucket; a worker that disagrees refuses to join;
//! - [`lease`]: one lease per partition in a KV bucket (create, then update
//!   with the expected revision; the revision that created it is the
//!   fencing token) and the partition's checkpoint, advanced by
//!   compare-and-set under that token so a stale owner's write fails;
//! - [`members`]: live workers' heartbeats and rendezvous hashing over them
//!   (who should own which partition);
//! - [`log`]: the event log: events published to `<prefix>.ev.<p>` with
//!   `Nats-Msg-Id`, acknowledged only after JetStream's ack, read back per
//!   partition from a sequence, and purged up to the checkpoint by its
//!   owner (retention);
//! - [`changelog`]: changed user records published to `<prefix>.st.<p>.<user>`
//!   in a stream keeping one message per subject, read back to restore a
//!   partition;
//! - [`slots`]: cluster-wide throttles: slots (reserved send instants)
//!   handed out in batches from a KV key by compare-and-set, keeping
//!   FORMAT.md §8's sliding-window bound across workers, and the
//!   [`crate::policy::ledger::Ledger`] that spends them in the engine.
//!
//! The partition of a user is [`crate::hash::partition_of`]. Every NATS
//! failure is an [`Error`]; [`Error::is_unavailable`] says which mean "NATS
//! cannot be reached now" (an ingest answers 503, processing pauses).

pub mod changelog;
pub mod forward;
pub mod intake;
pub mod lease;
pub mod log;
pub mod members;
pub mod meta;
pub mod node;
pub mod partition;
pub mod serve;
pub mod slots;
pub mod worker;

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};

/// The cluster's key-value buckets (`<PREFIX>_<name>`).
const BUCKETS: [&str; 5] = ["meta", "leases", "members", "checkpoints", "tokens"];

/// Default partition count of a new cluster.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// At most this many publishes of one call wait for their JetStream acks
/// at a time (a batch's changelog records, a request's events): the next
/// ones are published once those are acknowledged, and a publish that
/// cannot start within the request timeout fails. async-nats gives each
/// connection 5,000 unacknowledged publishes and makes a publish wait for
/// a free one; calls that published everything before awaiting any ack
/// could together hold all 5,000 and each wait for a slot only their own
/// unawaited acks would free: every publish of the worker hung, with no
/// error (ingest requests unanswered, processing stopped).
pub(crate) const PUBLISH_WINDOW: usize = 1_024;

/// What goes wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("NATS JetStream: {what}: {source}")]
    Nats {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "this worker was started with {ours} partitions but the cluster `{prefix}` was created \
         with {theirs}; start it with --partitions {theirs} (the count is fixed at creation)"
    )]
    PartitionsMismatch {
        prefix: String,
        ours: u32,
        theirs: u32,
    },
    #[error(
        "this worker's config (hash {ours}) differs from the cluster `{prefix}`'s (hash {theirs}); \
         every worker must run the same deployed config"
    )]
    ConfigMismatch {
        prefix: String,
        ours: String,
        theirs: String,
    },
    #[error("lease on partition {partition} lost (token {token}): another worker owns it now")]
    LeaseLost { partition: u32, token: u64 },
    #[error("cluster record `{key}` is unreadable: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("NATS did not answer within {0:?}")]
    Timeout(Duration),
    #[error("partition {partition}: {message}")]
    Processor { partition: u32, message: String },
    /// A stream of the cluster exists in NATS with settings the cluster
    /// cannot run on (made by hand, by another program, or with another
    /// `--replicas`).
    #[error("the stream {stream} exists in NATS {found}; {advice}")]
    StreamMismatch {
        stream: String,
        found: String,
        advice: String,
    },
    /// NATS answers, but the server runs without JetStream.
    #[error(
        "the NATS server at {url} runs without JetStream ({source}): start it with `-js` \
         (and `-sd DIR` for where it keeps its streams)"
    )]
    NoJetStream {
        url: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub(crate) fn nats(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Nats {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// Whether the error means NATS could not be reached or did not answer
    /// (as opposed to a refusal): ingest answers 503 and nothing is
    /// acknowledged.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Nats { .. } | Error::Timeout(_)
        )
    }
}

/// How a worker reaches the cluster.
#[derive(Debug, Clone)]
pub struct Settings {
    /// NATS URL(s), comma-separated (`nats://a:4222,nats://b:4222`).
    pub url: String,
    /// Names every stream, bucket and subject of this cluster, so several
    /// clusters can share a NATS account. Letters, digits, `_` and `-`.
    pub prefix: String,
    /// Replicas of every stream and bucket (1, or 3 on a three-node NATS
    /// cluster).
    pub replicas: usize,
    /// A partition lease's time to live; renewed at a third of it.
    pub lease_ttl: Duration,
    /// How long a request to NATS may take before it counts as unavailable.
    pub request_timeout: Duration,
    /// How long the changelog keeps a deleted key's tombstone (NATS 2.11
    /// or later; at least a second): a fired timer or a delivered outbox
    /// entry leaves nothing behind after it. A tombstone replaces the key's
    /// value at once (one message per subject), so this only bounds how
    /// long deletions are visible as such.
    pub tombstone_ttl: Duration,
    /// How often an owner removes its partitions' applied events (at or
    /// before the committed checkpoint) from the event stream.
    pub retention: log::Retention,
}

impl Settings {
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Settings {
            url: url.into(),
            prefix: prefix.into(),
            replicas: 1,
            lease_ttl: Duration::from_secs(6),
            request_timeout: Duration::from_secs(5),
            tombstone_ttl: Duration::from_secs(600),
            retention: log::Retention::default(),
        }
    }
}

/// A connection to the cluster's streams and buckets, created when missing.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) settings: Settings,
    pub(crate) js: jetstream::Context,
    pub(crate) client: async_nats::Client,
    /// The TTL deleted keys' tombstones are published with (`Nats-TTL`),
    /// `None` when the changelog stream cannot expire messages (a server
    /// before 2.11): they are then kept.
    pub(crate) tombstone_ttl: Option<Duration>,
}

impl Cluster {
    /// Connects and makes sure the cluster's streams and buckets exist.
    pub async fn connect(settings: Settings) -> Result<Self, Error> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(settings.request_timeout)
            .request_timeout(Some(settings.request_timeout))
            .connect(
                settings
                    .url
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .collect::<Vec<_>>(),
            )
            .await
            .map_err(|source| Error::Connect {
                url: settings.url.clone(),
                source,
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(settings.request_timeout);
        let mut cluster = Cluster {
            settings,
            js,
            client,
            tombstone_ttl: None,
        };
        // Workers started together on a fresh replicated NATS cluster all
        // create or look up the same streams and buckets: until a new
        // stream's group has elected its leader, NATS leaves requests about
        // it unanswered (a timeout) or answers "no responders", and a
        // create racing another worker's fails. Try again, for up to three
        // request timeouts, before giving up with the error.
        let deadline = tokio::time::Instant::now() + 3 * cluster.settings.request_timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            match cluster.ensure().await {
                Ok(()) => return Ok(cluster),
                Err(e) if e.is_unavailable() && tokio::time::Instant::now() + pause < deadline => {
                    tracing::debug!(target: "sluice::cluster", error = %e,
                        "the cluster's streams and buckets are not ready yet");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                // Said plainly: JetStream's own answer ("jetstream not
                // enabled", or none) does not say what to do.
                Err(e) if !cluster.client.server_info().jetstream => {
                    return Err(Error::NoJetStream {
                        url: cluster.settings.url.clone(),
                        source: Box::new(e),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether deleted keys' tombstones expire on the changelog (the
    /// server and the stream allow per-message TTLs).
    pub fn tombstones_expire(&self) -> bool {
        self.tombstone_ttl.is_some()
    }

    /// Whether the connected server supports per-message TTLs (2.11+).
    fn server_has_message_ttl(&self) -> bool {
        let version = self.client.server_info().version;
        let mut parts = version
            .trim_start_matches('v')
            .split(['.', '-'])
            .map(|p| p.parse::<u64>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (2, 11)
    }

    /// The cluster's streams (the KV buckets' among them, `KV_<bucket>`)
    /// that are not in NATS: deleted under running workers by an operator
    /// (`nats stream rm`), which nothing else notices until events are
    /// refused or never processed. Errors other than "stream not found"
    /// (NATS unreachable, a timeout) are returned, not counted as missing.
    pub async fn missing_streams(&self) -> Result<Vec<String>, Error> {
        use jetstream::context::GetStreamErrorKind;
        let mut names = vec![self.name("EV"), self.name("ST")];
        for bucket in BUCKETS {
            names.push(format!("KV_{}", self.name(bucket)));
        }
        let mut missing = Vec::new();
        for name in names {
            match self.js.get_stream(&name).await {
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
                {
                    missing.push(name);
                }
                Err(e) => return Err(Error::nats(format!("look up the stream {name}"), e)),
            }
        }
        Ok(missing)
    }

    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Whether the connection to NATS is up now (`/readyz`).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    /// A stream or bucket name of this cluster (`<PREFIX>_<what>`).
    pub(crate) fn name(&self, what: &str) -> String {
        format!("{}_{what}", self.settings.prefix)
    }

    async fn ensure(&mut self) -> Result<(), Error> {
        let replicas = self.settings.replicas;
        let p = self.prefix();
        let events = self
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: self.name("EV"),
                subjects: vec![format!("{p}.ev.*")],
                storage: StorageType::File,
                num_replicas: replicas,
                // Nats-Msg-Id dedupe window; per-user ids dedupe for longer.
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| Error::nats("create the event stream", e))?;
        check_stream(&events.cached_info().config, &self.settings, 0)?;
        let ttl = self.server_has_message_ttl();
        let mut changelog = self
            .js
            .get_or_create_stream(jetstream::stream::Config {
                name: self.name("ST"),
                subjects: vec![format!("{p}.st.>")],
                storage: StorageType::File,
                num_replicas: replicas,
                max_messages_per_subject: 1,
                // Deleted keys' tombstones expire (`Nats-TTL`).
                allow_message_ttl: ttl,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::nats("create the changelog stream", e))?;
        check_stream(&changelog.cached_info().config, &self.settings, 1)?;
        let mut config = changelog
            .info()
            .await
            .map_err(|e| Error::nats("read the changelog stream's settings", e))?
            .config
            .clone();
        if ttl && !config.allow_message_ttl {
            // A changelog created before tombstones expired (or by a
            // worker on an older server): allow per-message TTLs now (a
            // setting NATS lets a stream turn on, never off). Tombstones
            // published before keep their subjects until they are
            // overwritten or the stream purged.
            config.allow_message_ttl = true;
            config = self
                .js
                .update_stream(config)
                .await
                .map_err(|e| Error::nats("allow message TTLs on the changelog stream", e))?
                .config;
        }
        self.tombstone_ttl = config
            .allow_message_ttl
            .then(|| self.settings.tombstone_ttl.max(Duration::from_secs(1)));
        if self.tombstone_ttl.is_none() {
            tracing::warn!(
                target: "sluice::cluster",
                server = %self.client.server_info().version,
                "this NATS server cannot expire messages (2.11 or later can): deleted keys stay \
                 on the changelog as one-byte tombstones"
            );
        }
        for bucket in BUCKETS {
            let max_age = match bucket {
                "leases" | "members" => self.settings.lease_ttl,
                _ => Duration::ZERO,
            };
            self.bucket_or_create(bucket, max_age).await?;
        }
        Ok(())
    }

    async fn bucket_or_create(&self, what: &str, max_age: Duration) -> Result<kv::Store, Error> {
        let bucket = self.name(what);
        if let Ok(store) = self.js.get_key_value(bucket.as_str()).await {
            return Ok(store);
        }
        self.js
            .create_key_value(kv::Config {
                bucket: bucket.clone(),
                history: 1,
                max_age,
                storage: StorageType::File,
                num_replicas: self.settings.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::nats(format!("create the KV bucket {bucket}"), e))
    }

    /// One of the cluster's KV buckets (`meta`, `leases`, `members`,
    /// `checkpoints`, `tokens`).
    pub(crate) async fn bucket(&self, what: &str) -> Result<kv::Store, Error> {
        let bucket = self.name(what);
        self.js
            .get_key_value(bucket.as_str())
            .await
            .map_err(|e| Error::nats(format!("open the KV bucket {bucket}"), e))
    }
}

/// Checks that a stream found in NATS (`get_or_create_stream` returns an
/// existing stream as it is) has what the cluster relies on: its subjects,
/// limits retention without limits that drop messages, one message per
/// subject on the changelog (`per_subject` 1; 0 = no per-subject limit)
/// and the replicas this worker was started with.
fn check_stream(
    have: &jetstream::stream::Config,
    settings: &Settings,
    per_subject: i64,
) -> Result<(), Error> {
    use jetstream::stream::RetentionPolicy;
    let prefix = &settings.prefix;
    let what = if per_subject == 1 { "st.>" } else { "ev.*" };
    let subject = format!("{prefix}.{what}");
    let mismatch = |found: String| {
        Error::StreamMismatch {
        stream: have.name.clone(),
        found,
        advice: format!(
            "the cluster `{prefix}` needs it as sluice creates it (subject {subject}, file \
             storage, limits retention, no age, count or size limit{}, {} replica(s)): delete the stream (and \
             the cluster's KV buckets) or start the workers with another --cluster-name \
             (docs/cluster.md)",
            if per_subject == 1 { ", one message per subject" } else { "" },
            settings.replicas
        ),
    }
    };
    if !have.subjects.contains(&subject) {
        return Err(mismatch(format!("with subjects {:?}", have.subjects)));
    }
    if have.storage != StorageType::File {
        return Err(mismatch(format!("with {:?} storage", have.storage)));
    }
    if have.retention != RetentionPolicy::Limits {
        return Err(mismatch(format!("with {:?} retention", have.retention)));
    }
    let limit = |v: i64| v > 0;
    if !have.max_age.is_zero() {
        return Err(mismatch(format!("with max age {:?}", have.max_age)));
    }
    if limit(have.max_messages) || limit(have.max_bytes) {
        return Err(mismatch(format!(
            "with a limit of {} messages, {} bytes",
            have.max_messages, have.max_bytes
        )));
    }
    let per = have.max_messages_per_subject.max(0);
    if per != per_subject {
        return Err(mismatch(format!(
            "with {per} message(s) per subject (0: no limit)"
        )));
    }
    if have.num_replicas.max(1) != settings.replicas {
        return Err(Error::StreamMismatch {
            stream: have.name.clone(),
            found: format!("with {} replica(s)", have.num_replicas.max(1)),
            advice: format!(
                "this worker was started with --replicas {}: start it with --replicas {} as the \
                 cluster `{prefix}` was created",
                settings.replicas,
                have.num_replicas.max(1)
            ),
        });
    }
    Ok(())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Decode {
        key: key.to_string(),
        source,
    })
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> bytes::Bytes {
    // Serialising our own plain structs to JSON cannot fail.
    bytes::Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}
