//! JSON Schemas of every kind, generated from the raw model types so they
//! cannot drift from what the loader accepts. `schemas/` holds them for
//! editors; a test regenerates and compares, and another validates every
//! example against them with a real validator.
//!
//! Three rules keep them usable from a checkout with no network:
//!
//! - **Self-contained.** `sluice.schema.json` is one bundle: every kind
//!   under `definitions`, selected by `kind`; each `<Kind>.schema.json`
//!   carries its own `definitions` (for the `# yaml-language-server:
//!   $schema=` modeline). No `$id`, no reference outside the file.
//! - **Draft 7**, the draft the YAML editors (yaml-language-server, VS
//!   Code's JSON service) fully support.
//! - **What the loader accepts, the schema accepts.** The loader reads any
//!   non-null scalar where the model has a string (`id: 2024`, `percent:
//!   50`), so plain string schemas also accept numbers and booleans; the
//!   scalars with a syntax of their own (durations, percentages, times of
//!   day, channels, rates, reentry) get the exact syntax of
//!   [`crate::scalar`] instead.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::model;

/// The definitions path of draft 7.
const DEFINITIONS: &str = "definitions";

/// A duration of FORMAT.md §2 (`30s`, `1d12h`): a string, never a bare
/// number (the loader reads `30` as a duration without a unit).
pub struct Duration;

/// The units of a duration, largest first, each at most once.
pub const DURATION_PATTERN: &str = r"^\s*(\d+w(\d+d)?(\d+h)?(\d+m)?(\d+s)?|\d+d(\d+h)?(\d+m)?(\d+s)?|\d+h(\d+m)?(\d+s)?|\d+m(\d+s)?|\d+s)\s*$";

/// [`DURATION_PATTERN`] without its anchors, to build other patterns on.
fn duration_body() -> &'static str {
    DURATION_PATTERN
        .strip_prefix(r"^\s*")
        .and_then(|p| p.strip_suffix(r"\s*$"))
        .unwrap_or(DURATION_PATTERN)
}

/// A rate of [`crate::scalar::parse_rate`]: `<n> per <unit>`, the unit
/// named (`minute`, `mins`, `sec` …), a bare duration unit (`per m`) or a
/// duration (`per 10m`). Never a bare number.
pub struct Rate;

impl JsonSchema for Rate {
    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let pattern = format!(
            r"^\s*\+?0*[1-9]\d*\s+per\s+((second|sec|minute|min|hour|day|week)s*|[smhdw]|{})\s*$",
            duration_body()
        );
        schemars::json_schema!({
            "type": "string",
            "pattern": pattern,
            "examples": ["1000 per minute", "50 per second", "3 per 10m"],
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// When a user may enter a journey again ([`crate::scalar::parse_reentry`]):
/// `never`, `always` or `after <duration>`.
pub struct Reentry;

impl JsonSchema for Reentry {
    fn schema_name() -> Cow<'static, str> {
        "Reentry".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let pattern = format!(r"^\s*(never|always|after \s*({})\s*)\s*$", duration_body());
        schemars::json_schema!({
            "type": "string",
            "pattern": pattern,
            "examples": ["never", "always", "after 7d"],
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "examples": ["30s", "15m", "2h", "3d", "1w", "1d12h"],
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// A percentage of FORMAT.md §2: `10%`, `2.5%`, or a bare number of
/// percent, 0 to 100.
pub struct Percent;

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "anyOf": [
                {
                    "type": "string",
                    "pattern": r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*%?\s*$",
                },
                { "type": "number", "minimum": 0, "maximum": 100 },
            ],
            "examples": ["10%", "2.5%"],
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// A local time of day, `HH:MM` (24 h).
pub struct TimeOfDay;

impl JsonSchema for TimeOfDay {
    fn schema_name() -> Cow<'static, str> {
        "TimeOfDay".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": r"^\s*([01]?\d|2[0-3]):[0-5]\d\s*$",
            "examples": ["08:00", "21:30"],
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// A channel name: `email`, `push` or `webhook`.
pub struct Channel;

impl JsonSchema for Channel {
    fn schema_name() -> Cow<'static, str> {
        "Channel".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": ["email", "push", "webhook"],
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

/// The value of an `exit` step: `true`, `{}` or nothing (`exit:`).
pub struct ExitFlag;

impl JsonSchema for ExitFlag {
    fn schema_name() -> Cow<'static, str> {
        "ExitFlag".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "anyOf": [
                { "const": true },
                { "type": "object", "maxProperties": 0 },
                { "type": "null" },
            ],
        })
    }

    fn inline_schema() -> bool {
        true
    }
}

fn generator() -> SchemaGenerator {
    SchemaSettings::draft07().into_generator()
}

/// The keys every kind shares, with their descriptions.
fn common_properties(kind: &str) -> [(&'static str, Value); 3] {
    [
        (
            "apiVersion",
            json!({
                "description": "The format version: always `sluice/v1`.",
                "const": model::API_VERSION,
            }),
        ),
        (
            "kind",
            json!({
                "description": format!("The kind of this document: `{kind}`."),
                "const": kind,
            }),
        ),
        (
            "id",
            json!({
                "description": "Unique per kind; matches `[a-z0-9][a-z0-9_-]*`. Other documents refer to it by this id.",
                "type": ["string", "integer"],
                "pattern": "^[a-z0-9][a-z0-9_-]*$",
                "minimum": 0,
            }),
        ),
    ]
}

/// Fixes up one kind's schema object: the shared keys and a title.
fn finish_kind(schema: &mut Value, kind: &str) {
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), format!("sluice {kind}").into());
        if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
            for (key, value) in common_properties(kind) {
                props.insert(key.into(), value);
            }
        }
    }
}

/// Every plain string schema (no pattern, enum, const or format) also
/// accepts numbers and booleans, as the loader does: it reads any non-null
/// scalar where the model has a string.
fn widen_strings(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            let constrained = ["pattern", "enum", "const", "format"]
                .iter()
                .any(|k| obj.contains_key(*k));
            if !constrained {
                let widened = match obj.get("type") {
                    Some(Value::String(t)) if t == "string" => {
                        Some(json!(["string", "number", "boolean"]))
                    }
                    Some(Value::Array(ts)) if ts.iter().any(|t| t == "string") => {
                        let mut out = ts.clone();
                        for extra in ["number", "boolean"] {
                            if !out.iter().any(|t| t == extra) {
                                out.push(extra.into());
                            }
                        }
                        Some(Value::Array(out))
                    }
                    _ => None,
                };
                if let Some(w) = widened {
                    obj.insert("type".into(), w);
                }
            }
            obj.values_mut().for_each(widen_strings);
        }
        Value::Array(items) => items.iter_mut().for_each(widen_strings),
        _ => {}
    }
}

