//! HMAC-SHA256, twice: the webhook signature (`Sluice-Signature`, RUN.md
//! §3; the receiver's side is in docs/webhooks.md) and the one-click
//! unsubscribe token (RUN.md §2: an HMAC-signed user, category and message
//! key, so a forged or altered token changes nothing).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use journeys::compiled::{Config, TRANSACTIONAL};

use crate::dispatch::Message;

type HmacSha256 = Hmac<Sha256>;

/// Signs webhook bodies: `t={unix seconds},v1={hex HMAC-SHA256 of "{t}.{raw body}"}`.
#[derive(Clone)]
pub struct Signer {
    /// Keyed once; cloned per signature.
    mac: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// Why a signature was refused (the receiver's side, for tests and Rust
/// receivers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the header is not `t=<seconds>,v1=<hex>`")]
    Malformed,
    #[error("the timestamp is {age} s away from now, more than the {tolerance} s allowed")]
    Stale { age: i64, tolerance: i64 },
    #[error("no v1 signature matches")]
    Mismatch,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            // HMAC takes keys of any length.
            mac: <HmacSha256 as Mac>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC accepts every key length")),
        }
    }

    fn mac(&self, t: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The hex signature of `body` sent at `t` (Unix seconds).
    pub fn signature(&self, t: i64, body: &[u8]) -> String {
        hex::encode(self.mac(t, body).finalize().into_bytes())
    }

    /// The `Sluice-Signature` header value.
    pub fn header(&self, t: i64, body: &[u8]) -> String {
        format!("t={t},v1={}", self.signature(t, body))
    }

    /// Checks a `Sluice-Signature` header as a receiver must: the HMAC over
    /// the exact bytes received, compared in constant time, and `t` within
    /// `tolerance` seconds of `now` (300 in the docs).
    pub fn verify(
        &self,
        header: &str,
        body: &[u8],
        now: i64,
        tolerance: i64,
    ) -> Result<(), VerifyError> {
        let mut t = None;
        let mut sigs = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = v.parse::<i64>().ok(),
                Some(("v1", v)) => sigs.push(v),
                _ => {}
            }
        }
        let t = t.ok_or(VerifyError::Malformed)?;
        if sigs.is_empty() {
            return Err(VerifyError::Malformed);
        }
        if now.abs_diff(t) > tolerance.unsigned_abs() {
            return Err(VerifyError::Stale {
                age: now.saturating_sub(t),
                tolerance,
            });
        }
        for sig in sigs {
            let Ok(bytes) = hex::decode(sig) else {
                continue;
            };
            if self.mac(t, body).verify_slice(&bytes).is_ok() {
                return Ok(());
            }
        }
        Err(VerifyError::Mismatch)
    }
}

/// Where a message's one-click unsubscribe link points, if it has one.
pub trait UnsubscribeLinks: Send + Sync {
    /// `None` for transactional messages (RUN.md §3: they carry no link).
    fn url(&self, message: &Message) -> Option<String>;
}

/// No links at all (tests, or a service without a public URL).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLinks;

impl UnsubscribeLinks for NoLinks {
    fn url(&self, _: &Message) -> Option<String> {
        None
    }
}

/// What an unsubscribe token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub user: String,
    pub category: String,
    pub key: String,
}

/// Makes and checks `{public_url}/v1/unsubscribe/{token}` links. The token
/// is `{hex user}.{hex category}.{hex key}.{hex HMAC-SHA256, 128 bits}`: URL-safe
/// whatever the user id, and refused (`None`) when any part was altered.
///
/// A message's link names the category of the journey version that sent
/// it. The versions known at start come from the config; a journey (or a
/// version) deployed while the service runs is learned from the outbox
/// entries on their way to the providers ([`UnsubscribeSigner::learn`]), so
/// its emails carry the same link as its templates' `message.unsubscribe_url`.
pub struct UnsubscribeSigner {
    base: String,
    mac: HmacSha256,
    /// Journey id → category (any version): the fallback.
    categories: HashMap<String, String>,
    /// Journey id → version → category, as learned.
    versions: RwLock<HashMap<String, HashMap<u32, String>>>,
}

impl UnsubscribeSigner {
    /// `categories` maps journey ids to their categories; a message of a
    /// journey not in it, nor learned, gets no link.
    pub fn new(
        public_url: &str,
        secret: &[u8],
        categories: impl IntoIterator<Item = (String, String)>,
    ) -> UnsubscribeSigner {
        UnsubscribeSigner {
            base: public_url.trim_end_matches('/').to_owned(),
            mac: <HmacSha256 as Mac>::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC accepts every key length")),
            categories: categories.into_iter().collect(),
            versions: RwLock::new(HashMap::new()),
        }
    }

    /// The categories of every journey in `config`.
    pub fn for_config(public_url: &str, secret: &[u8], config: &Config) -> UnsubscribeSigner {
        let signer = UnsubscribeSigner::new(
            public_url,
            secret,
            config
                .journeys
                .iter()
                .map(|j| (j.id.clone(), j.category.clone())),
        );
        for j in &config.journeys {
            signer.learn(&j.id, j.version, &j.category);
        }
        signer
    }

    /// Messages of `journey` at `version` belong to `category` (the
    /// category their outbox entry was committed with).
    pub fn learn(&self, journey: &str, version: u32, category: &str) {
        let known = self
            .versions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(journey)
            .and_then(|v| v.get(&version))
            .is_some_and(|c| c == category);
        if !known {
            self.versions
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(journey.to_owned())
                .or_default()
                .insert(version, category.to_owned());
        }
    }

