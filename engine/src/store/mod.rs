//! Durable state, behind traits: one module per table, each owning its key
//! layout, its record types and a trait with its reads. Writes go through a
//! [`Batch`] that a backend applies atomically.
//!
//! Tables:
//!
//! | module | key | holds |
//! |---|---|---|
//! | [`users`] | `u` user id | one [`users::UserRecord`] per user: the whole live state of that user, read and written as one record |
//! | [`profile`], [`history`], [`instances`], [`dedupe`], [`event_ids`], [`goals`] | — | the sections of a user record (profile; bounded event history; live instances and their step; per-journey entry bookkeeping and dedupe keys; recently seen event ids; goal watches) |
//! | [`timers`] | `t` due (big-endian ms) + seq | timers, in due order |
//! | [`zones`] | `z` zone `\0` user | which users live in which time zone (for `timezone: user` schedules) |
//! | [`audiences`] | `a` segment `\0` zone `\0` user | the members of the segments schedules enter |
//! | [`messages`] | `M` user `\0` time + seq; `d` time + seq | the message log (every `send` decision), by user, and the dead-letter queue |
//! | [`journal`] | `j` time + seq (+ `p`: a page) | the report journal: one anonymous record per entry, `send` decision and conversion (for `sluice report`), gathered into pages of up to 256 |
//! | [`outbox`] | `o` id | rendered messages awaiting delivery, committed with the decision that made them |
//! | [`tally`] | `c` (`C`: erased users' sends) journey `\0` version step | per-step counters: live instances, sends by outcome (written with the commit that changes them, rebuilt by a scan when missing) |
//! | [`recipients`] | `r` message key; `R` user `\0` message key | who each message went to (user, journey, category), written with its outbox entry, for matching bounces and complaints by `Message-ID` |
//! | [`deployments`] | `g` generation; `f` SHA-256; `v` kind, id, seq; `h` seq; meta `deployed` | deployed config generations and their files, resource versions, the audit log, the rollouts |
//! | [`meta`] | `x` name | engine bookkeeping: sequence counter, policy ledgers, schedule cursors |
//!
//! Keeping a user's live state in one record is what makes the engine fast
//! on sled: one read when a user gets busy, one write when they are flushed
//! (see [`buffer`]), instead of a multi-tree transaction per event.
//!
//! [`sled_store`] is the sled implementation (with [`pending`], the frames
//! it has logged and a thread of its own applies to sled); [`scratch`] the store of a run
//! that is never reopened (in memory, records in a temporary file); any
//! ordered key-value store implementing [`Kv`] gets every table.

pub mod attrs;
pub mod audiences;
pub mod buffer;
pub mod codec;
pub mod dedupe;
pub mod deployments;
pub mod event_ids;
pub mod format;
pub mod goals;
pub mod history;
pub mod instances;
pub mod journal;
pub mod log;
pub mod messages;
pub mod meta;
pub mod outbox;
pub mod pending;
pub mod profile;
pub mod recipients;
pub mod scratch;
pub mod sled_store;
pub mod tally;
pub mod timers;
pub mod users;
pub mod zones;

use std::path::{Path, PathBuf};

pub use buffer::Buffered;
pub use sled_store::SledStore;

/// What can go wrong in storage. Every error about files names the path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Backend(String),
    #[error("store: cannot {what} {path}: {message}")]
    Io {
        path: PathBuf,
        what: String,
        message: String,
    },
    #[error("store {path} is damaged: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "store {path} is in use by another sluice process; stop it first, or use another store"
    )]
    Locked { path: PathBuf },
    #[error("store {path} has format version {found}, and this sluice reads version {expected}: {advice}")]
    Format {
        path: PathBuf,
        found: u32,
        expected: u32,
        advice: &'static str,
    },
    #[error("store: cannot decode {what}: {message}")]
    Decode { what: &'static str, message: String },
    #[error("store: cannot encode {what}: {message}")]
    Encode { what: &'static str, message: String },
}

impl Error {
    pub fn io(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
        // The OS's words are enough; its error number is noise to a user.
        let message = crate::os::without_code(&e.to_string()).to_owned();
        Error::Io {
            path: path.to_owned(),
            what: what.to_owned(),
            message,
        }
    }

    pub fn corrupt(path: &Path, message: impl Into<String>) -> Error {
        Error::Corrupt {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// Writes to apply atomically: all of them or none. The last write to a
/// key wins; `None` deletes. `blobs` are large values (user records) that
/// a backend may keep out of line ([`log`]); read them with
/// [`Kv::get_blob`].
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    pub blobs: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Report journal records not yet gathered into a page
    /// ([`journal`]): [`Batch::seal`] writes them into `ops`.
    journal: Vec<(crate::clock::Millis, u64, journal::Record)>,
}

impl Batch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.insert(key, None);
    }

    pub fn put_blob(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.blobs.insert(key, Some(value));
    }

    pub fn delete_blob(&mut self, key: Vec<u8>) {
        self.blobs.insert(key, None);
    }

    pub fn len(&self) -> usize {
        self.ops.len() + self.blobs.len() + self.journal.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.blobs.is_empty() && self.journal.is_empty()
    }
}

/// Key-value pairs, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The key range a [`Kv::scan`] reads: from `prefix` (or just past `after`)
/// up to `before`, exclusive. The caller stops at the first key outside
/// `prefix`.
pub(crate) fn scan_range<'a>(
    prefix: &'a [u8],
    after: Option<&'a [u8]>,
    before: Option<&'a [u8]>,
) -> (std::ops::Bound<&'a [u8]>, std::ops::Bound<&'a [u8]>) {
    use std::ops::Bound;
    let lo = after.map_or(Bound::Included(prefix), Bound::Excluded);
    let hi = before.map_or(Bound::Unbounded, Bound::Excluded);
    (lo, hi)
}

/// An ordered key-value store: what a backend provides. The tables are
/// built on it.
pub trait Kv: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// Reads a value written with [`Batch::put_blob`].
    fn get_blob(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// Up to `limit` entries whose keys start with `prefix`, are strictly
    /// greater than `after` (when given) and strictly less than `before`
    /// (when given), in key order. For blob keys the values are
    /// unspecified (read them with [`Kv::get_blob`]).
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, Error>;
    /// Applies every write of the batch atomically: after a crash at any
    /// moment, either all of them are visible or none is. A durable backend
    /// may ask for [`Kv::flush`] before the batch survives a power loss.
    fn apply(&self, batch: Batch) -> Result<(), Error>;
    /// Makes every applied batch durable (survives a power loss).
    fn flush(&self) -> Result<(), Error>;
}

/// Every table, over any [`Kv`].
pub trait Store:
    Kv
    + users::Users
    + timers::Timers
    + zones::Zones
    + audiences::Audiences
    + messages::Messages
    + outbox::Outbox
    + recipients::Recipients
    + meta::Meta
    + tally::Tallies
{
}

impl<T: Kv + ?Sized> Store for T {}
