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

use journeys::compiled::Channel;

use crate::clock::Millis;
use crate::deliver::Backoff;
use crate::dispatch::{AddressNews, DispatchError, Message};
use crate::output::{Kind, Line, Outcome};
use crate::store::outbox::{Outbox, OutboxEntry};
use crate::store::recipients::Recipient;
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
                let batch = self.store.batch();
                batch.put_outbox(&entry)?;
                remember_recipient(batch, &entry)?;
                self.depths_pending.add_outbox(entry.message.channel, 1);
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
        self.learn_categories(&out);
        Ok(out)
    }

    /// Every entry in the outbox, oldest first (at start-up: what was
    /// committed but not recorded as delivered is delivered again, with the
    /// same key).
    pub fn outbox(&self, after: Option<u64>, limit: usize) -> Result<Vec<OutboxEntry>, Error> {
        let out = self.store.view().outbox(after, limit)?;
        self.learn_categories(&out);
        Ok(out)
    }

    /// Tells the unsubscribe signer the category each entry was committed
    /// with, before the entries reach the providers: the `List-Unsubscribe`
    /// of a journey deployed while the service runs then names the same
    /// category as its templates' `message.unsubscribe_url` (RUN.md §3).
    fn learn_categories(&self, entries: &[OutboxEntry]) {
        if let Some(signer) = &self.signer {
            for e in entries {
                signer.learn(&e.message.journey, e.message.version, &e.category);
            }
        }
    }

    /// A delivery worker's result for entry `id`, with what the provider
    /// learned about the user's addresses. Says what was recorded (`None`
    /// when the entry is gone: its user was erased meanwhile).
    pub fn delivered(
        &mut self,
        id: u64,
        result: Result<(), DispatchError>,
        news: &[AddressNews],
        now: Millis,
    ) -> Result<Option<Recorded>, Error> {
        let Some(entry) = self.store.view().outbox_entry(id)? else {
            return Ok(None);
        };
        if !news.is_empty() {
            self.address_news(&entry.message.user, news, now)?;
        }
        match result {
            Ok(()) => {
                self.delivered_ok(&entry, now)?;
                Ok(Some(Recorded::Ok))
            }
            Err(e) => self.attempt_failed(entry, e, now, true).map(Some),
        }
    }

    fn delivered_ok(&mut self, entry: &OutboxEntry, now: Millis) -> Result<(), Error> {
        self.depths_pending.add_outbox(entry.message.channel, -1);
        if let Some((at, seq)) = entry.dead_letter {
            // Two replays of one letter may both succeed: count it once.
            if crate::store::messages::Messages::has_dead_letter(&self.store.view(), at, seq)? {
                self.depths_pending.dead_letters -= 1;
                self.log_replayed(entry, now)?;
            }
        }
        let batch = self.store.batch();
        batch.delete_outbox(entry.id, false);
        if let Some((at, seq)) = entry.dead_letter {
            batch.delete_dead_letter(at, seq);
        }
        Ok(())
    }

    /// A replayed dead letter was delivered: the user's message log gets a
    /// `sent` line for its key, after the `failed` one, so `inspect` and
    /// the console read `sent` (the latest line of a key wins), with the
    /// earlier failure in its `reason`. The line is marked `replayed`: it
    /// is a delivery, not a decision, so neither the per-step counters
    /// (`store::tally`, which recount the log) nor the report journal nor
    /// `sluice_sends_total` count it (docs/report.md).
    fn log_replayed(&mut self, entry: &OutboxEntry, now: Millis) -> Result<(), Error> {
        let m = &entry.message;
        let failed = crate::store::messages::Messages::user_messages(
            &self.store.view(),
            &m.user,
            usize::MAX,
        )?
        .into_iter()
        .rev()
        .find(|l| l["key"] == m.key.as_str() && l["outcome"] == "failed")
        .and_then(|l| l.get("reason").and_then(|r| r.as_str()).map(str::to_owned));
        let reason = match failed {
            Some(r) => format!("{REPLAYED}; failed before: {r}"),
            None => REPLAYED.to_owned(),
        };
        let line = send_line(m, now, Outcome::Sent, reason);
        let mut json = match serde_json::to_value(&line) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("cannot log a replayed delivery: {e}");
                return Ok(());
            }
        };
        json[crate::store::tally::REPLAYED_MARK] = serde_json::Value::Bool(true);
        match serde_json::to_vec(&json) {
            Ok(bytes) => {
                self.seq += 1;
                self.store
                    .batch()
                    .log_message(&m.user, now, self.seq, bytes);
            }
            Err(e) => tracing::error!("cannot log a replayed delivery: {e}"),
        }
        Ok(())
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
                Ok(()) => self.delivered_ok(&entry, now),
                Err(e) => self.attempt_failed(entry, e, now, true).map(|_| ()),
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
    ) -> Result<Recorded, Error> {
        entry.attempts += 1;
        entry.last_error = Some(error.message.clone());
        if let Some((at, seq)) = entry.dead_letter {
            if !crate::store::messages::Messages::has_dead_letter(&self.store.view(), at, seq)? {
                // A replayed letter whose letter is gone: another copy of
                // it (`sluice dlq replay` twice) was delivered meanwhile,
                // under the same key. The message went out; this copy's
                // failure (a receiver refusing a repeated key, say) neither
                // puts it back in the queue nor marks it failed, and it is
                // not tried again.
                self.store.batch().delete_outbox(entry.id, !stored);
                if stored {
                    self.depths_pending.add_outbox(entry.message.channel, -1);
                }
                tracing::info!(
                    key = %entry.message.key,
                    "a replayed copy failed after another copy of its key was delivered; dropped"
                );
                return Ok(Recorded::Ok);
            }
        }
        let policy = self.config.project.retry;
        if error.retriable && entry.attempts < policy.max_attempts {
            let delay = Backoff::from_policy(&policy).delay(&entry.message.key, entry.attempts);
            let delay = i64::try_from(delay.as_millis())
                .unwrap_or(i64::MAX)
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
            if !stored {
                self.depths_pending.add_outbox(entry.message.channel, 1);
            }
            return Ok(Recorded::Retry);
        }
        self.store.batch().delete_outbox(entry.id, !stored);
        if stored {
            self.depths_pending.add_outbox(entry.message.channel, -1);
        }
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
                self.depths_pending.dead_letters += 1;
                (now, self.seq)
            }
        };
        match serde_json::to_vec(&letter) {
            Ok(bytes) => self.store.batch().put_dead_letter(at, seq, bytes),
            Err(e) => tracing::error!("cannot record a dead letter: {e}"),
        }
        let mut line = send_line(m, now, Outcome::Failed, reason);
        // The message log and the dead letter keep the provider's answer;
        // the decision's log line does not (RUN.md §6).
        line.logged_reason = error.summary.map(|s| format!("delivery:{s}"));
        self.emit(line);
        Ok(Recorded::Dead)
    }
}

