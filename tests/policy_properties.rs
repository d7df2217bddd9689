//! Property tests of the message policies at the engine level: random
//! policies (caps that drop or delay, quiet hours with and without a
//! midnight crossing, in users' or fixed zones, throttles, global or scoped
//! to journeys) and random event streams (users in many time zones,
//! including invalid and missing ones, changing their profiles over a few
//! days around daylight-saving changes), run through the real `sluice
//! simulate`, with the invariants of FORMAT.md §8 checked directly on the
//! JSON lines it prints:
//!
//! - no frequency cap is ever exceeded in any sliding window `(t − per, t]`;
//! - no throttle is ever exceeded in any half-open window `[t, t + per)`;
//! - no message is sent inside a quiet-hours window that applies to it, in
//!   its user's local time;
//! - every decision is the one the policy order prescribes (subscription,
//!   caps, quiet hours, throttles) for the profile as it stood; a cap's
//!   `until` is the earliest free slot, a quiet-hours `until` the first
//!   instant no delay window holds the message;
//! - every `deferred` line is resolved by exactly one later line of the
//!   same message, at its `until`; nothing is sent twice with one `key`;
//! - a lone throttle sends every message at the earliest slot its bound
//!   allows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------
// The fixed part of the configuration: journeys and templates.

/// A step: (step id, channel or "wait <duration>").
type Step = (&'static str, &'static str);

/// (id, category, entry event, steps).
const JOURNEYS: &[(&str, &str, &str, &[Step])] = &[
    (
        "promo",
        "marketing",
        "promo",
        &[("mail", "email"), ("pause", "wait 3h"), ("nudge", "push")],
    ),
    ("digest", "news", "digest", &[("ping", "push")]),
    (
        "receipt",
        "transactional",
        "order",
        &[("mail", "email"), ("hook", "webhook")],
    ),
    (
        "onboarding",
        "onboarding",
        "signup",
        &[("welcome", "email"), ("day", "wait 1d"), ("tip", "push")],
    ),
];

/// Journey priorities: receipts first, digest and onboarding tie.
fn priority(journey: &str) -> i64 {
    match journey {
        "receipt" => 100,
        "digest" | "onboarding" => 5,
        _ => 0,
    }
}

fn category(journey: &str) -> &'static str {
    JOURNEYS
        .iter()
        .find(|j| j.0 == journey)
        .map(|j| j.1)
        .unwrap_or_else(|| panic!("unknown journey {journey}"))
}

const TEMPLATES: &str = r#"apiVersion: sluice/v1
kind: Template
id: mail
channel: email
subject: "News"
text: "Hello {{user.id}}"
---
apiVersion: sluice/v1
kind: Template
id: ping
channel: push
body: "Ping"
---
apiVersion: sluice/v1
kind: Template
id: hook
channel: webhook
url: "https://crm.example.com/hook"
body: { user: "{{user.id}}" }
"#;

fn journey_yaml(id: &str, cat: &str, event: &str, steps: &[Step]) -> String {
    let mut y = format!(
        "apiVersion: sluice/v1\nkind: Journey\nid: {id}\nversion: 1\ncategory: {cat}\npriority: {}\n\
         entry:\n  event: {event}\n  reentry: always\nsteps:\n",
        priority(id)
    );
    for (step, what) in steps {
        match what.strip_prefix("wait ") {
            Some(d) => y.push_str(&format!("  - id: {step}\n    wait: {d}\n")),
            None => {
                let template = match *what {
                    "email" => "mail",
                    "push" => "ping",
                    _ => "hook",
                };
                y.push_str(&format!(
                    "  - id: {step}\n    send: {{ channel: {what}, template: {template} }}\n"
                ));
            }
        }
    }
    y
}

// ---------------------------------------------------------------------------
// The random part: policies, users and events.

const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "America/St_Johns",
    "Europe/Berlin",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
];
const CHANNELS: &[&str] = &["email", "push", "webhook"];
const CATEGORIES: &[&str] = &["marketing", "news", "onboarding", "transactional"];
const EVENTS: &[&str] = &["promo", "digest", "order", "signup"];
/// First days of the simulated stretches: around the 2026 DST changes of
/// New York (03-08), Berlin and London (03-29, 10-25), Lord Howe and
/// Chatham (04-05), and one quiet June week.
const BASES: &[&str] = &[
    "2026-03-06T00:00:00Z",
    "2026-03-27T00:00:00Z",
    "2026-04-03T00:00:00Z",
    "2026-06-01T00:00:00Z",
    "2026-10-23T00:00:00Z",
];
/// Tracks fall on a 15-minute grid over four days.
const SLOTS: u32 = 4 * 24 * 4;
/// The simulation ends this long after the base.
const HORIZON_DAYS: i64 = 10;

