//! `sluice run --cluster` from an on-call engineer's side, on a real
//! nats-server started here (127.0.0.1): the mistakes made starting a
//! worker get one clear sentence and a non-zero exit, the routes not
//! there yet in cluster mode say so and what to do instead, and a stream
//! deleted in NATS under a running worker is said, not hidden.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use support::cli::{output, sluice, stderr};
use support::nats::Nats;
use support::port::free_port;
use support::receiver::Receiver;
use support::server::SluiceRun;

/// A miette report without its gutter and without any white space, so
/// that a sentence wrapped anywhere (even inside `--cluster-name`) reads
/// whole.
fn squashed(report: &str) -> String {
    report
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '×' | '│'))
        .collect()
}

fn worker(dir: &std::path::Path, store: &std::path::Path, url: &str) -> SluiceRun {
    SluiceRun::new(dir)
        .store(store)
        .listen_on(free_port())
        .env("SLUICE_INGEST_TOKEN", "ingest-token")
        .env("SLUICE_ADMIN_TOKEN", "admin-token")
        .args(&["--cluster", url, "--partitions", "4"])
        .ready_within(Duration::from_secs(30))
}

/// Two workers given the same `--store` (docs/cluster.md: "give each
/// worker on a machine its own") would open, wipe and restore the same
/// partitions' local stores under each other. The second refuses to start
/// (was: it joined and took partitions in the first one's directory).
#[test]
fn a_second_worker_on_the_same_store_refuses_to_start() {
    let nats = Nats::single();
    let receiver = Receiver::ok();
    let (tmp, dir) =
        support::fixture::temp_copy("crash-run", &[("__PORT__", receiver.port.to_string())]);
    let store = tmp.path().join("w");
    let mut first = worker(&dir, &store, &nats.url()).start();
    let (status, logs) = worker(&dir, &store, &nats.url()).run_to_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{logs}");
    assert!(
        logs.contains("is in use by another sluice process")
            && logs.contains("its own --store")
            && !logs.contains("panicked"),
        "{logs}"
    );
    // The first goes on, and once it stopped the store is free again.
    assert_eq!(first.request("GET", "/readyz", None, b"").status, 200);
    first.stop(Duration::from_secs(20));
    let mut again = worker(&dir, &store, &nats.url()).start();
    again.stop(Duration::from_secs(20));
}

/// Deployments, reports and email feedback are not there in cluster mode
/// yet (docs/cluster.md): the 503 names cluster mode and, for
/// deployments, the way to change the config (was: "deployments are not
/// available here", "this engine does not keep reports").
#[test]
fn routes_not_in_cluster_mode_yet_say_so_and_what_to_do() {
    let nats = Nats::single();
    let receiver = Receiver::ok();
    let (tmp, dir) =
        support::fixture::temp_copy("crash-run", &[("__PORT__", receiver.port.to_string())]);
    let mut w = worker(&dir, &tmp.path().join("w"), &nats.url()).start();
    let server = w.base_url();
    let apply = output(
        sluice()
            .args(["apply", "--server", &server, "--token", "admin-token"])
            .arg(&dir),
    );
    let said = stderr(&apply);
    assert_eq!(apply.status.code(), Some(1), "{said}");
    assert!(
        squashed(&said).contains("deploymentsarenotavailableinclustermodeyet")
            && squashed(&said).contains("withanew--cluster-name"),
        "{said}"
    );
    let report = output(
        sluice()
            .args(["report", "--server", &server, "--token", "admin-token"])
            .arg(&dir),
    );
    let said = stderr(&report);
    assert_eq!(report.status.code(), Some(1), "{said}");
    assert!(
        squashed(&said).contains("reportsarenotavailableinclustermodeyet"),
        "{said}"
    );
    w.stop(Duration::from_secs(20));
}

