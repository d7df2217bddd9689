//! Schedule-triggered journeys (`entry.schedule`): one timer per journey
//! and zone (each known user's zone for `timezone: user`), re-armed at each
//! firing; the cursors live in the meta table with every commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use journeys::compiled::Trigger;
use journeys::scalar::Zone;

use crate::calendar;
use crate::clock::Millis;
use crate::store::audiences::Audiences;
use crate::store::timers::{Timer, TimerKey, TimerKind};
use crate::store::users::Users;
use crate::store::zones::Zones;

use super::{Engine, Error, Step};

/// The schedules' cursors, persisted in the meta table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Schedules {
    /// Every effective zone of a known user (for `timezone: user`).
    pub(super) zones: BTreeSet<String>,
    /// "journey\0zone" → (cron source, pending timer).
    pub(super) timers: BTreeMap<String, (String, TimerKey)>,
    /// A firing in progress: its audience is entered page by page, with
    /// commits in between; after a restart it goes on from its cursor
    /// before anything else happens.
    pub(super) firing: Option<Firing>,
}

/// Where a schedule's firing is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Firing {
    journey: String,
    zone: String,
    due: Millis,
    /// The last (zone, user) entered.
    after: Option<(String, String)>,
}

impl Engine {
    /// Makes sure every schedule has its timer: for a fixed zone one, for
    /// `timezone: user` one per known zone (only `zone` when given).
    pub(super) fn arm_schedules(&mut self, only_zone: Option<&str>) -> Result<(), Error> {
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
                    self.set_schedule_timer(name, source, &journey.id, &z, due);
                }
            }
        }
        Ok(())
    }

    fn set_schedule_timer(
        &mut self,
        name: String,
        source: &str,
        journey: &str,
        zone: &str,
        due: Millis,
    ) {
        let key = self.timer_key(due);
        let timer = Timer {
            user: String::new(),
            kind: TimerKind::Schedule {
                journey: journey.to_owned(),
                zone: zone.to_owned(),
            },
        };
        self.store.set_timer(key, timer);
        self.schedules.timers.insert(name, (source.to_owned(), key));
    }

    /// A schedule's timer fired: every member of its audience in `zone`
    /// enters (page by page, committing as it goes, with the firing's
    /// cursor in each commit), then the next firing is armed.
    pub(super) fn fire_schedule(
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
        let Some(journey) = config.journeys.iter().find(|j| j.id == journey_id) else {
            return Ok(());
        };
        if !matches!(journey.entry.trigger, Trigger::Schedule { .. }) {
            return Ok(());
        }
        self.schedules.firing = Some(Firing {
            journey: journey_id.to_owned(),
            zone: zone.to_owned(),
            due: now,
            after: None,
        });
        self.continue_firing()
    }

    /// Enters the rest of the audience of the firing in progress, if any.
    pub(super) fn continue_firing(&mut self) -> Result<(), Error> {
        let config = Arc::clone(&self.config);
        while let Some(firing) = self.schedules.firing.clone() {
            let Some(j) = config.journeys.iter().position(|j| j.id == firing.journey) else {
                self.schedules.firing = None;
                break;
            };
            let Trigger::Schedule {
                zone: zone_kind,
                segment,
                cron,
                source,
            } = &config.journeys[j].entry.trigger
            else {
                self.schedules.firing = None;
                break;
            };
            let zone = firing.zone.as_str();
            let kv = self.store.view();
            let from = firing.after.as_ref().map(|(z, u)| (z.as_str(), u.as_str()));
            let page: Vec<(String, String)> = match (segment, zone_kind) {
                (Some(s), Zone::User) => kv.audience(s, Some(zone), from, 1_000)?,
                (Some(s), Zone::Fixed(_)) => kv.audience(s, None, from, 1_000)?,
                (None, Zone::User) => kv
                    .zone_users(zone, from.map(|(_, u)| u), 1_000)?
                    .into_iter()
                    .map(|u| (zone.to_owned(), u))
                    .collect(),
                (None, Zone::Fixed(_)) => kv
                    .user_ids(from.map(|(_, u)| u), 1_000)?
                    .into_iter()
                    .map(|u| (String::new(), u))
                    .collect(),
            };
            let Some(last) = page.last().cloned() else {
                // Done: the next firing.
                self.schedules.firing = None;
                if let Ok(tz) = zone.parse::<chrono_tz::Tz>() {
                    if let Some(due) = calendar::next_cron(cron, tz, firing.due) {
                        let name = format!("{}\0{zone}", firing.journey);
                        self.set_schedule_timer(name, source, &firing.journey, zone, due);
                    }
                }
                break;
            };
            for (_, id) in page {
                self.unit(&id, firing.due, Step::Schedule(j))?;
            }
            if let Some(f) = &mut self.schedules.firing {
                f.after = Some(last);
            }
            self.maybe_commit()?;
        }
        Ok(())
    }
}
