//! Index maintenance: the zones table (users by time zone, for
//! `timezone: user` schedules) and the audiences of schedule segments,
//! kept in step with each user's record.

use crate::calendar;
use crate::clock::Millis;
use crate::store::users::UserRecord;

use super::{Engine, Error};

impl Engine {
    /// Keeps the zones and audiences indexes in step with the user's zone
    /// and schedule-segment memberships.
    pub(super) fn reindex(
        &mut self,
        id: &str,
        rec: &mut UserRecord,
        now: Millis,
    ) -> Result<(), Error> {
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
}
