//! JourneyTests (FORMAT.md §11): each runs on its own temporary store and
//! virtual clock through the same engine as `run`, and its expectations are
//! matched against the simulate lines it produced.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use journeys::compiled::{Config, Expectation, JourneyTest};
use journeys::limits::MAX_TEST_LINES;

use crate::output::{Line, Sink};
use crate::simulate::{SimError, SimOptions, Simulation};

/// A sink that a caller can read after the engine is gone. It keeps at
/// most [`MAX_TEST_LINES`] lines and counts the others.
#[derive(Clone, Default)]
pub struct SharedLines(pub Arc<Mutex<Vec<Line>>>, Arc<AtomicUsize>);

impl Sink for SharedLines {
    fn line(&mut self, line: Line) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() < MAX_TEST_LINES {
                v.push(line);
            } else {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl SharedLines {
    /// Lines dropped because the limit was reached.
    pub fn dropped(&self) -> usize {
        self.1.load(Ordering::Relaxed)
    }

    pub fn take(&self) -> Vec<Line> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// The result of one JourneyTest.
#[derive(Debug, Clone)]
pub struct TestReport {
    pub id: String,
    pub name: Option<String>,
    pub file: String,
    pub line: usize,
    /// Every line the test produced, as JSON.
    pub lines: Vec<Value>,
    /// `expect` entries no line matched.
    pub missing: Vec<Expectation>,
    /// `expect_none` entries with the lines that matched them.
    pub unexpected: Vec<(Expectation, Vec<Value>)>,
    /// The engine failed.
    pub error: Option<String>,
}

impl TestReport {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.missing.is_empty() && self.unexpected.is_empty()
    }
}

/// Runs one JourneyTest.
pub fn run_test(config: Arc<Config>, test: &JourneyTest) -> TestReport {
    let mut report = TestReport {
        id: test.id.clone(),
        name: test.name.clone(),
        file: test.file.clone(),
        line: test.line,
        lines: Vec::new(),
        missing: Vec::new(),
        unexpected: Vec::new(),
        error: None,
    };
    match simulate_test(config, test) {
        Ok(lines) => {
            report.lines = lines.iter().map(Line::to_json).collect();
            report.missing = unmatched(&test.expect, &report.lines);
            for e in &test.expect_none {
                let hits: Vec<Value> = report
                    .lines
                    .iter()
                    .filter(|l| e.matches(l))
                    .cloned()
                    .collect();
                if !hits.is_empty() {
                    report.unexpected.push((e.clone(), hits));
                }
            }
        }
        Err(e) => report.error = Some(e),
    }
    report
}

/// Runs every JourneyTest of the configuration, in order.
pub fn run_all(config: &Arc<Config>) -> Vec<TestReport> {
    config
        .tests
        .iter()
        .map(|t| run_test(Arc::clone(config), t))
        .collect()
}

/// Why a test stopped early.
fn too_many(sink: &SharedLines) -> Result<(), String> {
    if sink.dropped() > 0 {
        return Err(format!(
            "the test produced more than {MAX_TEST_LINES} lines and was stopped; shorten `run_until` or send fewer events"
        ));
    }
    Ok(())
}

fn simulate_test(config: Arc<Config>, test: &JourneyTest) -> Result<Vec<Line>, String> {
    let sink = SharedLines::default();
    let options = SimOptions {
        holdouts: !test.ignore_holdouts,
        cache_users: 1_000,
        sled_cache_bytes: 8 << 20,
        ..SimOptions::default()
    };
    let mut events = test.events.clone();
    events.sort_by_key(|e| e.ts);
    // The run ends at `run_until`, as `simulate --until` does: an event
    // after it never happens.
    events.retain(|e| e.ts <= test.run_until);
    let error = |e: SimError| e.to_string();
    let mut sim =
        Simulation::new(config, test.start, &options, Box::new(sink.clone())).map_err(error)?;
    for e in &events {
        sim.event(e).map_err(error)?;
        too_many(&sink)?;
    }
    // A day at a time, so that a test producing too much stops early.
    let mut at = events.last().map_or(test.start, |e| e.ts.max(test.start));
    while at < test.run_until {
        at = (at + chrono::TimeDelta::days(1)).min(test.run_until);
        sim.advance(at).map_err(error)?;
        too_many(&sink)?;
    }
    sim.finish(test.run_until).map_err(error)?;
    too_many(&sink)?;
    Ok(sink.take())
}

/// The expectations left unmatched by a maximum matching of expectations to
/// distinct lines (two identical expectations need two lines).
pub fn unmatched(expect: &[Expectation], lines: &[Value]) -> Vec<Expectation> {
    let candidates: Vec<Vec<usize>> = expect
        .iter()
        .map(|e| (0..lines.len()).filter(|&i| e.matches(&lines[i])).collect())
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; lines.len()];
    fn augment(
        e: usize,
        cands: &[Vec<usize>],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for &l in &cands[e] {
            if seen[l] {
                continue;
            }
            seen[l] = true;
            if owner[l].is_none_or(|o| augment(o, cands, owner, seen)) {
                owner[l] = Some(e);
                return true;
            }
        }
        false
    }
    let mut missing = Vec::new();
    for (e, exp) in expect.iter().enumerate() {
        let mut seen = vec![false; lines.len()];
        if !augment(e, &candidates, &mut owner, &mut seen) {
            missing.push(exp.clone());
        }
    }
    missing
}
