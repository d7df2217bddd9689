//! Amazon SES bounce, complaint and delivery notifications (the JSON in an
//! SNS notification's `Message`): both the identity notifications
//! (`notificationType`) and configuration-set event publishing
//! (`eventType`).
//!
//! The message is named by `mail.headers` (the original headers, when the
//! identity includes them) or `mail.commonHeaders.messageId` (the
//! `Message-ID` as submitted); `mail.messageId` is SES's own id and never
//! ours.

use serde_json::Value;

use super::{first_key, Kind, Malformed, Notice};

/// The notices in one SES event.
pub fn notices(message: &str) -> Result<Vec<Notice>, Malformed> {
    let v: Value = serde_json::from_str(message)
        .map_err(|e| Malformed(format!("the SNS Message is not SES JSON: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(Malformed("the SNS Message is not a JSON object".into()));
    };
    let kind_name = obj
        .get("notificationType")
        .or_else(|| obj.get("eventType"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Malformed("the SES event has no `notificationType` or `eventType`".into())
        })?;
    let key = message_key(obj.get("mail"));
    let recipients = |section: &str, list: &str| -> Vec<Option<String>> {
        let found: Vec<Option<String>> = obj
            .get(section)
            .and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| {
                        r.get("emailAddress")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        if found.is_empty() {
            vec![None]
        } else {
            found
        }
    };
    let (kind, addresses) = match kind_name {
        "Bounce" => {
            let hard = obj
                .get("bounce")
                .and_then(|b| b.get("bounceType"))
                .and_then(Value::as_str)
                == Some("Permanent");
            let kind = if hard {
                Kind::HardBounce
            } else {
                Kind::SoftBounce
            };
            (kind, recipients("bounce", "bouncedRecipients"))
        }
        "Complaint" => {
            let not_spam = obj
                .get("complaint")
                .and_then(|c| c.get("complaintFeedbackType"))
                .and_then(Value::as_str)
                == Some("not-spam");
            let kind = if not_spam {
                Kind::Other
            } else {
                Kind::Complaint
            };
            (kind, recipients("complaint", "complainedRecipients"))
        }
        "Delivery" => {
            let to: Vec<Option<String>> = obj
                .get("delivery")
                .and_then(|d| d.get("recipients"))
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|r| r.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            (Kind::Delivery, if to.is_empty() { vec![None] } else { to })
        }
        _ => (Kind::Other, vec![None]),
    };
    Ok(addresses
        .into_iter()
        .map(|address| Notice {
            kind,
            key: key.clone(),
            address,
        })
        .collect())
}

/// Our key from the `mail` object.
fn message_key(mail: Option<&Value>) -> Option<String> {
    let mail = mail?;
    let from_headers = mail
        .get("headers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|h| {
            h.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case("message-id"))
        })
        .filter_map(|h| h.get("value").and_then(Value::as_str));
    let common = mail
        .get("commonHeaders")
        .and_then(|c| c.get("messageId"))
        .and_then(Value::as_str);
    first_key(from_headers.chain(common))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const K: &str = "0123456789abcdef0123456789abcdef";

    fn mail() -> Value {
        json!({
            "timestamp": "2026-03-02T10:00:00.000Z",
            "messageId": "0100018c-1111-2222@email.amazonses.com",
            "source": "hello@shop.example",
            "destination": ["a@x.io", "b@x.io"],
            "headersTruncated": false,
            "headers": [
                {"name": "From", "value": "hello@shop.example"},
                {"name": "Message-ID", "value": format!("<{K}@shop.example>")}
            ],
            "commonHeaders": {"from": ["hello@shop.example"], "messageId": format!("<{K}@shop.example>")}
        })
    }

    #[test]
    fn a_permanent_bounce_per_recipient() {
        let m = json!({
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Permanent", "bounceSubType": "General",
                "bouncedRecipients": [{"emailAddress": "a@x.io", "status": "5.1.1"}, {"emailAddress": "b@x.io"}]
            },
            "mail": mail(),
        });
        let n = notices(&m.to_string()).expect("parse");
        assert_eq!(n.len(), 2);
        assert!(n
            .iter()
            .all(|n| n.kind == Kind::HardBounce && n.key.as_deref() == Some(K)));
        assert_eq!(n[1].address.as_deref(), Some("b@x.io"));
    }

    #[test]
    fn transient_bounces_complaints_and_events() {
        let mut m = json!({
            "eventType": "Bounce",
            "bounce": {"bounceType": "Transient", "bouncedRecipients": [{"emailAddress": "a@x.io"}]},
            "mail": mail(),
        });
        assert_eq!(
            notices(&m.to_string()).expect("parse")[0].kind,
            Kind::SoftBounce
        );
        m = json!({
            "notificationType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": "a@x.io"}], "complaintFeedbackType": "abuse"},
            "mail": mail(),
        });
        assert_eq!(
            notices(&m.to_string()).expect("parse")[0].kind,
            Kind::Complaint
        );
        m["complaint"]["complaintFeedbackType"] = json!("not-spam");
        assert_eq!(notices(&m.to_string()).expect("parse")[0].kind, Kind::Other);
        m = json!({"notificationType": "Delivery", "delivery": {"recipients": ["a@x.io"]}, "mail": mail()});
        assert_eq!(
            notices(&m.to_string()).expect("parse")[0].kind,
            Kind::Delivery
        );
        m = json!({"eventType": "Open", "mail": mail()});
        assert_eq!(notices(&m.to_string()).expect("parse")[0].kind, Kind::Other);
    }

    #[test]
    fn the_key_from_common_headers_when_headers_are_off() {
        let mut mail = mail();
        mail.as_object_mut().expect("obj").remove("headers");
        let m = json!({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent",
            "bouncedRecipients": [{"emailAddress": "a@x.io"}]}, "mail": mail});
        assert_eq!(
            notices(&m.to_string()).expect("parse")[0].key.as_deref(),
            Some(K)
        );
        // SES's own id only: no key.
        let m = json!({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent",
            "bouncedRecipients": [{"emailAddress": "a@x.io"}]}, "mail": {"messageId": "0100-x"}});
        assert_eq!(notices(&m.to_string()).expect("parse")[0].key, None);
    }

    #[test]
    fn not_ses() {
        assert!(notices("nope").is_err());
        assert!(notices("[1]").is_err());
        assert!(notices("{\"a\":1}").is_err());
    }
}
