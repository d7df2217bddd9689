//! `engine::cluster` against real nats-server processes started here (on
//! 127.0.0.1, JetStream fsyncing every write): the join check, leases and
//! their fencing, the checkpoint's compare-and-set, the event log, the
//! changelog's restore, and what an
//! unreachable NATS looks like.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use engine::cluster::{changelog, lease::Lease, log, members, meta, Cluster, Error, Settings};
use support::nats::Nats;
use support::stream::changelog_messages;

fn settings(nats: &Nats, prefix: &str) -> Settings {
    let mut s = Settings::new(nats.url(), prefix);
    s.lease_ttl = Duration::from_millis(1500);
    s.request_timeout = Duration::from_secs(3);
    s
}

async fn connect(nats: &Nats, prefix: &str) -> Cluster {
    Cluster::connect(settings(nats, prefix))
        .await
        .expect("connect to the test's nats-server")
}

/// Takes `partition` (free in these tests) and restores its changelog, as
/// a new owner does before it publishes.
async fn own(cluster: &Cluster, partition: u32, me: &str) -> (Lease, changelog::Fence) {
    let lease = Lease::acquire(cluster, partition, me)
        .await
        .expect("take a lease")
        .expect("a free partition is taken");
    let fence = changelog::restore_fenced(cluster, partition)
        .await
        .expect("restore")
        .fence;
    (lease, fence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_another_partition_count_or_config_refuses_to_join() {
    let nats = Nats::single();
    let a = connect(&nats, "t").await;
    let ours = meta::Meta {
        partitions: 64,
        config_hash: "abc".into(),
    };
    assert_eq!(meta::join(&a, &ours).await.unwrap(), ours);
    let b = connect(&nats, "t").await;
    assert_eq!(meta::join(&b, &ours).await.unwrap(), ours);

    let other_p = meta::Meta {
        partitions: 16,
        ..ours.clone()
    };
    let err = meta::join(&b, &other_p).await.unwrap_err();
    assert!(matches!(
        err,
        Error::PartitionsMismatch {
            ours: 16,
            theirs: 64,
            ..
        }
    ));
    assert!(
        err.to_string().contains("--partitions 64"),
        "the message says what to do: {err}"
    );
    let other_config = meta::Meta {
        config_hash: "def".into(),
        ..ours
    };
    let err = meta::join(&b, &other_config).await.unwrap_err();
    assert!(matches!(err, Error::ConfigMismatch { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_fences_its_previous_owner_out() {
    let nats = Nats::single();
    let cluster = connect(&nats, "t").await;
    lease_fences_its_previous_owner_out(&cluster).await;
}

/// The same on a three-node NATS cluster with replicated buckets, where
/// NATS answers a compare-and-set on a stale revision with error 10164
/// ("wrong last sequence", not the 10071 async-nats recognises): the
/// stale owner's renewal and advance must still fail as a lost lease, not
/// as NATS being unavailable (which stalled its whole round for good:
/// every round renewed the stale lease again and paused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_a_lease_fences_its_previous_owner_out() {
    let nats = Nats::cluster3();
    let mut s = settings(&nats, "t");
    s.replicas = 3;
    let cluster = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match Cluster::connect(s.clone()).await {
                Ok(c) => return c,
                Err(e) => {
                    eprintln!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
            }
        }
    })
    .await
    .expect("a three-node JetStream cluster forms");
    lease_fences_its_previous_owner_out(&cluster).await;
}

async fn lease_fences_its_previous_owner_out(cluster: &Cluster) {
    let cluster = cluster.clone();
    // A new replicated bucket elects its leader after creation.
    let mut a = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match Lease::acquire(&cluster, 3, "a").await {
                Ok(lease) => return lease.expect("a free partition is taken"),
                Err(e) if e.is_unavailable() => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the leases bucket answers");
    assert!(
        Lease::acquire(&cluster, 3, "b")
            .await
            .expect("NATS answers")
            .is_none(),
        "a held lease is not taken"
    );
    a.renew().await.expect("NATS answers");
    a.advance(10).await.expect("NATS answers");
    assert_eq!(a.checkpoint().seq, 10);

    // `a` stops renewing (a paused or partitioned worker): once the lease
    // ages out, `b` takes it with a larger token and the checkpoint.
    let b = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(b) = Lease::acquire(&cluster, 3, "b")
                .await
                .expect("NATS answers")
            {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the lease ages out");
    assert!(b.token() > a.token(), "fencing tokens grow");
    assert_eq!(b.checkpoint().seq, 10, "the checkpoint survives the owner");

    // The stale owner's writes fail, whatever its own clock says.
    let renewed = a.renew().await;
    assert!(
        matches!(renewed, Err(Error::LeaseLost { partition: 3, .. })),
        "{renewed:?}"
    );
    let advanced = a.advance(11).await;
    assert!(
        matches!(advanced, Err(Error::LeaseLost { .. })),
        "{advanced:?}"
    );
    let mut b = b;
    b.advance(12).await.expect("NATS answers");
    assert_eq!(b.checkpoint().seq, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_at_once_with_its_checkpoint() {
    let nats = Nats::single();
    let cluster = connect(&nats, "t").await;
    let mut a = Lease::acquire(&cluster, 0, "a").await.unwrap().unwrap();
    a.advance(5).await.unwrap();
    let token = a.token();
    a.release().await.unwrap();
    let b = Lease::acquire(&cluster, 0, "b")
        .await
        .unwrap()
        .expect("a released lease is free without waiting for its TTL");
    assert!(b.token() > token);
    assert_eq!(b.checkpoint().seq, 5);
}

/// A create whose answer was lost (a timeout while a replicated bucket
/// elects its leader) leaves the lease under the worker's own name: taking
/// it again adopts it, with the same token, instead of leaving the
/// partition unowned for a TTL; anyone else still finds it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_under_the_workers_own_name_is_taken_back() {
    let nats = Nats::single();
    let cluster = connect(&nats, "t").await;
    let mut first = Lease::acquire(&cluster, 0, "a").await.unwrap().unwrap();
    first.advance(7).await.unwrap();
    let token = first.token();
    drop(first); // as if its answer never came
    assert!(Lease::acquire(&cluster, 0, "b").await.unwrap().is_none());
    let mut again = Lease::acquire(&cluster, 0, "a")
        .await
        .unwrap()
        .expect("the worker's own lease is taken back");
    assert_eq!(again.token(), token);
    assert_eq!(again.checkpoint().seq, 7);
    again.renew().await.expect("renewable");
    again.advance(8).await.expect("writable");
    assert!(Lease::acquire(&cluster, 0, "b").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_not_renewed_within_its_ttl_is_not_live() {
    let nats = Nats::single();
    let cluster = connect(&nats, "t").await;
    let mut a = Lease::acquire(&cluster, 1, "a").await.unwrap().unwrap();
    assert!(a.is_live());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(!a.is_live());
    assert!(
        matches!(a.advance(1).await, Err(Error::LeaseLost { .. })),
        "no commit past the TTL without a renewal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_per_partition_deduplicated_and_read_in_order() {
    let nats = Nats::single();
    let cluster = connect(&nats, "t").await;
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let ids: Vec<String> = (0..200).map(|i| format!("e{i}")).collect();
    let events: Vec<log::Append> = users
        .iter()
        .zip(&ids)
        .map(|(user, id)| log::Append {
            user,
            msg_id: id,
            payload: bytes::Bytes::from(format!("{{\"user\":\"{user}\",\"id\":\"{id}\"}}")),
        })
        .collect();
    let stored = log::append(&cluster, 8, &events).await.unwrap();
    assert_eq!(stored.len(), 200);
    assert!(stored.iter().all(|a| !a.duplicate));
    let mut seen: Vec<u32> = stored.iter().map(|a| a.partition).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        (0..8).collect::<Vec<_>>(),
        "users spread over every partition"
    );
    for (a, user) in stored.iter().zip(&users) {
        assert_eq!(a.partition, engine::hash::partition_of(user, 8));
    }

    // A re-sent event (same id) is a duplicate and stored once.
    let again = log::append(&cluster, 8, &events[..3]).await.unwrap();
    assert!(again.iter().all(|a| a.duplicate));
    assert_eq!(again[0].seq, stored[0].seq);

    // Partition 2's events, in order, then from after a checkpoint.
    let expected: Vec<u64> = stored
        .iter()
        .filter(|a| a.partition == 2)
        .map(|a| a.seq)
        .collect();
    let mut reader = log::Reader::open(&cluster, 2, 0).await.unwrap();
    let mut got = Vec::new();
    while let Some((seq, _)) = reader.next(Duration::from_millis(500)).await.unwrap() {
        got.push(seq);
    }
    assert_eq!(got, expected);
    let mut reader = log::Reader::open(&cluster, 2, expected[2]).await.unwrap();
    let (first, payload) = reader
        .next(Duration::from_secs(2))
        .await
        .unwrap()
        .expect("the events after the checkpoint");
    assert_eq!(first, expected[3]);
    assert!(String::from_utf8_lossy(&payload).contains("\"user\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_restores_the_last_record_of_each_user() {
    let nats = Nats::single();
    let cluster = connect(&nats, "t").await;
    assert!(changelog::restore(&cluster, 4).await.unwrap().is_empty());
    let odd = "odd.user *>";
    let (a, mut fence) = own(&cluster, 4, "a").await;
    changelog::publish(
        &cluster,
        &a,
        &mut fence,
        &[
            ("ann", bytes::Bytes::from_static(b"ann-1")),
            (odd, bytes::Bytes::from_static(b"odd-1")),
        ],
    )
    .await
    .unwrap();
    let (token_a, token_b) = (a.token(), {
        a.release().await.unwrap();
        let (b, mut fence) = own(&cluster, 4, "b").await;
        changelog::publish(
            &cluster,
            &b,
            &mut fence,
            &[("ann", bytes::Bytes::from_static(b"ann-2"))],
        )
        .await
        .unwrap();
        b.token()
    });
    let (c, mut fence) = own(&cluster, 5, "c").await;
    changelog::publish(
        &cluster,
        &c,
        &mut fence,
        &[("bob", bytes::Bytes::from_static(b"bob-1"))],
    )
    .await
    .unwrap();
    let mut restored = changelog::restore(&cluster, 4).await.unwrap();
    restored.sort_by(|a, b| a.user.cmp(&b.user));
    assert_eq!(
        restored,
        vec![
            changelog::Record {
                user: "ann".into(),
                token: token_b,
                bytes: bytes::Bytes::from_static(b"ann-2"),
            },
            changelog::Record {
                user: odd.into(),
                token: token_a,
                bytes: bytes::Bytes::from_static(b"odd-1"),
            },
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_heartbeat_and_split_the_partitions() {
    let nats = Nats::single();
    let cluster = connect(&nats, "t").await;
    members::heartbeat(&cluster, "w1").await.unwrap();
    members::heartbeat(&cluster, "w2").await.unwrap();
    assert_eq!(members::live(&cluster).await.unwrap(), vec!["w1", "w2"]);
    members::leave(&cluster, "w2").await.unwrap();
    assert_eq!(members::live(&cluster).await.unwrap(), vec!["w1"]);
    // w1 stops heartbeating: it ages out after the TTL.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !members::live(&cluster).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a silent member ages out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nats_is_unavailable_and_nothing_is_acknowledged() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut s = Settings::new(format!("nats://127.0.0.1:{port}"), "t");
    s.request_timeout = Duration::from_secs(1);
    let err = Cluster::connect(s).await.err().expect("nothing listens");
    assert!(err.is_unavailable(), "{err}");
    assert!(err.to_string().contains("cannot connect to NATS"), "{err}");

    // NATS goes away after the connection: an append fails, within its
    // timeout, as unavailable.
    let mut nats = Nats::single();
    let cluster = connect(&nats, "t").await;
    assert!(cluster.is_connected());
    nats.nodes[0].kill();
    let event = [log::Append {
        user: "ann",
        msg_id: "x1",
        payload: bytes::Bytes::from_static(b"{}"),
    }];
    let started = std::time::Instant::now();
    let err = log::append(&cluster, 8, &event).await.unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_replicated_state_survives_a_node() {
    let nats = Nats::cluster3();
    let mut s = settings(&nats, "t");
    s.replicas = 3;
    // The JetStream meta leader may still be in election right after start.
    let cluster = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match Cluster::connect(s.clone()).await {
                Ok(c) => return c,
                Err(e) => {
                    eprintln!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
            }
        }
    })
    .await
    .expect("a three-node JetStream cluster forms");
    // New buckets and streams elect their leaders after creation: the first
    // requests may fail as unavailable for a moment.
    let (mut lease, stored) = tokio::time::timeout(Duration::from_secs(30), async {
        let lease = loop {
            match Lease::acquire(&cluster, 0, "a").await {
                Ok(lease) => break lease.expect("a free partition"),
                Err(e) if e.is_unavailable() => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        let ev = [log::Append {
            user: "ann",
            msg_id: "r1",
            payload: bytes::Bytes::from_static(b"{}"),
        }];
        loop {
            match log::append(&cluster, 1, &ev).await {
                Ok(stored) => return (lease, stored),
                Err(e) if e.is_unavailable() => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the new cluster's streams and buckets answer");
    lease.advance(stored[0].seq).await.unwrap();
    drop(cluster);
    let mut nats = nats;
    nats.nodes[0].kill();
    // The two others keep a quorum: everything is still there and writable.
    let cluster = tokio::time::timeout(Duration::from_secs(30), async {
        let mut s = s.clone();
        s.url = nats.nodes[1..]
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",");
        loop {
            match Cluster::connect(s.clone()).await {
                Ok(c) => return c,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("the cluster keeps a quorum");
    let ev = [log::Append {
        user: "ann",
        msg_id: "r2",
        payload: bytes::Bytes::from_static(b"{}"),
    }];
    let second = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match log::append(&cluster, 1, &ev).await {
                Ok(a) => return a,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("appends go on with a node down");
    assert!(second[0].seq > stored[0].seq);
    // Creating a consumer may fail while the stream elects a new leader.
    let mut reader = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match log::Reader::open(&cluster, 0, 0).await {
                Ok(r) => return r,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("a reader with a node down");
    let (seq, _) = reader
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("the first event survived the node");
    assert_eq!(seq, stored[0].seq);
}

fn value(v: &'static [u8]) -> bytes::Bytes {
    bytes::Bytes::from_static(v)
}

/// Keys created and deleted batch after batch (timers that fire, outbox
/// entries delivered): a deletion's tombstone replaces the value at once,
/// so a restore never sees the old value, and expires after the tombstone
/// TTL, so the stream holds the live keys only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_keys_hide_their_value_then_leave_the_changelog() {
    let nats = Nats::single();
    let mut s = settings(&nats, "d");
    s.tombstone_ttl = Duration::from_secs(1);
    let cluster = Cluster::connect(s).await.expect("connect");
    assert!(
        cluster.tombstones_expire(),
        "nats-server 2.11+ expires them"
    );
    let names: Vec<String> = (0..30).map(|i| format!("timer-{i:02}")).collect();
    let (owner, mut fence) = own(&cluster, 2, "a").await;
    for (i, name) in names.iter().enumerate() {
        let mut records = vec![(name.as_str(), value(b"\x01due"))];
        if i > 0 {
            records.push((
                names[i - 1].as_str(),
                bytes::Bytes::from_static(changelog::TOMBSTONE),
            ));
        }
        changelog::publish(&cluster, &owner, &mut fence, &records)
            .await
            .unwrap();
    }
    // Before the TTL: every deleted key reads as deleted, none as its value.
    let restored = changelog::restore(&cluster, 2).await.unwrap();
    for r in &restored {
        let live = r.bytes.as_ref() != changelog::TOMBSTONE;
        assert_eq!(live, r.user == "timer-29", "{r:?}");
    }
    assert!(changelog_messages(&nats, "d").await >= 2);
    // After it: the last key alone, however many were deleted.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(changelog_messages(&nats, "d").await, 1);
    let restored = changelog::restore(&cluster, 2).await.unwrap();
    assert_eq!(
        restored,
        vec![changelog::Record {
            user: "timer-29".into(),
            token: owner.token(),
            bytes: value(b"\x01due"),
        }]
    );
}

/// A changelog created without per-message TTLs (by an earlier release)
/// is switched to them when a worker connects; its records stay, and its
/// new tombstones expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_changelog_stream_is_switched_to_expiring_tombstones() {
    let nats = Nats::single();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "o_ST".into(),
        subjects: vec!["o.st.>".into()],
        max_messages_per_subject: 1,
        ..Default::default()
    })
    .await
    .expect("an old-style changelog");
    let mut s = settings(&nats, "o");
    s.tombstone_ttl = Duration::from_secs(1);
    let old = Cluster::connect(s.clone()).await.expect("connect");
    let (owner, mut fence) = own(&old, 1, "a").await;
    changelog::publish(
        &old,
        &owner,
        &mut fence,
        &[("kept", value(b"\x01v")), ("gone", value(b"\x01v"))],
    )
    .await
    .unwrap();
    let mut stream = js.get_stream("o_ST").await.expect("stream");
    let info = stream.info().await.expect("info");
    assert!(info.config.allow_message_ttl, "{:?}", info.config);
    assert_eq!(info.config.max_messages_per_subject, 1);
    changelog::publish(
        &old,
        &owner,
        &mut fence,
        &[("gone", bytes::Bytes::from_static(changelog::TOMBSTONE))],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let again = Cluster::connect(s).await.expect("connect again");
    let restored = changelog::restore(&again, 1).await.unwrap();
    assert_eq!(
        restored.iter().map(|r| r.user.as_str()).collect::<Vec<_>>(),
        ["kept"]
    );
    assert_eq!(changelog_messages(&nats, "o").await, 1);
}

/// One call publishing more than async-nats's 5,000 unacknowledged
/// publishes per connection (a large batch's changelog records, a request
/// of many events) completes: it awaits its acks a window at a time. It
/// used to publish them all before awaiting any, so the 5,001st publish
/// waited for a free slot that only its own unawaited acks would free:
/// the call, and every other publish of the worker, hung with no error
/// (found by the cluster_run bench: ingest requests unanswered for 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_publishing_more_than_five_thousand_messages_completes() {
    let nats = Nats::single();
    let cluster = connect(&nats, "big").await;
    let users: Vec<String> = (0..5_200).map(|n| format!("u{n}")).collect();
    let records: Vec<(&str, bytes::Bytes)> = users
        .iter()
        .map(|u| (u.as_str(), bytes::Bytes::from_static(b"r")))
        .collect();
    let (owner, mut fence) = own(&cluster, 0, "a").await;
    tokio::time::timeout(
        Duration::from_secs(90),
        changelog::publish(&cluster, &owner, &mut fence, &records),
    )
    .await
    .expect("5,200 changelog records published within 90 s")
    .unwrap();
    assert_eq!(changelog_messages(&nats, "big").await, 5_200);
    let appends: Vec<log::Append> = users
        .iter()
        .map(|u| log::Append {
            user: u,
            msg_id: u,
            payload: bytes::Bytes::from_static(b"{}"),
        })
        .collect();
    let appended =
        tokio::time::timeout(Duration::from_secs(90), log::append(&cluster, 4, &appends))
            .await
            .expect("5,200 events appended within 90 s")
            .unwrap();
    assert_eq!(appended.len(), 5_200);
    assert!(appended.iter().all(|a| !a.duplicate));
}

/// A request whose events repeat an id (a client's retry merged into a
/// batch; the example shop's sample events do it on purpose): the repeat
/// is a duplicate of the first, stored once, and the request succeeds. On
/// a replicated stream NATS refuses a second publish of an id whose first
/// is still being replicated ("duplicate message id is in process", error
/// 10158), which failed the whole request with 503 every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_repeating_an_event_id_stores_it_once_on_a_replicated_stream() {
    let nats = Nats::cluster3();
    let mut s = settings(&nats, "d");
    s.replicas = 3;
    let cluster = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match Cluster::connect(s.clone()).await {
                Ok(c) => return c,
                Err(e) => {
                    eprintln!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
            }
        }
    })
    .await
    .expect("a three-node JetStream cluster forms");
    let payload = |id: &str| bytes::Bytes::from(format!("{{\"id\":\"{id}\"}}"));
    let events = [
        log::Append {
            user: "ann",
            msg_id: "e1",
            payload: payload("e1"),
        },
        log::Append {
            user: "bob",
            msg_id: "e2",
            payload: payload("e2"),
        },
        log::Append {
            user: "ann",
            msg_id: "e1",
            payload: payload("e1"),
        },
        log::Append {
            user: "ann",
            msg_id: "e1",
            payload: payload("e1"),
        },
    ];
    // A new stream elects its leader after creation: the first requests
    // may fail as unavailable for a moment (never as anything else).
    let stored = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match log::append(&cluster, 8, &events).await {
                Ok(stored) => return stored,
                Err(e) if e.is_unavailable() && e.to_string().contains("10158") => {
                    panic!("a repeated id failed the request: {e}")
                }
                Err(e) if e.is_unavailable() => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the events are stored");
    assert_eq!(stored.len(), 4);
    assert!(!stored[0].duplicate && !stored[1].duplicate);
    assert!(stored[2].duplicate && stored[3].duplicate);
    assert_eq!(stored[2].seq, stored[0].seq);
    assert_eq!(stored[3].seq, stored[0].seq);
    assert_eq!(stored[2].partition, stored[0].partition);
    let mut reader = log::Reader::open(&cluster, stored[0].partition, 0)
        .await
        .expect("a reader");
    let mut got = Vec::new();
    while let Some((seq, _)) = reader.next(Duration::from_millis(500)).await.expect("read") {
        got.push(seq);
    }
    assert_eq!(got, vec![stored[0].seq], "stored once");
}

/// Workers started at the same moment on a fresh three-node NATS cluster
/// (docs/cluster.md's walkthrough starts three together): each creates or
/// finds the cluster's streams and buckets, which a replicated cluster
/// answers only once their groups elected leaders. Every worker connects
/// and joins, none gives up with "jetstream request timed out".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_started_together_on_a_fresh_replicated_cluster_all_join() {
    let nats = Nats::cluster3();
    let mut s = settings(&nats, "together");
    s.replicas = 3;
    let ours = meta::Meta {
        partitions: 8,
        config_hash: "abc".into(),
    };
    let join = |s: Settings| {
        let ours = ours.clone();
        async move {
            let cluster = Cluster::connect(s).await?;
            meta::join(&cluster, &ours).await
        }
    };
    let (a, b, c) = tokio::join!(join(s.clone()), join(s.clone()), join(s.clone()));
    for (name, joined) in [("a", a), ("b", b), ("c", c)] {
        match joined {
            Ok(meta) => assert_eq!(meta, ours),
            Err(e) => panic!("worker {name} did not join: {e}"),
        }
    }
}

/// Workers racing for the same free leases on a three-node NATS cluster:
/// NATS refuses a compare-and-set on a key while another write of it is
/// still being replicated with error 10164 ("wrong last sequence"), which
/// async-nats does not report as a wrong revision. A take that loses such
/// a race is "held by another" (`None`), never an error that pauses the
/// worker's round as if NATS were down; each partition has one taker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_racing_for_leases_on_a_three_node_cluster_never_see_an_error() {
    let nats = Nats::cluster3();
    let connect_to = |node: usize| {
        let mut s = Settings::new(nats.nodes[node].url(), "race");
        s.lease_ttl = Duration::from_millis(1500);
        s.request_timeout = Duration::from_secs(3);
        s.replicas = 3;
        async move {
            tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    match Cluster::connect(s.clone()).await {
                        Ok(c) => return c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
            .await
            .expect("a three-node JetStream cluster forms")
        }
    };
    let clusters = [
        connect_to(0).await,
        connect_to(1).await,
        connect_to(2).await,
    ];
    // The leases bucket answers (its group elected a leader).
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match Lease::acquire(&clusters[0], 999, "probe").await {
                Ok(_) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("the leases bucket answers");
    let mut errors = Vec::new();
    for p in 0..40u32 {
        let takes = clusters.iter().enumerate().map(|(i, c)| {
            let c = c.clone();
            async move { Lease::acquire(&c, p, &format!("w{i}")).await }
        });
        let results = futures_util::future::join_all(takes).await;
        let mut taken = 0;
        for r in results {
            match r {
                Ok(Some(_)) => taken += 1,
                Ok(None) => {}
                Err(e) => errors.push(format!("partition {p}: {e}")),
            }
        }
        assert!(taken <= 1, "partition {p} taken {taken} times");
    }
    assert!(errors.is_empty(), "takes failed: {errors:?}");
}

/// A live owner renewing its lease while another worker keeps trying to
/// take it (a handover in progress: the joiner tries before the owner
/// released) on a three-node NATS cluster. A refused compare-and-set,
/// 10071 or 10164, counts as a lost lease: this checks that the other's
/// attempts never make NATS refuse the owner's renewals (they are refused
/// themselves, before anything is in flight), so a live owner never drops
/// its partition for them, and the other never gets the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_three_node_cluster_renewals_survive_another_worker_trying_to_take() {
    let nats = Nats::cluster3();
    let connect_to = |node: usize| {
        let mut s = Settings::new(nats.nodes[node].url(), "renew");
        // Long enough that a renewal delayed by a loaded machine (the
        // owner renews back to back) never lets the lease lapse: what is
        // tested is the other's attempts, not the clock.
        s.lease_ttl = Duration::from_secs(5);
        s.request_timeout = Duration::from_secs(3);
        s.replicas = 3;
        async move {
            tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    match Cluster::connect(s.clone()).await {
                        Ok(c) => return c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
            .await
            .expect("a three-node JetStream cluster forms")
        }
    };
    let owner = connect_to(0).await;
    let thief = connect_to(1).await;
    let mut lease = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match Lease::acquire(&owner, 0, "owner").await {
                Ok(Some(lease)) => return lease,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("the leases bucket answers");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let trying = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut taken = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(Some(_)) = Lease::acquire(&thief, 0, "thief").await {
                    taken += 1;
                }
            }
            taken
        })
    };
    let mut failures = Vec::new();
    for _ in 0..200 {
        if let Err(e) = lease.renew().await {
            failures.push(e.to_string());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let taken = trying.await.expect("the other worker's task");
    assert_eq!(taken, 0, "a live lease was taken");
    assert!(failures.is_empty(), "renewals failed: {failures:?}");
}

/// A stream of the cluster that exists in NATS with settings the cluster
/// cannot run on (an age limit that would drop unapplied events, more
/// than one message per changelog subject), or with other replicas than
/// the worker was started with, is refused with one sentence naming the
/// stream and what is wrong (was: taken as it was, silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_other_settings_is_refused_naming_them() {
    let nats = Nats::single();
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "aged_EV".into(),
        subjects: vec!["aged.ev.*".into()],
        max_age: Duration::from_secs(60),
        ..Default::default()
    })
    .await
    .expect("an event stream with an age limit");
    let Err(e) = Cluster::connect(settings(&nats, "aged")).await else {
        panic!("a cluster on an event stream with an age limit")
    };
    assert!(matches!(e, Error::StreamMismatch { .. }), "{e}");
    let said = e.to_string();
    assert!(
        said.contains("aged_EV") && said.contains("max age 60s") && said.contains("--cluster-name"),
        "{said}"
    );

    js.create_stream(async_nats::jetstream::stream::Config {
        name: "many_ST".into(),
        subjects: vec!["many.st.>".into()],
        ..Default::default()
    })
    .await
    .expect("a changelog keeping every message");
    let Err(e) = Cluster::connect(settings(&nats, "many")).await else {
        panic!("a cluster on a changelog keeping every message")
    };
    assert!(
        e.to_string().contains("many_ST") && e.to_string().contains("0 message(s) per subject"),
        "{e}"
    );

    connect(&nats, "r").await;
    let mut three = settings(&nats, "r");
    three.replicas = 3;
    let Err(e) = Cluster::connect(three).await else {
        panic!("a worker asking 3 replicas joined a cluster of 1")
    };
    assert!(
        e.to_string().contains("with 1 replica(s)")
            && e.to_string().contains("--replicas 3")
            && e.to_string().contains("start it with --replicas 1"),
        "{e}"
    );
}

/// A NATS server started without JetStream (`-js` forgotten): the worker
/// is refused with a sentence that says how to start it, not only
/// JetStream's own "not enabled" or a timeout.
#[tokio::test]
async fn a_nats_server_without_jetstream_is_named_with_the_flag_to_start_it() {
    let nats = Nats::single_without_jetstream();
    let mut s = settings(&nats, "nojs");
    s.request_timeout = Duration::from_millis(500);
    let err = match Cluster::connect(s).await {
        Ok(_) => panic!("a cluster on a server without JetStream"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::NoJetStream { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&nats.url()), "{text}");
    assert!(text.contains("start it with `-js`"), "{text}");
}
