//! The SMTP provider against a real SMTP server (aiosmtpd, started here on
//! 127.0.0.1 by `tests/fixtures/smtp/server.py`): the message of RUN.md §3
//! as received and parsed back, the pool, STARTTLS and implicit TLS with a
//! self-signed certificate made here, AUTH, DKIM signatures verified by
//! dkimpy, and what 550, 451, a dead server and a restarted one become.
//!
//! Needs `python3` with aiosmtpd, dkimpy and PyNaCl:
//! `.ci/install/smtp.sh` installs them.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::deliver::dkim::Dkim;
use engine::deliver::sign::{UnsubscribeLinks, UnsubscribeSigner};
use engine::deliver::smtp::{self, Server, Smtp};
use engine::deliver::{Attempt, Error, FailureKind, Provider};
use engine::dispatch::{AddressNews, Content, Message};
use journeys::compiled::{Channel, DkimSettings};
use mail_parser::{MessageParser, MimeHeaders};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::Value;
use support::port::free_port;

const AT: i64 = 1_772_442_000_000; // 2026-03-02T09:00:00Z

fn fixture(name: &str) -> PathBuf {
    support::fixture::fixture("smtp").join(name)
}

/// Fails with the fix when the Python peers are missing (CI installs them).
fn need_python() {
    let ok = Command::new("python3")
        .args(["-c", "import aiosmtpd, dkim, nacl"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with aiosmtpd, dkimpy and PyNaCl is needed: run .ci/install/smtp.sh"
    );
}

/// An aiosmtpd server; stopped when dropped.
struct Peer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
}

impl Peer {
    fn start(args: &[&str]) -> Peer {
        need_python();
        let mut p = Peer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none());
        let mut child = Command::new("python3")
            .arg(fixture("server.py"))
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
        assert_eq!(line.trim(), "ready", "server.py said {line:?}");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self, scheme: &str, query: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{query}", self.port)
    }

    /// Every message received so far: (envelope, bytes), in order.
    fn received(&self) -> Vec<(Value, Vec<u8>)> {
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
                (
                    serde_json::from_str(&meta).expect("meta"),
                    std::fs::read(&eml).expect("eml"),
                )
            })
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signer() -> Arc<dyn UnsubscribeLinks> {
    Arc::new(UnsubscribeSigner::new(
        "https://hooks.shop.example",
        b"unsub-secret",
        [
            ("cart".to_owned(), "marketing".to_owned()),
            ("receipt".to_owned(), "transactional".to_owned()),
        ],
    ))
}

fn config(url: &str) -> smtp::Config {
    smtp::Config {
        server: Server::parse(url).expect("url"),
        from: "Shöp Team <hello@shop.example>".into(),
        credentials: None,
        pool: 2,
        timeout: Duration::from_secs(10),
        ca: None,
        dkim: None,
    }
}

fn provider(config: smtp::Config) -> Smtp {
    Smtp::new(config, signer()).expect("smtp provider")
}

fn email(key: &str, journey: &str, to: &str) -> Message {
    Message {
        key: key.into(),
        at: AT,
        user: "u1".into(),
        journey: journey.into(),
        version: 1,
        step: "send_email".into(),
        channel: Channel::Email,
        template: "t".into(),
        content: Content::Email {
            to: Some(to.into()),
            from: None,
            reply_to: None,
            subject: "Zoë, ton panier 🛒 t'attend — 42,50 €".into(),
            text: Some("Hi Zoë,\nyour cart is waiting: 42,50 €.".into()),
            html: Some("<p>Hi Zoë, your cart is <b>waiting</b>.</p>".into()),
        },
    }
}

fn attempt() -> Attempt {
    Attempt { number: 1, now: AT }
}

/// A self-signed certificate for 127.0.0.1, as PEM files in `dir`: (cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.key_pair.serialize_pem()).expect("write key");
    (cert, key)
}

