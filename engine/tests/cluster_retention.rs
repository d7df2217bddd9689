//! Retention of the event stream (`engine::cluster::log::Retention`), on a
//! real nats-server: an owner removes its partitions' events at or before
//! the committed checkpoint, at most as often as its retention allows,
//! never an event after the checkpoint (events published while it is
//! paused stay), never once its lease is gone; a new owner clears what the
//! old one left, reads everything after the checkpoint, and its consumer
//! lag stays right although the stream's first sequences moved.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_nats::jetstream;
use engine::cluster::lease::Checkpoint;
use engine::cluster::log::Retention;
use engine::cluster::worker::{Tuning, Worker};
use engine::cluster::{log, Cluster, Settings};
use futures_util::TryStreamExt;
use support::cluster::log_to_stderr;
use support::model::{Commits, Model};
use support::nats::Nats;

const P: u32 = 2;
const PREFIX: &str = "r";

fn settings(nats: &Nats) -> Settings {
    let mut s = Settings::new(nats.url(), PREFIX);
    s.lease_ttl = Duration::from_millis(1500);
    s.request_timeout = Duration::from_secs(3);
    // Purged at once after a take, then only once 8 events were applied
    // since the last purge: the test sees both a purge and its absence.
    s.retention = Retention {
        every: Duration::from_secs(3600),
        events: 8,
    };
    s
}

fn worker(cluster: Cluster, me: &str, commits: &Commits) -> Worker<Model> {
    log_to_stderr();
    let model = Model {
        me: me.to_string(),
        users: HashMap::new(),
        commits: commits.clone(),
    };
    let tuning = Tuning {
        partitions: P,
        batch: 5,
        // A new reader's first events are in within this (loaded machine).
        poll: Duration::from_millis(500),
    };
    Worker::new(cluster, me, tuning, model)
}

/// What the test reads off the server: the event stream and checkpoints.
struct Server {
    js: jetstream::Context,
}

impl Server {
    async fn connect(nats: &Nats) -> Server {
        let client = async_nats::connect(nats.url()).await.expect("connect");
        Server {
            js: jetstream::new(client),
        }
    }

    /// Partition `p`'s messages in the event stream.
    async fn count(&self, p: u32) -> usize {
        let stream = self
            .js
            .get_stream(format!("{PREFIX}_EV"))
            .await
            .expect("the event stream");
        let subject = format!("{PREFIX}.ev.{p}");
        let counts: Vec<(String, usize)> = stream
            .info_with_subjects(&subject)
            .await
            .expect("subjects")
            .try_collect()
            .await
            .expect("subjects");
        counts
            .into_iter()
            .filter(|(s, _)| *s == subject)
            .map(|(_, n)| n)
            .sum()
    }

    /// Whether the event at `seq` is still in the stream.
    async fn holds(&self, seq: u64) -> bool {
        let stream = self
            .js
            .get_stream(format!("{PREFIX}_EV"))
            .await
            .expect("the event stream");
        stream.get_raw_message(seq).await.is_ok()
    }

    async fn checkpoint(&self, p: u32) -> Checkpoint {
        let kv = self
            .js
            .get_key_value(format!("{PREFIX}_checkpoints"))
            .await
            .expect("the checkpoints bucket");
        let v = kv
            .get(format!("p{p}"))
            .await
            .expect("read a checkpoint")
            .expect("a checkpoint");
        serde_json::from_slice(&v).expect("a checkpoint record")
    }

    /// What the stream holds of every partition's acknowledged events:
    /// exactly those after a point at or before the partition's
    /// checkpoint, nothing else. Returns that point per partition: the
    /// sequence its events were purged through (0: none purged).
    async fn tail(&self, acked: &BTreeMap<u32, Vec<u64>>) -> Vec<u64> {
        let mut out = Vec::new();
        for (p, seqs) in acked {
            let cp = self.checkpoint(*p).await.seq;
            let mut held = Vec::new();
            for &s in seqs {
                held.push((s, self.holds(s).await));
            }
            let through = held
                .iter()
                .filter(|(_, h)| !h)
                .map(|(s, _)| *s)
                .max()
                .unwrap_or(0);
            for (s, h) in &held {
                assert_eq!(
                    *h,
                    *s > through,
                    "partition {p}: event {s} (purged through {through}): only a prefix is purged"
                );
            }
            assert!(
                through <= cp,
                "partition {p}: purged through {through}, past the checkpoint {cp}"
            );
            let left = held.iter().filter(|(_, h)| *h).count();
            assert_eq!(
                self.count(*p).await,
                left,
                "partition {p}: the stream holds exactly the events after {through}"
            );
            out.push(through);
        }
        out
    }
}

