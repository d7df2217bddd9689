//! `POST /v1/feedback/{ses|sendgrid|postmark}` over real sockets, against a
//! fake engine handle: SNS messages signed with a test certificate served
//! by a loopback "SNS" (valid, forged, wrong host, subscription
//! confirmation), SendGrid posts signed with a test P-256 key, Postmark
//! with and without the token, and the counts of every outcome.

#[path = "support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use reqwest::{Client, StatusCode};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use engine::api::feedback::Settings;
use engine::api::{self, Appended, Handle, Options, Replay, Tokens, Unavailable, Unsubscribed};
use engine::feedback::sendgrid::PublicKey;
use engine::feedback::sns::Hosts;
use engine::feedback::{FeedbackCounts, Kind, Notice, Provider};
use journeys::event::Event;

const INGEST: &str = "ingest-token-1";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const OTHER: &str = "fedcba9876543210fedcba9876543210";

/// Records the notices it gets; a notice matches when its key is [`KEY`].
#[derive(Default)]
struct Fake {
    notices: Mutex<Vec<Notice>>,
}

impl Fake {
    fn notices(&self) -> Vec<Notice> {
        self.notices.lock().expect("test setup").clone()
    }
}

impl Handle for Fake {
    async fn ingest(&self, _: &'static str, _: Vec<Event>) -> Result<Appended, Unavailable> {
        Err(Unavailable("not here".into()))
    }
    async fn user(&self, _: String) -> Result<Option<Value>, Unavailable> {
        Ok(None)
    }
    async fn erase(&self, _: String) -> Result<bool, Unavailable> {
        Ok(false)
    }
    async fn dead_letters(&self, _: usize) -> Result<Vec<Value>, Unavailable> {
        Ok(vec![])
    }
    async fn replay(&self, _: Replay) -> Result<usize, Unavailable> {
        Ok(0)
    }
    async fn unsubscribe(&self, _: String) -> Result<Option<Unsubscribed>, Unavailable> {
        Ok(None)
    }
    fn ready(&self) -> bool {
        true
    }
    async fn feedback(&self, notices: Vec<Notice>) -> Result<Vec<bool>, Unavailable> {
        let matched = notices
            .iter()
            .map(|n| n.key.as_deref() == Some(KEY))
            .collect();
        self.notices.lock().expect("test setup").extend(notices);
        Ok(matched)
    }
}

/// A loopback "SNS": serves the signing certificate and records
/// subscription confirmations.
struct Sns {
    base: String,
    key: RsaPrivateKey,
    confirmed: Arc<Mutex<Vec<String>>>,
    cert_fetches: Arc<Mutex<usize>>,
}

#[derive(Clone)]
struct SnsState {
    pem: String,
    confirmed: Arc<Mutex<Vec<String>>>,
    cert_fetches: Arc<Mutex<usize>>,
}

async fn start_sns() -> Sns {
    let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("test setup");
    let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).expect("test setup");
    let pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)
        .expect("test setup");
    let cert = rcgen::CertificateParams::new(vec!["sns.test.example".to_owned()])
        .expect("test setup")
        .self_signed(&pair)
        .expect("test setup");
    let state = SnsState {
        pem: cert.pem(),
        confirmed: Arc::default(),
        cert_fetches: Arc::default(),
    };
    let app = Router::new()
        .route(
            "/cert.pem",
            get(|State(s): State<SnsState>| async move {
                *s.cert_fetches.lock().expect("test setup") += 1;
                s.pem.clone()
            }),
        )
        .route(
            "/confirm",
            get(
                |State(s): State<SnsState>,
                 Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let token = q.get("Token").cloned().unwrap_or_default();
                    s.confirmed.lock().expect("test setup").push(token);
                    "<ConfirmSubscriptionResponse/>"
                },
            ),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("test setup");
    let addr = listener.local_addr().expect("test setup");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Sns {
        base: format!("http://{addr}/"),
        key,
        confirmed: state.confirmed,
        cert_fetches: state.cert_fetches,
    }
}

