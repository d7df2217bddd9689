//! The engine as a cluster worker's [`Processor`]: one engine per owned
//! partition, each on its own local store ([`super::partition::Replica`]:
//! the same tables and engine code as single-node `run`), restored from the
//! changelog when the partition is taken and dropped when it is given up.
//!
//! A batch of a partition's events goes through the same path as a `run`
//! writer round: timers due by the wall clock fire, the events are ingested
//! (a re-applied event is skipped by its id in the user's record), the
//! delivery results and erasures waiting for the partition are recorded,
//! timers made due fire, and the engine commits once. What the commit wrote
//! is the batch's changelog records; the outbox entries it committed are
//! handed to the delivery workers only once the worker has published them
//! and advanced the checkpoint ([`Processor::committed`]), so a message is
//! never sent that a new owner would not know of. A new owner finds the
//! outbox as committed and hands it out again, with the same keys.
//!
//! Timers and schedules fire from the partition's own state: a partition
//! with a timer due (or results to record) asks the worker for a batch
//! without events ([`Processor::due`]). A schedule's audience is the
//! partition's users, its cursor in the partition's meta.
//!
//! Requests from the API (a user, an erasure, dead letters, unsubscribes)
//! and delivery results arrive as [`Command`]s on the channel the single
//! node writer uses; each is answered for the partitions this worker owns.
//!
//! Knows nothing of NATS, leases or HTTP.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use journeys::compiled::{Channel, Config};
use journeys::event::Event;

use super::changelog;
use super::partition::{self, Replica, Writes};
use super::worker::Processor;
use crate::api::{Unavailable, Unsubscribed};
use crate::clock::{Clock, Millis};
use crate::deliver::sign::UnsubscribeSigner;
use crate::dispatch::{AddressNews, DispatchError};
use crate::engine::{self, Delivery, Engine, Replay};
use crate::hash::partition_of;
use crate::metrics::{Decisions, Depths, Metrics};
use crate::service::{Command, Outlet, Reply};
use crate::store::outbox::OutboxEntry;
use crate::store::scratch::ScratchStore;

/// What a request about a user of a partition this worker does not own is
/// answered with (the forwarding recognises it: [`super::forward`]).
pub const NOT_HERE: &str = "which another worker owns";

/// What every partition's engine is opened with.
pub struct Settings {
    /// Where the partitions' local stores live (`<root>/p<N>`).
    pub root: PathBuf,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub signer: Option<Arc<UnsubscribeSigner>>,
    /// Base of `message.unsubscribe_url`.
    pub unsubscribe_base: String,
    pub partitions: u32,
    /// The write-back cache bound of each partition's engine.
    pub cache_bytes: usize,
    /// Makes each throttle's ledger (id, count, per): the cluster's shared
    /// slots. `None`: each partition counts its own (tests).
    pub ledgers: Option<Arc<Ledgers>>,
}

/// What makes a throttle's ledger on a worker.
pub type Ledgers =
    dyn Fn(&str, usize, chrono::TimeDelta) -> Box<dyn crate::policy::ledger::Ledger> + Send + Sync;

type Answer = Box<dyn FnOnce() + Send>;

struct Result_ {
    local: u64,
    channel: Channel,
    result: Result<(), DispatchError>,
    news: Vec<AddressNews>,
}

