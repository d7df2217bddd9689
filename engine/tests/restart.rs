//! Crash and restart: process part of a stream, drop the engine, reopen the
//! same sled store and continue. Every live instance (waits, awaited events,
//! deferred messages, schedules) resumes where it was: the lines are exactly
//! those of an uninterrupted run.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;

use chrono::TimeDelta;

use engine::simulate::{SimOptions, Simulation};
use engine::test::SharedLines;
use journeys::event::Event;
use support::shop::{config as shop, start};

fn events() -> Vec<Event> {
    let spec = shopgen::Spec {
        users: 400,
        events: 4_000,
        days: 10,
        seed: 7,
        ..shopgen::Spec::default()
    };
    support::shop::generated(&spec)
}

#[test]
fn every_live_instance_resumes_after_a_restart() {
    let config = shop();
    let events = events();
    let until = events.last().map(|e| e.ts).expect("events") + TimeDelta::days(3);
    // Small caches, so state really goes through the store.
    let options = |store: Option<&Path>| SimOptions {
        store: store.map(Path::to_path_buf),
        cache_users: 50,
        ..SimOptions::default()
    };

    let whole = SharedLines::default();
    let mut sim = Simulation::new(
        Arc::clone(&config),
        start(),
        &options(None),
        Box::new(whole.clone()),
    )
    .expect("open");
    for e in &events {
        sim.event(e).expect("event");
    }
    sim.finish(until).expect("finish");
    let whole = whole.take();
    assert!(
        whole.len() > 1_000,
        "a meaningful run: {} lines",
        whole.len()
    );

    let dir = tempfile::tempdir().expect("tmp");
    let store = dir.path().join("store");
    let mut parts = Vec::new();
    let cuts = [0, events.len() / 3, 2 * events.len() / 3, events.len()];
    for (i, w) in cuts.windows(2).enumerate() {
        let part = SharedLines::default();
        let begin = if i == 0 { start() } else { events[w[0]].ts };
        let mut sim = Simulation::new(
            Arc::clone(&config),
            begin,
            &options(Some(&store)),
            Box::new(part.clone()),
        )
        .expect("reopen");
        for e in &events[w[0]..w[1]] {
            sim.event(e).expect("event");
        }
        if w[1] == events.len() {
            sim.finish(until).expect("finish");
        } else {
            // The process stops here: the engine is dropped after its last
            // commit, as `run` commits before acknowledging.
            sim.stop().expect("stop");
        }
        parts.extend(part.take());
    }
    assert_eq!(parts.len(), whole.len());
    for (a, b) in parts.iter().zip(&whole) {
        assert_eq!(a, b);
    }
}
