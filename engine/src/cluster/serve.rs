//! `sluice run --cluster`: one worker process. It joins the cluster
//! (same partition count, same config, or it refuses), serves the HTTP API
//! with ingest appending to the event log ([`super::intake`]), runs the
//! partition loop ([`super::worker`]) with the engine as its processor
//! ([`super::node`]) and the delivery workers of single-node `run`, and on
//! SIGTERM/SIGINT stops taking events, lets deliveries in flight finish and
//! be recorded, then gives its partitions back.
//!
//! Knows nothing of the machine's rules; the engine code is `run`'s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use journeys::compiled::Config;

use super::node::{self, Node};
use super::worker::{Tuning, Worker};
use super::{meta, Cluster, Error, Settings};
use crate::api;
use crate::clock::{Clock, WallClock};
use crate::deliver::sign::UnsubscribeSigner;
use crate::deliver::Providers;
use crate::metrics::Metrics;
use crate::service::run::{resolve_tokens, RunError, RunOptions};
use crate::service::workers;

/// How a worker joins its cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// NATS URL(s), comma-separated.
    pub url: String,
    /// Names the cluster's streams and buckets.
    pub prefix: String,
    pub partitions: u32,
    /// Replicas of the streams and buckets (3 on a three-node NATS
    /// cluster).
    pub replicas: usize,
}

/// The hash every worker's config must share: SHA-256 over the config
/// files of DIR (their paths and bytes), 16 hex digits.
pub fn config_hash(dir: &std::path::Path) -> Result<String, crate::deploy::state::Error> {
    let snapshot = crate::deploy::Snapshot::read(dir)?;
    let mut h = Sha256::new();
    for (name, bytes) in &snapshot.files {
        h.update((name.len() as u64).to_be_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    Ok(hex::encode(h.finalize())[..16].to_string())
}

/// The secret that signs unsubscribe links, shared by every worker (a link
/// one worker made is followed on another): created once in the cluster's
/// `meta` bucket.
async fn shared_secret(cluster: &Cluster) -> Result<Vec<u8>, Error> {
    use async_nats::jetstream::kv::CreateErrorKind;
    let kv = cluster.bucket("meta").await?;
    let mut fresh = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
    let fresh = hex::encode(fresh);
    match kv.create("unsubscribe-secret", fresh.clone().into()).await {
        Ok(_) => return Ok(fresh.into_bytes()),
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::nats("record the unsubscribe secret", e)),
    }
    match kv.get("unsubscribe-secret").await {
        Ok(Some(v)) => Ok(v.to_vec()),
        Ok(None) => Err(Error::nats(
            "read the unsubscribe secret",
            std::io::Error::other("the key vanished after it existed"),
        )),
        Err(e) => Err(Error::nats("read the unsubscribe secret", e)),
    }
}

/// Every partition's throttles on this worker draw from one reservoir of
/// the cluster's slots per throttle (`cluster::slots`), refilled by one task
/// per throttle: the bound of FORMAT.md §8 holds across workers.
fn shared_slots(
    cluster: Cluster,
    runtime: tokio::runtime::Handle,
    clock: Arc<dyn Clock>,
) -> impl Fn(&str, usize, chrono::TimeDelta) -> Box<dyn crate::policy::ledger::Ledger> + Send + Sync
{
    use super::slots::{refill, ClusterLedger, Rate, Reservoir, Shares};
    let shares = Shares::default();
    let reservoirs: std::sync::Mutex<std::collections::HashMap<String, Arc<Reservoir>>> =
        std::sync::Mutex::default();
    move |id: &str, count: usize, per: chrono::TimeDelta| {
        let rate = Rate::new(count, per);
        let mut held = reservoirs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let reservoir = held
            .entry(id.to_string())
            .or_insert_with(|| {
                let r = Arc::new(Reservoir::default());
                r.ask();
                drop(runtime.spawn(refill(
                    cluster.clone(),
                    id.to_string(),
                    rate,
                    shares.clone(),
                    Arc::clone(&clock),
                    Arc::clone(&r),
                )));
                r
            })
            .clone();
        Box::new(ClusterLedger::new(
            reservoir,
            rate,
            shares.batch,
            shares.lead,
        )) as Box<dyn crate::policy::ledger::Ledger>
    }
}

/// Takes the worker's store directory for this process (`DIR/LOCK`, the
/// lock file single-node stores use): two workers given the same
/// `--store` would open, wipe and restore the same partitions' local
/// stores under each other.
fn lock_store(dir: &std::path::Path) -> Result<std::fs::File, RunError> {
    match crate::store::sled_store::lock(dir) {
        Err(crate::store::Error::Locked { .. }) => Err(RunError::Cluster(format!(
            "store {} is in use by another sluice process (another worker?): give each worker \
             on a machine its own --store (docs/cluster.md)",
            dir.display()
        ))),
        locked => Ok(locked?),
    }
}

/// The lease TTL `SLUICE_CLUSTER_LEASE_MS` sets: whole milliseconds, at
/// least 300 (a lease renewed every 100 ms); anything else is refused
/// rather than taken as the default (was: `6s` silently gave 6,000, `6`
/// silently gave 300).
fn lease_ttl(value: Option<String>) -> Result<Option<Duration>, RunError> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(ms) if ms >= 300 => Ok(Some(Duration::from_millis(ms))),
        _ => Err(RunError::Cluster(format!(
            "$SLUICE_CLUSTER_LEASE_MS must be a whole number of milliseconds of at least 300 \
             (the lease's time to live; default 6000), not {value:?}"
        ))),
    }
}

