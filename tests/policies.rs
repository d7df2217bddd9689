//! Every message policy of FORMAT.md §8 through the real `sluice simulate`:
//! one fixture repository per rule under `tests/fixtures/` (its README.md
//! tabulates the expected decisions), and the exact `send` lines each run
//! prints — when, to whom, the outcome, the reason and the `until`.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn fixtures() -> PathBuf {
    support::fixture::workspace().join("tests/fixtures")
}

/// Runs `sluice simulate DIR --events EVENTS ARGS…`, requires exit 0 and
/// returns every stdout line as JSON (in time order), checked for the
/// shape of CLI.md.
fn simulate_raw(dir: &Path, events: &Path, args: &[&str]) -> Vec<Value> {
    let lines = support::cli::simulate_lines(dir, events, args);
    for l in lines.iter().filter(|l| l["kind"] == "send") {
        check_send_shape(l);
    }
    lines
}

/// The keys a `send` line has for its outcome, and only those.
fn check_send_shape(l: &Value) {
    let has = |k: &str| l.get(k).is_some();
    for k in [
        "at", "user", "journey", "version", "step", "channel", "template",
    ] {
        assert!(has(k), "`{k}` missing: {l}");
    }
    match l["outcome"].as_str() {
        Some("sent") => {
            let key = l["key"].as_str().unwrap_or_default();
            assert!(!key.is_empty(), "sent without a key: {l}");
            assert!(!has("reason") && !has("until"), "{l}");
        }
        Some("deferred") => {
            assert!(has("reason") && !has("key"), "{l}");
            let (at, until) = (l["at"].as_str(), l["until"].as_str());
            assert!(
                until.is_some_and(|u| Some(u) > at),
                "until not after at: {l}"
            );
        }
        Some("suppressed") => assert!(has("reason") && !has("until") && !has("key"), "{l}"),
        other => panic!("unexpected outcome {other:?}: {l}"),
    }
}

/// A `send` line as `<at> <user> <journey> <outcome>[ <reason>][ until <until>]`.
fn compact(l: &Value) -> String {
    let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
    let mut out = format!(
        "{} {} {} {}",
        s("at"),
        s("user"),
        s("journey"),
        s("outcome")
    );
    if let Some(r) = l["reason"].as_str() {
        out.push(' ');
        out.push_str(r);
    }
    if let Some(u) = l["until"].as_str() {
        out.push_str(" until ");
        out.push_str(u);
    }
    out
}

/// Every deferred message comes back exactly at its `until` as the next
/// `send` line of its (user, journey, step), and nothing is sent twice.
fn check_resolutions(lines: &[Value]) {
    let sends: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "send").collect();
    for (i, l) in sends.iter().enumerate() {
        if l["outcome"] != "deferred" {
            continue;
        }
        let same = |m: &&&Value| {
            m["user"] == l["user"] && m["journey"] == l["journey"] && m["step"] == l["step"]
        };
        let next = sends[i + 1..].iter().find(same);
        let next = next.unwrap_or_else(|| panic!("deferred and never resolved: {l}"));
        assert_eq!(
            next["at"], l["until"],
            "resolved off its until: {l} → {next}"
        );
    }
    let mut keys = BTreeMap::new();
    for l in sends.iter().filter(|l| l["outcome"] == "sent") {
        let key = l["key"].as_str().unwrap_or_default();
        assert!(keys.insert(key, *l).is_none(), "sent twice: {l}");
    }
}

/// The compact `send` lines of `tests/fixtures/NAME` over its
/// `events.jsonl` (the clock runs 30 days past the last event).
fn sends(name: &str) -> Vec<String> {
    let dir = fixtures().join(name);
    let lines = simulate_raw(&dir, &dir.join("events.jsonl"), &[]);
    check_resolutions(&lines);
    send_lines(&lines)
}

#[track_caller]
fn assert_lines(actual: &[String], expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        actual,
        expected,
        "\nactual:\n  {}\nexpected:\n  {}\n",
        actual.join("\n  "),
        expected.join("\n  ")
    );
}

