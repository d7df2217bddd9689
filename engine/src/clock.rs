//! Time, injected. The engine never reads the system clock itself: it asks a
//! [`Clock`]. `simulate` and `test` drive a [`VirtualClock`]; `run` uses the
//! [`WallClock`], the only place in the workspace allowed to read system
//! time (clippy's `disallowed-methods` bans it everywhere else).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Milliseconds since the Unix epoch, UTC: the engine's unit of time.
pub type Millis = i64;

/// Converts a timestamp to [`Millis`].
pub fn to_millis(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

/// Converts [`Millis`] back to a timestamp (clamped to chrono's range).
pub fn from_millis(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Formats an instant the way every output line does: RFC 3339, `Z`,
/// fractional seconds only when there are some.
pub fn format_ts(ms: Millis) -> String {
    from_millis(ms).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    fn now_millis(&self) -> Millis {
        to_millis(self.now())
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct VirtualClock {
    ms: Arc<AtomicI64>,
}

impl VirtualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        VirtualClock {
            ms: Arc::new(AtomicI64::new(to_millis(start))),
        }
    }

    /// Moves the clock to `t`; a clock never goes back, so an earlier `t`
    /// is ignored.
    pub fn set(&self, t: DateTime<Utc>) {
        self.ms.fetch_max(to_millis(t), Ordering::SeqCst);
    }

    pub fn advance(&self, by: chrono::TimeDelta) {
        self.ms.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        from_millis(self.ms.load(Ordering::SeqCst))
    }

    fn now_millis(&self) -> Millis {
        self.ms.load(Ordering::SeqCst)
    }
}

/// The system clock, for `sluice run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl Clock for WallClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_moves_forward_only() {
        let start = DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
            .expect("ts")
            .with_timezone(&Utc);
        let c = VirtualClock::new(start);
        let shared = c.clone();
        c.advance(chrono::TimeDelta::hours(1));
        assert_eq!(format_ts(shared.now_millis()), "2026-03-02T10:00:00Z");
        c.set(start);
        assert_eq!(format_ts(shared.now_millis()), "2026-03-02T10:00:00Z");
        assert!(WallClock.now() > start - chrono::TimeDelta::days(36500));
    }
}
