//! The engine as a service (`sluice run`): the single writer on a thread of
//! its own, the handle the HTTP API talks to it through, and the delivery
//! workers fed from the committed outbox.
//!
//! The writer loop, each round:
//!
//! 1. waits for commands (ingests, delivery results, admin requests) or for
//!    the next timer, and takes every command already waiting (up to a
//!    bound): **group commit**, one fsync for all of them;
//! 2. fires every timer due by the wall clock, applies the commands;
//! 3. commits (the store fsyncs each commit's frame before applying it);
//! 4. only then answers the ingests it applied (so a 202 means durable) and
//!    hands the committed outbox entries to the workers.
//!
//! Ingest never waits for a delivery and a delivery never blocks ingest:
//! workers run on tokio, per channel with bounded concurrency, and report
//! results back as commands. The hand-off queues are bounded; what does not
//! fit stays in the store's outbox and is picked up again when the channel
//! has room, so memory stays bounded however long a provider is down.
//!
//! Once draining (SIGTERM), the writer hands out nothing new: the
//! deliveries already handed out finish (or the deadline passes) and the
//! rest waits in the outbox for the next start, so a graceful stop sends
//! nothing twice.
//!
//! A store error (a full disk, say) stops the writer from acknowledging
//! anything: ingests are answered 503, `/readyz` turns 503, and the process
//! keeps serving until it is restarted (recovery then replays the log).

pub mod client;
pub mod memory;
pub mod run;
pub mod workers;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use journeys::compiled::Channel;
use journeys::event::Event;

use crate::api::{self, Appended, StepCount, Unavailable, Unsubscribed};
use crate::clock::{Clock, Millis};
use crate::deliver::sign::UnsubscribeSigner;
use crate::dispatch::{AddressNews, DispatchError};
use crate::engine::{Engine, Replay};
use crate::machine::event::Ingested;
use crate::metrics::Metrics;
use crate::report::Tally;
use crate::store::attrs::Obj;
use crate::store::outbox::OutboxEntry;

/// Commands taken in one round, at most.
const ROUND: usize = 8_192;

/// The service's state, for `/readyz`.
pub const STARTING: u8 = 0;
pub const READY: u8 = 1;
pub const DRAINING: u8 = 2;
pub const FAILED: u8 = 3;

pub type Reply<T> = oneshot::Sender<Result<T, Unavailable>>;

/// What the writer is asked to do.
pub enum Command {
    Ingest {
        source: &'static str,
        events: Vec<Event>,
        /// The events' properties in the record's form, in order,
        /// converted by the asking thread so the writer need not (events
        /// past the end of it are converted by the writer).
        props: Vec<Obj>,
        reply: Reply<Appended>,
    },
    Delivered {
        id: u64,
        channel: Channel,
        result: Result<(), DispatchError>,
        /// What the provider learned about the user's addresses.
        news: Vec<AddressNews>,
    },
    User {
        id: String,
        reply: Reply<Option<Value>>,
    },
    /// A user's timeline for the console.
    Timeline {
        id: String,
        reply: Reply<Option<Value>>,
    },
    Erase {
        id: String,
        reply: Reply<bool>,
    },
    DeadLetters {
        limit: usize,
        reply: Reply<Vec<Value>>,
    },
    Replay {
        which: api::Replay,
        reply: Reply<usize>,
    },
    Unsubscribe {
        token: String,
        reply: Reply<Option<Unsubscribed>>,
    },
    /// An email provider's bounces and complaints (RUN.md §3).
    Feedback {
        notices: Vec<crate::feedback::Notice>,
        reply: Reply<Vec<bool>>,
    },
    /// `sluice report`: read one journal page per round until done.
    Report {
        query: crate::report::Query,
        reply: Reply<Result<Value, String>>,
    },
    /// A deployment request (`/v1/admin/…`): applied between the events
    /// around it, in order, with nothing dropped.
    Admin {
        request: crate::engine::deploy::AdminRequest,
        reply: Reply<Result<Value, crate::engine::deploy::AdminFailure>>,
    },
    /// Stop: commit, answer, and end the loop.
    Stop,
}

/// How the API reaches the writer.
#[derive(Clone)]
pub struct ServiceHandle {
    tx: Sender<Command>,
    state: Arc<AtomicU8>,
    /// The per-step counters of the last commit, published by the writer
    /// (the console reads them without a round trip to the writer).
    counts: Arc<RwLock<Arc<Vec<StepCount>>>>,
}

