//! Crash-atomic commits, proven by failure injection: the store fails at
//! the n-th physical write (a log entry left half written, a sled batch, an
//! fsync) as if the process died there; the same simulation is then run
//! again on the same store with the same events. Whatever n, the decisions
//! printed before the crash and after the restart are exactly the
//! uninterrupted run's (lines decided after the last commit may be printed
//! twice: at-least-once), for schedules, timers, throttle ledgers and
//! deferred messages alike.
//!
//! And power loss: everything written after the last fsync is dropped (the
//! log cut at a random offset after it, sled put back to its last flush),
//! then the store reopens without error with every synced commit.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use engine::simulate::{SimOptions, Simulation};
use engine::store::log::Faults;
use engine::test::SharedLines;
use journeys::event::Event;
use support::shop::{config as shop, start};

fn events(users: u64, events: u64, days: u64, seed: u64) -> Vec<Event> {
    let spec = shopgen::Spec {
        users,
        events,
        days,
        seed,
        ..shopgen::Spec::default()
    };
    support::shop::generated_sorted(&spec)
}

fn options(store: &Path, faults: Option<Faults>) -> SimOptions {
    SimOptions {
        store: Some(store.to_path_buf()),
        // Small caches and frequent commits: state really goes through the
        // store, and a run makes many commits.
        cache_users: 40,
        commit_every: 150,
        faults,
        ..SimOptions::default()
    }
}

/// Runs the whole stream on `store`; returns the lines printed and whether
/// the run got to the end.
fn run(
    config: &Arc<journeys::Config>,
    store: &Path,
    faults: Option<Faults>,
    events: &[Event],
    until: DateTime<Utc>,
) -> (Vec<String>, bool) {
    let lines = SharedLines::default();
    let mut sim = match Simulation::new(
        Arc::clone(config),
        start(),
        &options(store, faults),
        Box::new(lines.clone()),
    ) {
        Ok(s) => s,
        Err(_) => return (Vec::new(), false),
    };
    let mut ok = true;
    for e in events {
        if sim.event(e).is_err() {
            ok = false;
            break;
        }
    }
    if ok {
        ok = sim.finish(until).is_ok();
    }
    let out = lines
        .take()
        .iter()
        .map(|l| serde_json::to_string(l).expect("json"))
        .collect();
    (out, ok)
}

fn check(whole: &[String], before: &[String], after: &[String], what: &str) {
    let whole_set: BTreeSet<&String> = whole.iter().collect();
    for l in before.iter().chain(after) {
        assert!(
            whole_set.contains(l),
            "{what}: a decision the uninterrupted run never made: {l}"
        );
    }
    let got: BTreeSet<&String> = before.iter().chain(after).collect();
    let missing: Vec<&&String> = whole_set.difference(&got).take(3).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} decisions missing, e.g. {missing:?}",
        whole_set.len() - got.len()
    );
}

#[test]
fn a_failure_at_any_write_of_a_commit_loses_and_invents_nothing() {
    let config = shop();
    let events = events(120, 1_500, 9, 11);
    let until = events.last().map(|e| e.ts).expect("events") + TimeDelta::days(8);

    let dir = tempfile::tempdir().expect("tmp");
    let counting = Faults::counting();
    let (whole, ok) = run(
        &config,
        &dir.path().join("whole"),
        Some(counting.clone()),
        &events,
        until,
    );
    assert!(ok);
    let total = counting.spent();
    let kinds: BTreeSet<&str> = whole
        .iter()
        .filter_map(|l| l.split("\"kind\":\"").nth(1)?.split('"').next())
        .collect();
    assert!(whole.len() > 500, "a meaningful run: {} lines", whole.len());
    assert!(
        whole.iter().any(|l| l.contains("\"deferred\""))
            && whole.iter().any(|l| l.contains("digest")),
        "the run defers messages and fires a schedule: {kinds:?}"
    );
    assert!(total > 100, "many writes: {total}");

    // Every write of the run (a stride when there are very many).
    let stride = (total as usize / 300).max(1);
    for n in (0..total).step_by(stride) {
        let store = dir.path().join(format!("cut-{n}"));
        let (before, ok) = run(&config, &store, Some(Faults::after(n)), &events, until);
        assert!(!ok, "the fault at write {n} of {total} stopped the run");
        let (after, ok) = run(&config, &store, None, &events, until);
        assert!(ok, "the restart after a fault at write {n} ran to the end");
        check(&whole, &before, &after, &format!("fault at write {n}"));
        std::fs::remove_dir_all(&store).expect("cleanup");
    }
}
