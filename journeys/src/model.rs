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
    /// How each channel delivers: `email`, `push`, `webhook`.
    #[serde(default)]
    pub channels: Option<Channels>,
    /// Deliveries that fail are retried with exponential backoff and jitter,
    /// then dead-lettered (default `{ max_attempts: 8, initial: 1s, max: 10m }`).
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Extension: how long each user's event history is kept for `history`
    /// conditions (default 90d).
    #[serde(default)]
    #[schemars(with = "Option<crate::schema::Duration>")]
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
    /// Extension: how `POST /v1/feedback/{provider}` authenticates
    /// providers (docs/feedback.md).
    #[serde(default)]
    pub feedback: Option<Feedback>,
}

/// Bounce and complaint intake from email providers (docs/feedback.md).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// Env var holding SendGrid's Event Webhook verification key (base64
    /// DER, as SendGrid shows it, or PEM): signed posts need no token.
    #[serde(default)]
    pub sendgrid_public_key_env: Option<Spanned<String>>,
    /// When given, only SNS messages from these topic ARNs are taken (any
    /// other is refused with 401).
    #[serde(default)]
    pub sns_topic_arns: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    /// The email provider: SMTP or a maildir.
    #[serde(default)]
    pub email: Option<EmailChannel>,
    /// The push provider: FCM, APNs or a JSONL file.
    #[serde(default)]
    pub push: Option<PushChannel>,
    /// Settings of webhook deliveries.
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
    /// The sender, e.g. `"Shop <hello@shop.example>"`.
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    /// The env var holding the SMTP user name (secrets are never written in YAML).
    #[serde(default)]
    pub username_env: Option<Spanned<String>>,
    /// The env var holding the SMTP password.
    #[serde(default)]
    pub password_env: Option<Spanned<String>>,
    /// Extension: the maildir directory, relative to the repository.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// DKIM-sign every message (RSA-SHA256 or Ed25519).
    #[serde(default)]
    pub dkim: Option<Dkim>,
    /// Extension (smtp): connections to the server kept open at most (default 8).
    #[serde(default)]
    pub pool: Option<Spanned<u32>>,
    /// Extension (smtp): how long connecting, and then each message, may take (default 30s).
    #[serde(default)]
    #[schemars(with = "Option<crate::schema::Duration>")]
    pub timeout: Option<Spanned<String>>,
    /// Extension (smtp): a PEM file of CA certificates trusted besides the public roots
    /// (a private relay's own CA), relative to the repository.
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
}

