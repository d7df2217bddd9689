//! State-changing operations other than plain ingest, around a stop: the
//! real `sluice run` killed with SIGKILL right after it answered an
//! erasure, a one-click unsubscribe or a bounce, and stopped with SIGTERM
//! under a backlog of deliveries. After the restart on the same store,
//! what was answered holds (the user stays erased, the unsubscribe and the
//! bounce stay), and a graceful stop delivers each message once: what it
//! did not deliver waits in the outbox, not half handed out.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::http::try_request;
use support::receiver::{Receiver, Reply};
use support::server::SluiceRun;
use support::wait::wait_for;

const INGEST: &str = "ingest-token";
const ADMIN: &str = "admin-token";

/// The crash test's repository (a webhook at once and one two seconds
/// later per `ping`) against `receiver`, and its `sluice run`.
fn service(receiver: &Receiver) -> (tempfile::TempDir, SluiceRun) {
    let (tmp, dir) =
        support::fixture::temp_copy("crash-run", &[("__PORT__", receiver.port.to_string())]);
    let run = SluiceRun::new(&dir)
        .env("SLUICE_INGEST_TOKEN", INGEST)
        .env("SLUICE_ADMIN_TOKEN", ADMIN)
        .env("SLUICE_LOG", "warn")
        .ready_within(Duration::from_secs(30));
    (tmp, run)
}

/// A `ping` per user, stamped now (the run's clock is the wall clock).
fn pings(users: &[String]) -> Vec<serde_json::Value> {
    #[allow(clippy::disallowed_methods)]
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    users
        .iter()
        .map(|u| serde_json::json!({"type": "track", "user": u, "event": "ping", "id": format!("{u}-ping"), "ts": ts}))
        .collect()
}

/// RUN.md §1: SIGTERM finishes or hands back in-flight deliveries up to
/// the drain deadline and exits 0. Under a backlog the writer must stop
/// handing out new deliveries once draining: one handed out after the
/// drain ended is delivered without its result ever being recorded, and
/// goes out a second time after the restart.
#[test]
fn sigterm_under_a_delivery_backlog_delivers_each_message_once() {
    let receiver = Receiver::keep_alive(|_, _| Reply::status(200));
    let (_tmp, run) = service(&receiver);
    let mut run = run.start();
    let users: Vec<String> = (0..3_000).map(|n| format!("b{n:05}")).collect();
    for chunk in users.chunks(500) {
        let r = run.post_events(INGEST, &pings(chunk));
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    }
    wait_for(Duration::from_secs(30), "deliveries under way", || {
        (receiver.count() >= 300).then_some(())
    });
    let asked = Instant::now();
    let status = run.terminate(Duration::from_secs(20));
    let took = asked.elapsed();
    assert!(status.success(), "exit {status}:\n{}", run.logs());
    assert!(
        took < Duration::from_secs(12),
        "stopped within the 10 s drain deadline: {took:?}"
    );
    run.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = receiver.keys_by_user_step();
        let missing = users
            .iter()
            .flat_map(|u| [(u.clone(), "now"), (u.clone(), "later")])
            .filter(|(u, step)| !s.contains_key(&(u.clone(), (*step).to_owned())))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} messages never arrived:\n{}",
            run.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Whatever was still due arrives; then nothing arrives twice.
    std::thread::sleep(Duration::from_secs(1));
    let twice: Vec<((String, String), usize)> = receiver
        .keys_by_user_step()
        .into_iter()
        .filter(|(_, keys)| keys.len() > 1)
        .map(|(k, keys)| (k, keys.len()))
        .collect();
    assert!(
        twice.is_empty(),
        "{} messages delivered more than once after a graceful stop, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
}