/// The `send` line of a delivery's outcome for the message `m`.
fn send_line(m: &Message, now: Millis, outcome: Outcome, reason: String) -> Line {
    let mut line = Line::new(now, Kind::Send, &m.user, &m.journey);
    line.version = Some(m.version);
    line.step = Some(m.step.clone());
    line.channel = Some(m.channel.as_str());
    line.template = Some(m.template.clone());
    line.outcome = Some(outcome);
    line.reason = Some(reason);
    line.key = Some(m.key.clone());
    line
}

/// How the `sent` line of a delivered replay begins its `reason`.
pub const REPLAYED: &str = "replayed";

/// What a delivery result was recorded as: the `result` label of
/// `sluice_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Delivered: the entry left the outbox (also a replayed copy that
    /// failed after another copy of its key was delivered).
    Ok,
    /// A transient failure: a retry timer is set.
    Retry,
    /// A permanent failure or the last attempt: a dead letter.
    Dead,
}

impl Recorded {
    pub fn as_str(self) -> &'static str {
        match self {
            Recorded::Ok => "ok",
            Recorded::Retry => "retry",
            Recorded::Dead => "dead",
        }
    }
}
/// Records, in the commit that puts a message in the outbox, what
/// feedback will need of it. Only email comes back as feedback naming its
/// key (its `Message-ID`, docs/feedback.md): an email records its
/// recipient by key and its category under the user. A push message
/// records only its category under the user (a complaint unsubscribes
/// every category the user received, RUN.md §3). A webhook goes to a
/// system, not to the user, and records nothing: two sled keys per message
/// that nothing would read.
pub(super) fn remember_recipient(
    batch: &mut crate::store::Batch,
    entry: &OutboxEntry,
) -> Result<(), Error> {
    match entry.message.channel {
        Channel::Email => batch.put_recipient(&entry.message.key, &recipient(entry))?,
        Channel::Push => {
            batch.put_received(&entry.message.user, &entry.message.key, &entry.category)
        }
        Channel::Webhook => {}
    }
    Ok(())
}

