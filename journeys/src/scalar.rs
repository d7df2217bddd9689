//! The scalar syntaxes of FORMAT.md §2: durations, percentages, times of
//! day, time zones, cron expressions and rates. Each parser returns a
//! message that says what is wrong and what is expected.

use std::fmt;
use std::str::FromStr;

use chrono::Weekday;
use serde::{Deserialize, Serialize};

/// A span of time, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Duration(pub u64);

impl Duration {
    pub fn secs(self) -> u64 {
        self.0
    }

    pub fn millis(self) -> i64 {
        (self.0 as i64).saturating_mul(1000)
    }

    /// The duration as a chrono delta (saturating: parsed durations are at
    /// most [`MAX_DURATION_SECS`](crate::limits::MAX_DURATION_SECS)).
    pub fn to_chrono(self) -> chrono::TimeDelta {
        i64::try_from(self.0)
            .ok()
            .and_then(chrono::TimeDelta::try_seconds)
            .unwrap_or(chrono::TimeDelta::MAX)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("w", 604_800),
            ("d", 86_400),
            ("h", 3_600),
            ("m", 60),
            ("s", 1),
        ] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

/// Parses `30s`, `15m`, `2h`, `3d`, `1w`, `1d12h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let help = "a duration is a number and a unit (s, m, h, d, w), e.g. `30s`, `2h`, `1d12h`";
    if t.is_empty() {
        return Err(format!("empty duration: {help}"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_rank = usize::MAX;
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let (size, rank) = match c {
            'w' => (604_800, 4),
            'd' => (86_400, 3),
            'h' => (3_600, 2),
            'm' => (60, 1),
            's' => (1, 0),
            _ => return Err(format!("invalid duration `{t}`: unexpected `{c}`; {help}")),
        };
        if digits.is_empty() {
            return Err(format!(
                "invalid duration `{t}`: unit `{c}` without a number; {help}"
            ));
        }
        if rank >= last_rank {
            return Err(format!(
                "invalid duration `{t}`: units must go from largest to smallest, each once"
            ));
        }
        last_rank = rank;
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid duration `{t}`: number too large"))?;
        total = n
            .checked_mul(size)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("invalid duration `{t}`: too large"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "invalid duration `{t}`: `{digits}` has no unit; {help}"
        ));
    }
    if total > crate::limits::MAX_DURATION_SECS {
        return Err(format!(
            "invalid duration `{t}`: too large, the longest duration is 36525d (100 years)"
        ));
    }
    Ok(Duration(total))
}

/// A percentage in basis points (1% = 100), so `2.5%` is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Percent(pub u32);

impl Percent {
    pub const HUNDRED: Percent = Percent(10_000);

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.as_f64())
    }
}

/// Parses `10%`, `2.5%` (a bare number is read as percent), 0–100, at most
/// two decimals.
pub fn parse_percent(text: &str) -> Result<Percent, String> {
    let t = text.trim();
    let n = t.strip_suffix('%').unwrap_or(t).trim();
    let v: f64 = n.parse().map_err(|_| {
        format!("invalid percentage `{t}`: expected a number from 0 to 100 with `%`, e.g. `10%`")
    })?;
    if !(0.0..=100.0).contains(&v) || !v.is_finite() {
        return Err(format!("percentage `{t}` is outside 0–100%"));
    }
    let bp = (v * 100.0).round();
    if (bp - v * 100.0).abs() > 1e-6 {
        return Err(format!("percentage `{t}` has more than two decimals"));
    }
    Ok(Percent(bp as u32))
}

/// A local time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimeOfDay {
    pub hour: u32,
    pub minute: u32,
}

impl TimeOfDay {
    pub fn to_naive(self) -> chrono::NaiveTime {
        chrono::NaiveTime::from_hms_opt(self.hour, self.minute, 0).unwrap_or(chrono::NaiveTime::MIN)
    }

