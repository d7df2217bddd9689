//! Unit tests for each policy step, and the helpers the property tests share.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use journeys::compiled::{
    ApiSettings, Channel, Config, EmailProvider, EmailSettings, FrequencyCap, PolicyAction,
    PolicyScope, Project, PushProvider, PushSettings, QuietHours, RetryPolicy, Throttle,
    WebhookSettings,
};
use journeys::scalar::{Duration, Rate, TimeOfDay, Zone};
use journeys::template::Renderer;
use serde_json::{json, Map, Value};

use super::*;

// ---------------------------------------------------------------- helpers

pub(super) fn project(default_timezone: chrono_tz::Tz) -> Project {
    Project {
        id: "test".into(),
        default_timezone,
        store: PathBuf::from(".sluice/store"),
        email: EmailSettings {
            provider: EmailProvider::Maildir,
            url: None,
            from: "test <test@localhost>".into(),
            username_env: None,
            password_env: None,
            path: PathBuf::from(".sluice/outbox/maildir"),
            dkim: None,
            pool: 8,
            timeout: Duration(30),
            ca_file: None,
        },
        push: PushSettings {
            provider: PushProvider::File,
            project_id: None,
            credentials_env: None,
            endpoint: None,
            topic: None,
            key_id: None,
            team_id: None,
            path: PathBuf::from(".sluice/outbox/push.jsonl"),
        },
        webhook: WebhookSettings {
            signing_secret_env: None,
            timeout: Duration(5),
        },
        retry: RetryPolicy {
            max_attempts: 8,
            initial: Duration(1),
            max: Duration(600),
        },
        history_retention: Duration(90 * 86_400),
        history_limit: 500,
        api: ApiSettings {
            listen: "127.0.0.1:7878".into(),
            public_url: None,
            segment_secret_env: None,
            ingest_token_env: "SLUICE_INGEST_TOKEN".into(),
            admin_token_env: "SLUICE_ADMIN_TOKEN".into(),
            feedback: Default::default(),
        },
    }
}

/// A compiled config with only policies.
pub(super) fn config(
    default_timezone: chrono_tz::Tz,
    frequency_caps: Vec<FrequencyCap>,
    quiet_hours: Vec<QuietHours>,
    throttles: Vec<Throttle>,
) -> Config {
    Config {
        root: PathBuf::from("."),
        project: project(default_timezone),
        journeys: Vec::new(),
        segments: Vec::new(),
        templates: Default::default(),
        quiet_hours,
        throttles,
        frequency_caps,
        catalog: None,
        tests: Vec::new(),
        renderer: Arc::new(Renderer::default()),
    }
}

pub(super) fn policies(
    caps: Vec<FrequencyCap>,
    quiet: Vec<QuietHours>,
    throttles: Vec<Throttle>,
) -> Policies {
    Policies::new(&config(chrono_tz::UTC, caps, quiet, throttles))
}

pub(super) fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect(s)
        .with_timezone(&Utc)
}

pub(super) fn scope(channels: Option<&[Channel]>, categories: Option<&[&str]>) -> PolicyScope {
    PolicyScope {
        channels: channels.map(<[Channel]>::to_vec),
        categories: categories.map(|cs| cs.iter().map(|c| (*c).to_owned()).collect()),
    }
}

pub(super) fn all() -> PolicyScope {
    scope(None, None)
}

pub(super) fn cap(
    id: &str,
    scope: PolicyScope,
    limit: u32,
    per: u64,
    action: PolicyAction,
) -> FrequencyCap {
    FrequencyCap {
        id: id.into(),
        scope,
        limit,
        per: Duration(per),
        action,
    }
}

pub(super) fn hm(s: &str) -> TimeOfDay {
    journeys::scalar::parse_time_of_day(s).expect(s)
}

pub(super) fn quiet(
    id: &str,
    scope: PolicyScope,
    start: &str,
    end: &str,
    zone: Zone,
    action: PolicyAction,
) -> QuietHours {
    QuietHours {
        id: id.into(),
        scope,
        start: hm(start),
        end: hm(end),
        zone,
        action,
    }
}

pub(super) fn throttle(
    id: &str,
    channel: Channel,
    count: u32,
    per: u64,
    journeys: &[&str],
) -> Throttle {
    Throttle {
        id: id.into(),
        channel,
        rate: Rate {
            count,
            per: Duration(per),
        },
        journeys: journeys.iter().map(|j| (*j).to_owned()).collect(),
    }
}

/// A reachable, subscribed user in `tz` (any string; `None`: no timezone).
pub(super) fn profile(tz: Option<&str>) -> Map<String, Value> {
    let mut p = json!({"email": "u@example.com", "push_tokens": ["tok"]});
    if let Some(tz) = tz {
        p["timezone"] = json!(tz);
    }
    match p {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

pub(super) fn msg<'a>(
    profile: &'a Map<String, Value>,
    channel: Channel,
    category: &'a str,
    journey: &'a str,
    reservations: &'a [Reservation],
) -> Outgoing<'a> {
    Outgoing {
        user: "u1",
        profile,
        journey,
        category,
        priority: 0,
        channel,
        due: DateTime::<Utc>::MIN_UTC,
        reservations,
    }
}

pub(super) fn sent(at: &str, channel: Channel, category: &str) -> SentRecord {
    SentRecord {
        at: ts(at),
        channel,
        category: category.into(),
    }
}

fn defer(reason: &str, until: &str) -> Decision {
    Decision::Defer {
        reason: reason.into(),
        until: ts(until),
        reservations: Vec::new(),
    }
}

fn suppress(reason: &str) -> Decision {
    Decision::Suppress {
        reason: reason.into(),
    }
}

use Channel::{Email, Push, Webhook};
use PolicyAction::{Delay, Drop};

// ------------------------------------------------------------ subscription