#[tokio::test]
async fn plain_smtp_sends_the_message_of_run_md_over_pooled_connections() {
    let peer = Peer::start(&[]);
    let smtp = provider(config(&peer.url("smtp", "")));
    smtp.ready().await.expect("reachable");
    for i in 0..4 {
        let m = email(&format!("key{i}"), "cart", "Zoë Müller <zoe@example.com>");
        smtp.deliver(&m, attempt()).await.expect("delivered");
    }
    let got = peer.received();
    assert_eq!(got.len(), 4);
    // One after the other: one connection (the one `ready` opened) for all.
    let ports: std::collections::BTreeSet<_> =
        got.iter().map(|(m, _)| m["peer_port"].as_u64()).collect();
    assert_eq!(ports.len(), 1, "one connection reused: {ports:?}");
    for (i, (meta, raw)) in got.iter().enumerate() {
        assert_eq!(meta["mail_from"], "hello@shop.example");
        assert_eq!(meta["rcpt_tos"], serde_json::json!(["zoe@example.com"]));
        let m = MessageParser::default().parse(raw).expect("parses");
        assert_eq!(
            m.message_id(),
            Some(format!("key{i}@shop.example").as_str())
        );
        assert_eq!(m.subject(), Some("Zoë, ton panier 🛒 t'attend — 42,50 €"));
        let from = m.from().and_then(|a| a.first()).expect("from");
        assert_eq!(from.name(), Some("Shöp Team"));
        let to = m.to().and_then(|a| a.first()).expect("to");
        assert_eq!(to.name(), Some("Zoë Müller"));
        assert!(m.date().is_some());
        let unsub = m
            .header_raw("List-Unsubscribe")
            .expect("List-Unsubscribe")
            .trim()
            .to_owned();
        assert!(
            unsub.starts_with("<https://hooks.shop.example/v1/unsubscribe/"),
            "{unsub}"
        );
        assert_eq!(
            m.header_raw("List-Unsubscribe-Post").map(str::trim),
            Some("List-Unsubscribe=One-Click")
        );
        let ct = m.content_type().expect("content type");
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("multipart", Some("alternative"))
        );
        assert!(m.body_text(0).expect("text").contains("42,50 €"));
        assert!(m.body_html(0).expect("html").contains("<b>waiting</b>"));
    }

    // Concurrent sends share at most `pool` (2) connections.
    let smtp = Arc::new(smtp);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let smtp = Arc::clone(&smtp);
        tasks.push(tokio::spawn(async move {
            let m = email(&format!("many{i}"), "receipt", "zoe@example.com");
            smtp.deliver(&m, attempt()).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("delivered");
    }
    let got = peer.received();
    assert_eq!(got.len(), 16);
    let ports: std::collections::BTreeSet<_> =
        got.iter().map(|(m, _)| m["peer_port"].as_u64()).collect();
    assert!(ports.len() <= 2, "at most 2 connections: {ports:?}");
    // A transactional message carries no unsubscribe link.
    let last = MessageParser::default().parse(&got[15].1).expect("parses");
    assert!(last.header_raw("List-Unsubscribe").is_none());
}

#[tokio::test]
async fn starttls_with_a_private_ca_and_auth() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(certs.path());
    let peer = Peer::start(&[
        "--cert",
        cert.to_str().expect("path"),
        "--key",
        key.to_str().expect("path"),
        "--auth",
        "sluice:s3cret",
    ]);
    let url = peer.url("smtp", "?tls=required");
    let mut trusted = config(&url);
    trusted.ca = Some((cert.clone(), std::fs::read(&cert).expect("cert")));
    trusted.credentials = Some(("sluice".into(), "s3cret".into()));
    let smtp = provider(trusted.clone());
    smtp.ready().await.expect("STARTTLS with the CA");
    smtp.deliver(&email("tls1", "cart", "zoe@example.com"), attempt())
        .await
        .expect("delivered over STARTTLS");
    let got = peer.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["tls"], true, "encrypted: {}", got[0].0);
    assert_eq!(got[0].0["authenticated"], true);

    // Without the CA the certificate is refused: nothing is sent.
    let mut untrusted = trusted.clone();
    untrusted.ca = None;
    let e = provider(untrusted.clone())
        .ready()
        .await
        .expect_err("an unknown CA is refused");
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{}", peer.port)),
        "{e}"
    );
    let f = provider(untrusted)
        .deliver(&email("tls2", "cart", "zoe@example.com"), attempt())
        .await
        .expect_err("refused");
    assert_eq!(f.kind, FailureKind::Transient, "{f}");

    // A wrong password: the server's 535 is permanent, said at start-up.
    let mut wrong = trusted.clone();
    wrong.credentials = Some(("sluice".into(), "nope".into()));
    let e = provider(wrong).ready().await.expect_err("bad password");
    assert!(e.to_string().contains("535"), "{e}");
    assert!(!e.to_string().contains("nope"), "{e}");
    assert_eq!(peer.received().len(), 1);
}

