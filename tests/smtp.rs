//! `sluice run` delivering email over SMTP, end to end: the real binary, a
//! real SMTP server (aiosmtpd, `tests/fixtures/smtp/server.py`) started by
//! the test on 127.0.0.1, the mail parsed back with mail-parser.
//!
//! - what arrives is RUN.md §3's message (Message-ID from the key, UTF-8
//!   subject, List-Unsubscribe with List-Unsubscribe-Post);
//! - SMTP down for a while, then back: everything delivered, nothing
//!   twice;
//! - a 550 for one recipient: the message is dead-lettered, the profile
//!   says `email_status: bounced`, the others are delivered;
//! - at start-up, an unreachable server or a missing or unreadable DKIM key
//!   is an exit 1 naming the host or the variable.
//!
//! Needs `python3` with aiosmtpd: `.ci/install/smtp.sh` installs it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mail_parser::MessageParser;
use serde_json::{json, Value};

const INGEST: &str = "ingest-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[allow(clippy::disallowed_methods)]
fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

// ------------------------------------------------------------ SMTP server

/// aiosmtpd on 127.0.0.1; stopped when dropped.
struct SmtpServer {
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl SmtpServer {
    fn start(args: &[&str]) -> SmtpServer {
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 with aiosmtpd is needed: run .ci/install/smtp.sh"
        );
        let mut s = SmtpServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut child = Command::new("python3")
            .arg(root().join("tests/fixtures/smtp/server.py"))
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start server.py");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("server.py ready within 20 s");
        assert_eq!(line.trim(), "ready");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every message received: (envelope, parsed Message-ID, bytes).
    fn received(&self) -> Vec<(Value, String, Vec<u8>)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|eml| {
                let meta = std::fs::read_to_string(eml.with_extension("json")).expect("json");
                let raw = std::fs::read(&eml).expect("eml");
                let id = MessageParser::default()
                    .parse(&raw)
                    .and_then(|m| m.message_id().map(str::to_owned))
                    .expect("a Message-ID");
                (serde_json::from_str(&meta).expect("meta"), id, raw)
            })
            .collect()
    }

    fn wait_received(&self, n: usize) -> Vec<(Value, String, Vec<u8>)> {
        wait_for(Duration::from_secs(30), &format!("{n} mails"), || {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------- sluice run

fn copy_fixture(from: &Path, to: &Path, smtp: u16) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_fixture(&src, &dst, smtp);
        } else {
            let text = std::fs::read_to_string(&src).expect("read");
            std::fs::write(&dst, text.replace("__SMTP__", &smtp.to_string())).expect("write");
        }
    }
}

struct Service {
    _root: tempfile::TempDir,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Service {
    /// A repository: the fixture with its SMTP port, and `edit` applied to
    /// its `sluice.yaml`.
    fn repo(smtp: u16, edit: impl Fn(String) -> String) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().expect("tempdir");
        let repo = root.path().join("repo");
        copy_fixture(&root_fixture(), &repo, smtp);
        let project = repo.join("sluice.yaml");
        let text = std::fs::read_to_string(&project).expect("read");
        std::fs::write(&project, edit(text)).expect("write");
        (root, repo)
    }

    fn command(repo: &Path, port: u16) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.arg("run")
            .arg(repo)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--drain", "5"])
            .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
            .env(
                "SLUICE_LOG",
                std::env::var("SLUICE_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    fn start(smtp: u16) -> Service {
        let (root, repo) = Service::repo(smtp, |t| t);
        let port = free_port();
        let log = root.path().join("sluice.log");
        let child = Service::command(&repo, port)
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start sluice run");
        let mut s = Service {
            _root: root,
            log,
            port,
            child: Some(child),
        };
        wait_for(Duration::from_secs(20), "sluice run ready", || {
            if let Some(status) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("sluice run exited ({status}):\n{}", s.logs());
            }
            http(s.port, "GET", "/readyz", None, b"")
                .ok()
                .filter(|(code, _)| *code == 200)
        });
        s
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn post_events(&self, events: &[Value]) {
        let body: String = events.iter().map(|e| format!("{e}\n")).collect();
        let (code, answer) = http(
            self.port,
            "POST",
            "/v1/events",
            Some(INGEST),
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("POST /v1/events: {e}\n{}", self.logs()));
        assert_eq!(code, 202, "{answer}");
    }

    fn get(&self, path: &str) -> Value {
        let (code, body) = http(self.port, "GET", path, Some(ADMIN), b"").expect("GET");
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- sluice run's log -----\n{}", self.logs());
        }
    }
}

