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

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use mail_parser::MessageParser;
use serde_json::{json, Value};

use support::events::now_ts;
use support::port::free_port;
use support::server::SluiceRun;
use support::smtp::SmtpServer;
use support::wait::poll_for;

const INGEST: &str = "ingest-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`.
fn wait_for<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_for(limit, Duration::from_millis(50), what, f)
}

// ------------------------------------------------------------- sluice run

/// `sluice run` on a copy of `tests/fixtures/smtp/service`; killed when
/// dropped.
struct Service {
    run: SluiceRun,
    _root: tempfile::TempDir,
}

impl Service {
    /// A repository: the fixture with its SMTP port, and `edit` applied to
    /// its `sluice.yaml`.
    fn repo(smtp: u16, edit: impl Fn(String) -> String) -> (tempfile::TempDir, PathBuf) {
        let (root, repo) =
            support::fixture::temp_copy("smtp/service", &[("__SMTP__", smtp.to_string())]);
        let project = repo.join("sluice.yaml");
        let text = std::fs::read_to_string(&project).expect("read");
        std::fs::write(&project, edit(text)).expect("write");
        (root, repo)
    }

    fn command(repo: &std::path::Path) -> SluiceRun {
        SluiceRun::new(repo)
            .args(&["--drain", "5"])
            .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
    }

    fn start(smtp: u16) -> Service {
        let (root, repo) = Service::repo(smtp, |t| t);
        let run = Service::command(&repo)
            .ready_within(Duration::from_secs(20))
            .start();
        Service { run, _root: root }
    }

    fn post_events(&self, events: &[Value]) {
        let r = self.run.post_events(INGEST, events);
        assert_eq!(r.status, 202, "{}", r.text);
    }

    fn get(&self, path: &str) -> Value {
        let r = self.run.request("GET", path, Some(ADMIN), b"");
        assert_eq!(r.status, 200, "GET {path}: {}", r.text);
        serde_json::from_str(&r.text).expect("JSON")
    }
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
    let mut run = Service::command(&repo);
    for (k, v) in env {
        run = run.env(k, v);
    }
    let (status, err) = run.run_to_exit(Duration::from_secs(30));
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
