//! The users table: key = `u` + user id, value = the user's whole live
//! state as one [`UserRecord`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::SentRecord;

use super::codec;
use super::dedupe::JourneyBook;
use super::event_ids::SeenIds;
use super::history::HistEntry;
use super::instances::Instance;
use super::timers::TimerKey;
use super::{Batch, Error, Kv};

/// Key prefix of the users table (its values are blobs).
pub const PREFIX: u8 = b'u';

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Attributes, with `id`.
    #[serde(with = "codec::json")]
    pub profile: Value,
    /// The zone the user is indexed under in the zones table ("" = none).
    pub zone: String,
    pub history: Vec<HistEntry>,
    pub seen: SeenIds,
    pub instances: Vec<Instance>,
    pub journeys: Vec<JourneyBook>,
    /// Entry segments the user was a member of when last evaluated.
    pub segments: Vec<String>,
    /// Schedule segments the user is indexed under (in `zone`).
    pub audiences: Vec<String>,
    /// The pending segment re-evaluation timer.
    pub reevaluate: Option<TimerKey>,
    /// Messages sent to the user, for frequency caps.
    pub sent: Vec<SentRecord>,
}

impl UserRecord {
    pub fn new(id: &str) -> Self {
        UserRecord {
            profile: super::profile::new(id),
            zone: String::new(),
            history: Vec::new(),
            seen: SeenIds::default(),
            instances: Vec::new(),
            journeys: Vec::new(),
            segments: Vec::new(),
            audiences: Vec::new(),
            reevaluate: None,
            sent: Vec::new(),
        }
    }

    pub fn id(&self) -> &str {
        self.profile.get("id").and_then(Value::as_str).unwrap_or("")
    }

    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        codec::encode("user", self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        codec::decode("user", bytes)
    }
}

pub fn key(user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 1);
    k.push(PREFIX);
    k.extend_from_slice(user.as_bytes());
    k
}

/// Reads of the users table.
pub trait Users {
    fn user(&self, id: &str) -> Result<Option<UserRecord>, Error>;
    /// Up to `limit` user ids after `after`, in id order.
    fn user_ids(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, Error>;
}

impl<T: Kv + ?Sized> Users for T {
    fn user(&self, id: &str) -> Result<Option<UserRecord>, Error> {
        self.get_blob(&key(id))?
            .map(|b| UserRecord::decode(&b))
            .transpose()
    }

    fn user_ids(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, Error> {
        let after = after.map(key);
        Ok(self
            .scan(&[PREFIX], after.as_deref(), None, limit)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[1..]).into_owned())
            .collect())
    }
}

impl Batch {
    pub fn put_user_bytes(&mut self, id: &str, bytes: Vec<u8>) {
        self.put_blob(key(id), bytes);
    }
}
