//! FCM and APNs providers against local peers (`pushpeers`) that check
//! what real FCM and APNs check: the JWTs' signatures with the public key
//! the test generated, their claims and headers, the access token, the
//! APNs headers, HTTP/2 for APNs. Every test ends by asserting the peer
//! found nothing wrong.

use std::sync::Arc;
use std::time::Duration;

use engine::clock::{Clock, WallClock};
use engine::deliver::apns::{self, Apns};
use engine::deliver::fcm::{self, Fcm};
use engine::deliver::{Attempt, Backoff, Error, Outcome, Provider, Providers};
use engine::dispatch::{AddressNews, Content, Message};
use journeys::compiled::{Channel, PushProvider, PushSettings};
use pushpeers::{ApnsPeer, FcmPeer, APNS_KEY_ID, APNS_TEAM_ID};
use serde_json::{json, Map, Value};

const TOPIC: &str = "com.shop.app";

fn message(key: &str, tokens: &[&str]) -> Message {
    let data: Map<String, Value> =
        serde_json::from_value(json!({"cart": "c-17", "total": 42.5})).expect("data");
    Message {
        key: key.into(),
        at: WallClock.now_millis(),
        user: "u1".into(),
        journey: "cart".into(),
        version: 1,
        step: "nudge".into(),
        channel: Channel::Push,
        template: "cart-push".into(),
        content: Content::Push {
            tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
            title: Some("Your cart".into()),
            body: Some("Still there, Ana?".into()),
            data,
        },
    }
}

fn now() -> Attempt {
    Attempt {
        number: 1,
        now: WallClock.now_millis(),
    }
}

fn gone(token: &str) -> AddressNews {
    AddressNews::PushTokenGone {
        token: token.into(),
    }
}

fn settings(provider: PushProvider) -> PushSettings {
    PushSettings {
        provider,
        project_id: Some("shop-app".into()),
        credentials_env: Some("PUSH_CREDENTIALS".into()),
        endpoint: None,
        topic: Some(TOPIC.into()),
        key_id: Some(APNS_KEY_ID.into()),
        team_id: Some(APNS_TEAM_ID.into()),
        path: ".sluice/outbox/push.jsonl".into(),
    }
}