fn cluster_err(e: Error) -> RunError {
    RunError::Cluster(e.to_string())
}

/// Runs one worker until SIGTERM or SIGINT.
pub fn run(
    config: Arc<Config>,
    options: RunOptions,
    cluster_options: ClusterOptions,
    say: &dyn Fn(&str),
) -> Result<(), RunError> {
    let env = |name: &str| std::env::var(name).ok();
    let (tokens, written) = resolve_tokens(&config, &options.dir, &env)?;
    if let Some(p) = written {
        say(&format!(
            "tokens: some token variables are unset; the tokens are in {} (every worker needs the same tokens)",
            p.display()
        ));
    }
    let bounds = crate::service::memory::Bounds::from_env()?;
    let hash = config_hash(&options.dir).map_err(crate::engine::Error::from)?;
    // Held until the worker exits: a second worker (or a single-node
    // `run`) on the same store refuses to start.
    let _store_lock = lock_store(&options.store)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    let mut settings = Settings::new(&cluster_options.url, &cluster_options.prefix);
    settings.replicas = cluster_options.replicas;
    if let Some(ttl) = lease_ttl(env("SLUICE_CLUSTER_LEASE_MS"))? {
        settings.lease_ttl = ttl;
    }
    let cluster = rt
        .block_on(Cluster::connect(settings))
        .map_err(cluster_err)?;
    rt.block_on(meta::join(
        &cluster,
        &meta::Meta {
            partitions: cluster_options.partitions,
            config_hash: hash.clone(),
        },
    ))
    .map_err(cluster_err)?;
    let secret = rt.block_on(shared_secret(&cluster)).map_err(cluster_err)?;

    let clock: Arc<dyn Clock> = Arc::new(WallClock);
    let metrics = Metrics::for_cluster();
    metrics.declare(&config);
    let public_url = config
        .project
        .api
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", options.listen));
    let signer = Arc::new(UnsubscribeSigner::for_config(&public_url, &secret, &config));
    let providers = Arc::new(Providers::from_project(
        &config.project,
        &options.dir,
        &env,
        Arc::clone(&signer) as Arc<dyn crate::deliver::UnsubscribeLinks>,
    )?);
    rt.block_on(providers.ready())?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&options.listen))
        .map_err(|e| RunError::Listen {
            addr: options.listen.clone(),
            message: crate::service::run::listen_failure(&e),
        })?;

    let (handle, rx) = crate::service::channel();
    let (outlet, busy) = workers::spawn_with(
        rt.handle(),
        providers,
        handle.clone(),
        Arc::clone(&clock),
        options.concurrency,
        1_024,
        metrics.clone(),
    );
    handle.set_state(crate::service::STARTING);
    metrics.watch(handle.state_cell(), busy.cell());
    let root = options.store.join("partitions");
    let node = Node::new(
        node::Settings {
            root,
            config: Arc::clone(&config),
            clock: Arc::clone(&clock),
            metrics: metrics.clone(),
            signer: Some(Arc::clone(&signer)),
            unsubscribe_base: format!("{public_url}/v1/unsubscribe"),
            partitions: cluster_options.partitions,
            // Every partition's engine gets its share of the user cache.
            cache_bytes: (bounds.user_cache_bytes / cluster_options.partitions.max(1) as usize)
                .max(1 << 20),
            ledgers: Some(Arc::new(shared_slots(
                cluster.clone(),
                rt.handle().clone(),
                Arc::clone(&clock),
            ))),
        },
        outlet,
        rx,
    );
    let me = format!(
        "{}-{}-{}",
        env("HOSTNAME").unwrap_or_else(|| "worker".into()),
        std::process::id(),
        &hex::encode(rand::random::<[u8; 4]>())
    );
    let worker = Worker::new(
        cluster.clone(),
        me.clone(),
        Tuning {
            partitions: cluster_options.partitions,
            batch: 256,
            poll: Duration::from_millis(5),
        },
        node,
    );
    let ready = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let fatal = Arc::new(tokio::sync::Notify::new());
    let loop_task = rt.spawn(drive(
        worker,
        Arc::clone(&ready),
        Arc::clone(&stop),
        Arc::clone(&fatal),
        metrics.clone(),
        handle.clone(),
    ));
    say(&format!(
        "worker {me} joined cluster {} ({} partitions, config {hash})",
        cluster_options.prefix, cluster_options.partitions
    ));
    say(&format!("listening on http://{}", options.listen));

    let intake = super::intake::Intake::new(
        cluster.clone(),
        me.clone(),
        Some(Arc::clone(&signer)),
        cluster_options.partitions,
        handle.clone(),
        Arc::clone(&ready),
        metrics.clone(),
    );
    rt.spawn(intake.clone().watch_streams(streams_every()));
    rt.spawn(super::forward::serve(
        cluster.clone(),
        me.clone(),
        intake.clone(),
    ));
    let app = api::router_with(
        Arc::new(intake.clone()),
        tokens,
        api::Options {
            clock: Arc::clone(&clock),
            metrics,
            ..api::Options::default()
        },
    );
    let failed = Arc::new(AtomicBool::new(false));
    let failed_flag = Arc::clone(&failed);
    let draining = intake.clone();
    rt.block_on(api::serve(
        listener,
        app,
        async move {
            tokio::select! {
                () = crate::service::run::shutdown_signal() => {}
                () = fatal.notified() => failed_flag.store(true, Ordering::SeqCst),
            }
            draining.drain();
        },
        api::ServeOptions::default(),
    ));
    if !failed.load(Ordering::SeqCst) {
        say("shutting down: draining deliveries");
        let deadline = Instant::now() + options.drain;
        while busy.count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Let the last results be recorded by a round, then leave.
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let ended = rt
        .block_on(loop_task)
        .map_err(|e| RunError::Failed(format!("the partition loop ended abnormally: {e}")))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    ended?;
    say("stopped");
    Ok(())
}

