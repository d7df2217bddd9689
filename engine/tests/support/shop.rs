//! The example shop as the engine runs it: its compiled config, the
//! moment the generated events start, and events from `shopgen`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use journeys::event::Event;

use super::fixture;

/// `examples/shop`, loaded and compiled.
pub fn config() -> Arc<journeys::Config> {
    Arc::new(
        journeys::load(&fixture::shop()).unwrap_or_else(|_| panic!("examples/shop is invalid")),
    )
}

/// 2026-03-02T00:00:00Z, where `shopgen`'s default events begin.
pub fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z")
        .expect("ts")
        .with_timezone(&Utc)
}

/// The events `shopgen` generates for `spec`, in the order it writes them.
pub fn generated(spec: &shopgen::Spec) -> Vec<Event> {
    let mut out = Vec::new();
    shopgen::generate(spec, &mut out).expect("generate");
    String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| Event::from_line(l).expect("event"))
        .collect()
}

/// [`generated`], sorted by time (stable).
pub fn generated_sorted(spec: &shopgen::Spec) -> Vec<Event> {
    let mut events = generated(spec);
    events.sort_by_key(|e| e.ts);
    events
}
