//! The client commands against a real `sluice run`: `send-events` (batches,
//! line numbers, duplicates, an unreachable server), `inspect user` through
//! the API and directly on the store, and `dlq list` / `dlq replay` with a
//! webhook receiver that first refuses and then accepts.
//!
//! Everything runs on 127.0.0.1 with bounded waits; every server is killed
//! when its guard drops, also when a test fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

const INGEST: &str = "ingest-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // Nothing from the developer's shell decides where the client goes.
    c.env_remove("SLUICE_SERVER").env_remove("SLUICE_TOKEN");
    c.env_remove("SLUICE_INGEST_TOKEN")
        .env_remove("SLUICE_ADMIN_TOKEN");
    c.stdin(Stdio::null());
    c
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            if e.file_name() != ".sluice" {
                copy_dir(&e.path(), &target);
            }
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// The example shop, listening on `port`, its CRM webhook pointed at
/// `crm` (a local receiver).
fn shop(dir: &Path, port: u16, crm: u16) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    copy_dir(&src, dir);
    let project = dir.join("sluice.yaml");
    let mut text = std::fs::read_to_string(&project).expect("sluice.yaml");
    text.push_str(&format!("\napi:\n  listen: 127.0.0.1:{port}\n"));
    std::fs::write(&project, text).expect("write sluice.yaml");
    let templates = dir.join("templates/orders.yaml");
    let text = std::fs::read_to_string(&templates).expect("orders.yaml");
    assert!(text.contains("https://crm.example.com/hooks/orders"));
    let text = text.replace(
        "https://crm.example.com/hooks/orders",
        &format!("http://127.0.0.1:{crm}/hooks/orders"),
    );
    std::fs::write(&templates, text).expect("write orders.yaml");
}