#[tokio::test]
async fn smtps_speaks_tls_from_the_first_byte() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(certs.path());
    let peer = Peer::start(&[
        "--cert",
        cert.to_str().expect("path"),
        "--key",
        key.to_str().expect("path"),
        "--implicit-tls",
    ]);
    let mut c = config(&peer.url("smtps", ""));
    c.ca = Some((cert.clone(), std::fs::read(&cert).expect("cert")));
    let smtp = provider(c);
    smtp.deliver(&email("smtps1", "cart", "zoe@example.com"), attempt())
        .await
        .expect("delivered over implicit TLS");
    let got = peer.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["tls"], true);
}

/// Runs dkimpy on `raw` with `record` as the key's DNS TXT record.
fn dkim_verify(raw: &[u8], record: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (msg, rec) = (dir.path().join("m.eml"), dir.path().join("record.txt"));
    std::fs::write(&msg, raw).expect("write");
    std::fs::write(&rec, record).expect("write");
    let out = Command::new("python3")
        .arg(fixture("dkim_verify.py"))
        .arg(&msg)
        .arg(&rec)
        .output()
        .expect("run dkim_verify.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn dkim(private_key: String) -> Dkim {
    let settings = DkimSettings {
        domain: "shop.example".into(),
        selector: "s2026".into(),
        private_key_env: "TEST_DKIM_KEY".into(),
    };
    Dkim::from_settings(&settings, &move |name| {
        (name == "TEST_DKIM_KEY").then(|| private_key.clone())
    })
    .expect("dkim key")
}

/// The `DKIM-Signature` header of `raw`, unfolded.
fn signature(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().expect("head");
    let mut out = String::new();
    let mut inside = false;
    for line in head.split("\r\n") {
        if line.starts_with("DKIM-Signature:") {
            inside = true;
        } else if !line.starts_with([' ', '\t']) {
            inside = false;
        }
        if inside {
            out.push_str(line.trim());
        }
    }
    out
}

#[tokio::test]
async fn dkim_signatures_verify_with_dkimpy_rsa_and_ed25519() {
    let peer = Peer::start(&[]);

    // RSA, PKCS#8 PEM as `openssl genpkey` writes it.
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("rsa key");
    let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    let public = key.to_public_key().to_public_key_der().expect("der");
    let rsa_record = format!(
        "v=DKIM1; k=rsa; p={}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            public.as_bytes()
        )
    );

    // Ed25519 from a seed; its public key computed by PyNaCl.
    let seed = [42u8; 32];
    let seed_b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, seed);
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64,sys,nacl.signing as s; print(base64.b64encode(s.SigningKey(base64.b64decode(sys.argv[1])).verify_key.encode()).decode())",
            &seed_b64,
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ed_record = format!(
        "v=DKIM1; k=ed25519; p={}",
        String::from_utf8_lossy(&out.stdout).trim()
    );

    for (name, private, record) in [("rsa", pem, rsa_record), ("ed25519", seed_b64, ed_record)] {
        let mut c = config(&peer.url("smtp", ""));
        c.dkim = Some(dkim(private));
        let smtp = provider(c);
        let before = peer.received().len();
        smtp.deliver(
            &email(&format!("dkim-{name}"), "cart", "zoe@example.com"),
            attempt(),
        )
        .await
        .expect("delivered");
        let got = peer.received();
        let raw = &got[before].1;
        let sig = signature(raw);
        assert!(sig.contains(&format!("a={name}-sha256")), "{sig}");
        assert!(
            sig.contains("d=shop.example") && sig.contains("s=s2026"),
            "{sig}"
        );
        assert!(
            sig.replace(' ', "").contains(
                "h=from:to:subject:date:message-id:list-unsubscribe:list-unsubscribe-post;"
            ),
            "{sig}"
        );
        let (ok, said) = dkim_verify(raw, &record);
        assert!(
            ok,
            "{name}: dkimpy says\n{said}\n{}",
            String::from_utf8_lossy(raw)
        );
        assert!(
            said.contains("asked s2026._domainkey.shop.example"),
            "{said}"
        );

        // The unsubscribe link is covered: changing it breaks the signature.
        let text = String::from_utf8_lossy(raw).into_owned();
        let tampered = text.replacen("/v1/unsubscribe/", "/v1/unsubscribe/x", 1);
        assert_ne!(tampered, text);
        let (ok, said) = dkim_verify(tampered.as_bytes(), &record);
        assert!(
            !ok,
            "{name}: a changed List-Unsubscribe still verifies: {said}"
        );
    }
}