    pub fn minutes(self) -> u32 {
        self.hour * 60 + self.minute
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// Parses `HH:MM` (24 h).
pub fn parse_time_of_day(text: &str) -> Result<TimeOfDay, String> {
    let t = text.trim();
    let bad =
        || format!("invalid time of day `{t}`: expected `HH:MM` (24 h), e.g. `08:00` or `21:30`");
    let (h, m) = t.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let hour: u32 = h.parse().map_err(|_| bad())?;
    let minute: u32 = m.parse().map_err(|_| bad())?;
    if hour > 23 || minute > 59 {
        return Err(bad());
    }
    Ok(TimeOfDay { hour, minute })
}

/// Where local time is read: the user's own zone or a fixed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Zone {
    User,
    Fixed(chrono_tz::Tz),
}

/// Parses an IANA zone name.
pub fn parse_timezone(text: &str) -> Result<chrono_tz::Tz, String> {
    let t = text.trim();
    chrono_tz::Tz::from_str(t).map_err(|_| {
        let names = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
        crate::diagnostic::with_suggestion(
            format!("unknown time zone `{t}`: expected an IANA name such as `Europe/Berlin`"),
            t,
            names,
        )
    })
}

/// Parses `user` or an IANA zone name.
pub fn parse_zone(text: &str) -> Result<Zone, String> {
    if text.trim() == "user" {
        Ok(Zone::User)
    } else {
        parse_timezone(text).map(Zone::Fixed)
    }
}

/// Parses a cron expression in the `cron` crate's syntax (seconds first).
pub fn parse_cron(text: &str) -> Result<cron::Schedule, String> {
    let t = text.trim();
    let fields = t.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!(
            "invalid cron `{t}`: expected 6 or 7 fields (sec min hour day-of-month month day-of-week [year]), found {fields}"
        ));
    }
    cron::Schedule::from_str(t).map_err(|e| {
        // The crate's message repeats the expression with a caret under
        // it, over several lines; the diagnostic shows where, so keep the
        // reason (its last line) only.
        let full = e.to_string();
        let reason = full
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && *l != "^" && *l != t)
            .unwrap_or("not a cron expression");
        format!("invalid cron `{t}`: {reason}")
    })
}

/// A rate: `n` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {}", self.count, self.per)
    }
}

/// Parses `1000 per minute`, `50 per second`, `10000 per hour`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let t = text.trim();
    let help = "a rate is `<n> per <second|minute|hour|day|week>`, e.g. `1000 per minute`";
    let parts: Vec<&str> = t.split_whitespace().collect();
    let [n, per, unit] = parts.as_slice() else {
        return Err(format!("invalid rate `{t}`: {help}"));
    };
    if *per != "per" {
        return Err(format!("invalid rate `{t}`: {help}"));
    }
    let count: u32 = n
        .parse()
        .map_err(|_| format!("invalid rate `{t}`: `{n}` is not a whole number; {help}"))?;
    if count == 0 {
        return Err(format!("invalid rate `{t}`: the count must be at least 1"));
    }
    // FORMAT.md §2: `<n> per <duration-unit>`: the units of a duration
    // (`s m h d w`) as well as their names, and `per 10m`.
    let named = match unit.trim_end_matches('s') {
        "second" | "sec" => Some(1),
        "minute" | "min" => Some(60),
        "hour" => Some(3_600),
        "day" => Some(86_400),
        "week" => Some(604_800),
        _ => None,
    };
    let secs = match named {
        Some(secs) => secs,
        None => {
            // A bare unit is one of it: `per m` is `per 1m`.
            let duration = if unit.len() == 1 {
                parse_duration(&format!("1{unit}"))
            } else {
                parse_duration(unit)
            };
            match duration {
                Ok(d) if d.0 > 0 => d.0,
                _ => {
                    let units = ["second", "minute", "hour", "day", "week"];
                    return Err(crate::diagnostic::with_suggestion(
                        format!("invalid rate `{t}`: unknown unit `{unit}`"),
                        unit,
                        units,
                    ));
                }
            }
        }
    };
    Ok(Rate {
        count,
        per: Duration(secs),
    })
}

