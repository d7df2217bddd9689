//! Unit tests' engine: a fixture repository of `engine/tests/fixtures/`
//! on a sled store in a given directory, its clock virtual and starting at
//! 2026-03-02T10:00:00Z, deliveries left to (absent) workers.

use std::path::Path;
use std::sync::Arc;

use crate::clock::{Clock, Millis, VirtualClock};
use crate::engine::{Delivery, Engine, Options};
use crate::output::Discard;
use crate::store::sled_store::{SledOptions, SledStore};

/// The engine on `fixture` with its store in `dir`, and the clock's start.
pub(crate) fn open(fixture: &str, dir: &Path) -> (Engine, Millis) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let config = Arc::new(journeys::load(&root).unwrap_or_else(|_| panic!("fixture {fixture}")));
    let store = SledStore::open(dir, &SledOptions::default()).expect("store");
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
        .expect("ts")
        .to_utc();
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(start));
    let now = clock.now_millis();
    let engine = Engine::open(
        config,
        Box::new(store),
        clock,
        Delivery::Workers,
        Box::new(Discard),
        Options::default(),
    )
    .expect("engine");
    (engine, now)
}