impl ServiceHandle {
    pub fn state(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }

    pub fn set_state(&self, s: u8) {
        self.state.store(s, Ordering::SeqCst);
    }

    /// Publishes the counters of a commit.
    pub fn publish_counts(&self, counts: Vec<StepCount>) {
        match self.counts.write() {
            Ok(mut c) => *c = Arc::new(counts),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(counts),
        }
    }

    /// The state cell itself (for `sluice_writer_state`).
    pub fn state_cell(&self) -> Arc<AtomicU8> {
        Arc::clone(&self.state)
    }

    pub fn send(&self, c: Command) -> bool {
        self.tx.send(c).is_ok()
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Unavailable> {
        if self.state() == FAILED {
            return Err(Unavailable("the store failed; see the log".into()));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| Unavailable("the engine has stopped".into()))?;
        rx.await
            .map_err(|_| Unavailable("the engine stopped before answering".into()))?
    }
}

impl api::Handle for ServiceHandle {
    async fn ingest(
        &self,
        source: &'static str,
        events: Vec<Event>,
    ) -> Result<Appended, Unavailable> {
        if self.state() == DRAINING {
            return Err(Unavailable("draining: the engine is shutting down".into()));
        }
        let props = events.iter().map(|e| Obj::from_json(&e.props)).collect();
        self.ask(|reply| Command::Ingest {
            source,
            events,
            props,
            reply,
        })
        .await
    }

    async fn user(&self, id: String) -> Result<Option<Value>, Unavailable> {
        self.ask(|reply| Command::User { id, reply }).await
    }