/// A running `sluice run`, killed when dropped.
struct Server {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, store: &Path, port: u16) -> Server {
        let log = dir.join("run.log");
        let err = std::fs::File::create(&log).expect("log");
        let child = sluice()
            .arg("run")
            .arg(dir)
            .arg("--store")
            .arg(store)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--drain")
            .arg("2")
            .env("SLUICE_INGEST_TOKEN", INGEST)
            .env("SLUICE_ADMIN_TOKEN", ADMIN)
            .env("SHOP_WEBHOOK_SECRET", "dev-secret")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start sluice run");
        let mut s = Server {
            child: Some(child),
            port,
            log,
        };
        s.wait_ready();
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http_status(self.port, "/readyz") == Some(200) {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("sluice run exited with {status}:\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "not ready within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and waits (bounded) for a clean exit.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot send SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    assert!(status.success(), "run exited {status}:\n{}", self.log());
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("run did not stop within 30 s of SIGTERM");
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The status of a plain GET, `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A webhook receiver: answers every request with `status`, counts them
/// and keeps their `Idempotency-Key`s.
struct Receiver {
    port: u16,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    keys: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let status = Arc::new(AtomicU16::new(status));
        let hits = Arc::new(AtomicUsize::new(0));
        let keys = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, h, k, sp) = (
            Arc::clone(&status),
            Arc::clone(&hits),
            Arc::clone(&keys),
            Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Some(key) = answer(conn, st.load(Ordering::SeqCst)) {
                            if let Ok(mut keys) = k.lock() {
                                keys.push(key);
                            }
                        }
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            port,
            status,
            hits,
            keys,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (headers and a Content-Length body) and answers it;
/// returns its `Idempotency-Key`.
fn answer(mut conn: TcpStream, status: u16) -> Option<String> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length.min(1 << 20) {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    header("idempotency-key")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run sluice")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn now() -> String {
    use engine::clock::Clock;
    engine::clock::WallClock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 2,400 events with ids over 3 batches, a blank line, and bad lines at
/// known places: `(file, good lines, bad line numbers)`.
fn events_file(dir: &Path) -> (PathBuf, usize, Vec<usize>) {
    let ts = now();
    let mut lines = Vec::new();
    let mut good = 0;
    for i in 0..2_400 {
        if i % 10 == 0 {
            lines.push(format!(
                r#"{{"type":"track","user":"u-{i}","ts":"{ts}","id":"su-{i}","event":"signed_up","props":{{"source":"organic"}}}}"#
            ));
        } else {
            lines.push(format!(
                r#"{{"type":"identify","user":"u-{i}","ts":"{ts}","id":"id-{i}","traits":{{"email":"u{i}@example.com","plan":"free"}}}}"#
            ));
        }
        good += 1;
    }
    // 1-based line numbers after the insertions below.
    lines.insert(4, "this is not json".into()); // line 5
    lines.insert(699, String::new()); // line 700: blank, skipped
    lines.insert(
        1_202,
        r#"{"type":"track","id":"no-user","ts":"2026-01-01T00:00:00Z","event":"signed_up"}"#.into(),
    ); // line 1203
    lines.insert(
        2_100,
        r#"{"type":"identify","user":"u-x","id":"bad-ts","ts":"yesterday"}"#.into(),
    ); // line 2101
    let path = dir.join("events.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write events");
    (path, good, vec![5, 1203, 2101])
}

#[test]
fn send_events_reports_lines_and_duplicates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shop");
    let port = free_port();
    let crm = Receiver::start(200);
    shop(&dir, port, crm.port);
    let server = Server::start(&dir, &tmp.path().join("store"), port);
    let (file, good, bad) = events_file(tmp.path());

    // The token from the Project's ingest variable, the server from --server.
    let o = run(sluice()
        .arg("send-events")
        .arg(&file)
        .arg("--server")
        .arg(server.url())
        .arg("--dir")
        .arg(&dir)
        .env("SLUICE_INGEST_TOKEN", INGEST));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(
        out.contains(&format!("accepted {good}, duplicates 0, rejected 3")),
        "{out}"
    );
    let name = file.display().to_string();
    let rejected: Vec<&str> = out.lines().filter(|l| l.starts_with(&name)).collect();
    assert_eq!(rejected.len(), 3, "{out}");
    for (l, n) in rejected.iter().zip(&bad) {
        let prefix = format!("{name}:{n}: ");
        assert!(l.starts_with(&prefix), "{l} should start with {prefix}");
        assert!(l.len() > prefix.len(), "no message: {l}");
    }
    // The server's own messages come through (the missing user, the bad ts).
    assert!(rejected[0].contains("JSON"), "{}", rejected[0]);

    // Again, with the server from SLUICE_SERVER, the token from
    // SLUICE_TOKEN and small batches: every event is a duplicate.
    let o = run(sluice()
        .arg("send-events")
        .arg(&file)
        .arg("--batch")
        .arg("333")
        .env("SLUICE_SERVER", server.url())
        .env("SLUICE_TOKEN", INGEST));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("accepted 0, duplicates {good}, rejected 3")),
        "{out}"
    );
    assert!(out.contains(&format!("{name}:1203: ")), "{out}");

    // --format json: one document with the counts and the rejected lines.
    let o = run(sluice()
        .arg("send-events")
        .arg(&file)
        .arg("--format")
        .arg("json")
        .env("SLUICE_SERVER", server.url())
        .env("SLUICE_TOKEN", INGEST));
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value =
        serde_json::from_str(stdout(&o).trim()).expect("one JSON document");
    assert_eq!(doc["accepted"], 0, "{doc}");
    assert_eq!(doc["duplicates"], good as u64, "{doc}");
    assert_eq!(doc["error"], serde_json::Value::Null, "{doc}");
    let lines: Vec<u64> = doc["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
            r["line"].as_u64().expect("line")
        })
        .collect();
    assert_eq!(
        lines,
        bad.iter().map(|&n| n as u64).collect::<Vec<_>>(),
        "{doc}"
    );

    // Only the good lines: nothing rejected, exit 0.
    let text = std::fs::read_to_string(&file).expect("read");
    let clean: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| !bad.contains(&(i + 1)))
        .map(|(_, l)| l)
        .collect();
    let clean_file = tmp.path().join("clean.jsonl");
    std::fs::write(&clean_file, clean.join("\n")).expect("write");
    let o = run(sluice()
        .arg("send-events")
        .arg(&clean_file)
        .arg("--server")
        .arg(server.url())
        .arg("--token")
        .arg(ADMIN));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!("accepted 0, duplicates {good}, rejected 0")),
        "{}",
        stdout(&o)
    );

    // A wrong token: refused, exit 1, nothing counted.
    let o = run(sluice()
        .arg("send-events")
        .arg(&clean_file)
        .arg("--server")
        .arg(server.url())
        .arg("--token")
        .arg("wrong"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("refused the token"), "{}", stderr(&o));
    drop(server);

    // Nobody listening: retried, then exit 1 with a clear message.
    let started = Instant::now();
    let o = run(sluice()
        .arg("send-events")
        .arg(&clean_file)
        .arg("--server")
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .arg("--token")
        .arg(INGEST));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    assert!(stdout(&o).contains("accepted 0, duplicates 0, rejected 0"));
    // Four pauses between five attempts.
    assert!(started.elapsed() >= Duration::from_secs(3), "not retried");
}

#[test]
fn inspect_user_through_the_api_and_on_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shop");
    let store = tmp.path().join("store");
    let port = free_port();
    let crm = Receiver::start(200);
    shop(&dir, port, crm.port);
    let mut server = Server::start(&dir, &store, port);
    let ts = now();
    let file = tmp.path().join("lena.jsonl");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            format_args!(r#"{{"type":"identify","user":"u-lena","ts":"{ts}","id":"e1","traits":{{"email":"lena@example.com","plan":"free","timezone":"Europe/Berlin"}}}}"#),
            format_args!(r#"{{"type":"track","user":"u-lena","ts":"{ts}","id":"e2","event":"signed_up","props":{{"source":"organic"}}}}"#),
        ),
    )
    .expect("write");
    let o = run(sluice()
        .arg("send-events")
        .arg(&file)
        .arg("--server")
        .arg(server.url())
        .arg("--token")
        .arg(INGEST));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    // The store is held by `run`: the client goes through the API at the
    // Project's listen address, with the admin token from its variable.
    let inspect = |extra: &[&str], env: &[(&str, &str)]| {
        let mut c = sluice();
        c.args(["inspect", "user", "u-lena"])
            .arg(&dir)
            .args(extra)
            .args(["--format", "json"]);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    };
    let store_arg = store.display().to_string();
    let o = inspect(&["--store", &store_arg], &[("SLUICE_ADMIN_TOKEN", ADMIN)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("in use by `sluice run`"),
        "{}",
        stderr(&o)
    );
    let via_locked: Value = serde_json::from_str(&stdout(&o)).expect("json");

    // With --server and the ingest token: refused (admin only).
    let url = server.url();
    let o = inspect(&["--server", &url, "--token", INGEST], &[]);
    assert_eq!(o.status.code(), Some(1));
    let o = inspect(&["--server", &url, "--token", ADMIN], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let via_api: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(via_locked, via_api);

    // RUN.md §5's shape.
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(&via_api), ["user", "profile", "instances", "messages"]);
    assert_eq!(via_api["user"], "u-lena");
    assert_eq!(via_api["profile"]["email"], "lena@example.com");
    let instances = via_api["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1, "{via_api}");
    assert_eq!(
        keys(&instances[0]),
        [
            "journey",
            "version",
            "step",
            "entered_at",
            "holdout",
            "waiting_until"
        ]
    );
    assert_eq!(instances[0]["journey"], "welcome-series");
    let messages = via_api["messages"].as_array().expect("messages");
    assert!(!messages.is_empty(), "{via_api}");
    assert_eq!(
        keys(&messages[0]),
        ["at", "journey", "step", "channel", "outcome", "reason", "key"]
    );

    // Unknown user, through the API: exit 1 with a clear message.
    let o = run(sluice()
        .args(["inspect", "user", "nobody"])
        .arg(&dir)
        .args(["--server", &url, "--token", ADMIN]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown user `nobody`"),
        "{}",
        stderr(&o)
    );

    // After SIGTERM: straight from the store, the same document.
    server.stop();
    let o = inspect(&["--store", &store_arg], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("in use"), "{}", stderr(&o));
    let direct: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(direct, via_api);

    // The human summary.
    let o = run(sluice()
        .args(["inspect", "user", "u-lena"])
        .arg(&dir)
        .args(["--store", &store_arg]));
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.starts_with("user u-lena\n"), "{text}");
    assert!(text.contains("  email: lena@example.com"), "{text}");
    assert!(text.contains("welcome-series v1 at step"), "{text}");

    // Unknown user, on the store.
    let o = run(sluice()
        .args(["inspect", "user", "nobody"])
        .arg(&dir)
        .args(["--store", &store_arg]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown user `nobody`"),
        "{}",
        stderr(&o)
    );

    // No store at all: an error, and none is created.
    let missing = tmp.path().join("missing");
    let o = run(sluice()
        .args(["inspect", "user", "u-lena"])
        .arg(&dir)
        .arg("--store")
        .arg(&missing));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no store at"), "{}", stderr(&o));
    assert!(!missing.exists());
}

fn dlq_list(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let o = run(sluice()
        .args(["dlq", "list"])
        .arg(dir)
        .args(extra)
        .args(["--format", "json"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    match serde_json::from_str(&stdout(&o)) {
        Ok(Value::Array(v)) => v,
        other => panic!("not a JSON array: {other:?}: {}", stdout(&o)),
    }
}

fn order(tmp: &Path, url: &str, n: usize) {
    let ts = now();
    let file = tmp.join(format!("order-{n}.jsonl"));
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            format_args!(r#"{{"type":"identify","user":"u-buyer","ts":"{ts}","id":"b-id-{n}","traits":{{"email":"buyer@example.com","first_name":"Bea"}}}}"#),
            format_args!(r#"{{"type":"track","user":"u-buyer","ts":"{ts}","id":"b-order-{n}","event":"order_completed","props":{{"order_id":"o-{n}","cart_id":"c-{n}","total":42.5,"currency":"EUR"}}}}"#),
        ),
    )
    .expect("write");
    let o = run(sluice()
        .arg("send-events")
        .arg(&file)
        .args(["--server", url, "--token", INGEST]));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn dead_webhook_listed_and_replayed_through_the_api() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shop");
    let port = free_port();
    let crm = Receiver::start(400);
    shop(&dir, port, crm.port);
    let server = Server::start(&dir, &tmp.path().join("store"), port);
    let url = server.url();
    let api = ["--server", url.as_str(), "--token", ADMIN];
    assert!(dlq_list(&dir, &api).is_empty());
    order(tmp.path(), &url, 1);

    // The CRM answers 400: permanent, a dead letter.
    let mut letters = Vec::new();
    eventually("a dead letter", || {
        letters = dlq_list(&dir, &api);
        letters.iter().any(|l| l["channel"] == "webhook")
    });
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    let keys: Vec<&str> = l
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["id", "at", "user", "journey", "step", "channel", "key", "attempts", "reason"]
    );
    assert_eq!(l["user"], "u-buyer");
    assert_eq!(l["journey"], "order-confirmation");
    assert_eq!(l["step"], "crm-sync");
    assert_eq!(l["channel"], "webhook");
    assert!(
        l["reason"].as_str().is_some_and(|r| r.contains("400")),
        "{l}"
    );
    let key = l["key"].as_str().expect("key").to_owned();
    assert_eq!(crm.hits.load(Ordering::SeqCst), 1);

    // The human list names it too.
    let o = run(sluice().args(["dlq", "list"]).arg(&dir).args(api));
    assert!(stdout(&o).contains(&key), "{}", stdout(&o));

    // Fixed: replay everything; delivered with the same key, gone.
    crm.status.store(200, Ordering::SeqCst);
    let o = run(sluice()
        .args(["dlq", "replay", "--all"])
        .arg(&dir)
        .args(api));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "replayed 1");
    eventually("the replayed delivery", || {
        crm.hits.load(Ordering::SeqCst) >= 2 && dlq_list(&dir, &api).is_empty()
    });
    let keys = crm.keys.lock().expect("keys").clone();
    assert_eq!(keys, [key.clone(), key]);

    // Nothing left to replay by id: exit 1.
    let o = run(sluice().args(["dlq", "replay", "1"]).arg(&dir).args(api));
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn dead_webhook_replayed_on_the_store_then_delivered_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shop");
    let store = tmp.path().join("store");
    let store_arg = store.display().to_string();
    let port = free_port();
    let crm = Receiver::start(400);
    shop(&dir, port, crm.port);
    let mut server = Server::start(&dir, &store, port);
    order(tmp.path(), &server.url(), 1);
    eventually("the refused delivery", || {
        crm.hits.load(Ordering::SeqCst) >= 1
    });
    // Locked store: the list goes through the API (the Project's address).
    eventually("a dead letter", || {
        dlq_list(&dir, &["--store", &store_arg, "--token", ADMIN])
            .iter()
            .any(|l| l["channel"] == "webhook")
    });
    server.stop();

    let letters = dlq_list(&dir, &["--store", &store_arg]);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let id = letters[0]["id"].as_u64().expect("id");
    crm.status.store(200, Ordering::SeqCst);
    let o = run(sluice()
        .args(["dlq", "replay", &id.to_string()])
        .arg(&dir)
        .args(["--store", &store_arg]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "replayed 1");
    assert!(stderr(&o).contains("when it next starts"), "{}", stderr(&o));
    // Re-queued, not delivered: still listed until a run delivers it.
    assert_eq!(crm.hits.load(Ordering::SeqCst), 1);

    let server = Server::start(&dir, &store, port);
    eventually("the delivery at start", || {
        crm.hits.load(Ordering::SeqCst) >= 2
    });
    let url = server.url();
    eventually("an empty queue", || {
        dlq_list(&dir, &["--server", &url, "--token", ADMIN]).is_empty()
    });
}
