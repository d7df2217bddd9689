//! Load generator for `sluice run` (issue 9): starts the real binary on a
//! copy of the example shop (its CRM webhooks pointed at a local receiver,
//! so nothing leaves the machine), then measures over loopback only:
//!
//! 1. sustained durable ingest: C clients post batches of B events (JSON
//!    lines from `shopgen`, the shop's journeys live) as fast as the server
//!    acknowledges them (every 202 is fsynced), for S seconds;
//! 2. acknowledgement latency at a fixed 10,000 events/s (100-event
//!    batches, 100 requests/s): p50, p99, max;
//! 3. the server's peak resident memory.
//!
//! ```sh
//! cargo bench -p sluice --bench ingest            # -- SECONDS CLIENTS BATCH
//! ```
//!
//! Bounded in count and time: it stops after S seconds per phase and kills
//! the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(port: u16) -> Option<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_nodelay(true).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        Some(Conn {
            w: s.try_clone().ok()?,
            r: BufReader::new(s),
        })
    }

    /// One keep-alive request; the status.
    fn post(&mut self, path: &str, token: &str, body: &[u8]) -> Option<u16> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\
             content-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.w.write_all(head.as_bytes()).ok()?;
        self.w.write_all(body).ok()?;
        let mut status = String::new();
        self.r.read_line(&mut status).ok()?;
        let code = status.split(' ').nth(1)?.parse().ok()?;
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).ok()?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut b = vec![0u8; len];
        self.r.read_exact(&mut b).ok()?;
        Some(code)
    }
}

/// Answers every request 200 (the shop's CRM webhooks).
fn receiver() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(w) = c.try_clone() else { return };
                let mut conn = Conn {
                    r: BufReader::new(c),
                    w,
                };
                loop {
                    let mut len = 0usize;
                    let mut any = false;
                    loop {
                        let mut line = String::new();
                        match conn.r.read_line(&mut line) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" && any {
                            break;
                        }
                        any = true;
                        if let Some((k, v)) = line.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut b = vec![0u8; len];
                    if conn.r.read_exact(&mut b).is_err()
                        || conn
                            .w
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn copy(from: &Path, to: &Path, hook: u16) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read").flatten() {
        let name = e.file_name();
        if name == ".sluice" {
            continue;
        }
        let target = to.join(&name);
        if e.path().is_dir() {
            copy(&e.path(), &target, hook);
        } else {
            let text = std::fs::read(e.path()).expect("read");
            let text = String::from_utf8_lossy(&text).replace(
                "https://crm.example.com",
                &format!("http://127.0.0.1:{hook}"),
            );
            std::fs::write(target, text).expect("write");
        }
    }
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let clients: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(500);

    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("shop");
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop"),
        &dir,
        receiver(),
    );
    let events_file = tmp.path().join("events.jsonl");
    shopgen::generate_file(
        &shopgen::Spec {
            users: 200_000,
            events: 2_000_000,
            ..shopgen::Spec::default()
        },
        &events_file,
    )
    .expect("generate");
    let lines: Vec<Vec<u8>> = std::fs::read_to_string(&events_file)
        .expect("read")
        .lines()
        .map(|l| format!("{l}\n").into_bytes())
        .collect();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("run")
            .arg(&dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("SLUICE_INGEST_TOKEN", "bench")
            .env("SLUICE_ADMIN_TOKEN", "bench-admin")
            .env("SHOP_WEBHOOK_SECRET", "bench-secret")
            .env("SLUICE_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sluice run"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "sluice run did not start");
        assert!(
            server.0.try_wait().ok().flatten().is_none(),
            "sluice run exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = server.0.id();
    let lines = Arc::new(lines);
    let next = Arc::new(AtomicUsize::new(0));

    // 1. Sustained durable ingest.
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
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
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "acknowledgement latency at 10,000 events/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} requests)",
        q(0.5),
        q(0.99),
        l.last().copied().unwrap_or(f64::NAN),
        l.len()
    );
    println!("server peak RSS: {:.0} MB", peak_rss_mb(pid));
    drop(server);
}
