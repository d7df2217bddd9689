//! The engine as a cluster worker's processor (`engine::cluster::node`)
//! on a real nats-server, in process: what its partitions leave on the
//! changelog. Every user's journey sets a timer and two outbox entries,
//! all deleted again (the timer fires, the entries are delivered); once
//! the deletions' tombstones have expired, the changelog stream holds
//! exactly the partitions' live keys, so it does not grow with fired
//! timers and delivered messages.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::clock::{Clock, WallClock};
use engine::cluster::node::{self, Node};
use engine::cluster::worker::{Tuning, Worker};
use engine::cluster::{changelog, log, Cluster, Settings};
use engine::metrics::Metrics;
use engine::service::{Command, Outlet};
use engine::store::outbox::OutboxEntry;
use support::nats::Nats;
use support::stream::changelog_messages;

const P: u32 = 2;
const USERS: usize = 20;

/// Delivers every entry at once: the result goes back to the node as the
/// delivery workers' would; the (user, step) offered is recorded.
struct AtOnce {
    results: Sender<Command>,
    offered: Arc<Mutex<BTreeSet<(String, String)>>>,
}

impl Outlet for AtOnce {
    fn offer(&mut self, entry: OutboxEntry) -> bool {
        if let Ok(mut o) = self.offered.lock() {
            o.insert((entry.message.user.clone(), entry.message.step.clone()));
        }
        self.results
            .send(Command::Delivered {
                id: entry.id,
                channel: entry.message.channel,
                result: Ok(()),
                news: Vec::new(),
            })
            .is_ok()
    }
}

/// Every restored record of the cluster's partitions: (live, tombstones).
async fn records(cluster: &Cluster) -> (usize, usize) {
    let mut live = 0;
    let mut dead = 0;
    for p in 0..P {
        for r in changelog::restore(cluster, p).await.expect("restore") {
            if r.bytes.as_ref() == changelog::TOMBSTONE {
                dead += 1;
            } else {
                live += 1;
            }
        }
    }
    (live, dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fired_timers_and_delivered_messages_leave_the_changelog() {
    let nats = Nats::single();
    let (_tmp, dir) = support::fixture::temp_copy("crash-run", &[("__PORT__", "9".to_string())]);
    let config = Arc::new(journeys::load(&dir).expect("the crash-run fixture compiles"));
    let store = tempfile::tempdir().expect("a temporary directory");
    let mut s = Settings::new(nats.url(), "n");
    s.lease_ttl = Duration::from_millis(1500);
    s.request_timeout = Duration::from_secs(3);
    s.tombstone_ttl = Duration::from_secs(3);
    let cluster = Cluster::connect(s).await.expect("connect");
    assert!(
        cluster.tombstones_expire(),
        "nats-server 2.11+ expires them"
    );

    let (tx, rx) = std::sync::mpsc::channel();
    let offered: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
    let clock: Arc<dyn Clock> = Arc::new(WallClock);
    let node = Node::new(
        node::Settings {
            root: store.path().join("partitions"),
            config,
            clock: Arc::clone(&clock),
            metrics: Metrics::for_cluster(),
            signer: None,
            unsubscribe_base: "http://127.0.0.1:9/v1/unsubscribe".into(),
            partitions: P,
            cache_bytes: 1 << 20,
            ledgers: None,
        },
        AtOnce {
            results: tx,
            offered: Arc::clone(&offered),
        },
        rx,
    );
    let tuning = Tuning {
        partitions: P,
        batch: 64,
        poll: Duration::from_millis(5),
    };
    let mut worker = Worker::new(cluster.clone(), "solo", tuning, node);

    let ts = clock
        .now()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let payloads: Vec<(String, String, bytes::Bytes)> = (0..USERS)
        .map(|i| {
            let user = format!("u{i:02}");
            let id = format!("{user}-ping");
            let line = serde_json::json!({
                "type": "track", "user": user, "ts": ts, "id": id, "event": "ping"
            });
            (user, id, bytes::Bytes::from(line.to_string()))
        })
        .collect();
    let appends = log::Append::all(&payloads);
    log::append(&cluster, P, &appends).await.expect("append");

    // Rounds until both messages of every user went out (the second two
    // seconds after the first), then a moment more for the last results
    // to be recorded and published.
    let deadline = Instant::now() + Duration::from_secs(30);
    while offered.lock().expect("offered").len() < 2 * USERS {
        assert!(Instant::now() < deadline, "every message was offered");
        worker.round().await.expect("a round");
    }
    let settle = Instant::now() + Duration::from_millis(300);
    while Instant::now() < settle {
        worker.round().await.expect("a round");
    }
    let (live, dead) = records(&cluster).await;
    assert!(
        dead > 0,
        "the last deletions are on the changelog as tombstones for a while"
    );

    // Past the TTL: the live keys alone, nothing deleted left behind.
    let expired = Instant::now() + Duration::from_millis(3_500);
    while Instant::now() < expired {
        worker.round().await.expect("a round");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (live_after, dead_after) = records(&cluster).await;
    assert_eq!(dead_after, 0, "every tombstone expired");
    assert_eq!(live_after, live, "the live keys stay");
    // One message per live key (write-ahead chunks included), none more.
    let messages = changelog_messages(&nats, "n").await;
    assert_eq!(messages as usize, live_after, "{messages} messages");
    worker.leave().await.expect("leave");
}
