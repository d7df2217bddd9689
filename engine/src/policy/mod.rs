//! Message policies (FORMAT.md §8): the decision taken for a message at the
//! moment it would be sent. Pure logic over the compiled policies, the
//! user's profile and recent sends, and the throttles' ledgers; the engine
//! persists what this module returns and never decides on its own.
//!
//! Order: subscription/address → frequency caps → quiet hours → throttles.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use journeys::compiled::{Channel, Config};

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
    pub profile: &'a Map<String, Value>,
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
    _default_timezone: chrono_tz::Tz,
}

impl Policies {
    pub fn new(config: &Config) -> Self {
        Policies {
            _default_timezone: config.project.default_timezone,
        }
    }

    /// How far back a user's sent log must reach for the caps to count.
    pub fn sent_horizon(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::zero()
    }

    /// Decides what happens to `msg` at `now`, given the user's sends
    /// (any order, may include ones older than the horizon).
    pub fn decide(&mut self, msg: &Outgoing<'_>, _sent: &[SentRecord], _now: DateTime<Utc>) -> Decision {
        if let Some(reason) = subscription(msg) {
            return Decision::Suppress { reason: reason.to_owned() };
        }
        Decision::Send
    }

    /// The throttles' ledgers, to persist with the store.
    pub fn snapshot(&self) -> Value {
        Value::Null
    }

    /// Restores ledgers saved by [`Policies::snapshot`].
    pub fn restore(&mut self, _state: &Value) {}
}

/// Step 1: subscription and address.
fn subscription(msg: &Outgoing<'_>) -> Option<&'static str> {
    let subs = msg.profile.get("subscriptions").and_then(Value::as_object);
    let unsubscribed = |key: &str| subs.and_then(|s| s.get(key)).and_then(Value::as_bool) == Some(false);
    if unsubscribed(msg.channel.as_str()) || unsubscribed(msg.category) {
        return Some("unsubscribed");
    }
    let has_address = match msg.channel {
        Channel::Email => msg
            .profile
            .get("email")
            .and_then(Value::as_str)
            .is_some_and(|e| !e.is_empty()),
        Channel::Push => msg
            .profile
            .get("push_tokens")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|v| v.as_str().is_some_and(|s| !s.is_empty()))),
        Channel::Webhook => true,
    };
    (!has_address).then_some("no_address")
}
