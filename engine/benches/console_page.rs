//! `cargo bench -p engine --bench console_page [-- USERS EVENTS]`: the web
//! console's journey page with a large store. Simulates the example shop
//! (default 100,000 users, 400,000 events) into a kept store with the
//! message log, then serves it as `sluice run` does (the single writer on
//! its thread, the API with the console on 127.0.0.1) and times, over real
//! HTTP with a logged-in session: the journey page, the counts the page
//! polls, a user's timeline and the journeys list. Also times opening the
//! store (counters loaded) and counting the counters afresh (what opening
//! a store without them costs). Figures: BENCHMARKS.md.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;

use engine::api::{self, Tokens};
use engine::clock::{Clock, WallClock};
use engine::engine::{Delivery, Engine};
use engine::output::Discard;
use engine::service::{self, Outlet, Writer};
use engine::simulate::{SimOptions, Simulation};
use engine::store::outbox::OutboxEntry;
use engine::store::sled_store::{SledOptions, SledStore};
use engine::store::tally;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "bench-admin-token";

/// Deliveries are not part of this bench: entries stay in the outbox.
struct Nowhere;

impl Outlet for Nowhere {
    fn offer(&mut self, _entry: OutboxEntry) -> bool {
        false
    }
}

fn request(port: u16, method: &str, path: &str, cookie: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn time(port: u16, path: &str, cookie: &str, n: usize) -> String {
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let (status, body) = request(port, "GET", path, cookie, "");
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200, "{path}: {body}");
        bytes = body.len();
    }
    ms.sort_by(f64::total_cmp);
    format!(
        "{path}: {n} requests, median {:.2} ms, p95 {:.2} ms, max {:.2} ms ({bytes} bytes)",
        percentile(&ms, 0.5),
        percentile(&ms, 0.95),
        ms[ms.len() - 1]
    )
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let users: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(400_000);
    let spec = shopgen::Spec {
        users,
        events,
        ..shopgen::Spec::default()
    };
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("events.jsonl");
    shopgen::generate_file(&spec, &path).expect("generate");
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let config =
        Arc::new(journeys::load(&shop).unwrap_or_else(|_| panic!("examples/shop is invalid")));
    let store_dir = dir.path().join("store");

    // The store: the shop's two weeks, kept, with the message log.
    let began = Instant::now();
    let until = spec.start + TimeDelta::days(spec.days as i64);
    let mut sim = Simulation::new(
        Arc::clone(&config),
        spec.start,
        &SimOptions {
            store: Some(store_dir.clone()),
            log_messages: true,
            ..SimOptions::default()
        },
        Box::new(Discard),
    )
    .expect("open");
    let file = engine::events::EventFile::open(&path, None).expect("events");
    let mut some_user = String::new();
    for ev in file.events().expect("events") {
        let ev = ev.expect("event");
        if ev.ts > until {
            break;
        }
        if some_user.is_empty() {
            some_user = ev.user.clone();
        }
        sim.event(&ev).expect("simulate");
    }
    sim.finish(until).expect("finish");
    println!(
        "console_page: store of {users} users built in {:.1}s",
        began.elapsed().as_secs_f64()
    );

    // Counting the counters afresh (a store written before they existed).
    {
        let store = SledStore::open(&store_dir, &SledOptions::default()).expect("open");
        let t = Instant::now();
        let rebuilt = tally::rebuild(&store).expect("rebuild");
        let live: u64 = rebuilt.counts().values().map(|c| c.live).sum();
        let sends: u64 = rebuilt
            .counts()
            .values()
            .map(|c| c.sent + c.deferred + c.suppressed + c.failed)
            .sum();
        println!(
            "console_page: counting afresh: {:.0} ms ({} steps, {live} live instances, {sends} send decisions)",
            t.elapsed().as_secs_f64() * 1e3,
            rebuilt.counts().len()
        );
    }

    // Serve it as `sluice run` does.
    let t = Instant::now();
    let store = SledStore::open(
        &store_dir,
        &SledOptions {
            sync_commits: true,
            ..SledOptions::default()
        },
    )
    .expect("open");
    let clock: Arc<dyn Clock> = Arc::new(WallClock);
    let engine = Engine::open(
        Arc::clone(&config),
        Box::new(store),
        Arc::clone(&clock),
        Delivery::Workers,
        Box::new(Discard),
        engine::Options::default(),
    )
    .expect("engine");
    println!(
        "console_page: store opened (counters loaded) in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let (handle, rx) = service::channel();
    let mut writer = Writer::new(engine, Arc::clone(&clock), Nowhere, handle.clone(), None);
    let writer_thread = std::thread::spawn(move || {
        writer.start().expect("start");
        writer.run(&rx);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = api::router_with(
        Arc::new(handle.clone()),
        Tokens {
            ingest: "bench-ingest-token".into(),
            admin: ADMIN.into(),
            segment_secret: None,
        },
        api::Options {
            clock: Arc::clone(&clock),
            console: Some(api::console::Settings::new(
                Arc::clone(&config),
                "http://127.0.0.1",
            )),
            ..api::Options::default()
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(api::serve(
        listener,
        app,
        async move {
            let _ = stopped.await;
        },
        api::ServeOptions::default(),
    ));
    // Wait for the writer, then log in.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !api::Handle::ready(&handle) {
        assert!(Instant::now() < deadline, "the writer did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, answer) = request(
        port,
        "POST",
        "/login",
        "",
        &format!("token={ADMIN}&next=%2F"),
    );
    assert_eq!(status, 303, "{answer}");
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();

    for path in [
        "/journeys/cart-abandonment".to_owned(),
        "/journeys/welcome-series".to_owned(),
        "/counts?journey=cart-abandonment".to_owned(),
        "/".to_owned(),
        format!("/users?id={some_user}"),
    ] {
        // Warm up once, then time.
        let _ = request(port, "GET", &path, &cookie, "");
        println!("console_page: {}", time(port, &path, &cookie, 200));
    }
    let _ = stop.send(());
    let _ = rt.block_on(server);
    handle.send(service::Command::Stop);
    writer_thread.join().expect("writer");
}
