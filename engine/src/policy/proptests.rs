//! Property tests: random message streams over users in many time zones
//! and random policies, run through a driver that behaves like the engine
//! (decide in time order, re-submit deferred messages at their `until` with
//! the returned reservations, record each send), with the invariants
//! asserted directly on the outcome.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use journeys::compiled::{
    Channel, Config, FrequencyCap, PolicyAction, PolicyScope, QuietHours, Throttle,
};
use journeys::scalar::{Duration, Rate, TimeOfDay, Zone};
use proptest::prelude::*;
use proptest::sample::subsequence;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Map, Value};

use super::tests::{config, throttle, ts};
use super::*;

const ZONES: [&str; 9] = [
    "America/New_York",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "UTC",
    "America/Sao_Paulo",
    "Pacific/Chatham",
    "America/Los_Angeles",
];
/// Starting points next to daylight-saving changes (and one quiet month).
const BASES: [&str; 6] = [
    "2026-03-07T12:00:00Z",
    "2026-03-28T12:00:00Z",
    "2026-10-24T12:00:00Z",
    "2026-10-31T12:00:00Z",
    "2026-04-03T12:00:00Z",
    "2026-06-10T00:00:00Z",
];
const CATEGORIES: [&str; 3] = ["marketing", "onboarding", "transactional"];
const JOURNEYS: [&str; 3] = ["j1", "j2", "j3"];

#[derive(Debug, Clone)]
struct User {
    /// An index into ZONES, an invalid name, or none.
    tz: Option<Result<usize, ()>>,
    /// A category the user unsubscribed from.
    unsubscribed: Option<usize>,
}

#[derive(Debug, Clone)]
struct Msg {
    user: usize,
    journey: usize,
    category: usize,
    channel: Channel,
    /// Seconds after the base.
    due: i64,
    priority: i64,
}

#[derive(Debug, Clone)]
struct World {
    base: usize,
    default_tz: usize,
    users: Vec<User>,
    caps: Vec<FrequencyCap>,
    quiet: Vec<QuietHours>,
    throttles: Vec<Throttle>,
    msgs: Vec<Msg>,
}

fn channel() -> impl Strategy<Value = Channel> {
    prop_oneof![
        Just(Channel::Email),
        Just(Channel::Push),
        Just(Channel::Webhook)
    ]
}

fn action() -> impl Strategy<Value = PolicyAction> {
    prop_oneof![Just(PolicyAction::Delay), Just(PolicyAction::Drop)]
}

fn policy_scope() -> impl Strategy<Value = PolicyScope> {
    let channels = proptest::option::of(subsequence(Channel::ALL.to_vec(), 1..=3));
    let categories =
        proptest::option::of(subsequence(CATEGORIES.map(str::to_owned).to_vec(), 1..=3));
    (channels, categories).prop_map(|(channels, categories)| PolicyScope {
        channels,
        categories,
    })
}

fn time_of_day() -> impl Strategy<Value = TimeOfDay> {
    prop_oneof![
        (0u32..24).prop_map(|hour| TimeOfDay { hour, minute: 0 }),
        (0u32..24, 0u32..60).prop_map(|(hour, minute)| TimeOfDay { hour, minute }),
    ]
}

