//! The raw model: one Rust type per kind of FORMAT.md, exactly as written in
//! YAML, every user-written value wrapped in [`Spanned`] so that validation
//! can point at it. Scalars with a syntax of their own (durations, rates,
//! times of day, zones, cron) stay strings here and are parsed by
//! validation, so one bad value never hides the next.
//!
//! These types are also the source of the JSON Schemas in `schemas/`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::span::{Node, Spanned};

/// Every kind a document may declare.
pub const KINDS: &[&str] = &[
    "Project",
    "Journey",
    "Segment",
    "Template",
    "QuietHours",
    "Throttle",
    "FrequencyCap",
    "Catalog",
    "JourneyTest",
];

pub const API_VERSION: &str = "sluice/v1";

/// A YAML value of any shape (conditions, free-form maps).
pub type Any = Spanned<Node>;

/// `Project`: settings for the whole repository (`sluice.yaml`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Project {
    #[serde(rename = "apiVersion")]
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub id: Spanned<String>,
    /// Used when a user has no valid `timezone` attribute (default UTC).
    #[serde(default)]
    pub default_timezone: Option<Spanned<String>>,
    /// The sled directory, relative to the repository (default `.sluice/store`).
    #[serde(default)]
    pub store: Option<Spanned<String>>,
    #[serde(default)]
    pub channels: Option<Channels>,
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Extension: how long each user's event history is kept for `history`
    /// conditions (default 90d).
    #[serde(default)]
    pub history_retention: Option<Spanned<String>>,
    /// Extension: at most this many events are kept per user (default 500).
    #[serde(default)]
    pub history_limit: Option<Spanned<u32>>,
    /// Extension: the HTTP API of `sluice run`.
    #[serde(default)]
    pub api: Option<Api>,
}