fn fcm_for(peer: &FcmPeer) -> Fcm {
    let mut s = settings(PushProvider::Fcm);
    s.endpoint = Some(peer.endpoint());
    let json = peer.service_account();
    Fcm::from_settings(&s, &|v: &str| {
        (v == "PUSH_CREDENTIALS").then(|| json.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn apns_for(peer: &ApnsPeer) -> Apns {
    let mut s = settings(PushProvider::Apns);
    s.endpoint = Some(peer.endpoint());
    let pem = peer.key_pem().to_owned();
    Apns::from_settings(&s, &|v: &str| {
        (v == "PUSH_CREDENTIALS").then(|| pem.clone())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

// ------------------------------------------------------------------- FCM

#[tokio::test]
async fn fcm_sends_one_request_per_token_and_reports_the_unregistered_one() {
    let peer = FcmPeer::start("shop-app");
    peer.state().unregistered.insert("gone-token".into());
    let fcm = fcm_for(&peer);
    let d = fcm
        .deliver(&message("k1", &["tok-a", "gone-token", "tok-b"]), now())
        .await
        .expect("delivered");
    assert_eq!(d.news, [gone("gone-token")]);
    assert_eq!(d.detail, "fcm: sent to 2 of 3 tokens, 1 gone");
    let st = peer.state();
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    assert_eq!(st.issued.len(), 1, "one OAuth exchange");
    let mut tokens: Vec<&str> = st.sent.iter().map(|s| s.token.as_str()).collect();
    tokens.sort();
    assert_eq!(tokens, ["tok-a", "tok-b"]);
    let m = &st.sent[0].message;
    assert_eq!(
        m["notification"],
        json!({"title": "Your cart", "body": "Still there, Ana?"})
    );
    assert_eq!(
        m["data"],
        json!({"cart": "c-17", "total": "42.5", "sluice_key": "k1"})
    );
}

#[tokio::test]
async fn fcm_every_token_gone_is_permanent_and_invalid_argument_is_not_removal() {
    let peer = FcmPeer::start("shop-app");
    peer.state().unregistered.insert("gone-token".into());
    peer.state().invalid.insert("bad-token".into());
    let fcm = fcm_for(&peer);
    let f = fcm
        .deliver(&message("k1", &["gone-token"]), now())
        .await
        .expect_err("fails");
    assert!(f.is_permanent());
    assert_eq!(f.news, [gone("gone-token")]);
    let f = fcm
        .deliver(&message("k2", &["bad-token"]), now())
        .await
        .expect_err("fails");
    assert!(f.is_permanent(), "INVALID_ARGUMENT is permanent");
    assert!(f.news.is_empty(), "and does not remove the token");
    assert!(f.reason.contains("INVALID_ARGUMENT"), "{}", f.reason);
    assert!(peer.state().problems.is_empty());
}

#[tokio::test]
async fn fcm_caches_the_access_token_and_refreshes_it_once_on_401() {
    let peer = FcmPeer::start("shop-app");
    let fcm = Arc::new(fcm_for(&peer));
    // Concurrent first sends share one exchange.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let fcm = Arc::clone(&fcm);
        tasks.push(tokio::spawn(async move {
            fcm.deliver(&message(&format!("c{i}"), &["tok-a"]), now())
                .await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("delivered");
    }
    assert_eq!(peer.state().issued.len(), 1, "one exchange for 20 sends");
    // The token is revoked: the next send gets 401, fetches a new token
    // and succeeds.
    peer.state().reject_auth = 1;
    fcm.deliver(&message("k-after", &["tok-a", "tok-b"]), now())
        .await
        .expect("delivered after a refresh");
    assert_eq!(peer.state().issued.len(), 2, "one refresh for both tokens");
    assert_eq!(fcm.exchanges(), 2);
    let st = peer.state();
    assert_eq!(st.sent.len(), 22);
    assert!(st.problems.is_empty(), "{:?}", st.problems);
}

#[tokio::test]
async fn fcm_a_failed_token_fetch_is_shared_by_the_sends_waiting_for_it() {
    let peer = FcmPeer::start("shop-app");
    peer.state().token_unavailable = 1_000;
    let fcm = Arc::new(fcm_for(&peer));
    let at = now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let fcm = Arc::clone(&fcm);
        tasks.push(tokio::spawn(async move {
            fcm.deliver(&message(&format!("c{i}"), &["tok-a"]), at)
                .await
        }));
    }
    for t in tasks {
        let f = t.await.expect("task").expect_err("no token");
        assert!(
            !f.is_permanent(),
            "a 503 of the token endpoint is transient"
        );
        assert_eq!(f.retry_after, Some(Duration::from_secs(2)));
        assert!(f.reason.contains("token endpoint"), "{}", f.reason);
    }
    assert_eq!(fcm.exchanges(), 1, "one fetch failed for all 20");
    // Later, the endpoint is back: a new fetch.
    peer.state().token_unavailable = 0;
    let later = Attempt {
        number: 2,
        now: at.now + 2_000,
    };
    fcm.deliver(&message("c0", &["tok-a"]), later)
        .await
        .expect("delivered");
    assert_eq!(fcm.exchanges(), 2);
    assert!(peer.state().problems.is_empty());
}

#[tokio::test]
async fn fcm_429_waits_at_least_its_retry_after() {
    let peer = FcmPeer::start("shop-app");
    {
        let mut st = peer.state();
        st.throttle = 1;
        st.retry_after_secs = 7;
    }
    let fcm = fcm_for(&peer);
    let backoff = Backoff::new(8, Duration::from_millis(10), Duration::from_millis(20));
    let a = now();
    let out = engine::deliver::attempt(&fcm, &message("k1", &["tok-a"]), a, &backoff).await;
    match out {
        Outcome::Retry { next, at, reason } => {
            assert_eq!(next, 2);
            assert!(at >= a.now + 7_000, "Retry-After is a floor");
            assert!(reason.contains("429"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let again = Attempt {
        number: 2,
        now: WallClock.now_millis(),
    };
    fcm.deliver(&message("k1", &["tok-a"]), again)
        .await
        .expect("delivered on the retry");
    assert!(peer.state().problems.is_empty());
}

#[tokio::test]
async fn fcm_a_retry_goes_only_to_the_token_that_failed() {
    let peer = FcmPeer::start("shop-app");
    peer.state().flaky.insert("tok-b".into(), 1);
    let fcm = fcm_for(&peer);
    let m = message("k1", &["tok-a", "tok-b"]);
    let f = fcm
        .deliver(&m, now())
        .await
        .expect_err("tok-b is unavailable");
    assert!(!f.is_permanent());
    assert_eq!(f.retry_after, Some(Duration::from_secs(1)));
    assert!(
        f.reason
            .starts_with("fcm: sent to 1 of 2 tokens; will retry tok-b: HTTP 503"),
        "{}",
        f.reason
    );
    let d = fcm.deliver(&m, now()).await.expect("delivered");
    assert_eq!(d.detail, "fcm: sent to 2 of 2 tokens");
    let st = peer.state();
    let tokens: Vec<&str> = st.sent.iter().map(|s| s.token.as_str()).collect();
    assert_eq!(tokens, ["tok-a", "tok-b"], "tok-a got the message once");
    assert!(st.problems.is_empty());
}

#[test]
fn fcm_malformed_credentials_name_the_variable() {
    let s = settings(PushProvider::Fcm);
    let err = |value: Option<&str>| {
        let value = value.map(str::to_owned);
        Fcm::from_settings(&s, &|_: &str| value.clone())
            .expect_err("refused")
            .to_string()
    };
    let e = err(Some(
        "{\"client_email\": \"x@y\", \"private_key\": \"nope\"}",
    ));
    assert!(e.contains("PUSH_CREDENTIALS"), "{e}");
    assert!(e.contains("private_key"), "{e}");
    assert!(!e.contains("nope"), "the key is not quoted: {e}");
    let e = err(Some("{ not json"));
    assert!(
        e.contains("PUSH_CREDENTIALS") && e.contains("not a service account JSON"),
        "{e}"
    );
    let e = err(None);
    assert!(
        e.contains("PUSH_CREDENTIALS") && e.contains("not set"),
        "{e}"
    );
}

// ------------------------------------------------------------------ APNs

#[tokio::test]
async fn apns_sends_over_http2_with_a_checked_token_and_headers() {
    let peer = ApnsPeer::start(TOPIC);
    peer.state().unregistered.insert("dead0001".into());
    let apns = apns_for(&peer);
    let d = apns
        .deliver(&message("0123abcd", &["aaaa0001", "dead0001"]), now())
        .await
        .expect("delivered");
    assert_eq!(d.news, [gone("dead0001")]);
    let st = peer.state();
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    assert_eq!(st.sent.len(), 1);
    let s = &st.sent[0];
    assert_eq!(s.token, "aaaa0001");
    assert_eq!(s.apns_id, apns::apns_id("0123abcd", "aaaa0001"));
    assert_eq!(s.collapse_id.as_deref(), Some("0123abcd"));
    assert_eq!(s.push_type, "alert");
    assert_eq!(s.priority.as_deref(), Some("10"));
    assert_eq!(
        s.payload,
        json!({
            "aps": {"alert": {"title": "Your cart", "body": "Still there, Ana?"}},
            "cart": "c-17",
            "total": 42.5,
            "sluice_key": "0123abcd"
        })
    );
    let header = jsonwebtoken::decode_header(&s.jwt).expect("JWT");
    assert_eq!(header.kid.as_deref(), Some(APNS_KEY_ID));
}

#[tokio::test]
async fn apns_bad_device_token_everywhere_is_permanent_with_news() {
    let peer = ApnsPeer::start(TOPIC);
    peer.state().bad.insert("bad00001".into());
    peer.state().unregistered.insert("dead0001".into());
    let apns = apns_for(&peer);
    let f = apns
        .deliver(&message("k1", &["bad00001", "dead0001"]), now())
        .await
        .expect_err("every token gone");
    assert!(f.is_permanent());
    assert_eq!(f.news.len(), 2);
    assert!(f.news.contains(&gone("bad00001")) && f.news.contains(&gone("dead0001")));
    let f = apns
        .deliver(&message("k2", &["not/a/token"]), now())
        .await
        .expect_err("refused");
    assert!(f.is_permanent() && f.news.is_empty(), "{f:?}");
    assert!(peer.state().problems.is_empty());
}

#[tokio::test]
async fn apns_provider_token_is_reused_then_resigned_after_40_minutes_or_when_expired() {
    let peer = ApnsPeer::start(TOPIC);
    let apns = apns_for(&peer);
    let real = WallClock.now_millis();
    let at = |ms: i64| Attempt {
        number: 1,
        now: real + ms,
    };
    // Signed 45 minutes ago (still within Apple's hour).
    apns.deliver(&message("k1", &["aaaa0001"]), at(-45 * 60_000))
        .await
        .expect("delivered");
    assert_eq!(apns.tokens_signed(), 1);
    // 45 minutes later: past the 40-minute refresh, a new token.
    apns.deliver(&message("k2", &["aaaa0001"]), at(0))
        .await
        .expect("delivered");
    assert_eq!(apns.tokens_signed(), 2);
    // A minute later: the same token.
    apns.deliver(&message("k3", &["aaaa0001"]), at(60_000))
        .await
        .expect("delivered");
    assert_eq!(apns.tokens_signed(), 2);
    // APNs says it expired: a new one, and the request again.
    peer.state().expire = 1;
    apns.deliver(&message("k4", &["aaaa0001"]), at(60_000))
        .await
        .expect("delivered after re-signing");
    assert_eq!(apns.tokens_signed(), 3);
    let st = peer.state();
    assert_eq!(st.sent.len(), 4);
    assert_eq!(st.jwts.len(), 3, "three provider tokens seen, each checked");
    assert!(st.problems.is_empty(), "{:?}", st.problems);
}

#[tokio::test]
async fn apns_429_is_transient_with_its_retry_after() {
    let peer = ApnsPeer::start(TOPIC);
    {
        let mut st = peer.state();
        st.throttle = 1;
        st.retry_after_secs = 9;
    }
    let apns = apns_for(&peer);
    let f = apns
        .deliver(&message("k1", &["aaaa0001"]), now())
        .await
        .expect_err("throttled");
    assert!(!f.is_permanent());
    assert_eq!(f.retry_after, Some(Duration::from_secs(9)));
    apns.deliver(&message("k1", &["aaaa0001"]), now())
        .await
        .expect("delivered");
    assert!(peer.state().problems.is_empty());
}

#[test]
fn apns_malformed_key_names_the_variable() {
    let s = settings(PushProvider::Apns);
    let e = Apns::from_settings(&s, &|_: &str| {
        Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into())
    })
    .expect_err("refused")
    .to_string();
    assert!(e.contains("PUSH_CREDENTIALS") && e.contains(".p8"), "{e}");
    let mut s = settings(PushProvider::Apns);
    s.team_id = None;
    let e = Apns::from_settings(&s, &|_: &str| None).expect_err("refused");
    assert!(
        matches!(
            e,
            Error::MissingSetting {
                field: "team_id",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn the_project_builds_fcm_and_apns() {
    let fcm_peer = FcmPeer::start("shop-app");
    let apns_peer = ApnsPeer::start(TOPIC);
    let shop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let mut config = journeys::load(&shop).unwrap_or_else(|_| panic!("examples/shop is invalid"));
    let root = tempfile::tempdir().expect("tempdir");
    for (provider, name, secret, endpoint) in [
        (
            PushProvider::Fcm,
            "fcm",
            fcm_peer.service_account(),
            fcm_peer.endpoint(),
        ),
        (
            PushProvider::Apns,
            "apns",
            apns_peer.key_pem().to_owned(),
            apns_peer.endpoint(),
        ),
    ] {
        config.project.push = settings(provider);
        config.project.push.endpoint = Some(endpoint);
        let env = move |v: &str| (v == "PUSH_CREDENTIALS").then(|| secret.clone());
        let p = Providers::from_project(
            &config.project,
            root.path(),
            &env,
            Arc::new(engine::deliver::sign::NoLinks),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.push.name(), name);
    }
    let _ = (fcm::DEFAULT_ENDPOINT, apns::DEFAULT_ENDPOINT);
}
