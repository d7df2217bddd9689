//! The changelog's fencing, enforced by JetStream rather than by timing:
//! every changelog write expects the key's last stream sequence as its
//! owner knows it (`Nats-Expected-Last-Subject-Sequence`), so a stale
//! owner's late write over a record the next owner restored and wrote is
//! refused and stops it, and the live owner writes its record again once
//! over a foreign write or an expired tombstone. Real nats-server processes
//! on 127.0.0.1, started here.

#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use engine::cluster::worker::{Processor, Tuning, Worker};
use engine::cluster::{changelog, lease::Lease, log, Cluster, Error, Settings};
use support::cluster::{connect, log_to_stderr};
use support::model::{Commits, Model};
use support::nats::Nats;

fn settings(nats: &Nats, prefix: &str, lease_ttl: Duration) -> Settings {
    let mut s = Settings::new(nats.url(), prefix);
    s.lease_ttl = lease_ttl;
    s.request_timeout = Duration::from_secs(3);
    s.tombstone_ttl = Duration::from_secs(1);
    s.replicas = nats.nodes.len();
    s
}

/// Takes `partition` once it is free (waiting for a previous owner's lease
/// to age out) and restores it, as a new owner does.
async fn take(cluster: &Cluster, partition: u32, me: &str) -> (Lease, changelog::Restored) {
    let lease = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let taken = Lease::acquire(cluster, partition, me)
                .await
                .expect("take a lease");
            if let Some(lease) = taken {
                return lease;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the partition is free within 15 s");
    let restored = changelog::restore_fenced(cluster, partition)
        .await
        .expect("restore");
    (lease, restored)
}

fn bytes(v: &'static str) -> bytes::Bytes {
    bytes::Bytes::from_static(v.as_bytes())
}

/// The restored record of `user` in `partition`: (writer's token, bytes).
async fn record_of(cluster: &Cluster, partition: u32, user: &str) -> Option<(u64, bytes::Bytes)> {
    changelog::restore(cluster, partition)
        .await
        .expect("restore")
        .into_iter()
        .find(|r| r.user == user)
        .map(|r| (r.token, r.bytes))
}

/// What the fence relies on from the server: an expected last subject
/// sequence of 0 means "no message on the subject" (not "no
/// expectation"), on a single server and on a three-node cluster with
/// replicated streams (where compare-and-set had bugs before 2.9.21).
async fn zero_means_no_message(nats: &Nats) {
    let urls: Vec<String> = nats.nodes.iter().map(|n| n.url()).collect();
    let client = async_nats::connect(urls).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let config = async_nats::jetstream::stream::Config {
        name: "Z".into(),
        subjects: vec!["z.>".into()],
        max_messages_per_subject: 1,
        num_replicas: nats.nodes.len(),
        ..Default::default()
    };
    // A new JetStream cluster elects its meta leader first.
    tokio::time::timeout(Duration::from_secs(30), async {
        while js.get_or_create_stream(config.clone()).await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("a stream within 30 s");
    let publish = |subject: &'static str, expected: u64| {
        let js = js.clone();
        async move {
            let message = async_nats::jetstream::message::PublishMessage::build()
                .payload(bytes("v"))
                .expected_last_subject_sequence(expected);
            js.send_publish(subject, message).await.expect("sent").await
        }
    };
    let first = publish("z.a", 0)
        .await
        .expect("0 on an empty subject is accepted");
    let refused = publish("z.a", 0)
        .await
        .expect_err("0 on a subject holding a message is refused");
    assert_eq!(refused.kind(), PublishErrorKind::WrongLastSequence);
    let stale = publish("z.a", first.sequence + 7)
        .await
        .expect_err("a wrong sequence is refused");
    assert_eq!(stale.kind(), PublishErrorKind::WrongLastSequence);
    publish("z.a", first.sequence)
        .await
        .expect("the subject's last sequence is accepted");
    publish("z.b", 0)
        .await
        .expect("another subject's sequence does not count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expected_subject_sequence_of_zero_means_no_message() {
    let single = Nats::single();
    zero_means_no_message(&single).await;
    drop(single);
    let three = Nats::cluster3();
    zero_means_no_message(&three).await;
}

/// (1) An owner paused past its lease with a write in flight: the next
/// owner restores and writes the same user; the stale write then reaches
/// JetStream expecting the sequence the stale owner last knew, is refused,
/// and the stale owner stops (`LeaseLost`). A fresh restore reads the new
/// owner's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owners_late_write_is_refused_and_stops_it() {
    stale_owner_is_refused(&Nats::single()).await;
}

/// The same with the changelog replicated on a three-node NATS cluster
/// (where JetStream checks the expectation on the stream's leader before
/// proposing the write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_a_stale_owners_late_write_is_refused() {
    stale_owner_is_refused(&Nats::cluster3()).await;
}

async fn stale_owner_is_refused(nats: &Nats) {
    let cluster = connect(settings(nats, "s", Duration::from_millis(1500))).await;
    let (a, restored) = take(&cluster, 3, "a").await;
    let mut a_fence = restored.fence;
    changelog::publish(&cluster, &a, &mut a_fence, &[("ann", bytes("a-1"))])
        .await
        .expect("the owner's write lands");

    // `a` pauses; its lease ages out and `b` takes the partition.
    let (b, restored) = take(&cluster, 3, "b").await;
    assert!(b.token() > a.token());
    assert_eq!(
        restored
            .records
            .iter()
            .map(|r| (r.user.as_str(), r.bytes.clone()))
            .collect::<Vec<_>>(),
        [("ann", bytes("a-1"))]
    );
    let mut b_fence = restored.fence;
    changelog::publish(&cluster, &b, &mut b_fence, &[("ann", bytes("b-1"))])
        .await
        .expect("the owner's write lands");

    // `a` wakes and its write goes out, with what `a` knew.
    let err = changelog::publish(&cluster, &a, &mut a_fence, &[("ann", bytes("a-2"))])
        .await
        .expect_err("the stale owner's write is refused");
    assert!(
        matches!(err, Error::LeaseLost { partition: 3, token } if token == a.token()),
        "{err}"
    );
    assert_eq!(a_fence.republished(), 0, "a stale owner never writes again");
    assert_eq!(
        record_of(&cluster, 3, "ann").await,
        Some((b.token(), bytes("b-1"))),
        "the new owner's record stands"
    );

    // The new owner goes on writing the key without a refusal.
    changelog::publish(&cluster, &b, &mut b_fence, &[("ann", bytes("b-2"))])
        .await
        .expect("the owner's write lands");
    assert_eq!(b_fence.republished(), 0);
    assert_eq!(
        record_of(&cluster, 3, "ann").await,
        Some((b.token(), bytes("b-2")))
    );
}

/// A model processor whose worker pauses in the middle of one batch (the
/// batch holding the event `pause`) until the test lets it go: a whole
/// process stopped past its lease with the batch's changelog writes still
/// to go out.
struct Pausing {
    model: Model,
    paused: Arc<AtomicBool>,
    resume: mpsc::Receiver<()>,
}

impl Processor for Pausing {
    fn restore(&mut self, partition: u32, records: Vec<changelog::Record>) {
        self.model.restore(partition, records)
    }

    fn apply(
        &mut self,
        partition: u32,
        events: &[(u64, bytes::Bytes)],
    ) -> Vec<(String, bytes::Bytes)> {
        let changed = self.model.apply(partition, events);
        if events
            .iter()
            .any(|(_, e)| String::from_utf8_lossy(e).contains("\"pause\""))
        {
            self.paused.store(true, Ordering::SeqCst);
            // The whole worker stops (its runtime, its NATS connection).
            let _ = self.resume.recv_timeout(Duration::from_secs(60));
        }
        changed
    }

    fn committed(&mut self, partition: u32, token: u64, seq: u64) {
        self.model.committed(partition, token, seq)
    }

    fn forget(&mut self, partition: u32) {
        self.model.forget(partition)
    }
}

fn event(user: &str, id: &str) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::json!({"user": user, "id": id}).to_string())
}

