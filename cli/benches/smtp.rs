//! Emails per second through the whole `sluice run` path over pooled SMTP
//! (issue 10: ≥ 2,000 emails/s into a local sink with the outbox durable).
//!
//! Starts a sink on 127.0.0.1, then the real release binary on a copy of
//! `tests/fixtures/smtp/service` pointed at it (`pool` connections,
//! `--concurrency 64`), and posts N sign-ups (an `identify` and a
//! `signed_up` each: one marketing email each, multipart with a UTF-8
//! subject and a signed unsubscribe link) from 4 keep-alive clients. Every
//! `202` is fsynced; every email is committed to the outbox before it is
//! sent and its result committed after. Measures from the first post to
//! the N-th email the sink accepted, and the delivery rate from the sink's
//! first email to its last.
//!
//! Two sinks, one after the other:
//!
//! - `rust`: a small sink written here (a thread per connection, `250` to
//!   everything, TCP_NODELAY), so the figure is sluice's;
//! - `aiosmtpd`: Python's aiosmtpd (`tests/fixtures/smtp/server.py
//!   --discard`, installed by `.ci/install/smtp.sh`), a real server.
//!
//! ```sh
//! cargo bench -p sluice --bench smtp            # -- EMAILS POOL SINKS, default 20000 8 rust,aiosmtpd
//! ```
//!
//! Bounded: each phase stops after 120 s whatever happens, and the
//! processes it started are killed.

#[path = "../../tests/support/port.rs"]
mod port;
use port::free_port;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// Kills the process when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The small Rust sink: `250` to everything; counts messages.
fn rust_sink() -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let count = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&count);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let count = Arc::clone(&c);
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let Ok(mut w) = s.try_clone() else { return };
                let mut r = BufReader::new(s);
                if w.write_all(b"220 sink ESMTP\r\n").is_err() {
                    return;
                }
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
                        "DATA" => {
                            if w.write_all(b"354 go on\r\n").is_err() {
                                return;
                            }
                            loop {
                                line.clear();
                                match r.read_line(&mut line) {
                                    Ok(0) | Err(_) => return,
                                    Ok(_) if line == ".\r\n" => break,
                                    Ok(_) => {}
                                }
                            }
                            count.fetch_add(1, Ordering::Relaxed);
                            b"250 2.0.0 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n");
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    if w.write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, count)
}

/// aiosmtpd in discard mode; the count is read from its file.
fn aiosmtpd_sink(dir: &Path) -> (u16, Proc) {
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(root().join("tests/fixtures/smtp/server.py"))
        .args(["--port", &port.to_string(), "--discard", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (run .ci/install/smtp.sh)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
    (port, Proc(child))
}

fn copy(from: &Path, to: &Path, smtp: u16, pool: usize) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy(&e.path(), &target, smtp, pool);
        } else {
            let text = std::fs::read_to_string(e.path()).expect("read");
            let text = text
                .replace("__SMTP__", &smtp.to_string())
                .replace("pool: 4", &format!("pool: {pool}"));
            std::fs::write(target, text).expect("write");
        }
    }
}

/// Posts `body` on a keep-alive connection; the status.
fn post(r: &mut BufReader<TcpStream>, w: &mut TcpStream, body: &[u8]) -> Option<u16> {
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer bench\r\n\
         content-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).ok()?;
    w.write_all(body).ok()?;
    let mut status = String::new();
    r.read_line(&mut status).ok()?;
    let code = status.split(' ').nth(1)?.parse().ok()?;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
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
    r.read_exact(&mut b).ok()?;
    Some(code)
}

struct Figures {
    ingested: Duration,
    first: Duration,
    last: Duration,
}

