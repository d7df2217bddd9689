//! `sluice run` under continuous ingest, killed with SIGKILL at random
//! moments 20 times and started again on the same store each time. At the
//! end every user whose events were acknowledged (202) has received both
//! of the journey's webhooks — the immediate one and the one two seconds
//! later — and no user/step ever arrived with two different keys. The
//! moments come from a fixed seed.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::http::try_request;
use support::port::free_port;
use support::receiver::{Receiver, Reply};
use support::server::SluiceRun;

/// One `POST /v1/events` on a fresh connection; the status, or `None`
/// when the server is gone.
fn post(port: u16, body: &str) -> Option<u16> {
    let headers = [
        ("Authorization", "Bearer ingest-token"),
        ("Content-Type", "application/x-ndjson"),
    ];
    try_request(port, "POST", "/v1/events", &headers, body.as_bytes())
        .ok()
        .map(|r| r.status)
}

#[test]
fn sigkill_twenty_times_under_ingest_loses_and_doubles_nothing() {
    // Records each webhook and answers 200, on kept-alive connections.
    let receiver = Receiver::keep_alive(|_, _| Reply::status(200));
    let (tmp, dir) =
        support::fixture::temp_copy("crash-run", &[("__PORT__", receiver.port.to_string())]);
    let store = tmp.path().join("store");
    let port = free_port();
    let mut server = SluiceRun::new(&dir)
        .store(&store)
        .listen_on(port)
        .env("SLUICE_INGEST_TOKEN", "ingest-token")
        .env("SLUICE_ADMIN_TOKEN", "admin-token")
        .env("SLUICE_LOG", "warn")
        .ready_within(Duration::from_secs(30));
    let next_user = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut seed: u64 = 0xC0FFEE;
    for round in 0..20 {
        server.restart();
        let stop = Arc::new(AtomicBool::new(false));
        let posters: Vec<_> = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                let next = Arc::clone(&next_user);
                let acked = Arc::clone(&acked);
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let first = next.fetch_add(10, Ordering::SeqCst);
                        let users: Vec<String> =
                            (first..first + 10).map(|n| format!("u{n:05}")).collect();
                        let body: String = users
                            .iter()
                            .map(|u| {
                                format!(
                                    "{{\"type\":\"track\",\"user\":\"{u}\",\"ts\":\"2026-01-01T00:00:00Z\",\"id\":\"{u}-ping\",\"event\":\"ping\"}}\n"
                                )
                            })
                            .collect();
                        match post(port, &body) {
                            Some(202) => {
                                if let Ok(mut a) = acked.lock() {
                                    a.extend(users);
                                }
                            }
                            Some(_) | None => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            })
            .collect();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ms = 150 + (seed >> 33) % 900;
        std::thread::sleep(Duration::from_millis(ms));
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for p in posters {
            let _ = p.join();
        }
        let _ = round;
    }
    // Once more, and let everything due arrive.
    server.restart();
    let acked = acked.lock().expect("acked").clone();
    assert!(
        acked.len() > 200,
        "enough was acknowledged: {}",
        acked.len()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let m: Vec<(String, &str)> = {
            let seen = receiver.keys_by_user_step();
            acked
                .iter()
                .flat_map(|u| [(u.clone(), "now"), (u.clone(), "later")])
                .filter(|(u, s)| !seen.contains_key(&(u.clone(), (*s).to_owned())))
                .collect()
        };
        if m.is_empty() || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        missing.is_empty(),
        "{} acknowledged webhooks never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let seen = receiver.keys_by_user_step();
    for ((user, step), keys) in seen.iter() {
        let distinct: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{user}/{step} arrived with {} different keys",
            distinct.len()
        );
    }
}
