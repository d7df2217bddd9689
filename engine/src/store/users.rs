//! The users table: key = `u` + user id, value = the user's whole live
//! state as one [`UserRecord`].

use serde::{Deserialize, Serialize};

use crate::policy::SentRecord;

use super::attrs::{self, Val};
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
    /// Attributes, with `id` (an object, in its compact form).
    #[serde(with = "attrs::tagged")]
    pub profile: Val,
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

/// The spare capacity a short list of small entries keeps (see
/// [`UserRecord::shrink`]).
const SLACK_BYTES: usize = 64;

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
        self.profile.get("id").and_then(Val::as_str).unwrap_or("")
    }

    /// Gives back the spare capacity its lists grew while the user was
    /// handled (a list grows to four entries on its first push and never
    /// shrinks by itself): a cached user costs what it holds. A quarter of
    /// slack is kept, and up to 64 bytes of it in a short list of small
    /// entries, so a list that keeps growing is not copied on every change
    /// (a list of one or two that gains an entry was reallocated twice per
    /// unit of work: grown to four, then shrunk back).
    pub fn shrink(&mut self) {
        fn fit<T>(v: &mut Vec<T>) {
            if v.is_empty() {
                if v.capacity() > 0 {
                    *v = Vec::new();
                }
                return;
            }
            let small = SLACK_BYTES / std::mem::size_of::<T>().max(1);
            let keep = v.len() + (v.len() / 4).max(small);
            if v.capacity() > keep + 1 {
                v.shrink_to(keep);
            }
        }
        fit(&mut self.history);
        fit(&mut self.seen.ids);
        fit(&mut self.instances);
        for i in &mut self.instances {
            if let Some(d) = &mut i.deferred {
                fit(&mut d.reservations);
            }
        }
        fit(&mut self.journeys);
        for b in &mut self.journeys {
            fit(&mut b.keys);
            fit(&mut b.goals);
        }
        fit(&mut self.segments);
        fit(&mut self.audiences);
        fit(&mut self.sent);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_gives_back_spare_capacity_and_changes_nothing() {
        let mut r = UserRecord::new("u1");
        for i in 0..3 {
            r.segments.push(format!("s{i}"));
        }
        r.segments.truncate(1);
        r.seen.insert("e1", 1, None);
        for i in 0..100 {
            r.sent.push(SentRecord {
                at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
                channel: journeys::compiled::Channel::Email,
                category: format!("c{i}"),
            });
        }
        let before = r.clone();
        r.shrink();
        assert_eq!(r, before);
        // Short lists of small entries keep at most 64 bytes of slack.
        let slack = |size: usize| (SLACK_BYTES / size).max(1);
        assert!(r.segments.capacity() <= 1 + slack(std::mem::size_of::<String>()) + 1);
        assert!(r.seen.ids.capacity() <= 1 + slack(std::mem::size_of_val(&r.seen.ids[0])) + 1);
        assert!(r.sent.capacity() <= 127, "{}", r.sent.capacity());
        // A list that keeps growing keeps a quarter of slack: the next
        // pushes do not copy it.
        let cap = r.sent.capacity();
        r.sent.push(before.sent[0].clone());
        assert_eq!(r.sent.capacity(), cap);
        assert_eq!(
            UserRecord::decode(&r.encode().expect("encode")).expect("decode"),
            r
        );
        // An emptied list gives everything back.
        r.segments.clear();
        r.shrink();
        assert_eq!(r.segments.capacity(), 0);
    }

    /// A short list that gains an entry per unit of work is not copied
    /// each time (it was grown to four, then shrunk back, twice a unit).
    #[test]
    fn a_short_list_growing_by_one_is_not_copied() {
        let mut r = UserRecord::new("u1");
        r.segments.push("a".into());
        r.shrink();
        let at = r.segments.as_ptr();
        r.segments.push("b".into());
        r.shrink();
        assert_eq!(r.segments.as_ptr(), at);
    }
}