/// Who an entry's message goes to, for matching feedback by its key.
fn recipient(entry: &OutboxEntry) -> Recipient {
    let m = &entry.message;
    Recipient {
        user: m.user.clone(),
        journey: m.journey.clone(),
        category: entry.category.clone(),
        channel: m.channel,
        at: m.at,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use journeys::event::Event;
    use serde_json::{json, Value};

    use crate::dispatch::DispatchError;
    use crate::engine::{Engine, Replay};

    fn engine(dir: &Path) -> (Engine, i64) {
        crate::engine::fixture::open("feedback", dir)
    }

    fn event(engine: &mut Engine, now: i64, id: &str, mut v: Value) {
        v["id"] = json!(id);
        v["ts"] = json!(crate::clock::format_ts(now));
        let ev = Event::from_line(&v.to_string()).expect("event");
        engine.ingest(&ev).expect("ingest");
        engine.run_due(now).expect("due");
    }

    /// u1 signs up with an address and orders: the committed, handed-out
    /// `promo` email.
    fn promo_email(e: &mut Engine, now: i64) -> crate::store::outbox::OutboxEntry {
        event(
            e,
            now,
            "e1",
            json!({"type": "identify", "user": "u1", "traits": {"email": "u1@x.io"}}),
        );
        event(
            e,
            now + 1_000,
            "e2",
            json!({"type": "track", "user": "u1", "event": "ordered"}),
        );
        e.commit().expect("commit");
        e.take_outbox()
            .expect("outbox")
            .into_iter()
            .find(|x| x.message.journey == "promo")
            .expect("the promo email")
    }

    fn refused(message: &str) -> DispatchError {
        DispatchError {
            retriable: false,
            message: message.into(),
            retry_after: None,
            summary: None,
        }
    }

    /// `sluice dlq replay` twice (RUN.md §4): two copies go out with the
    /// same key. Once one is delivered the letter leaves the queue for
    /// good: the other copy failing afterwards (a receiver refusing the
    /// repeated key) does not put the delivered message back, nor add a
    /// second `failed` line.
    #[test]
    fn a_letter_replayed_twice_stays_out_once_one_copy_is_delivered() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut e, now) = engine(dir.path());
        let first = promo_email(&mut e, now);
        let t = now + 2_000;
        // Permanent: straight into the queue.
        e.delivered(first.id, Err(refused("HTTP 410 Gone")), &[], t)
            .expect("record");
        e.commit().expect("commit");
        let letters = e.dead_letters(10).expect("dlq");
        assert_eq!(letters.len(), 1, "{letters:?}");
        let id = letters[0]["id"].as_u64().expect("id");
        let promo_lines = |e: &mut Engine| {
            e.inspect("u1").expect("inspect").expect("known")["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .filter(|m| m["journey"] == "promo")
                .count()
        };
        let lines = promo_lines(&mut e);

        assert_eq!(e.replay(Replay::One(id), t).expect("replay"), 1);
        assert_eq!(e.replay(Replay::One(id), t).expect("replay"), 1);
        e.commit().expect("commit");
        let copies = e.take_outbox().expect("outbox");
        assert_eq!(copies.len(), 2);
        assert_eq!(copies[0].message.key, copies[1].message.key);

        let recorded = e.delivered(copies[0].id, Ok(()), &[], t + 1).expect("ok");
        assert_eq!(recorded, Some(super::Recorded::Ok));
        e.commit().expect("commit");
        assert!(e.dead_letters(10).expect("dlq").is_empty());
        let recorded = e
            .delivered(
                copies[1].id,
                Err(refused("HTTP 409 Conflict: repeated key")),
                &[],
                t + 2,
            )
            .expect("recorded");
        e.commit().expect("commit");
        assert_eq!(recorded, Some(super::Recorded::Ok));
        assert!(
            e.dead_letters(10).expect("dlq").is_empty(),
            "back in the queue"
        );
        assert_eq!(promo_lines(&mut e), lines, "a second failed line");
        let key = &copies[0].message.key;
        assert!(!e
            .outbox(None, 10)
            .expect("outbox")
            .iter()
            .any(|x| &x.message.key == key));
    }

    /// A replayed letter that is delivered reads `sent` in `inspect` (the
    /// latest line of its key wins), with the earlier failure in its
    /// `reason`; the per-step counters, kept and recounted from the log,
    /// still say one `sent` and one `failed` (a delivery is not a decision).
    #[test]
    fn a_replayed_letter_that_is_delivered_reads_sent_and_counts_do_not_move() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut e, now) = engine(dir.path());
        let first = promo_email(&mut e, now);
        let key = first.message.key.clone();
        let t = now + 2_000;
        e.delivered(first.id, Err(refused("HTTP 503 busy")), &[], t)
            .expect("record");
        e.commit().expect("commit");
        let promo = |e: &mut Engine| -> Vec<Value> {
            e.inspect("u1").expect("inspect").expect("known")["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .filter(|m| m["key"] == key.as_str())
                .cloned()
                .collect()
        };
        let before = promo(&mut e);
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0]["outcome"], "failed");
        let promo_counts = |c: &std::collections::BTreeMap<_, crate::store::tally::Counts>| {
            let (_, c) = c
                .iter()
                .find(|(k, _)| format!("{k:?}").contains("promo"))
                .expect("promo counted");
            (c.sent, c.failed)
        };
        let counts = |e: &Engine| promo_counts(e.tally().counts());
        assert_eq!(counts(&e), (1, 1));

        let id = e.dead_letters(10).expect("dlq")[0]["id"]
            .as_u64()
            .expect("id");
        assert_eq!(e.replay(Replay::One(id), t).expect("replay"), 1);
        e.commit().expect("commit");
        let copy = e.take_outbox().expect("outbox").remove(0);
        e.delivered(copy.id, Ok(()), &[], t + 5_000).expect("ok");
        e.commit().expect("commit");

        let after = promo(&mut e);
        assert_eq!(after.len(), 1, "one line per key: {after:?}");
        assert_eq!(after[0]["outcome"], "sent", "{after:?}");
        assert_eq!(
            after[0]["reason"],
            "replayed; failed before: delivery:HTTP 503 busy"
        );
        assert_eq!(after[0]["at"], crate::clock::format_ts(t + 5_000));
        assert_eq!(counts(&e), (1, 1), "a delivery is not a decision");
        let recounted = crate::store::tally::rebuild(e.store.store()).expect("recount");
        assert_eq!(
            promo_counts(recounted.counts()),
            (1, 1),
            "the recount from the log agrees"
        );
    }
}
