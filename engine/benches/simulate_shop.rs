//! `cargo bench -p engine --bench simulate_shop [-- USERS EVENTS]`: generates
//! the example shop's event stream (default 100,000 users, ~1,000,000
//! events), simulates the two weeks it covers, and prints events per second
//! and the process's peak resident memory. Figures: BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};

use engine::events::EventFile;
use engine::output::Discard;
use engine::simulate::{SimOptions, Simulation};

/// The same allocator as the `sluice` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let spec = shopgen::Spec::from_args(std::env::args().skip(1));
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("events.jsonl");
    shopgen::generate_file(&spec, &path).expect("generate");
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let config =
        Arc::new(journeys::load(&shop).unwrap_or_else(|_| panic!("examples/shop is invalid")));
    let start: DateTime<Utc> = spec.start;
    let until = start + TimeDelta::days(spec.days as i64);

    let began = Instant::now();
    let file = EventFile::open(&path, None).expect("events");
    let mut sim =
        Simulation::new(config, start, &SimOptions::default(), Box::new(Discard)).expect("open");
    let mut n = 0u64;
    for ev in file.events().expect("events") {
        let ev = ev.expect("event");
        if ev.ts > until {
            break;
        }
        sim.event(&ev).expect("simulate");
        n += 1;
    }
    let summary = sim.finish(until).expect("finish");
    let secs = began.elapsed().as_secs_f64();
    println!(
        "simulate_shop: {} users, {n} events in {secs:.2}s = {:.0} events/s, peak RSS {:.0} MB",
        spec.users,
        n as f64 / secs,
        peak_rss_mb()
    );
    println!("{summary}");
}
