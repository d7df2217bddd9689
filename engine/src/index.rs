//! What the engine precomputes from a [`Config`] once: which journeys an
//! event can enter, exit or convert; which segments start journeys; which
//! events the history must keep, and for how long.

use std::collections::HashSet;

use std::sync::Arc;

use journeys::compiled::{Action, Config, Journey, Trigger};
use journeys::condition::Condition;
use journeys::scalar::Zone;

use crate::clock::Millis;
use crate::store::history::Retention;

/// A `history … within` clause of an entry segment: when an event of that
/// name leaves the window, membership may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub event: String,
    pub within: Millis,
}

/// A map or set looked up by event name or segment id on every event:
/// a randomly seeded aHash (SipHash was ~2% of the engine's instructions).
pub type NameMap<V> = std::collections::HashMap<String, V, ahash::RandomState>;
pub type NameSet = std::collections::HashSet<String, ahash::RandomState>;

#[derive(Debug, Default)]
pub struct Index {
    /// Event name → journeys (indexes into `Config::journeys`) it enters, by
    /// descending priority, then id.
    pub entries: NameMap<Vec<usize>>,
    /// Event names some journey exits on.
    pub exits: NameSet,
    /// Event names some journey's goal counts.
    pub goals: NameSet,
    /// Event names some `wait_for` waits for.
    pub awaited: NameSet,
    /// Entry segments and the journeys they start (by priority).
    pub segment_entries: Vec<(String, Vec<usize>)>,
    /// Windows that can change an entry or audience segment's membership
    /// as time passes.
    pub windows: Vec<Window>,
    /// Journeys entered by schedule.
    pub schedules: Vec<usize>,
    /// Whether some schedule fires in each user's own zone (the zones index
    /// is only kept then).
    pub user_zone_schedules: bool,
    /// Segments that schedules enter (the audiences index keeps their
    /// members).
    pub audiences: Vec<String>,
    /// Event names the history keeps.
    pub history: NameSet,
    /// Of those, the ones whose properties a `history … where` reads (the
    /// others are kept without properties).
    pub history_props: NameSet,
    pub retention: Retention,
    /// Segment id → index into `Config::segments`.
    pub segments: NameMap<usize>,
}

fn walk_histories(c: &Condition, out: &mut Vec<(String, Option<Millis>)>, segs: &mut Vec<String>) {
    c.walk(&mut |n| match n {
        Condition::History(h) => {
            // A `where` needs the events' properties: marked with a '\0'.
            if h.where_.is_some() {
                out.push((format!("\0{}", h.event.value), None));
            }
            out.push((h.event.value.clone(), h.within.map(|d| d.millis())))
        }
        Condition::Segment(s) => segs.push(s.value.clone()),
        _ => {}
    });
}

