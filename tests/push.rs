//! Push through `sluice run` end to end: the FCM and APNs providers of a
//! real service talking to local peers (`pushpeers`, on 127.0.0.1) that
//! check the JWTs' signatures and claims. A user with two tokens, one of
//! which the peer calls unregistered: the other token gets the message,
//! and the gone one leaves the user's `push_tokens` (`GET /v1/users/{id}`).
//! And malformed credentials at start-up: exit 1, naming the variable.
//!
//! Fixtures: `tests/fixtures/push-fcm`, `tests/fixtures/push-apns`, copied
//! to a temporary directory with `__PEER__` replaced by the peer's port.

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use pushpeers::{ApnsPeer, FcmPeer};
use serde_json::{json, Value};

use support::events::now_ts;
use support::server::SluiceRun;
use support::wait::wait_for;

const INGEST: &str = "ingest-token-for-push-tests";
const ADMIN: &str = "admin-token-for-push-tests";

/// A copy of `tests/fixtures/<name>` with the peer's port in place of
/// `__PEER__`: (its temporary directory, the repository).
fn repo(name: &str, peer_port: u16) -> (tempfile::TempDir, PathBuf) {
    support::fixture::temp_copy(name, &[("__PEER__", peer_port.to_string())])
}

fn port_of(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// `sluice run` on a copy of a fixture; killed when dropped.
struct Service {
    run: SluiceRun,
    _root: tempfile::TempDir,
}

impl Service {
    fn start(fixture_name: &str, peer_port: u16, env: (&str, &str)) -> Service {
        let (root, repo) = repo(fixture_name, peer_port);
        let run = SluiceRun::new(&repo)
            .args(&["--drain", "5"])
            .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
            .env(env.0, env.1)
            .start();
        Service { run, _root: root }
    }

    fn post_events(&self, events: &[Value]) {
        let r = self.run.post_events(INGEST, events);
        assert_eq!(r.status, 202, "{}", r.text);
    }

    fn user(&self, id: &str) -> Value {
        let r = self
            .run
            .request("GET", &format!("/v1/users/{id}"), Some(ADMIN), b"");
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }

    fn push_tokens(&self, id: &str) -> Value {
        let u = self.user(id);
        u.get("profile")
            .and_then(|p| p.get("push_tokens"))
            .or_else(|| u.get("push_tokens"))
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// Ana with two tokens updates her cart: the journey sends a push.
fn cart_events(tokens: &[&str]) -> Vec<Value> {
    vec![
        json!({"type":"identify","user":"ana","id":"ana-identify","ts":now_ts(),
               "traits":{"first_name":"Ana","push_tokens":tokens}}),
        json!({"type":"track","user":"ana","id":"ana-cart","event":"cart_updated","ts":now_ts(),
               "props":{"cart_id":"c-17","items":3}}),
    ]
}

#[test]
fn fcm_gone_token_leaves_push_tokens_while_the_other_gets_the_message() {
    let peer = FcmPeer::start("shop-app");
    peer.state().unregistered.insert("fcm-gone".into());
    let credentials = peer.service_account();
    let service = Service::start(
        "push-fcm",
        port_of(&peer.endpoint()),
        ("SLUICE_TEST_FCM_CREDENTIALS", &credentials),
    );
    service.post_events(&cart_events(&["fcm-live", "fcm-gone"]));
    let sent = wait_for(Duration::from_secs(10), "the FCM send", || {
        let st = peer.state();
        (!st.sent.is_empty()).then(|| st.sent.clone())
    });
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].token, "fcm-live");
    let m = &sent[0].message;
    assert_eq!(m["notification"]["title"], "Your cart, Ana");
    assert_eq!(m["notification"]["body"], "3 items are waiting.");
    assert_eq!(m["data"]["cart_id"], "c-17");
    assert!(
        m["data"]["sluice_key"]
            .as_str()
            .is_some_and(|k| k.len() == 32),
        "{m}"
    );
    wait_for(
        Duration::from_secs(10),
        "fcm-gone to leave push_tokens",
        || (service.push_tokens("ana") == json!(["fcm-live"])).then_some(()),
    );
    let st = peer.state();
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    assert_eq!(st.issued.len(), 1, "one OAuth exchange");
    assert_eq!(st.requests, 2, "one request per token");
}

#[test]
fn apns_gone_token_leaves_push_tokens_while_the_other_gets_the_message() {
    let peer = ApnsPeer::start("com.shop.app");
    peer.state().unregistered.insert("dead0001".into());
    peer.state().bad.insert("bad00001".into());
    let key = peer.key_pem().to_owned();
    let service = Service::start(
        "push-apns",
        port_of(&peer.endpoint()),
        ("SLUICE_TEST_APNS_KEY", &key),
    );
    service.post_events(&cart_events(&["dead0001", "abcd0001", "bad00001"]));
    let sent = wait_for(Duration::from_secs(10), "the APNs send", || {
        let st = peer.state();
        (!st.sent.is_empty()).then(|| st.sent.clone())
    });
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].token, "abcd0001");
    assert_eq!(sent[0].payload["aps"]["alert"]["title"], "Your cart, Ana");
    let key = sent[0].payload["sluice_key"]
        .as_str()
        .expect("sluice_key")
        .to_owned();
    assert_eq!(sent[0].collapse_id.as_deref(), Some(key.as_str()));
    wait_for(
        Duration::from_secs(10),
        "the gone tokens to leave push_tokens",
        || (service.push_tokens("ana") == json!(["abcd0001"])).then_some(()),
    );
    let st = peer.state();
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    assert_eq!(st.jwts.len(), 1, "one provider token");
}

/// `sluice run` with `var` set to `value`: its exit code and stderr.
fn start_with(fixture_name: &str, var: &str, value: Option<&str>) -> (Option<i32>, String) {
    let (_root, repo) = repo(fixture_name, 9);
    let mut run = SluiceRun::new(&repo)
        .env("SLUICE_TEST_INGEST_TOKEN", INGEST)
        .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN)
        .env_remove(var);
    if let Some(v) = value {
        run = run.env(var, v);
    }
    let (status, stderr) = run.run_to_exit(Duration::from_secs(15));
    (status.code(), stderr)
}

#[test]
fn malformed_credentials_stop_the_start_naming_the_variable() {
    for (fixture_name, var, value, says) in [
        (
            "push-fcm",
            "SLUICE_TEST_FCM_CREDENTIALS",
            Some("{\"client_email\": \"x@y\""),
            "not a service account JSON",
        ),
        (
            "push-fcm",
            "SLUICE_TEST_FCM_CREDENTIALS",
            Some("{\"client_email\":\"x@y\",\"private_key\":\"garbage\"}"),
            "private_key",
        ),
        ("push-fcm", "SLUICE_TEST_FCM_CREDENTIALS", None, "not set"),
        (
            "push-apns",
            "SLUICE_TEST_APNS_KEY",
            Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            ".p8",
        ),
        ("push-apns", "SLUICE_TEST_APNS_KEY", None, "not set"),
    ] {
        let (code, stderr) = start_with(fixture_name, var, value);
        assert_eq!(code, Some(1), "{fixture_name} {value:?}: {stderr}");
        assert!(
            stderr.contains(var),
            "{fixture_name}: names the variable: {stderr}"
        );
        assert!(
            stderr.contains(says),
            "{fixture_name}: says {says:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !stderr.contains("garbage"),
            "the credentials are not quoted: {stderr}"
        );
    }
}
