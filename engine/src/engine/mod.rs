//! The engine shell: the single writer. It loads a user, runs a pure
//! transition of [`crate::machine`] on the record, applies the effects it
//! returns (lines, timers, outbox entries) to the write-back store, and
//! commits. `simulate`, `test` and `run` differ only in the clock, the
//! store's location and how the outbox is delivered ([`Delivery`]).
//!
//! The concerns around it live beside it: [`schedule`] (cron entries per
//! zone and their cursors), [`audience`] (the zone and schedule-audience
//! indexes), [`decide`] (a due message through the policies and the
//! renderer into an outbox entry), [`outbox`] (delivery results: retries
//! with backoff, dead letters), [`feedback`] (providers' bounces and
//! complaints, matched to their messages).

mod admin;
mod audience;
mod decide;
pub mod deploy;
mod feedback;
#[cfg(test)]
pub(crate) mod fixture;
pub mod outbox;
mod schedule;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use journeys::compiled::Config;
use journeys::event::Event;

use crate::clock::{to_millis, Clock, Millis};
use crate::deliver::sign::UnsubscribeSigner;
use crate::deploy::Versions;
use crate::dispatch::{Dispatcher, MessageRenderer};
use crate::index::Index;
use crate::machine::event::Ingested;
use crate::machine::{entry, event, instance, segments, send, Ctx, Effect};
use crate::metrics::{Depths, Metrics};
use crate::output::{Kind, Line, Sink, Summary};
use crate::policy::Policies;
use crate::store::attrs::Obj;
use crate::store::buffer::{BufferStats, Taken};
use crate::store::outbox::OutboxEntry;
use crate::store::tally::{self, Tally};
use crate::store::timers::{Timer, TimerKey, TimerKind};
use crate::store::users::UserRecord;
use crate::store::{self, meta, Buffered, Store};

pub use admin::Replay;
pub use schedule::Schedules;

/// What can go wrong while running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Deploy(#[from] crate::deploy::state::Error),
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether holdouts apply (`ignore_holdouts: true` in a JourneyTest
    /// turns them off).
    pub holdouts: bool,
    /// Users kept in the write-back cache.
    pub cache_users: usize,
    /// The bound on the cached users' records, encoded: a user with a long
    /// history weighs more than one with a short one, so `cache_users`
    /// alone does not bound the memory.
    pub cache_bytes: usize,
    /// Commit once this many writes are pending.
    pub commit_every: usize,
    /// Base of `message.unsubscribe_url` (the run API's address).
    pub unsubscribe_base: String,
    /// Whether the store keeps what only its later readers need: every
    /// `send` decision in the message log, every entry, send and
    /// conversion in the report journal, and the per-step counters
    /// (`store::tally`: the console, `/metrics` and canary guards read
    /// them). `simulate` prints its decisions instead, unless it keeps its
    /// store: counting live instances step by step was ~6% of its engine
    /// thread, for counters a temporary store never shows.
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
            cache_bytes: crate::store::buffer::DEFAULT_CACHE_BYTES,
            commit_every: 50_000,
            unsubscribe_base: "http://127.0.0.1:8080/v1/unsubscribe".to_owned(),
            log_messages: true,
            durable: true,
        }
    }
}

/// How outbox entries leave the engine.
pub enum Delivery {
    /// At the instant they are decided, through a dispatcher, before the
    /// commit (`simulate`, `test`): an entry delivered at once is never
    /// written at all; a failure becomes a retry timer or a dead letter.
    Inline(Box<dyn Dispatcher>),
    /// By delivery workers, after the commit ([`Engine::take_outbox`]);
    /// results come back through [`Engine::delivered`] (`run`).
    Workers,
}