    /// The category of `message`'s journey version, if known.
    fn category_of(&self, message: &Message) -> Option<String> {
        let learned = self
            .versions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&message.journey)
            .and_then(|v| v.get(&message.version))
            .cloned();
        learned.or_else(|| self.categories.get(&message.journey).cloned())
    }

    fn mac(&self, user: &str, category: &str, key: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(b"sluice-unsubscribe");
        for part in [user, category, key] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    pub fn token(&self, user: &str, category: &str, key: &str) -> String {
        let tag = self.mac(user, category, key).finalize().into_bytes();
        format!(
            "{}.{}.{}.{}",
            hex::encode(user),
            hex::encode(category),
            hex::encode(key),
            hex::encode(&tag[..16])
        )
    }

    /// What a token says, or `None` when it is malformed or its HMAC does
    /// not match (compared in constant time).
    pub fn verify(&self, token: &str) -> Option<Unsubscribe> {
        let mut parts = token.split('.');
        let mut next = || parts.next().and_then(|p| hex::decode(p).ok());
        let (user, category, key, tag) = (next()?, next()?, next()?, next()?);
        if parts.next().is_some() {
            return None;
        }
        let (user, category, key) = (
            String::from_utf8(user).ok()?,
            String::from_utf8(category).ok()?,
            String::from_utf8(key).ok()?,
        );
        self.mac(&user, &category, &key)
            .verify_truncated_left(&tag)
            .ok()?;
        Some(Unsubscribe {
            user,
            category,
            key,
        })
    }
}

impl UnsubscribeSigner {
    /// The link for a message of `category` to `user` with `key`; `None`
    /// for transactional messages.
    pub fn link(&self, user: &str, category: &str, key: &str) -> Option<String> {
        if category == TRANSACTIONAL {
            return None;
        }
        Some(format!(
            "{}/v1/unsubscribe/{}",
            self.base,
            self.token(user, category, key)
        ))
    }
}

impl UnsubscribeLinks for UnsubscribeSigner {
    fn url(&self, message: &Message) -> Option<String> {
        let category = self.category_of(message)?;
        self.link(&message.user, &category, &message.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector_and_verifies() {
        // Computed independently: printf '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac whsec_test
        let s = Signer::new(b"whsec_test");
        let body = br#"{"a":1}"#;
        let h = s.header(1_700_000_000, body);
        assert_eq!(
            h,
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_eq!(s.verify(&h, body, 1_700_000_100, 300), Ok(()));
        assert_eq!(
            s.verify(&h, br#"{"a":2}"#, 1_700_000_100, 300),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            s.verify(&h, body, 1_700_000_301, 300),
            Err(VerifyError::Stale { age: 301, .. })
        ));
        assert_eq!(
            Signer::new(b"other").verify(&h, body, 1_700_000_000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            s.verify("v1=abc", body, 0, 300),
            Err(VerifyError::Malformed)
        );
        // Extreme timestamps are stale, never an overflow.
        for t in [i64::MIN, i64::MAX] {
            assert!(matches!(
                s.verify(&format!("t={t},v1=00"), body, -2, 300),
                Err(VerifyError::Stale { .. })
            ));
        }
    }

    #[test]
    fn unsubscribe_tokens_round_trip_and_refuse_tampering() {
        let u = UnsubscribeSigner::new(
            "https://hooks.example/",
            b"secret",
            [("welcome".to_owned(), "marketing".to_owned())],
        );
        let t = u.token("user 1/ü", "marketing", "k1");
        let back = u.verify(&t).expect("valid");
        assert_eq!(back.user, "user 1/ü");
        assert_eq!(back.category, "marketing");
        assert_eq!(back.key, "k1");
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.'));
        let forged = t.replacen(&hex::encode("marketing"), &hex::encode("orders"), 1);
        assert_eq!(u.verify(&forged), None);
        let other = UnsubscribeSigner::new("https://hooks.example", b"other", []);
        assert_eq!(other.verify(&t), None);
        assert_eq!(u.verify("zz.00.00.00"), None);
        assert_eq!(u.verify(&format!("{t}.00")), None);
    }

    fn email_of(journey: &str, version: u32) -> Message {
        Message {
            key: "k1".into(),
            at: 0,
            user: "u1".into(),
            journey: journey.into(),
            version,
            step: "s".into(),
            channel: journeys::compiled::Channel::Email,
            template: "t".into(),
            content: crate::dispatch::Content::Email {
                to: Some("a@example.com".into()),
                from: None,
                reply_to: None,
                subject: "hi".into(),
                text: Some("x".into()),
                html: None,
            },
        }
    }

    #[test]
    fn a_journey_version_deployed_after_start_gets_its_own_category_link() {
        let u = UnsubscribeSigner::new(
            "https://hooks.example",
            b"secret",
            [("welcome".to_owned(), "marketing".to_owned())],
        );
        assert_eq!(u.url(&email_of("deals", 1)), None, "not known yet");
        u.learn("deals", 1, "deals");
        u.learn("welcome", 2, "onboarding");
        let link = |c: &str| u.link("u1", c, "k1");
        assert_eq!(u.url(&email_of("deals", 1)), link("deals"));
        assert_eq!(u.url(&email_of("welcome", 2)), link("onboarding"));
        // A version not learned falls back to the journey's category.
        assert_eq!(u.url(&email_of("welcome", 1)), link("marketing"));
        u.learn("orders", 1, TRANSACTIONAL);
        assert_eq!(u.url(&email_of("orders", 1)), None);
    }
}
