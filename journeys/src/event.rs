//! The event objects of FORMAT.md §4: the same shape on stdin, in files,
//! in HTTP bodies and in JourneyTests.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// Merges `traits` into the profile (`null` removes a trait).
    Identify,
    /// Records `event` with `props`.
    Track,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub user: String,
    pub ts: DateTime<Utc>,
    /// Makes ingestion idempotent. An empty `id` is no id (some
    /// serialisers write `""` for a missing one): taken as an id, it would
    /// make every later event of the user without one a duplicate.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "non_empty"
    )]
    pub id: Option<String>,
    /// The event name (`track`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub props: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Value>,
}

/// `None` for a missing, null or empty string.
fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let id: Option<String> = Option::deserialize(d)?;
    Ok(id.filter(|s| !s.is_empty()))
}

/// Why an event object is not valid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("invalid event: {0}")]
    Shape(String),
    #[error("`track` needs an `event` name")]
    MissingName,
    #[error("`user` must not be empty")]
    EmptyUser,
    #[error("`ts` {0}")]
    OutOfRange(String),
}

impl Event {
    /// Parses and checks one JSON event.
    pub fn from_json(value: Value) -> Result<Event, EventError> {
        let e: Event =
            serde_json::from_value(value).map_err(|e| EventError::Shape(e.to_string()))?;
        e.check()?;
        Ok(e)
    }

    /// Parses one line of a JSONL file.
    pub fn from_line(line: &str) -> Result<Event, EventError> {
        let e: Event = serde_json::from_str(line).map_err(|e| EventError::Shape(e.to_string()))?;
        e.check()?;
        Ok(e)
    }

    pub fn check(&self) -> Result<(), EventError> {
        if self.user.is_empty() {
            return Err(EventError::EmptyUser);
        }
        if self.kind == EventType::Track && self.event.as_deref().is_none_or(str::is_empty) {
            return Err(EventError::MissingName);
        }
        crate::limits::check_instant(self.ts).map_err(EventError::OutOfRange)?;
        Ok(())
    }

    /// The name of a tracked event.
    pub fn name(&self) -> Option<&str> {
        self.event.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_id_is_no_id() {
        let line = |id: &str| {
            format!(r#"{{"type":"track","user":"u","ts":"2026-03-02T09:00:00Z","event":"e"{id}}}"#)
        };
        let id = |l: String| Event::from_line(&l).expect("event").id;
        assert_eq!(id(line(r#","id":"""#)), None);
        assert_eq!(id(line(r#","id":null"#)), None);
        assert_eq!(id(line("")), None);
        assert_eq!(id(line(r#","id":"e1""#)), Some("e1".to_owned()));
        let v: Value = serde_json::from_str(&line(r#","id":"""#)).expect("json");
        assert_eq!(Event::from_json(v).expect("event").id, None);
        assert!(
            Event::from_line(&line(r#","id":7"#)).is_err(),
            "not a string"
        );
    }
}
