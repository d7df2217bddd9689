//! Step 3: quiet hours.
//!
//! A window is `[start, end)` in local wall-clock time of its zone (the
//! user's, or a fixed one); `start > end` crosses midnight; `start == end`
//! is empty (never quiet). "Inside" looks only at the local time of day,
//! so on a fall-back night a wall-clock time that occurs twice is inside
//! both times. A delayed message is released at the first instant after
//! `now` at which the local clock reads `end`; when `end` does not exist
//! that day (spring forward) at the instant the clock jumps past it; when it
//! exists twice (fall back) at the earlier of the two that is after `now`.
//! When several windows hold a message a `drop` wins over any `delay`;
//! among `delay`s the latest release wins, and the release moves on while
//! it falls inside another `delay` window (abutting windows release once).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use journeys::compiled::{PolicyAction, QuietHours};
use journeys::scalar::Zone;

use super::{channel_index, user_timezone, Decision, Outgoing};

#[derive(Debug)]
struct Rule {
    def: QuietHours,
    start: NaiveTime,
    end: NaiveTime,
    /// `quiet_hours:<id>`.
    reason: String,
}

impl Rule {
    fn contains(&self, t: NaiveTime) -> bool {
        window_contains(self.start, self.end, t)
    }
}

/// Whether local time of day `t` is in the window `[start, end)` (crossing
/// midnight when `start > end`, empty when equal).
pub(super) fn window_contains(start: NaiveTime, end: NaiveTime, t: NaiveTime) -> bool {
    if start < end {
        start <= t && t < end
    } else if start > end {
        t >= start || t < end
    } else {
        false
    }
}

#[derive(Debug)]
pub(super) struct Quiet {
    rules: Vec<Rule>,
    /// Per channel, the rules whose scope includes it, in configuration order.
    by_channel: [Vec<usize>; 3],
}

impl Quiet {
    pub(super) fn new(defs: &[QuietHours]) -> Self {
        let mut by_channel: [Vec<usize>; 3] = Default::default();
        let mut rules = Vec::with_capacity(defs.len());
        for def in defs {
            if def.start == def.end {
                continue; // empty window: never quiet
            }
            let i = rules.len();
            for ch in journeys::compiled::Channel::ALL {
                if def
                    .scope
                    .channels
                    .as_ref()
                    .is_none_or(|cs| cs.contains(&ch))
                {
                    by_channel[channel_index(ch)].push(i);
                }
            }
            rules.push(Rule {
                def: def.clone(),
                start: def.start.to_naive(),
                end: def.end.to_naive(),
                reason: format!("quiet_hours:{}", def.id),
            });
        }
        Quiet { rules, by_channel }
    }

    pub(super) fn check(
        &self,
        msg: &Outgoing<'_>,
        now: DateTime<Utc>,
        default_tz: Tz,
    ) -> Option<Decision> {
        Some(match self.hold(msg, now, default_tz)? {
            Hold::Drop(i) => Decision::Suppress {
                reason: self.rules[i].reason.clone(),
            },
            Hold::Delay(until, i) => Decision::Defer {
                reason: self.rules[i].reason.clone(),
                until,
                reservations: Vec::new(),
            },
        })
    }

    /// `quiet_hours:<id>` of the rule [`Hold`] names.
    pub(super) fn reason(&self, rule: usize) -> &str {
        &self.rules[rule].reason
    }

