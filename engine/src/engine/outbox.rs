//! The engine's side of the outbox: a message decided `sent` becomes an
//! [`OutboxEntry`]; its delivery result comes back as data and becomes a
//! deletion (delivered), a retry timer with backoff (transient failure), or
//! a dead letter with a `failed` line (permanent failure, or the last
//! attempt).
//!
//! With [`Delivery::Inline`] (simulate, test) the entry is handed to the
//! dispatcher at the end of the unit of work that decided it, before any
//! commit: an entry delivered at once is therefore never written, which is
//! indistinguishable from writing it and deleting it in the same commit.
//! With [`Delivery::Workers`] (run) it is written with the decision and
//! handed out once that commit is made ([`Engine::take_outbox`]).

use journeys::compiled::RetryPolicy;

use crate::clock::Millis;
use crate::dispatch::{AddressNews, DispatchError, Message};
use crate::output::{Kind, Line, Outcome};
use crate::store::outbox::{Outbox, OutboxEntry};
use crate::store::timers::{Timer, TimerKind};

use super::{Delivery, Engine, Error};

impl Engine {
    /// A message decided `sent` enters the outbox.
    pub(super) fn enqueue(
        &mut self,
        message: Message,
        category: String,
        now: Millis,
    ) -> Result<(), Error> {
        self.seq += 1;
        let entry = OutboxEntry {
            id: self.seq,
            message,
            category,
            attempts: 0,
            not_before: now,
            last_error: None,
            dead_letter: None,
        };
        match self.delivery {
            Delivery::Inline(_) => self.outbox_now.push(entry),
            Delivery::Workers => {
                self.store.batch().put_outbox(&entry)?;
                self.outbox_new.push(entry.id);
            }
        }
        Ok(())
    }

