//! What the service asks of the single writer besides events and timers:
//! a user's view (`inspect`), erasure, the dead-letter queue and its
//! replay, a profile change (one-click unsubscribe), and reports read a
//! page at a time.

use crate::store::attrs::Val;
use serde_json::{json, Value};

use crate::clock::{format_ts, Millis};
use crate::dispatch::AddressNews;
use crate::store::messages::Messages;
use crate::store::outbox::OutboxEntry;
use crate::store::recipients::Recipients;
use crate::store::users;

use super::{Engine, Error, Step};
use crate::report::Tally;

/// Which dead letters to re-queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    One(u64),
    All,
}

impl Engine {
    /// When the next timer is due.
    pub fn next_due(&mut self) -> Result<Option<Millis>, Error> {
        Ok(self.store.next_due()?)
    }

    /// What `sluice inspect user` prints (RUN.md §5); `None` when unknown.
    pub fn inspect(&mut self, id: &str) -> Result<Option<Value>, Error> {
        let Some(rec) = self.user(id)? else {
            return Ok(None);
        };
        let instances: Vec<Value> = rec
            .instances
            .iter()
            .map(|i| {
                json!({
                    "journey": i.journey,
                    "version": i.version,
                    "step": i.step,
                    "entered_at": format_ts(i.entered_at),
                    "holdout": i.holdout,
                    "waiting_until": i.timer.map(|t| format_ts(t.due)),
                })
            })
            .collect();
        let mut messages = self.store.view().user_messages(id, 100)?;
        messages.reverse();
        // The log is append-only: a delivery that failed for good adds a
        // `failed` line after the message's `sent` one, and a replayed
        // letter that is delivered adds a `sent` line after that (its
        // `reason` names the earlier failure). The latest of a key's
        // `sent`/`failed` lines is its outcome (RUN.md §3, §5): the earlier
        // ones are left out. `deferred` and `suppressed` lines stay.
        let mut seen = std::collections::HashSet::new();
        let latest: Vec<bool> = messages
            .iter()
            .map(|m| {
                let settled = m["outcome"] == "sent" || m["outcome"] == "failed";
                match m.get("key").and_then(Value::as_str) {
                    Some(k) if settled => seen.insert(k),
                    _ => true,
                }
            })
            .collect();
        let superseded = |i: usize| !latest[i];
        let messages: Vec<Value> = messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !superseded(*i))
            .map(|(_, m)| {
                json!({
                    "at": m["at"], "journey": m["journey"], "step": m["step"],
                    "channel": m["channel"], "outcome": m["outcome"],
                    "reason": m.get("reason").cloned().unwrap_or(Value::Null),
                    "key": m.get("key").cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        Ok(Some(json!({
            "user": id,
            "profile": rec.profile,
            "instances": instances,
            "messages": messages,
        })))
    }

    /// A user's timeline for the console: what `inspect` shows, with the
    /// user's recent events (the bounded history the record keeps) and
    /// their entries per journey. `None` when unknown.
    pub fn timeline(&mut self, id: &str) -> Result<Option<Value>, Error> {
        let Some(mut view) = self.inspect(id)? else {
            return Ok(None);
        };
        let Some(rec) = self.user(id)? else {
            return Ok(None);
        };
        let events: Vec<Value> = rec
            .history
            .iter()
            .map(|e| json!({"at": format_ts(e.ts), "event": e.name, "properties": e.props}))
            .collect();
        let journeys: Vec<Value> = rec
            .journeys
            .iter()
            .map(|b| {
                json!({
                    "journey": b.journey,
                    "entries": b.entries,
                    "last_entered": b.last_entered.map(format_ts),
                    "last_ended": b.last_ended.map(format_ts),
                })
            })
            .collect();
        if let Some(m) = view.as_object_mut() {
            m.insert("events".into(), Value::Array(events));
            m.insert("journeys".into(), Value::Array(journeys));
        }
        Ok(Some(view))
    }

    /// Erases a user: profile, history, live instances (their timers
    /// cancelled), dedupe keys, message log, index entries, undelivered
    /// outbox entries and the record of whom their messages went to. `false` when the user is unknown.
    pub fn erase(&mut self, id: &str) -> Result<bool, Error> {
        let t = self.store.take_user(id)?;
        if !t.known {
            return Ok(false);
        }
        for inst in &t.rec.instances {
            if let Some(k) = inst.timer {
                self.store.cancel_timer(k);
            }
        }
        if let Some(k) = t.rec.reevaluate {
            self.store.cancel_timer(k);
        }
        self.tally
            .moved(&crate::store::tally::positions(&t.rec), &[]);
        let view = self.store.view();
        for line in view.user_messages(id, usize::MAX)? {
            self.tally.erased(&line);
        }
        let mut logged = view.user_message_keys(id)?;
        logged.extend(view.recipient_keys(id)?);
        let letters = view.user_dead_letter_keys(id)?;
        self.depths_pending.dead_letters -= letters.len() as i64;
        logged.extend(letters);
        let mut outbox: Vec<(u64, journeys::compiled::Channel)> = Vec::new();
        let mut after = None;
        loop {
            let page = crate::store::outbox::Outbox::outbox(&view, after, 1_000)?;
            let Some(last) = page.last().map(|e| e.id) else {
                break;
            };
            outbox.extend(
                page.iter()
                    .filter(|e| e.message.user == id)
                    .map(|e| (e.id, e.message.channel)),
            );
            after = Some(last);
        }
        for (_, channel) in &outbox {
            self.depths_pending.add_outbox(*channel, -1);
        }
        let batch = self.store.batch();
        for k in logged {
            batch.delete(k);
        }
        for (o, _) in outbox {
            batch.delete_outbox(o, false);
        }
        if !t.rec.zone.is_empty() {
            batch.delete_zone(&t.rec.zone, id);
        }
        for s in &t.rec.audiences {
            batch.delete_audience(s, &t.rec.zone, id);
        }
        batch.delete_blob(users::key(id));
        self.store.forget_user(id);
        Ok(true)
    }

    /// Reads the next page of a report (what is committed and what the
    /// next commit holds); `false` once read to the end.
    pub fn report_step(&self, tally: &mut Tally) -> Result<bool, Error> {
        Ok(tally.step(&self.store.view(), crate::report::PAGE)?)
    }

    /// The finished report as JSON; the inner `Err` names an unknown
    /// journey.
    pub fn report_finish(&self, tally: Tally) -> Result<Result<Value, String>, Error> {
        match tally.finish(&self.config) {
            Ok(r) => Ok(Ok(r.to_json())),
            Err(crate::report::Error::UnknownJourney(j)) => {
                Ok(Err(crate::report::Error::UnknownJourney(j).to_string()))
            }
            Err(crate::report::Error::Store(e)) => Err(e.into()),
        }
    }

    /// Dead letters, oldest first, each with its `id` (RUN.md §4).
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<Value>, Error> {
        Ok(self.store.view().dead_letter_entries(limit)?)
    }

    /// Re-queues dead letters of failed deliveries with their keys; a
    /// replayed message that is delivered leaves the queue. Render
    /// failures cannot be replayed (their instance moved on; fix the
    /// template). Returns how many were re-queued.
    pub fn replay(&mut self, which: Replay, now: Millis) -> Result<usize, Error> {
        let letters = self.store.view().dead_letter_entries(usize::MAX)?;
        let mut n = 0;
        for l in letters {
            let id = l["id"].as_u64().unwrap_or(0);
            if which != Replay::All && which != Replay::One(id) {
                continue;
            }
            let Some(message) = l.get("message").cloned() else {
                continue;
            };
            let message = match serde_json::from_value(message) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("dead letter {id} cannot be replayed: {e}");
                    continue;
                }
            };
            let at = l["at_ms"].as_i64().unwrap_or(now);
            self.seq += 1;
            let entry = OutboxEntry {
                id: self.seq,
                message,
                category: l["category"].as_str().unwrap_or("").to_owned(),
                attempts: 0,
                not_before: now,
                last_error: None,
                dead_letter: Some((at, id)),
            };
            let batch = self.store.batch();
            batch.put_outbox(&entry)?;
            // Written again: the same key, whatever an older version kept.
            super::outbox::remember_recipient(batch, &entry)?;
            self.depths_pending.add_outbox(entry.message.channel, 1);
            self.outbox_new.push(entry.id);
            n += 1;
        }
        Ok(n)
    }

    /// Applies what a provider learned about `user`'s addresses
    /// (RUN.md §3): a bounced email address gets `email_status: bounced`
    /// while the profile still holds it; a push token that is gone leaves
    /// `push_tokens`. Each change is a profile change at `now`, as an
    /// `identify` would make it.
    pub fn address_news(
        &mut self,
        user: &str,
        news: &[AddressNews],
        now: Millis,
    ) -> Result<(), Error> {
        for n in news {
            let Some(rec) = self.user(user)? else {
                return Ok(());
            };
            match n {
                AddressNews::EmailBounced { address } => {
                    let current = rec.profile.get("email").and_then(Val::as_str);
                    if current.is_some_and(|c| c.eq_ignore_ascii_case(address))
                        && rec.profile.get("email_status").and_then(Val::as_str) != Some("bounced")
                    {
                        self.unit(user, now, Step::Set("email_status", json!("bounced")))?;
                    }
                }
                AddressNews::PushTokenGone { token } => {
                    let Some(tokens) = rec.profile.get("push_tokens").and_then(Val::as_array)
                    else {
                        continue;
                    };
                    if tokens.iter().any(|t| t.as_str() == Some(token)) {
                        let kept: Vec<Value> = tokens
                            .iter()
                            .filter(|t| t.as_str() != Some(token))
                            .map(Val::to_json)
                            .collect();
                        self.unit(user, now, Step::Set("push_tokens", Value::Array(kept)))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets one profile path (e.g. `subscriptions.marketing` to `false`)
    /// at `now`, as an `identify` would: segments are re-evaluated.
    pub fn set_profile(
        &mut self,
        user: &str,
        path: &str,
        value: Value,
        now: Millis,
    ) -> Result<bool, Error> {
        if self.user(user)?.is_none() {
            return Ok(false);
        }
        self.unit(user, now, Step::Set(path, value))?;
        Ok(true)
    }
}