/// Where `sluice run` listens and which env vars hold its tokens (RUN.md §1).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// `host:port` (default `127.0.0.1:7878`).
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// Base of links in messages, e.g. unsubscribe links (default
    /// `http://<listen>`).
    #[serde(default)]
    pub public_url: Option<Spanned<String>>,
    /// Env var holding the secret that verifies Segment webhook signatures
    /// (`X-Signature`); optional.
    #[serde(default)]
    pub segment_secret_env: Option<Spanned<String>>,
    /// Env var holding the bearer token for `POST /v1/events`.
    #[serde(default)]
    pub ingest_token_env: Option<Spanned<String>>,
    /// Env var holding the bearer token for the admin routes.
    #[serde(default)]
    pub admin_token_env: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    #[serde(default)]
    pub email: Option<EmailChannel>,
    #[serde(default)]
    pub push: Option<PushChannel>,
    #[serde(default)]
    pub webhook: Option<WebhookChannel>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmailProvider {
    Smtp,
    Maildir,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailChannel {
    /// `smtp` or `maildir` (default `maildir` at `.sluice/outbox/maildir`).
    #[serde(default)]
    pub provider: Option<Spanned<EmailProvider>>,
    /// A lettre SMTP URL: `smtp://host:port`, `smtps://…`, `?tls=required` for STARTTLS.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    #[serde(default)]
    pub username_env: Option<Spanned<String>>,
    #[serde(default)]
    pub password_env: Option<Spanned<String>>,
    /// Extension: the maildir directory, relative to the repository.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushProvider {
    Fcm,
    Apns,
    File,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushChannel {
    /// `fcm`, `apns` or `file` (default: JSONL at `.sluice/outbox/push.jsonl`).
    #[serde(default)]
    pub provider: Option<Spanned<PushProvider>>,
    #[serde(default)]
    pub project_id: Option<Spanned<String>>,
    #[serde(default)]
    pub credentials_env: Option<Spanned<String>>,
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    /// Extension (apns): the app's bundle id, sent as `apns-topic`.
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// Extension (file): the JSONL file, relative to the repository.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    #[serde(default)]
    pub signing_secret_env: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
    #[serde(default)]
    pub initial: Option<Spanned<String>>,
    #[serde(default)]
    pub max: Option<Spanned<String>>,
}

/// `Journey`: a customer journey.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Journey {
    #[serde(rename = "apiVersion")]
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub id: Spanned<String>,
    /// Must grow whenever the journey's content changes.
    pub version: Spanned<u32>,
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub description: Option<Spanned<String>>,
    /// `marketing` (default), `transactional`, or any name policies use.
    #[serde(default)]
    pub category: Option<Spanned<String>>,
    /// Higher wins when policies let only one message through (default 0).
    #[serde(default)]
    pub priority: Option<Spanned<i64>>,
    pub entry: Spanned<Entry>,
    /// Percentage of users held out, e.g. `10%` (default 0%).
    #[serde(default)]
    pub holdout: Option<Spanned<String>>,
    #[serde(default)]
    pub exit: Vec<Spanned<Exit>>,
    #[serde(default)]
    pub goal: Option<Spanned<Goal>>,
    pub steps: Spanned<Vec<Spanned<Step>>>,
    #[serde(default)]
    pub migrate: Option<Spanned<Migrate>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Enter when this event is tracked.
    #[serde(default)]
    pub event: Option<Spanned<String>>,
    /// Enter on becoming a member of this segment; with `schedule`, who enters at each firing.
    #[serde(default)]
    pub segment: Option<Spanned<String>>,
    /// A cron expression (seconds first).
    #[serde(default)]
    pub schedule: Option<Spanned<String>>,
    /// `user` or an IANA zone, for `schedule` (default: the Project's default_timezone).
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<Condition>")]
    pub when: Option<Any>,
    #[serde(default)]
    pub dedupe_key: Option<Spanned<String>>,
    #[serde(default)]
    pub dedupe_window: Option<Spanned<String>>,
    /// `never` (default), `always` or `after <duration>`.
    #[serde(default)]
    pub reentry: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exit {
    pub event: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<Condition>")]
    pub when: Option<Any>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    pub event: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "Option<Condition>")]
    pub when: Option<Any>,
    /// Window after entry (default 30d).
    #[serde(default)]
    pub within: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    pub from: Spanned<u32>,
    /// Old step id → new step id or `end`.
    #[serde(default)]
    pub steps: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// One step of a journey: an `id`, exactly one of the step types, and an
/// optional `next`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: Spanned<String>,
    /// Resume after this duration.
    #[serde(default)]
    pub wait: Option<Spanned<String>>,
    #[serde(default)]
    pub wait_until: Option<Spanned<WaitUntil>>,
    #[serde(default)]
    pub wait_for: Option<Spanned<WaitFor>>,
    #[serde(default)]
    pub branch: Option<Spanned<Vec<Spanned<Arm>>>>,
    #[serde(default)]
    pub split: Option<Spanned<Vec<Spanned<SplitArm>>>>,
    #[serde(default)]
    pub send: Option<Spanned<Send>>,
    /// `user.<attr>: <value or template>` pairs.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub update: Option<Any>,
    /// End the instance. Written `exit: true` (or with no value).
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    pub exit: Option<Any>,
    /// The next step id, or `end`.
    #[serde(default)]
    pub next: Option<Spanned<String>>,
}

