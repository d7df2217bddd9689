//! The engine shell: it owns the store, the policies, the dispatcher and
//! the clock, feeds events and timers to the pure transitions of
//! [`crate::machine`], and applies the effects they return. `simulate`,
//! `test` and `run` differ only in the clock, the store's location and the
//! dispatcher.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use journeys::compiled::{Config, Trigger};
use journeys::event::Event;
use journeys::scalar::Zone;
use journeys::template::RenderError;

use crate::calendar;
use crate::clock::{from_millis, to_millis, Clock, Millis};
use crate::dispatch::{Dispatcher, Message, MessageRenderer};
use crate::hash;
use crate::index::Index;
use crate::machine::event::Ingested;
use crate::machine::send::{self, Due};
use crate::machine::{entry, event, instance, segments, Ctx, Effect};
use crate::output::{Kind, Line, Sink, Summary};
use crate::policy::{Decision, Outgoing, Policies, SentRecord};
use crate::store::audiences::Audiences;
use crate::store::buffer::{BufferStats, Taken};
use crate::store::timers::{Timer, TimerKey, TimerKind};
use crate::store::users::UserRecord;
use crate::store::users::Users;
use crate::store::zones::Zones;
use crate::store::{self, meta, Buffered, Store};

/// What can go wrong while running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether holdouts apply (`ignore_holdouts: true` in a JourneyTest
    /// turns them off).
    pub holdouts: bool,
    /// Users kept in the write-back cache.
    pub cache_users: usize,
    /// Commit once this many writes are pending.
    pub commit_every: usize,
    /// Base of `message.unsubscribe_url` (the run API's address).
    pub unsubscribe_base: String,
    /// Whether every `send` decision is written to the message log
    /// (`simulate` prints them instead, unless it keeps its store).
    pub log_messages: bool,
    /// Whether every periodic commit is a restart point. A store that is
    /// never reopened (a simulation's temporary one) only spills what
    /// bounds memory, and writes hot records once, at the end.
    pub durable: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            holdouts: true,
            cache_users: 30_000,
            commit_every: 50_000,
            unsubscribe_base: "http://127.0.0.1:8080/v1/unsubscribe".to_owned(),
            log_messages: true,
            durable: true,
        }
    }
}

/// The schedules' cursors, persisted in the meta table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Schedules {
    /// Every effective zone of a known user (for `timezone: user`).
    zones: BTreeSet<String>,
    /// "journey\0zone" → (cron source, pending timer).
    timers: BTreeMap<String, (String, TimerKey)>,
}

pub struct Engine {
    config: Arc<Config>,
    index: Arc<Index>,
    store: Buffered,
    policies: Policies,
    dispatcher: Box<dyn Dispatcher>,
    clock: Arc<dyn Clock>,
    sink: Box<dyn Sink + Send>,
    options: Options,
    seq: u64,
    schedules: Schedules,
    summary: Summary,
    renderer: MessageRenderer,
}

fn decode_meta<T: for<'de> Deserialize<'de>>(bytes: Option<Vec<u8>>) -> Result<Option<T>, Error> {
    Ok(bytes
        .map(|b| store::codec::decode("meta", &b))
        .transpose()?)
}

