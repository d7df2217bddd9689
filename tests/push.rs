//! Push through `sluice run` end to end: the FCM and APNs providers of a
//! real service talking to local peers (`pushpeers`, on 127.0.0.1) that
//! check the JWTs' signatures and claims. A user with two tokens, one of
//! which the peer calls unregistered: the other token gets the message,
//! and the gone one leaves the user's `push_tokens` (`GET /v1/users/{id}`).
//! And malformed credentials at start-up: exit 1, naming the variable.
//!
//! Fixtures: `tests/fixtures/push-fcm`, `tests/fixtures/push-apns`, copied
//! to a temporary directory with `__PEER__` replaced by the peer's port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pushpeers::{ApnsPeer, FcmPeer};
use serde_json::{json, Value};

const INGEST: &str = "ingest-token-for-push-tests";
const ADMIN: &str = "admin-token-for-push-tests";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("tests/fixtures")
        .join(name)
}

fn copy_fixture(from: &Path, to: &Path, port: u16) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_fixture(&src, &dst, port);
        } else {
            let text = std::fs::read_to_string(&src).expect("read");
            std::fs::write(&dst, text.replace("__PEER__", &port.to_string())).expect("write");
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[allow(clippy::disallowed_methods)]
fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request with `Connection: close`: status and body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad answer");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16)
                .map_err(|_| bad())?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[nl + 4 + size..];
        }
        body = out;
    }
    Ok((status, body))
}

/// `sluice run` on a copy of a fixture; killed when dropped.
struct Service {
    _root: tempfile::TempDir,
    log: PathBuf,
    port: u16,
    child: Child,
}

impl Service {
    fn start(fixture_name: &str, peer_port: u16, env: (&str, &str)) -> Service {
        let root = tempfile::tempdir().expect("tempdir");
        let repo = root.path().join("repo");
        copy_fixture(&fixture(fixture_name), &repo, peer_port);
        let log = root.path().join("sluice.log");
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .arg("run")
                .arg(&repo)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--drain", "5"])
                .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
                .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
                .env(env.0, env.1)
                .env(
                    "SLUICE_LOG",
                    std::env::var("SLUICE_LOG").unwrap_or("warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("start sluice run");
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    // Another process took the port: try another one.
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    assert!(
                        text.contains("cannot listen"),
                        "sluice run exited ({status}):\n{text}"
                    );
                    break;
                }
                if http(port, "GET", "/readyz", "", b"").is_ok_and(|(st, _)| st == 200) {
                    return Service {
                        _root: root,
                        log,
                        port,
                        child,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "not ready in 15 s:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start sluice run on a free port");
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn post_events(&self, events: &[Value]) {
        let body: String = events.iter().map(|e| format!("{e}\n")).collect();
        let (status, answer) = http(self.port, "POST", "/v1/events", INGEST, body.as_bytes())
            .unwrap_or_else(|e| panic!("POST /v1/events: {e}\n{}", self.logs()));
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    }

    fn user(&self, id: &str) -> Value {
        let (status, body) = http(self.port, "GET", &format!("/v1/users/{id}"), ADMIN, b"")
            .unwrap_or_else(|e| panic!("GET user: {e}"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("JSON")
    }

    fn push_tokens(&self, id: &str) -> Value {
        let u = self.user(id);
        u.get("profile")
            .and_then(|p| p.get("push_tokens"))
            .or_else(|| u.get("push_tokens"))
            .cloned()
            .unwrap_or(Value::Null)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- sluice run's log -----\n{}", self.logs());
        }
    }
}

/// Ana with two tokens updates her cart: the journey sends a push.
fn cart_events(tokens: &[&str]) -> Vec<Value> {
    vec![
        json!({"type":"identify","user":"ana","id":"ana-identify","ts":now_ts(),
               "traits":{"first_name":"Ana","push_tokens":tokens}}),
        json!({"type":"track","user":"ana","id":"ana-cart","event":"cart_updated","ts":now_ts(),
               "props":{"cart_id":"c-17","items":3}}),
    ]
}

#[test]
fn fcm_gone_token_leaves_push_tokens_while_the_other_gets_the_message() {
    let peer = FcmPeer::start("shop-app");
    peer.state().unregistered.insert("fcm-gone".into());
    let credentials = peer.service_account();
    let service = Service::start(
        "push-fcm",
        port_of(&peer.endpoint()),
        ("SLUICE_TEST_FCM_CREDENTIALS", &credentials),
    );
    service.post_events(&cart_events(&["fcm-live", "fcm-gone"]));
    let sent = wait_for(Duration::from_secs(10), "the FCM send", || {
        let st = peer.state();
        (!st.sent.is_empty()).then(|| st.sent.clone())
    });
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].token, "fcm-live");
    let m = &sent[0].message;
    assert_eq!(m["notification"]["title"], "Your cart, Ana");
    assert_eq!(m["notification"]["body"], "3 items are waiting.");
    assert_eq!(m["data"]["cart_id"], "c-17");
    assert!(
        m["data"]["sluice_key"]
            .as_str()
            .is_some_and(|k| k.len() == 32),
        "{m}"
    );
    wait_for(
        Duration::from_secs(10),
        "fcm-gone to leave push_tokens",
        || (service.push_tokens("ana") == json!(["fcm-live"])).then_some(()),
    );
    let st = peer.state();
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    assert_eq!(st.issued.len(), 1, "one OAuth exchange");
    assert_eq!(st.requests, 2, "one request per token");
}

#[test]
fn apns_gone_token_leaves_push_tokens_while_the_other_gets_the_message() {
    let peer = ApnsPeer::start("com.shop.app");
    peer.state().unregistered.insert("dead0001".into());
    peer.state().bad.insert("bad00001".into());
    let key = peer.key_pem().to_owned();
    let service = Service::start(
        "push-apns",
        port_of(&peer.endpoint()),
        ("SLUICE_TEST_APNS_KEY", &key),
    );
    service.post_events(&cart_events(&["dead0001", "abcd0001", "bad00001"]));
    let sent = wait_for(Duration::from_secs(10), "the APNs send", || {
        let st = peer.state();
        (!st.sent.is_empty()).then(|| st.sent.clone())
    });
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].token, "abcd0001");
    assert_eq!(sent[0].payload["aps"]["alert"]["title"], "Your cart, Ana");
    let key = sent[0].payload["sluice_key"]
        .as_str()
        .expect("sluice_key")
        .to_owned();
    assert_eq!(sent[0].collapse_id.as_deref(), Some(key.as_str()));
    wait_for(
        Duration::from_secs(10),
        "the gone tokens to leave push_tokens",
        || (service.push_tokens("ana") == json!(["abcd0001"])).then_some(()),
    );
    let st = peer.state();
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    assert_eq!(st.jwts.len(), 1, "one provider token");
}

