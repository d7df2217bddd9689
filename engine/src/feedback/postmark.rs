//! Postmark's bounce and spam-complaint webhooks (one JSON object per
//! request, `RecordType` `Bounce` or `SpamComplaint`; other record types
//! are counted).
//!
//! Postmark's `MessageID` is its own id, not ours, so the message is named
//! by a metadata field `sluice_key` (sent as the `X-PM-Metadata-sluice_key`
//! header), a `Message-ID` in the bounce's `Content` (the original
//! message's headers, when the webhook includes the content), or a
//! `MessageID` that happens to be ours.

use serde_json::Value;

use super::{first_key, key_in_headers, key_of, Kind, Malformed, Notice};

/// The notice in one Postmark webhook post.
pub fn notices(body: &[u8]) -> Result<Vec<Notice>, Malformed> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Malformed(format!("not a Postmark webhook: {e}")))?;
    let Some(obj) = v.as_object() else {
        return Err(Malformed("not a Postmark webhook object".into()));
    };
    let s = |k: &str| obj.get(k).and_then(Value::as_str);
    let kind = match (s("RecordType"), s("Type")) {
        (Some("SpamComplaint"), _) | (_, Some("SpamComplaint" | "SpamNotification")) => {
            Kind::Complaint
        }
        (Some("Bounce") | None, Some("HardBounce" | "BadEmailAddress" | "ManuallyDeactivated")) => {
            Kind::HardBounce
        }
        (
            Some("Bounce") | None,
            Some("SoftBounce" | "Transient" | "DnsError" | "AutoResponder" | "Blocked"),
        ) => Kind::SoftBounce,
        (Some("Delivery"), _) => Kind::Delivery,
        _ => Kind::Other,
    };
    let metadata = obj
        .get("Metadata")
        .and_then(|m| m.get("sluice_key"))
        .and_then(Value::as_str)
        .filter(|k| key_of(&format!("<{k}@x>")).is_some())
        .map(str::to_owned);
    let key = metadata
        .or_else(|| s("Content").and_then(key_in_headers))
        .or_else(|| first_key(s("MessageID")));
    let address = s("Email").or_else(|| s("Recipient")).map(str::to_owned);
    Ok(vec![Notice { kind, key, address }])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const K: &str = "0123456789abcdef0123456789abcdef";

    fn one(v: Value) -> Notice {
        notices(v.to_string().as_bytes()).expect("parse").remove(0)
    }

    #[test]
    fn kinds_and_keys() {
        let n = one(
            json!({"RecordType": "Bounce", "Type": "HardBounce", "TypeCode": 1,
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Email": "a@x.io",
            "Metadata": {"sluice_key": K}}),
        );
        assert_eq!(
            (n.kind, n.key.as_deref(), n.address.as_deref()),
            (Kind::HardBounce, Some(K), Some("a@x.io"))
        );
        let n = one(
            json!({"RecordType": "Bounce", "Type": "SoftBounce", "Email": "a@x.io",
            "Content": format!("Received: x\r\nMessage-ID: <{K}@shop.example>\r\n\r\nhi")}),
        );
        assert_eq!((n.kind, n.key.as_deref()), (Kind::SoftBounce, Some(K)));
        let n = one(
            json!({"RecordType": "SpamComplaint", "Type": "SpamComplaint", "Email": "a@x.io",
            "MessageID": "883953f4"}),
        );
        assert_eq!((n.kind, n.key), (Kind::Complaint, None));
        let n = one(json!({"RecordType": "Open", "Recipient": "a@x.io"}));
        assert_eq!(
            (n.kind, n.address.as_deref()),
            (Kind::Other, Some("a@x.io"))
        );
        assert!(notices(b"[]").is_err());
    }
}
