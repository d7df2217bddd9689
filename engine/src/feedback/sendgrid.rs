//! SendGrid's Event Webhook: a JSON array of events, optionally signed
//! (ECDSA P-256 over SHA-256 of the timestamp header followed by the raw
//! body; the signature in `X-Twilio-Email-Event-Webhook-Signature` as
//! base64 DER, the timestamp in `X-Twilio-Email-Event-Webhook-Timestamp`,
//! the verification key from SendGrid's settings as base64 DER or PEM).
//!
//! The message is named by `smtp-id` (the `Message-ID` as SendGrid
//! received it) or a custom argument `sluice_key` (our key as is).

use base64::Engine as _;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde_json::Value;

use super::{first_key, Kind, Malformed, Notice};

/// The signature header.
pub const SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
/// The timestamp header.
pub const TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

/// A SendGrid verification key.
#[derive(Debug, Clone)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// From the key as SendGrid shows it (base64 of the DER
    /// SubjectPublicKeyInfo) or as PEM.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let text = text.trim();
        let key = if text.starts_with("-----BEGIN") {
            VerifyingKey::from_public_key_pem(text).map_err(|e| e.to_string())?
        } else {
            let der = base64::engine::general_purpose::STANDARD
                .decode(text.split_whitespace().collect::<String>())
                .map_err(|e| format!("not base64: {e}"))?;
            VerifyingKey::from_public_key_der(&der).map_err(|e| e.to_string())?
        };
        Ok(PublicKey(key))
    }

    /// Whether `signature` (base64 DER) signs `timestamp` + `body`.
    pub fn verify(&self, timestamp: &[u8], body: &[u8], signature: &[u8]) -> bool {
        let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature.trim_ascii())
        else {
            return false;
        };
        let Ok(sig) = Signature::from_der(&der) else {
            return false;
        };
        let mut signed = Vec::with_capacity(timestamp.len() + body.len());
        signed.extend_from_slice(timestamp.trim_ascii());
        signed.extend_from_slice(body);
        self.0.verify(&signed, &sig).is_ok()
    }
}

/// The notices in an Event Webhook post (one per event).
pub fn notices(body: &[u8]) -> Result<Vec<Notice>, Malformed> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Malformed(format!("not a SendGrid event array: {e}")))?;
    let Some(events) = v.as_array() else {
        return Err(Malformed("not a SendGrid event array".into()));
    };
    Ok(events.iter().map(notice).collect())
}

fn notice(e: &Value) -> Notice {
    let s = |k: &str| e.get(k).and_then(Value::as_str);
    let kind = match s("event") {
        Some("bounce") if s("type") == Some("blocked") => Kind::SoftBounce,
        Some("bounce") => Kind::HardBounce,
        Some("deferred") => Kind::SoftBounce,
        Some("spamreport") => Kind::Complaint,
        Some("delivered") => Kind::Delivery,
        _ => Kind::Other,
    };
    let custom = s("sluice_key").filter(|k| super::key_of(&format!("<{k}@x>")).is_some());
    Notice {
        kind,
        key: custom
            .map(str::to_owned)
            .or_else(|| first_key(s("smtp-id"))),
        address: s("email").map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::EncodePublicKey;
    use serde_json::json;

    use super::*;

    const K: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn events_by_kind() {
        let body = json!([
            {"email": "a@x.io", "event": "bounce", "type": "bounce", "smtp-id": format!("<{K}@shop.example>")},
            {"email": "a@x.io", "event": "bounce", "type": "blocked", "smtp-id": format!("<{K}@shop.example>")},
            {"email": "a@x.io", "event": "deferred"},
            {"email": "a@x.io", "event": "spamreport", "sluice_key": K},
            {"email": "a@x.io", "event": "delivered"},
            {"email": "a@x.io", "event": "open", "smtp-id": "<x@sendgrid.net>"},
        ])
        .to_string();
        let n = notices(body.as_bytes()).expect("parse");
        let kinds: Vec<Kind> = n.iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::HardBounce,
                Kind::SoftBounce,
                Kind::SoftBounce,
                Kind::Complaint,
                Kind::Delivery,
                Kind::Other
            ]
        );
        assert_eq!(n[0].key.as_deref(), Some(K));
        assert_eq!(n[3].key.as_deref(), Some(K));
        assert_eq!(n[5].key, None);
        assert_eq!(n[0].address.as_deref(), Some("a@x.io"));
        assert!(notices(b"{}").is_err());
    }

    #[test]
    fn signatures() {
        let sk = SigningKey::random(&mut rand::rngs::OsRng);
        let der = sk.verifying_key().to_public_key_der().expect("der");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
        let key = PublicKey::parse(&b64).expect("key");
        let pem = sk
            .verifying_key()
            .to_public_key_pem(Default::default())
            .expect("pem");
        let key2 = PublicKey::parse(&pem).expect("pem key");
        let body = br#"[{"event":"bounce"}]"#;
        let sig: Signature = sk.sign(b"1700000000[{\"event\":\"bounce\"}]");
        let sig = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
        assert!(key.verify(b"1700000000", body, sig.as_bytes()));
        assert!(key2.verify(b"1700000000", body, sig.as_bytes()));
        assert!(!key.verify(b"1700000001", body, sig.as_bytes()));
        assert!(!key.verify(b"1700000000", br#"[{"event":"bouncf"}]"#, sig.as_bytes()));
        assert!(!key.verify(b"1700000000", body, b"not base64!"));
        assert!(PublicKey::parse("garbage").is_err());
    }
}
