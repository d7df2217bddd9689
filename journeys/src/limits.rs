//! The bounds sluice puts on input it does not control: config
//! repositories written by many people and events from other systems.
//! Each limit has its own diagnostic code or error message, and all of
//! them are listed with their values in `docs/limits.md`.

use chrono::{DateTime, TimeDelta, Utc};

/// Nodes a file's YAML aliases may expand to, in total ("billion
/// laughs"): each `*alias` costs the size of the node it copies.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// How deeply YAML mappings and lists may nest. Every recursive walk of a
/// document (conditions, JSON conversion, deserialisation) is bounded by
/// it.
pub const MAX_NESTING: usize = 64;

/// How deeply Handlebars blocks (`{{#if}}`, `{{#each}}`, …) may nest in
/// one template text.
pub const MAX_TEMPLATE_NESTING: usize = 32;

/// The size of one YAML file of a repository.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The size of one template body file (`text_file`, `html_file`).
pub const MAX_BODY_BYTES: u64 = 1 << 20;

/// The documents of one repository.
pub const MAX_DOCUMENTS: usize = 100_000;

/// The longest duration (`wait: 100w`, `within`, `--until +…`): 100
/// years. Longer ones are typos, and they would overflow the calendar.
pub const MAX_DURATION_SECS: u64 = 36_525 * 86_400;

/// The longest stretch of virtual time `simulate` and a JourneyTest may
/// run: 100 years.
pub const MAX_HORIZON_DAYS: i64 = 36_525;

/// The decision lines one JourneyTest may produce before it is stopped.
pub const MAX_TEST_LINES: usize = 100_000;

/// The bad lines of an event file reported before the check stops.
pub const MAX_EVENT_ERRORS: usize = 100;

/// The output of one rendered template text.
pub const MAX_RENDER_BYTES: usize = 1 << 20;

/// `{{#each}}` iterations in the rendering of one template text, nested
/// loops counting every inner iteration.
pub const MAX_RENDER_ITERATIONS: u64 = 100_000;

/// The earliest instant an event or a simulation may have.
pub fn min_instant() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH
}

/// The latest instant an event or a simulation may have:
/// 9999-12-31T23:59:59Z, the last one RFC 3339 can write.
pub fn max_instant() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Checks that an instant lies in the range sluice accepts.
pub fn check_instant(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if t < min_instant() || t > max_instant() {
        return Err(format!(
            "`{}` is out of range: timestamps lie between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        ));
    }
    Ok(t)
}

/// `start + by`, when it is a valid instant.
pub fn add(start: DateTime<Utc>, by: TimeDelta) -> Result<DateTime<Utc>, String> {
    start
        .checked_add_signed(by)
        .filter(|t| *t <= max_instant())
        .ok_or_else(|| {
            "out of range: the result is after 9999-12-31T23:59:59Z, the latest instant".to_owned()
        })
}

/// Checks that a simulation from `start` to `until` runs forward and
/// within [`MAX_HORIZON_DAYS`]; the message reads after "the test" or
/// "the simulation".
pub fn check_horizon(start: DateTime<Utc>, until: DateTime<Utc>) -> Result<(), String> {
    if until < start {
        return Err(format!(
            "ends at {}, before its start at {}",
            until.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            start.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        ));
    }
    if until - start > TimeDelta::days(MAX_HORIZON_DAYS) {
        return Err(format!(
            "runs {} days of virtual time; the limit is {MAX_HORIZON_DAYS} days (100 years)",
            (until - start).num_days()
        ));
    }
    Ok(())
}

/// The default end of a simulation: 30 days after `last`, but never past
/// the latest instant.
pub fn default_until(last: DateTime<Utc>) -> DateTime<Utc> {
    add(last, TimeDelta::days(30)).unwrap_or_else(|_| max_instant().max(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_horizons() {
        assert!(check_instant(max_instant()).is_ok());
        assert!(check_instant(min_instant() - TimeDelta::seconds(1)).is_err());
        assert!(add(max_instant(), TimeDelta::seconds(1)).is_err());
        assert_eq!(default_until(max_instant()), max_instant());
        let start = min_instant();
        assert!(check_horizon(start, start + TimeDelta::days(MAX_HORIZON_DAYS)).is_ok());
        assert!(check_horizon(start, start + TimeDelta::days(MAX_HORIZON_DAYS + 1)).is_err());
        assert!(check_horizon(start + TimeDelta::days(1), start).is_err());
        assert_eq!(
            max_instant().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "9999-12-31T23:59:59Z"
        );
    }
}
