//! `cargo bench -p engine --bench policy_overhead [-- USERS EVENTS]`: the
//! example shop's generated stream (default 100,000 users, ~1,000,000
//! events) simulated twice over the same two weeks: once with no policies
//! at all, once with five frequency caps, two quiet-hour policies and three
//! throttles. Prints events/s of each (best of two runs) and the slowdown.
//! Issue 5's target: at most 25% slower with the policies. Figures:
//! BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};

use engine::events::EventFile;
use engine::output::Discard;
use engine::simulate::{SimOptions, Simulation};
use journeys::compiled::{Channel, Config, FrequencyCap, PolicyAction, PolicyScope};
use journeys::scalar::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn shop() -> Config {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    journeys::load(&dir).unwrap_or_else(|_| panic!("examples/shop is invalid"))
}

/// The shop's own policies (2 caps, 2 quiet hours, 3 throttles) plus three
/// more caps: five caps in all.
fn with_policies() -> Config {
    let mut config = shop();
    let cap = |id: &str, channels: Option<Vec<Channel>>, limit: u32, days: u64| FrequencyCap {
        id: id.to_owned(),
        scope: PolicyScope {
            channels,
            categories: None,
        },
        limit,
        per: Duration(days * 86_400),
        action: PolicyAction::Drop,
    };
    config.frequency_caps.push(cap("all-daily", None, 4, 1));
    config
        .frequency_caps
        .push(cap("email-monthly", Some(vec![Channel::Email]), 20, 30));
    config
        .frequency_caps
        .push(cap("push-weekly", Some(vec![Channel::Push]), 5, 7));
    assert_eq!(config.frequency_caps.len(), 5);
    assert_eq!(config.quiet_hours.len(), 2);
    assert_eq!(config.throttles.len(), 3);
    config
}

fn without_policies() -> Config {
    let mut config = shop();
    config.frequency_caps.clear();
    config.quiet_hours.clear();
    config.throttles.clear();
    config
}

fn run(config: Config, path: &Path, start: DateTime<Utc>, until: DateTime<Utc>) -> (f64, String) {
    let began = Instant::now();
    let file = EventFile::open(path, None).expect("events");
    let mut sim = Simulation::new(
        Arc::new(config),
        start,
        &SimOptions::default(),
        Box::new(Discard),
    )
    .expect("open");
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
    (
        n as f64 / began.elapsed().as_secs_f64(),
        summary.to_string(),
    )
}

fn main() {
    let spec = shopgen::Spec::from_args(std::env::args().skip(1));
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("events.jsonl");
    shopgen::generate_file(&spec, &path).expect("generate");
    let start = spec.start;
    let until = start + TimeDelta::days(spec.days as i64);
    let mut bare = 0f64;
    let mut policed = 0f64;
    let mut summaries = (String::new(), String::new());
    // Alternate, so both see the same machine conditions.
    for _ in 0..2 {
        let (rate, s) = run(without_policies(), &path, start, until);
        bare = bare.max(rate);
        summaries.0 = s;
        let (rate, s) = run(with_policies(), &path, start, until);
        policed = policed.max(rate);
        summaries.1 = s;
    }
    println!("no policies:          {bare:.0} events/s\n{}", summaries.0);
    println!(
        "5 caps, 2 quiet, 3 throttles: {policed:.0} events/s\n{}",
        summaries.1
    );
    println!(
        "policy_overhead: {:.1}% slower with policies (target: at most 25%)",
        (1.0 - policed / bare) * 100.0
    );
}