/// DKIM signing of every email (RUN.md §3).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    /// The signing domain (`d=`), e.g. `shop.example`.
    pub domain: Spanned<String>,
    /// The selector (`s=`): the key is published at `{selector}._domainkey.{domain}`.
    pub selector: Spanned<String>,
    /// The env var holding the private key: RSA (PKCS#1 or PKCS#8 PEM) or Ed25519 (PKCS#8 PEM or base64 of its 32 bytes).
    pub private_key_env: Spanned<String>,
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
    /// fcm: the Firebase project id.
    #[serde(default)]
    pub project_id: Option<Spanned<String>>,
    /// The env var holding the provider's credentials (FCM service account JSON, APNs key).
    #[serde(default)]
    pub credentials_env: Option<Spanned<String>>,
    /// The provider's base URL, overridable so tests can point it at loopback.
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    /// Extension (apns): the app's bundle id, sent as `apns-topic`.
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
    /// Extension (apns): the id of the token signing key (the .p8 key's
    /// Key ID), the `kid` of the provider token.
    #[serde(default)]
    pub key_id: Option<Spanned<String>>,
    /// Extension (apns): the Apple developer team id, the `iss` of the
    /// provider token.
    #[serde(default)]
    pub team_id: Option<Spanned<String>>,
    /// Extension (file): the JSONL file, relative to the repository.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    /// The env var holding the HMAC-SHA256 secret that signs every request.
    #[serde(default)]
    pub signing_secret_env: Option<Spanned<String>>,
    /// How long a webhook request may take (default 5s).
    #[serde(default)]
    #[schemars(with = "Option<crate::schema::Duration>")]
    pub timeout: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts before a message is dead-lettered (default 8).
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
    /// The first backoff (default 1s); each next one doubles.
    #[serde(default)]
    #[schemars(with = "Option<crate::schema::Duration>")]
    pub initial: Option<Spanned<String>>,
    /// The longest backoff (default 10m).
    #[serde(default)]
    #[schemars(with = "Option<crate::schema::Duration>")]
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
    /// A human-readable name.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// What the journey is for.
    #[serde(default)]
    pub description: Option<Spanned<String>>,
    /// `marketing` (default), `transactional`, or any name policies use.
    #[serde(default)]
    pub category: Option<Spanned<String>>,
    /// Higher wins when policies let only one message through (default 0).
    #[serde(default)]
    pub priority: Option<Spanned<i64>>,
    /// How users enter: exactly one of `event`, `segment`, `schedule`.
    pub entry: Spanned<Entry>,
    /// Percentage of users held out, deterministic per (journey id, user id),
    /// e.g. `10%` (default 0%).
    #[serde(default)]
    #[schemars(with = "Option<crate::schema::Percent>")]
    pub holdout: Option<Spanned<String>>,
    /// Events that end a live instance at once and cancel its timers.
    #[serde(default)]
    pub exit: Vec<Spanned<Exit>>,
    /// Conversion: the first matching event within `within` of entry,
    /// for treatment and holdout alike.
    #[serde(default)]
    pub goal: Option<Spanned<Goal>>,
    /// Executed in order; `next` jumps; the first step runs at entry.
    pub steps: Spanned<Vec<Spanned<Step>>>,
    /// How users inside an older version move to this one (DEPLOY.md).
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
    /// A condition on the entering event and user (FORMAT.md §5).
    #[serde(default)]
    #[schemars(with = "Option<Condition>")]
    pub when: Option<Any>,
    /// A template; an entry whose key was seen for this journey within
    /// `dedupe_window` is skipped.
    #[serde(default)]
    pub dedupe_key: Option<Spanned<String>>,
    /// How long a dedupe key is remembered (default 30d).
    #[serde(default)]
    #[schemars(with = "Option<crate::schema::Duration>")]
    pub dedupe_window: Option<Spanned<String>>,
    /// `never` (default), `always` or `after <duration>`.
    #[serde(default)]
    #[schemars(with = "Option<crate::schema::Reentry>")]
    pub reentry: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Exit {
    /// The event that ends the instance.
    pub event: Spanned<String>,
    /// Only when this condition holds (`event.*` is the exit event).
    #[serde(default)]
    #[schemars(with = "Option<Condition>")]
    pub when: Option<Any>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// The conversion event.
    pub event: Spanned<String>,
    /// Only when this condition holds (`event.*` is the goal event).
    #[serde(default)]
    #[schemars(with = "Option<Condition>")]
    pub when: Option<Any>,
    /// Window after entry (default 30d).
    #[serde(default)]
    #[schemars(with = "Option<crate::schema::Duration>")]
    pub within: Option<Spanned<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    /// The version whose live instances move to this one.
    pub from: Spanned<u32>,
    /// Old step id → new step id or `end`.
    #[serde(default)]
    pub steps: BTreeMap<Spanned<String>, Spanned<String>>,
    /// What happens to live instances at steps `steps` does not map:
    /// `stay` (default: they finish on the old version) or `exit` (they end,
    /// reason `migrated_out`).
    #[serde(default)]
    pub on_unmapped: Option<Spanned<OnUnmapped>>,
}

/// `migrate.on_unmapped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnUnmapped {
    #[default]
    Stay,
    Exit,
}

/// One step of a journey: an `id`, exactly one of the step types, and an
/// optional `next`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique in the journey; `next`, branches and tests refer to it.
    pub id: Spanned<String>,
    /// Resume after this duration.
    #[serde(default)]
    #[schemars(with = "Option<crate::schema::Duration>")]
    pub wait: Option<Spanned<String>>,
    /// Resume at the next matching local time.
    #[serde(default)]
    pub wait_until: Option<Spanned<WaitUntil>>,
    /// Resume on a matching event or at the timeout.
    #[serde(default)]
    pub wait_for: Option<Spanned<WaitFor>>,
    /// The first matching arm; a `when`-less arm is the default; no match
    /// and no default = continue.
    #[serde(default)]
    pub branch: Option<Spanned<Vec<Spanned<Arm>>>>,
    /// Random but deterministic per (journey, step, user); percents sum to 100.
    #[serde(default)]
    pub split: Option<Spanned<Vec<Spanned<SplitArm>>>>,
    /// A message, through the policies (FORMAT.md §8).
    #[serde(default)]
    pub send: Option<Spanned<Send>>,
    /// `user.<attr>: <value or template>` pairs.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub update: Option<Any>,
    /// End the instance. Written `exit: true`, `exit: {}` or `exit:` with
    /// no value (present, so not the absent field an `Option` makes of a
    /// null).
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "crate::schema::ExitFlag")]
    pub exit: Option<Any>,
    /// The next step id, or `end`.
    #[serde(default)]
    pub next: Option<Spanned<String>>,
}

