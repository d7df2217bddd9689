//! Who a message went to, by its idempotency key: key = `r` + message key,
//! value = [`Recipient`] as JSON; and by user, for erasure and for the
//! categories a user received: `R` + user + `\0` + message key, value =
//! the category.
//!
//! The key is a hash that does not contain the user (`hash::message_key`),
//! so a provider's bounce or complaint, which names the message by its
//! `Message-ID: <{key}@{domain}>`, is matched to its user here (RUN.md §3,
//! docs/feedback.md). Both entries are written for each email, in the same
//! commit as its outbox entry; a push message writes only the second (a
//! complaint unsubscribes every category the user received, and push never
//! comes back by key), a webhook neither (older stores hold entries for
//! them too, read the same way), and
//! lives as long as the message log does (which is kept until the user is
//! erased): erasure deletes both.

use serde::{Deserialize, Serialize};

use journeys::compiled::Channel;

use crate::clock::Millis;

use super::{Batch, Error, Kv};

const BY_KEY: u8 = b'r';
const BY_USER: u8 = b'R';

/// The message a key names, as much as feedback needs of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub user: String,
    pub journey: String,
    /// The journey's category when the message was decided.
    pub category: String,
    pub channel: Channel,
    /// When the message was decided.
    pub at: Millis,
}

fn key(message_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(message_key.len() + 1);
    k.push(BY_KEY);
    k.extend_from_slice(message_key.as_bytes());
    k
}

fn user_prefix(user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 2);
    k.push(BY_USER);
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k
}

fn user_key(user: &str, message_key: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(message_key.as_bytes());
    k
}

/// Reads of the table.
pub trait Recipients {
    /// The recipient of the message with this key, if it was recorded.
    fn recipient(&self, message_key: &str) -> Result<Option<Recipient>, Error>;
    /// The categories of every message recorded for `user`, without
    /// repeats, in key order.
    fn received_categories(&self, user: &str) -> Result<Vec<String>, Error>;
    /// The keys of both entries of each of `user`'s messages (for erasure).
    fn recipient_keys(&self, user: &str) -> Result<Vec<Vec<u8>>, Error>;
}

impl<T: Kv + ?Sized> Recipients for T {
    fn recipient(&self, message_key: &str) -> Result<Option<Recipient>, Error> {
        if message_key.is_empty() {
            return Ok(None);
        }
        self.get(&key(message_key))?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| Error::Decode {
                    what: "message recipient",
                    message: e.to_string(),
                })
            })
            .transpose()
    }

    fn received_categories(&self, user: &str) -> Result<Vec<String>, Error> {
        let mut out: Vec<String> = Vec::new();
        for (_, v) in self.scan(&user_prefix(user), None, None, usize::MAX)? {
            let c = String::from_utf8(v).map_err(|e| Error::Decode {
                what: "message category",
                message: e.to_string(),
            })?;
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn recipient_keys(&self, user: &str) -> Result<Vec<Vec<u8>>, Error> {
        let prefix = user_prefix(user);
        let mut out = Vec::new();
        for (k, _) in self.scan(&prefix, None, None, usize::MAX)? {
            if let Some(message_key) = k.get(prefix.len()..) {
                out.push(key(&String::from_utf8_lossy(message_key)));
            }
            out.push(k);
        }
        Ok(out)
    }
}

impl Batch {
    /// Records who the message with `message_key` goes to.
    pub fn put_recipient(&mut self, message_key: &str, r: &Recipient) -> Result<(), Error> {
        let bytes = serde_json::to_vec(r).map_err(|e| Error::Encode {
            what: "message recipient",
            message: e.to_string(),
        })?;
        self.put(key(message_key), bytes);
        self.put_received(&r.user, message_key, &r.category);
        Ok(())
    }

    /// Records only that `user` received a message of `category` (what a
    /// complaint unsubscribes), for a message that never comes back by key.
    pub fn put_received(&mut self, user: &str, message_key: &str, category: &str) {
        self.put(user_key(user, message_key), category.as_bytes().to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::{SledOptions, SledStore};

    fn r(user: &str, category: &str) -> Recipient {
        Recipient {
            user: user.into(),
            journey: "j".into(),
            category: category.into(),
            channel: Channel::Email,
            at: 5,
        }
    }

    #[test]
    fn by_key_by_user_and_erasure() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SledStore::open(dir.path(), &SledOptions::default()).expect("open");
        let mut b = Batch::default();
        b.put_recipient("k1", &r("u1", "marketing")).expect("put");
        b.put_recipient("k2", &r("u1", "onboarding")).expect("put");
        b.put_recipient("k3", &r("u1", "marketing")).expect("put");
        // A user whose id starts like the other's is another user.
        b.put_recipient("k4", &r("u10", "news")).expect("put");
        store.apply(b).expect("apply");

        assert_eq!(
            store.recipient("k2").expect("get"),
            Some(r("u1", "onboarding"))
        );
        assert_eq!(store.recipient("nope").expect("get"), None);
        assert_eq!(store.recipient("").expect("get"), None);
        assert_eq!(
            store.received_categories("u1").expect("scan"),
            vec!["marketing".to_owned(), "onboarding".to_owned()]
        );
        assert_eq!(
            store.received_categories("u10").expect("scan"),
            vec!["news".to_owned()]
        );

        let keys = store.recipient_keys("u1").expect("keys");
        assert_eq!(keys.len(), 6);
        let mut b = Batch::default();
        for k in keys {
            b.delete(k);
        }
        store.apply(b).expect("apply");
        assert_eq!(store.recipient("k1").expect("get"), None);
        assert!(store.received_categories("u1").expect("scan").is_empty());
        assert_eq!(store.recipient("k4").expect("get"), Some(r("u10", "news")));
    }
}