fn world() -> impl Strategy<Value = World> {
    let user = (
        proptest::option::of(prop_oneof![4 => (0..ZONES.len()).prop_map(Ok), 1 => Just(Err(()))]),
        proptest::option::weighted(0.15, 0..CATEGORIES.len()),
    )
        .prop_map(|(tz, unsubscribed)| User { tz, unsubscribed });
    let cap = (
        policy_scope(),
        1u32..4,
        prop::sample::select(vec![60u64, 600, 3600, 7200, 86_400]),
        action(),
    )
        .prop_map(|(scope, limit, per, action)| (scope, limit, per, action));
    let quiet = (
        policy_scope(),
        time_of_day(),
        time_of_day(),
        proptest::option::of(0..ZONES.len()),
        action(),
    );
    let throttle = (
        channel(),
        1u32..4,
        prop::sample::select(vec![1u64, 30, 60, 600, 3600]),
        subsequence(JOURNEYS.to_vec(), 0..=2),
    );
    let msg = (
        0usize..6,
        0..JOURNEYS.len(),
        0..CATEGORIES.len(),
        channel(),
        prop_oneof![(0i64..2 * 1440).prop_map(|m| m * 60), 0i64..2 * 86_400],
        0i64..3,
    );
    (
        0..BASES.len(),
        0..ZONES.len(),
        prop::collection::vec(user, 6),
        prop::collection::vec(cap, 0..4),
        prop::collection::vec(quiet, 0..3),
        prop::collection::vec(throttle, 0..4),
        prop::collection::vec(msg, 1..80),
        // How far the due times spread: bursts stress the throttles.
        prop::sample::select(vec![120i64, 900, 3 * 3600, 2 * 86_400]),
    )
        .prop_map(
            |(base, default_tz, users, caps, quiet, throttles, msgs, spread)| World {
                base,
                default_tz,
                users,
                caps: caps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (scope, limit, per, action))| FrequencyCap {
                        id: format!("cap{i}"),
                        scope,
                        limit,
                        per: Duration(per),
                        action,
                    })
                    .collect(),
                quiet: quiet
                    .into_iter()
                    .enumerate()
                    .map(|(i, (scope, start, end, zone, action))| QuietHours {
                        id: format!("quiet{i}"),
                        scope,
                        start,
                        end,
                        zone: zone.map_or(Zone::User, |z| Zone::Fixed(tz(z))),
                        action,
                    })
                    .collect(),
                throttles: throttles
                    .into_iter()
                    .enumerate()
                    .map(|(i, (channel, count, per, journeys))| Throttle {
                        id: format!("thr{i}"),
                        channel,
                        rate: Rate {
                            count,
                            per: Duration(per),
                        },
                        journeys: journeys.into_iter().map(str::to_owned).collect(),
                    })
                    .collect(),
                msgs: msgs
                    .into_iter()
                    .map(|(user, journey, category, channel, due, priority)| Msg {
                        user,
                        journey,
                        category,
                        channel,
                        due: due % spread,
                        priority,
                    })
                    .collect(),
            },
        )
}

fn tz(i: usize) -> chrono_tz::Tz {
    ZONES[i].parse().expect("zone")
}

impl World {
    fn config(&self) -> Config {
        config(
            tz(self.default_tz),
            self.caps.clone(),
            self.quiet.clone(),
            self.throttles.clone(),
        )
    }

    fn profile(&self, u: usize) -> Map<String, Value> {
        let user = &self.users[u];
        let mut p = Map::new();
        p.insert("email".into(), json!(format!("u{u}@example.com")));
        p.insert("push_tokens".into(), json!(["tok"]));
        match user.tz {
            Some(Ok(z)) => {
                p.insert("timezone".into(), json!(ZONES[z]));
            }
            Some(Err(())) => {
                p.insert("timezone".into(), json!("Not/AZone"));
            }
            None => {}
        }
        if let Some(c) = user.unsubscribed {
            p.insert("subscriptions".into(), json!({ CATEGORIES[c]: false }));
        }
        p
    }

    /// The user's zone, worked out independently of the module.
    fn user_tz(&self, u: usize) -> chrono_tz::Tz {
        match self.users[u].tz {
            Some(Ok(z)) => tz(z),
            _ => tz(self.default_tz),
        }
    }

    fn base(&self) -> DateTime<Utc> {
        ts(BASES[self.base])
    }
}

#[derive(Debug, Clone, PartialEq)]
enum End {
    Sent(DateTime<Utc>),
    Suppressed(String),
    /// Still deferred when the driver stopped (see [`HORIZON_DAYS`]).
    Pending,
}

/// The driver stops this long after the base; only messages that quiet
/// hours covering the whole day hold for ever may still be pending.
const HORIZON_DAYS: i64 = 40;

#[derive(Debug, PartialEq)]
struct Run {
    ends: Vec<End>,
    /// Every decision in order: (message, now, decision).
    trace: Vec<(usize, DateTime<Utc>, Decision)>,
}

