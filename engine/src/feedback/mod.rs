//! What email providers report after delivery (RUN.md §3, docs/feedback.md):
//! bounces, complaints and the rest, read from each provider's own
//! notification format into one shape ([`Notice`]), with the message each
//! one is about recovered from its `Message-ID` (`<{key}@{domain}>`) or the
//! provider's copy of it; the providers' own signatures (SNS message
//! signatures in [`sns`], SendGrid's signed Event Webhook in [`sendgrid`]);
//! and the counts of what came in ([`counts`]).
//!
//! Pure: knows nothing of HTTP, the store or the network. The API fetches
//! SNS certificates and hands notices to the engine, which matches them to
//! users and changes profiles.

pub mod counts;
pub mod postmark;
pub mod sendgrid;
pub mod ses;
pub mod sns;

use serde::{Deserialize, Serialize};

pub use counts::FeedbackCounts;

/// Who sent a notification: the `{provider}` of
/// `POST /v1/feedback/{provider}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon SES, through an SNS topic.
    Ses,
    /// SendGrid's Event Webhook.
    Sendgrid,
    /// Postmark's bounce and spam-complaint webhooks.
    Postmark,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Ses, Provider::Sendgrid, Provider::Postmark];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ses => "ses",
            Provider::Sendgrid => "sendgrid",
            Provider::Postmark => "postmark",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// What a notification says happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The address refused the message for good: it is marked bounced.
    HardBounce,
    /// A temporary failure (mailbox full, a deferral): counted only.
    SoftBounce,
    /// The recipient reported the message as spam: unsubscribed from
    /// every non-transactional category.
    Complaint,
    /// Delivered: counted only.
    Delivery,
    /// An SNS subscription (or unsubscription) confirmation: concerns no
    /// message.
    Subscription,
    /// Anything else the provider reports (opens, clicks, drops, …):
    /// counted only.
    Other,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::HardBounce,
        Kind::SoftBounce,
        Kind::Complaint,
        Kind::Delivery,
        Kind::Subscription,
        Kind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::HardBounce => "hard_bounce",
            Kind::SoftBounce => "soft_bounce",
            Kind::Complaint => "complaint",
            Kind::Delivery => "delivery",
            Kind::Subscription => "subscription",
            Kind::Other => "other",
        }
    }
}

/// One provider event about one recipient of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: Kind,
    /// Our idempotency key, recovered from the message's `Message-ID`
    /// (`None`: the notification did not carry it in any form we know).
    pub key: Option<String>,
    /// The recipient address the event is about.
    pub address: Option<String>,
}

/// Why a notification could not be read (answered 400: the provider's
/// format changed, or it is not from that provider at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Our message key from a `Message-ID` value (`<{key}@{domain}>`, with or
/// without the angle brackets, whitespace around ignored): the 32
/// lower-case hex digits of `hash::message_key` before the `@`. `None`
/// for any other Message-ID (one the provider made up).
pub fn key_of(message_id: &str) -> Option<String> {
    let id = message_id.trim();
    let id = id.strip_prefix('<').unwrap_or(id);
    let id = id.strip_suffix('>').unwrap_or(id);
    let (local, domain) = id.split_once('@')?;
    let is_key = local.len() == 32
        && local
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_key && !domain.is_empty() && !domain.contains(['<', '>', '@', ' ']))
        .then(|| local.to_owned())
}

/// The key of the first `Message-ID:` header in raw message text (a
/// bounce's dump of the original message) that is one of ours.
pub fn key_in_headers(text: &str) -> Option<String> {
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("message-id") {
            continue;
        }
        let mut value = value.to_owned();
        // A folded header continues on lines starting with whitespace.
        while let Some(next) = lines.peek() {
            if next.starts_with([' ', '\t']) {
                value.push_str(next);
                lines.next();
            } else {
                break;
            }
        }
        if let Some(k) = key_of(&value) {
            return Some(k);
        }
    }
    None
}

/// The first of `candidates` that names one of our messages.
pub(crate) fn first_key<'a>(candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates.into_iter().find_map(key_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn keys_from_message_ids() {
        assert_eq!(key_of(&format!("<{K}@shop.example>")), Some(K.to_owned()));
        assert_eq!(key_of(&format!(" {K}@shop.example ")), Some(K.to_owned()));
        // Not ours: another length, upper case, no domain, a provider's id.
        assert_eq!(key_of(&format!("<{}@shop.example>", &K[1..])), None);
        assert_eq!(key_of(&format!("<{}@x>", K.to_uppercase())), None);
        assert_eq!(key_of(&format!("<{K}@>")), None);
        assert_eq!(key_of(&format!("<{K}>")), None);
        assert_eq!(key_of("<0100018c-aaaa@email.amazonses.com>"), None);
        assert_eq!(key_of(""), None);
    }

    #[test]
    fn keys_from_raw_headers() {
        let dump = format!(
            "Return-Path: <b@x>\r\nSubject: hi\r\nMessage-Id:\r\n <{K}@shop.example>\r\nTo: a@b\r\n\r\nbody"
        );
        assert_eq!(key_in_headers(&dump), Some(K.to_owned()));
        let theirs =
            format!("Message-ID: <abc@mtasv.net>\nX-Orig: 1\nMessage-ID: <{K}@s.example>\n");
        assert_eq!(key_in_headers(&theirs), Some(K.to_owned()));
        assert_eq!(key_in_headers("Subject: no id here\n"), None);
    }

    #[test]
    fn names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
        }
        assert_eq!(Provider::parse("mailgun"), None);
    }
}
