//! `sluice simulate` and `sluice test` as a library: the real engine on a
//! virtual clock, a store in a temporary directory (or a given one), and a
//! recording dispatcher.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use journeys::compiled::Config;
use journeys::event::Event;

use crate::clock::{to_millis, Millis, VirtualClock};
use crate::dispatch::Recording;
use crate::engine::{self, Delivery, Engine, Error};
use crate::output::{Sink, Summary};
use crate::store::attrs::Obj;
use crate::store::scratch::ScratchStore;
use crate::store::sled_store::{Recovery, SledOptions, SledStore};
use crate::store::Store;

/// How a simulation runs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Whether holdouts apply.
    pub holdouts: bool,
    /// Where the store lives; a temporary directory when `None`.
    pub store: Option<PathBuf>,
    /// Users kept in the write-back cache.
    pub cache_users: usize,
    /// sled's page cache in bytes (a kept store; a temporary one is a
    /// [`ScratchStore`], without sled).
    pub sled_cache_bytes: u64,
    /// Keep the message log in the store (off by default: the lines are
    /// the simulation's output).
    pub log_messages: bool,
    /// Commit once this many writes are pending.
    pub commit_every: usize,
    /// Failure injection in the store, for tests.
    pub faults: Option<crate::store::log::Faults>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            holdouts: true,
            store: None,
            cache_users: engine::Options::default().cache_users,
            sled_cache_bytes: SledOptions::default().cache_bytes,
            log_messages: false,
            commit_every: engine::Options::default().commit_every,
            faults: None,
        }
    }
}

/// An event's properties in the engine's compact form, converted on the
/// thread that reads the events so that the engine's thread does not.
#[derive(Debug, Default)]
pub struct Props(Obj);

impl Props {
    pub fn of(ev: &Event) -> Props {
        Props(Obj::from_json(&ev.props))
    }
}

/// A running simulation: feed it events in timestamp order, then finish.
pub struct Simulation {
    engine: Engine,
    clock: VirtualClock,
    start: Millis,
    last: Millis,
    durable: bool,
    recovery: Recovery,
    _dir: Option<tempfile::TempDir>,
}

/// The error of a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Engine(#[from] Error),
    #[error("cannot create a temporary store: {0}")]
    TempDir(std::io::Error),
}

impl Simulation {
    /// Starts the virtual clock at `start` on a fresh (or the given) store.
    pub fn new(
        config: Arc<Config>,
        start: DateTime<Utc>,
        options: &SimOptions,
        sink: Box<dyn Sink + Send>,
    ) -> Result<Simulation, SimError> {
        let (path, dir) = match &options.store {
            Some(p) => (p.clone(), None),
            None => {
                let d = tempfile::Builder::new()
                    .prefix("sluice-sim-")
                    .tempdir()
                    .map_err(SimError::TempDir)?;
                (d.path().join("store"), Some(d))
            }
        };
        // A temporary store is never reopened: the scratch store, unless
        // a test injects failures into the sled one.
        let (store, recovery): (Box<dyn Store>, Recovery) = match &dir {
            Some(_) if options.faults.is_none() => (
                Box::new(ScratchStore::create(&path).map_err(Error::from)?),
                Recovery::default(),
            ),
            _ => {
                let store = SledStore::open(
                    &path,
                    &SledOptions {
                        cache_bytes: options.sled_cache_bytes,
                        temporary: dir.is_some(),
                        // sled's inserts on a thread of their own (a
                        // kept store only; the crash tests drive it).
                        pipeline: true,
                        faults: options.faults.clone(),
                        ..SledOptions::default()
                    },
                )
                .map_err(Error::from)?;
                let recovery = store.recovery().clone();
                (Box::new(store), recovery)
            }
        };
        let clock = VirtualClock::new(start);
        let engine = Engine::open(
            config,
            store,
            Arc::new(clock.clone()),
            Delivery::Inline(Box::new(Recording::default())),
            sink,
            engine::Options {
                holdouts: options.holdouts,
                cache_users: options.cache_users,
                // Bounded by `cache_users` alone, as its benchmarks were
                // measured (a simulation's store is usually temporary).
                cache_bytes: usize::MAX,
                log_messages: options.log_messages,
                commit_every: options.commit_every,
                durable: options.store.is_some(),
                ..engine::Options::default()
            },
        )?;
        let start = to_millis(start);
        let mut engine = engine;
        engine.set_floor(start);
        Ok(Simulation {
            engine,
            clock,
            start,
            last: i64::MIN,
            durable: options.store.is_some(),
            recovery,
            _dir: dir,
        })
    }

