//! Segment's Tracking API calls (`track`, `identify`, and `batch` of them)
//! mapped to FORMAT.md §4 events, as RUN.md §2 says: `userId` → `user`,
//! `event`, `properties` → `props`, `traits` merged over `context.traits`,
//! `context.timezone` → the `timezone` trait when none is set, `timestamp`
//! (else `originalTimestamp`, else `receivedAt`, else now) → `ts`,
//! `messageId` → `id`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use journeys::event::{Event, EventType};

use super::error::Error;
use super::events::Parsed;

/// Maps one Segment call. `implied` is the type the route gives (`/v1/track`
/// is a track call even without `type`); `defaults` is a batch's own
/// `context`, under each call's.
pub fn map(
    call: Value,
    implied: Option<EventType>,
    defaults: Option<&Map<String, Value>>,
    now: DateTime<Utc>,
) -> Result<Event, String> {
    let Value::Object(call) = call else {
        return Err("a call must be a JSON object".into());
    };
    let kind = match (call.get("type"), implied) {
        (None | Some(Value::Null), Some(kind)) => kind,
        (None | Some(Value::Null), None) => return Err("missing `type`".into()),
        (Some(Value::String(t)), _) => match t.as_str() {
            "track" => EventType::Track,
            "identify" => EventType::Identify,
            other => {
                return Err(format!(
                    "`{}` calls are not supported (only track and identify)",
                    clip(other)
                ))
            }
        },
        (Some(_), _) => return Err("`type` must be a string".into()),
    };
    if let (Some(route), true) = (implied, call.contains_key("type")) {
        if route != kind {
            return Err(format!(
                "a `{}` call sent to the {} route",
                name(kind),
                name(route)
            ));
        }
    }
    let user = match call.get("userId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ if has(&call, "anonymousId") => {
            return Err("a call with only `anonymousId` is refused: sluice needs `userId`".into())
        }
        _ => return Err("missing `userId`".into()),
    };
    let event = match call.get("event") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return Err("`event` must be a string".into()),
    };
    let props = object(&call, "properties")?;

    let mut context = defaults.cloned().unwrap_or_default();
    for (k, v) in object(&call, "context")? {
        context.insert(k, v);
    }
    let mut traits = object(&context, "traits")?;
    for (k, v) in object(&call, "traits")? {
        traits.insert(k, v);
    }
    if !traits.contains_key("timezone") {
        if let Some(tz) = context.get("timezone").filter(|v| !v.is_null()) {
            traits.insert("timezone".into(), tz.clone());
        }
    }

    let ts = match ["timestamp", "originalTimestamp", "receivedAt"]
        .into_iter()
        .find_map(|k| call.get(k).filter(|v| !v.is_null()).map(|v| (k, v)))
    {
        Some((k, Value::String(s))) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("`{k}` is not an RFC 3339 timestamp: {e}"))?,
        Some((k, _)) => return Err(format!("`{k}` must be a string")),
        None => now,
    };
    let id = match call.get("messageId") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        // An empty messageId is no id, as an empty userId is no user.
        None | Some(Value::Null) => None,
        Some(Value::String(_)) => None,
        Some(_) => return Err("`messageId` must be a string".into()),
    };
    let e = Event {
        kind,
        user,
        ts,
        id,
        event,
        props,
        traits,
    };
    e.check().map_err(|e| e.to_string())?;
    Ok(e)
}

/// Maps a `/v1/batch` body: `{"batch":[…], "context":{…}}`; positions are
/// 1-based.
pub fn map_batch(body: Value, now: DateTime<Utc>) -> Result<Parsed, Error> {
    let Value::Object(mut body) = body else {
        return Err(Error::BadRequest(
            "a batch must be a JSON object with a `batch` array".into(),
        ));
    };
    let Some(Value::Array(calls)) = body.remove("batch") else {
        return Err(Error::BadRequest(
            "a batch must be a JSON object with a `batch` array".into(),
        ));
    };
    let defaults = match body.remove("context") {
        Some(Value::Object(m)) => Some(m),
        None | Some(Value::Null) => None,
        Some(_) => return Err(Error::BadRequest("`context` must be an object".into())),
    };
    let mut parsed = Parsed::default();
    for (i, call) in calls.into_iter().enumerate() {
        parsed.push(i + 1, map(call, None, defaults.as_ref(), now));
    }
    Ok(parsed)
}

fn has(call: &Map<String, Value>, key: &str) -> bool {
    match call.get(key) {
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Null) | None => false,
        Some(_) => true,
    }
}

