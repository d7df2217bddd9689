//! Deployments end to end (DEPLOY.md) on the built binary: `sluice run`
//! deploys v1 at start; `apply --canary` splits new entries; a broken guard
//! rolls the canary back by itself; `promote` and `rollback` move new
//! entries; `migrate` moves live instances with `on_unmapped: exit` and
//! `stay`; bad input is refused with nothing changed. Fixtures:
//! tests/fixtures/deploy/ (one directory per checkout).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::fixture::copy_dir;
use support::server::SluiceRun;

const INGEST: &str = "deploy-ingest-token";
const ADMIN: &str = "deploy-admin-token";

/// `sluice` with the test's tokens in its environment.
fn sluice(args: &[&str]) -> Output {
    support::cli::sluice()
        .args(args)
        .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
        .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
        .env("SLUICE_ACTOR", "deploy-test")
        .env_remove("SLUICE_SERVER")
        .env_remove("SLUICE_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run sluice")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(o)))
}

/// A running `sluice run` (killed and reaped on drop, by its guard).
struct Service {
    run: SluiceRun,
    url: String,
}

impl Service {
    fn start(repo: &Path) -> Service {
        let run = SluiceRun::new(repo)
            .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
            .env("SLUICE_ACTOR", "deploy-test")
            // Guards every 200 ms instead of every minute.
            .env("SLUICE_GUARD_INTERVAL_MS", "200")
            .ready_within(Duration::from_secs(20))
            .start();
        let url = run.base_url();
        Service { run, url }
    }

    fn log(&self) -> String {
        self.run.logs()
    }

    /// Asserts the audit log (`history`) holds `n` entries.
    fn assert_history_len(&self, n: usize) {
        let o = self.admin(&["history", "--format", "json"]);
        assert_eq!(
            json_out(&o).as_array().map(Vec::len),
            Some(n),
            "{}",
            text(&o)
        );
    }

    /// A deploy command through this server with the admin token.
    fn admin(&self, args: &[&str]) -> Output {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--server", &self.url, "--token", ADMIN]);
        sluice(&a)
    }

