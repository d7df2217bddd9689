//! The engine's rules (FORMAT.md §4–§7) end to end through the real
//! `sluice simulate`: one fixture repository per group of rules under
//! `tests/fixtures/`, the exact lines each run prints.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use support::cli::simulate_lines as simulate;
use support::fixture::fixture;

fn run(args: &[&str]) -> Output {
    support::cli::output(support::cli::sluice().args(args))
}

fn simulate_fixture(name: &str, args: &[&str]) -> Vec<Value> {
    let dir = fixture(name);
    simulate(&dir, &dir.join("events.jsonl"), args)
}

/// Lines reduced to `at kind user journey [step] [outcome|reason]`.
fn brief(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let s = |k: &str| l.get(k).and_then(Value::as_str).unwrap_or("");
            let mut out = format!("{} {} {} {}", s("at"), s("kind"), s("user"), s("journey"));
            for k in ["step", "outcome", "reason"] {
                if !s(k).is_empty() {
                    out.push(' ');
                    out.push_str(s(k));
                }
            }
            out
        })
        .collect()
}

/// Two string fields of each line, in order.
fn pairs<'a>(lines: &'a [Value], a: &str, b: &str) -> Vec<(&'a str, &'a str)> {
    lines
        .iter()
        .map(|l| {
            (
                l[a].as_str().expect("a string field"),
                l[b].as_str().expect("a string field"),
            )
        })
        .collect()
}

fn write_events(dir: &Path, events: &[Value]) -> PathBuf {
    let path = dir.join("events.jsonl");
    let mut f = std::fs::File::create(&path).expect("create");
    for e in events {
        writeln!(f, "{e}").expect("write");
    }
    path
}

#[test]
fn entry_when_live_dedupe_reentry_and_event_ids() {
    let lines = brief(&simulate_fixture("entry-dedupe-reentry", &[]));
    let expected = [
        "2026-03-02T09:00:00Z entered u2 once",
        "2026-03-02T09:00:00Z entered u3 every",
        "2026-03-02T09:00:00Z send u2 once welcome sent",
        "2026-03-02T09:00:00Z completed u2 once",
        "2026-03-02T09:05:00Z entered u1 cart",
        "2026-03-02T09:08:00Z entry_skipped u1 cart dedupe",
        "2026-03-02T09:10:00Z entry_skipped u1 cart live",
        "2026-03-02T09:10:00Z entry_skipped u3 every live",
        "2026-03-02T10:00:00Z send u3 every pong sent",
        "2026-03-02T10:00:00Z completed u3 every",
        "2026-03-02T10:05:00Z send u1 cart remind sent",
        "2026-03-02T10:05:00Z completed u1 cart",
        "2026-03-02T11:00:00Z entry_skipped u1 cart reentry",
        "2026-03-02T11:00:00Z entered u3 every",
        "2026-03-02T12:00:00Z send u3 every pong sent",
        "2026-03-02T12:00:00Z completed u3 every",
        "2026-03-02T12:00:00Z entry_skipped u2 once reentry",
        "2026-03-03T11:00:00Z entry_skipped u1 cart dedupe",
        "2026-03-03T12:00:00Z entered u1 cart",
        "2026-03-03T13:00:00Z send u1 cart remind sent",
        "2026-03-03T13:00:00Z completed u1 cart",
    ];
    assert_eq!(lines, expected);
}

#[test]
fn out_of_order_events_give_the_same_lines_as_sorted_ones() {
    let dir = fixture("entry-dedupe-reentry");
    let text = std::fs::read_to_string(dir.join("events.jsonl")).expect("events");
    let mut events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    events.sort_by(|a, b| a["ts"].as_str().cmp(&b["ts"].as_str()));
    let tmp = tempfile::tempdir().expect("tmp");
    let sorted = write_events(tmp.path(), &events);
    assert_eq!(
        simulate(&dir, &sorted, &[]),
        simulate(&dir, &dir.join("events.jsonl"), &[])
    );
}