#[test]
fn subscription_unsubscribed_and_no_address() {
    let mut p = policies(vec![], vec![], vec![]);
    let now = ts("2026-03-02T10:00:00Z");
    let mut prof = profile(None);
    assert_eq!(
        p.decide(&msg(&prof, Email, "marketing", "j", &[]), &[], now),
        Decision::Send
    );
    prof.insert(
        "subscriptions".into(),
        json!({"marketing": false, "push": true}),
    );
    assert_eq!(
        p.decide(&msg(&prof, Email, "marketing", "j", &[]), &[], now),
        suppress("unsubscribed")
    );
    prof.insert("subscriptions".into(), json!({"email": false}));
    assert_eq!(
        p.decide(&msg(&prof, Email, "onboarding", "j", &[]), &[], now),
        suppress("unsubscribed")
    );
    assert_eq!(
        p.decide(&msg(&prof, Push, "onboarding", "j", &[]), &[], now),
        Decision::Send
    );
    let empty = Map::new();
    assert_eq!(
        p.decide(&msg(&empty, Push, "x", "j", &[]), &[], now),
        suppress("no_address")
    );
    assert_eq!(
        p.decide(&msg(&empty, Email, "x", "j", &[]), &[], now),
        suppress("no_address")
    );
    assert_eq!(
        p.decide(&msg(&empty, Webhook, "x", "j", &[]), &[], now),
        Decision::Send
    );
}

#[test]
fn a_bounced_address_suppresses_email_only_after_subscription_and_address() {
    let mut p = policies(vec![], vec![], vec![]);
    let now = ts("2026-03-02T10:00:00Z");
    let mut prof = profile(None);
    prof.insert("email_status".into(), json!("bounced"));
    assert_eq!(
        p.decide(&msg(&prof, Email, "marketing", "j", &[]), &[], now),
        suppress("bounced")
    );
    // Transactional mail too: the address does not take mail.
    assert_eq!(
        p.decide(&msg(&prof, Email, "transactional", "j", &[]), &[], now),
        suppress("bounced")
    );
    // Push and webhooks do not care about the email address.
    assert_eq!(
        p.decide(&msg(&prof, Push, "marketing", "j", &[]), &[], now),
        Decision::Send
    );
    assert_eq!(
        p.decide(&msg(&prof, Webhook, "marketing", "j", &[]), &[], now),
        Decision::Send
    );
    // Unsubscribed is checked first, then a missing address.
    prof.insert("subscriptions".into(), json!({"marketing": false}));
    assert_eq!(
        p.decide(&msg(&prof, Email, "marketing", "j", &[]), &[], now),
        suppress("unsubscribed")
    );
    prof.remove("subscriptions");
    prof.insert("email".into(), json!(""));
    assert_eq!(
        p.decide(&msg(&prof, Email, "marketing", "j", &[]), &[], now),
        suppress("no_address")
    );
    // Any other status is not a bounce.
    prof.insert("email".into(), json!("u@example.com"));
    prof.insert("email_status".into(), json!("ok"));
    assert_eq!(
        p.decide(&msg(&prof, Email, "marketing", "j", &[]), &[], now),
        Decision::Send
    );
}

// --------------------------------------------------------- frequency caps

#[test]
fn cap_drop_suppresses_at_limit() {
    let mut p = policies(vec![cap("weekly", all(), 2, 3600, Drop)], vec![], vec![]);
    let prof = profile(None);
    let m = msg(&prof, Email, "marketing", "j", &[]);
    let one = [sent("2026-03-02T09:00:00Z", Email, "marketing")];
    assert_eq!(
        p.decide(&m, &one, ts("2026-03-02T09:59:00Z")),
        Decision::Send
    );
    let two = [
        sent("2026-03-02T09:00:00Z", Email, "marketing"),
        sent("2026-03-02T09:30:00Z", Push, "onboarding"),
    ];
    assert_eq!(
        p.decide(&m, &two, ts("2026-03-02T09:59:00Z")),
        suppress("frequency_cap:weekly")
    );
}

#[test]
fn cap_window_is_half_open() {
    // A message sent at t counts until t + per, exclusive.
    let mut p = policies(vec![cap("hourly", all(), 1, 3600, Drop)], vec![], vec![]);
    let prof = profile(None);
    let m = msg(&prof, Email, "marketing", "j", &[]);
    let log = [sent("2026-03-02T09:00:00Z", Email, "marketing")];
    assert_eq!(
        p.decide(&m, &log, ts("2026-03-02T09:00:00Z")),
        suppress("frequency_cap:hourly")
    );
    assert_eq!(
        p.decide(&m, &log, ts("2026-03-02T09:59:59Z")),
        suppress("frequency_cap:hourly")
    );
    assert_eq!(
        p.decide(&m, &log, ts("2026-03-02T10:00:00Z")),
        Decision::Send
    );
    // Records from the future (not yet sent at `now`) do not count.
    assert_eq!(
        p.decide(&m, &log, ts("2026-03-02T08:59:59Z")),
        Decision::Send
    );
}

#[test]
fn cap_delay_until_earliest_free_slot() {
    let mut p = policies(vec![cap("c", all(), 2, 3600, Delay)], vec![], vec![]);
    let prof = profile(None);
    let m = msg(&prof, Push, "marketing", "j", &[]);
    let log = [
        sent("2026-03-02T09:40:00Z", Email, "marketing"),
        sent("2026-03-02T08:00:00Z", Email, "marketing"), // out of the window
        sent("2026-03-02T09:10:00Z", Email, "marketing"),
        sent("2026-03-02T09:20:00Z", Push, "marketing"),
    ];
    // Three in (08:50, 09:50]: the slot frees when the second oldest (09:20) leaves.
    assert_eq!(
        p.decide(&m, &log, ts("2026-03-02T09:50:00Z")),
        defer("frequency_cap:c", "2026-03-02T10:20:00Z")
    );
    assert_eq!(
        p.decide(&m, &log, ts("2026-03-02T10:19:59Z")),
        defer("frequency_cap:c", "2026-03-02T10:20:00Z")
    );
    assert_eq!(
        p.decide(&m, &log, ts("2026-03-02T10:20:00Z")),
        Decision::Send
    );
}

