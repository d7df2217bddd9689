//! `deliver::attempt`, the call a delivery worker makes per outbox entry,
//! with real providers: delivered, retried at now + backoff, dead at the
//! last attempt or at once for a permanent failure.

use std::time::Duration;

use serde_json::Map;

use engine::deliver::webhook::{self, Webhook};
use engine::deliver::{attempt, Attempt, Backoff, Outcome, PushFile};
use engine::dispatch::{Content, Message};
use journeys::compiled::Channel;

const NOW: i64 = 1_772_442_000_000;

fn message(key: &str, channel: Channel, content: Content) -> Message {
    Message {
        key: key.into(),
        at: NOW,
        user: "u1".into(),
        journey: "j".into(),
        version: 1,
        step: "s".into(),
        channel,
        template: "t".into(),
        content,
    }
}

fn push(key: &str, tokens: &[&str]) -> Message {
    message(
        key,
        Channel::Push,
        Content::Push {
            tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
            title: Some("t".into()),
            body: None,
            data: Map::new(),
        },
    )
}

#[tokio::test]
async fn delivered_retried_and_dead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = PushFile::open(dir.path().join("push.jsonl")).expect("open");
    let backoff = Backoff::new(3, Duration::from_secs(1), Duration::from_secs(60));
    let first = Attempt {
        number: 1,
        now: NOW,
    };

    let o = attempt(&file, &push("k1", &["tok"]), first, &backoff).await;
    assert_eq!(o.result(), "ok");
    assert!(matches!(o, Outcome::Delivered(d) if !d.duplicate));

    let o = attempt(&file, &push("k2", &[]), first, &backoff).await;
    assert_eq!(
        o,
        Outcome::Dead {
            attempts: 1,
            reason: "the user has no push tokens".into()
        }
    );
    assert_eq!(o.result(), "dead");

    // A closed port: transient, retried within the backoff's cap, then
    // dead at the third attempt.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let hook = Webhook::new(webhook::Config {
        timeout: Duration::from_secs(2),
        secret: None,
    })
    .expect("client");
    let m = message(
        "k3",
        Channel::Webhook,
        Content::Webhook {
            method: "POST".into(),
            url: format!("http://{addr}/"),
            headers: vec![],
            body: None,
        },
    );
    for n in 1..=2u32 {
        let now = NOW + i64::from(n) * 10_000;
        match attempt(&hook, &m, Attempt { number: n, now }, &backoff).await {
            Outcome::Retry { next, at, reason } => {
                assert_eq!(next, n + 1);
                let cap = 1000 * (1i64 << (n - 1));
                assert!((now..=now + cap).contains(&at), "{at} within {cap} ms");
                assert!(reason.starts_with("cannot connect"), "{reason}");
            }
            o => panic!("attempt {n}: {o:?}"),
        }
    }
    match attempt(
        &hook,
        &m,
        Attempt {
            number: 3,
            now: NOW,
        },
        &backoff,
    )
    .await
    {
        Outcome::Dead { attempts, reason } => {
            assert_eq!(attempts, 3);
            assert!(
                reason.starts_with("gave up after 3 attempts: cannot connect"),
                "{reason}"
            );
        }
        o => panic!("{o:?}"),
    }
}