impl Engine {
    /// Opens the engine on `store`, restoring the sequence, the policies'
    /// ledgers and the schedules, and arming the schedules' timers.
    pub fn open(
        config: Arc<Config>,
        store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
        dispatcher: Box<dyn Dispatcher>,
        sink: Box<dyn Sink + Send>,
        options: Options,
    ) -> Result<Engine, Error> {
        let buffered = Buffered::new(store, options.cache_users);
        let seq: u64 = decode_meta(buffered.meta(meta::SEQ)?)?.unwrap_or(0);
        let schedules: Schedules =
            decode_meta(buffered.meta(meta::SCHEDULES)?)?.unwrap_or_default();
        let mut policies = Policies::new(&config);
        if let Some(bytes) = buffered.meta(meta::POLICIES)? {
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                policies.restore(&v);
            }
        }
        let mut engine = Engine {
            index: Arc::new(Index::new(&config)),
            renderer: MessageRenderer::new(&config),
            config,
            store: buffered,
            policies,
            dispatcher,
            clock,
            sink,
            options,
            seq,
            schedules,
            summary: Summary::default(),
        };
        engine.arm_schedules(None)?;
        Ok(engine)
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn store_stats(&self) -> BufferStats {
        self.store.stats
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// A user's current record (for `inspect` and tests).
    pub fn user(&mut self, id: &str) -> Result<Option<UserRecord>, Error> {
        let t = self.store.take_user(id)?;
        let out = t.known.then(|| t.rec.clone());
        if t.known {
            self.store.put_user(id.to_owned(), t.rec, t.dirty, false)?;
        }
        Ok(out)
    }

    /// Makes sure every schedule has its timer: for a fixed zone one, for
    /// `timezone: user` one per known zone (only `zone` when given).
    fn arm_schedules(&mut self, only_zone: Option<&str>) -> Result<(), Error> {
        let now = self.clock.now_millis();
        let config = Arc::clone(&self.config);
        let index = Arc::clone(&self.index);
        for &j in &index.schedules {
            let journey = &config.journeys[j];
            let Trigger::Schedule {
                cron, source, zone, ..
            } = &journey.entry.trigger
            else {
                continue;
            };
            let zones: Vec<String> = match zone {
                Zone::Fixed(tz) => vec![tz.name().to_owned()],
                Zone::User => match only_zone {
                    Some(z) => vec![z.to_owned()],
                    None => self.schedules.zones.iter().cloned().collect(),
                },
            };
            for z in zones {
                let name = format!("{}\0{z}", journey.id);
                if self
                    .schedules
                    .timers
                    .get(&name)
                    .is_some_and(|(s, _)| s == source)
                {
                    continue;
                }
                if let Some((_, old)) = self.schedules.timers.remove(&name) {
                    self.store.cancel_timer(old);
                }
                let Ok(tz) = z.parse::<chrono_tz::Tz>() else {
                    continue;
                };
                if let Some(due) = calendar::next_cron(cron, tz, now) {
                    let key = self.timer_key(due);
                    let timer = Timer {
                        user: String::new(),
                        kind: TimerKind::Schedule {
                            journey: journey.id.clone(),
                            zone: z.clone(),
                        },
                    };
                    self.store.set_timer(key, timer);
                    self.schedules.timers.insert(name, (source.clone(), key));
                }
            }
        }
        Ok(())
    }

    fn timer_key(&mut self, due: Millis) -> TimerKey {
        self.seq += 1;
        TimerKey { due, seq: self.seq }
    }

    /// Applies an event at its own `ts`. Timers due at or before it should
    /// have run first ([`Engine::run_due`]).
    pub fn ingest(&mut self, ev: &Event) -> Result<Ingested, Error> {
        self.event(ev, false)
    }

    /// Applies an event to the profile and history only (events before a
    /// simulation's start): no journey reacts.
    pub fn import(&mut self, ev: &Event) -> Result<Ingested, Error> {
        self.event(ev, true)
    }

    fn event(&mut self, ev: &Event, import: bool) -> Result<Ingested, Error> {
        let config = Arc::clone(&self.config);
        let index = Arc::clone(&self.index);
        let now = to_millis(ev.ts);
        let mut t = self.store.take_user(&ev.user)?;
        if !t.known {
            self.summary.users += 1;
        }
        let mut seq = self.seq;
        let mut ctx = Ctx::new(&config, &index, now, self.options.holdouts, &mut seq);
        let result = event::on_event(&mut ctx, &mut t.rec, ev, import);
        settle(&mut ctx, &mut t.rec, !import);
        let effects = std::mem::take(&mut ctx.effects);
        let touched = ctx.touched;
        drop(ctx);
        self.seq = seq;
        self.summary.events += 1;
        let dirty = result == Ingested::Applied;
        if !dirty {
            self.summary.duplicates += 1;
        }
        self.finish_unit(&ev.user, t, now, effects, dirty, touched)?;
        Ok(result)
    }

    /// Applies effects and returns the user to the cache.
    fn finish_unit(
        &mut self,
        id: &str,
        mut t: Taken,
        now: Millis,
        effects: Vec<Effect>,
        changed: bool,
        touched: bool,
    ) -> Result<(), Error> {
        let dirty = t.dirty || changed || !effects.is_empty();
        for e in effects {
            match e {
                Effect::Line(line) => self.emit(line),
                Effect::SetTimer(key, kind) => self.store.set_timer(
                    key,
                    Timer {
                        user: id.to_owned(),
                        kind,
                    },
                ),
                Effect::CancelTimer(key) => self.store.cancel_timer(key),
            }
        }
        let indexed = self.index.user_zone_schedules || !self.index.audiences.is_empty();
        if indexed && (touched || (dirty && t.rec.zone.is_empty())) {
            self.reindex(id, &mut t.rec, now)?;
        }
        if dirty || t.known {
            self.store.put_user(id.to_owned(), t.rec, dirty, !t.known)?;
        }
        Ok(())
    }

    /// Keeps the zones and audiences indexes in step with the user's zone
    /// and schedule-segment memberships.
    fn reindex(&mut self, id: &str, rec: &mut UserRecord, now: Millis) -> Result<(), Error> {
        let zone = calendar::user_zone(&rec.profile, self.config.project.default_timezone).name();
        let members: Vec<String> = {
            let scope = crate::scope::UserScope::new(
                &self.config,
                &self.index,
                &rec.profile,
                &rec.history,
                now,
            );
            self.index
                .audiences
                .iter()
                .filter(|s| scope.segment(s))
                .cloned()
                .collect()
        };
        if rec.zone == zone && rec.audiences == members {
            return Ok(());
        }
        let moved = rec.zone != zone;
        let batch = self.store.batch();
        if self.index.user_zone_schedules && moved {
            if !rec.zone.is_empty() {
                batch.delete_zone(&rec.zone, id);
            }
            batch.put_zone(zone, id);
        }
        for s in &rec.audiences {
            if moved || !members.contains(s) {
                batch.delete_audience(s, &rec.zone, id);
            }
        }
        for s in &members {
            if moved || !rec.audiences.contains(s) {
                batch.put_audience(s, zone, id);
            }
        }
        rec.zone = zone.to_owned();
        rec.audiences = members;
        if self.index.user_zone_schedules && self.schedules.zones.insert(zone.to_owned()) {
            self.arm_schedules(Some(zone))?;
        }
        Ok(())
    }

    fn emit(&mut self, line: Line) {
        self.summary.count(&line);
        if line.kind == Kind::Send && self.options.log_messages {
            self.seq += 1;
            let json = serde_json::to_vec(&line).unwrap_or_default();
            self.store.batch().log_message(line.at, self.seq, json);
        }
        self.sink.line(line);
    }

    /// Fires every timer due at or before the clock's now.
    pub fn tick(&mut self) -> Result<(), Error> {
        let now = self.clock.now_millis();
        self.run_due(now)
    }

    /// Fires every timer due at or before `until`, instant by instant, each
    /// at its own due time. Within an instant: schedules, then segment
    /// re-evaluations and waits, then messages (oldest due first, then
    /// higher journey priority, then earlier entry).
    pub fn run_due(&mut self, until: Millis) -> Result<(), Error> {
        while let Some((due, mut timers)) = self.store.next_instant(until)? {
            timers.sort_by_key(|(k, t)| order(k, t));
            for (key, timer) in timers {
                self.store.fired(&[key]);
                self.fire(due, key, timer)?;
            }
            self.maybe_commit()?;
        }
        Ok(())
    }

    fn fire(&mut self, now: Millis, key: TimerKey, timer: Timer) -> Result<(), Error> {
        let config = Arc::clone(&self.config);
        let index = Arc::clone(&self.index);
        if let TimerKind::Schedule { journey, zone } = &timer.kind {
            return self.fire_schedule(now, key, journey, zone);
        }
        let mut t = self.store.take_user(&timer.user)?;
        if !t.known {
            // A timer of a user that no longer exists.
            return Ok(());
        }
        let mut seq = self.seq;
        let mut ctx = Ctx::new(&config, &index, now, self.options.holdouts, &mut seq);
        match timer.kind {
            TimerKind::Instance { instance: id } => {
                instance::on_timer(&mut ctx, &mut t.rec, key, id)
            }
            TimerKind::Segments => segments::on_timer(&mut ctx, &mut t.rec, key),
            TimerKind::Send {
                instance: id, due, ..
            } => {
                if let Some(d) = send::due(&mut ctx, &mut t.rec, key, id, due) {
                    let result = self.decide(&mut t.rec, &d, now);
                    send::decided(&mut ctx, &mut t.rec, &d, result);
                }
            }
            TimerKind::Schedule { .. } => {}
        }
        settle(&mut ctx, &mut t.rec, true);
        let effects = std::mem::take(&mut ctx.effects);
        let touched = ctx.touched;
        drop(ctx);
        self.seq = seq;
        self.finish_unit(&timer.user, t, now, effects, true, touched)
    }

    fn fire_schedule(
        &mut self,
        now: Millis,
        key: TimerKey,
        journey_id: &str,
        zone: &str,
    ) -> Result<(), Error> {
        let name = format!("{journey_id}\0{zone}");
        if self.schedules.timers.get(&name).map(|(_, k)| *k) != Some(key) {
            return Ok(());
        }
        self.schedules.timers.remove(&name);
        let config = Arc::clone(&self.config);
        let index = Arc::clone(&self.index);
        let Some(j) = config.journeys.iter().position(|j| j.id == journey_id) else {
            return Ok(());
        };
        let Trigger::Schedule {
            cron,
            zone: zone_kind,
            ..
        } = &config.journeys[j].entry.trigger
        else {
            return Ok(());
        };
        let segment = match &config.journeys[j].entry.trigger {
            Trigger::Schedule { segment, .. } => segment.clone(),
            _ => None,
        };
        let mut after: Option<(String, String)> = None;
        loop {
            let kv = self.store.view();
            let page: Vec<(String, String)> = match (&segment, zone_kind) {
                (Some(s), Zone::User) => kv.audience(
                    s,
                    Some(zone),
                    after.as_ref().map(|(z, u)| (z.as_str(), u.as_str())),
                    1_000,
                )?,
                (Some(s), Zone::Fixed(_)) => kv.audience(
                    s,
                    None,
                    after.as_ref().map(|(z, u)| (z.as_str(), u.as_str())),
                    1_000,
                )?,
                (None, Zone::User) => kv
                    .zone_users(zone, after.as_ref().map(|(_, u)| u.as_str()), 1_000)?
                    .into_iter()
                    .map(|u| (zone.to_owned(), u))
                    .collect(),
                (None, Zone::Fixed(_)) => kv
                    .user_ids(after.as_ref().map(|(_, u)| u.as_str()), 1_000)?
                    .into_iter()
                    .map(|u| (String::new(), u))
                    .collect(),
            };
            let Some(last) = page.last().cloned() else {
                break;
            };
            for (_, id) in page {
                let mut t = self.store.take_user(&id)?;
                let mut seq = self.seq;
                let mut ctx = Ctx::new(&config, &index, now, self.options.holdouts, &mut seq);
                entry::on_schedule(&mut ctx, &mut t.rec, j);
                settle(&mut ctx, &mut t.rec, true);
                let effects = std::mem::take(&mut ctx.effects);
                let touched = ctx.touched;
                drop(ctx);
                self.seq = seq;
                self.finish_unit(&id, t, now, effects, false, touched)?;
            }
            self.maybe_commit()?;
            after = Some(last);
        }
        // The next firing.
        if let Ok(tz) = zone.parse::<chrono_tz::Tz>() {
            if let Some(due) = calendar::next_cron(cron, tz, now) {
                let key = self.timer_key(due);
                let Trigger::Schedule { source, .. } = &config.journeys[j].entry.trigger else {
                    return Ok(());
                };
                self.store.set_timer(
                    key,
                    Timer {
                        user: String::new(),
                        kind: TimerKind::Schedule {
                            journey: journey_id.to_owned(),
                            zone: zone.to_owned(),
                        },
                    },
                );
                self.schedules.timers.insert(name, (source.clone(), key));
            }
        }
        Ok(())
    }

    /// Passes a due message through the policies, then renders and
    /// dispatches it.
    fn decide(&mut self, user: &mut UserRecord, d: &Due, now: Millis) -> send::Result {
        let Some(p) = instance::pos(user, d.instance) else {
            return send::Result::Suppressed {
                reason: "gone".to_owned(),
            };
        };
        let empty = Map::new();
        let profile = user.profile.as_object().unwrap_or(&empty);
        let uid = user.id().to_owned();
        let inst = &user.instances[p];
        let outgoing = Outgoing {
            user: &uid,
            profile,
            journey: &d.journey.id,
            category: &d.journey.category,
            priority: d.journey.priority,
            channel: d.channel,
            due: from_millis(d.due),
            reservations: &d.reservations,
        };
        let decision = self
            .policies
            .decide(&outgoing, &user.sent, from_millis(now));
        match decision {
            Decision::Suppress { reason } => send::Result::Suppressed { reason },
            Decision::Defer {
                reason,
                until,
                reservations,
            } => send::Result::Deferred {
                reason,
                until: to_millis(until),
                reservations,
            },
            Decision::Send => {
                let step = &d.journey.states[d.state].id;
                let key = hash::message_key(&d.journey.id, inst.version, &uid, inst.number, step);
                let version = inst.version;
                // The context borrows nothing: the profile, entry and event
                // move into it for the render and move back afterwards
                // (cloning them per message was a tenth of the run).
                let inst = &mut user.instances[p];
                let entry = std::mem::take(&mut inst.entry);
                let event = std::mem::take(&mut inst.event);
                let has_event = !event.is_null();
                let mut ctx = Map::new();
                ctx.insert("user".into(), std::mem::take(&mut user.profile));
                ctx.insert("entry".into(), entry);
                if has_event {
                    ctx.insert("event".into(), event);
                }
                ctx.insert(
                    "journey".into(),
                    json!({"id": d.journey.id, "version": inst.version, "step": step}),
                );
                ctx.insert(
                    "message".into(),
                    json!({"key": key, "unsubscribe_url": format!("{}/{key}", self.options.unsubscribe_base)}),
                );
                let mut ctx = handlebars::Context::from(Value::Object(ctx));
                let rendered = match self.config.templates.get(&d.template) {
                    Some(t) => self.renderer.render(t, &ctx),
                    None => Err(RenderError::Failed {
                        name: d.template.clone(),
                        message: "template not found".into(),
                    }),
                };
                // Gives the moved values back to the record (after the dead
                // letter below has serialized the context, when it fails).
                let restore = |user: &mut UserRecord, ctx: &mut handlebars::Context| {
                    if let Value::Object(m) = ctx.data_mut() {
                        if let Some(v) = m.get_mut("user") {
                            user.profile = std::mem::take(v);
                        }
                        let inst = &mut user.instances[p];
                        if let Some(v) = m.get_mut("entry") {
                            inst.entry = std::mem::take(v);
                        }
                        if let Some(v) = m.get_mut("event") {
                            inst.event = std::mem::take(v);
                        }
                    }
                };
                let failure = match rendered {
                    Err(RenderError::MissingVariable(v)) => format!("missing_variable:{v}"),
                    Err(RenderError::Failed { message, .. }) => format!("render_error:{message}"),
                    Ok(content) => {
                        let message = Message {
                            key: key.clone(),
                            at: now,
                            user: uid.clone(),
                            journey: d.journey.id.clone(),
                            version,
                            step: step.clone(),
                            channel: d.channel,
                            template: d.template.clone(),
                            content,
                        };
                        match self.dispatcher.dispatch(&message) {
                            Ok(()) => {
                                restore(user, &mut ctx);
                                let horizon = self.policies.sent_horizon().num_milliseconds();
                                user.sent.retain(|s| to_millis(s.at) >= now - horizon);
                                user.sent.push(SentRecord {
                                    at: from_millis(now),
                                    channel: d.channel,
                                    category: d.journey.category.clone(),
                                });
                                return send::Result::Sent { key };
                            }
                            Err(e) => format!("dispatch_error:{}", e.message),
                        }
                    }
                };
                self.seq += 1;
                let letter = json!({
                    "at": crate::clock::format_ts(now),
                    "user": uid,
                    "journey": d.journey.id,
                    "version": version,
                    "step": step,
                    "channel": d.channel.as_str(),
                    "template": d.template,
                    "key": key,
                    "reason": failure,
                    "context": ctx.data(),
                });
                let bytes = serde_json::to_vec(&letter).unwrap_or_default();
                restore(user, &mut ctx);
                self.store.batch().dead_letter(now, self.seq, bytes);
                send::Result::Failed {
                    key,
                    reason: failure,
                }
            }
        }
    }

    /// Commits when enough writes are pending.
    pub fn maybe_commit(&mut self) -> Result<(), Error> {
        if self.store.pending() >= self.options.commit_every {
            if self.options.durable {
                self.commit()?;
            } else {
                self.store.spill()?;
            }
        }
        Ok(())
    }

    /// Commits every pending write atomically, with the sequence, the
    /// policies' ledgers and the schedules.
    pub fn commit(&mut self) -> Result<(), Error> {
        self.store
            .put_meta(meta::SEQ, store::codec::encode("seq", &self.seq)?);
        self.store.put_meta(
            meta::SCHEDULES,
            store::codec::encode("schedules", &self.schedules)?,
        );
        let snapshot = self.policies.snapshot();
        self.store.put_meta(
            meta::POLICIES,
            serde_json::to_vec(&snapshot).unwrap_or_default(),
        );
        self.store.commit()?;
        Ok(())
    }

    /// Commits and makes it durable: after this returns, a crash loses
    /// nothing that was processed.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.commit()?;
        self.store.sync()?;
        Ok(())
    }
}

/// Re-evaluates entry segments until the profile stops changing (an entry
/// may run `update` steps).
fn settle(ctx: &mut Ctx<'_>, user: &mut UserRecord, enter: bool) {
    for _ in 0..4 {
        if !ctx.profile_changed {
            break;
        }
        ctx.profile_changed = false;
        segments::reevaluate(ctx, user, enter);
    }
    ctx.profile_changed = false;
}

/// The order of timers within one instant.
fn order(key: &TimerKey, t: &Timer) -> (u8, Millis, i64, Millis, u64) {
    match &t.kind {
        TimerKind::Schedule { .. } => (0, 0, 0, 0, key.seq),
        TimerKind::Segments | TimerKind::Instance { .. } => (1, 0, 0, 0, key.seq),
        TimerKind::Send {
            instance,
            due,
            priority,
            entered_at,
        } => (2, *due, -*priority, *entered_at, *instance),
    }
}
