//! Property tests: random event streams through the engine on a virtual
//! clock, checking the invariants directly on its output and state: never
//! two live instances of a journey per user, dedupe keys honoured, holdout
//! assignment stable, timers never early.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};

use engine::simulate::{SimOptions, Simulation};
use engine::test::SharedLines;
use journeys::event::Event;

fn config() -> Arc<journeys::Config> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/random-streams");
    Arc::new(journeys::load(&dir).unwrap_or_else(|d| {
        panic!(
            "fixture invalid: {:?}",
            d.iter().map(|x| x.to_string()).collect::<Vec<_>>()
        )
    }))
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-06T00:00:00Z")
        .expect("ts")
        .with_timezone(&Utc)
}

const ZONES: [&str; 4] = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC"];

/// One random event: (user, minute offset, what, a small number).
fn event_strategy() -> impl Strategy<Value = (u8, u32, u8, u8)> {
    (0u8..6, 0u32..(3 * 24 * 60), 0u8..5, 0u8..8)
}

fn to_event(i: usize, (user, minute, what, n): (u8, u32, u8, u8)) -> Event {
    let user = format!("u{user}");
    // Distinct timestamps per event, so a line can be traced to its event.
    let ts = start() + TimeDelta::minutes(minute as i64) + TimeDelta::milliseconds(i as i64);
    let v = match what {
        0 => {
            json!({"type":"identify","user":user,"ts":ts,"traits":{"email":format!("{user}@x.io"),"timezone":ZONES[(n % 4) as usize],"ltv": (n as u32) * 40}})
        }
        1 | 2 => {
            json!({"type":"track","user":user,"ts":ts,"event":"cart_updated","id":format!("e{}", n % 3 + (minute % 5) as u8 * 3),"props":{"cart_id":format!("c{}", n % 4)}})
        }
        3 => json!({"type":"track","user":user,"ts":ts,"event":"order","props":{}}),
        _ => json!({"type":"track","user":user,"ts":ts,"event":"ping"}),
    };
    Event::from_json(v).expect("valid event")
}

fn run(config: &Arc<journeys::Config>, events: &[Event]) -> Vec<Value> {
    let sink = SharedLines::default();
    let mut sim = Simulation::new(
        Arc::clone(config),
        start(),
        &SimOptions::default(),
        Box::new(sink.clone()),
    )
    .expect("open");
    for e in events {
        sim.event(e).expect("event");
    }
    // Everything still live is checked too: stop before all timers ran.
    let until = start() + TimeDelta::days(4);
    sim.finish(until).expect("finish");
    sink.take().iter().map(|l| l.to_json()).collect()
}

fn ms(l: &Value) -> i64 {
    DateTime::parse_from_rfc3339(l["at"].as_str().expect("at"))
        .expect("ts")
        .timestamp_millis()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_on_random_streams(raw in proptest::collection::vec(event_strategy(), 1..120)) {
        let config = config();
        let mut events: Vec<Event> = raw.into_iter().enumerate().map(|(i, r)| to_event(i, r)).collect();
        events.sort_by_key(|e| e.ts);
        let lines = run(&config, &events);

        // Never two live instances of one journey for one user.
        let mut live: BTreeMap<(String, String), i64> = BTreeMap::new();
        for l in &lines {
            let key = (l["user"].as_str().unwrap_or("").to_owned(), l["journey"].as_str().unwrap_or("").to_owned());
            match l["kind"].as_str() {
                Some("entered") => {
                    prop_assert!(!live.contains_key(&key), "second live instance: {l}");
                    live.insert(key, ms(l));
                }
                Some("completed") | Some("exited") => {
                    prop_assert!(live.remove(&key).is_some(), "ended without entering: {l}");
                }
                Some("send") => {
                    // Timers never fire early: a send happens while live,
                    // never before its waits are over.
                    let entered = live.get(&key).copied();
                    prop_assert!(entered.is_some(), "send outside an instance: {l}");
                    let entered = entered.unwrap_or(0);
                    match (l["journey"].as_str(), l["step"].as_str()) {
                        (Some("cart"), Some("remind")) => prop_assert!(ms(l) >= entered + 3_600_000, "{l}"),
                        (Some("cart"), Some("nudge")) => prop_assert!(ms(l) >= entered + 4 * 3_600_000, "{l}"),
                        (Some("vip"), _) => prop_assert!(ms(l) >= entered + 1_800_000, "{l}"),
                        (Some("daily"), _) => {
                            prop_assert!(ms(l) >= entered, "{l}");
                            // 10:00 local in one of the zones the user may have.
                            let t = DateTime::parse_from_rfc3339(l["at"].as_str().unwrap_or("")).expect("ts").with_timezone(&Utc);
                            let ten = ZONES.iter().any(|z| {
                                let tz: chrono_tz::Tz = z.parse().expect("tz");
                                t.with_timezone(&tz).format("%H:%M:%S").to_string() == "10:00:00"
                            });
                            prop_assert!(ten, "{l}");
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }

        // Dedupe: never two entries of `cart` with one cart id within 1 day.
        let cart_of: BTreeMap<(String, i64), String> = events
            .iter()
            .filter(|e| e.name() == Some("cart_updated"))
            .map(|e| ((e.user.clone(), e.ts.timestamp_millis()), e.props["cart_id"].as_str().unwrap_or("").to_owned()))
            .collect();
        let mut seen: BTreeMap<(String, String), i64> = BTreeMap::new();
        for l in lines.iter().filter(|l| l["kind"] == "entered" && l["journey"] == "cart") {
            let user = l["user"].as_str().unwrap_or("").to_owned();
            let cart = cart_of.get(&(user.clone(), ms(l))).cloned();
            prop_assert!(cart.is_some(), "entry without its event: {l}");
            let cart = cart.unwrap_or_default();
            if let Some(prev) = seen.get(&(user.clone(), cart.clone())) {
                prop_assert!(ms(l) - prev >= 86_400_000, "dedupe key {cart} reused within its window: {l}");
            }
            seen.insert((user, cart), ms(l));
        }

        // Holdouts: a pure function of (journey, user), the same on a rerun.
        for l in lines.iter().filter(|l| l["kind"] == "entered") {
            let held = engine::hash::is_held_out(l["journey"].as_str().unwrap_or(""), l["user"].as_str().unwrap_or(""), if l["journey"] == "cart" { 2000 } else { 0 });
            prop_assert_eq!(l["holdout"].as_bool(), Some(held), "{}", l);
            if held {
                prop_assert!(!lines.iter().any(|s| s["kind"] == "send" && s["user"] == l["user"] && s["journey"] == l["journey"]));
            }
        }
        prop_assert_eq!(&lines, &run(&config, &events));
    }
}
