//! Amazon SNS HTTP(S) deliveries, the envelope SES notifications come in:
//! reading the envelope, building the string SNS signs, checking the
//! signature (`SignatureVersion` 1: RSA PKCS#1 v1.5 over SHA-1, 2: over
//! SHA-256) with the X.509 certificate at `SigningCertURL`, and the rule
//! for which URLs a certificate (or a `SubscribeURL`) may be fetched from.
//!
//! Fetching is the API's business; this module gets the certificate's
//! PEM bytes.

use base64::Engine as _;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::der::{DecodePem, Encode};
use x509_cert::Certificate;

use crate::clock::Millis;

use super::Malformed;

/// What an SNS delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MessageType {
    Notification,
    SubscriptionConfirmation,
    UnsubscribeConfirmation,
}

/// An SNS HTTP delivery's JSON body.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(rename = "Type")]
    pub kind: MessageType,
    #[serde(rename = "MessageId")]
    pub message_id: String,
    #[serde(rename = "TopicArn")]
    pub topic_arn: String,
    #[serde(rename = "Subject", default)]
    pub subject: Option<String>,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    #[serde(rename = "Token", default)]
    pub token: Option<String>,
    #[serde(rename = "SubscribeURL", default)]
    pub subscribe_url: Option<String>,
    #[serde(rename = "SignatureVersion")]
    pub signature_version: String,
    #[serde(rename = "Signature")]
    pub signature: String,
    #[serde(rename = "SigningCertURL", alias = "SigningCertUrl")]
    pub signing_cert_url: String,
}

/// Why an SNS delivery is refused (answered 401, nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("SigningCertURL {0} is not an SNS certificate URL")]
    CertUrl(String),
    #[error("SubscribeURL {0} is not an SNS URL")]
    SubscribeUrl(String),
    #[error("unsupported SignatureVersion `{0}`")]
    Version(String),
    #[error("the signing certificate cannot be read: {0}")]
    Certificate(String),
    #[error("the signing certificate is not valid now")]
    Expired,
    #[error("the signature does not verify")]
    Signature,
    #[error("topic {0} is not one of `api.feedback.sns_topic_arns`")]
    Topic(String),
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Envelope, Malformed> {
        serde_json::from_slice(body).map_err(|e| Malformed(format!("not an SNS message: {e}")))
    }

    /// The string SNS signs: the fields of the message type, in byte
    /// order of their names, each as `name\nvalue\n`.
    pub fn string_to_sign(&self) -> String {
        let mut s = String::new();
        let mut field = |name: &str, value: &str| {
            s.push_str(name);
            s.push('\n');
            s.push_str(value);
            s.push('\n');
        };
        let kind = match self.kind {
            MessageType::Notification => "Notification",
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        };
        field("Message", &self.message);
        field("MessageId", &self.message_id);
        match self.kind {
            MessageType::Notification => {
                if let Some(subject) = &self.subject {
                    field("Subject", subject);
                }
            }
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                field("SubscribeURL", self.subscribe_url.as_deref().unwrap_or(""));
            }
        }
        field("Timestamp", &self.timestamp);
        if self.kind != MessageType::Notification {
            field("Token", self.token.as_deref().unwrap_or(""));
        }
        field("TopicArn", &self.topic_arn);
        field("Type", kind);
        s
    }

    /// Checks the signature with the certificate (PEM) SNS names, valid
    /// at `now`.
    pub fn verify(&self, cert_pem: &[u8], now: Millis) -> Result<(), Refused> {
        let key = public_key(cert_pem, now)?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(self.signature.trim())
            .map_err(|_| Refused::Signature)?;
        let text = self.string_to_sign();
        let ok = match self.signature_version.as_str() {
            "1" => key.verify(
                Pkcs1v15Sign::new::<Sha1>(),
                &Sha1::digest(text.as_bytes()),
                &signature,
            ),
            "2" => key.verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(text.as_bytes()),
                &signature,
            ),
            v => return Err(Refused::Version(v.to_owned())),
        };
        ok.map_err(|_| Refused::Signature)
    }
}

