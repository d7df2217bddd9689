//! The wired cluster's speed on this machine (issue 15): real `sluice run
//! --cluster` release binaries against a nats-server started here
//! (127.0.0.1, JetStream with `sync_interval: always`: every write fsynced
//! before its ack), the example shop's journeys live, its CRM webhook
//! pointed at a receiver in this process. Loopback only. Three phases, each
//! on its own cluster (`--cluster-name`) of the one nats-server:
//!
//! - `ingest`: with 1, 2 and 3 workers, once the cluster is settled (see
//!   below), CLIENTS keep-alive connections (spread over the workers) post
//!   `shopgen` events in batches of BATCH for SECONDS; events/s
//!   acknowledged (202: every event stored and fsynced by JetStream), per
//!   worker, and the efficiency against the first one-worker run. The
//!   workers process what they take in at the same time, as in production.
//! - `process`: with 1, 2 and 3 workers, a backlog of BACKLOG `shopgen`
//!   events is posted through the workers' HTTP API while the bench itself
//!   holds every partition's lease (so nothing is processed yet); then it
//!   releases them all at once and times until every partition's checkpoint
//!   (the `<PREFIX>_checkpoints` KV, written by compare-and-set after each
//!   published batch) reaches the partition's last event in the log.
//! - `restore`: two workers, P = 8 partitions, USERS users that all hash to
//!   partition 0 (one `identify` each: a profile per user), ingested and
//!   processed; then the owner of partition 0 is SIGKILLed, KILLS times
//!   (a fresh worker replaces each victim), each time only once the whole
//!   cluster is settled and partition 0 has caught up. Per kill: the survivor's
//!   `sluice_partition_restore_seconds` (sum and count added), the
//!   survivor's own log line for partition 0 (`partition taken … took_ms`:
//!   loading the records into its store and opening the engine), and the
//!   wall time from the kill until the survivor reports the partition (its
//!   `sluice_consumer_lag_events{partition="0"}` series) and until an event
//!   posted right after the kill is checkpointed. The wall times include
//!   the lease's time to live (`SLUICE_CLUSTER_LEASE_MS`, default 6 s):
//!   the dead owner's lease must age out first. Also the survivor's leases
//!   lost (`sluice_lease_lost_total`: a takeover that bounces shows here)
//!   and the wall time until the survivor alone is settled owning all P.
//!
//! A settled cluster (`wait_settled`, read from NATS and the workers'
//! metrics every 200 ms): the live members are exactly the running workers
//! (a dead one's heartbeat aged out), every partition's lease is held by
//! the running worker rendezvous hashing over them names (no handover
//! due), each worker reports (`sluice_consumer_lag_events` series,
//! `sluice_partitions_owned`) exactly the partitions it holds the leases
//! of (no restore or handover in progress), and the owners, the
//! checkpoints' fencing tokens and the workers' restore counts stay the
//! same for 2 s. A cluster that does not settle within its bound (120 s
//! before ingest, 180 s before a kill, 300 s after one) stops the bench
//! with the last reason it was not settled.
//!
//! ```sh
//! cargo bench -p sluice --bench cluster_run              # -- all 10 5000 100000 2
//! cargo bench -p sluice --bench cluster_run -- ingest 10 8 50    # SECONDS CLIENTS BATCH
//! cargo bench -p sluice --bench cluster_run -- process 5000      # BACKLOG
//! cargo bench -p sluice --bench cluster_run -- restore 100000 2  # USERS KILLS
//! ```
//!
//! `SLUICE_BENCH_KEEP=1` keeps the temporary directory with the workers'
//! logs (`sluice::cluster` at info). `SLUICE_BENCH_WORKERS=1,3` runs
//! other worker counts, in that order
//! (`1,2,3,1,2,3` interleaves repeated runs; each run is its own cluster);
//! `SLUICE_BENCH_BIN`
//! another build of the binary; `TMPDIR=/dev/shm` puts the nats-server's
//! store (and the workers') in memory, where fsync costs nothing.
//!
//! Batches of 50 by default: with NATS fsyncing every write on this
//! machine's disk (about 3 ms each), a request of 500 events could take
//! longer than the workers' 5 s NATS request timeout (answered 503).
//!
//! Bounded: every wait has a deadline (the processing and restore waits
//! scale with the events, at most 30 minutes); the processes are SIGKILLed
//! and reaped on drop, and their temporary directories removed.

#[path = "support/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "../../tests/support/nats.rs"]
mod nats;