fn root_fixture() -> PathBuf {
    root().join("tests/fixtures/smtp/service")
}

/// One request with `Connection: close`: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n.min(after.len())]);
            rest = after.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

fn signup(user: &str, email: &str) -> Vec<Value> {
    vec![
        json!({"type":"identify","user":user,"id":format!("{user}-identify"),"ts":now_ts(),
               "traits":{"email":email,"first_name":"Zoë"}}),
        json!({"type":"track","user":user,"id":format!("{user}-signup"),"event":"signed_up","ts":now_ts(),"props":{}}),
    ]
}

// ------------------------------------------------------------------ tests

#[test]
fn run_sends_run_md_messages_over_smtp() {
    let smtp = SmtpServer::start(&[]);
    let s = Service::start(smtp.port);
    s.post_events(&signup("u1", "Zoë Müller <zoe@example.com>"));
    s.post_events(&[
        json!({"type":"track","user":"u1","id":"o1","event":"order_completed",
                          "ts":now_ts(),"props":{"order_id":"A-17"}}),
    ]);
    let got = smtp.wait_received(2);
    let by_subject = |needle: &str| {
        got.iter()
            .map(|(meta, _, raw)| (meta, MessageParser::default().parse(raw).expect("parses")))
            .find(|(_, m)| m.subject().is_some_and(|s| s.contains(needle)))
            .unwrap_or_else(|| panic!("no mail with {needle:?}"))
    };
    let (meta, welcome) = by_subject("Bienvenue");
    assert_eq!(welcome.subject(), Some("Bienvenue, Zoë — ton panier 🛒"));
    assert_eq!(meta["rcpt_tos"], json!(["zoe@example.com"]));
    assert_eq!(meta["mail_from"], "hello@shop.example");
    let id = welcome.message_id().expect("Message-ID");
    assert!(id.ends_with("@shop.example"), "{id}");
    let key = id.trim_end_matches("@shop.example");
    let unsub = welcome
        .header_raw("List-Unsubscribe")
        .expect("List-Unsubscribe")
        .trim();
    assert!(
        unsub.starts_with("<https://hooks.shop.example/v1/unsubscribe/"),
        "{unsub}"
    );
    assert_eq!(
        welcome.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    let text = welcome.body_text(0).expect("text");
    assert!(
        text.contains(unsub.trim_matches(['<', '>'])),
        "the template's unsubscribe_url is the header's: {text}"
    );
    let (_, receipt) = by_subject("Order A-17");
    assert!(receipt.header_raw("List-Unsubscribe").is_none());

    // The message's key is the one `inspect` shows.
    let user = s.get("/v1/users/u1");
    let keys: Vec<&str> = user["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["key"].as_str())
        .collect();
    assert!(keys.contains(&key), "{key} in {keys:?}");
}

#[test]
fn smtp_down_for_a_while_then_back_delivers_everything_once() {
    let mut smtp = SmtpServer::start(&[]);
    let s = Service::start(smtp.port);
    smtp.stop();
    let users: Vec<String> = (0..20).map(|i| format!("down{i}")).collect();
    for u in &users {
        s.post_events(&signup(u, &format!("{u}@example.com")));
    }
    // Retries go on while it is down.
    std::thread::sleep(Duration::from_secs(1));
    assert!(smtp.received().is_empty());
    smtp.spawn();
    let got = smtp.wait_received(users.len());
    // Give a duplicate time to show up.
    std::thread::sleep(Duration::from_secs(2));
    let got_after = smtp.received();
    assert_eq!(got_after.len(), got.len(), "nothing sent twice");
    let ids: BTreeSet<&str> = got_after.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), users.len(), "one distinct Message-ID per user");
    let rcpts: BTreeSet<String> = got_after
        .iter()
        .map(|(m, _, _)| m["rcpt_tos"][0].as_str().expect("rcpt").to_owned())
        .collect();
    let expected: BTreeSet<String> = users.iter().map(|u| format!("{u}@example.com")).collect();
    assert_eq!(rcpts, expected);
    assert!(s.get("/v1/dlq").as_array().expect("dlq").is_empty());
}

