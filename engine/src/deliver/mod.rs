//! Delivery: what happens to a rendered [`Message`] after it leaves the
//! engine (RUN.md §3 "What leaves the process", §4 "Dead letters").
//!
//! Owns: the [`Provider`] trait, one file per provider ([`maildir`],
//! [`smtp`], [`pushfile`], [`fcm`], [`apns`], [`webhook`]), the email
//! message both email providers send ([`email`], signed by [`dkim`]), one
//! push message's fan-out to a user's tokens ([`devices`]), the checks that keep control characters out
//! of headers, addresses and URLs ([`safety`]), the webhook signature and
//! unsubscribe tokens ([`sign`]) and the retry schedule ([`retry`]).
//!
//! Knows nothing of: the store, the outbox's layout, the state machines.
//! A delivery worker reads a committed outbox entry, calls
//! [`Provider::deliver`] with the attempt number and the time from the
//! engine's clock, and records the outcome; a [`Failure`] is data
//! (transient or permanent, a reason, an optional `Retry-After`) that
//! [`retry::Backoff::decide`] turns into "try again after d" or "dead
//! letter". No provider reads the system clock.
//!
//! Idempotency: every provider uses the message's key so that delivering
//! the same message twice is harmless: the maildir file is named by the
//! key, the push file keeps one line per key within a process run, FCM
//! messages carry `data.sluice_key`, APNs notifications
//! `apns-collapse-id: {key}`, and a webhook carries `Idempotency-Key: {key}`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use journeys::compiled::{Channel, EmailProvider, Project, PushProvider};

use crate::clock::Millis;
use crate::dispatch::{AddressNews, Message};

pub mod apns;
pub mod devices;
pub mod dkim;
pub mod email;
pub mod fcm;
pub mod maildir;
pub mod pushfile;
pub mod retry;
pub mod safety;
pub mod sign;
pub mod smtp;
pub mod webhook;

pub use apns::Apns;
pub use fcm::Fcm;
pub use maildir::Maildir;
pub use pushfile::PushFile;
pub use retry::{Backoff, Decision};
pub use sign::{Signer, UnsubscribeLinks, UnsubscribeSigner};
pub use smtp::Smtp;
pub use webhook::Webhook;

/// A boxed future, so that providers can sit behind `dyn Provider`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One try at delivering a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first try.
    pub number: u32,
    /// Now, from the engine's clock: webhook signatures carry it and
    /// `Retry-After` dates are measured from it.
    pub now: Millis,
}

/// The failure for a message whose content is not for this provider.
fn wrong_content(message: &Message, provider: &str) -> Failure {
    let kind = match message.content {
        crate::dispatch::Content::Email { .. } => "an email",
        crate::dispatch::Content::Push { .. } => "a push",
        crate::dispatch::Content::Webhook { .. } => "a webhook",
    };
    Failure::permanent(format!("{kind} message reached the {provider} provider"))
}

/// A message the provider took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// What the provider says: a file name, an HTTP status.
    pub detail: String,
    /// The provider already had this key (a repeated delivery that did
    /// nothing, as after a crash before the result was recorded).
    pub duplicate: bool,
    /// What the provider said about the addresses (a push token of
    /// several that is gone, while the others took the message).
    pub news: Vec<AddressNews>,
}

impl Delivered {
    pub fn new(detail: impl Into<String>) -> Delivered {
        Delivered {
            detail: detail.into(),
            duplicate: false,
            news: Vec::new(),
        }
    }
}

/// Whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Connection errors, timeouts, HTTP 408/425/429/5xx, a full disk.
    Transient,
    /// Bad input (control characters in a header, no address, a malformed
    /// URL) or a refusal (other HTTP 4xx): never retried.
    Permanent,
}

/// Why a message was not delivered: data, not a crash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Failure {
    pub kind: FailureKind,
    /// For people: goes into the dead letter and the message's line.
    pub reason: String,
    /// The provider asked to wait at least this long (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// What the provider said about the addresses (an SMTP 5xx for the
    /// recipient: bounced; every push token gone).
    pub news: Vec<AddressNews>,
    /// For log lines, when `reason` quotes what the provider answered (a
    /// webhook receiver's body, which may echo ours; a provider's free
    /// text): the reason without the quote — the status and the
    /// provider's error class. Logs never carry a message body (RUN.md §6).
    pub summary: Option<String>,
}

impl Failure {
    pub fn transient(reason: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::Transient,
            reason: reason.into(),
            retry_after: None,
            news: Vec::new(),
            summary: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::Permanent,
            reason: reason.into(),
            retry_after: None,
            news: Vec::new(),
            summary: None,
        }
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> Failure {
        self.retry_after = after;
        self
    }

