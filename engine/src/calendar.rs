//! Local time: which zone a user lives in, the next local time of day for
//! `wait_until`, the next firing of a cron schedule. Every function is pure
//! and takes "now" as an argument.

use std::str::FromStr;

use chrono::{Datelike, LocalResult, NaiveDateTime, TimeZone, Weekday};
use chrono_tz::Tz;

use journeys::scalar::{TimeOfDay, Zone};

use crate::clock::{from_millis, Millis};
use crate::store::profile::Profile;

/// The zone of a profile: its `timezone` attribute when that is a valid
/// IANA name, else the Project's default.
pub fn user_zone(profile: &dyn Profile, default: Tz) -> Tz {
    profile
        .text("timezone")
        .and_then(|s| Tz::from_str(s).ok())
        .unwrap_or(default)
}

/// Resolves a step's or policy's [`Zone`] for one user.
pub fn resolve(zone: Zone, profile: &dyn Profile, default: Tz) -> Tz {
    match zone {
        Zone::Fixed(tz) => tz,
        Zone::User => user_zone(profile, default),
    }
}

/// The UTC instant of a local date and time. In a gap (the hour skipped when
/// clocks go forward) the wall time does not exist: the first instant after
/// the gap is used. In an overlap (clocks go back) the earlier instant.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> Option<Millis> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        LocalResult::Ambiguous(a, b) => Some(a.timestamp_millis().min(b.timestamp_millis())),
        LocalResult::None => {
            // Walk forward minute by minute to the end of the gap (gaps are
            // at most a few hours long).
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe += chrono::TimeDelta::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return Some(t.timestamp_millis());
                }
            }
            None
        }
    }
}

/// The first instant at or after `now` whose local time in `tz` is `time`,
/// on one of `days` (any day when empty). Correct across daylight-saving
/// changes: the next 08:00 in New York after 2026-03-07 23:00 local is
/// 2026-03-08T12:00Z. A time the clocks repeat is its first occurrence,
/// or its second when `now` lies between the two.
pub fn next_local_time(now: Millis, tz: Tz, time: TimeOfDay, days: &[Weekday]) -> Millis {
    let local_now = from_millis(now).with_timezone(&tz);
    let today = local_now.date_naive();
    for offset in 0..=8 {
        let Some(date) = today.checked_add_days(chrono::Days::new(offset)) else {
            break;
        };
        if !days.is_empty() && !days.contains(&date.weekday()) {
            continue;
        }
        let local = date.and_time(time.to_naive());
        let at = match tz.from_local_datetime(&local) {
            LocalResult::Ambiguous(a, b) => {
                let (first, second) = (a.min(b).timestamp_millis(), a.max(b).timestamp_millis());
                Some(if first >= now { first } else { second })
            }
            _ => local_to_utc(tz, local),
        };
        if let Some(at) = at {
            if at >= now {
                return at;
            }
        }
    }
    // Unreachable for valid input; never schedule in the past.
    now
}

/// Local firings [`next_cron`] looks at before giving up: enough to step
/// over a repeated hour of an every-second schedule.
const CRON_CANDIDATES: usize = 10_000;