/// One owned partition.
struct Part {
    partition: u32,
    engine: Engine,
    writes: Writes,
    dir: PathBuf,
    /// The number of the last batch published (write-ahead records).
    batch: u64,
    /// Local outbox ids handed to the workers and not reported yet.
    in_flight: HashSet<u64>,
    results: Vec<Result_>,
    erases: Vec<(String, Reply<bool>)>,
    /// Changes made outside a batch (a replay, an unsubscribe) to commit.
    dirty: bool,
    /// Answers sent once the next batch is committed.
    answers: Vec<Answer>,
    /// Outbox entries of the batch being committed.
    handout: Vec<OutboxEntry>,
    /// Delivery results of the batch being committed, for metrics.
    recorded: BTreeMap<(Channel, &'static str), u64>,
    /// The outbox must be scanned for entries to hand out (after a restore,
    /// or when a channel's queue was full).
    refill: bool,
}

/// See the module docs.
pub struct Node<O: Outlet> {
    settings: Settings,
    outlet: O,
    commands: Receiver<Command>,
    parts: BTreeMap<u32, Part>,
    /// Ids the delivery workers see (unique across partitions) → the
    /// partition and its local outbox id.
    in_flight: HashMap<u64, (u32, u64)>,
    next_id: u64,
    failure: Option<String>,
}

fn unavailable(e: impl std::fmt::Display) -> Unavailable {
    Unavailable(e.to_string())
}

impl<O: Outlet> Node<O> {
    pub fn new(settings: Settings, outlet: O, commands: Receiver<Command>) -> Self {
        Node {
            settings,
            outlet,
            commands,
            parts: BTreeMap::new(),
            in_flight: HashMap::new(),
            next_id: 1,
            failure: None,
        }
    }

    /// The partitions whose engines are open.
    pub fn owned(&self) -> Vec<u32> {
        self.parts.keys().copied().collect()
    }

    fn not_here(&self, user: &str) -> Unavailable {
        let p = partition_of(user, self.settings.partitions);
        Unavailable(format!(
            "user {user:?} belongs to partition {p}, {NOT_HERE}: ask that worker \
             (docs/cluster.md)"
        ))
    }

    /// Takes every waiting command: reads are answered now, changes are
    /// queued for their partition's next batch. The worker's loop calls it
    /// between rounds too, so requests are answered when this worker owns
    /// no partition.
    pub fn drain(&mut self) {
        let now = self.settings.clock.now_millis();
        while let Ok(c) = self.commands.try_recv() {
            self.command(c, now);
        }
        for part in self.parts.values_mut() {
            if part.refill {
                refill(
                    part,
                    &mut self.outlet,
                    &mut self.in_flight,
                    &mut self.next_id,
                    now,
                );
            }
        }
    }

    fn command(&mut self, c: Command, now: Millis) {
        let partitions = self.settings.partitions;
        match c {
            Command::Delivered {
                id,
                channel,
                result,
                news,
            } => {
                let Some((p, local)) = self.in_flight.remove(&id) else {
                    return;
                };
                if let Some(part) = self.parts.get_mut(&p) {
                    part.in_flight.remove(&local);
                    part.results.push(Result_ {
                        local,
                        channel,
                        result,
                        news,
                    });
                }
            }
            Command::User { id, reply } => {
                let answer = match self.parts.get_mut(&partition_of(&id, partitions)) {
                    Some(part) => part.engine.inspect(&id).map_err(unavailable),
                    None => Err(self.not_here(&id)),
                };
                let _ = reply.send(answer);
            }
            Command::Timeline { id, reply } => {
                let answer = match self.parts.get_mut(&partition_of(&id, partitions)) {
                    Some(part) => part.engine.timeline(&id).map_err(unavailable),
                    None => Err(self.not_here(&id)),
                };
                let _ = reply.send(answer);
            }
            Command::Erase { id, reply } => {
                match self.parts.get_mut(&partition_of(&id, partitions)) {
                    Some(part) => part.erases.push((id, reply)),
                    None => {
                        let _ = reply.send(Err(self.not_here(&id)));
                    }
                }
            }
            Command::DeadLetters { limit, reply } => {
                let mut all: Vec<Value> = Vec::new();
                let mut failed = None;
                for (p, part) in &self.parts {
                    match part.engine.dead_letters(limit) {
                        Ok(letters) => all.extend(letters.into_iter().map(|mut l| {
                            // Ids are per partition: say which.
                            if let Some(m) = l.as_object_mut() {
                                m.insert("partition".into(), (*p).into());
                            }
                            l
                        })),
                        Err(e) => failed = Some(unavailable(e)),
                    }
                }
                all.sort_by_key(|l| l["at_ms"].as_i64().unwrap_or(0));
                all.truncate(limit);
                let _ = reply.send(match failed {
                    Some(e) => Err(e),
                    None => Ok(all),
                });
            }
            Command::Replay { which, reply } => {
                if which != crate::api::Replay::All {
                    let _ = reply.send(Err(Unavailable(
                        "in cluster mode dead letters are replayed all at once (POST /v1/dlq/replay \
                         without an id): their ids are per partition (docs/cluster.md)"
                            .into(),
                    )));
                    return;
                }
                let mut n = 0;
                for part in self.parts.values_mut() {
                    match part.engine.replay(Replay::All, now) {
                        Ok(k) => {
                            n += k;
                            part.dirty |= k > 0;
                        }
                        Err(e) => {
                            self.failure = Some(e.to_string());
                            let _ = reply.send(Err(unavailable(e)));
                            return;
                        }
                    }
                }
                let _ = reply.send(Ok(n));
            }
            Command::Unsubscribe { token, reply } => self.unsubscribe(token, reply, now),
            Command::Ingest { reply, .. } => {
                let _ = reply.send(Err(Unavailable(
                    "in cluster mode events go to the event log, not to a writer".into(),
                )));
            }
            Command::Feedback { reply, .. } => {
                let _ = reply.send(Err(Unavailable(
                    "email feedback is not taken in cluster mode yet (docs/cluster.md)".into(),
                )));
            }
            Command::Report { reply, .. } => {
                let _ = reply.send(Err(Unavailable(
                    "reports are not kept in cluster mode yet (docs/cluster.md)".into(),
                )));
            }
            Command::Admin { reply, .. } => {
                let _ = reply.send(Err(Unavailable(
                    "deployments through the API are not available in cluster mode: restart the \
                     workers with the new config (docs/cluster.md)"
                        .into(),
                )));
            }
            Command::Stop => {}
        }
    }

