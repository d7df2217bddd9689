//! The compiled form: what the engine executes. Every reference is
//! resolved, every scalar parsed, every template pre-compiled; each journey
//! is an explicit state machine with a stable content hash. Nothing here
//! ever looks at YAML again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc, Weekday};
use serde_json::Value;

use crate::condition::Condition;
use crate::event::Event;
use crate::scalar::{Duration, Percent, Rate, Reentry, TimeOfDay, Zone};
use crate::template::{Renderer, Text};

pub use crate::model::{EmailProvider, PolicyAction, PushProvider};

/// A message channel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Push,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Push, Channel::Webhook];

    pub fn parse(s: &str) -> Option<Channel> {
        match s {
            "email" => Some(Channel::Email),
            "push" => Some(Channel::Push),
            "webhook" => Some(Channel::Webhook),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Push => "push",
            Channel::Webhook => "webhook",
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The category that policies exempt unless they name it.
pub const TRANSACTIONAL: &str = "transactional";

/// A whole repository, compiled.
pub struct Config {
    /// The repository directory.
    pub root: PathBuf,
    pub project: Project,
    /// Sorted by id.
    pub journeys: Vec<Arc<Journey>>,
    /// Sorted so that a segment comes after every segment it references.
    pub segments: Vec<Segment>,
    pub templates: BTreeMap<String, MessageTemplate>,
    pub quiet_hours: Vec<QuietHours>,
    pub throttles: Vec<Throttle>,
    pub frequency_caps: Vec<FrequencyCap>,
    pub catalog: Option<Catalog>,
    pub tests: Vec<JourneyTest>,
    /// Every template text of the repository, registered.
    pub renderer: Arc<Renderer>,
}

impl Config {
    pub fn journey(&self, id: &str) -> Option<&Arc<Journey>> {
        self.journeys
            .binary_search_by(|j| j.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.journeys[i])
    }

    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.id == id)
    }
}

/// Project-wide settings with every default applied.
#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub default_timezone: chrono_tz::Tz,
    /// Relative to the repository unless absolute.
    pub store: PathBuf,
    pub email: EmailSettings,
    pub push: PushSettings,
    pub webhook: WebhookSettings,
    pub retry: RetryPolicy,
    pub history_retention: Duration,
    pub history_limit: u32,
    pub api: ApiSettings,
}

#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub provider: EmailProvider,
    pub url: Option<String>,
    pub from: String,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    pub path: PathBuf,
    pub dkim: Option<DkimSettings>,
    /// smtp: connections kept open at most (at least 1).
    pub pool: u32,
    /// smtp: connecting, and then each message.
    pub timeout: Duration,
    /// smtp: extra trusted CA certificates (PEM), relative to the repository.
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct DkimSettings {
    pub domain: String,
    pub selector: String,
    pub private_key_env: String,
}

#[derive(Debug, Clone)]
pub struct PushSettings {
    pub provider: PushProvider,
    pub project_id: Option<String>,
    pub credentials_env: Option<String>,
    pub endpoint: Option<String>,
    pub topic: Option<String>,
    /// apns: the signing key's id (`kid`).
    pub key_id: Option<String>,
    /// apns: the team id (`iss`).
    pub team_id: Option<String>,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub signing_secret_env: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub listen: String,
    /// Base of links in messages; `None`: `http://<listen>`.
    pub public_url: Option<String>,
    pub segment_secret_env: Option<String>,
    pub ingest_token_env: String,
    pub admin_token_env: String,
    pub feedback: FeedbackSettings,
}

/// How feedback intake authenticates providers (`api.feedback`).
#[derive(Debug, Clone, Default)]
pub struct FeedbackSettings {
    pub sendgrid_public_key_env: Option<String>,
    /// Empty: SNS messages of any topic.
    pub sns_topic_arns: Vec<String>,
}

/// A journey as a state machine.
#[derive(Debug)]
pub struct Journey {
    pub id: String,
    pub version: u32,
    pub name: Option<String>,
    pub category: String,
    pub priority: i64,
    pub entry: Entry,
    pub holdout: Percent,
    pub exits: Vec<ExitRule>,
    pub goal: Option<Goal>,
    /// `states[0]` runs at entry.
    pub states: Vec<State>,
    pub migrate: Option<Migration>,
    /// A hex SHA-256 of the journey's content, version excluded, spans
    /// ignored: equal hashes mean the journey did not change.
    pub hash: String,
    /// The template texts of its conditions and steps (named per journey
    /// and version), for a renderer that runs several versions at once.
    pub texts: Vec<crate::template::Text>,
}

