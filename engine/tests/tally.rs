//! The per-step counters (`store::tally`) against a count from scratch:
//! after randomized workloads on the shop example (events, timers, sends
//! of every outcome, erasures, restarts), the counters the engine kept —
//! in memory and as committed — equal a rebuild that scans every user
//! record and the message log. A store whose counters are missing or
//! stale gets them rebuilt when opened, and a crash at any write leaves
//! counters that match what the store kept.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use engine::simulate::{SimOptions, Simulation};
use engine::store::sled_store::{SledOptions, SledStore};
use engine::store::tally::{self, Counts, StepKey, Tallies};
use engine::store::{Batch, Kv};
use engine::test::SharedLines;
use journeys::event::Event;
use support::shop::{config as shop, start};

fn events(users: u64, events: u64, seed: u64) -> Vec<Event> {
    let spec = shopgen::Spec {
        users,
        events,
        days: 6,
        seed,
        ..shopgen::Spec::default()
    };
    support::shop::generated_sorted(&spec)
}

fn options(store: &Path) -> SimOptions {
    SimOptions {
        store: Some(store.to_path_buf()),
        cache_users: 30,
        commit_every: 120,
        log_messages: true,
        ..SimOptions::default()
    }
}

fn open(config: &Arc<journeys::Config>, store: &Path, at: DateTime<Utc>) -> Simulation {
    Simulation::new(
        Arc::clone(config),
        at,
        &options(store),
        Box::new(SharedLines::default()),
    )
    .expect("open")
}

/// What the store holds: the committed counters and a count from scratch.
fn committed_and_rebuilt(store: &Path) -> (BTreeMap<StepKey, Counts>, BTreeMap<StepKey, Counts>) {
    let s = SledStore::open(store, &SledOptions::default()).expect("open store");
    let committed = s.tallies().expect("tallies");
    let rebuilt = tally::rebuild(&s).expect("rebuild").counts().clone();
    (committed, nonzero(rebuilt))
}

fn nonzero(m: BTreeMap<StepKey, Counts>) -> BTreeMap<StepKey, Counts> {
    m.into_iter().filter(|(_, c)| !c.is_zero()).collect()
}

