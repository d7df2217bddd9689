//! The audiences index: key = `a` + segment + `\0` + zone + `\0` + user id,
//! for the segments that schedules enter (`entry: { schedule, segment }`).
//! A firing reads only the members of its segment (in its zone) instead of
//! every user. Kept current whenever a user's record changes, and at the
//! instants a `history … within` window can change membership; members are
//! evaluated again at the firing, so a stale entry never enters anyone.

use super::{Batch, Error, Kv};

const PREFIX: u8 = b'a';

fn prefix(segment: &str, zone: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(segment.len() + zone.map_or(0, str::len) + 3);
    k.push(PREFIX);
    k.extend_from_slice(segment.as_bytes());
    k.push(0);
    if let Some(z) = zone {
        k.extend_from_slice(z.as_bytes());
        k.push(0);
    }
    k
}

fn key(segment: &str, zone: &str, user: &str) -> Vec<u8> {
    let mut k = prefix(segment, Some(zone));
    k.extend_from_slice(user.as_bytes());
    k
}

/// Reads of the audiences index.
pub trait Audiences {
    /// Up to `limit` (zone, user) members of `segment` (in `zone` when
    /// given) after `after`, in key order.
    fn audience(
        &self,
        segment: &str,
        zone: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, Error>;
}

impl<T: Kv + ?Sized> Audiences for T {
    fn audience(
        &self,
        segment: &str,
        zone: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, Error> {
        let p = prefix(segment, None);
        let scan_prefix = prefix(segment, zone);
        let after = after.map(|(z, u)| key(segment, z, u));
        Ok(self
            .scan(&scan_prefix, after.as_deref(), None, limit)?
            .into_iter()
            .filter_map(|(k, _)| {
                let rest = String::from_utf8_lossy(&k[p.len()..]).into_owned();
                let (z, u) = rest.split_once('\0')?;
                Some((z.to_owned(), u.to_owned()))
            })
            .collect())
    }
}

impl Batch {
    pub fn put_audience(&mut self, segment: &str, zone: &str, user: &str) {
        self.put(key(segment, zone, user), Vec::new());
    }

    pub fn delete_audience(&mut self, segment: &str, zone: &str, user: &str) {
        self.delete(key(segment, zone, user));
    }
}