/// `n` events of every partition's users, appended; their sequences per
/// partition (in order) are added to `acked`, and their ids to `ids`.
async fn append(
    cluster: &Cluster,
    tag: &str,
    n: usize,
    acked: &mut BTreeMap<u32, Vec<u64>>,
    ids: &mut BTreeMap<String, BTreeSet<String>>,
) {
    let mut events = Vec::new();
    for p in 0..P {
        let users: Vec<String> = (0u32..)
            .map(|i| format!("u{i}"))
            .filter(|u| engine::hash::partition_of(u, P) == p)
            .take(3)
            .collect();
        for i in 0..n {
            let user = users[i % users.len()].clone();
            let id = format!("{tag}-{p}-{i}");
            let payload = serde_json::json!({"user": user, "id": id}).to_string();
            ids.entry(user.clone()).or_default().insert(id.clone());
            events.push((user, id, bytes::Bytes::from(payload)));
        }
    }
    let appends = log::Append::all(&events);
    for a in log::append(cluster, P, &appends).await.expect("append") {
        assert!(!a.duplicate);
        acked.entry(a.partition).or_default().push(a.seq);
    }
    // Let open readers receive them: a batch then holds 5 of them.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_events_leave_the_stream_and_nothing_after_the_checkpoint_does() {
    let nats = Nats::single();
    let server = Server::connect(&nats).await;
    let commits: Commits = Default::default();
    let cluster = Cluster::connect(settings(&nats)).await.expect("connect");
    let mut a = worker(cluster.clone(), "a", &commits);
    a.round().await.expect("a round");
    assert_eq!(a.owned(), (0..P).collect::<Vec<_>>());

    let mut acked = BTreeMap::new();
    let mut ids = BTreeMap::new();
    append(&cluster, "e1", 20, &mut acked, &mut ids).await;
    let nth = |acked: &BTreeMap<u32, Vec<u64>>, k: usize| -> Vec<u64> {
        (0..P).map(|p| acked[&p][k - 1]).collect()
    };

    // A batch of 5 applied: the first checkpoint after the take is purged
    // at once; the stream keeps the unapplied tail of 15.
    a.round().await.expect("a round");
    for p in 0..P {
        assert_eq!(server.checkpoint(p).await.seq, acked[&p][4]);
    }
    assert_eq!(server.tail(&acked).await, nth(&acked, 5));

    // 5 more: fewer than 8 since the last purge, so not purged yet.
    a.round().await.expect("a round");
    assert_eq!(server.tail(&acked).await, nth(&acked, 5));
    // 10 since the last purge: purged through the checkpoint.
    a.round().await.expect("a round");
    assert_eq!(server.tail(&acked).await, nth(&acked, 15));

    // Events published while the owner is paused stay; its next batch
    // (5 since the last purge) purges nothing.
    append(&cluster, "e2", 10, &mut acked, &mut ids).await;
    a.round().await.expect("a round");
    for p in 0..P {
        assert_eq!(server.checkpoint(p).await.seq, acked[&p][19]);
    }
    assert_eq!(server.tail(&acked).await, nth(&acked, 15));

    // Its lease runs out: its next round loses every partition and
    // purges nothing, though events before its checkpoint are left.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    a.round().await.expect("a round");
    assert!(a.owned().is_empty(), "the leases aged out");
    assert_eq!(a.stats.leases_lost, u64::from(P));
    assert_eq!(server.tail(&acked).await, nth(&acked, 15));
    // (It heartbeated in that round: it leaves, so the next owner is
    // given every partition.)
    a.leave().await.expect("leave");

    // A new owner clears what the old one left (its first checkpoint
    // after the take) and reads on from the checkpoint: the first 5 of
    // the paused owner's 10; its lag counts the 5 after them, although
    // the stream's first sequences moved.
    let other = Cluster::connect(settings(&nats)).await.expect("connect");
    let mut b = worker(other, "b", &commits);
    b.round().await.expect("a round");
    assert_eq!(b.owned(), (0..P).collect::<Vec<_>>());
    for p in 0..P {
        let cp = server.checkpoint(p).await;
        assert_eq!(cp.seq, acked[&p][24], "partition {p}");
    }
    assert_eq!(server.tail(&acked).await, nth(&acked, 25));
    let lag: BTreeMap<u32, u64> = b.lag().into_iter().collect();
    for p in 0..P {
        assert_eq!(lag[&p], 5, "partition {p}'s lag");
    }

    // More events after the purge; the new owner catches up with all.
    append(&cluster, "e3", 7, &mut acked, &mut ids).await;
    let last: Vec<u64> = (0..P).map(|p| *acked[&p].last().expect("events")).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        b.round().await.expect("a round");
        let mut done = true;
        for p in 0..P {
            done &= server.checkpoint(p).await.seq >= last[p as usize];
        }
        if done {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "b caught up");
    }
    for (p, lag) in b.lag() {
        assert_eq!(lag, 0, "partition {p}'s lag once caught up");
    }
    // 12 applied since the purge after its first batch: purged again, at
    // the batch that made it 8 or more, or a later one.
    let purged = server.tail(&acked).await;
    for p in 0..P {
        assert!(
            purged[p as usize] >= acked[&p][32],
            "partition {p}: {purged:?}"
        );
    }

    // Every acknowledged event applied exactly once, across both owners.
    let applied: BTreeMap<String, Vec<String>> = b
        .processor()
        .users
        .values()
        .flat_map(|users| users.iter().map(|(u, ids)| (u.clone(), ids.clone())))
        .collect();
    for (user, want) in &ids {
        let got = &applied[user];
        let set: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(set.len(), got.len(), "{user}: an event applied twice");
        assert_eq!(&set, want, "{user}: every event applied");
    }
    b.leave().await.expect("leave");
}