    fn unsubscribe(&mut self, token: String, reply: Reply<Option<Unsubscribed>>, now: Millis) {
        let Some(u) = self.settings.signer.as_ref().and_then(|s| s.verify(&token)) else {
            let _ = reply.send(Ok(None));
            return;
        };
        if u.category == "transactional" {
            let _ = reply.send(Ok(None));
            return;
        }
        let Some(part) = self
            .parts
            .get_mut(&partition_of(&u.user, self.settings.partitions))
        else {
            let _ = reply.send(Err(self.not_here(&u.user)));
            return;
        };
        let path = format!("subscriptions.{}", u.category);
        let done = part
            .engine
            .set_profile(&u.user, &path, Value::Bool(false), now)
            .and_then(|changed| {
                if changed {
                    part.engine.count_unsubscribe(&u.user, &u.key)?;
                }
                Ok(changed)
            });
        match done {
            Ok(false) => {
                let _ = reply.send(Ok(None));
            }
            Ok(true) => {
                part.dirty = true;
                part.answers.push(Box::new(move || {
                    let _ = reply.send(Ok(Some(Unsubscribed {
                        user: u.user,
                        category: u.category,
                    })));
                }));
            }
            Err(e) => {
                self.failure = Some(e.to_string());
                let _ = reply.send(Err(unavailable(e)));
            }
        }
    }