/// When a user may enter a journey again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reentry {
    Never,
    Always,
    After(Duration),
}

/// Parses `never`, `always`, `after <duration>`.
pub fn parse_reentry(text: &str) -> Result<Reentry, String> {
    let t = text.trim();
    match t {
        "never" => Ok(Reentry::Never),
        "always" => Ok(Reentry::Always),
        _ => match t.strip_prefix("after ") {
            Some(d) => parse_duration(d).map(Reentry::After),
            None => Err(crate::diagnostic::with_suggestion(
                format!("invalid reentry `{t}`: expected `never`, `always` or `after <duration>`"),
                t,
                ["never", "always"],
            )),
        },
    }
}

/// Parses `Mon` … `Sun` (full names accepted).
pub fn parse_weekday(text: &str) -> Result<Weekday, String> {
    Weekday::from_str(text.trim()).map_err(|_| {
        crate::diagnostic::with_suggestion(
            format!(
                "invalid day `{}`: expected one of Mon, Tue, Wed, Thu, Fri, Sat, Sun",
                text.trim()
            ),
            text.trim(),
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration(30)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration(129_600)));
        assert_eq!(parse_duration("1w"), Ok(Duration(604_800)));
        assert!(parse_duration("12").is_err());
        assert!(parse_duration("1h1d").is_err());
        assert!(parse_duration("3 days").is_err());
        assert_eq!(Duration(129_600).to_string(), "1d12h");
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("10%"), Ok(Percent(1000)));
        assert_eq!(parse_percent("2.5%"), Ok(Percent(250)));
        assert!(parse_percent("120%").is_err());
        assert!(parse_percent("-1%").is_err());
        assert!(parse_percent("ten%").is_err());
    }

    #[test]
    fn times_rates_zones() {
        assert_eq!(
            parse_time_of_day("08:00"),
            Ok(TimeOfDay { hour: 8, minute: 0 })
        );
        assert!(parse_time_of_day("24:00").is_err());
        assert!(parse_time_of_day("8").is_err());
        assert_eq!(parse_rate("2 per minute").map(|r| r.per), Ok(Duration(60)));
        // `<n> per <duration-unit>` (FORMAT.md §2): the bare units too.
        for (unit, secs) in [
            ("s", 1),
            ("m", 60),
            ("h", 3_600),
            ("d", 86_400),
            ("w", 604_800),
        ] {
            assert_eq!(
                parse_rate(&format!("50 per {unit}")).map(|r| (r.count, r.per)),
                Ok((50, Duration(secs))),
                "per {unit}"
            );
        }
        assert_eq!(parse_rate("50 per seconds").map(|r| r.per), Ok(Duration(1)));
        assert_eq!(parse_rate("3 per 10m").map(|r| r.per), Ok(Duration(600)));
        assert!(parse_rate("3 per x").is_err());
        assert!(parse_rate("3 per 0s").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_timezone("Europe/Berlin").is_ok());
        let e = parse_timezone("Europe/Berln").unwrap_err();
        assert!(e.contains("did you mean `Europe/Berlin`"), "{e}");
        assert!(parse_cron("0 0 9 * * Mon *").is_ok());
        assert!(parse_cron("0 9 * * Mon").is_err());
        // One line, with the crate's reason and without its caret drawing.
        let e = parse_cron("0 0 9 * * Mon-Fry *").unwrap_err();
        assert_eq!(
            e,
            "invalid cron `0 0 9 * * Mon-Fry *`: 'Fry' is not a valid day of the week."
        );
        for bad in ["0 0 25 * * Mon *", "x 0 9 * * Mon *", "0 0 9 * * Mon 1 2"] {
            let e = parse_cron(bad).unwrap_err();
            assert!(!e.contains('\n') && !e.ends_with(": "), "{e}");
        }
        assert_eq!(
            parse_reentry("after 7d"),
            Ok(Reentry::After(Duration(604_800)))
        );
    }
}