#[test]
fn cap_counts_only_its_scope() {
    let c = cap(
        "mkt-email",
        scope(Some(&[Email]), Some(&["marketing"])),
        1,
        86_400,
        Drop,
    );
    let mut p = policies(vec![c], vec![], vec![]);
    let prof = profile(None);
    let now = ts("2026-03-02T12:00:00Z");
    let log = [
        sent("2026-03-02T09:00:00Z", Push, "marketing"),
        sent("2026-03-02T09:00:00Z", Email, "onboarding"),
        sent("2026-03-02T09:00:00Z", Webhook, "marketing"),
    ];
    assert_eq!(
        p.decide(&msg(&prof, Email, "marketing", "j", &[]), &log, now),
        Decision::Send
    );
    let log2 = [sent("2026-03-02T09:00:00Z", Email, "marketing")];
    assert_eq!(
        p.decide(&msg(&prof, Email, "marketing", "j", &[]), &log2, now),
        suppress("frequency_cap:mkt-email")
    );
    // The cap does not apply to other channels or categories.
    assert_eq!(
        p.decide(&msg(&prof, Push, "marketing", "j", &[]), &log2, now),
        Decision::Send
    );
    assert_eq!(
        p.decide(&msg(&prof, Email, "onboarding", "j", &[]), &log2, now),
        Decision::Send
    );
}

#[test]
fn cap_transactional_exempt_unless_named() {
    let prof = profile(None);
    let now = ts("2026-03-02T12:00:00Z");
    let mut p = policies(vec![cap("any", all(), 1, 86_400, Drop)], vec![], vec![]);
    let mkt = [sent("2026-03-02T09:00:00Z", Email, "marketing")];
    // Exempt from a cap with default categories…
    assert_eq!(
        p.decide(&msg(&prof, Email, "transactional", "j", &[]), &mkt, now),
        Decision::Send
    );
    // …and its sends do not count against it.
    let tx = [sent("2026-03-02T09:00:00Z", Email, "transactional")];
    assert_eq!(
        p.decide(&msg(&prof, Email, "marketing", "j", &[]), &tx, now),
        Decision::Send
    );
    // A cap that names it applies.
    let mut p = policies(
        vec![cap(
            "tx",
            scope(None, Some(&["transactional"])),
            1,
            86_400,
            Drop,
        )],
        vec![],
        vec![],
    );
    assert_eq!(
        p.decide(&msg(&prof, Email, "transactional", "j", &[]), &tx, now),
        suppress("frequency_cap:tx")
    );
}

#[test]
fn cap_drop_wins_and_latest_delay_wins() {
    let prof = profile(None);
    let now = ts("2026-03-02T12:00:00Z");
    let log = [
        sent("2026-03-02T11:00:00Z", Email, "marketing"),
        sent("2026-03-02T11:30:00Z", Email, "marketing"),
    ];
    let m = msg(&prof, Email, "marketing", "j", &[]);
    let mut p = policies(
        vec![
            cap("a", all(), 1, 7200, Delay),
            cap("b", all(), 2, 7200, Drop),
        ],
        vec![],
        vec![],
    );
    assert_eq!(p.decide(&m, &log, now), suppress("frequency_cap:b"));
    let mut p = policies(
        vec![
            cap("short", all(), 1, 3600 * 2, Delay),
            cap("long", all(), 2, 3600 * 5, Delay),
        ],
        vec![],
        vec![],
    );
    // short frees at 11:30 + 2h = 13:30; long at 11:00 + 5h = 16:00.
    assert_eq!(
        p.decide(&m, &log, now),
        defer("frequency_cap:long", "2026-03-02T16:00:00Z")
    );
}

#[test]
fn sent_horizon_is_longest_cap() {
    assert_eq!(
        policies(vec![], vec![], vec![]).sent_horizon(),
        chrono::TimeDelta::zero()
    );
    let p = policies(
        vec![
            cap("a", all(), 1, 3600, Drop),
            cap("b", all(), 1, 604_800, Delay),
        ],
        vec![],
        vec![],
    );
    assert_eq!(p.sent_horizon(), chrono::TimeDelta::days(7));
}

// ------------------------------------------------------------ quiet hours

fn utc_zone() -> Zone {
    Zone::Fixed(chrono_tz::UTC)
}

#[test]
fn quiet_window_boundaries_are_half_open() {
    let mut p = policies(
        vec![],
        vec![quiet("day", all(), "09:00", "17:00", utc_zone(), Delay)],
        vec![],
    );
    let prof = profile(None);
    let m = msg(&prof, Email, "marketing", "j", &[]);
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T08:59:59Z")),
        Decision::Send
    );
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T09:00:00Z")),
        defer("quiet_hours:day", "2026-03-02T17:00:00Z")
    );
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T16:59:59.5Z")),
        defer("quiet_hours:day", "2026-03-02T17:00:00Z")
    );
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T17:00:00Z")),
        Decision::Send
    );
}

#[test]
fn quiet_window_across_midnight() {
    let mut p = policies(
        vec![],
        vec![quiet("nights", all(), "21:00", "08:00", Zone::User, Delay)],
        vec![],
    );
    let prof = profile(Some("Europe/Berlin")); // UTC+1 in early March
    let m = msg(&prof, Push, "marketing", "j", &[]);
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T19:59:59Z")),
        Decision::Send
    );
    // Before midnight local: released the next morning.
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T20:00:00Z")),
        defer("quiet_hours:nights", "2026-03-03T07:00:00Z")
    );
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T22:59:59Z")),
        defer("quiet_hours:nights", "2026-03-03T07:00:00Z")
    );
    // After midnight local (23:00 UTC is 00:00 in Berlin): the same morning.
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T23:00:00Z")),
        defer("quiet_hours:nights", "2026-03-03T07:00:00Z")
    );
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-03T06:59:59Z")),
        defer("quiet_hours:nights", "2026-03-03T07:00:00Z")
    );
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-03T07:00:00Z")),
        Decision::Send
    );
}