#[test]
fn unsubscribed_by_channel_or_by_category() {
    assert_lines(
        &sends("unsubscribed"),
        &[
            "2026-03-02T10:00:00Z u-all app-updates sent",
            "2026-03-02T10:00:00Z u-all newsletter sent",
            "2026-03-02T10:00:00Z u-no-email app-updates sent",
            "2026-03-02T10:00:00Z u-no-email newsletter suppressed unsubscribed",
            "2026-03-02T10:00:00Z u-no-marketing app-updates sent",
            "2026-03-02T10:00:00Z u-no-marketing newsletter suppressed unsubscribed",
            "2026-03-02T10:00:00Z u-no-updates app-updates suppressed unsubscribed",
            "2026-03-02T10:00:00Z u-no-updates newsletter sent",
            "2026-03-02T10:00:00Z u-no-push app-updates suppressed unsubscribed",
            "2026-03-02T10:00:00Z u-no-push newsletter sent",
            "2026-03-02T10:00:00Z u-resubscribed app-updates sent",
            "2026-03-02T10:00:00Z u-resubscribed newsletter sent",
        ],
    );
}

#[test]
fn no_address_for_email_and_push_never_for_webhooks() {
    assert_lines(
        &sends("no-address"),
        &[
            "2026-03-02T10:00:00Z u-both crm-sync sent",
            "2026-03-02T10:00:00Z u-both mail-news sent",
            "2026-03-02T10:00:00Z u-both push-news sent",
            "2026-03-02T10:00:00Z u-no-email crm-sync sent",
            "2026-03-02T10:00:00Z u-no-email mail-news suppressed no_address",
            "2026-03-02T10:00:00Z u-no-email push-news sent",
            "2026-03-02T10:00:00Z u-empty-tokens crm-sync sent",
            "2026-03-02T10:00:00Z u-empty-tokens mail-news sent",
            "2026-03-02T10:00:00Z u-empty-tokens push-news suppressed no_address",
            "2026-03-02T10:00:00Z u-blank-token crm-sync sent",
            "2026-03-02T10:00:00Z u-blank-token mail-news sent",
            "2026-03-02T10:00:00Z u-blank-token push-news suppressed no_address",
            "2026-03-02T10:00:00Z u-nothing crm-sync sent",
            "2026-03-02T10:00:00Z u-nothing mail-news suppressed no_address",
            "2026-03-02T10:00:00Z u-nothing push-news suppressed no_address",
            "2026-03-02T10:00:00Z u-email-removed crm-sync sent",
            "2026-03-02T10:00:00Z u-email-removed mail-news suppressed no_address",
            "2026-03-02T10:00:00Z u-email-removed push-news suppressed no_address",
            // Unsubscribed is checked before the address.
            "2026-03-02T10:00:00Z u-unsubscribed crm-sync sent",
            "2026-03-02T10:00:00Z u-unsubscribed mail-news suppressed unsubscribed",
            "2026-03-02T10:00:00Z u-unsubscribed push-news suppressed no_address",
        ],
    );
}

#[test]
fn frequency_cap_drops_counting_only_sent_messages_in_the_sliding_window() {
    assert_lines(
        &sends("frequency-cap-drop"),
        &[
            "2026-03-02T09:00:00Z u1 promo-a sent",
            // Transactional and push: neither capped nor counted.
            "2026-03-02T09:30:00Z u1 receipt sent",
            "2026-03-02T09:45:00Z u1 push-ping sent",
            // Counted across journeys.
            "2026-03-02T10:00:00Z u1 promo-b sent",
            "2026-03-02T11:00:00Z u1 promo-a suppressed frequency_cap:email-daily",
            "2026-03-02T11:00:00Z u2 promo-a sent",
            "2026-03-02T12:00:00Z u1 promo-b suppressed frequency_cap:email-daily",
            // 09:00 counts until 09:00 the next day, exclusive…
            "2026-03-03T08:59:59Z u1 promo-a suppressed frequency_cap:email-daily",
            // …and suppressed messages never counted.
            "2026-03-03T09:00:00Z u1 promo-b sent",
            "2026-03-03T09:30:00Z u1 promo-a suppressed frequency_cap:email-daily",
            "2026-03-03T10:00:00Z u1 promo-a sent",
        ],
    );
}