/// A purge that fails (here NATS refuses it: the stream denies purges,
/// a setting it does not let a stream drop again) is logged and does not
/// stop processing: the partition's batches go on, its lease is kept, and
/// the purge is tried again at every occasion (here every round) without
/// ever failing the round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_purge_never_stops_processing() {
    let nats = Nats::single();
    let server = Server::connect(&nats).await;
    let commits: Commits = Default::default();
    let mut s = settings(&nats);
    s.retention = Retention {
        every: Duration::ZERO,
        events: 1,
    };
    let cluster = Cluster::connect(s).await.expect("connect");
    let mut stream = server
        .js
        .get_stream(format!("{PREFIX}_EV"))
        .await
        .expect("the event stream");
    let mut config = stream.info().await.expect("info").config.clone();
    config.deny_purge = true;
    server.js.update_stream(config).await.expect("deny purges");
    let err = log::purge(&cluster, 0, 1).await.expect_err("purges denied");
    assert!(err.to_string().contains("purge partition 0"), "{err}");

    let mut w = worker(cluster.clone(), "w", &commits);
    w.round().await.expect("a round");
    let mut acked = BTreeMap::new();
    let mut ids = BTreeMap::new();
    append(&cluster, "x", 12, &mut acked, &mut ids).await;
    for _ in 0..4 {
        w.round()
            .await
            .expect("a round goes on when its purges fail");
    }
    for p in 0..P {
        assert_eq!(server.checkpoint(p).await.seq, acked[&p][11], "processed");
    }
    assert_eq!(server.tail(&acked).await, [0; P as usize], "nothing purged");
    assert_eq!(w.owned(), (0..P).collect::<Vec<_>>(), "still owned");
    assert_eq!(w.stats.leases_lost, 0);
    w.leave().await.expect("leave");
}