fn kind_schema<T: JsonSchema>(kind: &str) -> Value {
    let schema = generator().into_root_schema_for::<T>();
    let mut schema = serde_json::to_value(schema).unwrap_or(Value::Null);
    finish_kind(&mut schema, kind);
    widen_strings(&mut schema);
    schema
}

/// Calls `f` with every kind's name and schema type.
macro_rules! for_each_kind {
    ($f:ident) => {
        vec![
            $f::<model::Project>("Project"),
            $f::<model::Journey>("Journey"),
            $f::<model::Segment>("Segment"),
            $f::<model::Template>("Template"),
            $f::<model::QuietHours>("QuietHours"),
            $f::<model::Throttle>("Throttle"),
            $f::<model::FrequencyCap>("FrequencyCap"),
            $f::<model::Catalog>("Catalog"),
            $f::<model::JourneyTest>("JourneyTest"),
        ]
    };
}

/// `(kind, schema)` for every kind, in FORMAT.md order. Each schema is
/// self-contained.
pub fn schemas() -> Vec<(&'static str, Value)> {
    fn one<T: JsonSchema>(kind: &'static str) -> (&'static str, Value) {
        (kind, kind_schema::<T>(kind))
    }
    for_each_kind!(one)
}

/// One self-contained schema that accepts a document of any kind: every
/// kind under `definitions`, chosen by the document's `kind` (for editors
/// that map one schema to every YAML file of a repository).
pub fn any_kind() -> Value {
    let mut generator = generator();
    let mut kinds = Vec::new();
    {
        let mut add = |kind: &'static str, schema: Schema| {
            kinds.push((kind, serde_json::to_value(schema).unwrap_or(Value::Null)));
        };
        macro_rules! add {
            ($t:ty, $k:literal) => {
                add($k, generator.subschema_for::<$t>())
            };
        }
        add!(model::Project, "Project");
        add!(model::Journey, "Journey");
        add!(model::Segment, "Segment");
        add!(model::Template, "Template");
        add!(model::QuietHours, "QuietHours");
        add!(model::Throttle, "Throttle");
        add!(model::FrequencyCap, "FrequencyCap");
        add!(model::Catalog, "Catalog");
        add!(model::JourneyTest, "JourneyTest");
    }
    let mut definitions: Map<String, Value> = generator.take_definitions(true);
    let mut branches = Vec::new();
    for (kind, reference) in &kinds {
        // `subschema_for` answers `{"$ref": "#/definitions/<Name>"}`.
        let name = reference["$ref"]
            .as_str()
            .and_then(|r| r.rsplit('/').next())
            .unwrap_or(kind)
            .to_owned();
        if let Some(def) = definitions.get_mut(&name) {
            finish_kind(def, kind);
        }
        branches.push(json!({
            "if": { "properties": { "kind": { "const": kind } }, "required": ["kind"] },
            "then": reference,
        }));
    }
    let mut bundle = json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "sluice document (any kind)",
        "description": "A document of a sluice config repository (FORMAT.md); its `kind` selects the schema.",
        "type": "object",
        "required": ["apiVersion", "kind", "id"],
        "properties": {
            "apiVersion": common_properties("")[0].1,
            "kind": {
                "description": "What this document declares.",
                "enum": model::KINDS,
            },
        },
        "allOf": branches,
        DEFINITIONS: definitions,
    });
    widen_strings(&mut bundle);
    bundle
}

/// Writes every schema as `<Kind>.schema.json` plus `sluice.schema.json`.
pub fn write_all(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (kind, schema) in schemas() {
        let text = serde_json::to_string_pretty(&schema).map_err(std::io::Error::other)? + "\n";
        std::fs::write(dir.join(format!("{kind}.schema.json")), text)?;
    }
    let text = serde_json::to_string_pretty(&any_kind()).map_err(std::io::Error::other)? + "\n";
    std::fs::write(dir.join("sluice.schema.json"), text)
}