    /// What opening a kept store found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// Applies the next event (events must come in `ts` order; an earlier
    /// one is applied at its own `ts` all the same). Events before the
    /// start only build profiles and history.
    pub fn event(&mut self, ev: &Event) -> Result<(), SimError> {
        self.event_converted(ev, None)
    }

    /// [`Simulation::event`], with the event's properties already in the
    /// record's form ([`Props::of`], done by the thread that reads the
    /// events, off the engine's).
    pub fn event_converted(&mut self, ev: &Event, props: Option<Props>) -> Result<(), SimError> {
        let ts = to_millis(ev.ts);
        if ts < self.start {
            self.engine.import(ev)?;
            return Ok(());
        }
        if ts > self.last {
            // A kept store commits only between instants: a restart then
            // resumes with every event of the last committed instant in and
            // none of the next, so the timers set at that instant fire
            // after all of its events, as they would have.
            if self.durable {
                self.engine.maybe_commit()?;
            }
            // Everything due up to this instant happens first; messages due
            // at one instant are decided once all its events are in.
            self.clock.set(ev.ts);
            self.engine.run_due(ts)?;
            self.last = ts;
        }
        match props {
            Some(Props(props)) => self.engine.ingest_converted(ev, props)?,
            None => self.engine.ingest(ev)?,
        };
        if !self.durable {
            self.engine.maybe_commit()?;
        }
        Ok(())
    }

    /// Runs the clock to `until` (everything due by then happens), and
    /// stays ready for more: a caller can stop between slices of time.
    pub fn advance(&mut self, until: DateTime<Utc>) -> Result<(), SimError> {
        let ts = to_millis(until);
        self.clock.set(until);
        self.engine.run_due(ts)?;
        self.last = self.last.max(ts);
        Ok(())
    }

    /// Runs the clock to `until` and commits (a temporary store, deleted
    /// now, is not). Returns the summary.
    pub fn finish(mut self, until: DateTime<Utc>) -> Result<Summary, SimError> {
        self.clock.set(until);
        self.engine.run_due(to_millis(until))?;
        if self.durable {
            self.engine.sync()?;
        }
        Ok(self.engine.summary().clone())
    }

    /// Stops without running the clock further, committing what was
    /// processed (a restartable simulation).
    pub fn stop(mut self) -> Result<Summary, SimError> {
        self.engine.sync()?;
        Ok(self.engine.summary().clone())
    }
}

/// Simulates `events` (sorted here by `ts`, stably) from `start` (default:
/// the first event) to `until` (default: 30 days after the last event).
pub fn simulate(
    config: Arc<Config>,
    mut events: Vec<Event>,
    start: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    options: &SimOptions,
    sink: Box<dyn Sink + Send>,
) -> Result<Summary, SimError> {
    events.sort_by_key(|e| e.ts);
    let first = events.first().map(|e| e.ts);
    let last = events.last().map(|e| e.ts);
    let start = start.or(first).unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let until = until
        .or(last.map(|l| l + chrono::TimeDelta::days(30)))
        .unwrap_or(start);
    let mut sim = Simulation::new(config, start, options, sink)?;
    for e in events.iter().take_while(|e| e.ts <= until) {
        sim.event(e)?;
    }
    sim.finish(until)
}
