//! The cluster substrate's speed on this machine, against a nats-server
//! started here (127.0.0.1, JetStream fsyncing every write):
//!
//! - ingest: events/s acknowledged by JetStream with 1, 2 and 3
//!   publishers (each its own connection, batches of 100 in flight);
//! - processing: the worker loop with 1, 2 and 3 workers (the test model as
//!   processor, not the engine) draining a backlog of events: events/s
//!   from start to the last checkpoint;
//! - restore: the time to read back a partition of 100,000 user records
//!   from the changelog (about 200 bytes each).
//!
//! ```sh
//! cargo bench -p engine --bench cluster          # -- SECONDS BACKLOG USERS
//! ```

#[path = "../../tests/support/cluster_model.rs"]
mod model;
#[allow(dead_code)]
#[path = "../../tests/support/nats.rs"]
mod nats;
#[path = "../../tests/support/port.rs"]
mod port;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::cluster::worker::{Tuning, Worker};
use engine::cluster::{changelog, lease::Lease, log, Cluster, Settings};

const P: u32 = 64;

fn settings(nats: &nats::Nats, prefix: &str) -> Settings {
    let mut s = Settings::new(nats.url(), prefix);
    s.lease_ttl = Duration::from_secs(6);
    s
}

fn event(n: u64, users: u64) -> (String, String, bytes::Bytes) {
    let user = format!("user-{}", n % users);
    let id = format!("ev-{n}");
    let payload = format!("{{\"user\":\"{user}\",\"id\":\"{id}\",\"event\":\"viewed\"}}");
    (user, id, bytes::Bytes::from(payload))
}

/// Publishes events `from..from + count`; returns each partition's last
/// sequence.
async fn publish(cluster: &Cluster, from: u64, count: u64, users: u64) -> HashMap<u32, u64> {
    let mut last = HashMap::new();
    let mut n = from;
    while n < from + count {
        let batch: Vec<_> = (n..(n + 100).min(from + count))
            .map(|i| event(i, users))
            .collect();
        n += batch.len() as u64;
        let appends = log::Append::all(&batch);
        for a in log::append(cluster, P, &appends).await.expect("append") {
            last.insert(a.partition, a.seq);
        }
    }
    last
}

async fn ingest(nats: &nats::Nats, publishers: usize, seconds: u64) {
    let prefix = format!("ing{publishers}");
    let mut tasks = Vec::new();
    for k in 0..publishers {
        let cluster = Cluster::connect(settings(nats, &prefix))
            .await
            .expect("connect");
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let mut n = 0u64;
            while began.elapsed() < Duration::from_secs(seconds) {
                publish(&cluster, (k as u64) << 40 | n, 1_000, 10_000).await;
                n += 1_000;
            }
            (n, began.elapsed())
        }));
    }
    let mut total = 0.0;
    for t in tasks {
        let (n, took) = t.await.expect("publisher");
        total += n as f64 / took.as_secs_f64();
    }
    println!(
        "ingest  publishers={publishers}  {total:>8.0} events/s  ({:.0} per publisher)",
        total / publishers as f64
    );
}

async fn process(nats: &nats::Nats, workers: usize, backlog: u64) {
    let prefix = format!("proc{workers}");
    let cluster = Cluster::connect(settings(nats, &prefix))
        .await
        .expect("connect");
    let want = publish(&cluster, 0, backlog, 10_000).await;
    let commits: model::Commits = Arc::default();
    let began = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let cluster = Cluster::connect(settings(nats, &prefix))
            .await
            .expect("connect");
        let processor = model::Model {
            me: format!("w{w}"),
            users: HashMap::new(),
            commits: commits.clone(),
        };
        let tuning = Tuning {
            partitions: P,
            batch: 512,
            poll: Duration::from_millis(2),
        };
        tasks.push(tokio::spawn(async move {
            let mut worker = Worker::new(cluster, format!("w{w}"), tuning, processor);
            worker.run().await
        }));
    }
    // Done when every partition's commits reach its last event.
    loop {
        let done = {
            let c = commits.lock().expect("commits");
            want.iter()
                .all(|(p, seq)| c.iter().any(|(_, cp, _, s)| cp == p && s >= seq))
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = began.elapsed();
    for t in tasks {
        t.abort();
    }
    println!(
        "process workers={workers}  {:>8.0} events/s  ({:.0} per worker; {backlog} events in {took:.2?}, including takeover and restore)",
        backlog as f64 / took.as_secs_f64(),
        backlog as f64 / took.as_secs_f64() / workers as f64
    );
}

async fn restore(nats: &nats::Nats, users: usize) {
    let cluster = Cluster::connect(settings(nats, "rst"))
        .await
        .expect("connect");
    let record = bytes::Bytes::from(vec![b'x'; 200]);
    let names: Vec<String> = (0..users).map(|i| format!("user-{i}")).collect();
    let owner = Lease::acquire(&cluster, 0, "bench")
        .await
        .expect("take partition 0")
        .expect("partition 0 is free");
    let mut fence = changelog::restore_fenced(&cluster, 0)
        .await
        .expect("restore")
        .fence;
    for chunk in names.chunks(1_000) {
        let records: Vec<(&str, bytes::Bytes)> =
            chunk.iter().map(|u| (u.as_str(), record.clone())).collect();
        changelog::publish(&cluster, &owner, &mut fence, &records)
            .await
            .expect("publish");
    }
    let began = Instant::now();
    let restored = changelog::restore_fenced(&cluster, 0)
        .await
        .expect("restore");
    let took = began.elapsed();
    assert_eq!(restored.records.len(), users);
    assert_eq!(restored.fence.keys(), users);
    println!(
        "restore users={users}  {took:.2?}  ({:.0} records/s)",
        users as f64 / took.as_secs_f64()
    );
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let backlog: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let users: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let nats = nats::Nats::single();
    runtime.block_on(async {
        for k in 1..=3 {
            ingest(&nats, k, seconds).await;
        }
        for k in 1..=3 {
            process(&nats, k, backlog).await;
        }
        restore(&nats, users).await;
    });
}