    /// Delivers the entries decided in this unit of work, inline.
    pub(super) fn deliver_inline(&mut self, now: Millis) -> Result<(), Error> {
        if self.outbox_now.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.outbox_now);
        let Delivery::Inline(dispatcher) = &mut self.delivery else {
            return Ok(());
        };
        let results: Vec<(OutboxEntry, Result<(), DispatchError>)> = entries
            .into_iter()
            .map(|e| {
                let r = dispatcher.dispatch(&e.message);
                (e, r)
            })
            .collect();
        for (entry, result) in results {
            if let Err(e) = result {
                self.attempt_failed(entry, e, now, false)?;
            }
        }
        Ok(())
    }

    /// Entries committed since the last call, for the delivery workers
    /// ([`Delivery::Workers`]). Call after a commit.
    pub fn take_outbox(&mut self) -> Result<Vec<OutboxEntry>, Error> {
        let ids = std::mem::take(&mut self.outbox_new);
        let view = self.store.view();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = view.outbox_entry(id)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Every entry in the outbox, oldest first (at start-up: what was
    /// committed but not recorded as delivered is delivered again, with the
    /// same key).
    pub fn outbox(&self, after: Option<u64>, limit: usize) -> Result<Vec<OutboxEntry>, Error> {
        Ok(self.store.view().outbox(after, limit)?)
    }

    /// A delivery worker's result for entry `id`, with what the provider
    /// learned about the user's addresses.
    pub fn delivered(
        &mut self,
        id: u64,
        result: Result<(), DispatchError>,
        news: &[AddressNews],
        now: Millis,
    ) -> Result<(), Error> {
        let Some(entry) = self.store.view().outbox_entry(id)? else {
            return Ok(());
        };
        if !news.is_empty() {
            self.address_news(&entry.message.user, news, now)?;
        }
        match result {
            Ok(()) => {
                self.delivered_ok(&entry);
                Ok(())
            }
            Err(e) => self.attempt_failed(entry, e, now, true),
        }
    }

    fn delivered_ok(&mut self, entry: &OutboxEntry) {
        let batch = self.store.batch();
        batch.delete_outbox(entry.id, false);
        if let Some((at, seq)) = entry.dead_letter {
            batch.delete_dead_letter(at, seq);
        }
    }

    /// A retry timer fired: the entry is tried again.
    pub(super) fn retry_due(&mut self, id: u64, now: Millis) -> Result<(), Error> {
        let Some(entry) = self.store.view().outbox_entry(id)? else {
            return Ok(());
        };
        match &mut self.delivery {
            Delivery::Workers => {
                self.outbox_new.push(id);
                Ok(())
            }
            Delivery::Inline(dispatcher) => match dispatcher.dispatch(&entry.message) {
                Ok(()) => {
                    self.delivered_ok(&entry);
                    Ok(())
                }
                Err(e) => self.attempt_failed(entry, e, now, true),
            },
        }
    }

    /// A failed attempt: a retry with backoff while attempts remain and
    /// the failure is transient, else a dead letter and a `failed` line.
    fn attempt_failed(
        &mut self,
        mut entry: OutboxEntry,
        error: DispatchError,
        now: Millis,
        stored: bool,
    ) -> Result<(), Error> {
        entry.attempts += 1;
        entry.last_error = Some(error.message.clone());
        let policy = self.config.project.retry;
        if error.retriable && entry.attempts < policy.max_attempts {
            let delay = backoff(&policy, &entry.message.key, entry.attempts)
                .max(error.retry_after.unwrap_or(0));
            entry.not_before = now.saturating_add(delay.max(1));
            let key = self.timer_key(entry.not_before);
            self.store.set_timer(
                key,
                Timer {
                    user: entry.message.user.clone(),
                    kind: TimerKind::Retry { outbox: entry.id },
                },
            );
            self.store.batch().put_outbox(&entry)?;
            return Ok(());
        }
        self.store.batch().delete_outbox(entry.id, !stored);
        let m = &entry.message;
        let reason = format!("delivery:{}", error.message);
        let letter = serde_json::json!({
            "at": crate::clock::format_ts(now),
            "user": m.user,
            "journey": m.journey,
            "version": m.version,
            "step": m.step,
            "channel": m.channel.as_str(),
            "template": m.template,
            "key": m.key,
            "reason": reason,
            "attempts": entry.attempts,
            "category": entry.category,
            "message": m,
        });
        let (at, seq) = match entry.dead_letter {
            Some(existing) => existing,
            None => {
                self.seq += 1;
                (now, self.seq)
            }
        };
        match serde_json::to_vec(&letter) {
            Ok(bytes) => self.store.batch().put_dead_letter(at, seq, bytes),
            Err(e) => tracing::error!("cannot record a dead letter: {e}"),
        }
        let mut line = Line::new(now, Kind::Send, &m.user, &m.journey);
        line.version = Some(m.version);
        line.step = Some(m.step.clone());
        line.channel = Some(m.channel.as_str());
        line.template = Some(m.template.clone());
        line.outcome = Some(Outcome::Failed);
        line.reason = Some(reason);
        line.key = Some(m.key.clone());
        self.emit(line);
        Ok(())
    }
}

/// Exponential backoff with full jitter: attempt `n` (1-based) waits a
/// uniformly spread time in `[0, min(max, initial × 2^(n−1))]`. The spread
/// comes from the message key and the attempt, so a replay of the same
/// failures waits the same times (simulate stays deterministic) while
/// different messages spread out.
pub fn backoff(policy: &RetryPolicy, key: &str, attempt: u32) -> Millis {
    let initial = policy.initial.millis().max(1);
    let cap = policy.max.millis().max(initial);
    let exp = initial.saturating_mul(1i64 << attempt.saturating_sub(1).min(40));
    let ceiling = exp.min(cap);
    // FNV-1a over the key and the attempt.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(attempt.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's last bytes barely reach the high bits: mix them (murmur3's
    // finaliser) so that each attempt of each key gets its own fraction
    // (without it, some keys retried every few ms).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    let fraction = (h >> 11) as f64 / (1u64 << 53) as f64;
    (ceiling as f64 * fraction).round() as Millis
}

#[cfg(test)]
mod tests {
    use super::*;
    use journeys::scalar::Duration;

    #[test]
    fn backoff_stays_under_its_exponential_ceiling() {
        let p = RetryPolicy {
            max_attempts: 8,
            initial: Duration(1),
            max: Duration(600),
        };
        for attempt in 1..=20 {
            let ceiling = (1000i64 << (attempt - 1).min(40)).min(600_000);
            for k in 0..50 {
                let d = backoff(&p, &format!("key-{k}"), attempt);
                assert!((0..=ceiling).contains(&d), "attempt {attempt}: {d}");
            }
        }
        // Spread, and the same for the same key and attempt.
        let a = backoff(&p, "a", 5);
        assert_eq!(a, backoff(&p, "a", 5));
        let distinct: std::collections::BTreeSet<_> =
            (0..50).map(|k| backoff(&p, &format!("k{k}"), 5)).collect();
        assert!(distinct.len() > 40);
    }
}