    /// Whether a window holds `msg` at `now`, and how. Allocates nothing:
    /// the throttles ask it of every instant they would reserve.
    pub(super) fn hold(
        &self,
        msg: &Outgoing<'_>,
        now: DateTime<Utc>,
        default_tz: Tz,
    ) -> Option<Hold> {
        let rules = &self.by_channel[channel_index(msg.channel)];
        let mut user_tz: Option<Tz> = None;
        let mut zone = |rule: &Rule| match rule.def.zone {
            Zone::Fixed(tz) => tz,
            Zone::User => *user_tz.get_or_insert_with(|| user_timezone(msg.profile, default_tz)),
        };
        // The window's end if `rule` holds the message at `t`.
        let mut holds = |rule: &Rule, t: DateTime<Utc>| {
            let tz = zone(rule);
            let local = t.with_timezone(&tz).naive_local();
            rule.contains(local.time())
                .then(|| next_local(tz, local.date(), rule.end, t))
        };
        let mut delay: Option<(DateTime<Utc>, usize)> = None;
        for &i in rules {
            let rule = &self.rules[i];
            if !rule.def.scope.applies(msg.channel, msg.category) {
                continue;
            }
            let Some(until) = holds(rule, now) else {
                continue;
            };
            if rule.def.action == PolicyAction::Drop {
                return Some(Hold::Drop(i));
            }
            if delay.is_none_or(|(u, _)| until > u) {
                delay = Some((until, i));
            }
        }
        let (mut until, reason) = delay?;
        // Windows that abut or overlap (22:00–00:00 and 00:00–07:00) release
        // once, at the end of the last: move to the first instant no delay
        // window holds. Bounded: windows covering the whole day release
        // every few days to be checked again.
        for _ in 0..8 {
            let mut next = until;
            for &i in rules {
                let rule = &self.rules[i];
                if rule.def.action == PolicyAction::Delay
                    && rule.def.scope.applies(msg.channel, msg.category)
                {
                    if let Some(end) = holds(rule, until) {
                        next = next.max(end);
                    }
                }
            }
            if next == until {
                break;
            }
            until = next;
        }
        Some(Hold::Delay(until, reason))
    }
}

/// How quiet hours hold a message at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// A `drop` window (the rule's index).
    Drop(usize),
    /// `delay` windows, releasing at the instant given (the rule whose
    /// window ends last first holds it).
    Delay(DateTime<Utc>, usize),
}

/// The first instant after `now` at which the local clock of `tz` reads
/// `time`, looking from local date `from` on: the earlier of two when the
/// time occurs twice, the end of the gap when it does not occur.
pub(super) fn next_local(
    tz: Tz,
    from: NaiveDate,
    time: NaiveTime,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let mut day = from;
    // A local date can be skipped whole (Pacific/Apia, 2011-12-30): a few
    // days always contain the next occurrence.
    for _ in 0..4 {
        let ndt = day.and_time(time);
        match tz.from_local_datetime(&ndt) {
            chrono::LocalResult::Single(t) => {
                let t = t.with_timezone(&Utc);
                if t > now {
                    return t;
                }
            }
            chrono::LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                let (early, late) = if a <= b { (a, b) } else { (b, a) };
                if early > now {
                    return early;
                }
                if late > now {
                    return late;
                }
            }
            chrono::LocalResult::None => {
                let t = gap_end(tz, ndt);
                if t > now {
                    return t;
                }
            }
        }
        match day.succ_opt() {
            Some(d) => day = d,
            None => break,
        }
    }
    // Unreachable with real zones; still guarantee progress.
    super::add(now, TimeDelta::hours(24))
}

/// For a local time `ndt` that does not exist in `tz` (a spring-forward
/// gap): the first instant whose local time is later than `ndt`, i.e. the
/// instant of the transition.
pub(super) fn gap_end(tz: Tz, ndt: NaiveDateTime) -> DateTime<Utc> {
    let offset_at =
        |utc: NaiveDateTime| i64::from(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc());
    let local_at = |ts: i64| {
        DateTime::from_timestamp(ts, 0)
            .map(|t| t.with_timezone(&tz).naive_local())
            .unwrap_or(NaiveDateTime::MAX)
    };
    let day = TimeDelta::days(1);
    let (Some(before), Some(after)) = (ndt.checked_sub_signed(day), ndt.checked_add_signed(day))
    else {
        return ndt.and_utc();
    };
    let base = ndt.and_utc().timestamp();
    // Read with the offset after the gap (larger): before the transition;
    // with the offset before it: after the transition.
    let mut lo = base - offset_at(after);
    let mut hi = base - offset_at(before);
    if lo > hi {
        std::mem::swap(&mut lo, &mut hi);
    }
    if local_at(hi) >= ndt && local_at(lo) < ndt {
        // local_at(lo) < ndt <= local_at(hi), monotone across one transition.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if local_at(mid) >= ndt {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        return DateTime::from_timestamp(hi, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
    }
    // Several transitions within a day (never seen in practice): walk
    // forward minute by minute to the first local time that exists.
    let mut probe = ndt;
    for _ in 0..(2 * 24 * 60) {
        probe += TimeDelta::minutes(1);
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            return t.with_timezone(&Utc);
        }
    }
    ndt.and_utc()
}