#[test]
fn holdout_is_ten_percent_stable_silent_and_converts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut events = Vec::new();
    for i in 0..10_000 {
        let user = format!("user-{i:05}");
        events.push(json!({"type":"identify","user":user,"ts":"2026-03-02T09:00:00Z","traits":{"email":format!("{user}@example.com")}}));
        events
            .push(json!({"type":"track","user":user,"ts":"2026-03-02T10:00:00Z","event":"visit"}));
        events.push(
            json!({"type":"track","user":user,"ts":"2026-03-03T10:00:00Z","event":"purchase"}),
        );
    }
    let file = write_events(tmp.path(), &events);
    let dir = fixture("holdout-and-goal");
    let lines = simulate(&dir, &file, &[]);
    let held: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "entered" && l["holdout"] == true)
        .map(|l| l["user"].as_str().expect("user"))
        .collect();
    let entered = lines.iter().filter(|l| l["kind"] == "entered").count();
    assert_eq!(entered, 10_000);
    assert!(
        (900..=1100).contains(&held.len()),
        "held out: {}",
        held.len()
    );
    // Held-out users get no message; everyone else gets one.
    let sent: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "send")
        .map(|l| l["user"].as_str().expect("user"))
        .collect();
    assert!(sent.is_disjoint(&held));
    assert_eq!(sent.len() + held.len(), 10_000);
    // Both groups convert, after their instance completed, flagged as entered.
    let converted: BTreeMap<&str, bool> = lines
        .iter()
        .filter(|l| l["kind"] == "converted")
        .map(|l| (l["user"].as_str().expect("user"), l["holdout"] == true))
        .collect();
    assert_eq!(converted.len(), 10_000);
    assert!(converted.iter().all(|(u, h)| *h == held.contains(u)));
    // The same users are held out on every run, and by the documented hash.
    let again = simulate(&dir, &file, &[]);
    assert_eq!(lines, again);
    for i in 0..10_000 {
        let user = format!("user-{i:05}");
        assert_eq!(
            held.contains(user.as_str()),
            engine::hash::is_held_out("promo", &user, 1000)
        );
    }
}

#[test]
fn exits_cancel_timers_and_wait_for_resumes_on_event_or_timeout() {
    let lines = brief(&simulate_fixture("exit-and-wait-for", &[]));
    let expected = [
        "2026-03-02T09:00:00Z entered e1 checkout",
        "2026-03-02T09:00:00Z entered e2 checkout",
        "2026-03-02T09:00:00Z entered e3 checkout",
        "2026-03-02T11:00:00Z exited e1 checkout exit_event",
        "2026-03-02T12:00:00Z send e2 checkout thanks sent",
        "2026-03-02T12:00:00Z completed e2 checkout",
        "2026-03-03T09:00:00Z send e3 checkout nudge sent",
        "2026-03-03T09:00:00Z completed e3 checkout",
    ];
    assert_eq!(lines, expected);
}

#[test]
fn wait_until_is_exact_across_daylight_saving_changes() {
    let lines = simulate_fixture("steps-dst-branch-split-update", &["--only", "sends"]);
    let at = pairs(&lines, "user", "at");
    assert_eq!(
        at,
        [
            ("ny", "2026-03-08T12:00:00Z"),
            ("be", "2026-03-29T06:00:00Z"),
            ("be", "2026-10-25T07:00:00Z")
        ]
    );
}

#[test]
fn a_branch_default_arm_written_first_is_still_the_fallback() {
    let lines = simulate_fixture("branch-default-first", &["--only", "sends"]);
    let steps = pairs(&lines, "user", "step");
    assert_eq!(steps, [("p", "pro"), ("f", "free"), ("o", "everyone")]);
}