/// Drives the policies like the engine would; with `restart_after`, saves
/// the ledgers after that many decisions and continues on fresh policies.
fn drive(world: &World, restart_after: Option<usize>) -> Result<Run, TestCaseError> {
    let cfg = world.config();
    let mut policies = Policies::new(&cfg);
    let profiles: Vec<Map<String, Value>> =
        (0..world.users.len()).map(|u| world.profile(u)).collect();
    let mut logs: Vec<Vec<SentRecord>> = vec![Vec::new(); world.users.len()];
    let mut holds: Vec<Vec<Reservation>> = vec![Vec::new(); world.msgs.len()];
    let mut ends: Vec<Option<End>> = vec![None; world.msgs.len()];
    let mut trace = Vec::new();
    let base = world.base();
    // Oldest first, then higher priority, then entry order.
    let mut queue = BinaryHeap::new();
    for (i, m) in world.msgs.iter().enumerate() {
        let due = base + TimeDelta::seconds(m.due);
        queue.push(Reverse((due, due, Reverse(m.priority), i)));
    }
    let horizon = base + TimeDelta::days(HORIZON_DAYS);
    while let Some(Reverse((now, due, prio, i))) = queue.pop() {
        prop_assert!(trace.len() < 50_000, "the driver does not terminate");
        if now > horizon {
            break;
        }
        if restart_after == Some(trace.len()) {
            let saved = serde_json::to_string(&policies.snapshot()).expect("json");
            policies = Policies::new(&cfg);
            policies.restore(&serde_json::from_str(&saved).expect("json"));
        }
        let m = &world.msgs[i];
        let out = Outgoing {
            user: "u",
            profile: &profiles[m.user],
            journey: JOURNEYS[m.journey],
            category: CATEGORIES[m.category],
            priority: m.priority,
            channel: m.channel,
            due,
            reservations: &holds[i],
        };
        let d = policies.decide(&out, &logs[m.user], now);
        prop_assert!(ends[i].is_none(), "message {i} decided after it ended");
        match &d {
            Decision::Send => {
                ends[i] = Some(End::Sent(now));
                logs[m.user].push(SentRecord {
                    at: now,
                    channel: m.channel,
                    category: CATEGORIES[m.category].to_owned(),
                });
            }
            Decision::Defer {
                reason,
                until,
                reservations,
            } => {
                prop_assert!(
                    *until > now,
                    "deferral of {i} at {now} until {until} makes no progress"
                );
                let ok = ["frequency_cap:", "quiet_hours:", "throttle:"]
                    .iter()
                    .any(|p| reason.starts_with(p));
                prop_assert!(ok, "reason {reason}");
                if !reason.starts_with("throttle:") {
                    prop_assert!(reservations.is_empty());
                }
                holds[i] = reservations.clone();
                queue.push(Reverse((*until, due, prio, i)));
            }
            Decision::Suppress { reason } => {
                prop_assert!(!reason.starts_with("throttle:"), "a throttle dropped {i}");
                ends[i] = Some(End::Suppressed(reason.clone()));
            }
        }
        trace.push((i, now, d));
    }
    // Whatever is not ended is still in the queue: deferred, not lost.
    let ends: Vec<End> = ends
        .into_iter()
        .map(|e| e.unwrap_or(End::Pending))
        .collect();
    Ok(Run { ends, trace })
}

/// Whether `times` (any order) ever has more than `n` in a window of
/// length `per`: half-open `[t, t+per)` and `(t-per, t]` alike.
fn exceeds(
    mut times: Vec<DateTime<Utc>>,
    n: usize,
    per: TimeDelta,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    times.sort_unstable();
    times
        .windows(n + 1)
        .find(|w| w[n] - w[0] < per)
        .map(|w| (w[0], w[n]))
}

fn inside(start: TimeOfDay, end: TimeOfDay, local_secs: u32) -> bool {
    let (s, e) = (start.minutes() * 60, end.minutes() * 60);
    match s.cmp(&e) {
        std::cmp::Ordering::Less => s <= local_secs && local_secs < e,
        std::cmp::Ordering::Greater => local_secs >= s || local_secs < e,
        std::cmp::Ordering::Equal => false,
    }
}