/// The next firing of `schedule`, strictly after `now`, read in `tz`.
///
/// The schedule is walked in local wall-clock time and each firing placed
/// like a `wait_until` time ([`local_to_utc`]): a firing whose local time a
/// daylight-saving gap skips fires at the first instant after the gap (a
/// weekly 02:30 in Berlin fires at 03:00 CEST on 2026-03-29 rather than not
/// at all), and one whose local time the clocks repeat fires once, at its
/// first occurrence.
pub fn next_cron(schedule: &cron::Schedule, tz: Tz, now: Millis) -> Option<Millis> {
    let wall = from_millis(now).with_timezone(&tz).naive_local().and_utc();
    schedule
        .after(&wall)
        .take(CRON_CANDIDATES)
        .filter_map(|local| local_to_utc(tz, local.naive_utc()))
        .find(|&at| at > now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{format_ts, to_millis};

    fn ms(s: &str) -> Millis {
        to_millis(
            chrono::DateTime::parse_from_rfc3339(s)
                .expect("ts")
                .with_timezone(&chrono::Utc),
        )
    }

    #[test]
    fn wait_until_across_spring_forward() {
        let ny: Tz = "America/New_York".parse().expect("tz");
        // 2026-03-07 23:00 EST = 2026-03-08T04:00Z; next 08:00 is EDT.
        let at = next_local_time(
            ms("2026-03-08T04:00:00Z"),
            ny,
            TimeOfDay { hour: 8, minute: 0 },
            &[],
        );
        assert_eq!(format_ts(at), "2026-03-08T12:00:00Z");
        // Berlin 2026-03-29: 02:30 does not exist; the first instant after the gap is 03:00 CEST.
        let berlin: Tz = "Europe/Berlin".parse().expect("tz");
        let at = next_local_time(
            ms("2026-03-28T23:00:00Z"),
            berlin,
            TimeOfDay {
                hour: 2,
                minute: 30,
            },
            &[],
        );
        assert_eq!(format_ts(at), "2026-03-29T01:00:00Z");
        // Autumn: 02:30 happens twice on 2026-10-25, the first one counts.
        let at = next_local_time(
            ms("2026-10-24T23:00:00Z"),
            berlin,
            TimeOfDay {
                hour: 2,
                minute: 30,
            },
            &[],
        );
        assert_eq!(format_ts(at), "2026-10-25T00:30:00Z");
        // Between the two 02:30s (02:10 CET, the second 02:10): the next time
        // the clock reads 02:30 is 20 minutes later, not the next day.
        let at = next_local_time(
            ms("2026-10-25T01:10:00Z"),
            berlin,
            TimeOfDay {
                hour: 2,
                minute: 30,
            },
            &[],
        );
        assert_eq!(format_ts(at), "2026-10-25T01:30:00Z");
        // After both, the next day.
        let at = next_local_time(
            ms("2026-10-25T01:31:00Z"),
            berlin,
            TimeOfDay {
                hour: 2,
                minute: 30,
            },
            &[],
        );
        assert_eq!(format_ts(at), "2026-10-26T01:30:00Z");
    }

    #[test]
    fn wait_until_days_and_now() {
        let berlin: Tz = "Europe/Berlin".parse().expect("tz");
        let ten = TimeOfDay {
            hour: 10,
            minute: 0,
        };
        // Wednesday 2026-03-04 10:00 Berlin = 09:00Z: exactly now, no wait.
        assert_eq!(
            format_ts(next_local_time(
                ms("2026-03-04T09:00:00Z"),
                berlin,
                ten,
                &[]
            )),
            "2026-03-04T09:00:00Z"
        );
        let weekend = [Weekday::Sat, Weekday::Sun];
        let at = next_local_time(ms("2026-03-09T09:00:00Z"), berlin, ten, &weekend);
        assert_eq!(format_ts(at), "2026-03-14T09:00:00Z");
    }

    #[test]
    fn cron_in_each_zone() {
        let s = journeys::scalar::parse_cron("0 0 9 * * Mon *").expect("cron");
        let start = ms("2026-03-02T01:00:00Z");
        let zone = |n: &str| -> Tz { n.parse().expect("tz") };
        let next = |tz| format_ts(next_cron(&s, tz, start).expect("fires"));
        assert_eq!(next(zone("Europe/Berlin")), "2026-03-02T08:00:00Z");
        assert_eq!(next(zone("America/New_York")), "2026-03-02T14:00:00Z");
        assert_eq!(next(zone("Asia/Tokyo")), "2026-03-09T00:00:00Z");
        assert_eq!(
            format_ts(
                next_cron(&s, zone("Europe/Berlin"), ms("2026-03-02T08:00:00Z")).expect("fires")
            ),
            "2026-03-09T08:00:00Z",
            "strictly after now"
        );
        let profile = serde_json::json!({"timezone": "Nowhere/Else"});
        assert_eq!(
            user_zone(&profile, zone("Europe/Berlin")),
            zone("Europe/Berlin")
        );
    }

    #[test]
    fn cron_across_daylight_saving_changes() {
        let s = journeys::scalar::parse_cron("0 30 2 * * Sun *").expect("cron");
        let berlin: Tz = "Europe/Berlin".parse().expect("tz");
        let ny: Tz = "America/New_York".parse().expect("tz");
        let next = |tz, now: &str| format_ts(next_cron(&s, tz, ms(now)).expect("fires"));
        // Spring forward: 02:30 does not exist that Sunday; the firing comes
        // at the first instant after the gap, 03:00 CEST / 03:00 EDT.
        assert_eq!(next(berlin, "2026-03-22T01:30:00Z"), "2026-03-29T01:00:00Z");
        assert_eq!(next(berlin, "2026-03-29T01:00:00Z"), "2026-04-05T00:30:00Z");
        assert_eq!(next(ny, "2026-03-01T07:30:00Z"), "2026-03-08T07:00:00Z");
        assert_eq!(next(ny, "2026-03-08T07:00:00Z"), "2026-03-15T06:30:00Z");
        // Fall back: 02:30 happens twice; it fires once, the first time.
        assert_eq!(next(berlin, "2026-10-18T00:30:00Z"), "2026-10-25T00:30:00Z");
        assert_eq!(next(berlin, "2026-10-25T00:30:00Z"), "2026-11-01T01:30:00Z");
        assert_eq!(next(berlin, "2026-10-25T01:10:00Z"), "2026-11-01T01:30:00Z");
        // An hourly schedule steps over the repeated hour without firing twice
        // and through the skipped one.
        let hourly = journeys::scalar::parse_cron("0 0 * * * * *").expect("cron");
        let fire = |now: &str| format_ts(next_cron(&hourly, berlin, ms(now)).expect("fires"));
        assert_eq!(fire("2026-10-25T00:00:00Z"), "2026-10-25T02:00:00Z");
        assert_eq!(fire("2026-03-29T00:00:00Z"), "2026-03-29T01:00:00Z");
        assert_eq!(fire("2026-03-29T01:00:00Z"), "2026-03-29T02:00:00Z");
    }
}