impl Sns {
    /// An SNS message of `kind` carrying `message`, signed (version 1 or 2).
    fn message(&self, kind: &str, message: &str, version: u8) -> Value {
        let mut v = json!({
            "Type": kind,
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-feedback",
            "Message": message,
            "Timestamp": "2026-03-02T12:00:00.000Z",
            "SignatureVersion": version.to_string(),
            "SigningCertURL": format!("{}cert.pem", self.base),
        });
        if kind == "Notification" {
            v["Subject"] = json!("Amazon SES Email Event Notification");
        } else {
            v["Token"] = json!("tok-123");
            v["SubscribeURL"] = json!(format!(
                "{}confirm?Action=ConfirmSubscription&Token=tok-123",
                self.base
            ));
        }
        self.sign(&mut v);
        v
    }

    fn sign(&self, v: &mut Value) {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let kind = s("Type").unwrap_or_default();
        let mut fields = vec![("Message", s("Message")), ("MessageId", s("MessageId"))];
        if kind == "Notification" {
            fields.push(("Subject", s("Subject")));
        } else {
            fields.push(("SubscribeURL", s("SubscribeURL")));
        }
        fields.push(("Timestamp", s("Timestamp")));
        if kind != "Notification" {
            fields.push(("Token", s("Token")));
        }
        fields.push(("TopicArn", s("TopicArn")));
        fields.push(("Type", s("Type")));
        let mut text = String::new();
        for (name, value) in fields {
            if let Some(value) = value {
                text.push_str(&format!("{name}\n{value}\n"));
            }
        }
        let signature = if s("SignatureVersion").as_deref() == Some("1") {
            let digest = sha1::Sha1::digest(text.as_bytes());
            self.key.sign(Pkcs1v15Sign::new::<sha1::Sha1>(), &digest)
        } else {
            let digest = Sha256::digest(text.as_bytes());
            self.key.sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
        }
        .expect("test setup");
        v["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode(signature));
    }
}

fn ses_bounce(key: &str, bounce_type: &str) -> String {
    json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": bounce_type, "bouncedRecipients": [{"emailAddress": "u1@x.io"}]},
        "mail": {
            "messageId": "0100018c-ses-own-id",
            "commonHeaders": {"messageId": format!("<{key}@shop.example>")}
        }
    })
    .to_string()
}

struct Server {
    base: String,
    fake: Arc<Fake>,
    counts: Arc<FeedbackCounts>,
    http: Client,
}

async fn start(settings: Settings) -> Server {
    let fake = Arc::new(Fake::default());
    let counts = Arc::clone(&settings.counts);
    let tokens = Tokens {
        ingest: INGEST.into(),
        admin: "admin-token".into(),
        segment_secret: None,
    };
    let options = Options {
        clock: Arc::new(engine::clock::VirtualClock::new(
            "2026-03-02T12:00:00Z".parse().expect("test setup"),
        )),
        feedback: settings,
        ..Options::default()
    };
    let addr = support::api::serve(api::router_with(fake.clone(), tokens, options)).await;
    Server {
        base: format!("http://{addr}"),
        fake,
        counts,
        http: Client::new(),
    }
}

impl Server {
    async fn post(
        &self,
        provider: &str,
        body: String,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/feedback/{provider}", self.base))
            .header("content-type", "text/plain; charset=UTF-8")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        let v = r.json().await.unwrap_or(Value::Null);
        (status, v)
    }
}

fn sns_settings(sns: &Sns) -> Settings {
    Settings {
        sns_hosts: Hosts::Prefix(sns.base.clone()),
        ..Settings::default()
    }
}