#[test]
fn quiet_abutting_windows_release_once() {
    let mut p = policies(
        vec![],
        vec![
            quiet("evening", all(), "21:00", "00:00", utc_zone(), Delay),
            quiet("night", all(), "00:00", "07:00", utc_zone(), Delay),
            quiet("morning", all(), "06:30", "08:00", utc_zone(), Delay),
        ],
        vec![],
    );
    let prof = profile(None);
    assert_eq!(
        p.decide(
            &msg(&prof, Push, "m", "j", &[]),
            &[],
            ts("2026-03-02T22:00:00Z")
        ),
        defer("quiet_hours:evening", "2026-03-03T08:00:00Z")
    );
    // Windows covering the whole day hold a message without end, a few days at a time.
    let mut p = policies(
        vec![],
        vec![
            quiet("a", all(), "01:00", "00:00", utc_zone(), Delay),
            quiet("b", all(), "00:00", "06:00", utc_zone(), Delay),
        ],
        vec![],
    );
    let now = ts("2026-03-02T22:00:00Z");
    match p.decide(&msg(&prof, Push, "m", "j", &[]), &[], now) {
        Decision::Defer { reason, until, .. } => {
            assert_eq!(reason, "quiet_hours:a");
            assert!(until > now + chrono::TimeDelta::days(3), "{until}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn quiet_start_equal_end_is_empty() {
    let mut p = policies(
        vec![],
        vec![quiet("none", all(), "08:00", "08:00", utc_zone(), Drop)],
        vec![],
    );
    let prof = profile(None);
    for t in [
        "2026-03-02T07:59:00Z",
        "2026-03-02T08:00:00Z",
        "2026-03-02T20:00:00Z",
    ] {
        assert_eq!(
            p.decide(&msg(&prof, Email, "m", "j", &[]), &[], ts(t)),
            Decision::Send
        );
    }
}

#[test]
fn quiet_user_timezone_falls_back_to_project_default() {
    let q = quiet("nights", all(), "22:00", "07:00", Zone::User, Delay);
    let cfg = config(chrono_tz::America::New_York, vec![], vec![q], vec![]);
    let mut p = Policies::new(&cfg);
    // 2026-03-02T04:00Z is 23:00 in New York (EST), 13:00 in Tokyo, 05:00 in Berlin.
    let now = ts("2026-03-02T04:00:00Z");
    let ny_release = defer("quiet_hours:nights", "2026-03-02T12:00:00Z");
    for tz in [
        None,
        Some("Mars/Olympus_Mons"),
        Some(""),
        Some("America/New_York"),
    ] {
        let prof = profile(tz);
        assert_eq!(
            p.decide(&msg(&prof, Push, "m", "j", &[]), &[], now),
            ny_release,
            "{tz:?}"
        );
    }
    let mut prof = profile(None);
    prof.insert("timezone".into(), json!(42));
    assert_eq!(
        p.decide(&msg(&prof, Push, "m", "j", &[]), &[], now),
        ny_release
    );
    let tokyo = profile(Some("Asia/Tokyo"));
    assert_eq!(
        p.decide(&msg(&tokyo, Push, "m", "j", &[]), &[], now),
        Decision::Send
    );
    let berlin = profile(Some("Europe/Berlin"));
    assert_eq!(
        p.decide(&msg(&berlin, Push, "m", "j", &[]), &[], now),
        defer("quiet_hours:nights", "2026-03-02T06:00:00Z")
    );
    assert_eq!(
        user_timezone(&tokyo, chrono_tz::UTC),
        chrono_tz::Asia::Tokyo
    );
}

#[test]
fn quiet_fixed_zone_ignores_user_timezone() {
    let q = quiet(
        "maint",
        scope(Some(&[Email]), None),
        "03:00",
        "04:00",
        utc_zone(),
        Delay,
    );
    let mut p = policies(vec![], vec![q], vec![]);
    let prof = profile(Some("Asia/Tokyo"));
    assert_eq!(
        p.decide(
            &msg(&prof, Email, "m", "j", &[]),
            &[],
            ts("2026-03-02T03:30:00Z")
        ),
        defer("quiet_hours:maint", "2026-03-02T04:00:00Z")
    );
    assert_eq!(
        p.decide(
            &msg(&prof, Push, "m", "j", &[]),
            &[],
            ts("2026-03-02T03:30:00Z")
        ),
        Decision::Send
    );
}

#[test]
fn quiet_drop_suppresses_and_drop_wins() {
    let mut p = policies(
        vec![],
        vec![
            quiet("late", all(), "20:00", "23:00", utc_zone(), Delay),
            quiet("hard", all(), "22:00", "06:00", utc_zone(), Drop),
        ],
        vec![],
    );
    let prof = profile(None);
    let m = msg(&prof, Email, "m", "j", &[]);
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T21:00:00Z")),
        defer("quiet_hours:late", "2026-03-02T23:00:00Z")
    );
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T22:30:00Z")),
        suppress("quiet_hours:hard")
    );
}

#[test]
fn quiet_transactional_exempt_unless_named() {
    let prof = profile(None);
    let now = ts("2026-03-02T23:00:00Z");
    let mut p = policies(
        vec![],
        vec![quiet("n", all(), "21:00", "08:00", utc_zone(), Drop)],
        vec![],
    );
    assert_eq!(
        p.decide(&msg(&prof, Push, "transactional", "j", &[]), &[], now),
        Decision::Send
    );
    assert_eq!(
        p.decide(&msg(&prof, Push, "marketing", "j", &[]), &[], now),
        suppress("quiet_hours:n")
    );
    let q = quiet(
        "n",
        scope(None, Some(&["transactional"])),
        "21:00",
        "08:00",
        utc_zone(),
        Drop,
    );
    let mut p = policies(vec![], vec![q], vec![]);
    assert_eq!(
        p.decide(&msg(&prof, Push, "transactional", "j", &[]), &[], now),
        suppress("quiet_hours:n")
    );
    assert_eq!(
        p.decide(&msg(&prof, Push, "marketing", "j", &[]), &[], now),
        Decision::Send
    );
}

/// Checks a sequence of (now, expected release or None for send).
fn quiet_case(tz: &str, start: &str, end: &str, cases: &[(&str, Option<&str>)]) {
    let mut p = policies(
        vec![],
        vec![quiet("q", all(), start, end, Zone::User, Delay)],
        vec![],
    );
    let prof = profile(Some(tz));
    let m = msg(&prof, Push, "marketing", "j", &[]);
    for (now, want) in cases {
        let want = want.map_or(Decision::Send, |u| defer("quiet_hours:q", u));
        assert_eq!(
            p.decide(&m, &[], ts(now)),
            want,
            "{tz} {start}-{end} at {now}"
        );
    }
}

#[test]
fn dst_new_york_spring_forward_2026_03_08() {
    // 02:00 EST (07:00Z) jumps to 03:00 EDT.
    quiet_case(
        "America/New_York",
        "21:00",
        "08:00",
        &[
            // 22:00 EST on the 7th → 08:00 EDT on the 8th, 12:00Z (not 13:00Z).
            ("2026-03-08T03:00:00Z", Some("2026-03-08T12:00:00Z")),
            ("2026-03-08T11:59:59Z", Some("2026-03-08T12:00:00Z")),
            ("2026-03-08T12:00:00Z", None),
            // 21:00 EDT on the 8th is 01:00Z on the 9th.
            ("2026-03-09T00:59:59Z", None),
            ("2026-03-09T01:00:00Z", Some("2026-03-09T12:00:00Z")),
        ],
    );
    // The window's end 02:30 does not exist on the 8th: released when the clock jumps (03:00 EDT).
    quiet_case(
        "America/New_York",
        "22:00",
        "02:30",
        &[
            ("2026-03-08T06:30:00Z", Some("2026-03-08T07:00:00Z")),
            ("2026-03-08T06:59:59Z", Some("2026-03-08T07:00:00Z")),
            ("2026-03-08T07:00:00Z", None),
            // The next night is normal again: 02:30 EDT = 06:30Z.
            ("2026-03-09T02:30:00Z", Some("2026-03-09T06:30:00Z")),
        ],
    );
    // A window starting inside the gap starts when the clock jumps into it.
    quiet_case(
        "America/New_York",
        "02:30",
        "05:00",
        &[
            ("2026-03-08T06:59:59Z", None),
            ("2026-03-08T07:00:00Z", Some("2026-03-08T09:00:00Z")),
        ],
    );
}

#[test]
fn dst_berlin_spring_forward_2026_03_29() {
    // 02:00 CET (01:00Z) jumps to 03:00 CEST.
    quiet_case(
        "Europe/Berlin",
        "21:00",
        "08:00",
        &[
            ("2026-03-28T20:00:00Z", Some("2026-03-29T06:00:00Z")), // 21:00 CET → 08:00 CEST
            ("2026-03-29T05:59:59Z", Some("2026-03-29T06:00:00Z")),
            ("2026-03-29T06:00:00Z", None),
            ("2026-03-29T18:59:59Z", None),
            ("2026-03-29T19:00:00Z", Some("2026-03-30T06:00:00Z")), // 21:00 CEST
        ],
    );
    quiet_case(
        "Europe/Berlin",
        "22:00",
        "02:30",
        &[
            ("2026-03-28T21:00:00Z", Some("2026-03-29T01:00:00Z")),
            ("2026-03-29T00:59:59Z", Some("2026-03-29T01:00:00Z")),
            ("2026-03-29T01:00:00Z", None),
        ],
    );
}

#[test]
fn dst_berlin_fall_back_2026_10_25() {
    // 03:00 CEST (01:00Z) goes back to 02:00 CET; 02:00–03:00 local happens twice.
    quiet_case(
        "Europe/Berlin",
        "21:00",
        "08:00",
        &[
            ("2026-10-24T19:00:00Z", Some("2026-10-25T07:00:00Z")), // 21:00 CEST → 08:00 CET
            ("2026-10-25T06:59:59Z", Some("2026-10-25T07:00:00Z")),
            ("2026-10-25T07:00:00Z", None),
            ("2026-10-25T19:59:59Z", None),
            ("2026-10-25T20:00:00Z", Some("2026-10-26T07:00:00Z")), // 21:00 CET
        ],
    );
    // The end 02:30 is ambiguous: the earlier one (CEST, 00:30Z) releases;
    // the clock then reads 02:00–02:30 again (CET), inside the window by
    // wall-clock, released at the second 02:30 (01:30Z).
    quiet_case(
        "Europe/Berlin",
        "22:00",
        "02:30",
        &[
            ("2026-10-24T20:00:00Z", Some("2026-10-25T00:30:00Z")),
            ("2026-10-25T00:29:59Z", Some("2026-10-25T00:30:00Z")),
            ("2026-10-25T00:30:00Z", None),
            ("2026-10-25T00:59:59Z", None),
            ("2026-10-25T01:00:00Z", Some("2026-10-25T01:30:00Z")),
            ("2026-10-25T01:30:00Z", None),
        ],
    );
}

#[test]
fn gap_end_finds_the_transition() {
    use chrono::NaiveDate;
    let d = |y, m, day, h, min| {
        NaiveDate::from_ymd_opt(y, m, day)
            .and_then(|d| d.and_hms_opt(h, min, 0))
            .expect("date")
    };
    assert_eq!(
        quiet::gap_end(chrono_tz::America::New_York, d(2026, 3, 8, 2, 30)),
        ts("2026-03-08T07:00:00Z")
    );
    assert_eq!(
        quiet::gap_end(chrono_tz::Europe::Berlin, d(2026, 3, 29, 2, 0)),
        ts("2026-03-29T01:00:00Z")
    );
    // Lord Howe moves by 30 minutes: 02:00 → 02:30 local on 2026-10-04 (15:30Z on the 3rd).
    assert_eq!(
        quiet::gap_end(chrono_tz::Australia::Lord_Howe, d(2026, 10, 4, 2, 15)),
        ts("2026-10-03T15:30:00Z")
    );
    // Samoa skipped 2011-12-30 entirely.
    assert_eq!(
        quiet::gap_end(chrono_tz::Pacific::Apia, d(2011, 12, 30, 8, 0)),
        ts("2011-12-30T10:00:00Z")
    );
}

// -------------------------------------------------------------- throttles

fn throttled(d: &Decision) -> (&str, DateTime<Utc>, &[Reservation]) {
    match d {
        Decision::Defer {
            reason,
            until,
            reservations,
        } => (reason.as_str(), *until, reservations.as_slice()),
        other => panic!("expected a throttle deferral, got {other:?}"),
    }
}

/// The reason and release of a throttle deferral.
fn slot(d: Decision) -> (String, DateTime<Utc>) {
    let (reason, until, _) = throttled(&d);
    (reason.to_owned(), until)
}

#[test]
fn throttle_five_messages_two_per_minute() {
    let mut p = policies(vec![], vec![], vec![throttle("esp", Email, 2, 60, &[])]);
    let prof = profile(None);
    let ten = ts("2026-03-02T10:00:00Z");
    let m = msg(&prof, Email, "marketing", "j", &[]);
    let d: Vec<Decision> = (0..5).map(|_| p.decide(&m, &[], ten)).collect();
    assert_eq!(d[0], Decision::Send);
    assert_eq!(d[1], Decision::Send);
    let want = [
        "2026-03-02T10:01:00Z",
        "2026-03-02T10:01:00Z",
        "2026-03-02T10:02:00Z",
    ];
    for (d, want) in d[2..].iter().zip(want) {
        let (reason, until, res) = throttled(d);
        assert_eq!(reason, "throttle:esp");
        assert_eq!(until, ts(want));
        assert_eq!(
            res,
            [Reservation {
                throttle: "esp".into(),
                at: ts(want)
            }]
        );
    }
    // At 10:01 the two come back with their reservations and pass.
    let at1 = ts("2026-03-02T10:01:00Z");
    for d in &d[2..4] {
        let (_, _, res) = throttled(d);
        assert_eq!(
            p.decide(&msg(&prof, Email, "marketing", "j", res), &[], at1),
            Decision::Send
        );
    }
    // A newcomer at 10:01 cannot take their place: 10:02 has one slot left…
    let (_, until) = slot(p.decide(&m, &[], at1));
    assert_eq!(until, ts("2026-03-02T10:02:00Z"));
    // …and then 10:03.
    let (_, until) = slot(p.decide(&m, &[], at1));
    assert_eq!(until, ts("2026-03-02T10:03:00Z"));
    let (_, _, res) = throttled(&d[4]);
    let at2 = ts("2026-03-02T10:02:00Z");
    assert_eq!(
        p.decide(&msg(&prof, Email, "marketing", "j", res), &[], at2),
        Decision::Send
    );
}

#[test]
fn throttle_later_arrival_never_double_books_a_reserved_slot() {
    let mut p = policies(vec![], vec![], vec![throttle("t", Push, 1, 60, &[])]);
    let prof = profile(None);
    let m = msg(&prof, Push, "m", "j", &[]);
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T10:00:00Z")),
        Decision::Send
    );
    let (_, u1) = slot(p.decide(&m, &[], ts("2026-03-02T10:00:10Z")));
    assert_eq!(u1, ts("2026-03-02T10:01:00Z"));
    // At 10:00:59 the window [10:00:00, 10:01:00) is full and 10:01 is reserved.
    let (_, u2) = slot(p.decide(&m, &[], ts("2026-03-02T10:00:59Z")));
    assert_eq!(u2, ts("2026-03-02T10:02:00Z"));
    // Long after, the ledger is stale and a message passes at once.
    assert_eq!(
        p.decide(&m, &[], ts("2026-03-02T10:03:00Z")),
        Decision::Send
    );
    assert_eq!(
        p.snapshot(),
        json!({"throttles": {"t": ["2026-03-02T10:03:00Z"]}})
    );
}

