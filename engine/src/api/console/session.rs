//! Console sessions: after a login with the admin token, the browser keeps
//! a signed session in a cookie (`HttpOnly; SameSite=Strict; Path=/`,
//! `Secure` when the public URL is https), never the token itself.
//!
//! A session is `expiry.nonce.mac`: the expiry (Unix ms), a random nonce,
//! and an HMAC-SHA256 of both under a key derived from the admin token. So
//! sessions survive a restart, end at their expiry, and all end when the
//! admin token changes. Knows nothing of HTTP routing or pages.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::Millis;

/// The cookie's name.
pub const COOKIE: &str = "sluice_console";

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks sessions.
#[derive(Clone)]
pub struct Sessions {
    key: Vec<u8>,
    ttl: Millis,
    secure: bool,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .field("secure", &self.secure)
            .finish_non_exhaustive()
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

impl Sessions {
    /// Sessions for `admin_token`, valid for `ttl` ms; `secure` adds the
    /// cookie's `Secure` attribute.
    pub fn new(admin_token: &str, ttl: Millis, secure: bool) -> Sessions {
        let mut m = mac(admin_token.as_bytes());
        m.update(b"sluice console session key v1");
        Sessions {
            key: m.finalize().into_bytes().to_vec(),
            ttl: ttl.max(1),
            secure,
        }
    }

    fn sign(&self, payload: &str) -> String {
        let mut m = mac(&self.key);
        m.update(payload.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    /// A new session starting at `now`: the cookie's value.
    pub fn issue(&self, now: Millis) -> String {
        let mut nonce = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let payload = format!("{}.{}", now.saturating_add(self.ttl), hex::encode(nonce));
        let sig = self.sign(&payload);
        format!("{payload}.{sig}")
    }

    /// Whether `value` is a session we signed that has not expired at `now`.
    pub fn valid(&self, value: &str, now: Millis) -> bool {
        let Some((payload, sig)) = value.rsplit_once('.') else {
            return false;
        };
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        let mut m = mac(&self.key);
        m.update(payload.as_bytes());
        if m.verify_slice(&sig).is_err() {
            return false;
        }
        payload
            .split_once('.')
            .and_then(|(exp, _)| exp.parse::<Millis>().ok())
            .is_some_and(|exp| now < exp)
    }

    /// The `Set-Cookie` value that stores `session`.
    pub fn cookie(&self, session: &str) -> String {
        format!(
            "{COOKIE}={session}; Max-Age={}; Path=/; HttpOnly; SameSite=Strict{}",
            self.ttl / 1000,
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that ends the session in the browser.
    pub fn clear(&self) -> String {
        format!(
            "{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_until_it_expires() {
        let s = Sessions::new("admin", 60_000, false);
        let v = s.issue(1_000);
        assert!(s.valid(&v, 1_000));
        assert!(s.valid(&v, 60_999));
        assert!(!s.valid(&v, 61_000));
    }

    #[test]
    fn forged_or_altered_sessions_are_refused() {
        let s = Sessions::new("admin", 60_000, false);
        let v = s.issue(0);
        let (payload, sig) = v.rsplit_once('.').unwrap();
        let later = payload.replacen("60000", "99999999", 1);
        assert!(!s.valid(&format!("{later}.{sig}"), 0));
        assert!(!s.valid("", 0));
        assert!(!s.valid("1.2.zz", 0));
        assert!(!s.valid(&format!("{payload}.{}", "0".repeat(64)), 0));
        // Another admin token: another key.
        assert!(!Sessions::new("other", 60_000, false).valid(&v, 0));
        // The token itself is not in the cookie.
        assert!(!s.cookie(&v).contains("admin"));
    }

    #[test]
    fn cookies_carry_their_attributes() {
        let s = Sessions::new("admin", 3_600_000, true);
        let c = s.cookie("x");
        for attr in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Secure",
            "Max-Age=3600",
        ] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!Sessions::new("a", 1000, false)
            .cookie("x")
            .contains("Secure"));
        assert!(s.clear().contains("Max-Age=0"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; sluice_console=abc.def ".parse().unwrap());
        assert_eq!(from_headers(&h).as_deref(), Some("abc.def"));
        assert_eq!(from_headers(&axum::http::HeaderMap::new()), None);
    }
}