#[test]
fn update_to_null_removes_the_attribute() {
    let lines = simulate_fixture("update-null", &["--only", "sends"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "failed", "{lines:?}");
    assert_eq!(lines[0]["reason"], "missing_variable:user.coupon");
}

#[test]
fn wait_until_a_repeated_local_time_resumes_at_the_next_occurrence() {
    // Entered at the first 02:10 (CEST), the second 02:10 (CET) and 02:31
    // CET: the clock next reads 02:30 at 00:30Z, at 01:30Z, and the next day.
    let lines = simulate_fixture("wait-until-repeated-hour", &["--only", "sends"]);
    let at = pairs(&lines, "user", "at");
    assert_eq!(
        at,
        [
            ("first", "2026-10-25T00:30:00Z"),
            ("between", "2026-10-25T01:30:00Z"),
            ("after", "2026-10-26T01:30:00Z")
        ]
    );
}

#[test]
fn update_feeds_branch_and_split_is_deterministic_per_user() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut events = Vec::new();
    for i in 0..200 {
        let user = format!("t{i:03}");
        let level = if i % 10 == 0 { "gold" } else { "basic" };
        events.push(json!({"type":"identify","user":user,"ts":"2026-03-02T09:00:00Z","traits":{"email":format!("{user}@example.com")}}));
        events.push(json!({"type":"track","user":user,"ts":"2026-03-02T10:00:00Z","event":"go","props":{"level":level}}));
    }
    let file = write_events(tmp.path(), &events);
    let dir = fixture("steps-dst-branch-split-update");
    let lines = simulate(&dir, &file, &[]);
    let step_of = |user: &str| -> Option<String> {
        lines
            .iter()
            .find(|l| l["user"] == user && l["kind"] == "send")
            .map(|l| l["step"].as_str().expect("step").to_owned())
    };
    let (mut heads, mut tails) = (0, 0);
    for i in 0..200 {
        let user = format!("t{i:03}");
        if i % 10 == 0 {
            assert_eq!(step_of(&user).as_deref(), Some("gold"), "{user}");
            continue;
        }
        let expected_heads = engine::hash::split_point("tiers", "coin", &user) < 5_000;
        match step_of(&user) {
            Some(s) => {
                assert_eq!(s, "heads");
                assert!(expected_heads, "{user}");
                heads += 1;
            }
            None => {
                assert!(!expected_heads, "{user}");
                tails += 1;
            }
        }
        assert!(
            lines
                .iter()
                .any(|l| l["user"] == user.as_str() && l["kind"] == "completed"),
            "{user} completes"
        );
    }
    assert!(heads > 60 && tails > 60, "heads {heads} tails {tails}");
    assert_eq!(lines, simulate(&dir, &file, &[]));
}

#[test]
fn segment_entry_on_transition_and_as_time_passes() {
    let lines = brief(&simulate_fixture("segment-entry", &[]));
    let expected = [
        "2026-03-02T10:00:00Z entered s1 vip-welcome",
        "2026-03-02T10:00:00Z send s1 vip-welcome hello sent",
        "2026-03-02T10:00:00Z completed s1 vip-welcome",
        "2026-03-02T13:00:00Z entered s1 vip-welcome",
        "2026-03-02T13:00:00Z send s1 vip-welcome hello sent",
        "2026-03-02T13:00:00Z completed s1 vip-welcome",
        // The order leaves the 2-day window: s2 becomes lapsed at once.
        "2026-03-04T09:30:00Z entered s2 winback",
        "2026-03-04T09:30:00Z send s2 winback hello sent",
        "2026-03-04T09:30:00Z completed s2 winback",
    ];
    assert_eq!(lines, expected);
}

#[test]
fn schedules_fire_in_each_users_zone_and_for_every_known_user() {
    let lines = simulate_fixture(
        "schedule-in-user-zones",
        &["--until", "2026-03-03T00:00:00Z", "--only", "sends"],
    );
    let got: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} {} {}",
                l["at"].as_str().unwrap_or(""),
                l["journey"].as_str().unwrap_or(""),
                l["user"].as_str().unwrap_or("")
            )
        })
        .collect();
    let expected = [
        "2026-03-01T12:00:00Z noon b",
        "2026-03-01T12:00:00Z noon n",
        "2026-03-01T12:00:00Z noon t",
        "2026-03-01T12:00:00Z noon x",
        "2026-03-02T00:00:00Z digest t",
        "2026-03-02T08:00:00Z digest b",
        "2026-03-02T12:00:00Z noon b",
        "2026-03-02T12:00:00Z noon n",
        "2026-03-02T12:00:00Z noon t",
        "2026-03-02T12:00:00Z noon x",
        "2026-03-02T14:00:00Z digest n",
    ];
    assert_eq!(got, expected);
}

