//! `engine::cluster::worker` with in-process workers on one nats-server:
//! under continuous ingest, workers are cut off at random moments (their
//! task aborted mid-round, leases left to age out) and replaced, and a
//! fourth worker joins; at the end every acknowledged event was applied
//! exactly once in the restored state, and the fencing tokens of each
//! partition's commits never go back.

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use engine::cluster::worker::{Tuning, Worker};
use engine::cluster::{changelog, log, Settings};
use rand::Rng;
use support::cluster::{connect, log_to_stderr};
use support::model::{Commits, Model};
use support::nats::Nats;
use tokio::task::JoinHandle;

const P: u32 = 8;

/// An event of `user` with this `id`, as the log takes it.
fn event(user: String, id: String) -> (String, String, bytes::Bytes) {
    let payload = serde_json::json!({"user": user, "id": id}).to_string();
    (user, id, bytes::Bytes::from(payload))
}

fn settings(nats: &Nats) -> Settings {
    let mut s = Settings::new(nats.url(), "w");
    s.lease_ttl = Duration::from_millis(1500);
    s.request_timeout = Duration::from_secs(3);
    // Every stream and bucket on every node of a three-node cluster.
    s.replicas = nats.nodes.len();
    // Owners purge their applied events often: the takeovers below run
    // on a stream whose partitions' first sequences keep moving.
    s.retention.every = Duration::from_millis(100);
    s
}

fn spawn_worker(nats: &Nats, me: &str, commits: &Commits) -> JoinHandle<()> {
    let s = settings(nats);
    let model = Model {
        me: me.to_string(),
        users: HashMap::new(),
        commits: commits.clone(),
    };
    let me = me.to_string();
    tokio::spawn(async move {
        let cluster = connect(s).await;
        let tuning = Tuning {
            partitions: P,
            batch: 64,
            poll: Duration::from_millis(5),
        };
        let mut worker = Worker::new(cluster, me, tuning, model);
        if let Err(e) = worker.run().await {
            panic!("worker failed: {e}");
        }
    })
}

/// Appends events for 160 users until `stop`; returns every acknowledged
/// id and each partition's last acknowledged sequence.
async fn ingest(
    nats: &Nats,
    tag: &str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<u32, u64>) {
    let cluster = connect(settings(nats)).await;
    let mut acked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let batch: Vec<(String, String, bytes::Bytes)> = (0..40)
            .map(|_| {
                n += 1;
                event(format!("u{}", n % 160), format!("{tag}{n}"))
            })
            .collect();
        let appends = log::Append::all(&batch);
        // A new three-node cluster's stream may still elect its leader: a
        // batch refused as unavailable is sent again (the ids make that
        // harmless), within a bound.
        let mut tries = 0;
        let stored = loop {
            match log::append(&cluster, P, &appends).await {
                Ok(stored) => break stored,
                Err(e) if e.is_unavailable() && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("append: {e}"),
            }
        };
        for ((user, id, _), a) in batch.iter().zip(stored) {
            acked.entry(user.clone()).or_default().insert(id.clone());
            let l = last.entry(a.partition).or_default();
            *l = (*l).max(a.seq);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (acked, last)
}

/// Waits until every partition's commits reach its last acknowledged event.
async fn caught_up(commits: &Commits, last: &BTreeMap<u32, u64>) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let done = {
                let c = commits.lock().expect("the commit log");
                last.iter()
                    .all(|(p, seq)| c.iter().any(|(_, cp, _, cseq)| cp == p && cseq >= seq))
            };
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let c = commits.lock().expect("the commit log");
        let behind: Vec<String> = last
            .iter()
            .filter(|(p, seq)| !c.iter().any(|(_, cp, _, cseq)| cp == *p && cseq >= *seq))
            .map(|(p, seq)| {
                let at = c.iter().rev().find(|(_, cp, _, _)| cp == p);
                format!("partition {p} (acknowledged up to {seq}, last commit {at:?})")
            })
            .collect();
        panic!(
            "the workers did not catch up within 30 s: {}",
            behind.join("; ")
        )
    });
}