/// RUN.md §2: `DELETE /v1/users/{id}` answered 200, then SIGKILL: after
/// the restart the user is still unknown, its pending `later` webhook
/// never goes out, and the users around it are untouched.
#[test]
fn an_erasure_answered_then_sigkill_stays_erased() {
    let receiver = Receiver::keep_alive(|_, _| Reply::status(200));
    let (_tmp, run) = service(&receiver);
    let mut run = run.start();
    let users: Vec<String> = (0..20).map(|n| format!("e{n:02}")).collect();
    let r = run.post_events(INGEST, &pings(&users));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let erased: BTreeSet<&String> = users.iter().step_by(2).collect();
    for u in &erased {
        let r = run.request("DELETE", &format!("/v1/users/{u}"), Some(ADMIN), b"");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    run.kill();
    run.restart();
    for u in &users {
        let r = run.request("GET", &format!("/v1/users/{u}"), Some(ADMIN), b"");
        let want = if erased.contains(u) { 404 } else { 200 };
        assert_eq!(r.status, want, "{u}: {}", String::from_utf8_lossy(&r.body));
    }
    // The kept users' `later` arrives (two seconds after their ping); an
    // erased user's never does.
    wait_for(
        Duration::from_secs(30),
        "the kept users' later webhooks",
        || {
            let s = receiver.keys_by_user_step();
            users
                .iter()
                .filter(|u| !erased.contains(u))
                .all(|u| s.contains_key(&(u.clone(), "later".to_owned())))
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let s = receiver.keys_by_user_step();
    for u in &erased {
        assert!(
            !s.contains_key(&((*u).clone(), "later".to_owned())),
            "{u} was erased, yet its pending webhook went out"
        );
    }
}

/// The marketing email `sluice run` wrote for `key` (maildir), parsed
/// enough to read its one-click unsubscribe URL.
fn unsubscribe_url(repo: &std::path::Path, key: &str) -> String {
    use mail_parser::MessageParser;
    let dir = repo.join(".sluice/outbox/maildir/new");
    wait_for(Duration::from_secs(20), "the welcome email", || {
        std::fs::read_dir(&dir).ok()?.find_map(|e| {
            let raw = std::fs::read(e.ok()?.path()).ok()?;
            let m = MessageParser::default().parse(&raw)?;
            if !m.message_id()?.starts_with(key) {
                return None;
            }
            let list = m.header_raw("List-Unsubscribe")?.trim();
            Some(
                list.trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned(),
            )
        })
    })
}

/// The key of `user`'s welcome email, from `GET /v1/users/{id}`.
fn welcome_key(run: &SluiceRun, user: &str) -> String {
    wait_for(Duration::from_secs(20), "the welcome email's key", || {
        let r = run.request("GET", &format!("/v1/users/{user}"), Some(ADMIN), b"");
        let v = (r.status == 200).then(|| r.json())?;
        v["messages"]
            .as_array()?
            .iter()
            .find(|m| m["step"] == "welcome-email")?["key"]
            .as_str()
            .map(str::to_owned)
    })
}

/// RUN.md §2 and §3: a one-click unsubscribe and a provider's hard bounce,
/// each answered 200, then SIGKILL: after the restart the user is still
/// unsubscribed, and the address still bounced.
#[test]
fn an_unsubscribe_and_a_bounce_answered_then_sigkill_hold() {
    let (_tmp, repo) = support::fixture::temp_copy("run/service", &[("__HOOK__", "9".into())]);
    let mut run = SluiceRun::new(&repo)
        .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
        .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
        .env("SLUICE_LOG", "warn")
        .ready_within(Duration::from_secs(30))
        .start();
    #[allow(clippy::disallowed_methods)]
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut events = Vec::new();
    for u in ["quits", "bounces"] {
        events.push(serde_json::json!({"type": "identify", "user": u, "id": format!("{u}-i"), "ts": ts, "traits": {"email": format!("{u}@example.com"), "first_name": "Ana"}}));
        events.push(serde_json::json!({"type": "track", "user": u, "id": format!("{u}-s"), "event": "signed_up", "ts": ts}));
    }
    let r = run.post_events(INGEST, &events);
    assert_eq!(r.status, 202, "{}", r.text);

    let url = unsubscribe_url(&repo, &welcome_key(&run, "quits"));
    let path = url
        .strip_prefix(&run.base_url())
        .unwrap_or_else(|| panic!("a link to this server: {url}"))
        .to_owned();
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = try_request(
        run.port(),
        "POST",
        &path,
        &form,
        b"List-Unsubscribe=One-Click",
    )
    .expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text);

    let bounce = serde_json::json!({
        "RecordType": "Bounce", "Type": "HardBounce", "Email": "bounces@example.com",
        "Metadata": {"sluice_key": welcome_key(&run, "bounces")},
    });
    let auth = format!("Bearer {INGEST}");
    let r = try_request(
        run.port(),
        "POST",
        "/v1/feedback/postmark",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        bounce.to_string().as_bytes(),
    )
    .expect("an answer");
    assert_eq!(
        (r.status, r.json()["matched"].as_u64()),
        (200, Some(1)),
        "{}",
        r.text
    );

    run.kill();
    run.restart();
    let profile = |u: &str| {
        let r = run.request("GET", &format!("/v1/users/{u}"), Some(ADMIN), b"");
        assert_eq!(r.status, 200, "{u}: {}", r.text);
        r.json()["profile"].clone()
    };
    let quits = profile("quits");
    assert_eq!(quits["subscriptions"]["marketing"], false, "{quits}");
    let bounces = profile("bounces");
    assert_eq!(bounces["email_status"], "bounced", "{bounces}");
}