/// `sluice run` with `var` set to `value`: its exit code and stderr.
fn start_with(fixture_name: &str, var: &str, value: Option<&str>) -> (Option<i32>, String) {
    let root = tempfile::tempdir().expect("tempdir");
    let repo = root.path().join("repo");
    copy_fixture(&fixture(fixture_name), &repo, 9);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("run")
        .arg(&repo)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
        .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
        .env_remove(var)
        .stdin(Stdio::null());
    if let Some(v) = value {
        cmd.env(var, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice run");
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sluice run started despite bad credentials in {var}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_credentials_stop_the_start_naming_the_variable() {
    for (fixture_name, var, value, says) in [
        (
            "push-fcm",
            "SLUICE_TEST_FCM_CREDENTIALS",
            Some("{\"client_email\": \"x@y\""),
            "not a service account JSON",
        ),
        (
            "push-fcm",
            "SLUICE_TEST_FCM_CREDENTIALS",
            Some("{\"client_email\":\"x@y\",\"private_key\":\"garbage\"}"),
            "private_key",
        ),
        ("push-fcm", "SLUICE_TEST_FCM_CREDENTIALS", None, "not set"),
        (
            "push-apns",
            "SLUICE_TEST_APNS_KEY",
            Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            ".p8",
        ),
        ("push-apns", "SLUICE_TEST_APNS_KEY", None, "not set"),
    ] {
        let (code, stderr) = start_with(fixture_name, var, value);
        assert_eq!(code, Some(1), "{fixture_name} {value:?}: {stderr}");
        assert!(
            stderr.contains(var),
            "{fixture_name}: names the variable: {stderr}"
        );
        assert!(
            stderr.contains(says),
            "{fixture_name}: says {says:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("garbage"),
            "the credentials are not quoted: {stderr}"
        );
    }
}
