//! Load generator for `sluice run` (issue 9): starts the real binary on a
//! copy of a config repository (its webhook URLs pointed at a receiver in
//! this process, so nothing leaves the machine) and measures over loopback
//! only. Three modes:
//!
//! - default, `-- [SECONDS CLIENTS BATCH]` (10 8 500), on the example shop:
//!   1. sustained durable ingest: C clients post batches of B events (JSON
//!      lines from `shopgen`, the shop's journeys live) as fast as the
//!      server acknowledges them (every 202 is fsynced), for S seconds;
//!   2. acknowledgement latency at a fixed 10,000 events/s (100-event
//!      batches, 100 requests/s): p50, p99, max;
//!   3. the server's peak resident memory.
//! - `-- latency [SECONDS RATE]` (30 1000), on `benches/fixtures/ping`
//!   (one journey: on `ping`, send a webhook at once): one event per
//!   request, paced at RATE events/s over many keep-alive connections for
//!   3 s of warm-up then SECONDS. Each event carries its stamp (`sent_us`,
//!   microseconds since the bench started, taken just before the request is
//!   written); the webhook body carries it back, and the receiver computes
//!   event-to-webhook latency when it has read the request: p50, p90, p99,
//!   max, with the acknowledgement latency of the same posts beside it.
//! - `-- soak [SECONDS RATE]` (600 5000), on the example shop: RATE events/s
//!   of `shopgen` events in 100-event batches (deliveries to the maildir,
//!   the push file and the local CRM receiver), the server's resident memory
//!   (`VmRSS` from `/proc`) sampled every 10 s and printed with the timers
//!   pending (`/metrics`) and the store's size; after the first minute of
//!   warm-up: min, max, max/min (and, for 1,200 s or more, the same over
//!   the last 600 s alone). `-- soak SECONDS RATE ping` posts the
//!   latency fixture's pings instead (each a new user and one immediate
//!   webhook, nothing deferred): a steady state, where the shop's throttles
//!   (1,000 emails a minute) make the backlog grow all along.
//!
//! ```sh
//! cargo bench -p sluice --bench ingest                       # -- 10 8 500
//! cargo bench -p sluice --bench ingest -- latency 30 1000
//! cargo bench -p sluice --bench ingest -- soak 600 5000
//! cargo bench -p sluice --bench ingest -- soak 600 1000 ping
//! ```
//!
//! Bounded in count and time: every phase stops after its seconds (plus at
//! most 30 s waiting for outstanding webhooks), then the server is killed
//! and its temporary directory removed.

#[path = "support/load.rs"]
mod load;

use load::{copy, cpu_seconds, receiver, shop_events, Conn, OnRequest};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `/proc/{pid}/status` figure in kB (`VmRSS`, `VmHWM`) as MB.
fn proc_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn peak_rss_mb(pid: u32) -> f64 {
    proc_mb(pid, "VmHWM:").unwrap_or(f64::NAN)
}

