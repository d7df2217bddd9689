//! DKIM signing of every email (RUN.md §3: `dkim: { domain, selector,
//! private_key_env }` on the email channel), with lettre's signer.
//!
//! Owns: reading the private key from the environment variable the
//! channel names, in the forms people have: RSA as PKCS#1 PEM (`BEGIN RSA
//! PRIVATE KEY`, what lettre takes) or PKCS#8 PEM (`BEGIN PRIVATE KEY`,
//! what `openssl genpkey` writes; converted to PKCS#1 here), Ed25519 as
//! PKCS#8 PEM (RFC 8410) or the base64 of its 32 bytes. A value whose line
//! breaks were written as `\n` (common in env files) is accepted too. A
//! missing or unreadable key is an [`Error`] naming the variable, at
//! start-up: never a failure at the first send.
//!
//! The signature covers `From`, `To`, `Subject`, `Date`, `Message-ID`,
//! `List-Unsubscribe` and `List-Unsubscribe-Post` (a header a message does
//! not carry, such as `List-Unsubscribe` on a transactional email, is
//! still listed in `h=`: by RFC 6376 §5.4 that signs its absence, so it
//! cannot be added on the way), with relaxed/relaxed canonicalisation
//! (robust to the header refolding and whitespace changes relays make).
//! lettre stamps `t=` with the system clock: that is the signer's, not a
//! decision of the engine.
//!
//! Knows nothing of: SMTP, the maildir, the message's content.

use std::sync::Arc;

use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;

use journeys::compiled::DkimSettings;

use super::Error;

/// The headers every signature covers (RUN.md §3), in this order.
pub const SIGNED_HEADERS: [&str; 7] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The OID of Ed25519 keys (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";
/// The OID of RSA keys (PKCS#1 `rsaEncryption`).
const RSA_OID: &str = "1.2.840.113549.1.1.1";

/// A channel's DKIM signer. Its `Debug` shows the domain and selector,
/// never the key.
#[derive(Clone)]
pub struct Dkim {
    config: Arc<DkimConfig>,
    domain: String,
    selector: String,
    algorithm: &'static str,
}

impl std::fmt::Debug for Dkim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dkim")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl Dkim {
    /// The signer the channel's `dkim` describes; `env` reads the key's
    /// variable.
    pub fn from_settings(
        settings: &DkimSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Dkim, Error> {
        let var = &settings.private_key_env;
        let value = env(var)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| Error::MissingEnv {
                var: var.clone(),
                field: "channels.email.dkim.private_key_env",
            })?;
        let bad = |reason: String| Error::BadKey {
            var: var.clone(),
            reason,
        };
        let (key, algorithm) = signing_key(&value).map_err(bad)?;
        let headers = SIGNED_HEADERS
            .iter()
            .map(|h| HeaderName::new_from_ascii_str(h))
            .collect();
        let config = DkimConfig::new(
            settings.selector.clone(),
            settings.domain.clone(),
            key,
            headers,
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        );
        Ok(Dkim {
            config: Arc::new(config),
            domain: settings.domain.clone(),
            selector: settings.selector.clone(),
            algorithm,
        })
    }

    /// Adds the `DKIM-Signature` header.
    pub fn sign(&self, email: &mut lettre::Message) {
        email.sign(&self.config);
    }

    /// `rsa-sha256` or `ed25519-sha256`.
    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }
}