/// How often a worker checks that the cluster's streams are still in
/// NATS (`SLUICE_STREAM_CHECK_MS` shortens it for tests).
fn streams_every() -> Duration {
    std::env::var("SLUICE_STREAM_CHECK_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis)
}

/// The partition loop: rounds until stopped, the readiness flag and the
/// cluster metrics kept current; pauses while NATS is unreachable. On
/// stop, one last round records what came back, then the partitions are
/// given back. Any other failure stops the worker (its partitions go to
/// the others from the changelog).
async fn drive(
    mut worker: Worker<Node<workers::Workers>>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    fatal: Arc<tokio::sync::Notify>,
    metrics: Metrics,
    handle: crate::service::ServiceHandle,
) -> Result<(), RunError> {
    let pause = Duration::from_millis(500);
    let mut lost = 0;
    let mut republished = 0;
    let mut restores = 0;
    let mut owned_before: Vec<u32> = Vec::new();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let round = worker.round().await;
        let s = &worker.stats;
        metrics.leases_lost(s.leases_lost.saturating_sub(lost));
        lost = s.leases_lost;
        metrics.changelog_republished(s.changelog_republished.saturating_sub(republished));
        republished = s.changelog_republished;
        for took in s.restores.iter().skip(restores) {
            metrics.partition_restored(*took);
        }
        restores = s.restores.len();
        let owned = worker.owned();
        metrics.partitions_owned(owned.len());
        for p in owned_before.iter().filter(|p| !owned.contains(p)) {
            metrics.consumer_lag(*p, None);
        }
        for (p, lag) in worker.lag() {
            metrics.consumer_lag(p, Some(lag));
        }
        worker.processor_mut().drain();
        let idle = owned.is_empty();
        owned_before = owned;
        match round {
            Ok(()) => {
                ready.store(true, Ordering::SeqCst);
                handle.set_state(crate::service::READY);
                if idle && !stopping {
                    // Nothing to read: wait for members to change.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err(e) if e.is_unavailable() => {
                ready.store(false, Ordering::SeqCst);
                handle.set_state(crate::service::STARTING);
                tracing::warn!(target: "sluice::cluster", error = %e, "cluster unavailable; processing paused");
                if !stopping {
                    tokio::time::sleep(pause).await;
                }
            }
            Err(e) => {
                ready.store(false, Ordering::SeqCst);
                handle.set_state(crate::service::FAILED);
                tracing::error!(target: "sluice::cluster", "the worker stops: {e}");
                fatal.notify_one();
                return Err(RunError::Cluster(format!("the worker stopped: {e}")));
            }
        }
        if stopping {
            ready.store(false, Ordering::SeqCst);
            return worker
                .leave()
                .await
                .map_err(|e| RunError::Cluster(format!("cannot leave the cluster cleanly: {e}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_ttl_is_whole_milliseconds_of_at_least_300_or_refused() {
        assert_eq!(lease_ttl(None).unwrap(), None);
        assert_eq!(
            lease_ttl(Some("3000".into())).unwrap(),
            Some(Duration::from_millis(3000))
        );
        assert_eq!(
            lease_ttl(Some("300".into())).unwrap(),
            Some(Duration::from_millis(300))
        );
        for bad in ["6s", "6", "", "-1", "1.5"] {
            let e = lease_ttl(Some(bad.into())).unwrap_err().to_string();
            assert!(
                e.contains("SLUICE_CLUSTER_LEASE_MS") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
    }
}