impl Journey {
    pub fn state_index(&self, id: &str) -> Option<usize> {
        self.states.iter().position(|s| s.id == id)
    }

    pub fn is_transactional(&self) -> bool {
        self.category == TRANSACTIONAL
    }
}

#[derive(Debug)]
pub struct Entry {
    pub trigger: Trigger,
    pub when: Option<Condition>,
    pub dedupe_key: Option<Text>,
    pub dedupe_window: Duration,
    pub reentry: Reentry,
}

#[derive(Debug)]
pub enum Trigger {
    Event(String),
    /// Enter on the not-member → member transition.
    Segment(String),
    /// Enter members of `segment` (everyone known, when absent) at each firing.
    Schedule {
        cron: Box<cron::Schedule>,
        source: String,
        zone: Zone,
        segment: Option<String>,
    },
}

#[derive(Debug)]
pub struct ExitRule {
    pub event: String,
    pub when: Option<Condition>,
}

#[derive(Debug)]
pub struct Goal {
    pub event: String,
    pub when: Option<Condition>,
    pub within: Duration,
}

/// Where a transition leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Next {
    State(usize),
    End,
}

#[derive(Debug)]
pub struct State {
    pub id: String,
    pub action: Action,
}

#[derive(Debug)]
pub enum Action {
    Wait {
        duration: Duration,
        next: Next,
    },
    WaitUntil {
        time: TimeOfDay,
        zone: Zone,
        /// Empty: any day.
        days: Vec<Weekday>,
        next: Next,
    },
    WaitFor {
        event: String,
        where_: Option<Condition>,
        timeout: Duration,
        on_event: Next,
        on_timeout: Next,
    },
    /// The first arm whose condition holds (an arm without one always
    /// holds; the compiler puts the default arm last, wherever it was
    /// written); `otherwise` when none does.
    Branch {
        arms: Vec<(Option<Condition>, Next)>,
        otherwise: Next,
    },
    /// Cumulative upper bounds in basis points, the last being 10 000.
    Split {
        arms: Vec<(u32, Next)>,
    },
    Send {
        channel: Channel,
        template: String,
        next: Next,
    },
    Update {
        sets: Vec<(String, UpdateValue)>,
        next: Next,
    },
    Exit,
}

impl Action {
    /// Whether the instance stays on this state until a timer or event.
    pub fn waits(&self) -> bool {
        matches!(
            self,
            Action::Wait { .. } | Action::WaitUntil { .. } | Action::WaitFor { .. }
        )
    }
}

#[derive(Debug)]
pub enum UpdateValue {
    Value(Value),
    Template(Text),
}

#[derive(Debug)]
pub struct Migration {
    pub from: u32,
    /// Old step id → new state (or end).
    pub steps: BTreeMap<String, Next>,
    /// Instances at unmapped steps stay on the old version, or exit.
    pub on_unmapped: crate::model::OnUnmapped,
}

/// A message template.
#[derive(Debug)]
pub struct MessageTemplate {
    pub id: String,
    pub channel: Channel,
    pub body: TemplateBody,
}

impl MessageTemplate {
    /// Every template text of the message, in a fixed order: the fields of
    /// its channel, then data/headers, then the strings of a webhook body.
    pub fn texts(&self) -> Vec<&Text> {
        fn json_texts<'t>(j: &'t JsonTemplate, out: &mut Vec<&'t Text>) {
            match j {
                JsonTemplate::Value(_) => {}
                JsonTemplate::Text(t) => out.push(t),
                JsonTemplate::Array(items) => items.iter().for_each(|i| json_texts(i, out)),
                JsonTemplate::Object(fields) => fields.iter().for_each(|(_, v)| json_texts(v, out)),
            }
        }
        let mut out = Vec::new();
        match &self.body {
            TemplateBody::Email {
                subject,
                text,
                html,
                from,
                reply_to,
            } => {
                out.push(subject);
                out.extend([text, html, from, reply_to].into_iter().flatten());
            }
            TemplateBody::Push { title, body, data } => {
                out.extend([title, body].into_iter().flatten());
                out.extend(data.iter().map(|(_, t)| t));
            }
            TemplateBody::Webhook {
                url, headers, body, ..
            } => {
                out.push(url);
                out.extend(headers.iter().map(|(_, t)| t));
                if let Some(b) = body {
                    json_texts(b, &mut out);
                }
            }
        }
        out
    }
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per template; boxing buys nothing
pub enum TemplateBody {
    Email {
        subject: Text,
        text: Option<Text>,
        html: Option<Text>,
        from: Option<Text>,
        reply_to: Option<Text>,
    },
    Push {
        title: Option<Text>,
        body: Option<Text>,
        data: Vec<(String, Text)>,
    },
    Webhook {
        method: String,
        url: Text,
        headers: Vec<(String, Text)>,
        body: Option<JsonTemplate>,
    },
}