#[derive(Debug, Clone)]
struct Scope {
    channels: Option<Vec<&'static str>>,
    categories: Option<Vec<&'static str>>,
}

impl Scope {
    /// `PolicyScope::applies`: categories default to all but transactional.
    fn applies(&self, channel: &str, category: &str) -> bool {
        self.channels
            .as_ref()
            .is_none_or(|cs| cs.contains(&channel))
            && match &self.categories {
                None => category != "transactional",
                Some(cs) => cs.contains(&category),
            }
    }

    fn yaml(&self) -> String {
        let mut y = String::new();
        if let Some(cs) = &self.channels {
            y.push_str(&format!("channels: [{}]\n", cs.join(", ")));
        }
        if let Some(cs) = &self.categories {
            y.push_str(&format!("categories: [{}]\n", cs.join(", ")));
        }
        y
    }
}

#[derive(Debug, Clone)]
struct Cap {
    scope: Scope,
    limit: usize,
    per: (&'static str, i64),
    drop: bool,
}

#[derive(Debug, Clone)]
struct Quiet {
    scope: Scope,
    /// Minutes of the local day.
    start: u32,
    end: u32,
    /// `None`: the user's zone.
    zone: Option<&'static str>,
    drop: bool,
}

#[derive(Debug, Clone)]
struct Throttle {
    channel: &'static str,
    count: usize,
    per: (&'static str, i64),
    journeys: Vec<&'static str>,
}

impl Throttle {
    fn applies(&self, channel: &str, journey: &str) -> bool {
        self.channel == channel && (self.journeys.is_empty() || self.journeys.contains(&journey))
    }
}

#[derive(Debug, Clone)]
struct Setup {
    default_tz: &'static str,
    caps: Vec<Cap>,
    quiet: Vec<Quiet>,
    throttles: Vec<Throttle>,
    base: &'static str,
    /// Each user's traits, identified an hour before the base.
    users: Vec<Value>,
    /// (user, event, slot): a track at base + slot × 15 min.
    tracks: Vec<(usize, &'static str, u32)>,
    /// (user, slot, traits): an identify at base + slot × 15 min + 29.5 s,
    /// an instant at which no message is ever decided.
    changes: Vec<(usize, u32, Value)>,
}

fn hhmm(m: u32) -> String {
    format!("{:02}:{:02}", m / 60, m % 60)
}

impl Setup {
    fn base(&self) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(self.base)
            .expect("base")
            .with_timezone(&Utc)
    }

    fn end(&self) -> DateTime<Utc> {
        self.base() + TimeDelta::days(HORIZON_DAYS)
    }

    fn user_id(i: usize) -> String {
        format!("u{i}")
    }

