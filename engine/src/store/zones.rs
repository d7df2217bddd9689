//! The zones index: key = `z` + zone name + `\0` + user id. A schedule with
//! `timezone: user` fires once per zone at that zone's local time and
//! enters the users indexed under it.

use super::{Batch, Error, Kv};

const PREFIX: u8 = b'z';

fn prefix(zone: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(zone.len() + 2);
    k.push(PREFIX);
    k.extend_from_slice(zone.as_bytes());
    k.push(0);
    k
}

fn key(zone: &str, user: &str) -> Vec<u8> {
    let mut k = prefix(zone);
    k.extend_from_slice(user.as_bytes());
    k
}

/// Reads of the zones index.
pub trait Zones {
    /// Up to `limit` users of `zone` after `after`, in id order.
    fn zone_users(
        &self,
        zone: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Error>;
}

impl<T: Kv + ?Sized> Zones for T {
    fn zone_users(
        &self,
        zone: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, Error> {
        let p = prefix(zone);
        let after = after.map(|a| key(zone, a));
        Ok(self
            .scan(&p, after.as_deref(), None, limit)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[p.len()..]).into_owned())
            .collect())
    }
}

impl Batch {
    pub fn put_zone(&mut self, zone: &str, user: &str) {
        self.put(key(zone, user), Vec::new());
    }

    pub fn delete_zone(&mut self, zone: &str, user: &str) {
        self.delete(key(zone, user));
    }
}
