//! The push-file provider: the exact line shape, one line per key within a
//! process run (and across a restart while the key is in the file's
//! tail), concurrent appends that never interleave, a torn tail cut at
//! open.

use std::io::Write;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use engine::deliver::pushfile::PushFile;
use engine::deliver::{Attempt, Provider};
use engine::dispatch::{Content, Message};
use journeys::compiled::Channel;

fn push(key: &str, tokens: &[&str]) -> Message {
    let mut data = Map::new();
    data.insert("deeplink".into(), json!("shop://cart/c-17"));
    Message {
        key: key.into(),
        at: 1_772_442_000_000,
        user: "u1".into(),
        journey: "cart".into(),
        version: 3,
        step: "nudge".into(),
        channel: Channel::Push,
        template: "cart-push".into(),
        content: Content::Push {
            tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
            title: Some("Still thinking?".into()),
            body: Some("Your cart \"c-17\" is saved 🛒\nsee you".into()),
            data,
        },
    }
}

fn attempt() -> Attempt {
    Attempt {
        number: 1,
        now: 1_772_442_001_000,
    }
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test]
async fn one_line_per_message_in_the_documented_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outbox/push.jsonl");
    let p = PushFile::open(&path).expect("open");
    let d = p
        .deliver(&push("k1", &["tok-a", "tok-b"]), attempt())
        .await
        .expect("ok");
    assert!(!d.duplicate);
    let raw = std::fs::read_to_string(&path).expect("read");
    assert_eq!(raw.lines().count(), 1);
    assert!(raw.ends_with('\n'));
    let line: Value = serde_json::from_str(raw.trim_end()).expect("json");
    let keys: Vec<&str> = line
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["key", "at", "user", "journey", "step", "tokens", "title", "body", "data"]
    );
    assert_eq!(
        line,
        json!({
            "key": "k1", "at": "2026-03-02T09:00:00Z", "user": "u1", "journey": "cart",
            "step": "nudge", "tokens": ["tok-a", "tok-b"], "title": "Still thinking?",
            "body": "Your cart \"c-17\" is saved 🛒\nsee you",
            "data": {"deeplink": "shop://cart/c-17"}
        })
    );
}

#[tokio::test]
async fn a_key_is_written_once_per_run_and_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("push.jsonl");
    let p = Arc::new(PushFile::open(&path).expect("open"));
    let m = push("k-dup", &["t"]);
    assert!(!p.deliver(&m, attempt()).await.expect("ok").duplicate);
    assert!(p.deliver(&m, attempt()).await.expect("ok").duplicate);

    // 200 concurrent deliveries of 50 keys (4 each): 50 whole lines.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let p = Arc::clone(&p);
        tasks.push(tokio::spawn(async move {
            let m = push(&format!("k{}", i % 50), &["tok"]);
            p.deliver(&m, attempt()).await.expect("ok").duplicate
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        fresh += usize::from(!t.await.expect("task"));
    }
    assert_eq!(fresh, 50);
    let all = lines(&path);
    assert_eq!(all.len(), 51);
    let mut keys: Vec<&str> = all.iter().filter_map(|l| l["key"].as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 51, "no key twice");
    drop(p);

    // A new process run learns the keys from the file.
    let p = PushFile::open(&path).expect("reopen");
    assert!(p.deliver(&m, attempt()).await.expect("ok").duplicate);
    assert!(
        !p.deliver(&push("k-new", &["t"]), attempt())
            .await
            .expect("ok")
            .duplicate
    );
    assert_eq!(lines(&path).len(), 52);
}

#[tokio::test]
async fn a_torn_last_line_is_cut_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("push.jsonl");
    {
        let p = PushFile::open(&path).expect("open");
        p.deliver(&push("k-whole", &["t"]), attempt())
            .await
            .expect("ok");
    }
    // A crash in the middle of the next append.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(br#"{"key":"k-torn","at":"2026-"#)
        .expect("write");
    drop(f);
    let p = PushFile::open(&path).expect("reopen");
    // The torn message was never acknowledged: delivered again, whole.
    assert!(
        !p.deliver(&push("k-torn", &["t"]), attempt())
            .await
            .expect("ok")
            .duplicate
    );
    let all = lines(&path);
    let keys: Vec<&str> = all.iter().filter_map(|l| l["key"].as_str()).collect();
    assert_eq!(keys, ["k-whole", "k-torn"]);
}

#[tokio::test]
async fn no_tokens_or_a_wrong_message_fail_permanently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("push.jsonl");
    let p = PushFile::open(&path).expect("open");
    let f = p
        .deliver(&push("k1", &[]), attempt())
        .await
        .expect_err("no tokens");
    assert!(f.is_permanent());
    assert_eq!(f.reason, "the user has no push tokens");
    let mut m = push("k2", &["t"]);
    m.content = Content::Webhook {
        method: "POST".into(),
        url: "http://127.0.0.1/".into(),
        headers: vec![],
        body: None,
    };
    let f = p.deliver(&m, attempt()).await.expect_err("wrong channel");
    assert!(f.is_permanent());
    let f = p
        .deliver(&push("k\n3", &["t"]), attempt())
        .await
        .expect_err("bad key");
    assert!(f.is_permanent());
    assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
}