    /// Writes the config repository and `events.jsonl` into `dir`.
    fn write(&self, dir: &Path) {
        let w = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        w(
            "sluice.yaml",
            &format!(
                "apiVersion: sluice/v1\nkind: Project\nid: prop\ndefault_timezone: {}\n",
                self.default_tz
            ),
        );
        w("templates/messages.yaml", TEMPLATES);
        for (id, cat, event, steps) in JOURNEYS {
            w(
                &format!("journeys/{id}.yaml"),
                &journey_yaml(id, cat, event, steps),
            );
        }
        let mut docs = Vec::new();
        for (i, c) in self.caps.iter().enumerate() {
            docs.push(format!(
                "apiVersion: sluice/v1\nkind: FrequencyCap\nid: cap-{i}\n{}limit: {}\nper: {}\naction: {}\n",
                c.scope.yaml(),
                c.limit,
                c.per.0,
                if c.drop { "drop" } else { "delay" }
            ));
        }
        for (i, q) in self.quiet.iter().enumerate() {
            docs.push(format!(
                "apiVersion: sluice/v1\nkind: QuietHours\nid: quiet-{i}\n{}start: \"{}\"\nend: \"{}\"\ntimezone: {}\naction: {}\n",
                q.scope.yaml(),
                hhmm(q.start),
                hhmm(q.end),
                q.zone.unwrap_or("user"),
                if q.drop { "drop" } else { "delay" }
            ));
        }
        for (i, t) in self.throttles.iter().enumerate() {
            let mut d = format!(
                "apiVersion: sluice/v1\nkind: Throttle\nid: throttle-{i}\nchannel: {}\nrate: {} per {}\n",
                t.channel, t.count, t.per.0
            );
            if !t.journeys.is_empty() {
                d.push_str(&format!("journeys: [{}]\n", t.journeys.join(", ")));
            }
            docs.push(d);
        }
        if !docs.is_empty() {
            w("policies/policies.yaml", &docs.join("---\n"));
        }

        let mut events: Vec<(DateTime<Utc>, Value)> = Vec::new();
        let base = self.base();
        for (i, traits) in self.users.iter().enumerate() {
            let ts = base - TimeDelta::hours(1);
            events.push((ts, identify(&Self::user_id(i), ts, traits)));
        }
        for (u, traits) in self.changes.iter().map(|(u, s, t)| (*u, (s, t))) {
            let ts = change_ts(base, *traits.0);
            events.push((ts, identify(&Self::user_id(u), ts, traits.1)));
        }
        for &(u, event, slot) in &self.tracks {
            let ts = base + TimeDelta::minutes(15 * i64::from(slot));
            events.push((
                ts,
                json!({"type": "track", "user": Self::user_id(u), "ts": rfc3339(ts), "event": event}),
            ));
        }
        events.sort_by_key(|(ts, _)| *ts);
        let mut text = String::new();
        for (_, e) in events {
            text.push_str(&e.to_string());
            text.push('\n');
        }
        w("events.jsonl", &text);
    }

    /// The user's profile as it stands just before `at`.
    fn profile(&self, user: usize, at: DateTime<Utc>) -> Map<String, Value> {
        let mut p = Map::new();
        merge(&mut p, &self.users[user]);
        let base = self.base();
        let mut changes: Vec<&(usize, u32, Value)> = self
            .changes
            .iter()
            .filter(|(u, slot, _)| *u == user && change_ts(base, *slot) < at)
            .collect();
        // In time order, as the simulation applies them (stably).
        changes.sort_by_key(|(_, slot, _)| *slot);
        for (_, _, traits) in changes {
            merge(&mut p, traits);
        }
        p
    }
}

fn change_ts(base: DateTime<Utc>, slot: u32) -> DateTime<Utc> {
    base + TimeDelta::minutes(15 * i64::from(slot)) + TimeDelta::milliseconds(29_500)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn identify(user: &str, ts: DateTime<Utc>, traits: &Value) -> Value {
    json!({"type": "identify", "user": user, "ts": rfc3339(ts), "traits": traits})
}

/// FORMAT.md §4: traits merge into the profile; `null` removes one.
fn merge(p: &mut Map<String, Value>, traits: &Value) {
    for (k, v) in traits.as_object().into_iter().flatten() {
        if v.is_null() {
            p.remove(k);
        } else {
            p.insert(k.clone(), v.clone());
        }
    }
}

fn scope() -> impl Strategy<Value = Scope> {
    (
        proptest::option::of(subsequence(CHANNELS, 1..=2)),
        proptest::option::weighted(0.4, subsequence(CATEGORIES, 1..=3)),
    )
        .prop_map(|(channels, categories)| Scope {
            channels,
            categories,
        })
}

fn cap() -> impl Strategy<Value = Cap> {
    (
        scope(),
        1..=3usize,
        select(
            &[
                ("30m", 1_800),
                ("2h", 7_200),
                ("6h", 21_600),
                ("1d", 86_400),
            ][..],
        ),
        any::<bool>(),
    )
        .prop_map(|(scope, limit, per, drop)| Cap {
            scope,
            limit,
            per,
            drop,
        })
}

fn quiet() -> impl Strategy<Value = Quiet> {
    (
        scope(),
        0..48u32,
        0..48u32,
        proptest::option::weighted(0.3, select(ZONES)),
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(scope, start, end, zone, drop)| Quiet {
            scope,
            start: start * 30,
            end: end * 30,
            zone,
            drop,
        })
}

fn throttle() -> impl Strategy<Value = Throttle> {
    (
        select(CHANNELS),
        1..=3usize,
        prop_oneof![
            1 => Just(("second", 1)),
            2 => Just(("minute", 60)),
            2 => Just(("hour", 3_600)),
        ],
        prop_oneof![
            3 => Just(Vec::new()),
            1 => subsequence(&["promo", "receipt", "onboarding"][..], 1..=2),
        ],
    )
        .prop_map(|(channel, count, per, journeys)| Throttle {
            channel,
            count,
            per,
            journeys,
        })
}

/// A `timezone` trait: mostly valid, sometimes invalid, not a string, or
/// absent (then the Project's `default_timezone` applies).
fn timezone() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        8 => select(ZONES).prop_map(|z| Some(json!(z))),
        1 => Just(Some(json!("Mars/Olympus"))),
        1 => Just(Some(json!(5))),
        1 => Just(Some(json!(""))),
        2 => Just(None),
    ]
}

fn subscriptions() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(
        select(
            &[
                "email",
                "push",
                "webhook",
                "marketing",
                "news",
                "onboarding",
                "transactional",
            ][..],
        ),
        proptest::bool::weighted(0.6),
        0..3,
    )
    .prop_map(|m| json!(m))
}