#[test]
fn throttle_scoped_to_journeys_and_channel() {
    let mut p = policies(
        vec![],
        vec![],
        vec![throttle("crm", Webhook, 1, 1, &["orders"])],
    );
    let prof = profile(None);
    let now = ts("2026-03-02T10:00:00Z");
    assert_eq!(
        p.decide(
            &msg(&prof, Webhook, "transactional", "orders", &[]),
            &[],
            now
        ),
        Decision::Send
    );
    let (reason, until) = slot(p.decide(
        &msg(&prof, Webhook, "transactional", "orders", &[]),
        &[],
        now,
    ));
    assert_eq!(
        (reason.as_str(), until),
        ("throttle:crm", ts("2026-03-02T10:00:01Z"))
    );
    // Other journeys and channels are not throttled; transactional is not exempt from throttles.
    assert_eq!(
        p.decide(
            &msg(&prof, Webhook, "transactional", "other", &[]),
            &[],
            now
        ),
        Decision::Send
    );
    assert_eq!(
        p.decide(&msg(&prof, Email, "transactional", "orders", &[]), &[], now),
        Decision::Send
    );
}

#[test]
fn throttle_several_on_one_message_share_one_slot() {
    let mut p = policies(
        vec![],
        vec![],
        vec![
            throttle("a", Email, 1, 60, &[]),
            throttle("b", Email, 1, 90, &["j"]),
        ],
    );
    let prof = profile(None);
    let now = ts("2026-03-02T10:00:00Z");
    let j = msg(&prof, Email, "m", "j", &[]);
    assert_eq!(p.decide(&j, &[], now), Decision::Send);
    let d = p.decide(&j, &[], now);
    let (reason, until, res) = throttled(&d);
    // a alone would allow 10:01:00, b requires 10:01:30: both reserve 10:01:30.
    assert_eq!((reason, until), ("throttle:b", ts("2026-03-02T10:01:30Z")));
    assert_eq!(
        res,
        [
            Reservation {
                throttle: "a".into(),
                at: until
            },
            Reservation {
                throttle: "b".into(),
                at: until
            }
        ]
    );
    // A message only under `a` queues behind the reservation (10:02:30).
    let (reason, until2) = slot(p.decide(&msg(&prof, Email, "m", "k", &[]), &[], now));
    assert_eq!(
        (reason.as_str(), until2),
        ("throttle:a", ts("2026-03-02T10:02:30Z"))
    );
    assert_eq!(
        p.decide(&msg(&prof, Email, "m", "j", res), &[], until),
        Decision::Send
    );
}