#[test]
fn frequency_cap_delay_defers_to_the_earliest_free_slot() {
    assert_lines(
        &sends("frequency-cap-delay"),
        &[
            "2026-03-02T09:10:00Z u1 one sent",
            "2026-03-02T09:20:00Z u1 two sent",
            "2026-03-02T09:40:00Z u1 three deferred frequency_cap:email-hourly until 2026-03-02T10:10:00Z",
            // The deferred `three` does not count: 10:10, not 10:20.
            "2026-03-02T09:50:00Z u1 four deferred frequency_cap:email-hourly until 2026-03-02T10:10:00Z",
            // Both back at 10:10: oldest due first, in spite of `four`'s priority.
            "2026-03-02T10:10:00Z u1 three sent",
            "2026-03-02T10:10:00Z u1 four deferred frequency_cap:email-hourly until 2026-03-02T10:20:00Z",
            "2026-03-02T10:20:00Z u1 four sent",
        ],
    );
}

#[test]
fn quiet_hours_across_midnight_in_the_users_local_time() {
    assert_lines(
        &sends("quiet-hours-across-midnight"),
        &[
            // 21:30 JST → 08:00 JST.
            "2026-03-02T12:30:00Z tokyo nudge deferred quiet_hours:nights until 2026-03-02T23:00:00Z",
            // The siesta window is in Madrid time whatever the user's zone, and drops.
            "2026-03-02T12:59:00Z la-before newsletter sent",
            "2026-03-02T13:30:00Z la-before newsletter suppressed quiet_hours:siesta",
            "2026-03-02T15:00:00Z la-before newsletter sent",
            // No or an invalid timezone: the Project's Asia/Kolkata, 21:30 IST.
            "2026-03-02T16:00:00Z no-tz nudge deferred quiet_hours:nights until 2026-03-03T02:30:00Z",
            "2026-03-02T16:00:00Z bad-tz nudge deferred quiet_hours:nights until 2026-03-03T02:30:00Z",
            "2026-03-02T16:00:00Z utc-user nudge sent",
            "2026-03-02T23:00:00Z tokyo nudge sent",
            "2026-03-03T02:30:00Z no-tz nudge sent",
            "2026-03-03T02:30:00Z bad-tz nudge sent",
            // Los Angeles (PST): 20:59 out, 21:00 in, 01:30 in, 07:59 in, 08:00 out.
            "2026-03-03T04:59:00Z la-before nudge sent",
            "2026-03-03T05:00:00Z la-start nudge deferred quiet_hours:nights until 2026-03-03T16:00:00Z",
            "2026-03-03T09:30:00Z la-after-midnight nudge deferred quiet_hours:nights until 2026-03-03T16:00:00Z",
            "2026-03-03T15:59:00Z la-before-end nudge deferred quiet_hours:nights until 2026-03-03T16:00:00Z",
            "2026-03-03T16:00:00Z la-start nudge sent",
            "2026-03-03T16:00:00Z la-after-midnight nudge sent",
            "2026-03-03T16:00:00Z la-before-end nudge sent",
            "2026-03-03T16:00:00Z la-end nudge sent",
        ],
    );
}