    fn open(&self, p: u32, records: Vec<changelog::Record>) -> Result<Part, engine::Error> {
        let s = &self.settings;
        let dir = s.root.join(format!("p{p}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| crate::store::Error::io(&dir, "remove", e))?;
        }
        let store = ScratchStore::create(&dir)?;
        let records: Vec<(String, bytes::Bytes)> =
            records.into_iter().map(|r| (r.user, r.bytes)).collect();
        let mut loaded = partition::load(&store, &records)?;
        let (replica, writes) = Replica::new(store);
        // The rolled-forward batch goes out again, key by key, with the
        // first batch (its write-ahead record is overwritten by then).
        writes.republish(std::mem::take(&mut loaded.replayed))?;
        let mut engine = Engine::open(
            Arc::clone(&s.config),
            Box::new(replica),
            Arc::clone(&s.clock),
            Delivery::Workers,
            Box::new(Decisions::new(
                s.metrics.clone(),
                Box::new(crate::service::run::LogSink),
            )),
            engine::Options {
                log_messages: true,
                durable: true,
                cache_bytes: s.cache_bytes,
                ..engine::Options::default()
            },
        )?;
        if let Some(ledgers) = &s.ledgers {
            engine.use_ledgers(&mut |id, count, per| ledgers(id, count, per));
        }
        engine.set_floor(s.clock.now_millis());
        engine.set_unsubscribe_base(s.unsubscribe_base.clone());
        if let Some(signer) = &s.signer {
            engine.set_signer(Arc::clone(signer));
        }
        engine.set_metrics(s.metrics.clone());
        tracing::debug!(
            target: "sluice::cluster",
            partition = p,
            keys = loaded.keys,
            rolled_forward = ?loaded.rolled_forward,
            "partition restored"
        );
        Ok(Part {
            partition: p,
            engine,
            writes,
            dir,
            batch: loaded.last_batch,
            in_flight: HashSet::new(),
            results: Vec::new(),
            erases: Vec::new(),
            dirty: true,
            answers: Vec::new(),
            handout: Vec::new(),
            recorded: BTreeMap::new(),
            refill: true,
        })
    }

    fn publish_depths(&self) {
        let mut d = Depths::default();
        for part in self.parts.values() {
            d.add(&part.engine.depths());
        }
        self.settings.metrics.set_depths(&d);
    }
}

/// Runs one batch on a partition's engine; the changelog records of its
/// commit.
fn run_batch(
    p: u32,
    part: &mut Part,
    events: &[(u64, bytes::Bytes)],
    clock: &dyn Clock,
) -> Result<Vec<(String, bytes::Bytes)>, engine::Error> {
    let now = clock.now_millis();
    part.engine.run_due(now)?;
    for (seq, payload) in events {
        let ev: Event = match serde_json::from_slice(payload) {
            Ok(ev) => ev,
            Err(e) => {
                // Ingest checked every event: this one was not written by
                // sluice. Skipping it is all a replay could do too.
                tracing::error!(
                    target: "sluice::cluster",
                    partition = p,
                    seq,
                    "skipping an unreadable event in the log: {e}"
                );
                continue;
            }
        };
        part.engine.ingest(&ev)?;
    }
    for r in std::mem::take(&mut part.results) {
        if let Some(recorded) = part.engine.delivered(r.local, r.result, &r.news, now)? {
            *part
                .recorded
                .entry((r.channel, recorded.as_str()))
                .or_default() += 1;
        }
        part.refill = true;
    }
    for (id, reply) in std::mem::take(&mut part.erases) {
        let erased = part.engine.erase(&id)?;
        part.answers.push(Box::new(move || {
            let _ = reply.send(Ok(erased));
        }));
    }
    part.engine.run_due(clock.now_millis())?;
    part.engine.commit()?;
    part.dirty = false;
    part.handout.extend(part.engine.take_outbox()?);
    part.batch += 1;
    Ok(part.writes.take(part.batch)?)
}

/// Hands one committed entry to the delivery workers; `false` when its
/// channel's queue is full.
fn offer<O: Outlet>(
    p: u32,
    part: &mut Part,
    outlet: &mut O,
    in_flight: &mut HashMap<u64, (u32, u64)>,
    next_id: &mut u64,
    mut e: OutboxEntry,
) -> bool {
    let local = e.id;
    if part.in_flight.contains(&local) {
        return true;
    }
    let global = *next_id;
    *next_id += 1;
    e.id = global;
    if outlet.offer(e) {
        part.in_flight.insert(local);
        in_flight.insert(global, (p, local));
        true
    } else {
        part.refill = true;
        false
    }
}

/// Offers the outbox's due entries that are not in flight until a queue
/// is full.
fn refill<O: Outlet>(
    part: &mut Part,
    outlet: &mut O,
    in_flight: &mut HashMap<u64, (u32, u64)>,
    next_id: &mut u64,
    now: Millis,
) {
    let p = part.partition;
    part.refill = false;
    let mut after = None;
    loop {
        let page = match part.engine.outbox(after, 512) {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(target: "sluice::cluster", partition = p, "cannot read the outbox: {e}");
                part.refill = true;
                return;
            }
        };
        let Some(last) = page.last().map(|e| e.id) else {
            return;
        };
        after = Some(last);
        for e in page {
            if e.not_before > now || part.in_flight.contains(&e.id) {
                continue;
            }
            if !offer(p, part, outlet, in_flight, next_id, e) {
                return;
            }
        }
    }
}

impl<O: Outlet> Processor for Node<O> {
    fn restore(&mut self, partition: u32, records: Vec<changelog::Record>) {
        let started = Instant::now();
        let n = records.len();
        match self.open(partition, records) {
            Ok(part) => {
                self.parts.insert(partition, part);
                tracing::info!(
                    target: "sluice::cluster",
                    partition,
                    records = n,
                    took_ms = started.elapsed().as_millis() as u64,
                    "partition taken"
                );
            }
            Err(e) => {
                self.failure = Some(format!("cannot restore partition {partition}: {e}"));
            }
        }
    }