#[test]
fn throttle_reservation_released_early_waits_for_its_slot() {
    let mut p = policies(vec![], vec![], vec![throttle("t", Email, 1, 60, &[])]);
    let prof = profile(None);
    let m = msg(&prof, Email, "m", "j", &[]);
    let now = ts("2026-03-02T10:00:00Z");
    assert_eq!(p.decide(&m, &[], now), Decision::Send);
    let d = p.decide(&m, &[], now);
    let (_, until, res) = throttled(&d);
    let early = ts("2026-03-02T10:00:30Z");
    let again = p.decide(&msg(&prof, Email, "m", "j", res), &[], early);
    assert_eq!(throttled(&again), ("throttle:t", until, res));
    assert_eq!(
        p.decide(&msg(&prof, Email, "m", "j", res), &[], until),
        Decision::Send
    );
}

#[test]
fn throttle_reservations_released_late_take_new_slots() {
    // Three messages under 1 per minute at 10:00: one sent, two deferred to
    // 10:01 and 10:02. The engine was down until 10:10: their timers fire
    // late, together. Each takes a new slot instead of going on its old
    // reservation: 10:10, then 10:11 — never two in a minute.
    let mut p = policies(vec![], vec![], vec![throttle("t", Email, 1, 60, &[])]);
    let prof = profile(None);
    let m = msg(&prof, Email, "m", "j", &[]);
    let now = ts("2026-03-02T10:00:00Z");
    assert_eq!(p.decide(&m, &[], now), Decision::Send);
    let first = p.decide(&m, &[], now);
    let second = p.decide(&m, &[], now);
    let (_, u1, r1) = throttled(&first);
    let (_, u2, r2) = throttled(&second);
    assert_eq!(
        (u1, u2),
        (ts("2026-03-02T10:01:00Z"), ts("2026-03-02T10:02:00Z"))
    );
    let late = ts("2026-03-02T10:10:00Z");
    assert_eq!(
        p.decide(&msg(&prof, Email, "m", "j", r1), &[], late),
        Decision::Send
    );
    let again = p.decide(&msg(&prof, Email, "m", "j", r2), &[], late);
    let (reason, until, res) = throttled(&again);
    assert_eq!((reason, until), ("throttle:t", ts("2026-03-02T10:11:00Z")));
    assert_eq!(
        res,
        [Reservation {
            throttle: "t".into(),
            at: until
        }]
    );
    // Back on time, at its new reservation: it goes.
    assert_eq!(
        p.decide(&msg(&prof, Email, "m", "j", res), &[], until),
        Decision::Send
    );
}