/// What one journey version reads as events arrive: exits, goals, awaited
/// events, and the history its conditions look at.
fn reads(
    journey: &Journey,
    ix: &mut Index,
    histories: &mut Vec<(String, Option<Millis>)>,
    segs: &mut Vec<String>,
) {
    if let Some(w) = &journey.entry.when {
        walk_histories(w, histories, segs);
    }
    for e in &journey.exits {
        ix.exits.insert(e.event.clone());
        if let Some(w) = &e.when {
            walk_histories(w, histories, segs);
        }
    }
    if let Some(g) = &journey.goal {
        ix.goals.insert(g.event.clone());
        if let Some(w) = &g.when {
            walk_histories(w, histories, segs);
        }
    }
    for s in &journey.states {
        match &s.action {
            Action::WaitFor { event, where_, .. } => {
                ix.awaited.insert(event.clone());
                if let Some(w) = where_ {
                    walk_histories(w, histories, segs);
                }
            }
            Action::Branch { arms, .. } => {
                for (w, _) in arms {
                    if let Some(w) = w {
                        walk_histories(w, histories, segs);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Index {
    pub fn new(config: &Config) -> Index {
        Index::with_versions(config, &[])
    }

    /// The index of `config` (whose journeys are the versions new entries
    /// go to), with `others`: further deployed versions that live
    /// instances run on (a canary, an older stable).
    pub fn with_versions(config: &Config, others: &[Arc<Journey>]) -> Index {
        let mut ix = Index {
            segments: config
                .segments
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.clone(), i))
                .collect(),
            ..Index::default()
        };
        let mut order: Vec<usize> = (0..config.journeys.len()).collect();
        order.sort_by(|a, b| {
            let (ja, jb) = (&config.journeys[*a], &config.journeys[*b]);
            jb.priority
                .cmp(&ja.priority)
                .then_with(|| ja.id.cmp(&jb.id))
        });
        let mut histories: Vec<(String, Option<Millis>)> = Vec::new();
        let mut segs = Vec::new();
        let mut entry_segments: Vec<(String, Vec<usize>)> = Vec::new();
        for &j in &order {
            let journey = &config.journeys[j];
            match &journey.entry.trigger {
                Trigger::Event(name) => ix.entries.entry(name.clone()).or_default().push(j),
                Trigger::Segment(s) => match entry_segments.iter_mut().find(|(id, _)| id == s) {
                    Some((_, js)) => js.push(j),
                    None => entry_segments.push((s.clone(), vec![j])),
                },
                Trigger::Schedule { zone, segment, .. } => {
                    ix.schedules.push(j);
                    ix.user_zone_schedules |= *zone == Zone::User;
                    if let Some(s) = segment {
                        if !ix.audiences.contains(s) {
                            ix.audiences.push(s.clone());
                        }
                    }
                }
            }
            reads(journey, &mut ix, &mut histories, &mut segs);
        }
        // Versions other than the current one that live instances still
        // run on: their exits, goals and awaited events count, and the
        // history they read is kept (they are never entered from here).
        for journey in others {
            reads(journey, &mut ix, &mut histories, &mut segs);
        }
        for s in &config.segments {
            walk_histories(&s.when, &mut histories, &mut Vec::new());
        }
        ix.history_props = histories
            .iter()
            .filter_map(|(n, _)| n.strip_prefix('\0').map(str::to_owned))
            .collect();
        histories.retain(|(n, _)| !n.starts_with('\0'));
        ix.history = histories.iter().map(|(n, _)| n.clone()).collect();
        let base = config.project.history_retention.millis();
        let unbounded = histories.iter().any(|(_, w)| w.is_none());
        let longest = histories.iter().filter_map(|(_, w)| *w).max().unwrap_or(0);
        ix.retention = Retention {
            max_age: (!unbounded).then_some(base.max(longest)),
            max_count: (config.project.history_limit as usize).max(1),
        };
        // Windows of entry and audience segments, including the segments
        // they reference.
        let watched: Vec<String> = entry_segments
            .iter()
            .map(|(s, _)| s.clone())
            .chain(ix.audiences.iter().cloned())
            .collect();
        for seg in &watched {
            let mut todo = vec![seg.clone()];
            let mut seen = HashSet::new();
            while let Some(s) = todo.pop() {
                if !seen.insert(s.clone()) {
                    continue;
                }
                let Some(def) = ix.segments.get(&s).map(|i| &config.segments[*i]) else {
                    continue;
                };
                let mut hs = Vec::new();
                walk_histories(&def.when, &mut hs, &mut todo);
                for (event, within) in hs {
                    if let Some(within) = within {
                        let w = Window { event, within };
                        if !ix.windows.contains(&w) {
                            ix.windows.push(w);
                        }
                    }
                }
            }
        }
        ix.segment_entries = entry_segments;
        ix
    }

    /// The next instant after `now` at which an event of `history` leaves
    /// one of the entry segments' windows.
    pub fn next_boundary(
        &self,
        history: &[crate::store::history::HistEntry],
        now: Millis,
    ) -> Option<Millis> {
        let mut best: Option<Millis> = None;
        for w in &self.windows {
            for e in history.iter().filter(|e| e.name == w.event && e.ts <= now) {
                let b = e.ts.saturating_add(w.within);
                if b > now {
                    best = Some(best.map_or(b, |x| x.min(b)));
                    break; // history is in ts order: the first is the earliest
                }
            }
        }
        best
    }
}
