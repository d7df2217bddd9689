//! What the on-call engineer reads from a running `sluice run`, over the
//! life of the process rather than one workload (RUN.md §6,
//! docs/metrics.md): here, the series of a journey deployed while the
//! engine runs. `tests/metrics.rs` checks the values after a known
//! workload.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::json;

use support::cli::{output, sluice, stderr, stdout};
use support::events::{identify, track};
use support::server::{sample, SluiceRun};
use support::wait::until;

const INGEST: &str = "ingest-token-OBSERVE-31c8";
const ADMIN: &str = "admin-token-OBSERVE-92d4";

/// A journey the fixture does not have, sending with one of its templates.
const RESTOCK: &str = "apiVersion: sluice/v1
kind: Journey
id: restock
version: 1
category: promo
entry:
  event: back_in_stock
  reentry: always
steps:
  - id: restock-email
    send: { channel: email, template: browse }
";

const ENTRY_OUTCOMES: [&str; 5] = ["entered", "dedupe", "reentry", "live", "holdout"];
const SEND_OUTCOMES: [&str; 4] = ["sent", "deferred", "suppressed", "failed"];

/// docs/metrics.md: journey series exist at zero "so `rate()` sees them
/// before the first decision". That holds for a journey added by `sluice
/// apply --server` too, not only for those deployed at start-up: without
/// its zero sample, `increase()` misses a new journey's first entries and
/// the dashboard's `journey` variable does not list it.
#[test]
fn a_journey_applied_while_running_has_its_series_at_zero() {
    let (_root, repo) =
        support::fixture::temp_copy("metrics/workload", &[("__HOOK__", "9".to_owned())]);
    let run = SluiceRun::new(&repo)
        .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
        .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
        .start();
    let before = run.metrics();
    assert!(
        sample(
            &before,
            r#"sluice_entries_total{journey="browse",outcome="entered"}"#
        )
        .is_some(),
        "the fixture's journeys have their series at start-up:\n{before}"
    );
    assert!(!before.contains(r#"journey="restock""#), "{before}");

    std::fs::write(repo.join("journeys/restock.yaml"), RESTOCK).expect("write the journey");
    let repo_arg = repo.to_str().expect("a UTF-8 path");
    let applied = output(sluice().args([
        "apply",
        repo_arg,
        "--server",
        &run.base_url(),
        "--token",
        ADMIN,
    ]));
    assert!(
        applied.status.success(),
        "apply: {}{}",
        stdout(&applied),
        stderr(&applied)
    );

    let after = run.metrics();
    for outcome in ENTRY_OUTCOMES {
        let series = format!(r#"sluice_entries_total{{journey="restock",outcome="{outcome}"}}"#);
        assert_eq!(sample(&after, &series), Some(0.0), "{series}:\n{after}");
    }
    for outcome in SEND_OUTCOMES {
        let series = format!(
            r#"sluice_sends_total{{journey="restock",channel="email",outcome="{outcome}"}}"#
        );
        assert_eq!(sample(&after, &series), Some(0.0), "{series}:\n{after}");
    }

    // And they count from there.
    let r = run.post_events(
        INGEST,
        &[
            identify("r1", "id-r1", json!({"email": "r1@observe.example"})),
            track("r1", "ev-r1", "back_in_stock", json!({"sku": "s1"})),
        ],
    );
    assert_eq!(r.status, 202, "{}", r.text);
    until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "the restock entry and send counted",
        || {
            let m = run.metrics();
            sample(
                &m,
                r#"sluice_entries_total{journey="restock",outcome="entered"}"#,
            ) == Some(1.0)
                && sample(
                    &m,
                    r#"sluice_sends_total{journey="restock",channel="email",outcome="sent"}"#,
                ) == Some(1.0)
        },
    );
}
