//! `GET /metrics` latency with 100,000 users in the store (issue 12).
//!
//! Starts the real `sluice run` on a generated repository whose one journey
//! keeps every user waiting a week (so the store holds 100,000 users and
//! 100,000 pending timers), ingests the users over loopback, then scrapes
//! `/metrics` over a keep-alive connection: p50, p99 and max of N scrapes,
//! idle and while ingest runs, and the time `run` takes to start on that
//! store (it counts the timers, outbox and dead letters once at start-up).
//!
//! ```sh
//! cargo bench -p sluice --bench metrics_scrape            # -- USERS SCRAPES
//! ```
//!
//! Bounded: fixed counts, the server is killed at the end.

#[path = "../../tests/support/port.rs"]
mod port;
use port::free_port;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INGEST: &str = "bench-ingest-token";
const ADMIN: &str = "bench-admin-token";

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        Conn {
            w: s.try_clone().expect("clone"),
            r: BufReader::new(s),
        }
    }

    /// One keep-alive request: the status and the body.
    fn request(&mut self, method: &str, path: &str, extra: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{extra}content-length: {}\r\n\r\n",
            body.len()
        );
        self.w.write_all(head.as_bytes()).expect("write");
        self.w.write_all(body).expect("write");
        let mut status = String::new();
        self.r.read_line(&mut status).expect("status");
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().expect("length");
                }
            }
        }
        let mut out = vec![0u8; len];
        self.r.read_exact(&mut out).expect("body");
        (code, out)
    }

    fn post_events(&mut self, body: &[u8]) -> u16 {
        let extra =
            format!("authorization: Bearer {INGEST}\r\ncontent-type: application/x-ndjson\r\n");
        self.request("POST", "/v1/events", &extra, body).0
    }

    fn scrape(&mut self) -> Vec<u8> {
        let (code, body) = self.request(
            "GET",
            "/metrics",
            "accept: application/openmetrics-text;version=1.0.0\r\n",
            b"",
        );
        assert_eq!(code, 200);
        body
    }
}

/// Starts `sluice run` and waits for `/readyz`; the caller stops the child
/// it gets back (clippy cannot see through the returned tuple).
#[allow(clippy::zombie_processes)]
fn start(repo: &std::path::Path) -> (Child, u16, Duration) {
    let port = free_port();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(repo)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("BENCH_INGEST", INGEST)
        .env("BENCH_ADMIN", ADMIN)
        .env("SLUICE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sluice run");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            drop(s);
            let mut c = Conn::open(port);
            if c.request("GET", "/readyz", "", b"").0 == 200 {
                return (child, port, started.elapsed());
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sluice run not ready in 300 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}

fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} scrapes)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    )
}

fn scrapes(port: u16, n: usize) -> (Vec<Duration>, usize, String) {
    let mut c = Conn::open(port);
    let mut times = Vec::with_capacity(n);
    let mut last = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        last = c.scrape();
        times.push(t.elapsed());
    }
    let size = last.len();
    (times, size, String::from_utf8_lossy(&last).into_owned())
}

#[allow(clippy::disallowed_methods)]
fn ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn batch(from: usize, to: usize, tag: &str) -> Vec<u8> {
    let now = ts();
    let mut out = String::new();
    for i in from..to {
        out.push_str(&format!(
            "{{\"type\":\"identify\",\"user\":\"u{i:06}\",\"id\":\"{tag}i{i}\",\"ts\":\"{now}\",\"traits\":{{\"plan\":\"free\"}}}}\n\
             {{\"type\":\"track\",\"user\":\"u{i:06}\",\"id\":\"{tag}s{i}\",\"event\":\"signed_up\",\"ts\":\"{now}\",\"props\":{{}}}}\n"
        ));
    }
    out.into_bytes()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let users: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2_000);

    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path();
    std::fs::create_dir_all(repo.join("journeys")).expect("mkdir");
    std::fs::write(
        repo.join("sluice.yaml"),
        "apiVersion: sluice/v1\nkind: Project\nid: scrape-bench\ndefault_timezone: UTC\n\
         store: .sluice/store\napi:\n  ingest_token_env: BENCH_INGEST\n  admin_token_env: BENCH_ADMIN\n",
    )
    .expect("project");
    std::fs::write(
        repo.join("journeys/onboarding.yaml"),
        "apiVersion: sluice/v1\nkind: Journey\nid: onboarding\nversion: 1\nentry:\n  event: signed_up\n\
         steps:\n  - id: settle\n    wait: 7d\n",
    )
    .expect("journey");

    let (child, port, _) = start(repo);
    let (idle0, size0, _) = scrapes(port, n);
    println!(
        "empty store: /metrics {} bytes: {}",
        size0,
        percentiles(idle0)
    );

    let t = Instant::now();
    let mut c = Conn::open(port);
    const STEP: usize = 2_500;
    let mut i = 0;
    while i < users {
        let to = (i + STEP).min(users);
        assert_eq!(c.post_events(&batch(i, to, "a")), 202);
        i = to;
    }
    println!(
        "ingested {users} users ({} events) in {:.1} s",
        users * 2,
        t.elapsed().as_secs_f64()
    );
    let (idle, size, text) = scrapes(port, n);
    let timers = sample(&text, "sluice_timers_pending").unwrap_or(-1.0);
    println!(
        "{users} users, {timers} timers pending: /metrics {size} bytes: {}",
        percentiles(idle)
    );
    assert_eq!(timers as usize, users, "every user waits");

    // Scrapes while ingest runs (updates of existing users).
    let busy = Arc::new(AtomicBool::new(true));
    let loader = {
        let busy = Arc::clone(&busy);
        std::thread::spawn(move || {
            let mut c = Conn::open(port);
            let mut round = 0;
            while busy.load(Ordering::SeqCst) {
                let from = (round * STEP) % users.max(STEP);
                let body = batch(from, (from + STEP).min(users), &format!("b{round}-"));
                assert_eq!(c.post_events(&body), 202);
                round += 1;
            }
            round
        })
    };
    // For three seconds, so that many batches overlap the scrapes.
    let mut loaded = Vec::new();
    let mut c = Conn::open(port);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let s = Instant::now();
        c.scrape();
        loaded.push(s.elapsed());
    }
    busy.store(false, Ordering::SeqCst);
    let batches = loader.join().expect("loader");
    println!(
        "while ingesting ({batches} batches of {} events acknowledged meanwhile): {}",
        STEP * 2,
        percentiles(loaded)
    );

    stop(child);
    let (child, _port, ready) = start(repo);
    println!(
        "restart on that store ({timers} timers counted at start-up): ready in {:.2} s",
        ready.as_secs_f64()
    );
    stop(child);
}