fn check_invariants(world: &World, run: &Run) -> Result<(), TestCaseError> {
    let sends: Vec<(usize, DateTime<Utc>)> = run
        .ends
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            End::Sent(at) => Some((i, *at)),
            End::Suppressed(_) | End::Pending => None,
        })
        .collect();
    let category = |i: usize| CATEGORIES[world.msgs[i].category];

    // No cap is ever exceeded in any window (per user).
    for cap in &world.caps {
        for u in 0..world.users.len() {
            let times = sends
                .iter()
                .filter(|(i, _)| {
                    let m = &world.msgs[*i];
                    m.user == u && cap.scope.applies(m.channel, category(*i))
                })
                .map(|&(_, at)| at)
                .collect();
            let over = exceeds(times, cap.limit as usize, cap.per.to_chrono());
            prop_assert!(over.is_none(), "{} exceeded for user {u}: {over:?}", cap.id);
        }
    }

    // No throttle is ever exceeded in any half-open window.
    for t in &world.throttles {
        let times = sends
            .iter()
            .filter(|(i, _)| t.applies(world.msgs[*i].channel, JOURNEYS[world.msgs[*i].journey]))
            .map(|&(_, at)| at)
            .collect();
        let over = exceeds(times, t.rate.count as usize, t.rate.per.to_chrono());
        prop_assert!(over.is_none(), "{} exceeded: {over:?}", t.id);
    }

    // No non-exempt message is sent inside its user's quiet hours; one
    // dropped by quiet hours was inside them.
    let quiet_at = |q: &QuietHours, i: usize, at: DateTime<Utc>| {
        let zone = match q.zone {
            Zone::User => world.user_tz(world.msgs[i].user),
            Zone::Fixed(z) => z,
        };
        inside(
            q.start,
            q.end,
            at.with_timezone(&zone).num_seconds_from_midnight(),
        )
    };
    for &(i, at) in &sends {
        for q in &world.quiet {
            if q.scope.applies(world.msgs[i].channel, category(i)) {
                prop_assert!(
                    !quiet_at(q, i, at),
                    "message {i} sent at {at} inside {}",
                    q.id
                );
            }
        }
    }
    // A message still pending at the horizon is held by delay windows that
    // together cover every minute.
    let horizon = world.base() + TimeDelta::days(HORIZON_DAYS);
    for (i, e) in run.ends.iter().enumerate() {
        if *e != End::Pending {
            continue;
        }
        let last = run
            .trace
            .iter()
            .rev()
            .find(|(j, _, _)| *j == i)
            .map(|(_, _, d)| d);
        // Or it holds a slot past the horizon, one at which no delay window
        // holds it (throttle slots skip quiet hours): it goes then.
        if let Some(Decision::Defer { reason, until, .. }) = last {
            if reason.starts_with("throttle:") {
                // (Its slot is outside delay quiet hours: checked below.)
                prop_assert!(*until > horizon, "message {i} pending after {last:?}");
                continue;
            }
        }
        let by_quiet = matches!(last, Some(Decision::Defer { reason, .. }) if reason.starts_with("quiet_hours:"));
        prop_assert!(by_quiet, "message {i} pending after {last:?}");
        for minute in 0..2 * 1440 {
            let t = horizon - TimeDelta::minutes(minute);
            let covered = world.quiet.iter().any(|q| {
                q.action == PolicyAction::Delay
                    && q.scope.applies(world.msgs[i].channel, category(i))
                    && quiet_at(q, i, t)
            });
            prop_assert!(
                covered,
                "message {i} pending though {t} is outside every window"
            );
        }
    }
    for (k, (i, now, d)) in run.trace.iter().enumerate() {
        // A throttle never reserves a slot the message's delay quiet hours
        // would refuse (wasted, and every night alike: starvation). A drop
        // window there is not skipped: the message is suppressed at it.
        if let Decision::Defer { reason, until, .. } = d {
            let dropped = world.quiet.iter().any(|q| {
                q.action == PolicyAction::Drop
                    && q.scope.applies(world.msgs[*i].channel, category(*i))
                    && quiet_at(q, *i, *until)
            });
            if reason.starts_with("throttle:") && !dropped {
                let held = world.quiet.iter().find(|q| {
                    q.action == PolicyAction::Delay
                        && q.scope.applies(world.msgs[*i].channel, category(*i))
                        && quiet_at(q, *i, *until)
                });
                prop_assert!(held.is_none(), "decision {k}: slot {until} inside {held:?}");
            }
        }
        if let Decision::Suppress { reason } = d {
            if let Some(id) = reason.strip_prefix("quiet_hours:") {
                let q = world.quiet.iter().find(|q| q.id == id).expect("quiet id");
                prop_assert!(
                    q.action == PolicyAction::Drop && quiet_at(q, *i, *now),
                    "decision {k}"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    // Failing seeds are kept next to this file (proptests.proptest-regressions).
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_policies_hold_their_invariants(world in world()) {
        let run = drive(&world, None)?;
        check_invariants(&world, &run)?;
    }

    #[test]
    fn prop_restart_changes_nothing(world in world(), at in 0usize..200) {
        let straight = drive(&world, None)?;
        let restarted = drive(&world, Some(at % (straight.trace.len() + 1)))?;
        prop_assert_eq!(straight, restarted);
    }

    /// With one throttle and time moving forward, each message gets the
    /// earliest slot that keeps the bound, found by brute force.
    #[test]
    fn prop_throttle_slot_is_earliest(
        count in 1u32..5,
        per in 1u64..120,
        mut arrivals in prop::collection::vec(0i64..600, 1..60),
    ) {
        arrivals.sort_unstable();
        let base = ts("2026-03-02T10:00:00Z");
        let per_d = TimeDelta::seconds(per as i64);
        let cfg = config(chrono_tz::UTC, vec![], vec![], vec![throttle("t", Channel::Email, count, per, &[])]);
        let mut p = Policies::new(&cfg);
        let prof = super::tests::profile(None);
        let mut slots: Vec<DateTime<Utc>> = Vec::new();
        for a in arrivals {
            let now = base + TimeDelta::seconds(a);
            let m = super::tests::msg(&prof, Channel::Email, "m", "j", &[]);
            let got = match p.decide(&m, &[], now) {
                Decision::Send => now,
                Decision::Defer { until, .. } => until,
                Decision::Suppress { reason } => return Err(TestCaseError::fail(reason)),
            };
            let want = earliest(&slots, now, count as usize, per_d);
            prop_assert_eq!(got, want, "arrival at {} after {:?}", now, slots);
            slots.push(got);
        }
    }

    /// N messages due at one instant under `count per per` go in batches of
    /// `count`, one `per` apart.
    #[test]
    fn prop_throttle_batches(count in 1u32..6, per in 1u64..4000, n in 1usize..40) {
        let cfg = config(chrono_tz::UTC, vec![], vec![], vec![throttle("t", Channel::Push, count, per, &[])]);
        let mut p = Policies::new(&cfg);
        let prof = super::tests::profile(None);
        let now = ts("2026-03-02T10:00:00Z");
        for k in 0..n {
            let m = super::tests::msg(&prof, Channel::Push, "m", "j", &[]);
            let want = now + TimeDelta::seconds(((k / count as usize) as u64 * per) as i64);
            match p.decide(&m, &[], now) {
                Decision::Send => prop_assert_eq!(want, now),
                Decision::Defer { until, .. } => prop_assert_eq!(until, want),
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            }
        }
    }
}

/// The earliest instant at or after `now` that can join `slots` without
/// more than `count` in any half-open window of length `per`. The feasible
/// set is a union of intervals starting at `now` or at a slot plus `per`.
fn earliest(
    slots: &[DateTime<Utc>],
    now: DateTime<Utc>,
    count: usize,
    per: TimeDelta,
) -> DateTime<Utc> {
    let mut candidates: Vec<DateTime<Utc>> = std::iter::once(now)
        .chain(slots.iter().map(|&s| s + per).filter(|&c| c > now))
        .collect();
    candidates.sort_unstable();
    for c in candidates {
        let mut all = slots.to_vec();
        all.push(c);
        if exceeds(all, count, per).is_none() {
            return c;
        }
    }
    unreachable!("the last slot plus per is always feasible")
}

/// The generator is not vacuous: over a fixed sample every kind of
/// decision happens, deferred messages are released, and throttles defer.
#[test]
fn generator_exercises_every_rule() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut stats = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..300 {
        let w = world().new_tree(&mut runner).expect("world").current();
        let run = drive(&w, None).expect("drive");
        for (_, _, d) in &run.trace {
            let kind = match d {
                Decision::Send => "send",
                Decision::Defer { reason, .. } => reason.split(':').next().unwrap_or(""),
                Decision::Suppress { reason } => match reason.split(':').next() {
                    Some("frequency_cap") => "drop frequency_cap",
                    Some("quiet_hours") => "drop quiet_hours",
                    Some(other) => other,
                    None => "",
                },
            };
            *stats.entry(kind.to_owned()).or_default() += 1;
        }
    }
    for kind in [
        "send",
        "frequency_cap",
        "quiet_hours",
        "throttle",
        "drop frequency_cap",
        "drop quiet_hours",
        "unsubscribed",
    ] {
        assert!(
            stats.get(kind).copied().unwrap_or(0) >= 50,
            "{kind}: {stats:?}"
        );
    }
}