/// The keys of [`Step`] that name its type.
pub const STEP_TYPES: &[&str] = &[
    "wait",
    "wait_until",
    "wait_for",
    "branch",
    "split",
    "send",
    "update",
    "exit",
];

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitUntil {
    /// `HH:MM`, 24 h.
    pub time: Spanned<String>,
    /// `user` (default) or an IANA zone.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// `Mon` … `Sun`.
    #[serde(default)]
    pub days: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitFor {
    pub event: Spanned<String>,
    #[serde(default, rename = "where")]
    #[schemars(with = "Option<Condition>")]
    pub where_: Option<Any>,
    pub timeout: Spanned<String>,
    /// Step to go to when the event arrives (default: the next step).
    #[serde(default)]
    pub on_event: Option<Spanned<String>>,
    /// Step to go to at the timeout (default: the next step).
    #[serde(default)]
    pub on_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    #[serde(default)]
    #[schemars(with = "Option<Condition>")]
    pub when: Option<Any>,
    pub next: Spanned<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitArm {
    /// `50%` (or a bare number of percent).
    pub percent: Spanned<String>,
    pub next: Spanned<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// `email`, `push` or `webhook`.
    pub channel: Spanned<String>,
    pub template: Spanned<String>,
}

/// `Segment`: a named condition over profile, history and clock.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    #[serde(rename = "apiVersion")]
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub id: Spanned<String>,
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub description: Option<Spanned<String>>,
    #[schemars(with = "Condition")]
    pub when: Any,
}

/// `Template`: a Handlebars message body for one channel.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    #[serde(rename = "apiVersion")]
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub id: Spanned<String>,
    /// `email`, `push` or `webhook`.
    pub channel: Spanned<String>,
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// email
    #[serde(default)]
    pub subject: Option<Spanned<String>>,
    #[serde(default)]
    pub text: Option<Spanned<String>>,
    #[serde(default)]
    pub text_file: Option<Spanned<String>>,
    #[serde(default)]
    pub html: Option<Spanned<String>>,
    #[serde(default)]
    pub html_file: Option<Spanned<String>>,
    /// email: overrides the channel's `from`.
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    #[serde(default)]
    pub reply_to: Option<Spanned<String>>,
    /// push
    #[serde(default)]
    pub title: Option<Spanned<String>>,
    /// push: a string; webhook: a mapping rendered to JSON (or a string).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub body: Option<Any>,
    /// push: extra key/value data.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub data: Option<Any>,
    /// webhook
    #[serde(default)]
    pub method: Option<Spanned<String>>,
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub headers: Option<Any>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    Delay,
    Drop,
}

/// `QuietHours`: a daily window in which messages wait or are dropped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    #[serde(rename = "apiVersion")]
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub id: Spanned<String>,
    /// Default: all channels.
    #[serde(default)]
    pub channels: Option<Vec<Spanned<String>>>,
    /// Default: all but transactional.
    #[serde(default)]
    pub categories: Option<Vec<Spanned<String>>>,
    pub start: Spanned<String>,
    pub end: Spanned<String>,
    /// `user` (default) or an IANA zone.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub action: Option<Spanned<PolicyAction>>,
}

/// `Throttle`: a global rate limit for a channel.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    #[serde(rename = "apiVersion")]
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub id: Spanned<String>,
    pub channel: Spanned<String>,
    /// `<n> per <second|minute|hour|day|week>`.
    pub rate: Spanned<String>,
    /// Empty: global for the channel; else only these journeys.
    #[serde(default)]
    pub journeys: Vec<Spanned<String>>,
}

/// `FrequencyCap`: at most `limit` sent messages per user in any window `per`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    #[serde(rename = "apiVersion")]
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub id: Spanned<String>,
    /// Default: all but transactional.
    #[serde(default)]
    pub categories: Option<Vec<Spanned<String>>>,
    /// Default: all.
    #[serde(default)]
    pub channels: Option<Vec<Spanned<String>>>,
    pub limit: Spanned<u32>,
    pub per: Spanned<String>,
    #[serde(default)]
    pub action: Option<Spanned<PolicyAction>>,
}

/// `Catalog`: optional types of user attributes and events.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(rename = "apiVersion")]
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub id: Spanned<String>,
    /// Attribute name → `string | number | boolean | list | map | {enum: [...]}`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, CatalogType>")]
    pub user: Option<Any>,
    /// Event name → property name → type.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, BTreeMap<String, CatalogType>>")]
    pub events: Option<Any>,
}