pub struct Engine {
    config: Arc<Config>,
    index: Arc<Index>,
    /// Every runnable journey version (`config`'s, a canary, older ones
    /// live instances stay on).
    versions: Arc<Versions>,
    store: Buffered,
    policies: Policies,
    delivery: Delivery,
    clock: Arc<dyn Clock>,
    sink: Box<dyn Sink + Send>,
    options: Options,
    seq: u64,
    schedules: Schedules,
    summary: Summary,
    renderer: MessageRenderer,
    /// Outbox entries put since the last commit (ids), for workers.
    outbox_new: Vec<u64>,
    /// Entries decided in the current unit, to deliver inline.
    outbox_now: Vec<OutboxEntry>,
    /// Signs one-click unsubscribe links (`run`); without it the link is
    /// the base and the key (`simulate`, `test`: never followed).
    signer: Option<Arc<UnsubscribeSigner>>,
    /// Timers due earlier fire at this instant.
    floor: Millis,
    /// Per-step counters, written with every commit ([`tally`]).
    tally: Tally,
    /// Outbox entries and dead letters in the store as of the last commit
    /// (timers: [`Buffered::timer_count`]), and the changes since.
    depths: Depths,
    depths_pending: Depths,
    /// Where timer lag goes (`run`).
    metrics: Option<Metrics>,
    /// The deployed state, when the engine runs one (`run`, the deploy
    /// commands).
    deploy: Option<deploy::DeployState>,
    /// What the last migration unit did to each instance it looked at.
    migrated: Vec<crate::machine::instance::Moved>,
    /// Unsubscribes from each journey version's messages (guards).
    unsubscribes: std::collections::BTreeMap<(String, u32), u64>,
    /// The positions of the current unit's user before its transition
    /// (kept to reuse its strings).
    positions: Vec<tally::Position>,
}

fn decode_meta<T: for<'de> Deserialize<'de>>(bytes: Option<Vec<u8>>) -> Result<Option<T>, Error> {
    Ok(bytes
        .map(|b| store::codec::decode("meta", &b))
        .transpose()?)
}

