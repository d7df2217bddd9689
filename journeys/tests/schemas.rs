//! The committed schemas in `schemas/` equal what the Rust types generate.
//! Regenerate with `SLUICE_BLESS=1 cargo test -p journeys --test schemas`
//! (or `sluice schemas schemas/`).

use std::path::Path;

#[test]
fn committed_schemas_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    if std::env::var_os("SLUICE_BLESS").is_some() {
        journeys::schema::write_all(&dir).expect("write schemas");
    }
    let mut stale = Vec::new();
    let mut all: Vec<(String, serde_json::Value)> = journeys::schema::schemas()
        .into_iter()
        .map(|(k, s)| (format!("{k}.schema.json"), s))
        .collect();
    all.push(("sluice.schema.json".into(), journeys::schema::any_kind()));
    for (file, schema) in all {
        let expected = serde_json::to_string_pretty(&schema).expect("json") + "\n";
        let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
        if committed != expected {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas out of date: {stale:?}; run `SLUICE_BLESS=1 cargo test -p journeys --test schemas`"
    );
}

#[test]
fn schemas_describe_required_keys() {
    let schemas = journeys::schema::schemas();
    let journey = &schemas
        .iter()
        .find(|(k, _)| *k == "Journey")
        .expect("journey")
        .1;
    let required: Vec<&str> = journey["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for key in ["apiVersion", "kind", "id", "version", "entry", "steps"] {
        assert!(required.contains(&key), "{key} missing from {required:?}");
    }
    assert_eq!(journey["additionalProperties"], serde_json::json!(false));
}