/// Runs `events` in `parts` slices, stopping and reopening the store
/// between them, erasing every `erase_every`-th user seen in a slice.
fn workload(store: &Path, events: &[Event], parts: usize, erase_every: usize) {
    let config = shop();
    let n = events.len();
    for p in 0..parts {
        let (a, b) = (p * n / parts, (p + 1) * n / parts);
        let begin = if p == 0 { start() } else { events[a].ts };
        let mut sim = open(&config, store, begin);
        let mut seen = std::collections::BTreeSet::new();
        for e in &events[a..b] {
            sim.event(e).expect("event");
            seen.insert(e.user.clone());
        }
        if erase_every > 0 {
            for u in seen.iter().step_by(erase_every) {
                sim.engine().erase(u).expect("erase");
            }
        }
        let kept = nonzero(sim.engine().tally().counts().clone());
        if p + 1 == parts {
            let until = events[n - 1].ts + TimeDelta::days(2);
            sim.finish(until).expect("finish");
        } else {
            sim.stop().expect("stop");
            // What was in memory is what was committed.
            let (committed, rebuilt) = committed_and_rebuilt(store);
            assert_eq!(committed, kept, "committed counters after part {p}");
            assert_eq!(committed, rebuilt, "a rebuild after part {p}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn the_counters_equal_a_count_from_scratch(
        seed in 0u64..10_000,
        users in 30u64..120,
        per_user in 6u64..14,
        parts in 1usize..4,
        erase_every in prop_oneof![Just(0usize), 3usize..9],
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = dir.path().join("store");
        let evs = events(users, users * per_user, seed);
        workload(&store, &evs, parts, erase_every);
        let (committed, rebuilt) = committed_and_rebuilt(&store);
        prop_assert!(!committed.is_empty(), "the workload reached some step");
        prop_assert_eq!(committed, rebuilt);
    }
}

#[test]
fn a_workload_counts_live_instances_and_every_outcome() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    workload(&store, &events(200, 2_400, 11), 2, 5);
    let (committed, rebuilt) = committed_and_rebuilt(&store);
    assert_eq!(committed, rebuilt);
    let sum = |f: fn(&Counts) -> u64| committed.values().map(f).sum::<u64>();
    assert!(sum(|c| c.live) > 0, "{committed:?}");
    assert!(sum(|c| c.sent) > 0, "{committed:?}");
    assert!(
        sum(|c| c.suppressed) + sum(|c| c.deferred) > 0,
        "{committed:?}"
    );
}

/// Deletes the store's counters and their stamp (a store written before
/// counters existed), or sets a stale stamp.
fn tamper(store: &Path, stale_stamp: bool) {
    let s = SledStore::open(store, &SledOptions::default()).expect("open store");
    let mut b = Batch::default();
    for (k, _) in s.scan(b"c", None, None, usize::MAX).expect("scan") {
        b.delete(k);
    }
    if stale_stamp {
        b.put_meta(
            tally::STAMP,
            engine::store::codec::encode("stamp", &1u64).expect("encode"),
        );
    } else {
        b.delete(b"xtally".to_vec());
    }
    s.apply(b).expect("apply");
    s.flush().expect("flush");
}

#[test]
fn missing_or_stale_counters_are_rebuilt_when_the_store_opens() {
    let config = shop();
    let evs = events(150, 1_500, 3);
    for stale in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let store = dir.path().join("store");
        workload(&store, &evs, 1, 0);
        let (before, _) = committed_and_rebuilt(&store);
        assert!(!before.is_empty());
        tamper(&store, stale);
        assert!(committed_and_rebuilt(&store).0.is_empty());
        let mut sim = open(&config, &store, evs[evs.len() - 1].ts);
        assert_eq!(nonzero(sim.engine().tally().counts().clone()), before);
        sim.stop().expect("stop");
        let (committed, rebuilt) = committed_and_rebuilt(&store);
        assert_eq!(committed, before, "stale: {stale}");
        assert_eq!(rebuilt, before);
    }
}

/// Runs `events` on `store` with `faults`; whether it got to the end.
fn run_with_faults(
    store: &Path,
    events: &[Event],
    faults: Option<engine::store::log::Faults>,
) -> bool {
    let config = shop();
    let Ok(mut sim) = Simulation::new(
        config,
        start(),
        &SimOptions {
            faults,
            ..options(store)
        },
        Box::new(SharedLines::default()),
    ) else {
        return false;
    };
    for e in events {
        if sim.event(e).is_err() {
            return false;
        }
    }
    sim.finish(events[events.len() - 1].ts + TimeDelta::days(2))
        .is_ok()
}

#[test]
fn after_a_crash_at_any_write_the_counters_match_the_store() {
    let evs = events(80, 800, 5);
    let dir = tempfile::tempdir().expect("tmp");
    let counting = engine::store::log::Faults::counting();
    assert!(run_with_faults(
        &dir.path().join("whole"),
        &evs,
        Some(counting.clone())
    ));
    let total = counting.spent();
    assert!(total > 20, "many writes: {total}");
    let stride = (total / 25).max(1);
    for n in (0..total).step_by(stride as usize) {
        let store = dir.path().join(format!("cut-{n}"));
        let ok = run_with_faults(&store, &evs, Some(engine::store::log::Faults::after(n)));
        assert!(!ok, "the fault at write {n} stopped the run");
        // What survived the crash: counters and records of the same commits.
        let (committed, rebuilt) = committed_and_rebuilt(&store);
        assert_eq!(committed, rebuilt, "after a crash at write {n}");
        // A restart goes on from there and stays exact.
        assert!(
            run_with_faults(&store, &evs, None),
            "restart after write {n}"
        );
        let (committed, rebuilt) = committed_and_rebuilt(&store);
        assert_eq!(committed, rebuilt, "after the restart from write {n}");
        std::fs::remove_dir_all(&store).expect("cleanup");
    }
}