fn user_traits() -> impl Strategy<Value = Value> {
    (
        timezone(),
        proptest::bool::weighted(0.9),
        0..10u8,
        proptest::option::weighted(0.4, subscriptions()),
    )
        .prop_map(|(tz, email, push, subs)| {
            let mut m = Map::new();
            if let Some(tz) = tz {
                m.insert("timezone".into(), tz);
            }
            if email {
                m.insert("email".into(), json!("someone@example.com"));
            }
            match push {
                0 => {}
                1 => {
                    m.insert("push_tokens".into(), json!([]));
                }
                _ => {
                    m.insert("push_tokens".into(), json!(["tok"]));
                }
            }
            if let Some(s) = subs {
                m.insert("subscriptions".into(), s);
            }
            Value::Object(m)
        })
}

/// A profile change in the middle of the stream.
fn change() -> impl Strategy<Value = Value> {
    prop_oneof![
        timezone().prop_map(|tz| json!({ "timezone": tz.unwrap_or(Value::Null) })),
        subscriptions().prop_map(|s| json!({ "subscriptions": s })),
        Just(json!({ "subscriptions": null })),
        Just(json!({ "email": null })),
        Just(json!({ "email": "again@example.com", "push_tokens": ["tok-2"] })),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        select(ZONES),
        proptest::collection::vec(cap(), 0..=3),
        proptest::collection::vec(quiet(), 0..=2),
        proptest::collection::vec(throttle(), 0..=2),
        select(BASES),
        proptest::collection::vec(user_traits(), 1..=8),
        // Tracks within two hours (throttles and caps get busy), a day, or
        // four days (quiet hours and DST changes get their turn).
        select(&[8, 96, SLOTS][..]),
    )
        .prop_flat_map(
            |(default_tz, caps, quiet, throttles, base, users, spread)| {
                let n = users.len();
                (
                    Just((default_tz, caps, quiet, throttles, base, users)),
                    // Some events reach several users at one instant (a campaign).
                    proptest::collection::vec(
                        (
                            subsequence((0..n).collect::<Vec<_>>(), 1..=n),
                            select(EVENTS),
                            0..spread,
                        ),
                        1..=12,
                    )
                    .prop_map(|bursts| {
                        bursts
                            .into_iter()
                            .flat_map(|(users, event, slot)| {
                                users.into_iter().map(move |u| (u, event, slot))
                            })
                            .collect::<Vec<_>>()
                    }),
                    proptest::collection::vec((0..n, 0..SLOTS, change()), 0..=6),
                )
            },
        )
        .prop_map(
            |((default_tz, caps, quiet, throttles, base, users), tracks, changes)| Setup {
                default_tz,
                caps,
                quiet,
                throttles,
                base,
                users,
                tracks,
                changes,
            },
        )
}

// ---------------------------------------------------------------------------
// Running and reading the output.

/// A `send` line.
#[derive(Debug, Clone)]
struct Send {
    at: DateTime<Utc>,
    user: usize,
    journey: String,
    step: String,
    channel: String,
    outcome: String,
    reason: Option<String>,
    until: Option<DateTime<Utc>>,
    key: Option<String>,
    raw: String,
}

fn ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("bad timestamp {s}: {e}"))
        .with_timezone(&Utc)
}