/// A field that is there even when its value is null (`exit:`): the
/// field's absence is `#[serde(default)]`'s `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Any>, D::Error> {
    Any::deserialize(d).map(Some)
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
    #[schemars(with = "crate::schema::TimeOfDay")]
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
    /// The awaited event.
    pub event: Spanned<String>,
    /// Only an event matching this condition resumes (`event.*` is the awaited event).
    #[serde(default, rename = "where")]
    #[schemars(with = "Option<Condition>")]
    pub where_: Option<Any>,
    /// How long to wait for the event.
    #[schemars(with = "crate::schema::Duration")]
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
    /// The arm's condition; an arm without one is the default.
    #[serde(default)]
    #[schemars(with = "Option<Condition>")]
    pub when: Option<Any>,
    /// The step to go to, or `end`.
    pub next: Spanned<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitArm {
    /// `50%` (or a bare number of percent).
    #[schemars(with = "crate::schema::Percent")]
    pub percent: Spanned<String>,
    /// The step to go to, or `end`.
    pub next: Spanned<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// `email`, `push` or `webhook`.
    #[schemars(with = "crate::schema::Channel")]
    pub channel: Spanned<String>,
    /// The id of a Template of the same channel.
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
    /// A human-readable name.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// What the segment is for.
    #[serde(default)]
    pub description: Option<Spanned<String>>,
    /// Who is a member: a condition over profile, history and clock (FORMAT.md §5).
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
    #[schemars(with = "crate::schema::Channel")]
    pub channel: Spanned<String>,
    /// A human-readable name.
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// email (required): the subject line, a Handlebars template.
    #[serde(default)]
    pub subject: Option<Spanned<String>>,
    /// email: the plain-text body, inline (Handlebars).
    #[serde(default)]
    pub text: Option<Spanned<String>>,
    /// email: the plain-text body in a file, relative to this YAML file.
    #[serde(default)]
    pub text_file: Option<Spanned<String>>,
    /// email: the HTML body, inline (Handlebars).
    #[serde(default)]
    pub html: Option<Spanned<String>>,
    /// email: the HTML body in a file, relative to this YAML file.
    #[serde(default)]
    pub html_file: Option<Spanned<String>>,
    /// email: overrides the channel's `from`.
    #[serde(default)]
    pub from: Option<Spanned<String>>,
    /// email: the `Reply-To` address.
    #[serde(default)]
    pub reply_to: Option<Spanned<String>>,
    /// push: the notification title (push needs `title` or `body`).
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
    /// webhook: the HTTP method (default POST).
    #[serde(default)]
    pub method: Option<Spanned<String>>,
    /// webhook (required): the URL to call (Handlebars).
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// webhook: extra request headers.
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
    #[schemars(with = "Option<Vec<crate::schema::Channel>>")]
    pub channels: Option<Vec<Spanned<String>>>,
    /// Default: all but transactional.
    #[serde(default)]
    pub categories: Option<Vec<Spanned<String>>>,
    /// When the window opens, `HH:MM` local time.
    #[schemars(with = "crate::schema::TimeOfDay")]
    pub start: Spanned<String>,
    /// When the window closes, `HH:MM` local time; a window may cross midnight.
    #[schemars(with = "crate::schema::TimeOfDay")]
    pub end: Spanned<String>,
    /// `user` (default) or an IANA zone.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// `delay` (default: deferred until the window ends) or `drop` (suppressed).
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
    /// The channel this rate limits.
    #[schemars(with = "crate::schema::Channel")]
    pub channel: Spanned<String>,
    /// `<n> per <second|minute|hour|day|week>`.
    #[schemars(with = "crate::schema::Rate")]
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
    #[schemars(with = "Option<Vec<crate::schema::Channel>>")]
    pub channels: Option<Vec<Spanned<String>>>,
    /// At most this many sent messages per user in any window `per`.
    pub limit: Spanned<u32>,
    /// The sliding window.
    #[schemars(with = "crate::schema::Duration")]
    pub per: Spanned<String>,
    /// `drop` (default: suppressed) or `delay` (deferred until a slot frees).
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
    #[schemars(with = "Option<BTreeMap<String, CatalogType>>")]
    pub user: Option<Any>,
    /// Event name → property name → type.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, Option<BTreeMap<String, CatalogType>>>>")]
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
    /// A human-readable name.
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
    /// Holdouts apply in tests as in production unless this is true.
    #[serde(default)]
    pub ignore_holdouts: Option<Spanned<bool>>,
    /// Output lines that must appear (each pattern matched by some line).
    #[serde(default)]
    pub expect: Vec<Spanned<Expectation>>,
    /// Output lines that must not appear.
    #[serde(default)]
    pub expect_none: Vec<Spanned<Expectation>>,
}