    async fn erase(&self, id: String) -> Result<bool, Unavailable> {
        self.ask(|reply| Command::Erase { id, reply }).await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<Value>, Unavailable> {
        self.ask(|reply| Command::DeadLetters { limit, reply })
            .await
    }

    async fn replay(&self, which: api::Replay) -> Result<usize, Unavailable> {
        self.ask(|reply| Command::Replay { which, reply }).await
    }

    async fn unsubscribe(&self, token: String) -> Result<Option<Unsubscribed>, Unavailable> {
        self.ask(|reply| Command::Unsubscribe { token, reply })
            .await
    }

    async fn report(
        &self,
        query: crate::report::Query,
    ) -> Result<Result<Value, String>, Unavailable> {
        self.ask(|reply| Command::Report { query, reply }).await
    }

    fn ready(&self) -> bool {
        self.state() == READY
    }

    async fn step_counts(&self) -> Result<Arc<Vec<StepCount>>, Unavailable> {
        if self.state() == STARTING {
            return Err(Unavailable("starting: the store is being opened".into()));
        }
        let counts = match self.counts.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        Ok(counts)
    }

    async fn timeline(&self, id: String) -> Result<Option<Value>, Unavailable> {
        self.ask(|reply| Command::Timeline { id, reply }).await
    }

    async fn feedback(
        &self,
        notices: Vec<crate::feedback::Notice>,
    ) -> Result<Vec<bool>, Unavailable> {
        self.ask(|reply| Command::Feedback { notices, reply }).await
    }

    async fn admin(
        &self,
        request: crate::engine::deploy::AdminRequest,
    ) -> Result<Result<Value, crate::engine::deploy::AdminFailure>, Unavailable> {
        self.ask(|reply| Command::Admin { request, reply }).await
    }
}

/// Creates the channel between handles and the writer.
pub fn channel() -> (ServiceHandle, Receiver<Command>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (
        ServiceHandle {
            tx,
            state: Arc::new(AtomicU8::new(STARTING)),
            counts: Arc::new(RwLock::new(Arc::new(Vec::new()))),
        },
        rx,
    )
}

/// Where the writer sends committed outbox entries.
pub trait Outlet: Send {
    /// Offers an entry to its channel's workers; `false` when the channel's
    /// queue is full (the entry stays in the store's outbox).
    fn offer(&mut self, entry: OutboxEntry) -> bool;
}

/// The writer: runs until a `Stop` command or until every handle is gone.
pub struct Writer<O: Outlet> {
    pub engine: Engine,
    pub clock: Arc<dyn Clock>,
    pub outlet: O,
    pub handle: ServiceHandle,
    pub signer: Option<Arc<UnsubscribeSigner>>,
    /// Entries handed to workers and not yet reported.
    in_flight: HashSet<u64>,
    /// Channels to scan the outbox for (their queue was full, or at start).
    backlog: BTreeMap<Channel, ()>,
    /// Channels whose queue was full since their last complete scan.
    overflow: BTreeMap<Channel, ()>,
    /// The tally generation last published to the handle.
    published: Option<u64>,
    metrics: Metrics,
    /// Reports being read, a page per round (ingest goes on meanwhile).
    reports: Vec<(Tally, Reply<Result<Value, String>>)>,
    /// When canary guards are next checked.
    next_guard_check: Millis,
    /// Where the config the engine runs is published after a deployment
    /// changes it (the console reads it).
    config_cell: Option<crate::api::console::ConfigCell>,
}

/// How often the running engine checks canary guards (DEPLOY.md §4: each
/// minute; `SLUICE_GUARD_INTERVAL_MS` shortens it for tests).
const GUARD_EVERY_DEFAULT: Millis = 60_000;

fn guard_every() -> Millis {
    std::env::var("SLUICE_GUARD_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse::<Millis>().ok())
        .filter(|v| *v > 0)
        .unwrap_or(GUARD_EVERY_DEFAULT)
}

impl<O: Outlet> Writer<O> {
    pub fn new(
        engine: Engine,
        clock: Arc<dyn Clock>,
        outlet: O,
        handle: ServiceHandle,
        signer: Option<Arc<UnsubscribeSigner>>,
    ) -> Self {
        Writer {
            engine,
            clock,
            outlet,
            handle,
            signer,
            in_flight: HashSet::new(),
            backlog: BTreeMap::new(),
            overflow: BTreeMap::new(),
            published: None,
            metrics: Metrics::new(),
            reports: Vec::new(),
            next_guard_check: 0,
            config_cell: None,
        }
    }

    /// Publishes the running config to `cell` whenever a deployment
    /// changes it (and declares its journeys' metric series).
    pub fn set_config_cell(&mut self, cell: crate::api::console::ConfigCell) {
        self.config_cell = Some(cell);
    }

    fn publish_config(&self) {
        // A journey the deployment added gets its series at zero now, as
        // the journeys deployed at start-up did (docs/metrics.md).
        self.metrics.declare(self.engine.config());
        if let Some(cell) = &self.config_cell {
            let c = std::sync::Arc::clone(self.engine.config());
            match cell.write() {
                Ok(mut w) => *w = c,
                Err(poisoned) => *poisoned.into_inner() = c,
            }
        }
    }

    /// Where the writer counts ingests, delivery results, commit times and
    /// the store's depths (and the engine its timer lag).
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.engine.set_metrics(metrics.clone());
        self.metrics = metrics;
    }

    /// Catches up (timers and schedules due while the process was down
    /// fire once, in due order), commits, hands out what the outbox holds
    /// (committed but not recorded as delivered: sent again, same key).
    pub fn start(&mut self) -> Result<(), crate::engine::Error> {
        let now = self.clock.now_millis();
        self.engine.set_floor(now);
        self.engine.run_due(now)?;
        self.engine.commit()?;
        self.publish();
        self.metrics.set_depths(&self.engine.count_depths()?);
        let _ = self.engine.take_outbox()?;
        for c in [Channel::Email, Channel::Push, Channel::Webhook] {
            self.backlog.insert(c, ());
        }
        self.refill(now)?;
        // Ready, unless a SIGTERM came during the catch-up: draining stays.
        let _ =
            self.handle
                .state
                .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
        Ok(())
    }

    /// Runs rounds until stopped.
    pub fn run(&mut self, rx: &Receiver<Command>) {
        loop {
            match self.round(rx) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::error!("the store failed; nothing more is acknowledged: {e}");
                    self.handle.set_state(FAILED);
                    // Answer everything with 503 until told to stop.
                    while let Ok(c) = rx.recv() {
                        if fail(c) {
                            break;
                        }
                    }
                    break;
                }
            }
        }
    }