/// The event stream deleted in NATS under a running worker (an operator's
/// `nats stream rm`): the worker stops saying it is ready, and says why,
/// and ingest answers 503 naming the stream, instead of /readyz 200 while
/// nothing can be stored.
#[test]
fn a_deleted_event_stream_makes_the_worker_unready_and_says_which() {
    let nats = Nats::single();
    let receiver = Receiver::ok();
    let (tmp, dir) =
        support::fixture::temp_copy("crash-run", &[("__PORT__", receiver.port.to_string())]);
    let mut w = worker(&dir, &tmp.path().join("w"), &nats.url())
        .env("SLUICE_STREAM_CHECK_MS", "500")
        .start();
    let event =
        br#"{"type":"track","user":"u1","event":"signup","id":"e1","ts":"2026-03-02T10:00:00Z"}"#;
    let r = w.request("POST", "/v1/events", Some("ingest-token"), event);
    assert_eq!(r.status, 202, "{}", r.text);
    nats.jetstream(|js| async move {
        js.delete_stream("sluice_EV")
            .await
            .expect("delete the stream");
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let ready = loop {
        let r = w.request("GET", "/readyz", None, b"");
        if r.status != 200 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(ready.text.contains("sluice_EV"), "{}", ready.text);
    let r = w.request("POST", "/v1/events", Some("ingest-token"), event);
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("sluice_EV"), "{}", r.text);
    let logs = w.logs();
    assert!(
        logs.contains("sluice_EV") && !logs.contains("panicked"),
        "{logs}"
    );
    w.kill();
}

/// The worker holding partition `p`'s lease in the cluster `sluice`.
fn lease_holder(nats: &Nats, p: u32) -> String {
    nats.jetstream(|js| async move {
        let leases = js.get_key_value("sluice_leases").await.expect("the leases");
        let held = leases
            .get(format!("p{p}"))
            .await
            .expect("read the lease")
            .expect("a holder");
        let v: serde_json::Value = serde_json::from_slice(&held).expect("JSON");
        v["owner"].as_str().expect("owner").to_owned()
    })
}

/// A mailbox provider posts an RFC 8058 one-click unsubscribe once, to
/// whichever worker its load balancer picks. Each of two workers applies
/// it, the one that does not own the user's partition by asking the owner
/// over NATS (was: 503 there, and the unsubscribe was lost); a forged token
/// still gets 404 from either. The user's record is read, and erased,
/// through the worker that does not own it the same way.
#[test]
fn a_one_click_unsubscribe_is_applied_whichever_worker_it_reaches() {
    use mail_parser::MessageParser;

    let nats = Nats::single();
    let receiver = Receiver::ok();
    let (tmp, dir) =
        support::fixture::temp_copy("run/service", &[("__HOOK__", receiver.port.to_string())]);
    let start = |name: &str| {
        worker(&dir, &tmp.path().join(name), &nats.url())
            .env("SLUICE_TEST_INGEST_TOKEN", "ingest-token")
            .env("SLUICE_TEST_ADMIN_TOKEN", "admin-token")
            .env("SLUICE_TEST_WEBHOOK_SECRET", "hook-secret")
            .start()
    };
    let mut a = start("a");
    let mut b = start("b");
    // The partitions settled between the two (rendezvous hashing may give
    // all four to one: the other is then the one that forwards).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let before = (a.partitions_owned(), b.partitions_owned());
        std::thread::sleep(Duration::from_millis(500));
        let after = (a.partitions_owned(), b.partitions_owned());
        if before == after && after.0 + after.1 == 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the partitions did not settle: {after:?}"
        );
    }
    let events = concat!(
        r#"{"type":"identify","user":"m1","id":"m1-identify","ts":"2026-03-02T10:00:00Z","traits":{"email":"m1@example.com","first_name":"Ana"}}"#,
        "\n",
        r#"{"type":"track","user":"m1","id":"m1-signup","event":"signed_up","ts":"2026-03-02T10:00:01Z"}"#,
    );
    let r = a.request(
        "POST",
        "/v1/events",
        Some("ingest-token"),
        events.as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let maildir = dir.join(".sluice/outbox/maildir/new");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mail = loop {
        let found = std::fs::read_dir(&maildir)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|e| std::fs::read(e.path()).ok());
        if let Some(m) = found {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no welcome email in {maildir:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let parsed = MessageParser::default().parse(&mail).expect("RFC 5322");
    let list = parsed
        .header_raw("List-Unsubscribe")
        .expect("List-Unsubscribe")
        .trim()
        .to_owned();
    let token = list
        .trim_matches(|c| c == '<' || c == '>')
        .rsplit('/')
        .next()
        .expect("a token")
        .to_owned();
    let path = format!("/v1/unsubscribe/{token}");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for w in [&a, &b] {
        let r = w.request_with("POST", &path, None, &form, b"List-Unsubscribe=One-Click");
        assert_eq!(r.status, 200, "{}", r.text);
        let forged = format!("/v1/unsubscribe/x{token}");
        let r = w.request_with("POST", &forged, None, &form, b"List-Unsubscribe=One-Click");
        assert_eq!(r.status, 404, "{}", r.text);
    }
    // The owner's record says so, read through either worker.
    for w in [&a, &b] {
        let user = w.request("GET", "/v1/users/m1", Some("admin-token"), b"");
        assert_eq!(user.status, 200, "{}", user.text);
        assert!(user.text.contains(r#""marketing":false"#), "{}", user.text);
    }
    // Erased through the worker that does not own the user; gone for both.
    let owner = lease_holder(&nats, engine::hash::partition_of("m1", 4));
    let joined = format!("worker {owner} joined");
    let other = if a.logs().contains(&joined) { &b } else { &a };
    assert!(
        a.logs().contains(&joined) != b.logs().contains(&joined),
        "{owner} is one of the two"
    );
    let r = other.request("DELETE", "/v1/users/m1", Some("admin-token"), b"");
    assert_eq!(r.status, 200, "{}", r.text);
    for w in [&a, &b] {
        let user = w.request("GET", "/v1/users/m1", Some("admin-token"), b"");
        assert_eq!(user.status, 404, "{}", user.text);
    }
    a.stop(Duration::from_secs(20));
    b.stop(Duration::from_secs(20));
}
