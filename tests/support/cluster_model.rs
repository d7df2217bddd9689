//! A model of the engine for the cluster's worker loop (tests and the
//! cluster bench): per user, the ids of the events applied, each once (a
//! repeat is skipped by its id, as the engine skips a seen event `id`).
//! Events are JSON `{"user":…,"id":…}`; a record is the JSON array of ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use engine::cluster::changelog;
use engine::cluster::worker::Processor;

/// One commit as a worker logged it: (worker, partition, token, last seq).
pub type Commits = Arc<Mutex<Vec<(String, u32, u64, u64)>>>;

/// A model of the engine: per user, the ids of the events applied, each
/// once (a repeat is skipped by its id).
pub struct Model {
    pub me: String,
    pub users: HashMap<u32, BTreeMap<String, Vec<String>>>,
    pub commits: Commits,
}

impl Processor for Model {
    fn restore(&mut self, partition: u32, records: Vec<changelog::Record>) {
        let users = records
            .into_iter()
            .map(|r| {
                (
                    r.user,
                    serde_json::from_slice(&r.bytes).expect("a model record"),
                )
            })
            .collect();
        self.users.insert(partition, users);
    }

    fn apply(
        &mut self,
        partition: u32,
        events: &[(u64, bytes::Bytes)],
    ) -> Vec<(String, bytes::Bytes)> {
        let users = self.users.entry(partition).or_default();
        let mut changed = BTreeSet::new();
        for (_, payload) in events {
            let e: serde_json::Value = serde_json::from_slice(payload).expect("a test event");
            let user = e["user"].as_str().expect("user").to_string();
            let id = e["id"].as_str().expect("id").to_string();
            let ids = users.entry(user.clone()).or_default();
            if !ids.contains(&id) {
                ids.push(id);
                changed.insert(user);
            }
        }
        changed
            .into_iter()
            .map(|u| {
                let bytes = serde_json::to_vec(&users[&u]).expect("json");
                (u, bytes::Bytes::from(bytes))
            })
            .collect()
    }

    fn committed(&mut self, partition: u32, token: u64, seq: u64) {
        self.commits
            .lock()
            .expect("the commit log")
            .push((self.me.clone(), partition, token, seq));
    }

    fn forget(&mut self, partition: u32) {
        self.users.remove(&partition);
    }
}
