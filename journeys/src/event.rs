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
    /// Makes ingestion idempotent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The event name (`track`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub props: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub traits: Map<String, Value>,
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