fn object(m: &Map<String, Value>, key: &str) -> Result<Map<String, Value>, String> {
    match m.get(key) {
        Some(Value::Object(o)) => Ok(o.clone()),
        None | Some(Value::Null) => Ok(Map::new()),
        Some(_) => Err(format!("`{key}` must be an object")),
    }
}

fn name(kind: EventType) -> &'static str {
    match kind {
        EventType::Track => "track",
        EventType::Identify => "identify",
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-02T12:00:00Z".parse().unwrap()
    }

    fn ts(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn track_fields() {
        let e = map(
            json!({"userId":"u1","event":"Order Completed","properties":{"total":3},
                   "messageId":"m-1","timestamp":"2026-03-01T10:00:00.000Z"}),
            Some(EventType::Track),
            None,
            now(),
        )
        .unwrap();
        assert_eq!(e.kind, EventType::Track);
        assert_eq!(e.user, "u1");
        assert_eq!(e.event.as_deref(), Some("Order Completed"));
        assert_eq!(e.props["total"], json!(3));
        assert_eq!(e.id.as_deref(), Some("m-1"));
        assert_eq!(e.ts, ts("2026-03-01T10:00:00Z"));
    }

    #[test]
    fn an_empty_message_id_is_no_id() {
        let e = map(
            json!({"userId":"u","event":"e","messageId":""}),
            Some(EventType::Track),
            None,
            now(),
        )
        .unwrap();
        assert_eq!(e.id, None);
        let refused = map(
            json!({"userId":"u","event":"e","messageId":{}}),
            Some(EventType::Track),
            None,
            now(),
        );
        assert_eq!(refused.unwrap_err(), "`messageId` must be a string");
    }

    #[test]
    fn timestamp_fallbacks_in_order() {
        let call = |v: Value| map(v, Some(EventType::Identify), None, now()).unwrap().ts;
        assert_eq!(
            call(
                json!({"userId":"u","originalTimestamp":"2026-01-01T00:00:00Z","receivedAt":"2026-01-02T00:00:00Z"})
            ),
            ts("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            call(json!({"userId":"u","receivedAt":"2026-01-02T00:00:00+01:00"})),
            ts("2026-01-01T23:00:00Z")
        );
        assert_eq!(call(json!({"userId":"u"})), now());
        assert!(map(
            json!({"userId":"u","timestamp":"yesterday"}),
            Some(EventType::Identify),
            None,
            now()
        )
        .is_err());
    }

    #[test]
    fn traits_over_context_traits_and_timezone() {
        let e = map(
            json!({"userId":"u","traits":{"plan":"pro"},
                   "context":{"traits":{"plan":"free","email":"a@x.example"},"timezone":"Europe/Berlin"}}),
            Some(EventType::Identify),
            None,
            now(),
        )
        .unwrap();
        assert_eq!(e.traits["plan"], json!("pro"));
        assert_eq!(e.traits["email"], json!("a@x.example"));
        assert_eq!(e.traits["timezone"], json!("Europe/Berlin"));
        let e = map(
            json!({"userId":"u","traits":{"timezone":"Asia/Tokyo"},"context":{"timezone":"Europe/Berlin"}}),
            Some(EventType::Identify),
            None,
            now(),
        )
        .unwrap();
        assert_eq!(e.traits["timezone"], json!("Asia/Tokyo"));
    }

    #[test]
    fn anonymous_only_is_refused() {
        let err = map(
            json!({"anonymousId":"a1","event":"x"}),
            Some(EventType::Track),
            None,
            now(),
        )
        .unwrap_err();
        assert!(err.contains("anonymousId"), "{err}");
        assert!(map(json!({"event":"x"}), Some(EventType::Track), None, now()).is_err());
    }

    #[test]
    fn batch_context_is_under_each_calls() {
        let p = map_batch(
            json!({"batch":[
                {"type":"identify","userId":"u","context":{"timezone":"Asia/Tokyo"}},
                {"type":"page","userId":"u"},
                {"type":"identify","userId":"v"}
            ],"context":{"timezone":"Europe/Paris"}}),
            now(),
        )
        .unwrap();
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.events[0].traits["timezone"], json!("Asia/Tokyo"));
        assert_eq!(p.events[1].traits["timezone"], json!("Europe/Paris"));
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].line, 2);
        assert!(map_batch(json!({"batch":{}}), now()).is_err());
    }
}
