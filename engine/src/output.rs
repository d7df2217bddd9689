//! What the engine reports: one [`Line`] per decision, exactly the JSON
//! lines of CLI.md's `simulate` output, and a [`Summary`] of them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::{format_ts, Millis};

/// The kinds of line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Entered,
    EntrySkipped,
    Send,
    Exited,
    Completed,
    Converted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Entered => "entered",
            Kind::EntrySkipped => "entry_skipped",
            Kind::Send => "send",
            Kind::Exited => "exited",
            Kind::Completed => "completed",
            Kind::Converted => "converted",
        }
    }
}

/// The outcome of a `send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sent,
    Deferred,
    Suppressed,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Deferred => "deferred",
            Outcome::Suppressed => "suppressed",
            Outcome::Failed => "failed",
        }
    }
}

fn ts<S: serde::Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ts(*ms))
}

fn opt_ts<S: serde::Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&format_ts(*ms)),
        None => s.serialize_none(),
    }
}

/// One decision, serialised with the keys of CLI.md in its order; absent
/// keys are omitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    #[serde(serialize_with = "ts")]
    pub at: Millis,
    pub kind: Kind,
    pub user: String,
    pub journey: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holdout: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "opt_ts")]
    pub until: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Not printed. On `entered` and `converted` lines of a journey with a
    /// goal: the instance whose conversion is watched (the report journal
    /// keeps it, [`crate::store::journal`]).
    #[serde(skip)]
    pub goal: Option<GoalMark>,
    /// Not printed. For log lines, when `reason` quotes a provider's
    /// answer (a webhook receiver's body may echo the message): the
    /// reason without it. Logs never carry a message body (RUN.md §6).
    #[serde(skip)]
    pub logged_reason: Option<String>,
}

/// The instance a goal watch belongs to: its version and entry time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoalMark {
    pub version: u32,
    pub entered_at: Millis,
}

impl Line {
    pub fn new(at: Millis, kind: Kind, user: &str, journey: &str) -> Self {
        Line {
            at,
            kind,
            user: user.to_owned(),
            journey: journey.to_owned(),
            version: None,
            holdout: None,
            step: None,
            channel: None,
            template: None,
            outcome: None,
            reason: None,
            until: None,
            key: None,
            goal: None,
            logged_reason: None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Where lines go: stdout for `simulate`, a vector for `test`, metrics and
/// logs for `run`.
pub trait Sink {
    fn line(&mut self, line: Line);
    /// Makes every line so far reach its destination (a kept store commits
    /// only after its lines are out: a crash after a commit must not lose a
    /// decision that the restart will not make again).
    fn flush(&mut self) {}
    /// The lines so far are in a commit that succeeded (metrics count only
    /// what is durable).
    fn committed(&mut self) {}
}

impl Sink for Vec<Line> {
    fn line(&mut self, line: Line) {
        self.push(line);
    }
}

/// Discards lines.
pub struct Discard;

impl Sink for Discard {
    fn line(&mut self, _: Line) {}
}

/// Counts per kind and outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub events: u64,
    pub duplicates: u64,
    pub users: u64,
    pub kinds: BTreeMap<&'static str, u64>,
    pub outcomes: BTreeMap<&'static str, u64>,
    pub holdouts: u64,
}

impl Summary {
    pub fn count(&mut self, line: &Line) {
        *self.kinds.entry(line.kind.as_str()).or_default() += 1;
        if let Some(o) = line.outcome {
            *self.outcomes.entry(o.as_str()).or_default() += 1;
        }
        if line.kind == Kind::Entered && line.holdout == Some(true) {
            self.holdouts += 1;
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events ({} duplicates ignored), {} users",
            self.events, self.duplicates, self.users
        )?;
        for k in [
            Kind::Entered,
            Kind::EntrySkipped,
            Kind::Send,
            Kind::Exited,
            Kind::Completed,
            Kind::Converted,
        ] {
            let n = self.kinds.get(k.as_str()).copied().unwrap_or(0);
            write!(f, "\n  {:<14} {n:>9}", k.as_str())?;
            if k == Kind::Entered && self.holdouts > 0 {
                write!(f, "  (holdout {})", self.holdouts)?;
            }
            if k == Kind::Send {
                let parts: Vec<String> = [
                    Outcome::Sent,
                    Outcome::Deferred,
                    Outcome::Suppressed,
                    Outcome::Failed,
                ]
                .iter()
                .map(|o| {
                    format!(
                        "{} {}",
                        o.as_str(),
                        self.outcomes.get(o.as_str()).copied().unwrap_or(0)
                    )
                })
                .collect();
                write!(f, "  ({})", parts.join(", "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_cli_shape() {
        let mut l = Line::new(1_772_442_300_000, Kind::Send, "u1", "cart-abandonment");
        l.version = Some(3);
        l.step = Some("reminder".into());
        l.channel = Some("email");
        l.template = Some("cart-reminder".into());
        l.outcome = Some(Outcome::Deferred);
        l.reason = Some("quiet_hours:nights".into());
        l.until = Some(1_772_442_360_000);
        assert_eq!(
            l.to_json_string(),
            r#"{"at":"2026-03-02T09:05:00Z","kind":"send","user":"u1","journey":"cart-abandonment","version":3,"step":"reminder","channel":"email","template":"cart-reminder","outcome":"deferred","reason":"quiet_hours:nights","until":"2026-03-02T09:06:00Z"}"#
        );
    }
}
