//! A due message's decision: the policies (FORMAT.md §8), then — when it
//! may go — rendering into the message that becomes an outbox entry. A
//! render failure is decided here too: `failed`, with a dead letter that
//! keeps the render context.

use serde_json::json;

use journeys::template::RenderError;

use crate::clock::{from_millis, to_millis};
use crate::dispatch::{Message, Meta, RenderScope};
use crate::hash;
use crate::machine::send::{self, Due};
use crate::machine::{instance, Ctx};
use crate::policy::{Decision, Outgoing, SentRecord};
use crate::store::users::UserRecord;

use super::Engine;

impl Engine {
    /// Passes a due message through the policies, then renders it.
    pub(super) fn decide(
        &mut self,
        ctx: &mut Ctx<'_>,
        user: &mut UserRecord,
        d: &Due,
    ) -> send::Result {
        let now = ctx.now;
        let Some(p) = instance::pos(user, d.instance) else {
            return send::Result::Suppressed {
                reason: "gone".to_owned(),
            };
        };
        let profile = &user.profile;
        let uid = user.id().to_owned();
        let inst = &user.instances[p];
        let outgoing = Outgoing {
            user: &uid,
            profile,
            journey: &d.journey.id,
            category: &d.journey.category,
            priority: d.journey.priority,
            channel: d.channel,
            due: from_millis(d.due),
            reservations: &d.reservations,
        };
        match self
            .policies
            .decide(&outgoing, &user.sent, from_millis(now))
        {
            Decision::Suppress { reason } => return send::Result::Suppressed { reason },
            Decision::Defer {
                reason,
                until,
                reservations,
            } => {
                return send::Result::Deferred {
                    reason,
                    until: to_millis(until),
                    reservations,
                }
            }
            Decision::Send => {}
        }
        let step = &d.journey.states[d.state].id;
        let version = inst.version;
        // The instance's store-wide id, not its per-user number: ids are never
        // reused, so a user erased and created again under the same id gets
        // new keys (receivers drop repeated keys as duplicates).
        let key = hash::message_key(&d.journey.id, version, &uid, inst.id, step);
        // The render context, read from the record's compact values (in
        // JSON only if a text needs Handlebars or a dead letter keeps it).
        let inst = &user.instances[p];
        let unsubscribe_url = match &self.signer {
            Some(s) => s.link(&uid, &d.journey.category, &key).unwrap_or_default(),
            None => format!("{}/{key}", self.options.unsubscribe_base),
        };
        let scope = RenderScope::new(
            &user.profile,
            &inst.entry,
            (!inst.event.is_null()).then_some(&inst.event),
            Meta {
                journey: &d.journey.id,
                version,
                step,
                key: &key,
                unsubscribe_url: &unsubscribe_url,
            },
        );
        let rendered = match self.config.templates.get(&d.template) {
            Some(t) => self.renderer.render(t, &scope),
            None => Err(RenderError::Failed {
                name: d.template.clone(),
                message: "template not found".into(),
            }),
        };
        let failure = match rendered {
            Ok(content) => {
                let horizon = self.policies.sent_horizon().num_milliseconds();
                user.sent.retain(|s| to_millis(s.at) >= now - horizon);
                user.sent.push(SentRecord {
                    at: from_millis(now),
                    channel: d.channel,
                    category: d.journey.category.clone(),
                });
                let message = Message {
                    key: key.clone(),
                    at: now,
                    user: uid,
                    journey: d.journey.id.clone(),
                    version,
                    step: step.clone(),
                    channel: d.channel,
                    template: d.template.clone(),
                    content,
                };
                return send::Result::Sent {
                    key,
                    message: Box::new(message),
                };
            }
            Err(RenderError::MissingVariable(v)) => format!("missing_variable:{v}"),
            Err(RenderError::Failed { message, .. }) => format!("render_error:{message}"),
        };
        let letter = json!({
            "at": crate::clock::format_ts(now),
            "user": uid,
            "journey": d.journey.id,
            "version": version,
            "step": step,
            "channel": d.channel.as_str(),
            "template": d.template,
            "key": key,
            "reason": failure,
            "attempts": 0,
            "context": scope.context().data(),
        });
        let seq = ctx.next_seq();
        match serde_json::to_vec(&letter) {
            Ok(bytes) => {
                self.store.batch().dead_letter(now, seq, bytes);
                self.depths_pending.dead_letters += 1;
            }
            Err(e) => tracing::error!("cannot record a dead letter: {e}"),
        }
        send::Result::Failed {
            key,
            reason: failure,
        }
    }
}