/// Bytes of the files below `path`.
fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// `sluice run` on a directory, killed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        // `SLUICE_BENCH_BIN` runs another build of the binary (one with the
        // system allocator, say); `SLUICE_BENCH_WRAP` a command before it
        // (`heaptrack -o /tmp/ht`): the RSS figures are then the wrapper's.
        let bin = std::env::var("SLUICE_BENCH_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sluice").to_owned());
        let wrap = std::env::var("SLUICE_BENCH_WRAP").unwrap_or_default();
        let mut wrap = wrap.split_whitespace();
        let mut command = match wrap.next() {
            Some(first) => {
                let mut c = Command::new(first);
                c.args(wrap).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = command
            .arg("run")
            .arg(dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("SLUICE_INGEST_TOKEN", "bench")
            .env("SLUICE_ADMIN_TOKEN", "bench-admin")
            .env("SHOP_WEBHOOK_SECRET", "bench-secret")
            .env("PING_WEBHOOK_SECRET", "bench-secret")
            .env("SLUICE_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sluice run");
        let mut server = Server {
            child,
            port,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "sluice run did not start");
            assert!(
                server.child.try_wait().ok().flatten().is_none(),
                "sluice run exited"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example shop copied into `tmp`, its CRM pointed at `hook`.
fn shop(tmp: &Path, hook: u16) -> PathBuf {
    let dir = tmp.join("shop");
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop"),
        &dir,
        hook,
    );
    dir
}

/// Sorted samples and their quantiles.
struct Quantiles(Vec<f64>);

impl Quantiles {
    fn new(mut v: Vec<f64>) -> Quantiles {
        v.sort_by(|a, b| a.total_cmp(b));
        Quantiles(v)
    }

    fn q(&self, p: f64) -> f64 {
        let i = ((self.0.len() as f64 * p) as usize).min(self.0.len().saturating_sub(1));
        self.0.get(i).copied().unwrap_or(f64::NAN)
    }

    fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

fn take(m: &Mutex<Vec<f64>>) -> Vec<f64> {
    m.lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let num = |i: usize, default: u64| -> u64 {
        args.get(i)
            .map(|a| {
                a.parse()
                    .unwrap_or_else(|_| panic!("not a whole number: {a:?}"))
            })
            .unwrap_or(default)
    };
    match args.first().map(String::as_str) {
        Some("latency") => latency(num(1, 30), num(2, 1000)),
        Some("soak") => soak(
            num(1, 600),
            num(2, 5000),
            args.get(3).map(String::as_str) == Some("ping"),
        ),
        _ => throughput(num(0, 10), num(1, 8) as usize, num(2, 500) as usize),
    }
}

/// Sustained ingest, then acknowledgement latency at 10,000 events/s.
fn throughput(seconds: u64, clients: usize, batch: usize) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = shop(tmp.path(), receiver(Arc::new(|_| {})));
    let lines = Arc::new(shop_events(200_000, 2_000_000));
    let server = Server::start(&dir);
    let (port, pid) = (server.port, server.pid());
    let next = Arc::new(AtomicUsize::new(0));

    // 1. Sustained durable ingest.
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = cpu_seconds(pid);
    let began = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (lines, next, accepted, stop) = (
                Arc::clone(&lines),
                Arc::clone(&next),
                Arc::clone(&accepted),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                let Some(mut c) = Conn::open(port) else {
                    return;
                };
                while !stop.load(Ordering::Relaxed) {
                    let from = next.fetch_add(batch, Ordering::Relaxed) % lines.len();
                    let to = (from + batch).min(lines.len());
                    let body: Vec<u8> = lines[from..to].concat();
                    if c.post("/v1/events", "bench", &body) == Some(202) {
                        accepted.fetch_add((to - from) as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        let _ = w.join();
    }
    let secs = began.elapsed().as_secs_f64();
    let n = accepted.load(Ordering::SeqCst);
    println!(
        "sustained durable ingest: {:.0} events/s ({n} events in {secs:.1} s, {clients} clients, {batch} per request)",
        n as f64 / secs
    );
    let cpu = cpu_seconds(pid) - cpu_before;
    println!(
        "server CPU: {cpu:.1} s in {secs:.1} s ({:.1} µs per event)",
        cpu * 1e6 / n.max(1) as f64
    );

    // 2. Latency at 10,000 events/s: 100 requests/s of 100 events.
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let began = Instant::now();
    let pacers: Vec<_> = (0..4)
        .map(|i| {
            let (lines, next, latencies) = (
                Arc::clone(&lines),
                Arc::clone(&next),
                Arc::clone(&latencies),
            );
            std::thread::spawn(move || {
                let Some(mut c) = Conn::open(port) else {
                    return;
                };
                let period = Duration::from_millis(40);
                let mut at = Instant::now() + Duration::from_millis(10 * i);
                while at < began + Duration::from_secs(seconds) {
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let from = next.fetch_add(100, Ordering::Relaxed) % lines.len();
                    let to = (from + 100).min(lines.len());
                    let body: Vec<u8> = lines[from..to].concat();
                    let t = Instant::now();
                    if c.post("/v1/events", "bench", &body) == Some(202) {
                        if let Ok(mut l) = latencies.lock() {
                            l.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    at += period;
                }
            })
        })
        .collect();
    for p in pacers {
        let _ = p.join();
    }
    let l = Quantiles::new(take(&latencies));
    println!(
        "acknowledgement latency at 10,000 events/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} requests)",
        l.q(0.5),
        l.q(0.99),
        l.max(),
        l.len()
    );
    println!("server peak RSS: {:.0} MB", peak_rss_mb(pid));
    drop(server);
}

/// What the latency receiver has seen.
#[derive(Default)]
struct Arrivals {
    /// Each webhook's stamp (µs since `base`) and event-to-webhook
    /// latency (ms).
    stamped: Vec<(u64, f64)>,
    /// Sequence numbers seen (duplicates: same seq twice).
    seen: std::collections::HashSet<u64>,
    duplicates: u64,
    /// Bodies without a readable stamp.
    unreadable: u64,
}

/// Now, as an event's `ts`: the server runs on the wall clock, and a ping
/// stamped now is due now.
#[allow(
    clippy::disallowed_methods,
    reason = "a load generator against `sluice run` lives in wall-clock time"
)]
fn wall_clock_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A `seq`/`sent_us` field of the webhook body: the template renders them
/// as strings; a number is taken as well.
fn stamp_field(body: &serde_json::Value, name: &str) -> Option<u64> {
    match body.get(name)? {
        serde_json::Value::String(s) => s.parse().ok(),
        v => v.as_u64(),
    }
}

/// Event-to-webhook latency for immediate sends at `rate` events/s.
fn latency(seconds: u64, rate: u64) {
    const WARMUP_S: u64 = 3;
    let rate = rate.max(1);
    let base = Instant::now();
    let arrivals: Arc<Mutex<Arrivals>> = Arc::default();
    let on_request: OnRequest = {
        let arrivals = Arc::clone(&arrivals);
        Arc::new(move |body: &[u8]| {
            let now_us = base.elapsed().as_micros() as u64;
            let stamp = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| Some((stamp_field(&v, "seq")?, stamp_field(&v, "sent_us")?)));
            let Ok(mut a) = arrivals.lock() else { return };
            let Some((seq, sent_us)) = stamp else {
                a.unreadable += 1;
                return;
            };
            if !a.seen.insert(seq) {
                a.duplicates += 1;
            } else {
                a.stamped
                    .push((sent_us, now_us.saturating_sub(sent_us) as f64 / 1000.0));
            }
        })
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ping");
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/ping"),
        &dir,
        receiver(on_request),
    );
    let mut server = Server::start(&dir);
    let (port, pid) = (server.port, server.pid());

    // One event per request; enough connections that a connection waiting
    // for its 202 does not hold back the schedule (10 requests/s each).
    let conns = rate.div_ceil(10).clamp(1, 200);
    let period = Duration::from_secs_f64(conns as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(200);
    let warmup_end_us = (start - base + Duration::from_secs(WARMUP_S)).as_micros() as u64;
    let end = start + Duration::from_secs(WARMUP_S + seconds);
    let seq = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let acks: Arc<Mutex<Vec<f64>>> = Arc::default();
    let max_lag_us = Arc::new(AtomicU64::new(0));
    let pacers: Vec<_> = (0..conns)
        .map(|i| {
            let (seq, accepted, refused, acks, max_lag_us) = (
                Arc::clone(&seq),
                Arc::clone(&accepted),
                Arc::clone(&refused),
                Arc::clone(&acks),
                Arc::clone(&max_lag_us),
            );
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                let mut at = start + period.mul_f64(i as f64 / conns as f64);
                while at < end {
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let ts = wall_clock_ts();
                    let sent = Instant::now();
                    let sent_us = (sent - base).as_micros() as u64;
                    let lag = sent.saturating_duration_since(at).as_micros() as u64;
                    max_lag_us.fetch_max(lag, Ordering::Relaxed);
                    let body = format!(
                        "{{\"type\":\"track\",\"user\":\"p{n}\",\"event\":\"ping\",\"ts\":\"{ts}\",\
                         \"id\":\"ping-{n}\",\"props\":{{\"seq\":{n},\"sent_us\":{sent_us}}}}}\n"
                    );
                    let status = c
                        .as_mut()
                        .and_then(|c| c.post("/v1/events", "bench", body.as_bytes()));
                    if status == Some(202) {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        if sent_us >= warmup_end_us {
                            if let Ok(mut l) = acks.lock() {
                                l.push(sent.elapsed().as_secs_f64() * 1000.0);
                            }
                        }
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        if status.is_none() {
                            c = Conn::open(port);
                        }
                    }
                    at += period;
                }
            })
        })
        .collect();
    for p in pacers {
        let _ = p.join();
    }
    let posted = seq.load(Ordering::SeqCst);
    let accepted = accepted.load(Ordering::SeqCst);
    // Outstanding webhooks: at most 30 s more.
    let deadline = Instant::now() + Duration::from_secs(30);
    let received = || arrivals.lock().map(|a| a.seen.len() as u64).unwrap_or(0);
    while received() < accepted && Instant::now() < deadline && server.alive() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (stamped, got, duplicates, unreadable) = match arrivals.lock() {
        Ok(mut a) => (
            std::mem::take(&mut a.stamped),
            a.seen.len() as u64,
            a.duplicates,
            a.unreadable,
        ),
        Err(_) => (Vec::new(), 0, 0, 0),
    };
    let warmup = stamped.iter().filter(|(s, _)| *s < warmup_end_us).count();
    let e2w = Quantiles::new(
        stamped
            .iter()
            .filter(|(s, _)| *s >= warmup_end_us)
            .map(|(_, ms)| *ms)
            .collect(),
    );
    let acks = Quantiles::new(take(&acks));
    println!(
        "event-to-webhook latency at {rate} events/s (immediate send, one event per request, \
         {conns} connections, {seconds} s after {WARMUP_S} s warm-up): \
         p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} webhooks)",
        e2w.q(0.5),
        e2w.q(0.9),
        e2w.q(0.99),
        e2w.max(),
        e2w.len()
    );
    println!(
        "acknowledgement latency of the same posts: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        acks.q(0.5),
        acks.q(0.99),
        acks.max()
    );
    println!(
        "posted {posted} events ({:.0} events/s, schedule lag at most {:.1} ms), {accepted} acknowledged, \
         {} refused; webhooks: {got} received ({warmup} of warm-up), {} missing, {duplicates} duplicates, \
         {unreadable} without a stamp",
        posted as f64 / (WARMUP_S + seconds) as f64,
        max_lag_us.load(Ordering::SeqCst) as f64 / 1000.0,
        refused.load(Ordering::SeqCst),
        accepted.saturating_sub(got),
    );
    println!("server peak RSS: {:.0} MB", peak_rss_mb(pid));
    drop(server);
}

/// A gauge's value from the server's `/metrics` (no token needed).
fn gauge(port: u16, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `n` ping events (the latency fixture's), numbered from `first`.
fn pings(first: u64, n: u64) -> Vec<u8> {
    let ts = wall_clock_ts();
    (first..first + n)
        .map(|i| {
            format!(
                "{{\"type\":\"track\",\"user\":\"p{i}\",\"event\":\"ping\",\"ts\":\"{ts}\",\
                 \"id\":\"ping-{i}\",\"props\":{{\"seq\":{i},\"sent_us\":0}}}}\n"
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// Resident memory over a steady load of `rate` events/s: shop events
/// (whose throttled channels build a growing backlog of deferred messages
/// and timers), or with `ping` the latency fixture's events (one immediate
/// webhook each, nothing deferred: a steady state).
fn soak(seconds: u64, rate: u64, ping: bool) {
    const BATCH: usize = 100;
    const CONNS: u64 = 10;
    const SAMPLE_S: u64 = 10;
    const WARMUP_S: u64 = 60;
    const LAST_S: u64 = 600;
    let rate = rate.max(1);
    let webhooks = Arc::new(AtomicU64::new(0));
    let tmp = tempfile::tempdir().expect("tmp");
    let hook = {
        let webhooks = Arc::clone(&webhooks);
        receiver(Arc::new(move |_| {
            webhooks.fetch_add(1, Ordering::Relaxed);
        }))
    };
    let dir = if ping {
        let dir = tmp.path().join("ping");
        copy(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures/ping"),
            &dir,
            hook,
        );
        dir
    } else {
        shop(tmp.path(), hook)
    };
    // Enough events that the default soak never posts one twice; a longer
    // one starts over with the event ids renamed per lap (same users, new
    // events).
    let lines = Arc::new(if ping {
        Vec::new()
    } else {
        shop_events(200_000, rate * seconds * 21 / 20)
    });
    let mut server = Server::start(&dir);
    let (port, pid) = (server.port, server.pid());
    if ping {
        println!(
            "soak: {rate} ping events/s ({BATCH} per request over {CONNS} connections) for {seconds} s, \
             each a new user and one immediate webhook, RSS sampled every {SAMPLE_S} s"
        );
    } else {
        println!(
            "soak: {rate} events/s ({BATCH} per request over {CONNS} connections) for {seconds} s, \
             {} shopgen events of 200,000 users, RSS sampled every {SAMPLE_S} s",
            lines.len()
        );
    }

    let requests_per_s = (rate as f64 / BATCH as f64).max(0.001);
    let period = Duration::from_secs_f64(CONNS as f64 / requests_per_s);
    let began = Instant::now();
    let end = began + Duration::from_secs(seconds);
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let acks: Arc<Mutex<Vec<f64>>> = Arc::default();
    let pacers: Vec<_> = (0..CONNS)
        .map(|i| {
            let (lines, next, accepted, refused, acks) = (
                Arc::clone(&lines),
                Arc::clone(&next),
                Arc::clone(&accepted),
                Arc::clone(&refused),
                Arc::clone(&acks),
            );
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                let mut at = began + period.mul_f64(i as f64 / CONNS as f64);
                while at < end {
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let from = next.fetch_add(BATCH, Ordering::Relaxed);
                    let (body, events) = if lines.is_empty() {
                        (pings(from as u64, BATCH as u64), BATCH)
                    } else {
                        let lap = from / lines.len();
                        let from = from % lines.len();
                        let to = (from + BATCH).min(lines.len());
                        let mut body: Vec<u8> = lines[from..to].concat();
                        if lap > 0 {
                            body = String::from_utf8_lossy(&body)
                                .replace("\"id\":\"e", &format!("\"id\":\"l{lap}e"))
                                .into_bytes();
                        }
                        (body, to - from)
                    };
                    let t = Instant::now();
                    let status = c
                        .as_mut()
                        .and_then(|c| c.post("/v1/events", "bench", &body));
                    if status == Some(202) {
                        accepted.fetch_add(events as u64, Ordering::Relaxed);
                        if let Ok(mut l) = acks.lock() {
                            l.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                        if status.is_none() {
                            c = Conn::open(port);
                        }
                    }
                    at += period;
                }
            })
        })
        .collect();

    println!("    t     RSS (anon  file) events/s  ack p99  webhooks   timers  store");
    let mut samples: Vec<(u64, f64)> = Vec::new();
    let mut last_accepted = 0;
    let mut tick = 1;
    while began + Duration::from_secs(tick * SAMPLE_S) <= end {
        if let Some(wait) =
            (began + Duration::from_secs(tick * SAMPLE_S)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        if !server.alive() {
            println!("sluice run exited during the soak");
            break;
        }
        let t = tick * SAMPLE_S;
        let rss = proc_mb(pid, "VmRSS:").unwrap_or(f64::NAN);
        let anon = proc_mb(pid, "RssAnon:").unwrap_or(f64::NAN);
        let file =
            proc_mb(pid, "RssFile:").unwrap_or(f64::NAN) + proc_mb(pid, "RssShmem:").unwrap_or(0.0);
        let n = accepted.load(Ordering::SeqCst);
        let window = Quantiles::new(take(&acks));
        println!(
            "{t:>5} s {rss:>5.0} MB ({anon:>4.0} {file:>4.0}) {:>9.0} {:>6.1} ms {:>9} {:>8.0} {:>5.0} MB",
            (n - last_accepted) as f64 / SAMPLE_S as f64,
            window.q(0.99),
            webhooks.load(Ordering::SeqCst),
            gauge(port, "sluice_timers_pending").unwrap_or(f64::NAN),
            dir_bytes(&server.dir.join(".sluice")) as f64 / 1e6,
        );
        samples.push((t, rss));
        last_accepted = n;
        tick += 1;
    }
    for p in pacers {
        let _ = p.join();
    }
    let secs = began.elapsed().as_secs_f64();
    let n = accepted.load(Ordering::SeqCst);
    let steady: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t > WARMUP_S)
        .map(|(_, rss)| *rss)
        .collect();
    let min = steady.iter().copied().fold(f64::INFINITY, f64::min);
    let max = steady.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    println!(
        "soak: {n} events acknowledged in {secs:.0} s ({:.0} events/s), {} requests refused, \
         {} webhooks received, store {:.0} MB",
        n as f64 / secs,
        refused.load(Ordering::SeqCst),
        webhooks.load(Ordering::SeqCst),
        dir_bytes(&server.dir.join(".sluice")) as f64 / 1e6
    );
    if steady.is_empty() {
        println!("resident memory: no sample after the {WARMUP_S} s warm-up (soak too short)");
    } else {
        println!(
            "resident memory after {WARMUP_S} s of warm-up ({} samples): min {min:.0} MB, max {max:.0} MB, \
             max/min {:.3}, first {:.0} MB, last {:.0} MB; peak {:.0} MB",
            steady.len(),
            max / min,
            steady.first().copied().unwrap_or(f64::NAN),
            steady.last().copied().unwrap_or(f64::NAN),
            peak_rss_mb(pid)
        );
    }
    // A soak of 20 minutes or more: the last 10 minutes on their own,
    // after everything that fills up with the first users has filled.
    if seconds >= 2 * LAST_S {
        let from = secs - LAST_S as f64;
        let last: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| *t as f64 > from)
            .map(|(_, rss)| *rss)
            .collect();
        let lo = last.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = last.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mid = (lo + hi) / 2.0;
        println!(
            "resident memory over the last {LAST_S} s ({} samples): min {lo:.0} MB, max {hi:.0} MB, \
             max/min {:.3}, ±{:.1}% around {mid:.0} MB",
            last.len(),
            hi / lo,
            (hi - mid) / mid * 100.0
        );
    }
    drop(server);
}
