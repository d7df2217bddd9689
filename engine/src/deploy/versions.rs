//! The journey versions the engine runs at once: the version new entries
//! go to (the stable one, from the config), a canary taking a share of new
//! entries, and every older version live instances entered and stay on
//! until they end. Pure lookups; where the versions come from is
//! [`super::state`]'s business.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use journeys::compiled::{Config, Journey};

use crate::hash;

/// A canary: a newer version taking `basis_points` (of 10,000) of new
/// entries.
#[derive(Debug, Clone)]
pub struct Canary {
    pub journey: Arc<Journey>,
    pub basis_points: u32,
}

/// Every runnable version of every journey.
#[derive(Debug, Default, Clone)]
pub struct Versions {
    /// aHash: looked up for every event and timer, and SipHash showed in
    /// profiles; keys are the config's journey ids.
    by_id: HashMap<String, BTreeMap<u32, Arc<Journey>>, ahash::RandomState>,
    canaries: HashMap<String, Canary, ahash::RandomState>,
}

impl Versions {
    /// One version per journey: the config's (`simulate`, `test`, a store
    /// with nothing deployed).
    pub fn of(config: &Config) -> Versions {
        let mut v = Versions::default();
        for j in &config.journeys {
            v.add(Arc::clone(j));
        }
        v
    }

    /// Adds a version (a later add of the same version replaces it).
    pub fn add(&mut self, journey: Arc<Journey>) {
        self.by_id
            .entry(journey.id.clone())
            .or_default()
            .insert(journey.version, journey);
    }

    /// Sends `basis_points` of new entries of the canary's journey to it.
    pub fn set_canary(&mut self, canary: Canary) {
        self.add(Arc::clone(&canary.journey));
        self.canaries.insert(canary.journey.id.clone(), canary);
    }

    pub fn canary(&self, journey: &str) -> Option<&Canary> {
        self.canaries.get(journey)
    }

    /// Version `version` of `journey`; for an instance of a version this
    /// engine does not know (a store written before deployments were
    /// recorded), the config's current one, which the instance then
    /// follows by step id.
    pub fn get<'a>(
        &'a self,
        config: &'a Config,
        journey: &str,
        version: u32,
    ) -> Option<&'a Arc<Journey>> {
        self.by_id
            .get(journey)
            .and_then(|vs| vs.get(&version))
            .or_else(|| config.journey(journey))
    }

    /// The version a new entry of `user` into `stable`'s journey goes to:
    /// the canary when the user's canary bucket is below its share, else
    /// `stable`. The bucket is salted apart from holdouts, so canary and
    /// holdout membership are independent, and stable as the share grows.
    pub fn entering<'a>(&'a self, stable: &'a Arc<Journey>, user: &str) -> &'a Arc<Journey> {
        match self.canaries.get(&stable.id) {
            Some(c) if hash::in_canary(&stable.id, user, c.basis_points) => &c.journey,
            _ => stable,
        }
    }

    /// Every version that is not `config`'s own (for the index).
    pub fn others(&self, config: &Config) -> Vec<Arc<Journey>> {
        let mut out = Vec::new();
        for (id, vs) in &self.by_id {
            let current = config.journey(id).map(|j| j.version);
            for (v, j) in vs {
                if Some(*v) != current {
                    out.push(Arc::clone(j));
                }
            }
        }
        out.sort_by(|a, b| (&a.id, a.version).cmp(&(&b.id, b.version)));
        out
    }

    /// Every version of every journey.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Journey>> {
        self.by_id.values().flat_map(|vs| vs.values())
    }

    /// Every known version of `journey`, oldest first.
    pub fn of_journey(&self, journey: &str) -> impl Iterator<Item = &Arc<Journey>> {
        self.by_id
            .get(journey)
            .into_iter()
            .flat_map(|vs| vs.values())
    }
}