    /// One round; `Ok(false)` when stopped.
    fn round(&mut self, rx: &Receiver<Command>) -> Result<bool, crate::engine::Error> {
        let now = self.clock.now_millis();
        let wait = match self.engine.next_due()? {
            Some(due) => (due - now).clamp(0, 1_000),
            None => 1_000,
        };
        // A report being read takes a page every round.
        let wait = if self.reports.is_empty() { wait } else { 0 };
        let mut commands = Vec::new();
        let mut stop = false;
        match rx.recv_timeout(Duration::from_millis(wait as u64)) {
            Ok(c) => commands.push(c),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => stop = true,
        }
        while commands.len() < ROUND {
            match rx.try_recv() {
                Ok(c) => commands.push(c),
                Err(_) => break,
            }
        }
        self.engine.prefetch(
            commands
                .iter()
                .flat_map(|c| match c {
                    Command::Ingest { events, .. } => events.as_slice(),
                    _ => &[],
                })
                .map(|ev| ev.user.as_str()),
        )?;
        let now = self.clock.now_millis();
        self.engine.run_due(now)?;
        let mut answers: Vec<Box<dyn FnOnce()>> = Vec::new();
        let mut ingests: Vec<(Reply<Appended>, Appended, &'static str)> = Vec::new();
        // Delivery results recorded this round, counted once committed.
        let mut results: BTreeMap<(Channel, &'static str), u64> = BTreeMap::new();
        for c in commands {
            match c {
                Command::Stop => stop = true,
                Command::Ingest {
                    events,
                    props,
                    reply,
                    source,
                } => {
                    let mut a = Appended::default();
                    let mut props = props.into_iter();
                    for ev in &events {
                        let ingested = match props.next() {
                            Some(p) => self.engine.ingest_converted(ev, p)?,
                            None => self.engine.ingest(ev)?,
                        };
                        match ingested {
                            Ingested::Applied => a.accepted += 1,
                            _ => a.duplicates += 1,
                        }
                    }
                    ingests.push((reply, a, source));
                }
                Command::Delivered {
                    id,
                    channel,
                    result,
                    news,
                } => {
                    self.in_flight.remove(&id);
                    if let Some(r) = self.engine.delivered(id, result, &news, now)? {
                        *results.entry((channel, r.as_str())).or_default() += 1;
                    }
                    if self.overflow.contains_key(&channel) {
                        self.backlog.insert(channel, ());
                    }
                }
                Command::User { id, reply } => {
                    let v = self.engine.inspect(&id)?;
                    answers.push(Box::new(move || {
                        let _ = reply.send(Ok(v));
                    }));
                }
                Command::Timeline { id, reply } => {
                    let v = self.engine.timeline(&id)?;
                    answers.push(Box::new(move || {
                        let _ = reply.send(Ok(v));
                    }));
                }
                Command::Erase { id, reply } => {
                    let v = self.engine.erase(&id)?;
                    answers.push(Box::new(move || {
                        let _ = reply.send(Ok(v));
                    }));
                }
                Command::DeadLetters { limit, reply } => {
                    let v = self.engine.dead_letters(limit)?;
                    answers.push(Box::new(move || {
                        let _ = reply.send(Ok(v));
                    }));
                }
                Command::Replay { which, reply } => {
                    let which = match which {
                        api::Replay::All => Replay::All,
                        api::Replay::One(id) => Replay::One(id),
                    };
                    let v = self.engine.replay(which, now)?;
                    answers.push(Box::new(move || {
                        let _ = reply.send(Ok(v));
                    }));
                }
                Command::Unsubscribe { token, reply } => {
                    let v = self.unsubscribe(&token, now)?;
                    answers.push(Box::new(move || {
                        let _ = reply.send(Ok(v));
                    }));
                }
                Command::Feedback { notices, reply } => {
                    let v = self.engine.feedback(&notices, now)?;
                    answers.push(Box::new(move || {
                        let _ = reply.send(Ok(v));
                    }));
                }
                Command::Report { query, reply } => {
                    self.reports.push((Tally::new(query), reply));
                }
                Command::Admin { request, reply } => {
                    let v = self.engine.admin(request, now)?;
                    self.publish_config();
                    answers.push(Box::new(move || {
                        let _ = reply.send(Ok(v));
                    }));
                }
            }
        }
        if now >= self.next_guard_check {
            self.next_guard_check = now + guard_every();
            let rolled = self.engine.check_guards(now)?;
            if !rolled.is_empty() {
                self.publish_config();
            }
            for e in rolled {
                tracing::warn!(
                    target: "sluice::deploy",
                    journey = e.journey.as_deref().unwrap_or(""),
                    detail = %e.detail,
                    "canary rolled back automatically"
                );
            }
        }
        for (mut tally, reply) in std::mem::take(&mut self.reports) {
            if self.engine.report_step(&mut tally)? {
                self.reports.push((tally, reply));
            } else {
                let v = self.engine.report_finish(tally)?;
                answers.push(Box::new(move || {
                    let _ = reply.send(Ok(v));
                }));
            }
        }
        // What the commands made due now (a welcome email) goes out with
        // this commit, not the next round's.
        self.engine.run_due(self.clock.now_millis())?;
        let started = std::time::Instant::now();
        self.engine.commit()?;
        self.publish();
        if !ingests.is_empty() {
            self.metrics.ingest_committed(started.elapsed());
        }
        self.metrics.set_depths(&self.engine.depths());
        for ((channel, result), n) in results {
            self.metrics.delivered(channel, result, n);
        }
        for (reply, a, source) in ingests {
            self.metrics
                .ingested(source, a.accepted as u64, a.duplicates as u64);
            let _ = reply.send(Ok(a));
        }
        for a in answers {
            a();
        }
        for e in self.engine.take_outbox()? {
            self.hand_out(e);
        }
        self.refill(now)?;
        Ok(!stop)
    }

    /// Publishes the committed per-step counters when they changed.
    fn publish(&mut self) {
        let tally = self.engine.tally();
        if self.published == Some(tally.generation()) {
            return;
        }
        self.published = Some(tally.generation());
        let counts = tally
            .counts()
            .iter()
            .map(|(k, c)| StepCount {
                journey: k.journey.clone(),
                version: k.version,
                step: k.step.clone(),
                live: c.live,
                sent: c.sent,
                deferred: c.deferred,
                suppressed: c.suppressed,
                failed: c.failed,
            })
            .collect();
        self.handle.publish_counts(counts);
    }

    fn unsubscribe(
        &mut self,
        token: &str,
        now: Millis,
    ) -> Result<Option<Unsubscribed>, crate::engine::Error> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let Some(u) = signer.verify(token) else {
            return Ok(None);
        };
        if u.category == "transactional" {
            return Ok(None);
        }
        let path = format!("subscriptions.{}", u.category);
        if !self
            .engine
            .set_profile(&u.user, &path, Value::Bool(false), now)?
        {
            return Ok(None);
        }
        self.engine.count_unsubscribe(&u.user, &u.key)?;
        Ok(Some(Unsubscribed {
            user: u.user,
            category: u.category,
        }))
    }

    /// Whether new deliveries are handed out. Not while draining: the
    /// drain waits for the deliveries already handed out (RUN.md §1), and
    /// one handed out after it ended would be delivered with its result
    /// never recorded (sent again after the restart). What is not handed
    /// out waits in the outbox for the next start.
    fn handing_out(&self) -> bool {
        self.handle.state() != DRAINING
    }

    fn hand_out(&mut self, e: OutboxEntry) {
        let (id, channel) = (e.id, e.message.channel);
        if self.in_flight.contains(&id) || !self.handing_out() {
            return;
        }
        if self.outlet.offer(e) {
            self.in_flight.insert(id);
        } else {
            self.overflow.insert(channel, ());
        }
    }

    /// Offers backlogged channels the outbox entries that are due and not
    /// in flight, until their queues are full again.
    fn refill(&mut self, now: Millis) -> Result<(), crate::engine::Error> {
        if self.backlog.is_empty() || !self.handing_out() {
            return Ok(());
        }
        let mut channels: BTreeMap<Channel, ()> = std::mem::take(&mut self.backlog);
        let mut after = None;
        while !channels.is_empty() {
            let page = self.engine.outbox(after, 512)?;
            let Some(last) = page.last().map(|e| e.id) else {
                break;
            };
            after = Some(last);
            for e in page {
                let channel = e.message.channel;
                if !channels.contains_key(&channel)
                    || self.in_flight.contains(&e.id)
                    || e.not_before > now
                {
                    continue;
                }
                let id = e.id;
                if self.outlet.offer(e) {
                    self.in_flight.insert(id);
                } else {
                    // Still full: scanned again when a delivery of this
                    // channel reports back.
                    channels.remove(&channel);
                    self.overflow.insert(channel, ());
                }
            }
        }
        // Scanned to the end without filling up.
        for c in channels.keys() {
            self.overflow.remove(c);
        }
        Ok(())
    }
}

/// Answers a command with 503; `true` for `Stop`.
fn fail(c: Command) -> bool {
    let no = || Unavailable("the store failed; see the log".into());
    match c {
        Command::Stop => return true,
        Command::Ingest { reply, .. } => {
            let _ = reply.send(Err(no()));
        }
        Command::Delivered { .. } => {}
        Command::User { reply, .. } | Command::Timeline { reply, .. } => {
            let _ = reply.send(Err(no()));
        }
        Command::Erase { reply, .. } => {
            let _ = reply.send(Err(no()));
        }
        Command::DeadLetters { reply, .. } => {
            let _ = reply.send(Err(no()));
        }
        Command::Replay { reply, .. } => {
            let _ = reply.send(Err(no()));
        }
        Command::Unsubscribe { reply, .. } => {
            let _ = reply.send(Err(no()));
        }
        Command::Feedback { reply, .. } => {
            let _ = reply.send(Err(no()));
        }
        Command::Report { reply, .. } => {
            let _ = reply.send(Err(no()));
        }
        Command::Admin { reply, .. } => {
            let _ = reply.send(Err(no()));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::clock::format_ts;

    /// Takes every entry offered, and records its id.
    struct Recording(Arc<Mutex<Vec<u64>>>);

    impl Outlet for Recording {
        fn offer(&mut self, entry: OutboxEntry) -> bool {
            self.0.lock().expect("offers").push(entry.id);
            true
        }
    }

    fn event(v: Value) -> Event {
        Event::from_line(&v.to_string()).expect("event")
    }

    /// A writer on the feedback fixture whose store's outbox holds the
    /// messages of one order (nothing handed out yet), its offers, and
    /// the commands' channel.
    fn writer(
        dir: &std::path::Path,
    ) -> (Writer<Recording>, Arc<Mutex<Vec<u64>>>, Receiver<Command>) {
        let (mut engine, now) = crate::engine::fixture::open("feedback", dir);
        let ts = format_ts(now);
        engine
            .ingest(&event(json!({"type": "identify", "user": "u1", "id": "i1", "ts": ts, "traits": {"email": "u1@x.example"}})))
            .expect("identify");
        engine
            .ingest(&event(
                json!({"type": "track", "user": "u1", "id": "o1", "event": "ordered", "ts": ts}),
            ))
            .expect("order");
        engine.run_due(now).expect("due");
        engine.commit().expect("commit");
        let clock = Arc::clone(engine.clock());
        let offers = Arc::new(Mutex::new(Vec::new()));
        let (handle, rx) = channel();
        let w = Writer::new(engine, clock, Recording(Arc::clone(&offers)), handle, None);
        (w, offers, rx)
    }

    #[test]
    fn a_writer_hands_out_the_outbox_when_it_starts() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut w, offers, _rx) = writer(dir.path());
        w.start().expect("start");
        assert_eq!(w.handle.state(), READY);
        assert!(!offers.lock().expect("offers").is_empty());
    }

    /// RUN.md §1: a SIGTERM (draining) during the start-up catch-up stays
    /// draining, and a draining writer hands out nothing new, neither the
    /// outbox nor what later commands make due: the deliveries already
    /// handed out finish, the rest waits in the outbox for the next start.
    #[test]
    fn a_draining_writer_hands_out_nothing_new() {
        let dir = tempfile::tempdir().expect("tmp");
        let (mut w, offers, rx) = writer(dir.path());
        w.handle.set_state(DRAINING);
        w.start().expect("start");
        assert_eq!(
            w.handle.state(),
            DRAINING,
            "a start does not undo a SIGTERM"
        );
        let ts = format_ts(w.clock.now_millis());
        let (reply, _answer) = oneshot::channel();
        assert!(w.handle.send(Command::Ingest {
            source: "test",
            events: vec![event(
                json!({"type": "track", "user": "u1", "id": "o2", "event": "ordered", "ts": ts})
            )],
            props: Vec::new(),
            reply,
        }));
        assert!(w.handle.send(Command::Stop));
        w.run(&rx);
        assert_eq!(offers.lock().expect("offers").as_slice(), &[] as &[u64]);
        let waiting = w.engine.outbox(None, 100).expect("outbox");
        assert!(
            waiting.len() > 3,
            "the messages wait in the outbox: {}",
            waiting.len()
        );
    }
}