    pub fn with_news(mut self, news: AddressNews) -> Failure {
        self.news.push(news);
        self
    }

    /// `summary` (see there): what a log line may say of this failure.
    pub fn quoting(mut self, summary: impl Into<String>) -> Failure {
        self.summary = Some(summary.into());
        self
    }

    /// What a log line says of this failure: the reason without any
    /// quoted answer.
    pub fn for_log(&self) -> &str {
        self.summary.as_deref().unwrap_or(&self.reason)
    }

    pub fn is_permanent(&self) -> bool {
        self.kind == FailureKind::Permanent
    }
}

/// A way out of the process for one channel.
///
/// `deliver` must be safe to call again with the same message (same key):
/// after a crash, or when a result could not be recorded, the worker
/// delivers again. Implementations never panic on message content and
/// never read the system clock (use `attempt.now`).
pub trait Provider: Send + Sync {
    /// The provider's name as in FORMAT.md (`maildir`, `file`, `webhook`).
    fn name(&self) -> &'static str;

    /// The channel whose messages it takes.
    fn channel(&self) -> Channel;

    fn deliver<'a>(
        &'a self,
        message: &'a Message,
        attempt: Attempt,
    ) -> BoxFuture<'a, Result<Delivered, Failure>>;

    /// The start-up check: whether the provider can reach what it
    /// delivers to (`sluice run` refuses to start otherwise, naming it).
    /// Providers with nothing to reach answer `Ok` at once.
    fn ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// What became of one attempt, as a worker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the outbox entry can go, the message's line is `sent`.
    Delivered(Delivered),
    /// Keep the entry; try again (attempt `next`) at `at`.
    Retry {
        next: u32,
        at: Millis,
        reason: String,
    },
    /// Into the dead-letter queue; the message's line is `failed`.
    Dead { attempts: u32, reason: String },
}

impl Outcome {
    /// The `result` label of `sluice_deliveries_total` (RUN.md §6).
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Delivered(_) => "ok",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
        }
    }
}

/// One attempt at `message` through `provider`, decided with `backoff`:
/// the single call a delivery worker makes per outbox entry. `attempt.now`
/// is the engine's clock; a retry's time is `now` plus the backoff's delay.
pub async fn attempt(
    provider: &dyn Provider,
    message: &Message,
    attempt: Attempt,
    backoff: &Backoff,
) -> Outcome {
    match provider.deliver(message, attempt).await {
        Ok(d) => Outcome::Delivered(d),
        Err(failure) => match backoff.decide(&message.key, attempt.number, &failure) {
            Decision::Retry { after } => Outcome::Retry {
                next: attempt.number.saturating_add(1),
                at: attempt
                    .now
                    .saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
                reason: failure.reason,
            },
            Decision::Dead { attempts, reason } => Outcome::Dead { attempts, reason },
        },
    }
}

/// A message that will not be delivered: RUN.md §4's entry, as
/// `sluice dlq list --format json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: String,
    /// When it was given up (RFC 3339).
    pub at: String,
    pub user: String,
    pub journey: String,
    pub step: String,
    pub channel: Channel,
    pub key: String,
    pub attempts: u32,
    pub reason: String,
}

impl DeadLetter {
    /// The dead letter for `message` given up at `at` after `attempts`
    /// tries; `id` is the store's.
    pub fn new(
        id: impl Into<String>,
        message: &Message,
        at: Millis,
        attempts: u32,
        reason: impl Into<String>,
    ) -> DeadLetter {
        DeadLetter {
            id: id.into(),
            at: crate::clock::format_ts(at),
            user: message.user.clone(),
            journey: message.journey.clone(),
            step: message.step.clone(),
            channel: message.channel,
            key: message.key.clone(),
            attempts,
            reason: reason.into(),
        }
    }
}