    fn apply(
        &mut self,
        partition: u32,
        events: &[(u64, bytes::Bytes)],
    ) -> Vec<(String, bytes::Bytes)> {
        self.drain();
        if self.failure.is_some() {
            return Vec::new();
        }
        let Some(part) = self.parts.get_mut(&partition) else {
            self.failure = Some(format!("partition {partition} is not open on this worker"));
            return Vec::new();
        };
        match run_batch(partition, part, events, &*self.settings.clock) {
            Ok(records) => records,
            Err(e) => {
                part.writes.discard();
                self.failure = Some(e.to_string());
                Vec::new()
            }
        }
    }

    fn committed(&mut self, partition: u32, token: u64, seq: u64) {
        let now = self.settings.clock.now_millis();
        let Some(part) = self.parts.get_mut(&partition) else {
            return;
        };
        tracing::debug!(
            target: "sluice::cluster",
            partition,
            token,
            seq,
            batch = part.batch,
            "committed"
        );
        for a in std::mem::take(&mut part.answers) {
            a();
        }
        for ((channel, result), n) in std::mem::take(&mut part.recorded) {
            self.settings.metrics.delivered(channel, result, n);
        }
        for e in std::mem::take(&mut part.handout) {
            if e.not_before > now {
                continue;
            }
            if !offer(
                partition,
                part,
                &mut self.outlet,
                &mut self.in_flight,
                &mut self.next_id,
                e,
            ) {
                break;
            }
        }
        self.publish_depths();
    }

    fn forget(&mut self, partition: u32) {
        if let Some(part) = self.parts.remove(&partition) {
            self.in_flight.retain(|_, (p, _)| *p != partition);
            drop(part.engine);
            if let Err(e) = std::fs::remove_dir_all(&part.dir) {
                tracing::warn!(
                    target: "sluice::cluster",
                    "cannot remove {}: {e}",
                    part.dir.display()
                );
            }
            tracing::info!(target: "sluice::cluster", partition, "partition given up");
        }
        self.publish_depths();
    }

    fn due(&mut self, partition: u32) -> bool {
        self.drain();
        if self.failure.is_some() {
            return true;
        }
        let now = self.settings.clock.now_millis();
        let Some(part) = self.parts.get_mut(&partition) else {
            return false;
        };
        if part.dirty || !part.results.is_empty() || !part.erases.is_empty() {
            return true;
        }
        match part.engine.next_due() {
            Ok(next) => next.is_some_and(|due| due <= now),
            Err(e) => {
                self.failure = Some(e.to_string());
                true
            }
        }
    }

    fn failure(&mut self) -> Option<String> {
        self.failure.clone()
    }
}