use load::{copy, cpu_seconds, receiver, shop_events, Conn};

#[path = "../../tests/support/port.rs"]
mod port;
use port::free_port;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::cluster::lease::Lease;

const TOKEN: &str = "bench";

/// A GET on a fresh connection: the status and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// What every worker of a bench cluster is started with.
struct Setup {
    dir: PathBuf,
    url: String,
    prefix: String,
    partitions: u32,
    /// `SLUICE_LOG` of the workers.
    log: &'static str,
    tmp: PathBuf,
}

/// One `sluice run --cluster` process, SIGKILLed and reaped on drop.
struct Worker {
    child: Child,
    port: u16,
    log: PathBuf,
    /// The `HOSTNAME` it was started with: its member id is
    /// `<HOSTNAME>-<pid>-<random>`.
    host: String,
}

impl Worker {
    fn start(setup: &Setup, name: &str) -> Worker {
        let port = free_port();
        let bin = std::env::var("SLUICE_BENCH_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").to_owned());
        let log = setup.tmp.join(format!("{}-{name}.log", setup.prefix));
        let host = format!("{}-{name}", setup.prefix);
        let stderr = std::fs::File::create(&log).expect("a worker's log file");
        let child = Command::new(bin)
            .arg("run")
            .arg(&setup.dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--store")
            .arg(setup.tmp.join(format!("{}-{name}", setup.prefix)))
            .arg("--cluster")
            .arg(&setup.url)
            .arg("--cluster-name")
            .arg(&setup.prefix)
            .arg("--partitions")
            .arg(setup.partitions.to_string())
            .env("SLUICE_INGEST_TOKEN", TOKEN)
            .env("SLUICE_ADMIN_TOKEN", "bench-admin")
            .env("SHOP_WEBHOOK_SECRET", "bench-secret")
            .env("SLUICE_LOG", setup.log)
            .env("HOSTNAME", &host)
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start sluice run --cluster");
        let mut w = Worker {
            child,
            port,
            log,
            host,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(w.port, "/readyz").map(|(s, _)| s) != Some(200) {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!(
                    "a worker exited ({status}) before it was ready:\n{}",
                    w.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "a worker was not ready within 60 s:\n{}",
                w.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        w
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        get(self.port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Whether `member` (a members-bucket id or a lease's holder) is this
    /// process.
    fn is(&self, member: &str) -> bool {
        member
            .strip_prefix(&format!("{}-{}-", self.host, self.child.id()))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('-'))
    }

    /// What this worker reports owning (one `sluice_consumer_lag_events`
    /// series per partition it owns and has restored, set after each of
    /// its rounds), the `sluice_partitions_owned` gauge and how many
    /// partition restores it has made; `None` if it does not answer.
    fn ownership(&self) -> Option<(Vec<u32>, u64, u64)> {
        let (status, text) = get(self.port, "/metrics")?;
        if status != 200 {
            return None;
        }
        let mut lagging: Vec<u32> = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("sluice_consumer_lag_events{partition=\"")?
                    .split_once('"')?
                    .0
                    .parse()
                    .ok()
            })
            .collect();
        lagging.sort_unstable();
        let owned = sample(&text, "sluice_partitions_owned")? as u64;
        let restores =
            sample(&text, "sluice_partition_restore_seconds_count").unwrap_or(0.0) as u64;
        Some((lagging, owned, restores))
    }

    fn cpu(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A sample's value in Prometheus text (`name` with its labels, if any).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The bench's own view of a cluster through NATS: the checkpoints, the
/// end of each partition's event log, the leases and the live members.
struct View {
    rt: tokio::runtime::Runtime,
    js: async_nats::jetstream::Context,
    /// The same cluster as the workers see it (its members listed the way
    /// their rounds list them). Connected once the workers created it.
    cluster: engine::cluster::Cluster,
    prefix: String,
    partitions: u32,
}

impl View {
    fn connect(url: &str, prefix: &str, partitions: u32) -> View {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let client = rt
            .block_on(async_nats::connect(url))
            .expect("connect to nats-server");
        let js = {
            let _inside = rt.enter();
            async_nats::jetstream::new(client)
        };
        let cluster = rt
            .block_on(engine::cluster::Cluster::connect(
                engine::cluster::Settings::new(url, prefix),
            ))
            .expect("connect to the cluster");
        View {
            rt,
            js,
            cluster,
            prefix: prefix.to_owned(),
            partitions,
        }
    }

    /// Every partition's checkpoint (the last applied event's sequence; 0
    /// for none yet).
    fn checkpoints(&self) -> Vec<u64> {
        self.claims().into_iter().map(|(seq, _)| seq).collect()
    }

    /// Every partition's checkpoint record: (sequence, fencing token of
    /// the owner that claimed or advanced it); (0, 0) for none yet.
    fn claims(&self) -> Vec<(u64, u64)> {
        self.rt.block_on(async {
            let Ok(kv) = self
                .js
                .get_key_value(format!("{}_checkpoints", self.prefix))
                .await
            else {
                return vec![(0, 0); self.partitions as usize];
            };
            let mut out = Vec::new();
            for p in 0..self.partitions {
                let claim = match kv.get(format!("p{p}")).await {
                    Ok(Some(v)) => serde_json::from_slice::<serde_json::Value>(&v)
                        .ok()
                        .map(|v| {
                            (
                                v["seq"].as_u64().unwrap_or(0),
                                v["token"].as_u64().unwrap_or(0),
                            )
                        })
                        .unwrap_or((0, 0)),
                    _ => (0, 0),
                };
                out.push(claim);
            }
            out
        })
    }

    /// Who holds each partition's lease now (the holder's member id);
    /// `None` for a partition without a live lease (never taken, released,
    /// or aged out).
    fn holders(&self) -> Result<Vec<Option<String>>, String> {
        self.rt.block_on(async {
            let kv = self
                .js
                .get_key_value(format!("{}_leases", self.prefix))
                .await
                .map_err(|e| format!("cannot open the leases bucket: {e}"))?;
            let mut out = Vec::new();
            for p in 0..self.partitions {
                let holder = kv
                    .get(format!("p{p}"))
                    .await
                    .map_err(|e| format!("cannot read partition {p}'s lease: {e}"))?
                    .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                    .and_then(|v| v["owner"].as_str().map(str::to_owned));
                out.push(holder);
            }
            Ok(out)
        })
    }

    /// The live members (heartbeats younger than the lease TTL), as the
    /// workers' rounds list them.
    fn members(&self) -> Result<Vec<String>, String> {
        self.rt
            .block_on(engine::cluster::members::live(&self.cluster))
            .map_err(|e| format!("cannot list the members: {e}"))
    }

    /// Every partition's last event sequence in the log (0: none). The
    /// owners purge the events at or before their checkpoints, so a
    /// partition whose last message is gone has its checkpoint as its end:
    /// the checkpoint is read after the message, and a purged message was
    /// at or before a checkpoint committed by then.
    fn ends(&self) -> Vec<u64> {
        let last: Vec<u64> = self.rt.block_on(async {
            let stream = self
                .js
                .get_stream(format!("{}_EV", self.prefix))
                .await
                .expect("the event stream");
            let mut out = Vec::new();
            for p in 0..self.partitions {
                let last = stream
                    .get_last_raw_message_by_subject(&format!("{}.ev.{p}", self.prefix))
                    .await
                    .map(|m| m.sequence)
                    .unwrap_or(0);
                out.push(last);
            }
            out
        });
        last.into_iter()
            .zip(self.checkpoints())
            .map(|(last, checkpoint)| last.max(checkpoint))
            .collect()
    }

    /// Waits until every partition's checkpoint reached `ends`; the time
    /// it took, or `None` past `limit`.
    fn wait_caught_up(&self, ends: &[u64], began: Instant, limit: Duration) -> Option<Duration> {
        loop {
            let cps = self.checkpoints();
            if cps.iter().zip(ends).all(|(c, e)| c >= e) {
                return Some(began.elapsed());
            }
            if began.elapsed() > limit {
                let behind: u64 = ends
                    .iter()
                    .zip(&cps)
                    .map(|(e, c)| e.saturating_sub(*c))
                    .sum();
                println!("    (gave up after {limit:?}: checkpoints {behind} sequences behind)");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Posts every line of `lines` in batches of `batch` over `clients`
/// connections spread over `ports`, re-sending a refused batch (at most 50
/// times); the events acknowledged.
fn post_all(ports: &[u16], lines: &Arc<Vec<Vec<u8>>>, clients: usize, batch: usize) -> u64 {
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (lines, next, accepted) =
                (Arc::clone(lines), Arc::clone(&next), Arc::clone(&accepted));
            let port = ports[i % ports.len()];
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                loop {
                    let from = next.fetch_add(batch, Ordering::Relaxed);
                    if from >= lines.len() {
                        return;
                    }
                    let to = (from + batch).min(lines.len());
                    let body: Vec<u8> = lines[from..to].concat();
                    for _ in 0..50 {
                        let status = c.as_mut().and_then(|c| c.post("/v1/events", TOKEN, &body));
                        if status == Some(202) {
                            accepted.fetch_add((to - from) as u64, Ordering::Relaxed);
                            break;
                        }
                        if status.is_none() {
                            c = Conn::open(port);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    accepted.load(Ordering::SeqCst)
}

/// What [`post_for`] saw.
struct Posted {
    accepted: u64,
    refused: u64,
    /// The slowest request, answered or not (the client gives up after
    /// 30 s), and the requests that took longer than 5 s (the workers'
    /// NATS request timeout).
    slowest: Duration,
    slow: u64,
}

/// Posts batches of `lines` for `seconds` as fast as they are
/// acknowledged.
fn post_for(
    ports: &[u16],
    lines: &Arc<Vec<Vec<u8>>>,
    clients: usize,
    batch: usize,
    seconds: u64,
) -> Posted {
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let slow = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (lines, next, accepted, refused, stop) = (
                Arc::clone(lines),
                Arc::clone(&next),
                Arc::clone(&accepted),
                Arc::clone(&refused),
                Arc::clone(&stop),
            );
            let (slowest, slow) = (Arc::clone(&slowest), Arc::clone(&slow));
            let port = ports[i % ports.len()];
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                while !stop.load(Ordering::Relaxed) {
                    let from = next.fetch_add(batch, Ordering::Relaxed) % lines.len();
                    let to = (from + batch).min(lines.len());
                    let body: Vec<u8> = lines[from..to].concat();
                    let sent = Instant::now();
                    let status = c.as_mut().and_then(|c| c.post("/v1/events", TOKEN, &body));
                    let took = sent.elapsed();
                    slowest.fetch_max(
                        u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                    if took > Duration::from_secs(5) {
                        slow.fetch_add(1, Ordering::Relaxed);
                    }
                    match status {
                        Some(202) => {
                            accepted.fetch_add((to - from) as u64, Ordering::Relaxed);
                        }
                        status => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            if status.is_none() {
                                c = Conn::open(port);
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    Posted {
        accepted: accepted.load(Ordering::SeqCst),
        refused: refused.load(Ordering::SeqCst),
        slowest: Duration::from_micros(slowest.load(Ordering::SeqCst)),
        slow: slow.load(Ordering::SeqCst),
    }
}

/// The load average, for the record.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn worker_counts() -> Vec<usize> {
    std::env::var("SLUICE_BENCH_WORKERS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .filter(|n| *n > 0)
                .collect()
        })
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 2, 3])
}

/// Ingest with each worker count; the events/s of each.
fn ingest(nats: &nats::Nats, tmp: &Path, dir: &Path, seconds: u64, clients: usize, batch: usize) {
    let lines = Arc::new(shop_events(100_000, 1_000_000));
    let mut one = None;
    for (run, n) in worker_counts().into_iter().enumerate() {
        let setup = Setup {
            dir: dir.to_owned(),
            url: nats.url(),
            prefix: format!("ing{n}-{run}"),
            partitions: 64,
            log: "warn,sluice::cluster=info",
            tmp: tmp.to_owned(),
        };
        let workers: Vec<Worker> = (0..n)
            .map(|i| Worker::start(&setup, &format!("w{i}")))
            .collect();
        // Measured on a settled cluster: the partitions spread, restored.
        let view = View::connect(&nats.url(), &setup.prefix, setup.partitions);
        wait_settled(
            &view,
            &workers,
            Duration::from_secs(2),
            Duration::from_secs(120),
        );
        let ports: Vec<u16> = workers.iter().map(|w| w.port).collect();
        let cpu_before: f64 = workers.iter().map(Worker::cpu).sum();
        let load_before = load();
        let began = Instant::now();
        let Posted {
            accepted,
            refused,
            slowest,
            slow,
        } = post_for(&ports, &lines, clients, batch, seconds);
        let took = began.elapsed().as_secs_f64();
        let cpu: f64 = workers.iter().map(Worker::cpu).sum::<f64>() - cpu_before;
        let rate = accepted as f64 / took;
        let per = rate / n as f64;
        let base = *one.get_or_insert(per);
        println!(
            "ingest   workers={n}  {rate:>7.0} events/s acknowledged ({accepted} in {took:.1} s, \
             {clients} clients x {batch} events, {refused} requests refused, slowest {:.1} s, {slow} over 5 s)  \
             per worker {per:>6.0}  \
             efficiency {:>3.0}%  workers' CPU {:.0} µs/event  load {load_before} -> {}",
            slowest.as_secs_f64(),
            100.0 * per / base,
            cpu * 1e6 / accepted.max(1) as f64,
            load()
        );
    }
}

/// Every partition's lease, held by the bench (renewed in the background)
/// so that the workers take in a backlog without processing it.
struct Hold {
    rt: tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Lease>>,
}

impl Hold {
    fn take(url: &str, prefix: &str, partitions: u32) -> Hold {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let settings = engine::cluster::Settings::new(url, prefix);
        let cluster = rt
            .block_on(engine::cluster::Cluster::connect(settings))
            .expect("connect the holder");
        let mut leases: Vec<Lease> = (0..partitions)
            .map(|p| {
                rt.block_on(Lease::acquire(&cluster, p, "bench-holder"))
                    .expect("take a lease")
                    .expect("a free lease")
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = rt.spawn(async move {
            while !flag.load(Ordering::SeqCst) {
                for l in &mut leases {
                    if tokio::time::Instant::now() >= l.renew_at() {
                        l.renew().await.expect("renew a held lease");
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            leases
        });
        Hold { rt, stop, task }
    }

    /// Gives every lease back at once (purged: the workers take them at
    /// their next round).
    fn release(self) {
        self.stop.store(true, Ordering::SeqCst);
        let leases = self.rt.block_on(self.task).expect("the renewal task");
        self.rt.block_on(async {
            for l in leases {
                l.release().await.expect("release a lease");
            }
        });
    }
}

/// Drains a backlog with each worker count; the events/s of each.
fn process(nats: &nats::Nats, tmp: &Path, dir: &Path, backlog: u64) {
    let lines = Arc::new(shop_events(backlog.div_ceil(10).max(1), backlog));
    let mut one = None;
    for (run, n) in worker_counts().into_iter().enumerate() {
        let prefix = format!("proc{n}-{run}");
        let partitions = 64;
        let hold = Hold::take(&nats.url(), &prefix, partitions);
        let setup = Setup {
            dir: dir.to_owned(),
            url: nats.url(),
            prefix: prefix.clone(),
            partitions,
            log: "warn,sluice::cluster=info",
            tmp: tmp.to_owned(),
        };
        let workers: Vec<Worker> = (0..n)
            .map(|i| Worker::start(&setup, &format!("w{i}")))
            .collect();
        let ports: Vec<u16> = workers.iter().map(|w| w.port).collect();
        let posted = Instant::now();
        let accepted = post_all(&ports, &lines, 8, 500);
        let posting = posted.elapsed().as_secs_f64();
        let view = View::connect(&nats.url(), &prefix, partitions);
        let ends = view.ends();
        let busy = ends.iter().filter(|e| **e > 0).count();
        let cpu_before: f64 = workers.iter().map(Worker::cpu).sum();
        let load_before = load();
        let began = Instant::now();
        hold.release();
        let limit = Duration::from_secs((backlog / 20).clamp(60, 1800));
        let Some(took) = view.wait_caught_up(&ends, began, limit) else {
            println!("process  workers={n}  did not catch up");
            continue;
        };
        let took = took.as_secs_f64();
        let cpu: f64 = workers.iter().map(Worker::cpu).sum::<f64>() - cpu_before;
        let owned: Vec<String> = workers
            .iter()
            .map(|w| {
                sample(&w.metrics(), "sluice_partitions_owned")
                    .map_or("?".into(), |v| format!("{v:.0}"))
            })
            .collect();
        let lost: f64 = workers
            .iter()
            .filter_map(|w| sample(&w.metrics(), "sluice_lease_lost_total"))
            .sum();
        let rate = accepted as f64 / took;
        let per = rate / n as f64;
        let base = *one.get_or_insert(per);
        println!(
            "process  workers={n}  {rate:>7.0} events/s ({accepted} events in {took:.1} s, {busy} \
             partitions with events; posted in {posting:.1} s)  per worker {per:>6.0}  efficiency \
             {:>3.0}%  partitions owned {}  leases lost {lost:.0}  workers' CPU {:.0} µs/event  load {load_before} -> {}",
            100.0 * per / base,
            owned.join("/"),
            cpu * 1e6 / accepted.max(1) as f64,
            load()
        );
    }
}

/// `count` users that all belong to partition `p` of `partitions`.
fn users_of(p: u32, partitions: u32, count: usize) -> Vec<String> {
    (0u64..)
        .map(|n| format!("r{n}"))
        .filter(|u| engine::hash::partition_of(u, partitions) == p)
        .take(count)
        .collect()
}

fn identify(user: &str, ts: &str, extra: &str) -> Vec<u8> {
    format!(
        "{{\"type\":\"identify\",\"user\":\"{user}\",\"ts\":\"{ts}\",\"traits\":{{\"email\":\"{user}@example.com\",\
         \"first_name\":\"R\",\"country\":\"DE\",\"timezone\":\"Europe/Berlin\",\"plan\":\"free\"{extra}}}}}\n"
    )
    .into_bytes()
}

/// The wall clock (a load generator's events are stamped now, as a client's
/// would be; the engine's Clock is not in play here).
#[allow(clippy::disallowed_methods)]
fn now_ts() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// The value after `name=` on a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..].split_whitespace().next()
}

/// One reading of a settled cluster: each partition's owner (an index
/// into the workers), the fencing token its checkpoint carries, and each
/// worker's restore count. Equal readings over a while mean no partition
/// changed hands and no restore finished in between.
#[derive(Debug, PartialEq, Eq)]
struct Spread {
    owners: Vec<usize>,
    tokens: Vec<u64>,
    restores: Vec<u64>,
}

/// Reads the cluster once; `Err` says why it is not settled: a member that
/// is not a running worker (a dead one's heartbeat not aged out yet), a
/// partition without a live lease or leased by a process that is gone, a
/// lease held by another member than rendezvous hashing over the live
/// members names (a handover due), or a worker holding a lease it does not
/// report owning (a restore or a handover in progress).
fn spread(view: &View, workers: &[Worker]) -> Result<Spread, String> {
    let members = view.members()?;
    for (i, w) in workers.iter().enumerate() {
        let n = members.iter().filter(|m| w.is(m)).count();
        if n != 1 {
            return Err(format!(
                "worker {i} is listed {n} times among the members {members:?}"
            ));
        }
    }
    if members.len() != workers.len() {
        return Err(format!(
            "{} members for {} running workers (a dead worker's heartbeat has not aged out): {members:?}",
            members.len(),
            workers.len()
        ));
    }
    let holders = view.holders()?;
    let mut owners = Vec::new();
    for (p, holder) in (0u32..).zip(&holders) {
        let Some(holder) = holder else {
            return Err(format!("partition {p} has no live lease"));
        };
        let Some(i) = workers.iter().position(|w| w.is(holder)) else {
            return Err(format!(
                "partition {p}'s lease is held by {holder}, not a running worker"
            ));
        };
        let due = engine::cluster::members::owner(p, &members);
        if due != Some(holder.as_str()) {
            return Err(format!(
                "partition {p} is held by worker {i} but rendezvous hashing gives it to {due:?} (a handover is due)"
            ));
        }
        owners.push(i);
    }
    let mut restores = Vec::new();
    for (i, w) in workers.iter().enumerate() {
        let Some((reported, gauge, restored)) = w.ownership() else {
            return Err(format!("worker {i} does not answer /metrics"));
        };
        let leased: Vec<u32> = (0u32..)
            .zip(&owners)
            .filter(|(_, o)| **o == i)
            .map(|(p, _)| p)
            .collect();
        if reported != leased || gauge != leased.len() as u64 {
            return Err(format!(
                "worker {i} holds the leases of {leased:?} but reports owning {reported:?} \
                 (sluice_partitions_owned {gauge}): a restore or handover is in progress"
            ));
        }
        restores.push(restored);
    }
    let tokens = view.claims().into_iter().map(|(_, token)| token).collect();
    Ok(Spread {
        owners,
        tokens,
        restores,
    })
}

/// Waits until the whole cluster is settled: every partition has exactly
/// one owner, the one rendezvous hashing names among the running workers,
/// each worker reports exactly the partitions it holds the leases of (no
/// restore in progress), and nothing of that changes for `stable`. The
/// settled spread and when it was first seen; panics past `limit` with the
/// last reason it was not settled.
fn wait_settled(
    view: &View,
    workers: &[Worker],
    stable: Duration,
    limit: Duration,
) -> (Spread, Instant) {
    let began = Instant::now();
    let mut since: Option<(Spread, Instant)> = None;
    loop {
        let reason = match spread(view, workers) {
            Ok(now) => match since.take() {
                Some((was, at)) if was == now => {
                    if at.elapsed() >= stable {
                        return (now, at);
                    }
                    since = Some((was, at));
                    None
                }
                Some((was, _)) => {
                    let reason = format!("the spread changed: {was:?} -> {now:?}");
                    since = Some((now, Instant::now()));
                    Some(reason)
                }
                None => {
                    since = Some((now, Instant::now()));
                    None
                }
            },
            Err(reason) => {
                since = None;
                Some(reason)
            }
        };
        if began.elapsed() > limit {
            panic!(
                "the cluster did not settle within {limit:?} (every partition owned once, by the \
                 member rendezvous hashing names, no restore in progress, stable for {stable:?}); \
                 last: {}",
                reason.unwrap_or_else(|| "settled, but not yet for long enough".into())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Restores a partition of `users` users after its owner is SIGKILLed,
/// `kills` times.
fn restore(nats: &nats::Nats, tmp: &Path, dir: &Path, users: usize, kills: usize) {
    const P: u32 = 8;
    let prefix = "rst".to_owned();
    let setup = Setup {
        dir: dir.to_owned(),
        url: nats.url(),
        prefix: prefix.clone(),
        partitions: P,
        log: "error,sluice::cluster=info",
        tmp: tmp.to_owned(),
    };
    let mut workers: Vec<Worker> = (0..2)
        .map(|i| Worker::start(&setup, &format!("w{i}")))
        .collect();
    let view = View::connect(&nats.url(), &prefix, P);
    let ts = now_ts();
    let ids = users_of(0, P, users);
    let lines = Arc::new(ids.iter().map(|u| identify(u, &ts, "")).collect::<Vec<_>>());
    let ports: Vec<u16> = workers.iter().map(|w| w.port).collect();
    let began = Instant::now();
    let accepted = post_all(&ports, &lines, 8, 500);
    let posting = began.elapsed().as_secs_f64();
    let ends = view.ends();
    let limit = Duration::from_secs((users as u64 / 20).clamp(120, 1800));
    let Some(took) = view.wait_caught_up(&ends, began, limit) else {
        println!("restore: the {users} users were not processed within {limit:?}");
        return;
    };
    println!(
        "restore  setup: {accepted} users of partition 0 (of {P}) posted in {posting:.1} s ({:.0} events/s), \
         processed {:.1} s after the first post; load {}",
        accepted as f64 / posting,
        took.as_secs_f64(),
        load()
    );
    let lag0 = "sluice_consumer_lag_events{partition=\"0\"}";
    for k in 0..kills {
        // Wait until the whole cluster is settled (no kill in the middle of
        // a rebalance or a restore) and partition 0 has nothing to do.
        let waiting = Instant::now();
        let deadline = waiting + Duration::from_secs(180);
        let settled = loop {
            let (settled, _) = wait_settled(
                &view,
                &workers,
                Duration::from_secs(2),
                Duration::from_secs(180),
            );
            let caught_up = view.checkpoints()[0] >= view.ends()[0];
            // Still the same spread once partition 0 is seen caught up.
            if caught_up && spread(&view, &workers).as_ref() == Ok(&settled) {
                break settled;
            }
            assert!(
                Instant::now() < deadline,
                "partition 0 did not catch up on a settled cluster within 180 s"
            );
        };
        let owner = settled.owners[0];
        println!(
            "restore  kill {}: waited {:.1} s for a settled cluster (partitions per worker {:?}, \
             unchanged for 2 s)",
            k + 1,
            waiting.elapsed().as_secs_f64(),
            (0..workers.len())
                .map(|i| settled.owners.iter().filter(|o| **o == i).count())
                .collect::<Vec<_>>()
        );
        let survivor = 1 - owner;
        let text = workers[survivor].metrics();
        let sum_before = sample(&text, "sluice_partition_restore_seconds_sum").unwrap_or(0.0);
        let count_before = sample(&text, "sluice_partition_restore_seconds_count").unwrap_or(0.0);
        let lost_before = sample(&text, "sluice_lease_lost_total").unwrap_or(0.0);
        let log_before = workers[survivor].log_text().len();
        let load_before = load();
        let killed = Instant::now();
        workers[owner].kill();
        // An event for the partition, taken in by the survivor while the
        // partition has no owner.
        let probe = identify(&ids[0], &now_ts(), &format!(",\"probe\":{k}"));
        let mut c = Conn::open(workers[survivor].port).expect("connect to the survivor");
        let sent = Instant::now();
        assert_eq!(
            c.post("/v1/events", TOKEN, &probe),
            Some(202),
            "the probe event"
        );
        let probe_took = sent.elapsed();
        let probe_seq = view.ends()[0];
        let deadline = killed + Duration::from_secs(300);
        let mut taken = None;
        let processing = loop {
            if taken.is_none() && sample(&workers[survivor].metrics(), lag0).is_some() {
                taken = Some(killed.elapsed());
            }
            if view.checkpoints()[0] >= probe_seq {
                break killed.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "partition 0 was not processing again 300 s after the kill"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let taken = taken.unwrap_or(processing);
        // The survivor alone, settled: it owns every partition.
        let (_, alone) = wait_settled(
            &view,
            std::slice::from_ref(&workers[survivor]),
            Duration::from_secs(2),
            Duration::from_secs(300),
        );
        let whole = alone.saturating_duration_since(killed);
        let text = workers[survivor].metrics();
        let lost = sample(&text, "sluice_lease_lost_total").unwrap_or(0.0) - lost_before;
        let sum = sample(&text, "sluice_partition_restore_seconds_sum").unwrap_or(0.0) - sum_before;
        let count =
            sample(&text, "sluice_partition_restore_seconds_count").unwrap_or(0.0) - count_before;
        let log = workers[survivor].log_text();
        let line = log.get(log_before..).unwrap_or("").lines().find(|l| {
            l.contains("sluice::cluster: partition taken") && field(l, "partition") == Some("0")
        });
        let (records, load_ms) = line
            .map(|l| {
                (
                    field(l, "records").unwrap_or("?").to_owned(),
                    field(l, "took_ms").unwrap_or("?").to_owned(),
                )
            })
            .unwrap_or(("?".into(), "?".into()));
        println!(
            "restore  kill {}: {users} users in partition 0: survivor's sluice_partition_restore_seconds \
             +{sum:.2} s over {count:.0} partitions taken (partition 0: {records} changelog records, \
             loaded and engine opened in {load_ms} ms), leases lost {lost:.0}; wall time from SIGKILL: \
             partition 0 owned again {:.2} s, an event posted after the kill checkpointed {:.2} s, \
             all {P} partitions owned by the survivor and settled {:.2} s (the probe's POST took {:.2} s: \
             the times before are watched only once it is answered); load {load_before} -> {}",
            k + 1,
            taken.as_secs_f64(),
            processing.as_secs_f64(),
            whole.as_secs_f64(),
            probe_took.as_secs_f64(),
            load()
        );
        // A fresh worker in the victim's place.
        workers[owner] = Worker::start(&setup, &format!("w{}", 2 + k));
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (mode, rest) = match args.first().map(String::as_str) {
        Some(m @ ("ingest" | "process" | "restore" | "all")) => (m, &args[1..]),
        _ => ("all", &args[..]),
    };
    let num = |i: usize, default: u64| -> u64 {
        rest.get(i)
            .map(|a| {
                a.parse()
                    .unwrap_or_else(|_| panic!("not a whole number: {a:?}"))
            })
            .unwrap_or(default)
    };
    let tmp = tempfile::tempdir().expect("tmp");
    // SLUICE_BENCH_KEEP=1 keeps the workers' logs (and stores) for a look.
    let keep = std::env::var_os("SLUICE_BENCH_KEEP").is_some();
    let hook = receiver(Arc::new(|_| {}));
    let dir = tmp.path().join("shop");
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop"),
        &dir,
        hook,
    );
    let nats = nats::Nats::single();
    println!(
        "cluster_run: one nats-server (sync_interval: always, store under {}), load {}",
        std::env::temp_dir().display(),
        load()
    );
    match mode {
        "ingest" => ingest(
            &nats,
            tmp.path(),
            &dir,
            num(0, 10),
            num(1, 8) as usize,
            num(2, 50) as usize,
        ),
        "process" => process(&nats, tmp.path(), &dir, num(0, 5_000)),
        "restore" => restore(
            &nats,
            tmp.path(),
            &dir,
            num(0, 100_000) as usize,
            num(1, 2) as usize,
        ),
        _ => {
            ingest(&nats, tmp.path(), &dir, num(0, 10), 8, 50);
            process(&nats, tmp.path(), &dir, num(1, 5_000));
            restore(
                &nats,
                tmp.path(),
                &dir,
                num(2, 100_000) as usize,
                num(3, 2) as usize,
            );
        }
    }
    if keep {
        println!(
            "kept the workers' logs and stores in {}",
            tmp.keep().display()
        );
    }
}
