//! `cargo bench -p engine --bench push [-- N IN_FLIGHT]`: push notifications
//! per second into local peers (`pushpeers`) on this machine, loopback
//! only; the peers check each JWT once and every request's headers.
//!
//! - apns: N notifications (default 50,000), one token each, IN_FLIGHT at
//!   a time (default 256) multiplexed on one HTTP/2 (h2c) connection;
//! - fcm: the same into the FCM peer over HTTP/1.1 (plain `http://`
//!   endpoints are not upgraded; real FCM negotiates h2 over TLS), with
//!   a pool of keep-alive connections;
//! - apns, 3 tokens per message: N/3 messages, so the same N requests.
//!
//! The peers run in the same process, on a thread of their own: the
//! figures are what the client and the peer together get out of 2 cores.
//! Issue 10's target: ≥ 5,000 notifications/s into a local HTTP/2
//! endpoint. Figures: BENCHMARKS.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use engine::clock::{Clock, WallClock};
use engine::deliver::apns::Apns;
use engine::deliver::fcm::Fcm;
use engine::deliver::{Attempt, Provider};
use engine::dispatch::{Content, Message};
use journeys::compiled::{Channel, PushProvider, PushSettings};
use pushpeers::{ApnsPeer, FcmPeer, APNS_KEY_ID, APNS_TEAM_ID};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn message(i: usize, tokens: usize) -> Message {
    let mut data = serde_json::Map::new();
    data.insert("deeplink".into(), json!(format!("shop://cart/{i}")));
    Message {
        key: format!("{i:032x}"),
        at: 1_772_442_000_000,
        user: format!("user-{i}"),
        journey: "cart".into(),
        version: 1,
        step: "nudge".into(),
        channel: Channel::Push,
        template: "cart-push".into(),
        content: Content::Push {
            tokens: (0..tokens).map(|t| format!("{:064x}", i * 8 + t)).collect(),
            title: Some("Still thinking?".into()),
            body: Some("Your cart is saved.".into()),
            data,
        },
    }
}

/// Delivers `messages` through `provider` with `in_flight` at a time;
/// returns messages/s. Every delivery must succeed.
async fn run(provider: Arc<dyn Provider>, messages: Vec<Message>, in_flight: usize) -> f64 {
    let messages = Arc::new(messages);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (provider, messages, next) = (
            Arc::clone(&provider),
            Arc::clone(&messages),
            Arc::clone(&next),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(m) = messages.get(i) else { break };
                let at = Attempt {
                    number: 1,
                    now: WallClock.now_millis(),
                };
                if let Err(f) = provider.deliver(m, at).await {
                    panic!("delivery {i} failed: {f}");
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    messages.len() as f64 / started.elapsed().as_secs_f64()
}

fn settings(provider: PushProvider, endpoint: String) -> PushSettings {
    PushSettings {
        provider,
        project_id: Some("shop-app".into()),
        credentials_env: Some("PUSH_CREDENTIALS".into()),
        endpoint: Some(endpoint),
        topic: Some("com.shop.app".into()),
        key_id: Some(APNS_KEY_ID.into()),
        team_id: Some(APNS_TEAM_ID.into()),
        path: ".sluice/outbox/push.jsonl".into(),
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(50_000);
    let in_flight = args.get(1).copied().unwrap_or(256);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let apns_peer = ApnsPeer::start("com.shop.app");
    apns_peer.state().keep = false;
    let pem = apns_peer.key_pem().to_owned();
    let apns: Arc<dyn Provider> = Arc::new(
        Apns::from_settings(
            &settings(PushProvider::Apns, apns_peer.endpoint()),
            &|_: &str| Some(pem.clone()),
        )
        .expect("apns"),
    );
    let fcm_peer = FcmPeer::start("shop-app");
    let sa = fcm_peer.service_account();
    let fcm: Arc<dyn Provider> = Arc::new(
        Fcm::from_settings(
            &settings(PushProvider::Fcm, fcm_peer.endpoint()),
            &|_: &str| Some(sa.clone()),
        )
        .expect("fcm"),
    );
    rt.block_on(async {
        // Warm up: the connection, the provider token.
        run(Arc::clone(&apns), (0..1_000).map(|i| message(i, 1)).collect(), in_flight).await;
        let rate = run(
            Arc::clone(&apns),
            (0..n).map(|i| message(i, 1)).collect(),
            in_flight,
        )
        .await;
        println!("apns (HTTP/2, h2c): {n} notifications, {in_flight} in flight: {rate:.0}/s");
        let per_user = 3;
        let users = n / per_user;
        let rate = run(
            Arc::clone(&apns),
            (0..users).map(|i| message(i, per_user)).collect(),
            in_flight,
        )
        .await;
        println!(
            "apns (HTTP/2, h2c): {users} messages x {per_user} tokens, {in_flight} in flight: {:.0} notifications/s",
            rate * per_user as f64
        );

        run(Arc::clone(&fcm), (0..1_000).map(|i| message(i, 1)).collect(), in_flight).await;
        let rate = run(
            Arc::clone(&fcm),
            (0..n).map(|i| message(i, 1)).collect(),
            in_flight,
        )
        .await;
        println!("fcm (HTTP/1.1, keep-alive pool): {n} notifications, {in_flight} in flight: {rate:.0}/s");
    });
    let st = apns_peer.state();
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    let expected = (1_000 + n + (n / 3) * 3) as u64;
    assert_eq!(
        st.accepted, expected,
        "every notification reached the APNs peer"
    );
    drop(st);
    let st = fcm_peer.state();
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    assert_eq!(st.issued.len(), 1, "one OAuth exchange");
}