/// The RSA key of a PEM certificate valid at `now`.
fn public_key(cert_pem: &[u8], now: Millis) -> Result<RsaPublicKey, Refused> {
    let cert = Certificate::from_pem(cert_pem).map_err(|e| Refused::Certificate(e.to_string()))?;
    let validity = &cert.tbs_certificate.validity;
    let secs = |t: x509_cert::time::Time| {
        i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
    };
    let now_secs = now.div_euclid(1000);
    if now_secs < secs(validity.not_before) || now_secs > secs(validity.not_after) {
        return Err(Refused::Expired);
    }
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| Refused::Certificate(e.to_string()))?;
    RsaPublicKey::from_public_key_der(&spki).map_err(|e| Refused::Certificate(e.to_string()))
}

/// Where SNS certificates and subscription URLs may be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    /// Production: `https://sns.<region>.amazonaws.com/…` (and
    /// `….amazonaws.com.cn`), nothing else.
    Aws,
    /// URLs starting with this prefix only (tests serve their own
    /// certificate on loopback: `SLUICE_SNS_URL_PREFIX`).
    Prefix(String),
}

impl Hosts {
    /// Whether `url` may be fetched.
    pub fn allows(&self, url: &str) -> bool {
        match self {
            Hosts::Prefix(p) => !p.is_empty() && url.starts_with(p.as_str()),
            Hosts::Aws => {
                let Some(rest) = url.strip_prefix("https://") else {
                    return false;
                };
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                is_sns_host(&rest[..end])
            }
        }
    }
}

/// `sns.<region>.amazonaws.com` or `sns.<region>.amazonaws.com.cn`, with
/// no port, user info or other labels.
fn is_sns_host(host: &str) -> bool {
    let Some(region) = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))
        .and_then(|h| h.strip_prefix("sns."))
    else {
        return false;
    };
    !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sns_hosts_in_production() {
        let h = Hosts::Aws;
        assert!(h.allows("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"));
        assert!(h.allows("https://sns.cn-north-1.amazonaws.com.cn/x.pem"));
        assert!(!h.allows("http://sns.eu-west-1.amazonaws.com/x.pem"));
        assert!(!h.allows("https://sns.eu-west-1.amazonaws.com.evil.example/x.pem"));
        assert!(!h.allows("https://evil.example/sns.eu-west-1.amazonaws.com/x.pem"));
        assert!(!h.allows("https://user@sns.eu-west-1.amazonaws.com/x.pem"));
        assert!(!h.allows("https://sns.eu-west-1.amazonaws.com:8443/x.pem"));
        assert!(!h.allows("https://sqs.eu-west-1.amazonaws.com/x.pem"));
        assert!(!h.allows("https://sns..amazonaws.com/x.pem"));
        let t = Hosts::Prefix("http://127.0.0.1:9/".into());
        assert!(t.allows("http://127.0.0.1:9/cert.pem"));
        assert!(!t.allows("http://127.0.0.1:99/cert.pem"));
        assert!(!Hosts::Prefix(String::new()).allows("http://x"));
    }

    #[test]
    fn the_string_to_sign_follows_the_message_type() {
        let mut e = Envelope {
            kind: MessageType::Notification,
            message_id: "id".into(),
            topic_arn: "arn".into(),
            subject: None,
            message: "m".into(),
            timestamp: "ts".into(),
            token: Some("tok".into()),
            subscribe_url: Some("https://s".into()),
            signature_version: "1".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
        };
        assert_eq!(
            e.string_to_sign(),
            "Message\nm\nMessageId\nid\nTimestamp\nts\nTopicArn\narn\nType\nNotification\n"
        );
        e.subject = Some("s".into());
        assert!(e
            .string_to_sign()
            .contains("MessageId\nid\nSubject\ns\nTimestamp"));
        e.kind = MessageType::SubscriptionConfirmation;
        assert_eq!(
            e.string_to_sign(),
            "Message\nm\nMessageId\nid\nSubscribeURL\nhttps://s\nTimestamp\nts\nToken\ntok\nTopicArn\narn\nType\nSubscriptionConfirmation\n"
        );
    }
}