#[test]
fn a_550_for_one_recipient_dead_letters_it_and_marks_it_bounced() {
    let smtp = SmtpServer::start(&["--reject", "gone@example.com"]);
    let s = Service::start(smtp.port);
    s.post_events(&signup("gone", "gone@example.com"));
    s.post_events(&signup("fine", "fine@example.com"));
    let got = smtp.wait_received(1);
    assert_eq!(got[0].0["rcpt_tos"], json!(["fine@example.com"]));
    let dlq = wait_for(Duration::from_secs(20), "a dead letter", || {
        let d = s.get("/v1/dlq");
        let d = d.as_array().expect("dlq").clone();
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["user"], "gone");
    assert_eq!(dlq[0]["attempts"], 1, "permanent: no retry");
    let reason = dlq[0]["reason"].as_str().expect("reason");
    assert!(reason.contains("550"), "{reason}");
    assert!(!reason.contains("gone@example.com"), "{reason}");
    let user = wait_for(Duration::from_secs(10), "the bounce on the profile", || {
        let u = s.get("/v1/users/gone");
        (u["profile"]["email_status"] == "bounced").then_some(u)
    });
    let failed = user["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .any(|m| m["outcome"] == "failed");
    assert!(failed, "{user}");
    assert!(s.get("/v1/users/fine")["profile"]["email_status"].is_null());

    // Later email to that user is suppressed `bounced` (RUN.md §3), even a
    // transactional receipt; nothing more reaches the server for it.
    s.post_events(&[json!({"type":"track","user":"gone","id":"gone-o1",
        "event":"order_completed","ts":now_ts(),"props":{"order_id":"B-1"}})]);
    let receipt = wait_for(Duration::from_secs(10), "the receipt's decision", || {
        let u = s.get("/v1/users/gone");
        u["messages"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["journey"] == "receipt").cloned())
    });
    assert_eq!(receipt["outcome"], "suppressed", "{receipt}");
    assert_eq!(receipt["reason"], "bounced", "{receipt}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(smtp
        .received()
        .iter()
        .all(|(m, _, _)| m["rcpt_tos"] != json!(["gone@example.com"])));
}

/// `sluice run` with `edit` applied to the fixture's Project and `env`
/// set: it must exit 1 quickly; its stderr.
fn start_fails(smtp: u16, edit: impl Fn(String) -> String, env: &[(&str, &str)]) -> String {
    let (_root, repo) = Service::repo(smtp, edit);
    let mut c = Service::command(&repo, free_port());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.stderr(Stdio::piped()).spawn().expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice run did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn start_up_names_an_unreachable_server_and_a_bad_dkim_key() {
    // Nothing listens on this port.
    let nobody = free_port();
    let err = start_fails(nobody, |t| t, &[]);
    assert!(err.contains(&format!("127.0.0.1:{nobody}")), "{err}");
    assert!(err.contains("unreachable"), "{err}");

    let smtp = SmtpServer::start(&[]);
    let with_dkim = |t: String| {
        t.replace(
            "    pool: 4\n",
            "    pool: 4\n    dkim: { domain: shop.example, selector: s1, private_key_env: TEST_DKIM_KEY }\n",
        )
    };
    let err = start_fails(smtp.port, with_dkim, &[]);
    assert!(err.contains("TEST_DKIM_KEY"), "{err}");
    let err = start_fails(
        smtp.port,
        with_dkim,
        &[(
            "TEST_DKIM_KEY",
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        )],
    );
    assert!(
        err.contains("TEST_DKIM_KEY") && err.contains("unreadable"),
        "{err}"
    );
    assert!(!err.contains("bm90IGEga2V5"), "the key leaks: {err}");
    assert!(smtp.received().is_empty());
}