/// `JourneyTest`: events on a virtual clock and the decisions expected.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JourneyTest {
    #[serde(rename = "apiVersion")]
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub id: Spanned<String>,
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// RFC 3339 start of the virtual clock.
    pub start: Spanned<String>,
    /// §4 event objects; `ts` may be relative to `start` (`+1h`).
    #[schemars(with = "Vec<serde_json::Value>")]
    pub events: Spanned<Vec<Any>>,
    /// Run the clock to here (relative `+3d` or RFC 3339; default: 30d after the last event).
    #[serde(default)]
    pub run_until: Option<Spanned<String>>,
    #[serde(default)]
    pub ignore_holdouts: Option<Spanned<bool>>,
    #[serde(default)]
    pub expect: Vec<Spanned<Expectation>>,
    #[serde(default)]
    pub expect_none: Vec<Spanned<Expectation>>,
}

/// A pattern over simulate output lines: every given key must match.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub journey: Option<Spanned<String>>,
    /// Output line kind (default `send` when `step`, `channel` or `outcome` is given).
    #[serde(default)]
    pub kind: Option<Spanned<String>>,
    #[serde(default)]
    pub step: Option<Spanned<String>>,
    #[serde(default)]
    pub channel: Option<Spanned<String>>,
    #[serde(default)]
    pub template: Option<Spanned<String>>,
    #[serde(default)]
    pub outcome: Option<Spanned<String>>,
    #[serde(default)]
    pub reason: Option<Spanned<String>>,
    #[serde(default)]
    pub holdout: Option<Spanned<bool>>,
    /// Relative to `start` (`+1h5m`) or RFC 3339.
    #[serde(default)]
    pub at: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------
// Schema-only types: what the untyped parts above accept, for editors.

/// A condition (FORMAT.md §5): `all`/`any`/`not`, `segment`, `history`, or
/// `<path>: <value | {operator: value}>`.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum Condition {
    All { all: Vec<Condition> },
    Any { any: Vec<Condition> },
    Not { not: Box<Condition> },
    Segment { segment: String },
    History { history: HistorySchema },
    Compare(BTreeMap<String, serde_json::Value>),
}

#[allow(dead_code)]
#[derive(JsonSchema)]
pub struct HistorySchema {
    event: String,
    within: Option<String>,
    count: Option<BTreeMap<String, f64>>,
    #[serde(rename = "where")]
    where_: Option<Box<Condition>>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum CatalogType {
    Name(CatalogTypeName),
    Enum { r#enum: Vec<serde_json::Value> },
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatalogTypeName {
    String,
    Number,
    Boolean,
    List,
    Map,
    Timestamp,
}

/// One document of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Project(Project),
    Journey(Journey),
    Segment(Segment),
    Template(Template),
    QuietHours(QuietHours),
    Throttle(Throttle),
    FrequencyCap(FrequencyCap),
    Catalog(Catalog),
    JourneyTest(JourneyTest),
}

impl Document {
    pub fn id(&self) -> &Spanned<String> {
        match self {
            Document::Project(d) => &d.id,
            Document::Journey(d) => &d.id,
            Document::Segment(d) => &d.id,
            Document::Template(d) => &d.id,
            Document::QuietHours(d) => &d.id,
            Document::Throttle(d) => &d.id,
            Document::FrequencyCap(d) => &d.id,
            Document::Catalog(d) => &d.id,
            Document::JourneyTest(d) => &d.id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Document::Project(_) => "Project",
            Document::Journey(_) => "Journey",
            Document::Segment(_) => "Segment",
            Document::Template(_) => "Template",
            Document::QuietHours(_) => "QuietHours",
            Document::Throttle(_) => "Throttle",
            Document::FrequencyCap(_) => "FrequencyCap",
            Document::Catalog(_) => "Catalog",
            Document::JourneyTest(_) => "JourneyTest",
        }
    }
}
