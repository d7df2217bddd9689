//! Canary guards (DEPLOY.md §4): `failed_rate < 2%` bounds the canary's
//! rate; `suppressed_rate < +50%` bounds it relative to the stable
//! version's over the same period. Parsed once at apply; evaluated on the
//! send counts of both versions since the canary started.

use serde_json::{json, Value};

use crate::store::deployments::SendCounts;

/// The rates a guard can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// failed / sends
    Failed,
    /// unsubscribes from the version's messages / sent
    Unsubscribe,
    /// suppressed / sends
    Suppressed,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Failed => "failed_rate",
            Metric::Unsubscribe => "unsubscribe_rate",
            Metric::Suppressed => "suppressed_rate",
        }
    }

    /// The rate in `c`; `None` when nothing was counted that it divides by.
    pub fn rate(self, c: &SendCounts) -> Option<f64> {
        let (num, den) = match self {
            Metric::Failed => (c.failed, c.sends()),
            Metric::Unsubscribe => (c.unsubscribed, c.sent),
            Metric::Suppressed => (c.suppressed, c.sends()),
        };
        (den > 0).then(|| num as f64 / den as f64)
    }
}

/// A bound on a canary's rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// The canary's rate stays below this fraction.
    Absolute(f64),
    /// The canary's rate stays below the stable's times (1 + this).
    Relative(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    pub metric: Metric,
    pub bound: Bound,
    /// As written.
    pub text: String,
}

/// Parses one guard (`failed_rate < 2%`, `suppressed_rate < +50%`).
pub fn parse(text: &str) -> Result<Guard, String> {
    let t = text.trim();
    let bad = |why: &str| {
        format!(
            "guard `{t}` does not parse: {why} (write e.g. `failed_rate < 2%` or `suppressed_rate < +50%`; rates: failed_rate, unsubscribe_rate, suppressed_rate)"
        )
    };
    let Some((name, bound)) = t.split_once('<') else {
        return Err(bad("expected `<`"));
    };
    let metric = match name.trim() {
        "failed_rate" => Metric::Failed,
        "unsubscribe_rate" => Metric::Unsubscribe,
        "suppressed_rate" => Metric::Suppressed,
        other => return Err(bad(&format!("unknown rate `{other}`"))),
    };
    let b = bound.trim();
    let (relative, number) = match b.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, b),
    };
    let Some(number) = number.trim().strip_suffix('%') else {
        return Err(bad("the bound is a percentage ending in `%`"));
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| bad(&format!("`{number}` is not a number")))?;
    if !value.is_finite() || value < 0.0 || (!relative && value > 100.0) {
        return Err(bad("the bound is out of range"));
    }
    let fraction = value / 100.0;
    Ok(Guard {
        metric,
        bound: if relative {
            Bound::Relative(fraction)
        } else {
            Bound::Absolute(fraction)
        },
        text: t.to_owned(),
    })
}

/// Parses a `--guard` list: guards separated by commas.
pub fn parse_list(text: &str) -> Result<Vec<Guard>, String> {
    text.split(',')
        .filter(|g| !g.trim().is_empty())
        .map(parse)
        .collect()
}

/// A guard's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough sends on one of the versions yet.
    Pending,
    Holds,
    Broken,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Pending => "pending",
            Verdict::Holds => "ok",
            Verdict::Broken => "broken",
        }
    }
}

/// Evaluates `g` on both versions' counts since the canary started.
pub fn check(g: &Guard, canary: &SendCounts, stable: &SendCounts, min_sends: u64) -> Verdict {
    if canary.sends() < min_sends || stable.sends() < min_sends {
        return Verdict::Pending;
    }
    let c = g.metric.rate(canary).unwrap_or(0.0);
    let holds = match g.bound {
        Bound::Absolute(limit) => c < limit,
        Bound::Relative(more) => {
            let s = g.metric.rate(stable).unwrap_or(0.0);
            // A relative bound on a zero stable rate holds only at zero.
            c < s * (1.0 + more) || (c == 0.0 && s == 0.0)
        }
    };
    if holds {
        Verdict::Holds
    } else {
        Verdict::Broken
    }
}

/// Both rates of a guard, for the audit entry and `canary status`.
pub fn rates(g: &Guard, canary: &SendCounts, stable: &SendCounts) -> Value {
    json!({
        "guard": g.text,
        "canary_rate": g.metric.rate(canary),
        "stable_rate": g.metric.rate(stable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(sent: u64, failed: u64, suppressed: u64) -> SendCounts {
        SendCounts {
            sent,
            failed,
            suppressed,
            ..SendCounts::default()
        }
    }

    #[test]
    fn parses_absolute_and_relative_bounds() {
        let gs = parse_list("failed_rate < 2%, unsubscribe_rate < 0.5%, suppressed_rate < +50%")
            .expect("parses");
        assert_eq!(gs.len(), 3);
        assert_eq!(gs[0].bound, Bound::Absolute(0.02));
        assert_eq!(gs[1].metric, Metric::Unsubscribe);
        assert_eq!(gs[2].bound, Bound::Relative(0.5));
    }

    #[test]
    fn bad_guards_are_named() {
        for (text, says) in [
            ("failed_rate > 2%", "expected `<`"),
            ("bounce_rate < 2%", "unknown rate `bounce_rate`"),
            ("failed_rate < 2", "ending in `%`"),
            ("failed_rate < x%", "not a number"),
            ("failed_rate < 200%", "out of range"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(says) && e.contains(text), "{text}: {e}");
        }
    }

    #[test]
    fn guards_wait_for_min_sends_then_compare() {
        let g = parse("failed_rate < 2%").expect("parses");
        assert_eq!(
            check(&g, &counts(40, 50, 0), &counts(500, 0, 0), 100),
            Verdict::Pending
        );
        assert_eq!(
            check(&g, &counts(99, 1, 0), &counts(500, 0, 0), 100),
            Verdict::Holds
        );
        assert_eq!(
            check(&g, &counts(90, 10, 0), &counts(500, 0, 0), 100),
            Verdict::Broken
        );
        let r = parse("suppressed_rate < +50%").expect("parses");
        // stable 10%, canary 14%: below 15%.
        assert_eq!(
            check(&r, &counts(86, 0, 14), &counts(90, 0, 10), 100),
            Verdict::Holds
        );
        assert_eq!(
            check(&r, &counts(80, 0, 20), &counts(90, 0, 10), 100),
            Verdict::Broken
        );
        assert_eq!(
            check(&r, &counts(100, 0, 0), &counts(100, 0, 0), 100),
            Verdict::Holds
        );
    }
}