#[tokio::test]
async fn ses_via_sns_signed_forged_and_confirmed() {
    let sns = start_sns().await;
    let server = start(sns_settings(&sns)).await;

    // Signed, versions 1 and 2: taken, matched, counted.
    for version in [1, 2] {
        let m = sns.message("Notification", &ses_bounce(KEY, "Permanent"), version);
        let (status, body) = server.post("ses", m.to_string(), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"received": 1, "matched": 1}));
    }
    let n = server.fake.notices();
    assert_eq!(n.len(), 2);
    assert_eq!(
        n[0],
        Notice {
            kind: Kind::HardBounce,
            key: Some(KEY.into()),
            address: Some("u1@x.io".into())
        }
    );
    assert_eq!(server.counts.get(Provider::Ses, Kind::HardBounce, true), 2);
    // The certificate was fetched once and cached.
    assert_eq!(*sns.cert_fetches.lock().expect("test setup"), 1);

    // Forged: one byte of the Message changed after signing.
    let mut m = sns.message("Notification", &ses_bounce(KEY, "Permanent"), 2);
    let forged = m["Message"]
        .as_str()
        .expect("msg")
        .replace("Permanent", "Permanenu");
    m["Message"] = json!(forged);
    let (status, body) = server.post("ses", m.to_string(), &[]).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}))
    );
    // Signed by someone else's key: refused too.
    let mut m = sns.message("Notification", &ses_bounce(KEY, "Permanent"), 2);
    let mut other = Sns {
        base: sns.base.clone(),
        key: RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).expect("test setup"),
        confirmed: Arc::default(),
        cert_fetches: Arc::default(),
    };
    other.sign(&mut m);
    other.base.clear();
    let (status, _) = server.post("ses", m.to_string(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A certificate URL outside the allowed hosts is never fetched.
    let mut m = sns.message("Notification", &ses_bounce(KEY, "Permanent"), 2);
    m["SigningCertURL"] = json!("http://127.0.0.2:9/cert.pem");
    sns.sign(&mut m);
    let (status, _) = server.post("ses", m.to_string(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Not SNS at all, without a token.
    let (status, _) = server.post("ses", "{\"x\":1}".into(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        server.fake.notices().len(),
        2,
        "nothing more reached the engine"
    );
    assert_eq!(*sns.cert_fetches.lock().expect("test setup"), 1);

    // Subscription confirmation: the SubscribeURL is fetched.
    let m = sns.message(
        "SubscriptionConfirmation",
        "You have chosen to subscribe",
        1,
    );
    let (status, body) = server.post("ses", m.to_string(), &[]).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"confirmed": true})));
    assert_eq!(
        *sns.confirmed.lock().expect("test setup"),
        vec!["tok-123".to_owned()]
    );
    assert_eq!(
        server.counts.get(Provider::Ses, Kind::Subscription, false),
        1
    );
    // A forged confirmation (the URL changed) is not followed.
    let mut m = sns.message("SubscriptionConfirmation", "x", 2);
    m["SubscribeURL"] = json!(format!("{}confirm?Token=evil", sns.base));
    let (status, _) = server.post("ses", m.to_string(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(sns.confirmed.lock().expect("test setup").len(), 1);

    // Unmatched and soft: 200, counted.
    let m = sns.message("Notification", &ses_bounce(OTHER, "Transient"), 2);
    let (status, body) = server.post("ses", m.to_string(), &[]).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"received": 1, "matched": 0}))
    );
    assert_eq!(server.counts.get(Provider::Ses, Kind::SoftBounce, false), 1);
    // A notification that is no SES event: 200, counted as other.
    let m = sns.message("Notification", "hello from the console", 2);
    let (status, _) = server.post("ses", m.to_string(), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.counts.get(Provider::Ses, Kind::Other, false), 1);
}

