//! Power loss: every write after the last fsync is lost. Simulated by
//! putting sled back to its state at its last flush (a copy taken at the
//! checkpoint) and cutting the commit log at a random offset at or after
//! its last fsynced byte, sometimes with garbage after the cut (a sector
//! that was being written). Reopening must then succeed, without error,
//! with a store equal to the state after some whole commit, and never lose
//! a commit that was made durable (every commit with `sync_commits`, up to
//! the last checkpoint without).

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;

use engine::store::log::Faults;
use engine::store::sled_store::{SledOptions, SledStore};
use engine::store::{Batch, Kv};
use support::fixture::copy_dir;

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn read_all(store: &SledStore) -> State {
    let mut out = State::new();
    for (k, _) in store.scan(b"u", None, None, usize::MAX).expect("scan") {
        let v = store.get_blob(&k).expect("blob").expect("present");
        out.insert(k, v);
    }
    for (k, v) in store.scan(b"t", None, None, usize::MAX).expect("scan") {
        out.insert(k, v);
    }
    out
}

/// One write of a commit: (blob?, key number, value length or delete).
type Write = (bool, u8, Option<u16>);

fn commits() -> impl Strategy<Value = Vec<Vec<Write>>> {
    let write = (
        any::<bool>(),
        0u8..24,
        prop::option::weighted(0.85, 1u16..3000),
    );
    prop::collection::vec(prop::collection::vec(write, 1..12), 4..24)
}

fn run(
    commits: Vec<Vec<Write>>,
    sync_commits: bool,
    pipeline: bool,
    checkpoint_at: usize,
    cut: f64,
    garbage: u16,
) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("store");
    let faults = Faults::counting();
    let options = SledOptions {
        sync_commits,
        pipeline,
        faults: Some(faults.clone()),
        ..SledOptions::default()
    };
    let store = SledStore::open(&path, &options).expect("open");
    let mut model = State::new();
    let mut states = vec![model.clone()];
    let mut durable = 0usize;
    let checkpoint_at = checkpoint_at % commits.len();
    for (i, writes) in commits.iter().enumerate() {
        let mut b = Batch::default();
        for (n, &(blob, k, len)) in writes.iter().enumerate() {
            let key = vec![if blob { b'u' } else { b't' }, k];
            let value = len.map(|l| vec![(i + n) as u8; l as usize]);
            match (&value, blob) {
                (Some(v), true) => b.put_blob(key.clone(), v.clone()),
                (None, true) => b.delete_blob(key.clone()),
                (Some(v), false) => b.put(key.clone(), v.clone()),
                (None, false) => b.delete(key.clone()),
            }
            match value {
                Some(v) => model.insert(key, v),
                None => model.remove(&key),
            };
        }
        store.apply(b).expect("apply");
        states.push(model.clone());
        if sync_commits {
            durable = states.len() - 1;
        }
        if i == checkpoint_at {
            store.flush().expect("checkpoint");
            durable = states.len() - 1;
            copy_dir(&path.join("sled"), &dir.path().join("sled-at-checkpoint"));
        }
    }
    let synced = store.synced().expect("synced");
    faults.trip();
    drop(store);
    // Power loss: sled as at its last flush, the log cut after its last
    // fsynced byte.
    std::fs::remove_dir_all(path.join("sled")).expect("rm sled");
    copy_dir(&dir.path().join("sled-at-checkpoint"), &path.join("sled"));
    let log = path.join(format!("log.{}.seg", synced.generation));
    let mut bytes = std::fs::read(&log).expect("read log");
    let extra = (bytes.len() as u64).saturating_sub(synced.offset);
    let keep = synced.offset + (extra as f64 * cut) as u64;
    bytes.truncate(keep as usize);
    bytes.extend((0..garbage).map(|i| (i as u8).wrapping_mul(31)));
    std::fs::write(&log, &bytes).expect("write log");

    let store = SledStore::open(&path, &SledOptions::default()).expect("reopen after power loss");
    assert!(store.recovery().damage.is_none(), "{:?}", store.recovery());
    let got = read_all(&store);
    let j = states
        .iter()
        .rposition(|s| *s == got)
        .unwrap_or_else(|| panic!("the store is no commit's state: {got:?}"));
    assert!(
        j >= durable,
        "commit {durable} was durable but the store is back at commit {j}"
    );
    // And it goes on: a new commit, reopened.
    let mut b = Batch::default();
    b.put_blob(b"uz".to_vec(), b"after".to_vec());
    store.apply(b).expect("apply after recovery");
    drop(store);
    let store = SledStore::open(&path, &SledOptions::default()).expect("reopen again");
    assert_eq!(
        store.get_blob(b"uz").expect("read"),
        Some(b"after".to_vec())
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn power_loss_keeps_every_synced_commit(
        commits in commits(),
        sync in any::<bool>(),
        pipeline in any::<bool>(),
        checkpoint_at in 0usize..24,
        cut in 0.0f64..=1.0,
        garbage in prop::sample::select(vec![0u16, 0, 3, 8, 200]),
    ) {
        run(commits, sync, pipeline, checkpoint_at, cut, garbage);
    }
}
