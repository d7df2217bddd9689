//! The writer's side of feedback intake (RUN.md §3): a provider's notice
//! is matched to its message by key ([`crate::store::recipients`]) and
//! changes the recipient's profile: a hard bounce marks the address
//! bounced (while the profile still holds it), a complaint unsubscribes
//! the user from `marketing` and every other non-transactional category
//! they received. Everything else changes nothing.

use std::collections::BTreeSet;

use journeys::compiled::TRANSACTIONAL;
use serde_json::Value;

use crate::clock::Millis;
use crate::dispatch::AddressNews;
use crate::feedback::{Kind, Notice};
use crate::store::recipients::Recipients;

use super::{Engine, Error};

impl Engine {
    /// Applies notices at `now`; for each, whether it was matched to a
    /// message of a known user.
    pub fn feedback(&mut self, notices: &[Notice], now: Millis) -> Result<Vec<bool>, Error> {
        let mut matched = Vec::with_capacity(notices.len());
        for n in notices {
            matched.push(self.notice(n, now)?);
        }
        Ok(matched)
    }

    fn notice(&mut self, n: &Notice, now: Millis) -> Result<bool, Error> {
        let Some(key) = n.key.as_deref() else {
            return Ok(false);
        };
        let Some(r) = self.store.view().recipient(key)? else {
            return Ok(false);
        };
        if self.user(&r.user)?.is_none() {
            return Ok(false);
        }
        match n.kind {
            Kind::HardBounce => {
                if let Some(address) = &n.address {
                    let news = [AddressNews::EmailBounced {
                        address: address.clone(),
                    }];
                    self.address_news(&r.user, &news, now)?;
                }
            }
            Kind::Complaint => {
                let mut categories: BTreeSet<String> = BTreeSet::new();
                categories.insert("marketing".to_owned());
                categories.insert(r.category.clone());
                categories.extend(self.store.view().received_categories(&r.user)?);
                categories.remove(TRANSACTIONAL);
                for c in categories {
                    let path = format!("subscriptions.{c}");
                    self.set_profile(&r.user, &path, Value::Bool(false), now)?;
                }
            }
            Kind::SoftBounce | Kind::Delivery | Kind::Subscription | Kind::Other => {}
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use journeys::event::Event;
    use serde_json::{json, Value};

    use crate::dispatch::AddressNews;
    use crate::engine::Engine;
    use crate::feedback::{Kind, Notice};
    use crate::store::recipients::Recipients;

    struct Fixture {
        engine: Engine,
        now: i64,
        seq: u32,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tmp");
            let (engine, now) = crate::engine::fixture::open("feedback", dir.path());
            Fixture {
                engine,
                now,
                seq: 0,
                _dir: dir,
            }
        }

        fn event(&mut self, mut v: Value) {
            self.seq += 1;
            self.now += 1_000;
            v["id"] = json!(format!("e{}", self.seq));
            v["ts"] = json!(crate::clock::format_ts(self.now));
            let ev = Event::from_line(&v.to_string()).expect("event");
            self.engine.ingest(&ev).expect("ingest");
            self.engine.run_due(self.now).expect("due");
        }

        fn identify(&mut self, user: &str, traits: Value) {
            self.event(json!({"type": "identify", "user": user, "traits": traits}));
        }

        fn order(&mut self, user: &str) {
            self.event(json!({"type": "track", "user": user, "event": "ordered"}));
        }

        /// The keys of the messages committed since the last call, by
        /// (journey, step).
        fn sent(&mut self) -> Vec<(String, String, String)> {
            self.engine.commit().expect("commit");
            self.engine
                .take_outbox()
                .expect("outbox")
                .into_iter()
                .map(|e| (e.message.journey, e.message.step, e.message.key))
                .collect()
        }

        fn key(&mut self, journey: &str, step: &str) -> String {
            self.sent()
                .into_iter()
                .find(|(j, s, _)| j == journey && s == step)
                .map(|(_, _, k)| k)
                .unwrap_or_else(|| panic!("no {journey}/{step} message"))
        }

        fn feedback(&mut self, kind: Kind, key: &str, address: &str) -> bool {
            self.now += 1_000;
            let n = Notice {
                kind,
                key: Some(key.to_owned()),
                address: Some(address.to_owned()),
            };
            self.engine.feedback(&[n], self.now).expect("feedback")[0]
        }

        fn profile(&mut self, user: &str) -> Value {
            self.engine
                .user(user)
                .expect("user")
                .expect("known")
                .profile
                .to_json()
        }

        /// The latest logged outcome of `journey` for `user`, with its reason.
        fn last_outcome(&mut self, user: &str, journey: &str) -> (String, Option<String>) {
            let view = self.engine.inspect(user).expect("inspect").expect("known");
            let m = view["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .find(|m| m["journey"] == journey)
                .cloned()
                .expect("a message");
            (
                m["outcome"].as_str().unwrap_or("").to_owned(),
                m["reason"].as_str().map(str::to_owned),
            )
        }
    }

    #[test]
    fn a_hard_bounce_marks_the_address_until_a_new_email_arrives() {
        let mut f = Fixture::new();
        f.identify("u1", json!({"email": "u1@x.io", "push_tokens": ["t1"]}));
        f.order("u1");
        let key = f.key("promo", "offer");
        assert_eq!(
            f.engine
                .store
                .view()
                .recipient(&key)
                .expect("get")
                .map(|r| (r.user, r.category)),
            Some(("u1".to_owned(), "marketing".to_owned()))
        );
        // A bounce for an address the profile no longer holds: matched,
        // nothing changes.
        assert!(f.feedback(Kind::HardBounce, &key, "old@x.io"));
        assert!(f.profile("u1").get("email_status").is_none());
        // A soft bounce is only counted.
        assert!(f.feedback(Kind::SoftBounce, &key, "u1@x.io"));
        assert!(f.profile("u1").get("email_status").is_none());
        assert!(f.feedback(Kind::HardBounce, &key, "U1@x.io"));
        assert_eq!(f.profile("u1")["email_status"], "bounced");

        // Later email is suppressed `bounced`; push still goes.
        f.order("u1");
        assert_eq!(
            f.last_outcome("u1", "promo"),
            ("suppressed".into(), Some("bounced".into()))
        );
        // The same address again keeps it bounced.
        f.identify("u1", json!({"email": "u1@x.io"}));
        f.order("u1");
        assert_eq!(f.last_outcome("u1", "promo").1.as_deref(), Some("bounced"));
        // A new address: mail flows again.
        f.identify("u1", json!({"email": "new@x.io"}));
        assert!(f.profile("u1").get("email_status").is_none());
        f.order("u1");
        assert_eq!(f.last_outcome("u1", "promo"), ("sent".into(), None));
    }

    #[test]
    fn a_complaint_unsubscribes_every_non_transactional_category_received() {
        let mut f = Fixture::new();
        f.identify("u1", json!({"email": "u1@x.io", "push_tokens": ["t1"]}));
        f.identify("u2", json!({"email": "u2@x.io"}));
        f.order("u1");
        f.order("u2");
        let sent = f.sent();
        let receipt = sent
            .iter()
            .find(|(j, _, _)| j == "receipt")
            .map(|(_, _, k)| k.clone())
            .expect("receipt");
        // A complaint about the receipt, of all messages.
        assert!(f.feedback(Kind::Complaint, &receipt, "u1@x.io"));
        let p = f.profile("u1");
        assert_eq!(
            p["subscriptions"],
            json!({"marketing": false, "product-news": false})
        );
        // Only that user.
        assert!(f.profile("u2").get("subscriptions").is_none());
        // Later marketing is suppressed `unsubscribed`, receipts still go.
        f.order("u1");
        assert_eq!(
            f.last_outcome("u1", "promo"),
            ("suppressed".into(), Some("unsubscribed".into()))
        );
    }

    #[test]
    fn only_email_records_its_recipient() {
        let mut f = Fixture::new();
        f.identify("u1", json!({"email": "u1@x.io", "push_tokens": ["t1"]}));
        f.order("u1");
        let sent = f.sent();
        let key = |step: &str| {
            sent.iter()
                .find(|(j, s, _)| j == "news" && s == step)
                .map(|(_, _, k)| k.clone())
                .unwrap_or_else(|| panic!("no news/{step} message"))
        };
        let view = f.engine.store.view();
        assert!(view.recipient(&key("update")).expect("get").is_some());
        assert_eq!(view.recipient(&key("ping")).expect("get"), None);
        let mut received = view.received_categories("u1").expect("scan");
        received.sort();
        assert_eq!(received, vec!["marketing", "product-news", "transactional"]);
    }

    #[test]
    fn unknown_keys_and_erased_users_are_unmatched() {
        let mut f = Fixture::new();
        f.identify("u1", json!({"email": "u1@x.io"}));
        f.order("u1");
        let key = f.key("promo", "offer");
        assert!(!f.feedback(
            Kind::HardBounce,
            "0123456789abcdef0123456789abcdef",
            "u1@x.io"
        ));
        let none = Notice {
            kind: Kind::HardBounce,
            key: None,
            address: Some("u1@x.io".into()),
        };
        assert_eq!(f.engine.feedback(&[none], f.now).expect("fb"), vec![false]);
        assert!(f.feedback(Kind::Delivery, &key, "u1@x.io"));
        assert!(f.engine.erase("u1").expect("erase"));
        f.engine.commit().expect("commit");
        assert_eq!(f.engine.store.view().recipient(&key).expect("get"), None);
        assert!(f
            .engine
            .store
            .view()
            .received_categories("u1")
            .expect("scan")
            .is_empty());
        assert!(!f.feedback(Kind::Complaint, &key, "u1@x.io"));
        assert!(f.engine.user("u1").expect("user").is_none());
        // Nothing the store keeps names the erased user or their address:
        // not the message log in either order, not a dead letter.
        f.engine.commit().expect("commit");
        let view = f.engine.store.view();
        for (k, v) in crate::store::Kv::scan(&view, &[], None, None, usize::MAX).expect("scan") {
            let holds = |b: &[u8], needle: &[u8]| b.windows(needle.len()).any(|w| w == needle);
            for needle in [&b"u1@x.io"[..], &b"\"u1\""[..]] {
                assert!(
                    !holds(&k, needle) && !holds(&v, needle),
                    "{} = {}",
                    String::from_utf8_lossy(&k),
                    String::from_utf8_lossy(&v)
                );
            }
        }
    }

    /// What a delivery worker reports for an SMTP 550 on the recipient
    /// (RUN.md §3): the message fails into the dead-letter queue and the
    /// address is bounced in the same commit; later email is suppressed.
    #[test]
    fn a_550_for_the_recipient_fails_the_message_and_marks_the_address() {
        let mut f = Fixture::new();
        f.identify("u1", json!({"email": "u1@x.io"}));
        f.order("u1");
        f.engine.commit().expect("commit");
        let entry = f
            .engine
            .take_outbox()
            .expect("outbox")
            .into_iter()
            .find(|e| e.message.journey == "promo")
            .expect("the promo email");
        let failure = crate::dispatch::DispatchError {
            retriable: false,
            message: "550 5.1.1 <u1@x.io>: mailbox unavailable".into(),
            retry_after: None,
            summary: None,
        };
        let news = [AddressNews::EmailBounced {
            address: "u1@x.io".into(),
        }];
        f.engine
            .delivered(entry.id, Err(failure), &news, f.now)
            .expect("delivered");
        f.engine.commit().expect("commit");
        assert_eq!(f.profile("u1")["email_status"], "bounced");
        let (outcome, reason) = f.last_outcome("u1", "promo");
        assert_eq!(outcome, "failed");
        assert!(reason.is_some_and(|r| r.contains("550")));
        // The message's line now reads `failed`: its `sent` line is not
        // shown beside it (RUN.md §3).
        let view = f.engine.inspect("u1").expect("inspect").expect("known");
        let promo: Vec<&Value> = view["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["journey"] == "promo")
            .collect();
        assert_eq!(promo.len(), 1, "{promo:?}");
        assert_eq!(promo[0]["key"].as_str(), Some(entry.message.key.as_str()));
        assert_eq!(f.engine.dead_letters(10).expect("dlq").len(), 1);
        f.order("u1");
        assert_eq!(
            f.last_outcome("u1", "promo"),
            ("suppressed".into(), Some("bounced".into()))
        );
    }

    #[test]
    fn address_news_removes_a_gone_token_and_marks_only_the_current_address() {
        let mut f = Fixture::new();
        f.identify(
            "u1",
            json!({"email": "u1@x.io", "push_tokens": ["t1", "t2", "t3"]}),
        );
        let now = f.now;
        let gone = |t: &str| AddressNews::PushTokenGone { token: t.into() };
        f.engine
            .address_news("u1", &[gone("t2"), gone("nope")], now)
            .expect("news");
        assert_eq!(f.profile("u1")["push_tokens"], json!(["t1", "t3"]));
        let bounced = |a: &str| AddressNews::EmailBounced { address: a.into() };
        f.engine
            .address_news("u1", &[bounced("other@x.io")], now)
            .expect("news");
        assert!(f.profile("u1").get("email_status").is_none());
        f.engine
            .address_news("u1", &[bounced("u1@x.io"), gone("t1"), gone("t3")], now)
            .expect("news");
        let p = f.profile("u1");
        assert_eq!(p["email_status"], "bounced");
        assert_eq!(p["push_tokens"], json!([]));
        // An unknown user: nothing, no error, no record.
        f.engine
            .address_news("ghost", &[bounced("g@x.io")], now)
            .expect("news");
        assert!(f.engine.user("ghost").expect("user").is_none());
        // Push to a user with no tokens left: no_address.
        f.order("u1");
        assert_eq!(
            f.last_outcome("u1", "news").1.as_deref(),
            Some("no_address")
        );
    }
}