/// Runs `sluice simulate` over the setup until its end; the `send` lines.
fn run(setup: &Setup) -> Vec<Send> {
    let dir = tempfile::tempdir().expect("tempdir");
    setup.write(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("simulate")
        .arg(dir.path())
        .arg("--events")
        .arg(dir.path().join("events.jsonl"))
        .args(["--until", &rfc3339(setup.end()), "--only", "sends"])
        .output()
        .expect("run sluice");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            let s = |k: &str| v[k].as_str().map(str::to_owned);
            assert_eq!(v["kind"], "send", "{l}");
            let user = s("user").expect("user");
            Send {
                at: ts(&s("at").expect("at")),
                user: user[1..].parse().expect("user index"),
                journey: s("journey").expect("journey"),
                step: s("step").expect("step"),
                channel: s("channel").expect("channel"),
                outcome: s("outcome").expect("outcome"),
                reason: s("reason"),
                until: s("until").map(|u| ts(&u)),
                key: s("key"),
                raw: l.to_owned(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The oracle.

fn zone_of(profile: &Map<String, Value>, default: Tz) -> Tz {
    profile
        .get("timezone")
        .and_then(Value::as_str)
        .and_then(|s| s.trim().parse::<Tz>().ok())
        .unwrap_or(default)
}

/// Whether `at` falls in `[start, end)` of the local day in `tz`.
fn quiet_at(q: &Quiet, at: DateTime<Utc>, user_tz: Tz) -> bool {
    let tz = q
        .zone
        .map(|z| z.parse::<Tz>().expect("zone"))
        .unwrap_or(user_tz);
    let local = tz.from_utc_datetime(&at.naive_utc()).time();
    let t = local.num_seconds_from_midnight();
    let (s, e) = (q.start * 60, q.end * 60);
    match s.cmp(&e) {
        std::cmp::Ordering::Less => s <= t && t < e,
        std::cmp::Ordering::Greater => t >= s || t < e,
        std::cmp::Ordering::Equal => false,
    }
}

/// The first whole minute after `at` at which no delay window that applies
/// holds a message (windows are whole minutes of local time, and every
/// zone's offset is whole minutes); `None` if they hold it for three days
/// (then the engine re-checks every few days).
fn first_free(
    setup: &Setup,
    channel: &str,
    cat: &str,
    at: DateTime<Utc>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    let delays: Vec<&Quiet> = setup
        .quiet
        .iter()
        .filter(|q| !q.drop && q.scope.applies(channel, cat))
        .collect();
    let minute = TimeDelta::minutes(1);
    let mut t = at.with_second(0)?.with_nanosecond(0)? + minute;
    for _ in 0..3 * 24 * 60 {
        if !delays.iter().any(|q| quiet_at(q, t, tz)) {
            return Some(t);
        }
        t += minute;
    }
    None
}

/// Whether the UTC offset of the user's zone, or of a window's fixed zone,
/// differs between `a` and `b`.
fn offsets_change(setup: &Setup, user_tz: Tz, a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    let offset = |tz: Tz, t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    std::iter::once(user_tz)
        .chain(
            setup
                .quiet
                .iter()
                .filter_map(|q| q.zone)
                .map(|z| z.parse::<Tz>().expect("zone")),
        )
        .any(|tz| offset(tz, a) != offset(tz, b))
}

/// Step 1 for a profile: `Some("unsubscribed" | "no_address")` or `None`.
fn subscription(p: &Map<String, Value>, channel: &str, category: &str) -> Option<&'static str> {
    let subs = p.get("subscriptions").and_then(Value::as_object);
    let off = |k: &str| subs.and_then(|s| s.get(k)).and_then(Value::as_bool) == Some(false);
    if off(channel) || off(category) {
        return Some("unsubscribed");
    }
    let addressed = match channel {
        "email" => p
            .get("email")
            .and_then(Value::as_str)
            .is_some_and(|e| !e.is_empty()),
        "push" => p
            .get("push_tokens")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|v| v.as_str().is_some_and(|s| !s.is_empty()))),
        _ => true,
    };
    (!addressed).then_some("no_address")
}

/// A record of a message sent, for the caps.
#[derive(Debug, Clone)]
struct Sent {
    at: DateTime<Utc>,
    channel: String,
    category: &'static str,
}

/// The caps that object to a message at `now`, each with the instant it
/// would free a slot.
fn objecting_caps(
    setup: &Setup,
    sent: &[Sent],
    channel: &str,
    cat: &str,
    now: DateTime<Utc>,
) -> Vec<(usize, DateTime<Utc>)> {
    let mut out = Vec::new();
    for (i, c) in setup.caps.iter().enumerate() {
        if !c.scope.applies(channel, cat) {
            continue;
        }
        let per = TimeDelta::seconds(c.per.1);
        let mut times: Vec<DateTime<Utc>> = sent
            .iter()
            .filter(|s| s.at > now - per && s.at <= now && c.scope.applies(&s.channel, s.category))
            .map(|s| s.at)
            .collect();
        if times.len() >= c.limit {
            times.sort();
            out.push((i, times[times.len() - c.limit] + per));
        }
    }
    out
}

fn policy_index(reason: &str, prefix: &str) -> Option<usize> {
    reason.strip_prefix(prefix)?.parse().ok()
}

/// Checks every invariant on the lines of one run.
fn check(setup: &Setup, lines: &[Send]) -> Result<(), TestCaseError> {
    let default_tz: Tz = setup.default_tz.parse().expect("zone");
    let end = setup.end();
    let mut sent: BTreeMap<usize, Vec<Sent>> = BTreeMap::new();
    let mut keys = BTreeSet::new();

    for (i, l) in lines.iter().enumerate() {
        let ctx = || format!("line {i}: {}", l.raw);
        prop_assert!(l.at <= end, "after the end: {}", ctx());
        if i > 0 {
            prop_assert!(lines[i - 1].at <= l.at, "out of time order: {}", ctx());
        }
        let cat = category(&l.journey);
        let profile = setup.profile(l.user, l.at);
        let tz = zone_of(&profile, default_tz);
        let user_sent = sent.entry(l.user).or_default();
        let objecting = objecting_caps(setup, user_sent, &l.channel, cat, l.at);
        let holding: Vec<usize> = setup
            .quiet
            .iter()
            .enumerate()
            .filter(|(_, q)| q.scope.applies(&l.channel, cat) && quiet_at(q, l.at, tz))
            .map(|(i, _)| i)
            .collect();
        let step1 = subscription(&profile, &l.channel, cat);
        let reason = l.reason.as_deref().unwrap_or("");

        match l.outcome.as_str() {
            "sent" => {
                prop_assert!(step1.is_none(), "sent though {step1:?}: {}", ctx());
                prop_assert!(
                    objecting.is_empty(),
                    "sent over caps {objecting:?}: {}",
                    ctx()
                );
                prop_assert!(
                    holding.is_empty(),
                    "sent in quiet hours {holding:?} ({tz}): {}",
                    ctx()
                );
                let key = l.key.clone().unwrap_or_default();
                prop_assert!(!key.is_empty(), "sent without a key: {}", ctx());
                prop_assert!(keys.insert(key), "sent twice: {}", ctx());
                prop_assert!(l.reason.is_none() && l.until.is_none(), "{}", ctx());
                user_sent.push(Sent {
                    at: l.at,
                    channel: l.channel.clone(),
                    category: cat,
                });
            }
            "suppressed" => {
                prop_assert!(l.until.is_none() && l.key.is_none(), "{}", ctx());
                if reason == "unsubscribed" || reason == "no_address" {
                    prop_assert_eq!(step1, Some(reason), "{}", ctx());
                } else if let Some(c) = policy_index(reason, "frequency_cap:cap-") {
                    prop_assert!(step1.is_none(), "{}", ctx());
                    prop_assert!(setup.caps[c].drop, "a delay cap dropped: {}", ctx());
                    prop_assert!(
                        objecting.iter().any(|(o, _)| *o == c),
                        "cap {c} does not object ({objecting:?}): {}",
                        ctx()
                    );
                } else if let Some(q) = policy_index(reason, "quiet_hours:quiet-") {
                    prop_assert!(step1.is_none(), "{}", ctx());
                    prop_assert!(objecting.is_empty(), "caps come first: {}", ctx());
                    prop_assert!(setup.quiet[q].drop, "a delay window dropped: {}", ctx());
                    prop_assert!(holding.contains(&q), "outside window {q} ({tz}): {}", ctx());
                } else {
                    prop_assert!(false, "unexpected reason: {}", ctx());
                }
            }
            "deferred" => {
                prop_assert!(step1.is_none(), "deferred though {step1:?}: {}", ctx());
                prop_assert!(l.key.is_none(), "{}", ctx());
                let Some(until) = l.until else {
                    return Err(TestCaseError::fail(format!("no until: {}", ctx())));
                };
                prop_assert!(until > l.at, "until not ahead: {}", ctx());
                if let Some(c) = policy_index(reason, "frequency_cap:cap-") {
                    prop_assert!(
                        objecting.iter().all(|(o, _)| !setup.caps[*o].drop),
                        "a drop cap objects too ({objecting:?}): {}",
                        ctx()
                    );
                    let latest = objecting.iter().map(|(_, u)| *u).max();
                    prop_assert_eq!(Some(until), latest, "not the earliest free slot: {}", ctx());
                    prop_assert!(
                        objecting.iter().any(|(o, u)| *o == c && *u == until),
                        "cap {c} does not set the until ({objecting:?}): {}",
                        ctx()
                    );
                } else if let Some(q) = policy_index(reason, "quiet_hours:quiet-") {
                    prop_assert!(objecting.is_empty(), "caps come first: {}", ctx());
                    prop_assert!(holding.contains(&q), "outside window {q} ({tz}): {}", ctx());
                    prop_assert!(
                        holding.iter().all(|h| !setup.quiet[*h].drop),
                        "a drop window holds it too: {}",
                        ctx()
                    );
                    // Released at the first instant no delay window holds it.
                    // Across a DST change the engine reads "until the window
                    // ends" as "until the local clock reads `end`", which may
                    // skip a moment outside the window (a clock set back from
                    // 03:45 to 02:45 under a window starting at 03:00); there
                    // the release is free, and not early.
                    if let Some(free) = first_free(setup, &l.channel, cat, l.at, tz) {
                        if offsets_change(setup, tz, l.at, until) {
                            prop_assert!(until >= free, "released early: {}", ctx());
                            prop_assert_eq!(
                                first_free(
                                    setup,
                                    &l.channel,
                                    cat,
                                    until - TimeDelta::minutes(1),
                                    tz
                                ),
                                Some(until),
                                "released inside a window: {}",
                                ctx()
                            );
                        } else {
                            prop_assert_eq!(
                                until,
                                free,
                                "not released when the windows end: {}",
                                ctx()
                            );
                        }
                    }
                } else if let Some(t) = policy_index(reason, "throttle:throttle-") {
                    prop_assert!(objecting.is_empty(), "caps come first: {}", ctx());
                    prop_assert!(holding.is_empty(), "quiet hours come first: {}", ctx());
                    prop_assert!(
                        setup.throttles[t].applies(&l.channel, &l.journey),
                        "throttle {t} does not apply: {}",
                        ctx()
                    );
                } else {
                    prop_assert!(false, "unexpected reason: {}", ctx());
                }
                // Resolved once, at its until, by the next line of the message.
                let next = lines[i + 1..]
                    .iter()
                    .find(|m| m.user == l.user && m.journey == l.journey && m.step == l.step);
                match next {
                    Some(n) => prop_assert_eq!(n.at, until, "resolved off its until: {}", ctx()),
                    None => prop_assert!(until > end, "never resolved: {}", ctx()),
                }
            }
            other => prop_assert!(false, "unexpected outcome {other}: {}", ctx()),
        }
    }

    // The bounds, directly on the `sent` lines.
    let sent_lines: Vec<&Send> = lines.iter().filter(|l| l.outcome == "sent").collect();
    for (c, cap) in setup.caps.iter().enumerate() {
        let per = TimeDelta::seconds(cap.per.1);
        for user in 0..setup.users.len() {
            let times: Vec<DateTime<Utc>> = sent_lines
                .iter()
                .filter(|l| l.user == user && cap.scope.applies(&l.channel, category(&l.journey)))
                .map(|l| l.at)
                .collect();
            for &t in &times {
                let n = times.iter().filter(|&&s| s > t - per && s <= t).count();
                prop_assert!(
                    n <= cap.limit,
                    "cap-{c} exceeded for u{user}: {n} sends in (t − {}, {t}]",
                    cap.per.0
                );
            }
        }
    }
    for (k, th) in setup.throttles.iter().enumerate() {
        let per = TimeDelta::seconds(th.per.1);
        let times: Vec<DateTime<Utc>> = sent_lines
            .iter()
            .filter(|l| th.applies(&l.channel, &l.journey))
            .map(|l| l.at)
            .collect();
        for &t in &times {
            let n = times.iter().filter(|&&s| s >= t && s < t + per).count();
            prop_assert!(
                n <= th.count,
                "throttle-{k} exceeded: {n} sends in [{t}, + {})",
                th.per.0
            );
        }
    }
    Ok(())
}

/// The slots a lone throttle must give messages due at `dues` (sorted):
/// each as early as possible, never before an earlier one, and no more
/// than `count` in any `[t, t + per)`.
fn earliest_slots(dues: &[DateTime<Utc>], count: usize, per: TimeDelta) -> Vec<DateTime<Utc>> {
    let mut slots: Vec<DateTime<Utc>> = Vec::with_capacity(dues.len());
    for &due in dues {
        let mut slot = due;
        if let Some(&last) = slots.last() {
            slot = slot.max(last);
        }
        if slots.len() >= count {
            slot = slot.max(slots[slots.len() - count] + per);
        }
        slots.push(slot);
    }
    slots
}

/// Which decisions a run showed: `<outcome> <policy kind>`, e.g.
/// `deferred throttle`, and `deferred again` for a message deferred at its
/// release.
fn decisions(lines: &[Send]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut deferred = BTreeSet::new();
    for l in lines {
        let kind = l
            .reason
            .as_deref()
            .unwrap_or("")
            .split(':')
            .next()
            .unwrap_or("");
        seen.insert(format!("{} {kind}", l.outcome));
        let id = (l.user, l.journey.as_str(), l.step.as_str());
        if l.outcome == "deferred" {
            if !deferred.insert(id) {
                seen.insert("deferred again".to_owned());
            }
        } else {
            deferred.remove(&id);
        }
    }
    seen
}

#[test]
fn random_policies_hold_their_invariants() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    });
    let seen = std::cell::RefCell::new(BTreeSet::new());
    let result = runner.run(&setup(), |setup| {
        let lines = run(&setup);
        check(&setup, &lines)?;
        seen.borrow_mut().extend(decisions(&lines));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The cases were not vacuous: every kind of decision was taken and
    // checked (each is common enough that 64 cases all but surely show it).
    let seen = seen.into_inner();
    for kind in [
        "sent ",
        "suppressed unsubscribed",
        "suppressed no_address",
        "suppressed frequency_cap",
        "deferred frequency_cap",
        "suppressed quiet_hours",
        "deferred quiet_hours",
        "deferred throttle",
        "deferred again",
    ] {
        assert!(seen.contains(kind), "no `{kind}` in 64 cases: {seen:?}");
    }
}

fn lone_throttle() -> impl Strategy<Value = Setup> {
    (throttle(), select(BASES), 1..=4usize)
        .prop_flat_map(|(throttle, base, n)| {
            (
                Just((throttle, base, n)),
                proptest::collection::vec((0..n, select(EVENTS), 0..24u32), 1..=30),
            )
        })
        .prop_map(|((throttle, base, n), tracks)| Setup {
            default_tz: "UTC",
            caps: Vec::new(),
            quiet: Vec::new(),
            throttles: vec![throttle],
            base,
            users: vec![json!({"email": "a@example.com", "push_tokens": ["tok"]}); n],
            tracks,
            changes: Vec::new(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 512, ..ProptestConfig::default() })]

    /// With one throttle and nothing else, the sent times of its messages are
    /// exactly the earliest slots its bound allows, given when each became
    /// due (the first line of each message).
    #[test]
    fn a_lone_throttle_sends_each_message_at_its_earliest_slot(setup in lone_throttle()) {
        let lines = run(&setup);
        check(&setup, &lines)?;
        let th = &setup.throttles[0];
        // Split the lines into messages: a message's lines are those of its
        // (user, journey, step) from its first line (its due) to the first
        // that is not `deferred`.
        let mut open: BTreeMap<(usize, &str, &str), DateTime<Utc>> = BTreeMap::new();
        let mut dues = Vec::new();
        let mut sends = Vec::new();
        for l in &lines {
            let id = (l.user, l.journey.as_str(), l.step.as_str());
            let due = *open.entry(id).or_insert(l.at);
            match l.outcome.as_str() {
                "deferred" => continue,
                "sent" => {}
                _ => return Err(TestCaseError::fail(format!("not sent: {}", l.raw))),
            }
            open.remove(&id);
            if th.applies(&l.channel, &l.journey) {
                dues.push(due);
                sends.push(l.at);
            } else {
                prop_assert_eq!(l.at, due, "an unthrottled message waited: {}", &l.raw);
            }
        }
        prop_assert!(open.is_empty(), "never sent: {:?}", open);
        dues.sort();
        sends.sort();
        let expected = earliest_slots(&dues, th.count, TimeDelta::seconds(th.per.1));
        prop_assert_eq!(sends, expected);
    }
}
