//! Events as `POST /v1/events` takes them: JSON values stamped with the
//! wall clock (`sluice run` runs on it), and JSON lines.

use serde_json::{json, Value};

/// Now, in RFC 3339 with milliseconds, UTC.
#[allow(clippy::disallowed_methods)]
pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An `identify` event stamped now.
pub fn identify(user: &str, id: &str, traits: Value) -> Value {
    json!({"type":"identify","user":user,"id":id,"ts":now_ts(),"traits":traits})
}

/// A `track` event stamped now.
pub fn track(user: &str, id: &str, event: &str, props: Value) -> Value {
    json!({"type":"track","user":user,"id":id,"event":event,"ts":now_ts(),"props":props})
}

/// One JSON line per event.
pub fn jsonl(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}