/// The end of every run: the workers catch up with the last acknowledged
/// events, stop, and the result is checked.
async fn finish(
    nats: &Nats,
    acked: &BTreeMap<String, BTreeSet<String>>,
    last: &BTreeMap<u32, u64>,
    commits: &Commits,
    workers: &[JoinHandle<()>],
) {
    caught_up(commits, last).await;
    purged(nats).await;
    for w in workers {
        w.abort();
    }
    check(nats, acked, commits).await;
}

/// Waits until the event stream is empty: once every partition's
/// checkpoint reached its last event, its owner purges them all.
async fn purged(nats: &Nats) {
    let client = async_nats::connect(nats.nodes[0].url())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut left = u64::MAX;
    for _ in 0..100 {
        let mut stream = js.get_stream("w_EV").await.expect("the event stream");
        left = stream.info().await.expect("stream info").state.messages;
        if left == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{left} applied events still in the event stream 10 s after the workers caught up");
}

/// Every acknowledged event applied once in the restored state; per
/// partition, the tokens of the commits (in the order they happened) never
/// go back, and each owner's commits move forward.
async fn check(nats: &Nats, acked: &BTreeMap<String, BTreeSet<String>>, commits: &Commits) {
    let cluster = connect(settings(nats)).await;
    let mut state: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in 0..P {
        for r in changelog::restore(&cluster, p).await.expect("restore") {
            let ids: Vec<String> = serde_json::from_slice(&r.bytes).expect("a model record");
            assert!(
                state.insert(r.user, ids).is_none(),
                "a user in two partitions"
            );
        }
    }
    for (user, ids) in acked {
        let applied = state.get(user).cloned().unwrap_or_default();
        let set: BTreeSet<String> = applied.iter().cloned().collect();
        assert_eq!(set.len(), applied.len(), "{user}: an event applied twice");
        let missing: Vec<&String> = ids.difference(&set).collect();
        assert!(
            missing.is_empty(),
            "{user}: acknowledged events lost: {missing:?}"
        );
    }
    let c = commits.lock().expect("the commit log");
    let mut partitions_seen = BTreeSet::new();
    for p in 0..P {
        let mut token = 0;
        let mut seq = 0;
        for (_, _, t, s) in c.iter().filter(|(_, cp, _, _)| *cp == p) {
            assert!(
                *t >= token,
                "partition {p}: token {t} committed after {token}"
            );
            if *t == token {
                assert!(*s > seq, "partition {p}: an owner's checkpoint went back");
            }
            token = *t;
            seq = *s;
            partitions_seen.insert(p);
        }
    }
    assert_eq!(
        partitions_seen.len(),
        P as usize,
        "users spread over every partition"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_cut_off_at_random_moments_lose_and_double_nothing() {
    cut_off_workers_under_ingest(Nats::single()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_three_node_nats_cluster_workers_cut_off_lose_and_double_nothing() {
    cut_off_workers_under_ingest(Nats::cluster3()).await;
}

/// Three workers under ingest; four times, one is cut off at a random
/// moment and replaced by a new one.
async fn cut_off_workers_under_ingest(nats: Nats) {
    log_to_stderr();
    let commits: Commits = Arc::default();
    let mut names: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
    let mut workers: Vec<JoinHandle<()>> = names
        .iter()
        .map(|me| spawn_worker(&nats, me, &commits))
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest = ingest(&nats, "e", stop.clone());
    let kills = async {
        let mut rng = rand::thread_rng();
        for round in 0..4 {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
            let victim = rng.gen_range(0..workers.len());
            workers[victim].abort();
            let replacement = format!("r{round}");
            workers[victim] = spawn_worker(&nats, &replacement, &commits);
            names[victim] = replacement.clone();
            // Before the next cut, the replacement has taken partitions
            // over (the victim's, once its lease aged out, or handed to it)
            // and committed batches of them, when rendezvous hashing gives
            // it any (a member may win none of 8).
            if engine::cluster::members::assigned(&replacement, P, &names).is_empty() {
                continue;
            }
            tokio::time::timeout(Duration::from_secs(30), async {
                while !commits
                    .lock()
                    .expect("the commit log")
                    .iter()
                    .any(|c| c.0 == replacement)
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .expect("the replacement commits within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let ((acked, last), ()) = tokio::join!(ingest, kills);
    finish(&nats, &acked, &last, &commits, &workers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_worker_joining_takes_partitions_without_loss_or_doubling() {
    let nats = Nats::single();
    let commits: Commits = Arc::default();
    let mut workers: Vec<JoinHandle<()>> = ["a", "b", "c"]
        .iter()
        .map(|me| spawn_worker(&nats, me, &commits))
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingest = ingest(&nats, "e", stop.clone());
    let join = async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        workers.push(spawn_worker(&nats, "d", &commits));
        tokio::time::sleep(Duration::from_millis(2000)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let ((acked, last), ()) = tokio::join!(ingest, join);
    finish(&nats, &acked, &last, &commits, &workers).await;
    assert!(
        commits.lock().unwrap().iter().any(|c| c.0 == "d"),
        "the joiner committed batches of the partitions handed to it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_pause_while_nats_is_down_and_resume_without_loss() {
    let mut nats = Nats::single();
    let commits: Commits = Arc::default();
    let workers: Vec<JoinHandle<()>> = ["a", "b"]
        .iter()
        .map(|me| spawn_worker(&nats, me, &commits))
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let (mut acked, mut last) = ingest(&nats, "before", stop).await;
    stopper.await.expect("stopper");

    // NATS goes away: an append is refused as unavailable (nothing is
    // acknowledged), the workers keep running and pause.
    let cluster = connect(settings(&nats)).await;
    nats.nodes[0].kill();
    let event = [log::Append {
        user: "u1",
        msg_id: "during-outage",
        payload: bytes::Bytes::from_static(b"{\"user\":\"u1\",\"id\":\"during-outage\"}"),
    }];
    let err = log::append(&cluster, P, &event).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        workers.iter().all(|w| !w.is_finished()),
        "workers wait for NATS"
    );
    nats.nodes[0].restart();
    nats.wait_healthy(Duration::from_secs(30));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    let (acked2, last2) = ingest(&nats, "after", stop).await;
    stopper.await.expect("stopper");
    for (user, ids) in acked2 {
        acked.entry(user).or_default().extend(ids);
    }
    for (p, seq) in last2 {
        let l = last.entry(p).or_default();
        *l = (*l).max(seq);
    }
    finish(&nats, &acked, &last, &commits, &workers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_worker_takes_every_partition_applies_in_batches_and_leaves() {
    let nats = Nats::single();
    let commits: Commits = Arc::default();
    let cluster = connect(settings(&nats)).await;
    let model = Model {
        me: "solo".into(),
        users: HashMap::new(),
        commits: commits.clone(),
    };
    let tuning = Tuning {
        partitions: P,
        batch: 5,
        poll: Duration::from_millis(5),
    };
    let mut worker = Worker::new(cluster.clone(), "solo", tuning, model);
    worker.round().await.unwrap();
    assert_eq!(worker.owned(), (0..P).collect::<Vec<_>>());
    assert_eq!(worker.stats.restores.len(), P as usize);
    assert_eq!(worker.stats.leases_lost, 0);

    // 40 events of one user, applied in batches of 5, one per round.
    let events: Vec<(String, String, bytes::Bytes)> = (0..40)
        .map(|i| event("ann".into(), format!("x{i}")))
        .collect();
    let appends = log::Append::all(&events);
    log::append(&cluster, P, &appends).await.unwrap();
    let p = engine::hash::partition_of("ann", P);
    worker.round().await.unwrap();
    assert_eq!(worker.processor().users[&p]["ann"].len(), 5, "one batch");
    for _ in 0..7 {
        worker.round().await.unwrap();
    }
    assert_eq!(worker.processor().users[&p]["ann"].len(), 40);
    let last = commits.lock().unwrap().last().cloned();
    assert!(matches!(last, Some((_, q, _, _)) if q == p));
    worker.leave().await.unwrap();
    assert!(engine::cluster::members::live(&cluster)
        .await
        .unwrap()
        .is_empty());
}

/// The regression test of the cut-off tests' stall: a round lists the
/// members, and a listing that created a JetStream consumer (a KV
/// `keys()`) left one behind per round for the server's 30 s inactivity
/// threshold, thousands under load, until the server refused every new
/// consumer ("maximum consumers limit reached") and all workers stalled.
/// Rounds must leave no consumer on the buckets' streams, and on the
/// event stream exactly one reader per owned partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_leave_no_consumer_behind_but_one_reader_per_partition() {
    let nats = Nats::single();
    let commits: Commits = Arc::default();
    let cluster = connect(settings(&nats)).await;
    let model = Model {
        me: "solo".into(),
        users: HashMap::new(),
        commits,
    };
    let tuning = Tuning {
        partitions: P,
        batch: 5,
        poll: Duration::from_millis(1),
    };
    let mut worker = Worker::new(cluster, "solo", tuning, model);
    let other = connect(settings(&nats)).await;
    for _ in 0..150 {
        worker.round().await.unwrap();
        // Another member comes and goes (a clean leave), so the listing
        // sees members appear and vanish.
        engine::cluster::members::heartbeat(&other, "visitor")
            .await
            .unwrap();
        engine::cluster::members::leave(&other, "visitor")
            .await
            .unwrap();
    }
    assert_eq!(worker.owned(), (0..P).collect::<Vec<_>>());
    assert_eq!(
        engine::cluster::members::live(&other).await.unwrap(),
        vec!["solo"],
        "a member that left is not listed"
    );

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let consumers = |name: String| {
        let js = js.clone();
        async move {
            js.get_stream(name.as_str())
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .consumer_count
        }
    };
    for bucket in ["meta", "leases", "members", "checkpoints", "tokens"] {
        assert_eq!(
            consumers(format!("KV_w_{bucket}")).await,
            0,
            "consumers left on the {bucket} bucket after 150 rounds"
        );
    }
    assert_eq!(
        consumers("w_EV".to_string()).await,
        P as usize,
        "one event reader per owned partition"
    );
}

/// A model processor that takes its time: `restore` per restored
/// partition (a large partition's records), `apply` per batch with events
/// (a busy engine, a slow disk under the changelog).
struct Slow {
    model: Model,
    restore: Duration,
    apply: Duration,
}

impl Slow {
    fn new(me: &str, commits: &Commits, restore: Duration, apply: Duration) -> Slow {
        Slow {
            model: Model {
                me: me.into(),
                users: HashMap::new(),
                commits: commits.clone(),
            },
            restore,
            apply,
        }
    }
}

impl engine::cluster::worker::Processor for Slow {
    fn restore(&mut self, partition: u32, records: Vec<changelog::Record>) {
        std::thread::sleep(self.restore);
        self.model.restore(partition, records);
    }
    fn apply(
        &mut self,
        partition: u32,
        events: &[(u64, bytes::Bytes)],
    ) -> Vec<(String, bytes::Bytes)> {
        if !events.is_empty() {
            std::thread::sleep(self.apply);
        }
        self.model.apply(partition, events)
    }
    fn committed(&mut self, partition: u32, token: u64, seq: u64) {
        self.model.committed(partition, token, seq)
    }
    fn forget(&mut self, partition: u32) {
        self.model.forget(partition)
    }
}

/// Taking many partitions in one round, or one large one, can take longer
/// than the lease's TTL: the leases taken first (and the one being
/// restored) are renewed meanwhile, so none ages out under its live owner
/// and no partition bounces between owners. Here eight restores of a third
/// of the TTL each (about twice the TTL in all): every lease survives the
/// round and the rounds after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_longer_than_the_ttl_keep_every_lease() {
    let nats = Nats::single();
    let commits: Commits = Arc::default();
    let s = settings(&nats);
    let pause = s.lease_ttl / 3;
    let cluster = connect(s).await;
    let processor = Slow::new("slow", &commits, pause, Duration::ZERO);
    let tuning = Tuning {
        partitions: P,
        batch: 5,
        poll: Duration::from_millis(5),
    };
    let mut worker = Worker::new(cluster.clone(), "slow", tuning, processor);
    worker.round().await.unwrap();
    assert_eq!(worker.owned(), (0..P).collect::<Vec<_>>());
    // Past the TTL of the first lease taken, had it not been renewed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        worker.round().await.unwrap();
    }
    assert_eq!(
        worker.stats.leases_lost, 0,
        "a lease aged out during the restores"
    );
    assert_eq!(worker.owned(), (0..P).collect::<Vec<_>>());
    // And no one else can take them: every lease is live in the bucket.
    for p in 0..P {
        let thief = engine::cluster::lease::Lease::acquire(&cluster, p, "thief")
            .await
            .unwrap();
        assert!(thief.is_none(), "partition {p}'s lease had aged out");
    }
    worker.leave().await.unwrap();
}

/// A round applies one batch per owned partition in turn: with a backlog
/// on every partition and batches of a quarter of the TTL, one round over
/// eight partitions lasts about twice the TTL. Every owned lease that is
/// due is renewed between batches, so none ages out under its live owner
/// while the others' batches run (found by the cluster_run bench: a lone
/// worker draining a backlog over 64 partitions owned 49 of them at the
/// end, the rest lost and taken again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_longer_than_the_ttl_keep_every_lease() {
    let nats = Nats::single();
    let commits: Commits = Arc::default();
    let s = settings(&nats);
    let pause = s.lease_ttl / 4;
    let cluster = connect(s).await;
    let processor = Slow::new("busy", &commits, Duration::ZERO, pause);
    let tuning = Tuning {
        partitions: P,
        batch: 5,
        poll: Duration::from_millis(5),
    };
    let mut worker = Worker::new(cluster.clone(), "busy", tuning, processor);
    worker.round().await.unwrap();
    assert_eq!(worker.owned(), (0..P).collect::<Vec<_>>());
    // A backlog of several batches on every partition.
    let users: Vec<String> = (0u32..)
        .map(|n| format!("b{n}"))
        .scan([0usize; P as usize], |seen, u| {
            let p = engine::hash::partition_of(&u, P) as usize;
            seen[p] += 1;
            Some((seen[p] <= 20).then_some(u))
        })
        .flatten()
        .take(20 * P as usize)
        .collect();
    let events: Vec<(String, String, bytes::Bytes)> = users
        .into_iter()
        .map(|u| {
            let id = format!("{u}-e");
            event(u, id)
        })
        .collect();
    let appends = log::Append::all(&events);
    log::append(&cluster, P, &appends).await.unwrap();
    let began = tokio::time::Instant::now();
    worker.round().await.unwrap();
    let ttl = settings(&nats).lease_ttl;
    assert!(
        began.elapsed() > ttl,
        "the round lasted longer than the TTL: {:?}",
        began.elapsed()
    );
    // Its heartbeat too was kept up through the round: the others never
    // saw it leave (and hand every partition around).
    assert_eq!(
        engine::cluster::members::live(&cluster).await.unwrap(),
        vec!["busy".to_string()],
        "the worker's heartbeat aged out during its round"
    );
    worker.round().await.unwrap();
    assert_eq!(
        worker.stats.leases_lost, 0,
        "a lease aged out while other partitions' batches ran"
    );
    assert_eq!(worker.owned(), (0..P).collect::<Vec<_>>());
    for p in 0..P {
        let thief = engine::cluster::lease::Lease::acquire(&cluster, p, "thief")
            .await
            .unwrap();
        assert!(thief.is_none(), "partition {p}'s lease had aged out");
    }
    worker.leave().await.unwrap();
}