/// Why the providers could not be set up (at start-up, never per message).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the email channel's `from` {from:?} is not an address: {reason}")]
    BadFrom { from: String, reason: String },
    #[error("the {channel} provider `{provider}` is not available yet")]
    Unsupported {
        channel: Channel,
        provider: &'static str,
    },
    #[error("the environment variable {var} named by `{field}` is not set")]
    MissingEnv { var: String, field: &'static str },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("the private key in {var} is unreadable: {reason}")]
    BadKey { var: String, reason: String },
    #[error("the email channel's `url` is not usable: {reason}")]
    BadUrl { reason: String },
    #[error("`{field}` is set but `{missing}` is not: SMTP authentication needs both")]
    HalfCredentials {
        field: &'static str,
        missing: &'static str,
    },
    #[error("the CA file {path} (channels.email.ca_file) is unusable: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("the SMTP server {server} is unreachable: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("the {provider} push provider needs `channels.push.{field}`")]
    MissingSetting {
        provider: &'static str,
        field: &'static str,
    },
    #[error("`{field}`: {reason}")]
    BadSetting { field: &'static str, reason: String },
    #[error("the environment variable {var} named by `{field}` does not hold {what}: {reason}")]
    BadCredentials {
        var: String,
        field: &'static str,
        what: &'static str,
        reason: String,
    },
}

/// One provider per channel, built from the Project's channels.
pub struct Providers {
    pub email: Arc<dyn Provider>,
    pub push: Arc<dyn Provider>,
    pub webhook: Arc<dyn Provider>,
}

impl Providers {
    /// Builds the providers the Project names; relative paths are taken
    /// from `root` (the repository). `env` reads environment variables
    /// (the signing secret), so tests need not touch the process's.
    pub fn from_project(
        project: &Project,
        root: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        links: Arc<dyn UnsubscribeLinks>,
    ) -> Result<Providers, Error> {
        let dkim = match &project.email.dkim {
            Some(d) => Some(dkim::Dkim::from_settings(d, env)?),
            None => None,
        };
        let email: Arc<dyn Provider> = match project.email.provider {
            EmailProvider::Maildir => {
                let mut config =
                    maildir::Config::new(root.join(&project.email.path), &project.email.from);
                config.dkim = dkim;
                Arc::new(Maildir::open(config, links)?)
            }
            EmailProvider::Smtp => Arc::new(Smtp::new(
                smtp_config(&project.email, root, env, dkim)?,
                links,
            )?),
        };
        let push: Arc<dyn Provider> = match project.push.provider {
            PushProvider::File => Arc::new(PushFile::open(root.join(&project.push.path))?),
            PushProvider::Fcm => Arc::new(Fcm::from_settings(&project.push, env)?),
            PushProvider::Apns => Arc::new(Apns::from_settings(&project.push, env)?),
        };
        let webhook = Arc::new(Webhook::from_settings(&project.webhook, env)?);
        Ok(Providers {
            email,
            push,
            webhook,
        })
    }

    /// The start-up check of every provider ([`Provider::ready`]).
    pub async fn ready(&self) -> Result<(), Error> {
        self.email.ready().await?;
        self.push.ready().await?;
        self.webhook.ready().await
    }

    pub fn for_channel(&self, channel: Channel) -> &Arc<dyn Provider> {
        match channel {
            Channel::Email => &self.email,
            Channel::Push => &self.push,
            Channel::Webhook => &self.webhook,
        }
    }
}

/// The SMTP provider's settings from the email channel: the URL parsed,
/// the credentials' env vars read, the CA file read.
fn smtp_config(
    email: &journeys::compiled::EmailSettings,
    root: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    dkim: Option<dkim::Dkim>,
) -> Result<smtp::Config, Error> {
    let url = email.url.as_deref().ok_or_else(|| Error::BadUrl {
        reason: "the smtp provider needs a `url` such as smtp://localhost:2525".into(),
    })?;
    let server = smtp::Server::parse(url).map_err(|reason| Error::BadUrl { reason })?;
    let read = |var: &String, field: &'static str| {
        env(var)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::MissingEnv {
                var: var.clone(),
                field,
            })
    };
    let credentials = match (&email.username_env, &email.password_env) {
        (None, None) => None,
        (Some(u), Some(p)) => Some((
            read(u, "channels.email.username_env")?,
            read(p, "channels.email.password_env")?,
        )),
        (Some(_), None) => {
            return Err(Error::HalfCredentials {
                field: "username_env",
                missing: "password_env",
            })
        }
        (None, Some(_)) => {
            return Err(Error::HalfCredentials {
                field: "password_env",
                missing: "username_env",
            })
        }
    };
    let ca = match &email.ca_file {
        None => None,
        Some(file) => {
            let path = root.join(file);
            let pem = std::fs::read(&path).map_err(|e| Error::CaFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            Some((path, pem))
        }
    };
    Ok(smtp::Config {
        server,
        from: email.from.clone(),
        credentials,
        pool: usize::try_from(email.pool).unwrap_or(usize::MAX),
        timeout: Duration::from_secs(email.timeout.secs()),
        ca,
        dkim,
    })
}