#[test]
fn throttle_unusable_reservation_is_rebooked_in_every_throttle() {
    // A message holds `a`'s slot at 10:01 but `b` (added since, say) can only
    // give 10:02: it is re-booked at 10:02 in both, and 10:02 is no longer
    // free in `a` for anyone else.
    let mut p = policies(
        vec![],
        vec![],
        vec![
            throttle("a", Email, 1, 60, &[]),
            throttle("b", Email, 1, 60, &["j"]),
        ],
    );
    let prof = profile(None);
    let at = |s: &str| ts(&format!("2026-03-02T{s}Z"));
    // b is busy until 10:02; a's only slot near 10:01 is the held one.
    assert_eq!(
        p.decide(&msg(&prof, Email, "m", "j", &[]), &[], at("10:01:00")),
        Decision::Send
    );
    p.restore(
        &json!({"throttles": {"a": ["2026-03-02T10:01:00Z"], "b": ["2026-03-02T10:01:00Z"]}}),
    );
    let held = [Reservation {
        throttle: "a".into(),
        at: at("10:01:00"),
    }];
    let d = p.decide(&msg(&prof, Email, "m", "j", &held), &[], at("10:01:00"));
    let (reason, until, res) = throttled(&d);
    assert_eq!((reason, until), ("throttle:b", at("10:02:00")));
    assert_eq!(res.len(), 2);
    assert!(res.iter().all(|r| r.at == until));
    assert_eq!(
        slot(p.decide(&msg(&prof, Email, "m", "k", &[]), &[], at("10:01:30"))).1,
        at("10:03:00")
    );
}