/// A pattern over simulate output lines: every given key must match.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The user id.
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    /// The journey id.
    #[serde(default)]
    pub journey: Option<Spanned<String>>,
    /// Output line kind (default `send` when `step`, `channel` or `outcome` is given).
    #[serde(default)]
    pub kind: Option<Spanned<String>>,
    /// The step id of the journey.
    #[serde(default)]
    pub step: Option<Spanned<String>>,
    /// `email`, `push` or `webhook`.
    #[serde(default)]
    pub channel: Option<Spanned<String>>,
    /// The template id.
    #[serde(default)]
    pub template: Option<Spanned<String>>,
    /// `sent`, `deferred`, `suppressed` or `failed`.
    #[serde(default)]
    pub outcome: Option<Spanned<String>>,
    /// E.g. `quiet_hours:nights`, `frequency_cap:<id>`, `unsubscribed`, `dedupe`.
    #[serde(default)]
    pub reason: Option<Spanned<String>>,
    /// Whether the user was held out (on `entered` and `converted` lines).
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
    All {
        /// Every condition of the list holds.
        all: Vec<Condition>,
    },
    Any {
        /// At least one condition of the list holds.
        any: Vec<Condition>,
    },
    Not {
        /// The condition does not hold.
        not: Box<Condition>,
    },
    Segment {
        /// The user is a member of this segment now.
        segment: String,
    },
    History {
        /// The user's event history: `{ event, within, count, where }`.
        history: HistorySchema,
    },
    /// `user.<attr>`, `event.<prop>` or `entry.<prop>`: a bare value (eq)
    /// or `{ eq | ne | gt | gte | lt | lte | in | not_in | exists | contains | starts_with: value }`.
    Compare(BTreeMap<String, serde_json::Value>),
}

#[allow(dead_code)]
#[derive(JsonSchema)]
pub struct HistorySchema {
    /// The event name.
    event: String,
    /// Only events this recent (default: the whole kept history).
    within: Option<crate::schema::Duration>,
    /// How many matching events, e.g. `{ gte: 3 }` (default at least one).
    count: Option<serde_json::Value>,
    /// Only events matching this condition (`event.*` is the past event).
    #[serde(rename = "where")]
    where_: Option<Box<Condition>>,
}

#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(untagged)]
pub enum CatalogType {
    Name(CatalogTypeName),
    Enum {
        /// The allowed values.
        r#enum: Vec<serde_json::Value>,
    },
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
// A repository holds a few thousand documents at most; boxing the largest
// kind would cost every match for no measurable memory.
#[allow(clippy::large_enum_variant)]
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

/// FORMAT.md's canonical content hash of a document's JSON: SHA-256 (hex)
/// of the JSON with object keys sorted, so key order and positions (spans
/// serialise as plain values) make no difference.
pub fn canonical_hash(value: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    fn canonical(v: &serde_json::Value, out: &mut String) {
        use serde_json::Value;
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for k in keys {
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], out);
                    out.push(',');
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for i in items {
                    canonical(i, out);
                    out.push(',');
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(value, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
