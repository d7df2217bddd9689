//! `engine::cluster::slots` against a real nats-server: several workers
//! (tasks with their own connections) reserve throttle slots in batches by
//! compare-and-set and spend them, one is killed mid-way; no half-open
//! window of the rate's length ever holds more than `count` spent slots,
//! the dead one wastes at most its batch, and the slots come as early as
//! the rule allows. The same over random rates, batch sizes and worker
//! counts, and through the engine's `Ledger` trait in real time.

#[path = "support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use engine::clock::{Clock, WallClock};
use engine::cluster::slots::{self, ClusterLedger, Rate, Reservoir, Shares};
use engine::cluster::{Cluster, Settings};
use engine::policy::ledger::{Ledger, Slot};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rand::{Rng, SeedableRng};
use support::nats::Nats;

async fn connect(nats: &Nats) -> Cluster {
    let mut s = Settings::new(nats.url(), "s");
    s.request_timeout = Duration::from_secs(5);
    Cluster::connect(s).await.expect("connect")
}

/// The largest number of `instants` in any half-open window `[t, t + per)`.
fn busiest_window(instants: &[DateTime<Utc>], per: TimeDelta) -> usize {
    let mut sorted = instants.to_vec();
    sorted.sort();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= per {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

#[derive(Default)]
struct Tally {
    /// Every start reserved, by any worker.
    reserved: Vec<DateTime<Utc>>,
    /// Every instant a slot was spent at.
    spent: Vec<DateTime<Utc>>,
}

/// One worker: reserves batches of `k` from `from` until it holds `want`
/// slots in all, spending each at a random instant inside it before the
/// next batch. Returns how many it reserved and spent (what a kill leaves
/// is read from `tally`).
#[allow(clippy::too_many_arguments)]
async fn taker(
    cluster: Cluster,
    throttle: String,
    rate: Rate,
    from: DateTime<Utc>,
    k: usize,
    want: usize,
    seed: u64,
    tally: Arc<Mutex<Tally>>,
    mine: Arc<Mutex<(usize, usize)>>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let slack_ms = rate.slack.num_milliseconds().max(1);
    let mut taken = 0;
    while taken < want {
        let starts = slots::reserve(&cluster, &throttle, rate, from, k)
            .await
            .expect("reserve");
        assert_eq!(starts.len(), k);
        assert!(starts.iter().all(|&s| s >= from));
        taken += k;
        tally.lock().expect("a test tally").reserved.extend(&starts);
        mine.lock().expect("a test tally").0 += k;
        for s in starts {
            let at = s + TimeDelta::milliseconds(rng.gen_range(0..slack_ms));
            tally.lock().expect("a test tally").spent.push(at);
            mine.lock().expect("a test tally").1 += 1;
            tokio::task::yield_now().await;
        }
    }
}

/// Runs `workers` takers of one throttle, aborting the first after it
/// reserved `kill_after` slots (if any); checks the bound, the dead
/// worker's waste and that the reserved starts are as early as the rule
/// allows.
#[allow(clippy::too_many_arguments)]
async fn run_takers(
    nats: &Nats,
    throttle: &str,
    rate: Rate,
    k: usize,
    workers: usize,
    want: usize,
    kill_after: Option<usize>,
    seed: u64,
) {
    let from = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .expect("an instant")
        .with_timezone(&Utc);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut handles = Vec::new();
    let mut counts = Vec::new();
    for w in 0..workers {
        let mine = Arc::new(Mutex::new((0usize, 0usize)));
        counts.push(mine.clone());
        handles.push(tokio::spawn(taker(
            connect(nats).await,
            throttle.to_string(),
            rate,
            from,
            k,
            want,
            seed.wrapping_add(w as u64),
            tally.clone(),
            mine,
        )));
    }
    if let Some(after) = kill_after {
        tokio::time::timeout(Duration::from_secs(30), async {
            while counts[0].lock().expect("a test tally").0 < after && !handles[0].is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the first worker reserves");
        handles[0].abort();
    }
    for (w, h) in handles.into_iter().enumerate() {
        match h.await {
            Ok(()) => {}
            Err(e) if e.is_cancelled() && w == 0 => {}
            Err(e) => panic!("worker {w}: {e}"),
        }
    }
    let tally = tally.lock().expect("a test tally");
    let busiest = busiest_window(&tally.spent, rate.per);
    assert!(
        busiest <= rate.count,
        "{throttle}: {busiest} slots spent in one window of {:?}, bound {}",
        rate.per,
        rate.count
    );
    let (reserved, spent) = *counts[0].lock().expect("a test tally");
    assert!(
        reserved - spent <= k,
        "the dead worker wasted {} slots, more than its batch of {k}",
        reserved - spent
    );
    for c in &counts[1..] {
        let (r, s) = *c.lock().expect("a test tally");
        assert_eq!((r, s), (r, r), "a live worker spends all it reserved");
        assert!(r >= want);
    }
    // Every start reserved, in order, is the earliest the rule allows
    // after the ones before it: no slot lost between workers. (A worker
    // killed while its compare-and-set is in flight may have reserved a
    // batch nobody saw, its waste: then starts may only be later.)
    let mut all = tally.reserved.clone();
    all.sort();
    let gap = rate.per + rate.slack;
    for j in 0..all.len() {
        let mut earliest = from;
        if j > 0 {
            earliest = earliest.max(all[j - 1]);
        }
        if j >= rate.count {
            earliest = earliest.max(all[j - rate.count] + gap);
        }
        if kill_after.is_some() {
            assert!(all[j] >= earliest, "{throttle}: start {j} of {}", all.len());
        } else {
            assert_eq!(all[j], earliest, "{throttle}: start {j} of {}", all.len());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_takers_keep_the_sliding_bound_and_a_killed_one_wastes_at_most_its_batch() {
    let nats = Nats::single();
    // 5 per second in batches of 3; four workers of 30 slots; the first is
    // killed after its second batch.
    let rate = Rate::new(5, TimeDelta::seconds(1));
    run_takers(&nats, "promo", rate, 3, 4, 30, Some(6), 7).await;
    // A new key per throttle: another throttle starts empty.
    let cluster = connect(&nats).await;
    let t = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(
        slots::reserve(&cluster, "other", rate, t, 2).await.unwrap(),
        vec![t, t]
    );
}

#[test]
fn over_random_rates_batches_and_workers_the_bound_holds() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let nats = Nats::single();
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        1usize..7,
        50i64..3_000,
        1usize..9,
        2usize..5,
        any::<bool>(),
        any::<u64>(),
    );
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&strategy, |(count, per_ms, k, workers, kill, seed)| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let rate = Rate::new(count, TimeDelta::milliseconds(per_ms));
            let throttle = format!("case-{case}");
            rt.block_on(run_takers(
                &nats,
                &throttle,
                rate,
                k,
                workers,
                3 * k + count,
                kill.then_some(k),
                seed,
            ));
            Ok(())
        })
        .unwrap();
}

/// Through the engine's trait, in real time: three workers' ledgers with
/// refill tasks decide a stream of messages (each either sent at once or
/// deferred to a slot, as the throttle step does); one worker is cut off
/// mid-way. The bound holds over every decision instant, and the workers
/// together use most of the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledgers_of_three_workers_share_the_rate_in_real_time() {
    let nats = Nats::single();
    let rate = Rate::new(20, TimeDelta::milliseconds(500));
    let run_for = Duration::from_millis(2500);
    let decided = Arc::new(Mutex::new(Vec::<DateTime<Utc>>::new()));
    let mut workers = Vec::new();
    for w in 0..3 {
        let cluster = connect(&nats).await;
        let decided = decided.clone();
        workers.push(tokio::spawn(async move {
            let reservoir = Arc::new(Reservoir::default());
            reservoir.ask();
            let shares = Shares {
                batch: 4,
                lead: Duration::from_millis(30),
            };
            let refill = tokio::spawn(slots::refill(
                cluster,
                "live".to_string(),
                rate,
                shares,
                Arc::new(WallClock),
                reservoir.clone(),
            ));
            let mut ledger = ClusterLedger::new(reservoir, rate, 4, Duration::from_millis(30));
            let started = tokio::time::Instant::now();
            // Worker 0 is cut off after a second (its held slots wasted).
            let stop = if w == 0 {
                Duration::from_millis(1000)
            } else {
                run_for
            };
            // Messages deferred to a slot: decided at its instant.
            let mut waiting: Vec<DateTime<Utc>> = Vec::new();
            while started.elapsed() < stop {
                let now = WallClock.now();
                waiting.retain(|&at| {
                    if at <= now {
                        decided.lock().expect("a test tally").push(at);
                        false
                    } else {
                        true
                    }
                });
                // A new message every millisecond, more than the rate.
                ledger.prune(now);
                match ledger.earliest(now, now) {
                    Slot::At(t) => {
                        ledger.grant(t);
                        if t == now {
                            decided.lock().expect("a test tally").push(t);
                        } else {
                            waiting.push(t);
                        }
                    }
                    Slot::Wait(until) => assert!(until > now),
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            refill.abort();
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let decided = decided.lock().expect("a test tally");
    let busiest = busiest_window(&decided, rate.per);
    assert!(busiest <= rate.count, "{busiest} in one window, bound 20");
    // Saturated for 2.5 s: at most 20 per 550 ms (~90), at least half of
    // it despite the cut-off and the first batch's lead.
    assert!(
        decided.len() >= 45,
        "only {} decided in {run_for:?}",
        decided.len()
    );
}