#[test]
fn schedule_fires_across_daylight_saving_changes() {
    // 02:30 on Sundays, local: New York skips 02:30 on 2026-03-08, Berlin on
    // 2026-03-29 (it fires at 03:00, the first instant after the gap), and
    // Berlin has it twice on 2026-10-25 (it fires once, the first time).
    let lines = simulate_fixture(
        "schedule-dst",
        &["--until", "2026-11-02T00:00:00Z", "--only", "sends"],
    );
    let got: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["at"].as_str().unwrap_or(""),
                l["user"].as_str().unwrap_or("")
            )
        })
        .filter(|l| {
            [
                "2026-03-0",
                "2026-03-1",
                "2026-03-2",
                "2026-10-2",
                "2026-11-0",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .collect();
    let expected = [
        "2026-03-01T07:30:00Z n",
        "2026-03-08T07:00:00Z n",
        "2026-03-15T06:30:00Z n",
        "2026-03-22T01:30:00Z b",
        "2026-03-22T06:30:00Z n",
        "2026-03-29T01:00:00Z b",
        "2026-03-29T06:30:00Z n",
        "2026-10-25T00:30:00Z b",
        "2026-10-25T06:30:00Z n",
        "2026-11-01T01:30:00Z b",
        "2026-11-01T07:30:00Z n",
    ];
    assert_eq!(got, expected);
}

#[test]
fn a_missing_variable_fails_the_message_with_its_name() {
    let lines = simulate_fixture("missing-variable-dead-letter", &["--only", "sends"]);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["user"], "m1");
    assert_eq!(lines[0]["outcome"], "sent");
    assert_eq!(lines[1]["user"], "m2");
    assert_eq!(lines[1]["outcome"], "failed");
    assert_eq!(lines[1]["reason"], "missing_variable:user.first_name");
    assert!(lines[1]["key"].as_str().is_some_and(|k| k.len() == 32));
}

#[test]
fn simulate_options_only_users_until() {
    let dir = fixture("entry-dedupe-reentry");
    let events = dir.join("events.jsonl");
    let all = simulate(&dir, &events, &[]);
    let sends = simulate(&dir, &events, &["--only", "sends"]);
    assert!(sends.iter().all(|l| l["kind"] == "send"));
    assert_eq!(
        sends.len(),
        all.iter().filter(|l| l["kind"] == "send").count()
    );
    // --users 1: only the first user of the file (u1).
    let one = simulate(&dir, &events, &["--users", "1"]);
    assert!(!one.is_empty() && one.iter().all(|l| l["user"] == "u1"));
    // --until relative to the start (the first event, 09:00): nothing after 10:00.
    let early = simulate(&dir, &events, &["--until", "+1h"]);
    assert!(early
        .iter()
        .all(|l| l["at"].as_str() <= Some("2026-03-02T10:00:00Z")));
    assert!(early.iter().any(|l| l["at"] == "2026-03-02T10:00:00Z"));
    // The summary goes to stderr.
    let out = run(&[
        "simulate",
        dir.to_str().expect("dir"),
        "--events",
        events.to_str().expect("events"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("entered") && stderr.contains("sent"),
        "{stderr}"
    );
}

#[test]
fn invalid_events_or_config_exit_1() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"type\":\"track\",\"user\":\"u1\",\"ts\":\"2026-03-02T09:00:00Z\"}\n",
    )
    .expect("write");
    let dir = fixture("entry-dedupe-reentry");
    let out = run(&[
        "simulate",
        dir.to_str().expect("dir"),
        "--events",
        bad.to_str().expect("bad"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.jsonl:1"));
    std::fs::write(&bad, "not json\n").expect("write");
    let out = run(&[
        "simulate",
        dir.to_str().expect("dir"),
        "--events",
        bad.to_str().expect("bad"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let broken = tmp.path().join("repo");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::write(
        broken.join("j.yaml"),
        "apiVersion: sluice/v1\nkind: Journey\nid: x\n",
    )
    .expect("write");
    let events = dir.join("events.jsonl");
    let out = run(&[
        "simulate",
        broken.to_str().expect("dir"),
        "--events",
        events.to_str().expect("events"),
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// FORMAT.md §4: events arrive as JSON lines "on stdin, in files, and in
/// the HTTP API's bodies": `--events -` reads standard input (and a pipe
/// such as `/dev/stdin` works too), with the same lines as the file and
/// bad lines named after `stdin`.
#[test]
fn simulate_reads_events_from_standard_input() {
    let dir = fixture("entry-dedupe-reentry");
    let events = dir.join("events.jsonl");
    let from_file = simulate(&dir, &events, &[]);
    let text = std::fs::read(&events).expect("events");
    let piped = |arg: &str, input: &[u8]| -> Output {
        let mut child = support::cli::sluice()
            .arg("simulate")
            .arg(&dir)
            .args(["--events", arg])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write events");
        child.wait_with_output().expect("wait")
    };
    for arg in ["-", "/dev/stdin"] {
        let out = piped(arg, &text);
        assert_eq!(
            out.status.code(),
            Some(0),
            "--events {arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines, from_file, "--events {arg}: the file's lines");
    }
    let out = piped("-", b"not json\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stdin:1"), "{stderr}");
}