#[test]
fn throttle_snapshot_restore_roundtrip() {
    let throttles = || {
        vec![
            throttle("a", Email, 2, 60, &[]),
            throttle("b", Push, 1, 3600, &[]),
        ]
    };
    let mut p = policies(vec![], vec![], throttles());
    let prof = profile(None);
    let now = ts("2026-03-02T10:00:00Z");
    for _ in 0..3 {
        p.decide(&msg(&prof, Email, "m", "j", &[]), &[], now);
    }
    p.decide(&msg(&prof, Push, "m", "j", &[]), &[], now);
    let snap = p.snapshot();
    let text = serde_json::to_string(&snap).expect("json");
    let mut q = policies(vec![], vec![], throttles());
    q.restore(&serde_json::from_str(&text).expect("json"));
    assert_eq!(q.snapshot(), snap);
    // The restored ledgers decide as the original would.
    for (ch, at) in [
        (Email, now),
        (Push, now),
        (Email, ts("2026-03-02T10:01:00Z")),
    ] {
        assert_eq!(
            p.decide(&msg(&prof, ch, "m", "j", &[]), &[], at),
            q.decide(&msg(&prof, ch, "m", "j", &[]), &[], at)
        );
    }
    // Unknown throttles and garbage are ignored.
    let mut r = policies(vec![], vec![], throttles());
    r.restore(&json!({"throttles": {"gone": ["2026-03-02T10:00:00Z"], "a": [1, "nope"]}}));
    assert_eq!(r.snapshot(), json!({"throttles": {"a": [], "b": []}}));
    r.restore(&Value::Null);
}

// ---------------------------------------------------------------- order

#[test]
fn order_caps_then_quiet_hours_then_throttles() {
    let prof = profile(None);
    let night = ts("2026-03-02T23:00:00Z");
    let log = [sent("2026-03-02T22:30:00Z", Push, "marketing")];
    let caps = || vec![cap("c", all(), 1, 3600, Delay)];
    let quiet_hours = || vec![quiet("q", all(), "21:00", "08:00", utc_zone(), Delay)];
    let throttles = || vec![throttle("t", Push, 1, 86_400, &[])];
    let m = msg(&prof, Push, "marketing", "j", &[]);

    let mut p = policies(caps(), quiet_hours(), throttles());
    assert_eq!(
        p.decide(&m, &log, night),
        defer("frequency_cap:c", "2026-03-02T23:30:00Z")
    );
    // Released by the cap, re-checked from the top: now quiet hours hold it.
    assert_eq!(
        p.decide(&m, &log, ts("2026-03-02T23:30:00Z")),
        defer("quiet_hours:q", "2026-03-03T08:00:00Z")
    );
    // Then it passes the throttle (taking its only slot of the day).
    assert_eq!(
        p.decide(&m, &log, ts("2026-03-03T08:00:00Z")),
        Decision::Send
    );
    let (reason, until) = slot(p.decide(&m, &log, ts("2026-03-03T08:00:00Z")));
    assert_eq!(
        (reason.as_str(), until),
        ("throttle:t", ts("2026-03-04T08:00:00Z"))
    );

    // Unsubscription beats everything.
    let mut unsub = profile(None);
    unsub.insert("subscriptions".into(), json!({"push": false}));
    assert_eq!(
        p.decide(&msg(&unsub, Push, "marketing", "j", &[]), &log, night),
        suppress("unsubscribed")
    );
}

#[test]
fn a_throttle_slot_skips_quiet_hours() {
    // The next free slot (10:01) falls in quiet hours: the message would
    // come back only to be deferred again, its slot wasted. It is deferred
    // straight to the first slot after the window instead, and passes on
    // its reservation there.
    let mut p = policies(
        vec![],
        vec![quiet("q", all(), "10:01", "11:00", utc_zone(), Delay)],
        vec![throttle("t", Email, 1, 60, &[])],
    );
    let prof = profile(None);
    let m = msg(&prof, Email, "m", "j", &[]);
    let now = ts("2026-03-02T10:00:00Z");
    assert_eq!(p.decide(&m, &[], now), Decision::Send);
    let d = p.decide(&m, &[], now);
    let (reason, until, res) = throttled(&d);
    assert_eq!((reason, until), ("throttle:t", ts("2026-03-02T11:00:00Z")));
    let eleven = ts("2026-03-02T11:00:00Z");
    assert_eq!(
        p.decide(&msg(&prof, Email, "m", "j", res), &[], eleven),
        Decision::Send
    );
    // The 11:00 slot is taken: a message due then waits a minute.
    let (_, until, _) = throttled(&p.decide(&m, &[], eleven));
    assert_eq!(until, ts("2026-03-02T11:01:00Z"));
}

#[test]
fn a_reservation_is_dropped_when_another_policy_defers() {
    // A message back early on a reservation that a cap now refuses is
    // deferred by the cap, without the reservation; on release it takes a
    // new slot.
    let mut p = policies(
        vec![cap("c", all(), 1, 3600, Delay)],
        vec![],
        vec![throttle("t", Email, 1, 60, &[])],
    );
    let prof = profile(None);
    let m = msg(&prof, Email, "m", "j", &[]);
    let now = ts("2026-03-02T10:00:00Z");
    assert_eq!(p.decide(&m, &[], now), Decision::Send);
    let d = p.decide(&m, &[], now);
    let (_, until, res) = throttled(&d);
    assert_eq!(until, ts("2026-03-02T10:01:00Z"));
    let log = [SentRecord {
        at: now,
        channel: Email,
        category: "m".into(),
    }];
    let d2 = p.decide(&msg(&prof, Email, "m", "j", res), &log, until);
    assert_eq!(d2, defer("frequency_cap:c", "2026-03-02T11:00:00Z"));
    assert_eq!(
        p.decide(&m, &log[..0], ts("2026-03-02T11:00:00Z")),
        Decision::Send
    );
}