    /// Posts `signed_up` for each user (with `plan` when given).
    fn sign_up(&self, dir: &Path, users: &[String], plan: Option<&str>) {
        let mut body = String::new();
        // `sluice run` runs on the wall clock: events are stamped with it.
        #[allow(clippy::disallowed_methods)]
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for u in users {
            let traits = match plan {
                Some(p) => format!(r#","traits":{{"plan":"{p}"}}"#),
                None => String::new(),
            };
            body.push_str(&format!(
                r#"{{"type":"identify","user":"{u}","id":"i-{u}","ts":"{ts}"{traits}}}"#
            ));
            body.push('\n');
            body.push_str(&format!(
                r#"{{"type":"track","user":"{u}","event":"signed_up","id":"s-{u}","ts":"{ts}"}}"#
            ));
            body.push('\n');
        }
        let file = dir.join(format!(
            "events-{}.jsonl",
            users.first().map_or("none", |u| u)
        ));
        std::fs::write(&file, body).expect("events");
        let o = sluice(&[
            "send-events",
            file.to_str().expect("path"),
            "--server",
            &self.url,
            "--token",
            INGEST,
        ]);
        assert!(
            o.status.success(),
            "send-events:\n{}\n{}",
            text(&o),
            self.log()
        );
    }

    /// The version of `user`'s live instance of `onboard` and its step.
    fn instance(&self, user: &str) -> Option<(u64, String, Option<String>)> {
        let o = self.admin(&["inspect", "user", user, "--format", "json"]);
        assert!(o.status.success(), "inspect {user}:\n{}", text(&o));
        let v = json_out(&o);
        v["instances"].as_array().and_then(|is| {
            is.iter().find(|i| i["journey"] == "onboard").map(|i| {
                (
                    i["version"].as_u64().unwrap_or(0),
                    i["step"].as_str().unwrap_or("").to_owned(),
                    i["waiting_until"].as_str().map(str::to_owned),
                )
            })
        })
    }

    /// Entries of `onboard` per version (from the report).
    fn entries(&self) -> std::collections::BTreeMap<u64, u64> {
        let o = self.admin(&["report", "onboard", "--format", "json"]);
        assert!(o.status.success(), "report:\n{}", text(&o));
        json_out(&o)
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["version"].as_u64().unwrap_or(0),
                    r["entries"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }
}

/// The web console's page for `journey`, signed in with the admin token.
fn console_page(run: &SluiceRun, journey: &str) -> String {
    let body = format!("token={ADMIN}&next=%2F");
    let login = support::http::send_raw(
        run.port(),
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
        body.as_bytes(),
    )
    .expect("login");
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie: {}", login.status))
        .to_owned();
    let page = support::http::send_raw(
        run.port(),
        &format!(
            "GET /journeys/{journey} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n"
        ),
        b"",
    )
    .expect("console page");
    String::from_utf8_lossy(&page.body).into_owned()
}

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// A checkout of `version` beside the running repository.
fn checkout(root: &Path, version: &str) -> PathBuf {
    let dir = root.join(version);
    copy_dir(
        &support::fixture::fixture(&format!("deploy/{version}")),
        &dir,
    );
    dir
}

#[test]
fn a_canary_takes_its_share_then_promote_and_rollback_move_new_entries() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let s = Service::start(&repo);
    assert!(s.log().contains("deployed"), "{}", s.log());
    let before = users("early-", 100);
    s.sign_up(tmp.path(), &before, None);

    // The plan against the server shows the step change and who is in
    // flight (the 100 early users wait at wait-a).
    let v2 = checkout(tmp.path(), "v2");
    let o = s.admin(&["plan", v2.to_str().expect("path"), "--format", "json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let plan = json_out(&o);
    let change = &plan["changes"][0];
    assert_eq!(change["id"], "onboard");
    assert_eq!(change["steps"]["changed"][0], "wait-a", "{plan}");
    assert_eq!(change["in_flight"]["live"], 100, "{plan}");

    let o = s.admin(&["apply", v2.to_str().expect("path"), "--canary", "10%"]);
    assert!(o.status.success(), "apply:\n{}\n{}", text(&o), s.log());

    // 5,000 new users: 10% ± 2% of them enter v2.
    let new = users("new-", 5_000);
    s.sign_up(tmp.path(), &new, None);
    let entries = s.entries();
    let v2_entries = entries.get(&2).copied().unwrap_or(0);
    assert!(
        (400..=600).contains(&v2_entries),
        "v2 took {v2_entries} of 5,000 new entries: {entries:?}"
    );
    assert_eq!(entries.values().sum::<u64>(), 5_100, "{entries:?}");
    // Early users stay on the version they entered.
    for u in before.iter().take(5) {
        assert_eq!(s.instance(u).map(|i| i.0), Some(1), "{u}");
    }

    let o = s.admin(&["canary", "status", "onboard", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let st = json_out(&o);
    assert_eq!(st[0]["canary_version"], 2);
    assert_eq!(st[0]["share"], 10.0);
    // The console shows the canary beside the stable version.
    let page = console_page(&s.run, "onboard");
    assert!(
        page.contains("Canary: version 2 takes 10% of new entries."),
        "{page}"
    );

    // Promote: every new entry goes to v2.
    let o = s.admin(&["promote", "onboard"]);
    assert!(o.status.success(), "promote:\n{}", text(&o));
    let after_promote = users("promoted-", 200);
    s.sign_up(tmp.path(), &after_promote, None);
    let e = s.entries();
    assert_eq!(e.get(&2).copied().unwrap_or(0), v2_entries + 200, "{e:?}");

    // Rollback: new entries back on v1; v2's live instances stay on v2.
    let o = s.admin(&["rollback", "onboard"]);
    assert!(o.status.success(), "rollback:\n{}", text(&o));
    let after_rollback = users("rolled-", 200);
    s.sign_up(tmp.path(), &after_rollback, None);
    let e2 = s.entries();
    assert_eq!(e2.get(&2).copied(), e.get(&2).copied(), "{e2:?}");
    assert_eq!(s.instance(&after_promote[0]).map(|i| i.0), Some(2));
    assert_eq!(s.instance(&after_rollback[0]).map(|i| i.0), Some(1));

    // A rollback with nothing left to roll back to, and a promote without
    // a canary, are refused and change nothing.
    let o = s.admin(&["promote", "onboard"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no canary"),
        "{}",
        text(&o)
    );

    // The audit log has every step, by the actor.
    let o = s.admin(&["history", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let h = json_out(&o);
    let actions: Vec<&str> = h
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["apply", "apply", "promote", "rollback"], "{h}");
    assert!(
        h.as_array()
            .into_iter()
            .flatten()
            .all(|e| e["actor"] == "deploy-test"),
        "{h}"
    );
}

#[test]
fn a_broken_guard_rolls_the_canary_back_by_itself() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let s = Service::start(&repo);
    let broken = checkout(tmp.path(), "v2-broken");
    let o = s.admin(&[
        "apply",
        broken.to_str().expect("path"),
        "--canary",
        "50%",
        "--guard",
        "failed_rate < 2%",
        "--min-sends",
        "20",
    ]);
    assert!(o.status.success(), "apply:\n{}\n{}", text(&o), s.log());
    s.sign_up(tmp.path(), &users("g-", 300), None);

    // The engine checks guards by itself; wait for the rollback.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let o = s.admin(&["canary", "status", "onboard", "--format", "json"]);
        let v = json_out(&o);
        if !v[0]["rolled_back"].is_null() {
            assert_eq!(
                o.status.code(),
                Some(1),
                "a rolled-back canary exits 1:\n{}",
                text(&o)
            );
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no automatic rollback:\n{v}\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        status[0]["rolled_back"]["guard"], "failed_rate < 2%",
        "{status}"
    );
    assert!(status[0]["canary_version"].is_null(), "{status}");

    let o = s.admin(&["history", "onboard", "--format", "json"]);
    let h = json_out(&o);
    let auto = h
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["action"] == "auto_rollback")
        .unwrap_or_else(|| panic!("no auto_rollback entry: {h}"));
    assert_eq!(auto["detail"]["guard"], "failed_rate < 2%", "{auto}");
    assert_eq!(auto["detail"]["rates"]["canary_rate"], 1.0, "{auto}");
    assert_eq!(auto["detail"]["rates"]["stable_rate"], 0.0, "{auto}");

    // New entries are back on v1.
    let later = users("later-", 20);
    s.sign_up(tmp.path(), &later, None);
    for u in later.iter().take(5) {
        assert_eq!(s.instance(u).map(|i| i.0), Some(1), "{u}");
    }
}

/// Deploys v1 with `sluice run`, puts 20 users at wait-a and 10 plus
/// users at wait-plus, stops the service, then applies `version` to the
/// store (no server).
/// What [`migrated`] leaves: the temporary root, the repository, the
/// plain and plus users, the plain users' due times, and apply's output.
struct Migrated {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    plain: Vec<String>,
    plus: Vec<String>,
    due: Vec<Option<String>>,
    apply: Output,
}

fn migrated(version: &str) -> Migrated {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let plain = users("m-", 20);
    let plus = users("p-", 10);
    let due;
    {
        let s = Service::start(&repo);
        s.sign_up(tmp.path(), &plain, None);
        s.sign_up(tmp.path(), &plus, Some("plus"));
        for u in &plus {
            assert_eq!(s.instance(u).map(|i| i.1), Some("wait-plus".into()), "{u}");
        }
        due = plain
            .iter()
            .map(|u| s.instance(u).and_then(|i| i.2))
            .collect::<Vec<_>>();
    }
    let next = checkout(tmp.path(), version);
    let store = repo.join(".sluice/store");
    let o = sluice(&[
        "plan",
        next.to_str().expect("path"),
        "--store",
        store.to_str().expect("path"),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(2), "plan --store:\n{}", text(&o));
    let plan = json_out(&o);
    assert_eq!(plan["changes"][0]["in_flight"]["live"], 30, "{plan}");
    assert_eq!(plan["changes"][0]["in_flight"]["migrated"], 20, "{plan}");
    // Per rule: the 20 at wait-a move to wait-a2 (both waits: their timers
    // are kept); the 10 plus users at wait-plus are unmapped.
    let rules = plan["changes"][0]["in_flight"]["migration"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let wait_a = rules
        .iter()
        .find(|r| r["from_step"] == "wait-a")
        .unwrap_or_else(|| panic!("no rule for wait-a: {plan}"));
    assert_eq!(wait_a["to_step"], "wait-a2", "{plan}");
    assert_eq!(wait_a["instances"], 20, "{plan}");
    assert_eq!(wait_a["timer"], "kept", "{plan}");
    let exited = if version.ends_with("exit") { 10 } else { 0 };
    assert_eq!(plan["changes"][0]["in_flight"]["exited"], exited, "{plan}");
    let o = sluice(&[
        "apply",
        next.to_str().expect("path"),
        "--store",
        store.to_str().expect("path"),
    ]);
    Migrated {
        _tmp: tmp,
        repo,
        plain,
        plus,
        due,
        apply: o,
    }
}

fn inspect_store(repo: &Path, user: &str) -> Value {
    let store = repo.join(".sluice/store");
    let o = sluice(&[
        "inspect",
        "user",
        user,
        repo.to_str().expect("path"),
        "--store",
        store.to_str().expect("path"),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "inspect:\n{}", text(&o));
    json_out(&o)
}

#[test]
fn migrate_moves_mapped_instances_keeping_their_timers_and_exits_the_rest() {
    let Migrated {
        _tmp,
        repo,
        plain,
        plus,
        due,
        apply: o,
    } = migrated("v3-exit");
    assert!(o.status.success(), "apply --store:\n{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("20 kept their timer") && out.contains("10 exited"),
        "{out}"
    );
    for (u, due) in plain.iter().zip(&due) {
        let v = inspect_store(&repo, u);
        let i = &v["instances"][0];
        assert_eq!(i["version"], 3, "{u}: {v}");
        assert_eq!(i["step"], "wait-a2", "{u}: {v}");
        assert_eq!(
            i["waiting_until"].as_str(),
            due.as_deref(),
            "{u} keeps its due time"
        );
        assert_eq!(
            v["instances"].as_array().map(Vec::len),
            Some(1),
            "not doubled: {v}"
        );
    }
    for u in &plus {
        let v = inspect_store(&repo, u);
        assert_eq!(
            v["instances"].as_array().map(Vec::len),
            Some(0),
            "{u} exited: {v}"
        );
    }
    let o = sluice(&[
        "history",
        "--dir",
        repo.to_str().expect("path"),
        "--format",
        "json",
    ]);
    let h = json_out(&o);
    assert_eq!(h[1]["detail"]["migrated"]["onboard"]["exited"], 10, "{h}");
}

#[test]
fn migrate_with_stay_leaves_unmapped_instances_on_their_version() {
    let Migrated {
        _tmp,
        repo,
        plain,
        plus,
        apply: o,
        ..
    } = migrated("v3-stay");
    assert!(o.status.success(), "apply --store:\n{}", text(&o));
    assert_eq!(
        inspect_store(&repo, &plain[0])["instances"][0]["version"],
        3
    );
    for u in &plus {
        let v = inspect_store(&repo, u);
        assert_eq!(v["instances"][0]["version"], 1, "{u} stays on v1: {v}");
        assert_eq!(v["instances"][0]["step"], "wait-plus", "{v}");
    }
}

#[test]
fn bad_deploy_input_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let s = Service::start(&repo);
    let v2 = checkout(tmp.path(), "v2");
    let v2p = v2.to_str().expect("path");
    for (args, says) in [
        (vec!["apply", v2p, "--canary", "150%"], "outside 0–100%"),
        (
            vec![
                "apply",
                v2p,
                "--canary",
                "10%",
                "--guard",
                "failed_rate > 2%",
            ],
            "does not parse",
        ),
        (vec!["promote", "onboard"], "has no canary"),
        (
            vec!["rollback", "onboard"],
            "no canary and no earlier version",
        ),
        (vec!["promote", "no-such-journey"], "not deployed"),
    ] {
        let o = s.admin(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}:\n{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{args:?}:\n{}",
            text(&o)
        );
    }
    // A changed journey that keeps its version is refused at its line.
    let same = tmp.path().join("not-bumped");
    copy_dir(&v2, &same);
    let j = same.join("journeys.yaml");
    let t = std::fs::read_to_string(&j).expect("read");
    std::fs::write(&j, t.replace("version: 2", "version: 1")).expect("write");
    let o = s.admin(&["apply", same.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("version_not_bumped"),
        "{}",
        text(&o)
    );
    // An apply planned against another generation is refused (409): the
    // deployed state moved since it was read.
    let r = s.run.request(
        "POST",
        "/v1/admin/apply",
        Some(ADMIN),
        br#"{"files":{},"expected_generation":7}"#,
    );
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("changed since it was read"), "{}", r.text);
    // The admin routes take the admin token only.
    let r = s.run.request("GET", "/v1/admin/history", Some(INGEST), b"");
    assert_eq!(r.status, 401, "{}", r.text);
    // Nothing was applied: the history holds the start-up deployment only.
    s.assert_history_len(1);
}

#[test]
fn deploys_through_the_server_drop_no_event_while_events_stream_and_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let v2 = checkout(tmp.path(), "v2");
    let v2p = v2.to_str().expect("path");
    let total = 3_000;
    {
        let s = Service::start(&repo);
        std::thread::scope(|scope| {
            let sender = scope.spawn(|| {
                for b in 0..30 {
                    s.sign_up(tmp.path(), &users(&format!("stream{b}-"), total / 30), None);
                }
            });
            // Deployments while the events come in.
            for args in [
                vec!["apply", v2p, "--canary", "50%"],
                vec!["rollback", "onboard"],
                vec!["apply", v2p, "--canary", "30%"],
                vec!["promote", "onboard"],
            ] {
                std::thread::sleep(Duration::from_millis(150));
                let o = s.admin(&args);
                assert!(o.status.success(), "{args:?}:\n{}\n{}", text(&o), s.log());
            }
            sender.join().expect("sender");
        });
        // Every event applied exactly once: one entry per user.
        let e = s.entries();
        assert_eq!(e.values().sum::<u64>(), total as u64, "{e:?}");
        assert!(
            e.contains_key(&1) && e.contains_key(&2),
            "both versions took entries: {e:?}"
        );
    }
    // After a restart (SIGKILL above), the rollout and the versions of live
    // instances are what they were.
    let s = Service::start(&repo);
    assert!(
        !s.log().contains("deployed ."),
        "a store with a deployment is not deployed again:\n{}",
        s.log()
    );
    let mut versions = std::collections::BTreeMap::new();
    for b in [0, 29] {
        for u in users(&format!("stream{b}-"), 20) {
            let v = s.instance(&u).map(|i| i.0).expect("live instance");
            *versions.entry(v).or_insert(0) += 1;
        }
    }
    assert!(versions.keys().all(|v| *v == 1 || *v == 2), "{versions:?}");
    let later = users("after-restart-", 20);
    s.sign_up(tmp.path(), &later, None);
    for u in later.iter().take(5) {
        assert_eq!(s.instance(u).map(|i| i.0), Some(2), "promoted v2 takes {u}");
    }
    s.assert_history_len(5);
}

/// A new version of a journey is an update, never "rolled out again":
/// that line (and `rollouts` / `rolled_out_again` in JSON) is only for a
/// deployed version whose new entries went back to an older one.
#[test]
fn an_update_is_not_a_rollout_again_but_a_rolled_back_version_is() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let v2 = checkout(tmp.path(), "v2");
    let v2p = v2.to_str().expect("path");
    // `run` deploys v1 at start; then everything goes through its API.
    let s = Service::start(&repo);
    let sluice = |args: &[&str]| s.admin(args);

    // v1 → v2: an update, nothing rolled out again.
    let o = sluice(&["plan", v2p]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("update Journey onboard (v1 → v2)"),
        "{}",
        text(&o)
    );
    assert!(!out.contains("again"), "{}", text(&o));
    let o = sluice(&["plan", v2p, "--format", "json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(json_out(&o).get("rollouts").is_none(), "{}", text(&o));
    let o = sluice(&["apply", v2p, "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let applied = json_out(&o);
    assert_eq!(
        applied["rolled_out_again"],
        serde_json::json!([]),
        "{applied}"
    );
    assert_eq!(
        applied["audit"]["detail"]["rolled_out_again"],
        serde_json::json!([]),
        "{applied}"
    );

    // After a rollback, the same v2 config rolls v2 out again.
    let o = sluice(&["rollback", "onboard"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sluice(&["plan", v2p]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("roll out Journey onboard v2 again (new entries run v1 since a rollback)"),
        "{}",
        text(&o)
    );
    // Exit 2 and a roll-out to do: never "No changes".
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("No changes"), "{}", text(&o));
    assert!(
        out.contains("Plan: 0 to create, 0 to update, 0 to delete; 1 to roll out again."),
        "{}",
        text(&o)
    );
    let o = sluice(&["plan", v2p, "--format", "markdown"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(md.starts_with("<!-- sluice-plan -->\n"), "{md}");
    assert!(!md.contains("no changes"), "{md}");
    assert!(
        md.contains("roll out Journey `onboard` v2 again (new entries run v1 since a rollback)"),
        "{md}"
    );
    let o = sluice(&["plan", v2p, "--format", "json"]);
    assert_eq!(
        json_out(&o)["rollouts"],
        serde_json::json!([{"journey": "onboard", "running": 1, "version": 2}]),
        "{}",
        text(&o)
    );
    let o = sluice(&["apply", v2p, "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        json_out(&o)["rolled_out_again"],
        serde_json::json!([{"journey": "onboard", "running": 1, "version": 2}]),
        "{}",
        text(&o)
    );
    // Nothing left: against the deployed state there is no "base" to name.
    let o = sluice(&["plan", v2p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "No changes: the config deploys exactly what is deployed.\n",
        "{}",
        text(&o)
    );
}

/// An apply that only rolls a journey out again (after a rollback) says
/// so, not "No changes", and is part of that journey's history.
#[test]
fn an_apply_rolling_a_journey_out_again_says_so_and_is_in_its_history() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let v2 = checkout(tmp.path(), "v2");
    let v2p = v2.to_str().expect("path");
    let s = Service::start(&repo);
    let sluice = |args: &[&str]| s.admin(args);
    let o = sluice(&["apply", v2p]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sluice(&["rollback", "onboard"]);
    assert!(o.status.success(), "{}", text(&o));

    let o = sluice(&["apply", v2p]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("No changes"), "{}", text(&o));
    assert!(
        out.contains("roll out Journey onboard v2 again (new entries run v1 since a rollback)"),
        "{}",
        text(&o)
    );
    assert!(
        out.contains("Plan: 0 to create, 0 to update, 0 to delete; 1 to roll out again."),
        "{}",
        text(&o)
    );
    assert!(out.contains("applied: generation 3"), "{}", text(&o));

    // `history onboard`: the apply, the rollback and the apply rolling v2
    // out again, which names what it did.
    let o = sluice(&["history", "onboard", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let actions: Vec<(String, u64)> = json_out(&o)
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_owned(),
                e["detail"]["generation"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("apply".to_owned(), 1),
            ("apply".to_owned(), 2),
            ("rollback".to_owned(), 0),
            ("apply".to_owned(), 3)
        ],
        "{}",
        text(&o)
    );
    let o = sluice(&["history", "onboard"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("apply generation 3: 0 change(s), rolled out again: onboard v2"),
        "{}",
        text(&o)
    );
}

/// A `migrate` block from a version older than the deployed one, planned
/// against a running engine: the plan knows that version's steps (the
/// store keeps them), so it says which timers are kept and refuses a
/// `migrate.steps` key that is not one of them, at the key; `apply`
/// refuses it too, moving and ending nobody.
#[test]
fn a_migration_from_an_older_version_is_checked_against_its_steps() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let v2 = checkout(tmp.path(), "v2");
    let v3 = checkout(tmp.path(), "v3-exit");
    let typo = tmp.path().join("v3-typo");
    copy_dir(&v3, &typo);
    let file = typo.join("journeys.yaml");
    let yaml = std::fs::read_to_string(&file).expect("read");
    assert!(yaml.contains("{ wait-a: wait-a2, hello: end }"), "{yaml}");
    std::fs::write(
        &file,
        yaml.replace(
            "{ wait-a: wait-a2, hello: end }",
            "{ wait-aa: wait-a2, hello: end }",
        ),
    )
    .expect("write");
    let s = Service::start(&repo);
    let sluice = |args: &[&str]| s.admin(args);
    let plain = users("m", 4);
    let plus = users("p", 2);
    s.sign_up(tmp.path(), &plain, None);
    s.sign_up(tmp.path(), &plus, Some("plus"));
    // v2 is deployed over v1; the six users stay on v1.
    let o = sluice(&["apply", v2.to_str().expect("path")]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        s.instance("m0").map(|(v, step, _)| (v, step)),
        Some((1, "wait-a".to_owned()))
    );

    let o = sluice(&["plan", v3.to_str().expect("path"), "--format", "json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let change = json_out(&o)["changes"][0].clone();
    assert_eq!(change["from_version"], 2, "{change}");
    assert_eq!(
        change["migrate"]["steps"],
        serde_json::json!([
            {"from_step": "hello", "to_step": "end", "timer": "none"},
            {"from_step": "wait-a", "to_step": "wait-a2", "timer": "kept"}
        ]),
        "{change}"
    );
    let f = &change["in_flight"];
    assert_eq!(
        (&f["live"], &f["migrated"], &f["exited"]),
        (
            &serde_json::json!(6),
            &serde_json::json!(4),
            &serde_json::json!(2)
        ),
        "{change}"
    );
    let o = sluice(&["plan", v3.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("wait-a → wait-a2: timer kept, 4 live"),
        "{}",
        text(&o)
    );

    let typo_p = typo.to_str().expect("path");
    for args in [vec!["plan", typo_p], vec!["apply", typo_p]] {
        let o = sluice(&args);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let all = text(&o);
        assert!(all.contains("unknown_reference"), "{all}");
        assert!(
            all.contains("`migrate.steps` maps `wait-aa`, which is not a step of version 1"),
            "{all}"
        );
        assert!(all.contains("did you mean `wait-a`?"), "{all}");
        assert!(all.contains("journeys.yaml:11:12"), "{all}");
    }
    // Nobody moved, nobody ended, nothing recorded.
    for u in plain.iter().chain(&plus) {
        assert_eq!(s.instance(u).map(|(v, ..)| v), Some(1), "{u}");
    }
    s.assert_history_len(2);
}

/// A running canary grows by applying the same config with a larger
/// `--canary` (DEPLOY.md §1: the same users stay in the canary as it
/// grows): the share changes, new entries follow it, the history says so,
/// and the same apply again changes nothing.
#[test]
fn applying_the_same_canary_with_another_share_grows_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let v2 = checkout(tmp.path(), "v2");
    let v2p = v2.to_str().expect("path");
    let s = Service::start(&repo);
    let sluice = |args: &[&str]| s.admin(args);
    let o = sluice(&["apply", v2p, "--canary", "10%"]);
    assert!(o.status.success(), "{}", text(&o));
    s.sign_up(tmp.path(), &users("a", 200), None);
    let before = s.entries();
    let canary_a = before.get(&2).copied().unwrap_or(0);
    // 10% of 200: 20 expected, far outside 5..=40 only by a bug.
    assert!((5..=40).contains(&canary_a), "{before:?}");

    let o = sluice(&["apply", v2p, "--canary", "60%"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("~ canary Journey onboard v2: 10% → 60% of new entries"),
        "{}",
        text(&o)
    );
    assert!(!out.contains("No changes"), "{}", text(&o));
    let o = sluice(&["canary", "status", "onboard", "--format", "json"]);
    assert_eq!(json_out(&o)[0]["share"], 60.0, "{}", text(&o));
    // The same apply again: nothing to do.
    let o = sluice(&["apply", v2p, "--canary", "60%"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("No changes"),
        "{}",
        text(&o)
    );

    s.sign_up(tmp.path(), &users("b", 200), None);
    let after = s.entries();
    let canary_b = after.get(&2).copied().unwrap_or(0) - canary_a;
    // 60% of 200: 120 expected (a standard deviation is about 7).
    assert!((90..=150).contains(&canary_b), "{before:?} {after:?}");
    let o = sluice(&["history", "onboard"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("canary onboard v2 10% → 60%"),
        "{}",
        text(&o)
    );
}

/// When only the engine knows a `migrate.from` version (no live instance
/// is on it, so the client's plan has not got its steps), the engine's
/// refusal of a `migrate.steps` key that is not one of them is printed
/// with its diagnostic, at the key.
#[test]
fn the_engines_refusal_of_a_migrate_block_names_the_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let v2 = checkout(tmp.path(), "v2");
    let typo = checkout(tmp.path(), "v3-exit");
    let file = typo.join("journeys.yaml");
    let yaml = std::fs::read_to_string(&file).expect("read");
    std::fs::write(
        &file,
        yaml.replace("{ wait-a: wait-a2,", "{ wait-aa: wait-a2,"),
    )
    .expect("write");
    let s = Service::start(&repo);
    let sluice = |args: &[&str]| s.admin(args);
    let o = sluice(&["apply", v2.to_str().expect("path")]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sluice(&["apply", typo.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(":11:12: unknown_reference: `migrate.steps` maps `wait-aa`, which is not a step of version 1"),
        "{}",
        text(&o)
    );
    s.assert_history_len(2);
}

/// A deleted journey created again under a version number it already had
/// would be two journeys under one number, its old users possibly still on
/// the old one: the apply is refused, naming the version to write.
#[test]
fn a_deleted_journey_comes_back_only_under_a_new_version() {
    let tmp = tempfile::tempdir().expect("tmp");
    let repo = checkout(tmp.path(), "v1");
    let copy = |name: &str| {
        let dir = tmp.path().join(name);
        copy_dir(&support::fixture::fixture("deploy/v1"), &dir);
        dir
    };
    let gone = copy("gone");
    std::fs::remove_file(gone.join("journeys.yaml")).expect("delete the journey");
    let again = copy("again");
    let s = Service::start(&repo);
    s.sign_up(tmp.path(), &users("d", 5), None);
    let o = s.admin(&["apply", gone.to_str().expect("path")]);
    assert!(o.status.success(), "{}", text(&o));

    let o = s.admin(&["apply", again.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("was deleted at v1") && err.contains("`version: 2`"),
        "{}",
        text(&o)
    );
    s.assert_history_len(2);

    let journeys = again.join("journeys.yaml");
    let bumped = std::fs::read_to_string(&journeys)
        .expect("read")
        .replace("version: 1", "version: 2");
    std::fs::write(&journeys, bumped).expect("write");
    let o = s.admin(&["apply", again.to_str().expect("path")]);
    assert!(o.status.success(), "{}", text(&o));
}