#[test]
fn quiet_hours_end_at_local_time_across_daylight_saving_changes() {
    assert_lines(
        &sends("quiet-hours-dst"),
        &[
            // New York, 2026-03-08: 22:00 EST the evening before → 08:00 EDT.
            "2026-03-08T03:00:00Z ny-evening nudge deferred quiet_hours:nights until 2026-03-08T12:00:00Z",
            // 06:30 EDT → 08:00 EDT = 12:00Z.
            "2026-03-08T10:30:00Z ny-morning nudge deferred quiet_hours:nights until 2026-03-08T12:00:00Z",
            "2026-03-08T12:00:00Z ny-evening nudge sent",
            "2026-03-08T12:00:00Z ny-morning nudge sent",
            // 08:30 EDT is outside the window (07:30 in EST).
            "2026-03-08T12:30:00Z ny-day nudge sent",
            // Berlin, 2026-03-29: 22:00 CET → 08:00 CEST.
            "2026-03-28T21:00:00Z berlin-spring nudge deferred quiet_hours:nights until 2026-03-29T06:00:00Z",
            "2026-03-29T05:30:00Z berlin-spring-morning nudge deferred quiet_hours:nights until 2026-03-29T06:00:00Z",
            "2026-03-29T06:00:00Z berlin-spring nudge sent",
            "2026-03-29T06:00:00Z berlin-spring-morning nudge sent",
            // Berlin, 2026-10-25: 22:00 CEST → 08:00 CET.
            "2026-10-24T20:00:00Z berlin-fall nudge deferred quiet_hours:nights until 2026-10-25T07:00:00Z",
            // 07:30 CET is inside (08:30 in CEST would not be).
            "2026-10-25T06:30:00Z berlin-fall-morning nudge deferred quiet_hours:nights until 2026-10-25T07:00:00Z",
            "2026-10-25T07:00:00Z berlin-fall nudge sent",
            "2026-10-25T07:00:00Z berlin-fall-morning nudge sent",
        ],
    );
}

#[test]
fn quiet_hours_ending_in_the_dst_gap_or_the_repeated_hour() {
    assert_lines(
        &sends("quiet-hours-dst-gap-and-overlap"),
        &[
            // 02:30 does not exist on 2026-03-08 in New York: released at the jump, 03:00 EDT.
            "2026-03-08T06:30:00Z ny-gap nudge deferred quiet_hours:small-hours until 2026-03-08T07:00:00Z",
            "2026-03-08T07:00:00Z ny-gap nudge sent",
            // Nor on 2026-03-29 in Berlin: 03:00 CEST.
            "2026-03-29T00:30:00Z berlin-gap nudge deferred quiet_hours:small-hours until 2026-03-29T01:00:00Z",
            "2026-03-29T01:00:00Z berlin-gap nudge sent",
            // 02:30 exists twice on 2026-10-25 in Berlin: the first one after now…
            "2026-10-24T23:30:00Z berlin-fall-first nudge deferred quiet_hours:small-hours until 2026-10-25T00:30:00Z",
            "2026-10-25T00:30:00Z berlin-fall-first nudge sent",
            "2026-10-25T00:45:00Z berlin-fall-between nudge sent",
            // …and the repeated 02:15 CET is inside again, until the second 02:30.
            "2026-10-25T01:15:00Z berlin-fall-repeat nudge deferred quiet_hours:small-hours until 2026-10-25T01:30:00Z",
            "2026-10-25T01:30:00Z berlin-fall-repeat nudge sent",
        ],
    );
}

#[test]
fn throttle_is_strict_and_never_drops() {
    assert_lines(
        &sends("throttle-strict"),
        &[
            "2026-03-02T10:00:00Z u1 promo sent",
            "2026-03-02T10:00:00Z u2 promo sent",
            "2026-03-02T10:00:00Z u3 promo deferred throttle:esp until 2026-03-02T10:01:00Z",
            "2026-03-02T10:00:00Z u4 promo deferred throttle:esp until 2026-03-02T10:01:00Z",
            "2026-03-02T10:00:00Z u5 promo deferred throttle:esp until 2026-03-02T10:02:00Z",
            // Another journey, same throttle: the next free slots.
            "2026-03-02T10:00:30Z u6 reminder deferred throttle:esp until 2026-03-02T10:02:00Z",
            "2026-03-02T10:00:30Z u7 reminder deferred throttle:esp until 2026-03-02T10:03:00Z",
            "2026-03-02T10:01:00Z u3 promo sent",
            "2026-03-02T10:01:00Z u4 promo sent",
            "2026-03-02T10:02:00Z u5 promo sent",
            "2026-03-02T10:02:00Z u6 reminder sent",
            "2026-03-02T10:03:00Z u7 reminder sent",
            "2026-03-02T10:05:00Z u8 promo sent",
        ],
    );
}