/// The transition a unit of work runs on one user.
enum Step<'e> {
    /// An event, whether it is imported, and its properties converted.
    Event(&'e Event, bool, Option<Obj>),
    Timer(TimerKey, Timer),
    Schedule(usize),
    /// Set one profile path (an unsubscribe).
    Set(&'e str, Value),
    /// Move the user's live instances a migration maps.
    Migrate(&'e crate::deploy::state::Migration),
}

impl Engine {
    /// Opens the engine on `store`, restoring the sequence, the policies'
    /// ledgers and the schedules, and arming the schedules' timers.
    pub fn open(
        config: Arc<Config>,
        store: Box<dyn Store>,
        clock: Arc<dyn Clock>,
        delivery: Delivery,
        sink: Box<dyn Sink + Send>,
        options: Options,
    ) -> Result<Engine, Error> {
        let buffered = Buffered::with_bounds(store, options.cache_users, options.cache_bytes);
        let seq: u64 = decode_meta(buffered.meta(meta::SEQ)?)?.unwrap_or(0);
        let schedules: Schedules =
            decode_meta(buffered.meta(meta::SCHEDULES)?)?.unwrap_or_default();
        let tally = if options.log_messages {
            open_tally(&buffered, seq)?
        } else {
            Tally::default()
        };
        let unsubscribes: Vec<(String, u32, u64)> =
            decode_meta(buffered.meta(meta::UNSUBSCRIBES)?)?.unwrap_or_default();
        let unsubscribes = unsubscribes
            .into_iter()
            .map(|(j, v, n)| ((j, v), n))
            .collect();
        let mut policies = Policies::new(&config);
        if let Some(bytes) = buffered.meta(meta::POLICIES)? {
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| store::Error::Decode {
                what: "policy ledgers",
                message: e.to_string(),
            })?;
            policies.restore(&v);
        }
        let versions = Versions::of(&config);
        let mut engine = Engine {
            index: Arc::new(Index::new(&config)),
            versions: Arc::new(versions),
            renderer: MessageRenderer::new(&config),
            config,
            store: buffered,
            policies,
            delivery,
            clock,
            sink,
            options,
            seq,
            schedules,
            summary: Summary::default(),
            outbox_new: Vec::new(),
            outbox_now: Vec::new(),
            signer: None,
            floor: Millis::MIN,
            tally,
            depths: Depths::default(),
            depths_pending: Depths::default(),
            metrics: None,
            deploy: None,
            migrated: Vec::new(),
            unsubscribes,
            positions: Vec::new(),
        };
        engine.arm_schedules(None)?;
        Ok(engine)
    }

    /// Timers due before `floor` fire at `floor` (in due order): nothing is
    /// decided in the past of a simulation's start or of a restart.
    pub fn set_floor(&mut self, floor: Millis) {
        self.floor = floor;
    }

    /// The base of `message.unsubscribe_url` (known once the deployed
    /// Project is).
    pub fn set_unsubscribe_base(&mut self, base: String) {
        self.options.unsubscribe_base = base;
    }

    /// Signs `message.unsubscribe_url` with the service's secret.
    pub fn set_signer(&mut self, signer: Arc<UnsubscribeSigner>) {
        self.signer = Some(signer);
    }

    /// Observes timer lag into `metrics` as timers fire.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = Some(metrics);
    }

    /// What the store holds as of the last commit: outbox entries by
    /// channel, timers, dead letters. Exact once [`Engine::count_depths`]
    /// has run; kept up to date by every commit after it, at no read cost.
    pub fn depths(&self) -> Depths {
        let mut d = self.depths;
        d.timers = self.store.timer_count().unwrap_or(0);
        d
    }

    /// Counts the outbox, the dead letters and the timers in the store
    /// (one pass over each, at start-up) and keeps the counts up to date
    /// from then on. Call right after a commit.
    pub fn count_depths(&mut self) -> Result<Depths, Error> {
        let mut d = Depths::default();
        let mut after = None;
        loop {
            let page = crate::store::outbox::Outbox::outbox(&self.store.view(), after, 1_024)?;
            let Some(last) = page.last().map(|e| e.id) else {
                break;
            };
            for e in &page {
                d.add_outbox(e.message.channel, 1);
            }
            after = Some(last);
        }
        d.dead_letters = crate::store::messages::Messages::dead_letter_count(&self.store.view())?;
        self.store.count_timers()?;
        self.depths = d;
        self.depths_pending = Depths::default();
        Ok(self.depths())
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The per-step counters as they stand (committed with the next
    /// commit).
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    pub fn store_stats(&self) -> BufferStats {
        self.store.stats
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Makes every throttle's ledger with `ledger` instead of the store's
    /// own (a cluster worker's slots shared through NATS); call right after
    /// [`Engine::open`].
    pub fn use_ledgers(&mut self, ledger: &mut crate::policy::ledger::LedgerFactory<'_>) {
        self.policies = Policies::with_ledgers(&self.config, ledger);
    }

    /// A user's current record (for `inspect` and tests).
    pub fn user(&mut self, id: &str) -> Result<Option<UserRecord>, Error> {
        let t = self.store.take_user(id)?;
        let out = t.known.then(|| (*t.rec).clone());
        if t.known {
            self.store.put_user(id, t.rec, t.dirty, false)?;
        }
        Ok(out)
    }

    fn timer_key(&mut self, due: Millis) -> TimerKey {
        self.seq += 1;
        TimerKey { due, seq: self.seq }
    }

    /// Reads ahead, on a few threads at once, the records of the users of
    /// events about to be ingested that are not in memory (`run` does this
    /// for each round's events): the engine's thread then finds them there
    /// instead of reading them one by one. Changes nothing else.
    pub fn prefetch<'a>(&mut self, users: impl IntoIterator<Item = &'a str>) -> Result<(), Error> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        Ok(self.store.prefetch(users, threads)?)
    }

    /// Applies an event at its own `ts`. Timers due at or before it should
    /// have run first ([`Engine::run_due`]).
    pub fn ingest(&mut self, ev: &Event) -> Result<Ingested, Error> {
        self.event(ev, false, None)
    }

    /// [`Engine::ingest`], with the event's properties already converted
    /// to the record's form (`Obj::from_json(&ev.props)`, which a reader
    /// thread can do ahead of the engine's).
    pub fn ingest_converted(&mut self, ev: &Event, props: Obj) -> Result<Ingested, Error> {
        self.event(ev, false, Some(props))
    }

    /// Applies an event to the profile and history only (events before a
    /// simulation's start): no journey reacts.
    pub fn import(&mut self, ev: &Event) -> Result<Ingested, Error> {
        self.event(ev, true, None)
    }

    fn event(&mut self, ev: &Event, import: bool, props: Option<Obj>) -> Result<Ingested, Error> {
        self.summary.events += 1;
        let result = self
            .unit(&ev.user, to_millis(ev.ts), Step::Event(ev, import, props))?
            .unwrap_or(Ingested::Applied);
        if result != Ingested::Applied {
            self.summary.duplicates += 1;
        }
        Ok(result)
    }

    /// One unit of work: takes the user, runs the transition, settles
    /// segment changes, applies the effects and gives the user back.
    /// `None` when the step does not apply (a timer of an unknown user).
    fn unit(&mut self, id: &str, now: Millis, step: Step<'_>) -> Result<Option<Ingested>, Error> {
        let config = Arc::clone(&self.config);
        let index = Arc::clone(&self.index);
        let versions = Arc::clone(&self.versions);
        let mut t = self.store.take_user(id)?;
        let mut result = Ingested::Applied;
        // Whether the step enters journeys, and whether it changes the
        // record whatever it does (`None`: an event, dirty when applied).
        let (enter, changes) = match &step {
            Step::Event(_, import, _) => {
                if !t.known {
                    self.summary.users += 1;
                }
                (!*import, None)
            }
            Step::Timer(..) if !t.known => return Ok(None),
            Step::Timer(..) => (true, Some(true)),
            Step::Schedule(_) => (true, Some(false)),
            Step::Set(..) => (true, Some(true)),
            Step::Migrate(..) if !t.known => return Ok(None),
            Step::Migrate(..) => (false, Some(true)),
        };
        let counting = self.options.log_messages;
        let mut before = std::mem::take(&mut self.positions);
        if counting {
            tally::positions_into(&t.rec, &mut before);
        }
        let mut seq = self.seq;
        let mut ctx = Ctx::new(
            &config,
            &index,
            &versions,
            now,
            self.options.holdouts,
            &mut seq,
        );
        match step {
            Step::Event(ev, import, props) => {
                result = event::on_event(&mut ctx, &mut t.rec, ev, import, props)
            }
            Step::Set(path, value) => {
                if crate::store::profile::set(&mut t.rec.profile, path, value) {
                    ctx.profile_changed = true;
                    ctx.touched = true;
                }
            }
            Step::Schedule(j) => {
                entry::on_schedule(&mut ctx, &mut t.rec, j);
            }
            Step::Migrate(m) => {
                let ids: Vec<(u64, String)> = t
                    .rec
                    .instances
                    .iter()
                    .filter(|i| i.journey == m.journey && i.version == m.from)
                    .map(|i| (i.id, i.step.clone()))
                    .collect();
                let exit = m.on_unmapped == journeys::model::OnUnmapped::Exit;
                for (id, step) in ids {
                    let target = m.steps.get(&step).copied();
                    let moved = instance::migrate(&mut ctx, &mut t.rec, id, &m.to, target, exit);
                    self.migrated.push(moved);
                }
            }
            Step::Timer(key, timer) => match timer.kind {
                TimerKind::Instance { instance: id } => {
                    instance::on_timer(&mut ctx, &mut t.rec, key, id)
                }
                TimerKind::Segments => segments::on_timer(&mut ctx, &mut t.rec, key),
                TimerKind::Send {
                    instance: id, due, ..
                } => {
                    if let Some(d) = send::due(&mut ctx, &mut t.rec, key, id, due) {
                        let decision = self.decide(&mut ctx, &mut t.rec, &d);
                        send::decided(&mut ctx, &mut t.rec, &d, decision);
                    }
                }
                TimerKind::Schedule { .. } | TimerKind::Retry { .. } => {}
            },
        }
        settle(&mut ctx, &mut t.rec, enter);
        let effects = std::mem::take(&mut ctx.effects);
        let touched = ctx.touched;
        drop(ctx);
        self.seq = seq;
        let changed = changes.unwrap_or(result == Ingested::Applied);
        if counting && !same_positions(&before, &t.rec) {
            self.tally.moved(&before, &tally::positions(&t.rec));
        }
        self.positions = before;
        self.finish_unit(id, t, now, effects, changed, touched)?;
        Ok(Some(result))
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
                Effect::Outbox(message, category) => self.enqueue(*message, category, now)?,
            }
        }
        let indexed = self.index.user_zone_schedules || !self.index.audiences.is_empty();
        if indexed && (touched || (dirty && t.rec.zone.is_empty())) {
            self.reindex(id, &mut t.rec, now)?;
        }
        if dirty || t.known {
            if dirty {
                t.rec.shrink();
            }
            self.store.put_user(id, t.rec, dirty, !t.known)?;
        }
        self.deliver_inline(now)
    }

    fn emit(&mut self, line: Line) {
        self.summary.count(&line);
        if line.kind == Kind::Send && self.options.log_messages {
            if let (Some(version), Some(step), Some(outcome)) =
                (line.version, line.step.as_deref(), line.outcome)
            {
                self.tally.send(&line.journey, version, step, outcome);
            }
            self.seq += 1;
            match serde_json::to_vec(&line) {
                Ok(json) => self
                    .store
                    .batch()
                    .log_message(&line.user, line.at, self.seq, json),
                Err(e) => tracing::error!("cannot log a send decision: {e}"),
            }
        }
        if self.options.log_messages {
            self.journal(&line);
        }
        self.sink.line(line);
    }

    /// Records an entry, a `send` decision or a conversion in the report
    /// journal (`store::journal`), with the message log.
    fn journal(&mut self, line: &Line) {
        let Some(record) = store::journal::Record::of(line) else {
            return;
        };
        self.seq += 1;
        if let Err(e) = self.store.batch().journal(line.at, self.seq, &record) {
            tracing::error!("cannot record a decision in the report journal: {e}");
        }
    }

    /// Fires every timer due at or before the clock's now.
    pub fn tick(&mut self) -> Result<(), Error> {
        let now = self.clock.now_millis();
        self.run_due(now)
    }

    /// Fires every timer due at or before `until`, instant by instant, each
    /// at its own due time. Within an instant: schedules, then segment
    /// re-evaluations and waits, then messages (oldest due first, then
    /// higher journey priority, then earlier entry), then delivery retries.
    pub fn run_due(&mut self, until: Millis) -> Result<(), Error> {
        self.continue_firing()?;
        while let Some((due, mut timers)) = self.store.next_instant(until)? {
            timers.sort_by_key(|(k, t)| order(k, t));
            // A timer that fell due before the floor (before a simulation's
            // start, or while `run` was down) fires once, at the floor.
            let at = due.max(self.floor);
            if let Some(m) = &self.metrics {
                let fired = self.clock.now_millis();
                for (key, _) in &timers {
                    m.timer_fired(fired.saturating_sub(key.due));
                }
            }
            for (key, timer) in timers {
                self.store.fired(&[key]);
                self.fire(at, key, timer)?;
            }
            self.maybe_commit()?;
        }
        Ok(())
    }

    fn fire(&mut self, now: Millis, key: TimerKey, timer: Timer) -> Result<(), Error> {
        match &timer.kind {
            TimerKind::Schedule { journey, zone } => {
                let (journey, zone) = (journey.clone(), zone.clone());
                self.fire_schedule(now, key, &journey, &zone)
            }
            TimerKind::Retry { outbox } => self.retry_due(*outbox, now),
            _ => {
                let user = timer.user.clone();
                self.unit(&user, now, Step::Timer(key, timer)).map(|_| ())
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
        if self.options.durable {
            self.sink.flush();
        }
        self.store
            .put_meta(meta::SEQ, store::codec::encode("seq", &self.seq)?);
        self.store.put_meta(
            meta::SCHEDULES,
            store::codec::encode("schedules", &self.schedules)?,
        );
        let snapshot = self.policies.snapshot();
        let ledgers = serde_json::to_vec(&snapshot).map_err(|e| store::Error::Encode {
            what: "policy ledgers",
            message: e.to_string(),
        })?;
        self.store.put_meta(meta::POLICIES, ledgers);
        self.tally.flush(self.store.batch())?;
        if !self.unsubscribes.is_empty() {
            let list: Vec<(&String, &u32, &u64)> = self
                .unsubscribes
                .iter()
                .map(|((j, v), n)| (j, v, n))
                .collect();
            self.store.put_meta(
                meta::UNSUBSCRIBES,
                store::codec::encode("unsubscribe counts", &list)?,
            );
        }
        // Without counting, no stamp: a store reopened by an engine that
        // counts finds the counters stale and counts them afresh.
        if self.options.log_messages {
            self.store.put_meta(
                tally::STAMP,
                store::codec::encode("tally stamp", &self.seq)?,
            );
        }
        self.store.commit()?;
        self.depths.add(&std::mem::take(&mut self.depths_pending));
        self.sink.committed();
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

/// The stored counters when they belong to this store (their stamp is the
/// sequence number of the last commit), else counted afresh from the users
/// and the message log: a store written before counters existed, or by a
/// sluice that does not keep them.
fn open_tally(store: &Buffered, seq: u64) -> Result<Tally, Error> {
    let stamp: Option<u64> = decode_meta(store.meta(tally::STAMP)?)?;
    if stamp == Some(seq) {
        return Ok(Tally::load(store.store())?);
    }
    let started = std::time::Instant::now();
    let rebuilt = tally::rebuild(store.store())?;
    if seq > 0 {
        tracing::warn!(
            steps = rebuilt.counts().len(),
            ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "tally: the store's per-step counters were missing or stale; counted them afresh"
        );
    }
    Ok(rebuilt)
}

/// Whether a user's live instances stand where `before` says.
fn same_positions(before: &[tally::Position], rec: &UserRecord) -> bool {
    before.len() == rec.instances.len()
        && before
            .iter()
            .zip(&rec.instances)
            .all(|((j, v, s), i)| *j == i.journey && *v == i.version && *s == i.step)
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
        TimerKind::Retry { outbox } => (3, 0, 0, 0, *outbox),
    }
}