#[tokio::test]
async fn sns_topics_can_be_restricted_and_tokens_skip_signatures() {
    let sns = start_sns().await;
    let server = start(Settings {
        sns_topics: vec!["arn:aws:sns:eu-west-1:123456789012:other".into()],
        ..sns_settings(&sns)
    })
    .await;
    let m = sns.message("Notification", &ses_bounce(KEY, "Permanent"), 2);
    let (status, _) = server.post("ses", m.to_string(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another topic");
    assert!(server.fake.notices().is_empty());

    // With the ingest token, an unsigned envelope is taken (no certificate
    // is fetched).
    let server = start(Settings::default()).await;
    let m = json!({
        "Type": "Notification", "MessageId": "m", "TopicArn": "t",
        "Message": ses_bounce(KEY, "Permanent"), "Timestamp": "2026-03-02T12:00:00.000Z",
        "SignatureVersion": "1", "Signature": "", "SigningCertURL": "https://example.com/c.pem"
    });
    let auth = format!("Bearer {INGEST}");
    let (status, body) = server
        .post("ses", m.to_string(), &[("authorization", &auth)])
        .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"received": 1, "matched": 1}))
    );
    // The production host rule refuses the loopback certificate URL.
    let m = sns.message("Notification", &ses_bounce(KEY, "Permanent"), 2);
    let (status, _) = server.post("ses", m.to_string(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // With a token, a body that is not SNS is a bad request.
    let (status, _) = server
        .post("ses", "nope".into(), &[("authorization", &auth)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sendgrid_signed_forged_and_by_token() {
    let signing = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let der = signing
        .verifying_key()
        .to_public_key_der()
        .expect("test setup");
    let public = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
    let server = start(Settings {
        sendgrid_key: Some(PublicKey::parse(&public).expect("key")),
        ..Settings::default()
    })
    .await;
    let body = json!([
        {"email": "u1@x.io", "event": "bounce", "type": "bounce", "smtp-id": format!("<{KEY}@shop.example>"),
         "timestamp": 1772452800, "sg_event_id": "e1"},
        {"email": "u1@x.io", "event": "spamreport", "smtp-id": format!("<{OTHER}@shop.example>")},
        {"email": "u1@x.io", "event": "processed"}
    ])
    .to_string();
    let ts = "1772452800";
    let sign = |ts: &str, body: &str| {
        let sig: p256::ecdsa::Signature = signing.sign(format!("{ts}{body}").as_bytes());
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    };
    let good = sign(ts, &body);
    let headers = |sig: &str, ts: &str| {
        vec![
            (
                "x-twilio-email-event-webhook-signature".to_owned(),
                sig.to_owned(),
            ),
            (
                "x-twilio-email-event-webhook-timestamp".to_owned(),
                ts.to_owned(),
            ),
        ]
    };
    let post = |body: String, h: Vec<(String, String)>| {
        let server = &server;
        async move {
            let refs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            server.post("sendgrid", body, &refs).await
        }
    };
    let (status, answer) = post(body.clone(), headers(&good, ts)).await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"received": 3, "matched": 1}))
    );
    assert_eq!(
        server
            .counts
            .get(Provider::Sendgrid, Kind::HardBounce, true),
        1
    );
    assert_eq!(
        server
            .counts
            .get(Provider::Sendgrid, Kind::Complaint, false),
        1
    );
    assert_eq!(server.counts.get(Provider::Sendgrid, Kind::Other, false), 1);

    // Forged: the body changed by one byte, or another timestamp.
    let forged = body.replacen("bounce", "bouncf", 1);
    let (status, _) = post(forged, headers(&good, ts)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(body.clone(), headers(&good, "1772452801")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(body.clone(), vec![]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "neither signed nor a token"
    );
    assert_eq!(
        server.fake.notices().len(),
        3,
        "nothing more reached the engine"
    );

    // The ingest token works without a signature.
    let auth = format!("Bearer {INGEST}");
    let (status, _) = server
        .post("sendgrid", body.clone(), &[("authorization", &auth)])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.fake.notices().len(), 6);

    // Without a configured key, a signature means nothing.
    let server = start(Settings::default()).await;
    let refs: Vec<(String, String)> = headers(&good, ts);
    let refs: Vec<(&str, &str)> = refs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, _) = server.post("sendgrid", body, &refs).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn postmark_by_token_or_basic_auth_only() {
    let server = start(Settings::default()).await;
    let body = json!({
        "RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1,
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Email": "u1@x.io",
        "Metadata": {"sluice_key": KEY}
    })
    .to_string();
    let (status, _) = server.post("postmark", body.clone(), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = server
        .post(
            "postmark",
            body.clone(),
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(server.fake.notices().is_empty());

    let auth = format!("Bearer {INGEST}");
    let (status, answer) = server
        .post("postmark", body.clone(), &[("authorization", &auth)])
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"received": 1, "matched": 1}))
    );
    // Basic auth with the token as the password (`https://postmark:TOKEN@…`).
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("postmark:{INGEST}"))
    );
    let complaint =
        json!({"RecordType": "SpamComplaint", "Type": "SpamComplaint", "Email": "u1@x.io",
        "MessageID": "883953f4"})
        .to_string();
    let (status, answer) = server
        .post("postmark", complaint, &[("authorization", &basic)])
        .await;
    assert_eq!(
        (status, answer),
        (StatusCode::OK, json!({"received": 1, "matched": 0}))
    );
    assert_eq!(
        server
            .counts
            .get(Provider::Postmark, Kind::HardBounce, true),
        1
    );
    assert_eq!(
        server
            .counts
            .get(Provider::Postmark, Kind::Complaint, false),
        1
    );
    assert_eq!(
        server.counts.rows(),
        vec![
            ("postmark", "hard_bounce", true, 1),
            ("postmark", "complaint", false, 1)
        ]
    );

    // Garbage with a token: 400. Unknown provider: 404.
    let (status, _) = server
        .post("postmark", "[]".into(), &[("authorization", &auth)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .post("mailgun", "{}".into(), &[("authorization", &auth)])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