#[test]
fn throttle_scoped_to_journeys_leaves_the_others_alone() {
    assert_lines(
        &sends("throttle-scoped"),
        &[
            "2026-03-02T10:00:00Z u1 newsletter sent",
            "2026-03-02T10:00:00Z u1 campaign sent",
            "2026-03-02T10:00:00Z u2 newsletter sent",
            "2026-03-02T10:00:00Z u2 campaign deferred throttle:campaign-only until 2026-03-02T10:01:00Z",
            "2026-03-02T10:00:00Z u3 newsletter sent",
            "2026-03-02T10:00:00Z u3 campaign deferred throttle:campaign-only until 2026-03-02T10:02:00Z",
            "2026-03-02T10:01:00Z u2 campaign sent",
            "2026-03-02T10:02:00Z u3 campaign sent",
        ],
    );
}

#[test]
fn transactional_is_exempt_from_caps_and_quiet_hours_but_not_throttles() {
    assert_lines(
        &sends("transactional-exempt"),
        &[
            "2026-03-02T10:00:00Z u1 promo sent",
            "2026-03-02T10:30:00Z u1 receipt sent",
            "2026-03-02T11:00:00Z u1 promo suppressed frequency_cap:daily",
            "2026-03-02T11:30:00Z u1 receipt sent",
            "2026-03-02T22:00:00Z u2 receipt sent",
            "2026-03-02T22:00:00Z u2 promo deferred quiet_hours:nights until 2026-03-03T08:00:00Z",
            "2026-03-02T22:00:00Z u3 receipt deferred throttle:esp until 2026-03-02T22:01:00Z",
            "2026-03-02T22:01:00Z u3 receipt sent",
            "2026-03-03T08:00:00Z u2 promo sent",
        ],
    );
}

#[test]
fn transactional_obeys_policies_that_name_it() {
    assert_lines(
        &sends("transactional-named"),
        &[
            "2026-03-02T10:00:00Z u1 receipt sent",
            "2026-03-02T11:00:00Z u1 receipt suppressed frequency_cap:all-daily",
            "2026-03-02T12:00:00Z u1 promo suppressed frequency_cap:all-daily",
            "2026-03-02T22:00:00Z u2 receipt deferred quiet_hours:receipts-at-night until 2026-03-03T08:00:00Z",
            "2026-03-02T22:00:00Z u3 promo sent",
            "2026-03-03T08:00:00Z u2 receipt sent",
        ],
    );
}

#[test]
fn higher_priority_wins_the_last_cap_slot_and_ties_go_to_the_earlier_entry() {
    assert_lines(
        &sends("priority-wins"),
        &[
            "2026-03-02T10:00:00Z u1 vip-offer sent",
            "2026-03-02T10:00:00Z u1 announcement suppressed frequency_cap:one-a-day",
            "2026-03-02T10:00:00Z u2 zulu sent",
            "2026-03-02T10:00:00Z u2 alpha suppressed frequency_cap:one-a-day",
            "2026-03-02T10:00:00Z u3 alpha sent",
            "2026-03-02T10:00:00Z u3 zulu suppressed frequency_cap:one-a-day",
        ],
    );
}

#[test]
fn throttle_admits_by_priority_at_one_instant_but_oldest_first_across_instants() {
    assert_lines(
        &sends("priority-throttle"),
        &[
            "2026-03-02T10:00:00Z u2 high-push sent",
            "2026-03-02T10:00:00Z u1 low-push deferred throttle:gateway until 2026-03-02T10:01:00Z",
            "2026-03-02T10:00:30Z u3 high-push deferred throttle:gateway until 2026-03-02T10:02:00Z",
            "2026-03-02T10:01:00Z u1 low-push sent",
            "2026-03-02T10:02:00Z u3 high-push sent",
        ],
    );
}

