//! `cargo bench -p engine --bench deliver [-- WEBHOOKS FILES]`: the
//! delivery providers at full speed on this machine, loopback only.
//!
//! - webhook: WEBHOOKS signed deliveries (default 100,000) with 32 in
//!   flight into a minimal local HTTP/1.1 receiver (hyper via axum,
//!   answering 200 with an empty body) running in the same process;
//! - maildir: FILES emails (default 5,000) formatted by lettre and written
//!   durably (fsync of the file and of `new/`), 32 in flight; then the
//!   same without fsync, to tell the disk's share;
//! - push file: FILES lines appended durably (group-committed fsync), 32
//!   in flight.
//!
//! Prints messages/s for each. Issue 9's target: ≥ 10,000 webhook
//! deliveries/s at 32 in flight. Figures: BENCHMARKS.md.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::Router;
use serde_json::json;

use engine::clock::{Clock, WallClock};
use engine::deliver::maildir::{self, Maildir};
use engine::deliver::sign::NoLinks;
use engine::deliver::webhook::{self, Webhook};
use engine::deliver::{Attempt, Provider, PushFile};
use engine::dispatch::{Content, Message};
use journeys::compiled::Channel;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IN_FLIGHT: usize = 32;

fn message(i: usize, channel: Channel, content: Content) -> Message {
    Message {
        key: format!("{i:032x}"),
        at: 1_772_442_000_000,
        user: format!("user-{i}"),
        journey: "orders".into(),
        version: 1,
        step: "crm".into(),
        channel,
        template: "t".into(),
        content,
    }
}

fn webhook_message(i: usize, url: &str) -> Message {
    message(
        i,
        Channel::Webhook,
        Content::Webhook {
            method: "POST".into(),
            url: url.to_owned(),
            headers: vec![("X-Source".into(), "sluice".into())],
            body: Some(json!({"user": format!("user-{i}"), "step": "crm", "total": 42.5})),
        },
    )
}

fn email_message(i: usize) -> Message {
    message(
        i,
        Channel::Email,
        Content::Email {
            to: Some(format!("Zoë {i} <user{i}@example.com>")),
            from: None,
            reply_to: None,
            subject: "Zoë, your cart is waiting 🛒".into(),
            text: Some("Hi Zoë,\nyou left 42.50 EUR in your cart.\n".into()),
            html: Some("<p>Hi Zoë, you left <b>42.50 EUR</b> in your cart.</p>".into()),
        },
    )
}

fn push_message(i: usize) -> Message {
    let mut data = serde_json::Map::new();
    data.insert("deeplink".into(), json!(format!("shop://cart/{i}")));
    message(
        i,
        Channel::Push,
        Content::Push {
            tokens: vec![format!("token-{i}")],
            title: Some("Still thinking?".into()),
            body: Some("Your cart is saved.".into()),
            data,
        },
    )
}

/// Delivers `messages` through `provider` with `IN_FLIGHT` at a time;
/// returns messages/s. Every delivery must succeed.
async fn run(provider: Arc<dyn Provider>, messages: Vec<Message>) -> f64 {
    let messages = Arc::new(messages);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..IN_FLIGHT {
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

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let webhooks = args.first().copied().unwrap_or(100_000);
    let files = args.get(1).copied().unwrap_or(5_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(|| async { StatusCode::OK });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = format!("http://{addr}/hooks/sluice");
        let hook: Arc<dyn Provider> = Arc::new(
            Webhook::new(webhook::Config {
                timeout: Duration::from_secs(5),
                secret: Some(b"bench-secret".to_vec()),
            })
            .expect("client"),
        );
        // Warm the connection pool.
        run(
            Arc::clone(&hook),
            (0..1_000).map(|i| webhook_message(i, &url)).collect(),
        )
        .await;
        let rate = run(
            hook,
            (0..webhooks).map(|i| webhook_message(i, &url)).collect(),
        )
        .await;
        println!("webhook: {webhooks} signed deliveries, {IN_FLIGHT} in flight: {rate:.0}/s");
        server.abort();

        let dir = tempfile::tempdir().expect("tempdir");
        let md: Arc<dyn Provider> = Arc::new(
            Maildir::open(
                maildir::Config::new(dir.path().join("maildir"), "Shop <hello@shop.example>"),
                Arc::new(NoLinks),
            )
            .expect("maildir"),
        );
        let rate = run(md, (0..files).map(email_message).collect()).await;
        println!("maildir: {files} emails, fsynced, {IN_FLIGHT} in flight: {rate:.0}/s");
        // The same without fsync: what formatting and the file system cost
        // apart from the disk.
        let mut unsynced =
            maildir::Config::new(dir.path().join("unsynced"), "Shop <hello@shop.example>");
        unsynced.sync = false;
        let md: Arc<dyn Provider> =
            Arc::new(Maildir::open(unsynced, Arc::new(NoLinks)).expect("maildir"));
        let rate = run(md, (0..files).map(email_message).collect()).await;
        println!("maildir: {files} emails, no fsync, {IN_FLIGHT} in flight: {rate:.0}/s");

        let push: Arc<dyn Provider> =
            Arc::new(PushFile::open(dir.path().join("push.jsonl")).expect("push file"));
        let rate = run(push, (0..files).map(push_message).collect()).await;
        println!("push file: {files} lines, fsynced, {IN_FLIGHT} in flight: {rate:.0}/s");
    });
}
