//! Message policies (FORMAT.md §8): the decision taken for a message at the
//! moment it would be sent. Pure logic over the compiled policies, the
//! user's profile and recent sends, and the throttles' ledgers; the engine
//! persists what this module returns and never decides on its own.
//!
//! Order: subscription/address → frequency caps → quiet hours → throttles.
//! The address check of step 1 has three outcomes for email: no address
//! (`no_address`), an address that bounced for good (`email_status:
//! bounced` on the profile, RUN.md §3: `bounced`), or a usable one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::store::profile::Profile;

use journeys::compiled::{Channel, Config};

mod cap;
pub mod ledger;
mod quiet;
mod throttle;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// A throttle slot held by a deferred message: when released at `at` the
/// message passes that throttle without taking a new slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub throttle: String,
    pub at: DateTime<Utc>,
}

/// A message about to be sent.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub user: &'a str,
    /// The user's profile (reserved attributes: `email`, `push_tokens`,
    /// `timezone`, `subscriptions`).
    pub profile: &'a dyn Profile,
    pub journey: &'a str,
    pub category: &'a str,
    pub priority: i64,
    pub channel: Channel,
    /// When the message first became due (throttles serve oldest first).
    pub due: DateTime<Utc>,
    /// Slots held from an earlier deferral.
    pub reservations: &'a [Reservation],
}

/// One message actually sent to a user; the engine keeps each user's
/// recent ones (at least [`Policies::sent_horizon`]) for frequency caps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRecord {
    pub at: DateTime<Utc>,
    pub channel: Channel,
    pub category: String,
}

/// What happens to the message now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Dispatch it now; record a [`SentRecord`] for the user.
    Send,
    /// Try again at `until`, re-checking from the top, carrying
    /// `reservations` in [`Outgoing::reservations`].
    Defer {
        reason: String,
        until: DateTime<Utc>,
        reservations: Vec<Reservation>,
    },
    /// Never send it.
    Suppress { reason: String },
}

/// The policies of a repository and the throttles' state.
#[derive(Debug)]
pub struct Policies {
    default_timezone: chrono_tz::Tz,
    caps: cap::Caps,
    quiet: quiet::Quiet,
    throttles: throttle::Throttles,
}

impl Policies {
    /// The policies of `config`, each throttle with a [`ledger::Local`]
    /// ledger (one engine).
    pub fn new(config: &Config) -> Self {
        Policies::with_ledgers(config, &mut |_, count, per| {
            Box::new(ledger::Local::new(count, per))
        })
    }

    /// The policies of `config`, each throttle's ledger made by `ledger`
    /// from the throttle's id, count and `per` (a cluster's shared ledger).
    pub fn with_ledgers(config: &Config, ledger: &mut ledger::LedgerFactory<'_>) -> Self {
        Policies {
            default_timezone: config.project.default_timezone,
            caps: cap::Caps::new(&config.frequency_caps),
            quiet: quiet::Quiet::new(&config.quiet_hours),
            throttles: throttle::Throttles::new(&config.throttles, ledger),
        }
    }

    /// How far back a user's sent log must reach for the caps to count:
    /// the longest cap `per` (zero without caps).
    pub fn sent_horizon(&self) -> chrono::TimeDelta {
        self.caps.horizon()
    }

    /// Decides what happens to `msg` at `now`, given the user's sends
    /// (any order, may include ones older than the horizon).
    ///
    /// Call it in time order: for messages at the same `now`, oldest `due`
    /// first, then higher `priority`, then entry order; after a
    /// [`Decision::Send`] record the [`SentRecord`] (at `now`) before deciding
    /// the user's next message. On [`Decision::Defer`] replace the message's
    /// reservations with the returned ones (possibly none) and call again at
    /// `until`. See docs/policies.md.
    pub fn decide(
        &mut self,
        msg: &Outgoing<'_>,
        sent: &[SentRecord],
        now: DateTime<Utc>,
    ) -> Decision {
        if let Some(reason) = subscription(msg) {
            return Decision::Suppress {
                reason: reason.to_owned(),
            };
        }
        if let Some(d) = self.caps.check(msg, sent, now) {
            return d;
        }
        if let Some(d) = self.quiet.check(msg, now, self.default_timezone) {
            return d;
        }
        let (quiet, tz) = (&self.quiet, self.default_timezone);
        let mut release = |t| match quiet.hold(msg, t, tz) {
            Some(quiet::Hold::Delay(until, i)) => Some((until, quiet.reason(i))),
            Some(quiet::Hold::Drop(_)) | None => None,
        };
        self.throttles.admit(msg, now, &mut release)
    }

    /// The throttles' ledgers, to persist with the store:
    /// `{"throttles": {"<id>": ["<RFC 3339>", …]}}`.
    pub fn snapshot(&self) -> Value {
        self.throttles.snapshot()
    }

    /// Restores ledgers saved by [`Policies::snapshot`]. Ledgers of
    /// throttles no longer configured are ignored; malformed input leaves
    /// the affected ledger empty.
    pub fn restore(&mut self, state: &Value) {
        self.throttles.restore(state);
    }
}

/// The zone a user's local time is read in: their `timezone` attribute when
/// it is a valid IANA name, else `default` (the Project's
/// `default_timezone`). Cheap: a perfect-hash lookup, no allocation.
pub fn user_timezone(profile: &dyn Profile, default: chrono_tz::Tz) -> chrono_tz::Tz {
    profile
        .text("timezone")
        .and_then(|s| s.trim().parse::<chrono_tz::Tz>().ok())
        .unwrap_or(default)
}

/// Index of a channel in the per-channel policy indices.
fn channel_index(channel: Channel) -> usize {
    match channel {
        Channel::Email => 0,
        Channel::Push => 1,
        Channel::Webhook => 2,
    }
}

/// A policy duration as a `TimeDelta`, saturating instead of panicking.
fn delta(d: journeys::scalar::Duration) -> chrono::TimeDelta {
    i64::try_from(d.secs())
        .ok()
        .and_then(chrono::TimeDelta::try_seconds)
        .unwrap_or(chrono::TimeDelta::MAX)
}

/// `t + d`, saturating at the end of representable time.
fn add(t: DateTime<Utc>, d: chrono::TimeDelta) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating at the start of representable time.
fn sub(t: DateTime<Utc>, d: chrono::TimeDelta) -> DateTime<Utc> {
    t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Step 1: subscription, then address (missing, then bounced).
fn subscription(msg: &Outgoing<'_>) -> Option<&'static str> {
    let unsubscribed = |key: &str| msg.profile.subscription(key) == Some(false);
    if unsubscribed(msg.channel.as_str()) || unsubscribed(msg.category) {
        return Some("unsubscribed");
    }
    let has_address = match msg.channel {
        Channel::Email => msg.profile.text("email").is_some_and(|e| !e.is_empty()),
        Channel::Push => msg.profile.has_push_token(),
        Channel::Webhook => true,
    };
    if !has_address {
        return Some("no_address");
    }
    let bounced = msg.channel == Channel::Email && msg.profile.text(EMAIL_STATUS) == Some(BOUNCED);
    bounced.then_some("bounced")
}

/// The profile attribute that records the email address's deliverability.
pub const EMAIL_STATUS: &str = "email_status";
/// Its value once the address bounced for good (an SMTP 5xx, a hard
/// bounce reported by the provider): email is suppressed with reason
/// `bounced` until a different `email` arrives.
pub const BOUNCED: &str = "bounced";