#[test]
fn a_released_message_is_checked_again_from_step_one() {
    assert_lines(
        &sends("deferred-recheck"),
        &[
            "2026-03-02T20:30:00Z u1 ping-a sent",
            // Released by the cap into quiet hours.
            "2026-03-02T20:45:00Z u1 ping-b deferred frequency_cap:push-hourly until 2026-03-02T21:30:00Z",
            "2026-03-02T21:30:00Z u1 ping-b deferred quiet_hours:nights until 2026-03-03T08:00:00Z",
            "2026-03-02T22:00:00Z u2 ping-a deferred quiet_hours:nights until 2026-03-03T08:00:00Z",
            "2026-03-03T07:30:00Z u3 ping-a deferred quiet_hours:nights until 2026-03-03T08:00:00Z",
            "2026-03-03T07:45:00Z u3 ping-b deferred quiet_hours:nights until 2026-03-03T08:00:00Z",
            "2026-03-03T08:00:00Z u1 ping-b sent",
            // Unsubscribed while waiting.
            "2026-03-03T08:00:00Z u2 ping-a suppressed unsubscribed",
            // Released by quiet hours into the cap.
            "2026-03-03T08:00:00Z u3 ping-a sent",
            "2026-03-03T08:00:00Z u3 ping-b deferred frequency_cap:push-hourly until 2026-03-03T09:00:00Z",
            "2026-03-03T09:00:00Z u3 ping-b sent",
        ],
    );
}

#[test]
fn the_first_step_that_objects_decides() {
    assert_lines(
        &sends("policy-order"),
        &[
            "2026-03-02T10:00:00Z u1 promo sent",
            "2026-03-02T10:00:00Z u2 promo deferred throttle:esp until 2026-03-02T11:00:00Z",
            "2026-03-02T11:00:00Z u2 promo sent",
            "2026-03-02T20:30:00Z u4 promo sent",
            // Quiet hours before throttles.
            "2026-03-02T21:00:00Z u3 promo deferred quiet_hours:nights until 2026-03-03T08:00:00Z",
            // Caps before quiet hours.
            "2026-03-02T22:00:00Z u1 promo suppressed frequency_cap:daily",
            // Subscription before everything.
            "2026-03-02T23:00:00Z u1 promo suppressed unsubscribed",
            "2026-03-03T08:00:00Z u3 promo sent",
        ],
    );
}

/// Runs of one fixture on one store kept between them (a restart each).
struct StoredRuns {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    store: String,
    /// An events file with no events.
    empty: PathBuf,
}

impl StoredRuns {
    fn new(fixture: &str) -> StoredRuns {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = tmp.path().join("store").to_str().expect("path").to_owned();
        let empty = tmp.path().join("empty.jsonl");
        std::fs::write(&empty, "").expect("write");
        StoredRuns {
            dir: fixtures().join(fixture),
            _tmp: tmp,
            store,
            empty,
        }
    }

    fn run(&self, events: &Path, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--store", self.store.as_str()];
        all.extend_from_slice(args);
        simulate_raw(&self.dir, events, &all)
    }
}

/// The `send` lines, compacted.
fn send_lines(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["kind"] == "send")
        .map(compact)
        .collect()
}