/// The key in `value`, and its algorithm's name; or why it is not one.
fn signing_key(value: &str) -> Result<(DkimSigningKey, &'static str), String> {
    let value = if value.contains("\\n") && !value.contains('\n') {
        value.replace("\\n", "\n")
    } else {
        value.to_owned()
    };
    let text = value.trim();
    let rsa = |pem: &str| {
        DkimSigningKey::new(pem, DkimSigningAlgorithm::Rsa)
            .map(|k| (k, "rsa-sha256"))
            .map_err(|e| format!("not a usable RSA key: {e}"))
    };
    let ed25519 = |raw: &[u8]| {
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw);
        DkimSigningKey::new(&b64, DkimSigningAlgorithm::Ed25519)
            .map(|k| (k, "ed25519-sha256"))
            .map_err(|e| format!("not a usable Ed25519 key: {e}"))
    };
    if text.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
        return rsa(text);
    }
    if text.starts_with("-----BEGIN PRIVATE KEY-----") {
        let (label, doc) = rsa::pkcs8::der::SecretDocument::from_pem(text)
            .map_err(|e| format!("not a PEM document: {e}"))?;
        if label != "PRIVATE KEY" {
            return Err(format!("a PEM `{label}`, not a private key"));
        }
        let info = rsa::pkcs8::PrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| format!("not a PKCS#8 private key: {e}"))?;
        let oid = info.algorithm.oid.to_string();
        return match oid.as_str() {
            RSA_OID => {
                let key = rsa::RsaPrivateKey::from_pkcs8_der(doc.as_bytes())
                    .map_err(|e| format!("not a usable RSA key: {e}"))?;
                let pem = key
                    .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                    .map_err(|e| format!("cannot re-encode the RSA key: {e}"))?;
                rsa(&pem)
            }
            // The private key is an OCTET STRING holding the 32 bytes.
            ED25519_OID => match info.private_key {
                [0x04, 0x20, raw @ ..] if raw.len() == 32 => ed25519(raw),
                _ => Err("an Ed25519 key of the wrong length".into()),
            },
            other => Err(format!(
                "a key of algorithm {other}: DKIM takes RSA or Ed25519"
            )),
        };
    }
    if text.starts_with("-----BEGIN") {
        let label = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_matches('-')
            .trim_start_matches("BEGIN ");
        return Err(format!(
            "a PEM `{label}`: expected `RSA PRIVATE KEY` or `PRIVATE KEY`"
        ));
    }
    match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text) {
        Ok(raw) if raw.len() == 32 => ed25519(&raw),
        Ok(raw) => Err(format!(
            "base64 of {} bytes: an Ed25519 key is 32 bytes (or give a PEM key)",
            raw.len()
        )),
        Err(_) => Err("neither a PEM key nor the base64 of an Ed25519 key".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DkimSettings {
        DkimSettings {
            domain: "shop.example".into(),
            selector: "s1".into(),
            private_key_env: "DKIM_KEY".into(),
        }
    }

    fn load(value: Option<&str>) -> Result<Dkim, Error> {
        let value = value.map(str::to_owned);
        Dkim::from_settings(&settings(), &move |_| value.clone())
    }

    /// An Ed25519 key in PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes it.
    const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINgZsbqgbHWBmTTFk11L/eLdr1ugCmBQrEaJZp8UJlKx\n-----END PRIVATE KEY-----\n";

    #[test]
    fn a_missing_variable_is_named() {
        let e = load(None).expect_err("missing");
        assert!(e.to_string().contains("DKIM_KEY"), "{e}");
        let e = load(Some("  ")).expect_err("empty");
        assert!(e.to_string().contains("DKIM_KEY"), "{e}");
    }

    #[test]
    fn an_unreadable_key_is_named_with_the_reason() {
        for bad in [
            "not a key",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            "AAAA",
        ] {
            let e = load(Some(bad)).expect_err(bad);
            let text = e.to_string();
            assert!(text.contains("DKIM_KEY"), "{text}");
            assert!(!text.contains("AAAA"), "the key leaks into {text}");
        }
    }

    #[test]
    fn ed25519_keys_load_as_pem_base64_and_escaped_newlines() {
        let pem = load(Some(ED25519_PEM)).expect("pem");
        assert_eq!(pem.algorithm(), "ed25519-sha256");
        let raw = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
        assert_eq!(load(Some(&raw)).expect("raw").algorithm(), "ed25519-sha256");
        let escaped = ED25519_PEM.replace('\n', "\\n");
        assert_eq!(
            load(Some(&escaped)).expect("escaped").algorithm(),
            "ed25519-sha256"
        );
        assert!(!format!("{pem:?}").contains("MC4C"));
    }

    #[test]
    fn a_signed_email_carries_the_headers_of_run_md() {
        let dkim = load(Some(ED25519_PEM)).expect("key");
        let mut email = lettre::Message::builder()
            .from("A <a@shop.example>".parse().expect("from"))
            .to("b@example.com".parse().expect("to"))
            .subject("hi")
            .body(String::from("hello"))
            .expect("email");
        dkim.sign(&mut email);
        let text = String::from_utf8(email.formatted()).expect("utf-8");
        let sig = text
            .split("\r\n")
            .skip_while(|l| !l.starts_with("DKIM-Signature:"))
            .take_while(|l| !l.is_empty())
            .collect::<String>();
        assert!(sig.contains("a=ed25519-sha256"), "{sig}");
        assert!(sig.contains("d=shop.example"), "{sig}");
        assert!(sig.contains("s=s1"), "{sig}");
        assert!(sig.contains("c=relaxed/relaxed"), "{sig}");
        assert!(
            sig.replace(' ', "").contains(
                "h=from:to:subject:date:message-id:list-unsubscribe:list-unsubscribe-post"
            ),
            "{sig}"
        );
    }
}
