//! JSON Schemas of every kind, generated from the raw model types so they
//! cannot drift from what the loader accepts. `schemas/` holds them for
//! editors; a test regenerates and compares.

use schemars::JsonSchema;
use serde_json::Value;

use crate::model;

fn schema_of<T: JsonSchema>(kind: &str) -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$id".into(),
            format!("https://sluice.dev/schemas/v1/{kind}.schema.json").into(),
        );
        obj.insert("title".into(), format!("sluice {kind}").into());
        if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert(
                "apiVersion".into(),
                serde_json::json!({ "const": model::API_VERSION }),
            );
            props.insert("kind".into(), serde_json::json!({ "const": kind }));
            props.insert(
                "id".into(),
                serde_json::json!({ "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$" }),
            );
        }
    }
    schema
}

/// `(kind, schema)` for every kind, in FORMAT.md order.
pub fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("Project", schema_of::<model::Project>("Project")),
        ("Journey", schema_of::<model::Journey>("Journey")),
        ("Segment", schema_of::<model::Segment>("Segment")),
        ("Template", schema_of::<model::Template>("Template")),
        ("QuietHours", schema_of::<model::QuietHours>("QuietHours")),
        ("Throttle", schema_of::<model::Throttle>("Throttle")),
        (
            "FrequencyCap",
            schema_of::<model::FrequencyCap>("FrequencyCap"),
        ),
        ("Catalog", schema_of::<model::Catalog>("Catalog")),
        (
            "JourneyTest",
            schema_of::<model::JourneyTest>("JourneyTest"),
        ),
    ]
}

/// One schema that accepts a document of any kind (for editors that map
/// one schema to every YAML file of a repository).
pub fn any_kind() -> Value {
    let refs: Vec<Value> = schemas()
        .iter()
        .map(|(k, _)| serde_json::json!({ "$ref": format!("{k}.schema.json") }))
        .collect();
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://sluice.dev/schemas/v1/sluice.schema.json",
        "title": "sluice document (any kind)",
        "oneOf": refs,
    })
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