#[test]
fn deferred_messages_and_throttle_slots_survive_a_restart() {
    let stored = StoredRuns::new("restart-durable");
    let (dir, empty) = (&stored.dir, &stored.empty);
    let run = |events: &Path, args: &[&str]| stored.run(events, args);

    let first = run(
        &dir.join("events.jsonl"),
        &["--until", "2026-03-02T10:00:30Z"],
    );
    let second = run(
        &dir.join("events-after-restart.jsonl"),
        &[
            "--start",
            "2026-03-02T10:00:30Z",
            "--until",
            "2026-03-02T23:00:00Z",
        ],
    );
    let third = run(
        empty,
        &["--start", "2026-03-02T23:00:00Z", "--until", "+1d"],
    );
    let fourth = run(
        empty,
        &["--start", "2026-03-03T23:00:00Z", "--until", "+1d"],
    );

    assert_lines(
        &send_lines(&first),
        &[
            "2026-03-02T10:00:00Z u2 promo sent",
            "2026-03-02T10:00:00Z u3 promo deferred throttle:esp until 2026-03-02T10:01:00Z",
            "2026-03-02T10:00:00Z u4 promo deferred throttle:esp until 2026-03-02T10:02:00Z",
        ],
    );
    assert_lines(
        &send_lines(&second),
        &[
            // The ledger came back: 10:00, 10:01 and 10:02 are taken.
            "2026-03-02T10:00:40Z u5 promo deferred throttle:esp until 2026-03-02T10:03:00Z",
            "2026-03-02T10:01:00Z u3 promo sent",
            "2026-03-02T10:02:00Z u4 promo sent",
            "2026-03-02T10:03:00Z u5 promo sent",
            "2026-03-02T22:00:00Z u1 nudge deferred quiet_hours:nights until 2026-03-03T08:00:00Z",
        ],
    );
    assert_lines(&send_lines(&third), &["2026-03-03T08:00:00Z u1 nudge sent"]);
    assert_lines(&send_lines(&fourth), &[]);

    // Across the runs: every deferral resolved at its until, nothing twice.
    let all: Vec<Value> = [first, second, third, fourth].concat();
    check_resolutions(&all);
}

/// A store reopened long after its deferred messages' slots (the engine
/// was down): their timers fire together at the restart, and each takes a
/// new slot instead of going on its old reservation, so the throttle's
/// bound holds across the downtime (1 per minute: 10:10, then 10:11).
#[test]
fn deferred_messages_released_after_downtime_keep_the_throttle_bound() {
    let stored = StoredRuns::new("restart-durable");
    let (dir, empty) = (&stored.dir, &stored.empty);
    let run = |events: &Path, args: &[&str]| stored.run(events, args);
    let first = run(
        &dir.join("events.jsonl"),
        &["--until", "2026-03-02T10:00:30Z"],
    );
    let later = run(
        empty,
        &[
            "--start",
            "2026-03-02T10:10:00Z",
            "--until",
            "2026-03-02T10:20:00Z",
        ],
    );
    assert_lines(
        &send_lines(&first),
        &[
            "2026-03-02T10:00:00Z u2 promo sent",
            "2026-03-02T10:00:00Z u3 promo deferred throttle:esp until 2026-03-02T10:01:00Z",
            "2026-03-02T10:00:00Z u4 promo deferred throttle:esp until 2026-03-02T10:02:00Z",
        ],
    );
    assert_lines(
        &send_lines(&later),
        &[
            "2026-03-02T10:10:00Z u3 promo sent",
            "2026-03-02T10:10:00Z u4 promo deferred throttle:esp until 2026-03-02T10:11:00Z",
            "2026-03-02T10:11:00Z u4 promo sent",
        ],
    );
}

/// Copies `from` to `to`, leaving out the directory `policies`.
fn copy_without_policies(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            if entry.file_name() != "policies" {
                copy_without_policies(&path, &target);
            }
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// The tests above would fail without the rules: the same events through
/// each policy fixture with its `policies/` removed send every message
/// at the instant it becomes due (unless unsubscribed, which is no policy).
#[test]
fn without_their_policies_the_fixtures_send_everything_at_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures()).expect("fixtures") {
        let dir = entry.expect("entry").path();
        if !dir.join("policies").is_dir() {
            continue;
        }
        let bare = tmp.path().join(dir.file_name().expect("name"));
        copy_without_policies(&dir, &bare);
        let lines = simulate_raw(&bare, &dir.join("events.jsonl"), &[]);
        let sends: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "send").collect();
        assert!(!sends.is_empty(), "{}", dir.display());
        for l in sends {
            let unsubscribed = l["outcome"] == "suppressed" && l["reason"] == "unsubscribed";
            assert!(
                l["outcome"] == "sent" || unsubscribed,
                "{}: {l}",
                dir.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 13, "only {checked} policy fixtures");
}