/// One run of `sluice run` into the sink on `smtp`; `count` reads how many
/// emails the sink accepted.
fn run(smtp: u16, pool: usize, emails: u64, count: &dyn Fn() -> u64) -> Option<Figures> {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = tmp.path().join("repo");
    copy(
        &root().join("tests/fixtures/smtp/service"),
        &repo,
        smtp,
        pool,
    );
    let port = free_port();
    let _server = Proc(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("run")
            .arg(&repo)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--concurrency", "64"])
            .env("SLUICE_TEST_INGEST_TOKEN", "bench")
            .env("SLUICE_TEST_ADMIN_TOKEN", "bench-admin")
            .env("SLUICE_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start sluice run"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            eprintln!("sluice run did not listen");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = count();
    let clients = 4u64;
    let per_batch = 250u64; // users per request: 500 events
    let start = Instant::now();
    let posters: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_nodelay(true).expect("nodelay");
                let mut w = s.try_clone().expect("clone");
                let mut r = BufReader::new(s);
                let mut u = c;
                while u < emails {
                    let mut body = String::new();
                    for _ in 0..per_batch {
                        if u >= emails {
                            break;
                        }
                        body.push_str(&format!(
                            "{{\"type\":\"identify\",\"user\":\"b{u}\",\"id\":\"i{u}\",\"ts\":\"2026-03-02T09:00:00Z\",\"traits\":{{\"email\":\"b{u}@example.com\",\"first_name\":\"Zoë\"}}}}\n\
                             {{\"type\":\"track\",\"user\":\"b{u}\",\"id\":\"s{u}\",\"event\":\"signed_up\",\"ts\":\"2026-03-02T09:00:01Z\",\"props\":{{}}}}\n"
                        ));
                        u += clients;
                    }
                    let code = post(&mut r, &mut w, body.as_bytes());
                    assert_eq!(code, Some(202), "ingest refused");
                }
            })
        })
        .collect();
    let mut ingested = None;
    let mut first = None;
    let mut posters = Some(posters);
    loop {
        let n = count().saturating_sub(before);
        let t = start.elapsed();
        if first.is_none() && n > 0 {
            first = Some(t);
        }
        if ingested.is_none()
            && posters
                .as_ref()
                .is_some_and(|p| p.iter().all(|h| h.is_finished()))
        {
            for h in posters.take().into_iter().flatten() {
                h.join().expect("poster");
            }
            ingested = Some(t);
        }
        if n >= emails {
            return Some(Figures {
                ingested: ingested.unwrap_or(t),
                first: first.unwrap_or(t),
                last: t,
            });
        }
        if t > LIMIT {
            eprintln!("stopped after {LIMIT:?}: {n} of {emails} emails");
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn report(sink: &str, pool: usize, emails: u64, f: &Figures) {
    let e2e = emails as f64 / f.last.as_secs_f64();
    let steady = (emails.saturating_sub(1)) as f64 / (f.last - f.first).as_secs_f64().max(1e-9);
    println!(
        "sink {sink:<9} pool {pool:>2}: {emails} emails in {:.2} s from the first post \
         ({e2e:.0} emails/s; ingest done at {:.2} s); delivery {steady:.0} emails/s \
         from the first email to the last",
        f.last.as_secs_f64(),
        f.ingested.as_secs_f64()
    );
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let emails: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let pool: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let sinks = args.next().unwrap_or_else(|| "rust,aiosmtpd".into());
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", l.trim());
    }
    for sink in sinks.split(',') {
        match sink {
            "rust" => {
                let (port, count) = rust_sink();
                let read = move || count.load(Ordering::Relaxed);
                if let Some(f) = run(port, pool, emails, &read) {
                    report("rust", pool, emails, &f);
                }
            }
            "aiosmtpd" => {
                let dir = tempfile::tempdir().expect("tmp");
                let (port, _sink) = aiosmtpd_sink(dir.path());
                let file = dir.path().join("count");
                let read = move || {
                    std::fs::read_to_string(&file)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0)
                };
                if let Some(f) = run(port, pool, emails, &read) {
                    report("aiosmtpd", pool, emails, &f);
                }
            }
            other => eprintln!("unknown sink {other} (rust, aiosmtpd)"),
        }
    }
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at end: {}", l.trim());
    }
}