/// A JSON value whose strings are templates.
#[derive(Debug)]
pub enum JsonTemplate {
    Value(Value),
    Text(Text),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

#[derive(Debug)]
pub struct Segment {
    pub id: String,
    pub when: Condition,
}

#[derive(Debug, Clone)]
pub struct PolicyScope {
    /// `None`: every channel.
    pub channels: Option<Vec<Channel>>,
    /// `None`: every category but transactional.
    pub categories: Option<Vec<String>>,
}

impl PolicyScope {
    /// Whether a message of this channel and category is subject to the policy.
    pub fn applies(&self, channel: Channel, category: &str) -> bool {
        let channel_ok = self
            .channels
            .as_ref()
            .is_none_or(|cs| cs.contains(&channel));
        let category_ok = match &self.categories {
            None => category != TRANSACTIONAL,
            Some(cats) => cats.iter().any(|c| c == category),
        };
        channel_ok && category_ok
    }
}

#[derive(Debug, Clone)]
pub struct QuietHours {
    pub id: String,
    pub scope: PolicyScope,
    pub start: TimeOfDay,
    pub end: TimeOfDay,
    pub zone: Zone,
    pub action: PolicyAction,
}

#[derive(Debug, Clone)]
pub struct Throttle {
    pub id: String,
    pub channel: Channel,
    pub rate: Rate,
    /// Empty: every journey.
    pub journeys: Vec<String>,
}

impl Throttle {
    pub fn applies(&self, channel: Channel, journey: &str) -> bool {
        self.channel == channel
            && (self.journeys.is_empty() || self.journeys.iter().any(|j| j == journey))
    }
}

#[derive(Debug, Clone)]
pub struct FrequencyCap {
    pub id: String,
    pub scope: PolicyScope,
    pub limit: u32,
    pub per: Duration,
    pub action: PolicyAction,
}

/// The types a Catalog declares.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    String,
    Number,
    Boolean,
    List,
    Map,
    Timestamp,
    Enum(Vec<Value>),
}

impl FieldType {
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::List => "list",
            FieldType::Map => "map",
            FieldType::Timestamp => "timestamp",
            FieldType::Enum(_) => "enum",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub user: BTreeMap<String, FieldType>,
    pub events: BTreeMap<String, BTreeMap<String, FieldType>>,
}

/// A JourneyTest with every relative time resolved.
#[derive(Debug, Clone)]
pub struct JourneyTest {
    pub id: String,
    pub name: Option<String>,
    /// The file it was written in, relative to the repository.
    pub file: String,
    pub line: usize,
    pub start: DateTime<Utc>,
    pub events: Vec<Event>,
    pub run_until: DateTime<Utc>,
    pub ignore_holdouts: bool,
    pub expect: Vec<Expectation>,
    pub expect_none: Vec<Expectation>,
}

/// A pattern over simulate output lines.
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    pub line: usize,
    pub user: Option<String>,
    pub journey: Option<String>,
    pub kind: Option<String>,
    pub step: Option<String>,
    pub channel: Option<String>,
    pub template: Option<String>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub holdout: Option<bool>,
    pub at: Option<DateTime<Utc>>,
}

impl Expectation {
    /// Whether a simulate output line (as JSON) matches every given key.
    pub fn matches(&self, line: &Value) -> bool {
        let field = |k: &str| line.get(k).and_then(Value::as_str);
        let eq =
            |want: &Option<String>, k: &str| want.as_deref().is_none_or(|w| field(k) == Some(w));
        let kind_ok = match &self.kind {
            Some(k) => field("kind") == Some(k.as_str()),
            None => {
                let send_keys = self.step.is_some()
                    || self.channel.is_some()
                    || self.outcome.is_some()
                    || self.template.is_some();
                !send_keys || field("kind") == Some("send")
            }
        };
        let at_ok = self.at.is_none_or(|at| {
            field("at")
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .is_some_and(|t| t == at)
        });
        let holdout_ok = self
            .holdout
            .is_none_or(|h| line.get("holdout").and_then(Value::as_bool) == Some(h));
        kind_ok
            && at_ok
            && holdout_ok
            && eq(&self.user, "user")
            && eq(&self.journey, "journey")
            && eq(&self.step, "step")
            && eq(&self.channel, "channel")
            && eq(&self.template, "template")
            && eq(&self.outcome, "outcome")
            && eq(&self.reason, "reason")
    }
}
