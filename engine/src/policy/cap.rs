//! Step 2: frequency caps.
//!
//! A cap counts the user's sent messages that its scope applies to, with
//! `at` in the sliding window `(now - per, now]`: a message sent at `t`
//! counts until `t + per`, exclusive. At or over the limit a `drop` cap
//! suppresses; a `delay` cap defers until the earliest instant enough old
//! sends have left the window. When several caps object, a `drop` wins over
//! any `delay`; among `delay`s the latest `until` wins (no message could be
//! sent before it anyway), the first cap in configuration order on ties.

use chrono::{DateTime, TimeDelta, Utc};
use journeys::compiled::{FrequencyCap, PolicyAction};

use super::{channel_index, delta, sub, Decision, Outgoing, SentRecord};

#[derive(Debug)]
struct Cap {
    def: FrequencyCap,
    per: TimeDelta,
    /// `frequency_cap:<id>`.
    reason: String,
}

#[derive(Debug)]
pub(super) struct Caps {
    caps: Vec<Cap>,
    /// Per channel, the caps whose scope includes it, in configuration order.
    by_channel: [Vec<usize>; 3],
    horizon: TimeDelta,
}

impl Caps {
    pub(super) fn new(defs: &[FrequencyCap]) -> Self {
        let mut by_channel: [Vec<usize>; 3] = Default::default();
        let mut caps = Vec::with_capacity(defs.len());
        let mut horizon = TimeDelta::zero();
        for (i, def) in defs.iter().enumerate() {
            for ch in journeys::compiled::Channel::ALL {
                if def
                    .scope
                    .channels
                    .as_ref()
                    .is_none_or(|cs| cs.contains(&ch))
                {
                    by_channel[channel_index(ch)].push(i);
                }
            }
            let per = delta(def.per);
            horizon = horizon.max(per);
            caps.push(Cap {
                def: def.clone(),
                per,
                reason: format!("frequency_cap:{}", def.id),
            });
        }
        Caps {
            caps,
            by_channel,
            horizon,
        }
    }

    pub(super) fn horizon(&self) -> TimeDelta {
        self.horizon
    }

    pub(super) fn check(
        &self,
        msg: &Outgoing<'_>,
        sent: &[SentRecord],
        now: DateTime<Utc>,
    ) -> Option<Decision> {
        let mut delay: Option<(DateTime<Utc>, usize)> = None;
        for &i in &self.by_channel[channel_index(msg.channel)] {
            let cap = &self.caps[i];
            if !cap.def.scope.applies(msg.channel, msg.category) {
                continue;
            }
            let from = sub(now, cap.per);
            let counts = |r: &&SentRecord| {
                r.at > from && r.at <= now && cap.def.scope.applies(r.channel, &r.category)
            };
            let count = sent.iter().filter(counts).count();
            let limit = cap.def.limit as usize;
            if count < limit {
                continue;
            }
            if cap.def.action == PolicyAction::Drop || limit == 0 {
                // A zero limit (rejected by the compiler) could never free a slot.
                return Some(Decision::Suppress {
                    reason: cap.reason.clone(),
                });
            }
            // The slot frees when the (count - limit + 1)-th oldest counted send
            // leaves the window.
            let mut times: Vec<DateTime<Utc>> = sent.iter().filter(counts).map(|r| r.at).collect();
            times.sort_unstable();
            let until = super::add(times[count - limit], cap.per);
            if delay.is_none_or(|(u, _)| until > u) {
                delay = Some((until, i));
            }
        }
        delay.map(|(until, i)| Decision::Defer {
            reason: self.caps[i].reason.clone(),
            until,
            reservations: Vec::new(),
        })
    }
}