async fn append(cluster: &Cluster, user: &str, id: &str) -> u64 {
    let appended = log::append(
        cluster,
        1,
        &[log::Append {
            user,
            msg_id: id,
            payload: event(user, id),
        }],
    )
    .await
    .expect("append");
    appended[0].seq
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within 30 s"));
}

/// (1) through the worker loop: worker `a` stops in the middle of a batch
/// (after applying it, before publishing it) for longer than its lease;
/// worker `b` takes the partition over, re-applies the batch's event and a
/// later one of the same user, and commits. When `a` goes on, its batch's
/// write of the user is refused: `a` drops the partition (counted as a
/// lost lease) and the changelog keeps `b`'s record, with every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_paused_mid_batch_past_its_lease_is_fenced_out() {
    log_to_stderr();
    let nats = Nats::single();
    let s = settings(&nats, "w", Duration::from_millis(1500));
    let cluster = connect(s.clone()).await;
    let commits: Commits = Arc::default();
    let tuning = Tuning {
        partitions: 1,
        batch: 16,
        poll: Duration::from_millis(5),
    };

    let paused = Arc::new(AtomicBool::new(false));
    let (resume, resumed) = mpsc::channel();
    let a_lost = Arc::new(Mutex::new(None));
    let stop_a = Arc::new(AtomicBool::new(false));
    let a_thread = {
        let (s, tuning, commits, paused) =
            (s.clone(), tuning.clone(), commits.clone(), paused.clone());
        let (a_lost, stop_a) = (a_lost.clone(), stop_a.clone());
        // Its own runtime on its own thread: the pause stops all of `a`.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let cluster = connect(s).await;
                let processor = Pausing {
                    model: Model {
                        me: "a".into(),
                        users: HashMap::new(),
                        commits,
                    },
                    paused,
                    resume: resumed,
                };
                let mut worker = Worker::new(cluster, "a", tuning, processor);
                while !stop_a.load(Ordering::SeqCst) {
                    match worker.round().await {
                        Ok(()) => {}
                        Err(e) if e.is_unavailable() => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        Err(e) => panic!("worker a: {e}"),
                    }
                    if worker.stats.leases_lost > 0 {
                        *a_lost.lock().unwrap() = Some(worker.owned());
                        break;
                    }
                }
            });
        })
    };

    let first = append(&cluster, "ann", "1").await;
    let committed_by = |who: &'static str, seq: u64| {
        let commits = commits.clone();
        move || {
            commits
                .lock()
                .unwrap()
                .iter()
                .any(|(w, _, _, s)| w == who && *s >= seq)
        }
    };
    wait_for("a commits the first event", committed_by("a", first)).await;
    let pause = append(&cluster, "ann", "pause").await;
    wait_for("a pauses mid-batch", || paused.load(Ordering::SeqCst)).await;

    // `b` starts while `a` is stopped: `a`'s heartbeat and lease age out.
    let b = {
        let (s, tuning) = (s.clone(), tuning.clone());
        let model = Model {
            me: "b".into(),
            users: HashMap::new(),
            commits: commits.clone(),
        };
        tokio::spawn(async move {
            let cluster = connect(s).await;
            let mut worker = Worker::new(cluster, "b", tuning, model);
            loop {
                if let Err(e) = worker.round().await {
                    assert!(e.is_unavailable(), "worker b: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };
    let after = append(&cluster, "ann", "after").await;
    assert!(after > pause);
    wait_for(
        "b re-applies the paused batch and commits past it",
        committed_by("b", after),
    )
    .await;
    let b_token = record_of(&cluster, 0, "ann").await.expect("ann's record").0;

    // `a` goes on: its batch's write of `ann` goes out now.
    resume.send(()).expect("a is waiting");
    wait_for("a drops the partition", || a_lost.lock().unwrap().is_some()).await;
    stop_a.store(true, Ordering::SeqCst);
    a_thread.join().expect("worker a's thread");
    assert_eq!(
        a_lost.lock().unwrap().clone(),
        Some(Vec::new()),
        "a owns nothing once fenced out"
    );
    // Give a refused-or-not write time to land before reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.abort();
    let _ = b.await;

    let (token, record) = record_of(&cluster, 0, "ann").await.expect("ann's record");
    let ids: Vec<String> = serde_json::from_slice(&record).expect("a model record");
    assert_eq!(
        ids,
        ["1", "pause", "after"],
        "the changelog holds b's record of ann, every event once (not a's late one)"
    );
    assert_eq!(token, b_token);
    assert!(
        !commits
            .lock()
            .unwrap()
            .iter()
            .any(|(w, _, _, s)| w == "a" && *s >= pause),
        "a never committed its paused batch"
    );
}

/// (2) The live owner's write over a record that landed after its
/// restore (a stale owner's late write to a key this owner had restored
/// but not written yet): refused once, then written again over it, and
/// the restore reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_owner_writes_again_over_a_late_foreign_record() {
    let nats = Nats::single();
    let cluster = connect(settings(&nats, "f", Duration::from_millis(1500))).await;
    let (stale, restored) = take(&cluster, 1, "a").await;
    let mut stale_fence = restored.fence;
    changelog::publish(&cluster, &stale, &mut stale_fence, &[("ann", bytes("a-1"))])
        .await
        .unwrap();
    let (owner, restored) = take(&cluster, 1, "b").await;
    let mut fence = restored.fence;
    assert_eq!(fence.keys(), 1);
    // The stale owner's write of a key `b` has not written since its
    // restore still matches what it expects: it lands.
    changelog::publish(&cluster, &stale, &mut stale_fence, &[("ann", bytes("a-2"))])
        .await
        .unwrap();
    assert_eq!(
        record_of(&cluster, 1, "ann").await,
        Some((stale.token(), bytes("a-2")))
    );
    // `b`'s state is authoritative: its write is refused (it expects the
    // sequence it restored), then goes again over the foreign record.
    changelog::publish(
        &cluster,
        &owner,
        &mut fence,
        &[("ann", bytes("b-1")), ("bob", bytes("b-1"))],
    )
    .await
    .expect("the live owner's write lands");
    assert_eq!(fence.republished(), 1);
    assert_eq!(
        record_of(&cluster, 1, "ann").await,
        Some((owner.token(), bytes("b-1")))
    );
    assert_eq!(
        record_of(&cluster, 1, "bob").await,
        Some((owner.token(), bytes("b-1")))
    );
    // And from then on the stale owner is refused on that key.
    let err = changelog::publish(&cluster, &stale, &mut stale_fence, &[("ann", bytes("a-3"))])
        .await
        .expect_err("refused");
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    assert_eq!(
        record_of(&cluster, 1, "ann").await,
        Some((owner.token(), bytes("b-1")))
    );
}

/// (2) A key deleted, then written again by its live owner: while the
/// tombstone is on the stream, and after it expired (`Nats-TTL`, NATS
/// 2.11+) under a fence that still expects it. Each write is refused once,
/// goes again with the subject's current sequence (the tombstone's, or
/// none), and the restore reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_owner_writes_a_key_again_over_its_tombstone_or_after_it_expired() {
    let nats = Nats::single();
    let cluster = connect(settings(&nats, "t", Duration::from_secs(60))).await;
    assert!(
        cluster.tombstones_expire(),
        "nats-server 2.11+ expires them"
    );
    let (owner, restored) = take(&cluster, 2, "a").await;
    let mut fence = restored.fence;
    let tombstone = bytes::Bytes::from_static(changelog::TOMBSTONE);

    // Written, deleted, written again while the tombstone is there: the
    // fence expects the tombstone's sequence, no refusal.
    write(&cluster, &owner, &mut fence, "k", bytes("v1")).await;
    write(&cluster, &owner, &mut fence, "k", tombstone.clone()).await;
    write(&cluster, &owner, &mut fence, "k", bytes("v2")).await;
    assert_eq!(fence.republished(), 0);
    assert_eq!(
        record_of(&cluster, 2, "k").await,
        Some((owner.token(), bytes("v2")))
    );

    // Deleted again; the server expires the tombstone after a second, while
    // the fence still expects it (it keeps a tombstone a while longer than
    // its TTL, against a server expiring late).
    write(&cluster, &owner, &mut fence, "k", tombstone.clone()).await;
    let stream =
        async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connect"))
            .get_stream("t_ST")
            .await
            .expect("the changelog stream");
    let subject = format!("t.st.2.{}", hex::encode("k"));
    tokio::time::timeout(Duration::from_secs(10), async {
        while stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .is_ok()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the tombstone expires within 10 s");
    write(&cluster, &owner, &mut fence, "k", bytes("v3")).await;
    assert_eq!(
        fence.republished(),
        1,
        "refused once (the tombstone it expected is gone), then written with none expected"
    );
    assert_eq!(
        record_of(&cluster, 2, "k").await,
        Some((owner.token(), bytes("v3")))
    );
}

async fn write(
    cluster: &Cluster,
    owner: &Lease,
    fence: &mut changelog::Fence,
    name: &str,
    v: bytes::Bytes,
) {
    changelog::publish(cluster, owner, fence, &[(name, v)])
        .await
        .unwrap_or_else(|e| panic!("write {name}: {e}"));
}
