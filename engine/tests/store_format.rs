//! A store written by today's format (version 2) opens and goes on: the
//! fixture was written by `sluice simulate examples/shop --store` over
//! three events of one user (`ana` signed up on 2026-03-02 at 09:05 and got
//! the welcome email), so her welcome series waits in it for its next email
//! two days later.
//! If this test breaks, the format changed: bump `store::format::CURRENT`
//! and teach `open` to upgrade (or refuse) version 2.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use engine::simulate::{SimOptions, Simulation};
use engine::store::sled_store::{SledOptions, SledStore};
use engine::store::users::Users;
use engine::test::SharedLines;
use support::fixture::copy_dir;

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("ts")
        .with_timezone(&Utc)
}

#[test]
fn a_version_2_store_opens_and_goes_on() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-format-2");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("store");
    copy_dir(&fixture, &path);
    {
        let store = SledStore::open(&path, &SledOptions::default()).expect("open");
        let ana = store.user("ana").expect("read").expect("ana is there");
        assert_eq!(ana.profile["first_name"], "Ana");
        assert_eq!(ana.instances.len(), 1, "her welcome series waits");
        assert_eq!(ana.instances[0].journey, "welcome-series");
    }
    let config = Arc::new(
        journeys::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop"))
            .unwrap_or_else(|_| panic!("examples/shop is invalid")),
    );
    let lines = SharedLines::default();
    let sim = Simulation::new(
        config,
        ts("2026-03-02T09:30:00Z"),
        &SimOptions {
            store: Some(path.clone()),
            ..SimOptions::default()
        },
        Box::new(lines.clone()),
    )
    .expect("simulate on it");
    sim.finish(ts("2026-03-04T12:00:00Z")).expect("finish");
    let out: Vec<String> = lines
        .take()
        .iter()
        .map(|l| serde_json::to_string(l).expect("json"))
        .collect();
    assert!(
        out.iter()
            .any(|l| l.contains("welcome-series") && l.contains("plus-pitch")),
        "the pending welcome email went out: {out:#?}"
    );
}

#[test]
fn a_newer_store_is_refused_naming_both_versions() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-format-2");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("store");
    copy_dir(&fixture, &path);
    std::fs::write(path.join("FORMAT"), "sluice-store 9\n").expect("write");
    let e = SledStore::open(&path, &SledOptions::default())
        .err()
        .expect("refused");
    let text = e.to_string();
    assert!(
        text.contains("version 9") && text.contains("version 2"),
        "{text}"
    );
}