#[tokio::test]
async fn a_550_for_the_recipient_is_permanent_and_marks_it_bounced() {
    let peer = Peer::start(&["--reject", "gone@example.com"]);
    let smtp = provider(config(&peer.url("smtp", "")));
    let f = smtp
        .deliver(&email("b1", "cart", "Gone <gone@example.com>"), attempt())
        .await
        .expect_err("refused");
    assert_eq!(f.kind, FailureKind::Permanent, "{f}");
    assert!(
        f.reason.contains("550") && f.reason.contains("RCPT TO"),
        "{f}"
    );
    assert!(
        !f.reason.contains("gone@example.com"),
        "the address leaks: {f}"
    );
    assert_eq!(
        f.news,
        vec![AddressNews::EmailBounced {
            address: "gone@example.com".into()
        }]
    );
    // The connection was reset, not dropped: the next message uses it.
    smtp.deliver(&email("b2", "cart", "zoe@example.com"), attempt())
        .await
        .expect("delivered");
    smtp.deliver(&email("b3", "cart", "zoe@example.com"), attempt())
        .await
        .expect("delivered");
    let got = peer.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0["peer_port"], got[1].0["peer_port"]);
    assert_eq!(got[0].0["rcpt_tos"], serde_json::json!(["zoe@example.com"]));
}

#[tokio::test]
async fn a_451_is_transient_and_the_next_try_goes_through() {
    let peer = Peer::start(&["--tempfail", "1"]);
    let smtp = provider(config(&peer.url("smtp", "")));
    let m = email("t1", "cart", "zoe@example.com");
    let f = smtp.deliver(&m, attempt()).await.expect_err("451");
    assert_eq!(f.kind, FailureKind::Transient, "{f}");
    assert!(f.reason.contains("451"), "{f}");
    assert!(f.news.is_empty());
    smtp.deliver(&m, Attempt { number: 2, now: AT })
        .await
        .expect("second try delivered");
    assert_eq!(peer.received().len(), 1);
}

#[tokio::test]
async fn a_dead_server_is_transient_and_a_restarted_one_is_reused_at_once() {
    let mut peer = Peer::start(&[]);
    let smtp = provider(config(&peer.url("smtp", "")));
    smtp.deliver(&email("r1", "cart", "zoe@example.com"), attempt())
        .await
        .expect("delivered");
    peer.stop();
    let f = smtp
        .deliver(&email("r2", "cart", "zoe@example.com"), attempt())
        .await
        .expect_err("server down");
    assert_eq!(f.kind, FailureKind::Transient, "{f}");
    assert!(
        f.reason.contains(&format!("127.0.0.1:{}", peer.port)),
        "{f}"
    );
    let e = smtp.ready().await.expect_err("down at start-up");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{}", peer.port)),
        "{e}"
    );
    peer.spawn();
    smtp.deliver(&email("r2", "cart", "zoe@example.com"), attempt())
        .await
        .expect("delivered once the server is back");
    // A pooled connection the server closed is replaced without a failure.
    smtp.deliver(&email("r3", "cart", "zoe@example.com"), attempt())
        .await
        .expect("delivered");
    peer.stop();
    peer.spawn();
    let started = Instant::now();
    smtp.deliver(&email("r4", "cart", "zoe@example.com"), attempt())
        .await
        .expect("a stale pooled connection is replaced at once");
    assert!(started.elapsed() < Duration::from_secs(10));
    let keys: Vec<String> = peer
        .received()
        .iter()
        .map(|(_, raw)| {
            MessageParser::default()
                .parse(raw)
                .and_then(|m| m.message_id().map(str::to_owned))
                .expect("message id")
        })
        .collect();
    assert_eq!(
        keys,
        [
            "r1@shop.example",
            "r2@shop.example",
            "r3@shop.example",
            "r4@shop.example"
        ]
    );
}
