//! `sluice run` under continuous ingest, killed with SIGKILL at random
//! moments 20 times and started again on the same store each time. At the
//! end every user whose events were acknowledged (202) has received both
//! of the journey's webhooks — the immediate one and the one two seconds
//! later — and no user/step ever arrived with two different keys. The
//! moments come from a fixed seed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (user, step) → every key it arrived with.
type Seen = Arc<Mutex<BTreeMap<(String, String), Vec<String>>>>;

/// A tiny HTTP/1.1 receiver: records each webhook's body and answers 200.
fn receiver() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let s = Arc::clone(&s);
            std::thread::spawn(move || serve(conn, &s));
        }
    });
    (port, seen)
}

fn serve(conn: TcpStream, seen: &Seen) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut r = BufReader::new(conn);
    loop {
        let mut len = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                if first {
                    continue;
                }
                break;
            }
            first = false;
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
            let get = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            if let Ok(mut m) = seen.lock() {
                m.entry((get("user"), get("step")))
                    .or_default()
                    .push(get("key"));
            }
        }
        if out
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// One request on a fresh connection; the status, or `None` when the
/// server is gone.
fn request(port: u16, method: &str, path: &str, token: &str, body: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\
         content-type: application/x-ndjson\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split(' ').nth(1)?.parse().ok()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, store: &Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(dir)
        .arg("--store")
        .arg(store)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("SLUICE_INGEST_TOKEN", "ingest-token")
        .env("SLUICE_ADMIN_TOKEN", "admin-token")
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sluice run");
    Server(child)
}

fn wait_ready(port: u16, server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if request(port, "GET", "/readyz", "", "") == Some(200) {
            return;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("sluice run exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("sluice run never became ready");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn fixture(port: u16) -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/crash-run");
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("repo");
    for sub in ["", "journeys", "templates"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        for e in std::fs::read_dir(src.join(sub)).expect("read") {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_file() {
                let text = std::fs::read_to_string(e.path()).expect("read");
                std::fs::write(
                    dir.join(sub).join(e.file_name()),
                    text.replace("__PORT__", &port.to_string()),
                )
                .expect("write");
            }
        }
    }
    (tmp, dir)
}

#[test]
fn sigkill_twenty_times_under_ingest_loses_and_doubles_nothing() {
    let (hook_port, seen) = receiver();
    let (tmp, dir) = fixture(hook_port);
    let store = tmp.path().join("store");
    let port = free_port();
    let next_user = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut seed: u64 = 0xC0FFEE;
    for round in 0..20 {
        let mut server = start(&dir, &store, port);
        wait_ready(port, &mut server);
        let stop = Arc::new(AtomicBool::new(false));
        let posters: Vec<_> = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let next = Arc::clone(&next_user);
                let acked = Arc::clone(&acked);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let first = next.fetch_add(10, Ordering::SeqCst);
                        let users: Vec<String> =
                            (first..first + 10).map(|n| format!("u{n:05}")).collect();
                        let body: String = users
                            .iter()
                            .map(|u| {
                                format!(
                                    "{{\"type\":\"track\",\"user\":\"{u}\",\"ts\":\"2026-01-01T00:00:00Z\",\"id\":\"{u}-ping\",\"event\":\"ping\"}}\n"
                                )
                            })
                            .collect();
                        match request(port, "POST", "/v1/events", "ingest-token", &body) {
                            Some(202) => {
                                if let Ok(mut a) = acked.lock() {
                                    a.extend(users);
                                }
                            }
                            Some(_) | None => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            })
            .collect();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ms = 150 + (seed >> 33) % 900;
        std::thread::sleep(Duration::from_millis(ms));
        let _ = server.0.kill();
        let _ = server.0.wait();
        stop.store(true, Ordering::SeqCst);
        for p in posters {
            let _ = p.join();
        }
        let _ = round;
    }
    // Once more, and let everything due arrive.
    let mut server = start(&dir, &store, port);
    wait_ready(port, &mut server);
    let acked = acked.lock().expect("acked").clone();
    assert!(
        acked.len() > 200,
        "enough was acknowledged: {}",
        acked.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let m: Vec<(String, &str)> = {
            let seen = seen.lock().expect("seen");
            acked
                .iter()
                .flat_map(|u| [(u.clone(), "now"), (u.clone(), "later")])
                .filter(|(u, s)| !seen.contains_key(&(u.clone(), (*s).to_owned())))
                .collect()
        };
        if m.is_empty() || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        missing.is_empty(),
        "{} acknowledged webhooks never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let seen = seen.lock().expect("seen");
    for ((user, step), keys) in seen.iter() {
        let distinct: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{user}/{step} arrived with {} different keys",
            distinct.len()
        );
    }
}
