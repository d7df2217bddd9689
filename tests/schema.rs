//! The committed JSON Schemas (`schemas/`) against what `sluice validate`
//! accepts, with a real JSON Schema validator and no network (the
//! validator is built without remote or file resolution, so a reference
//! that leaves its file fails here):
//!
//! - every YAML document under `examples/`, every valid fixture repository
//!   and the scalar spellings of `tests/schema/valid` are accepted by the
//!   bundle and by their kind's own file;
//! - each invalid case (the error fixtures a schema can see, plus
//!   `tests/schema/invalid`) is rejected by the schema and by
//!   `sluice validate`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
}

fn schema(file: &str) -> jsonschema::Validator {
    let path = root().join("schemas").join(file);
    let text = std::fs::read_to_string(&path).expect("schema file");
    let value: Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::draft7::new(&value).unwrap_or_else(|e| panic!("{file} does not compile: {e}"))
}

/// Every document of every YAML file below `dir`, as the loader reads it
/// (YAML 1.2 core schema, as the editors read it too).
fn documents(dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in journeys::load::discover(dir).expect("a directory") {
        let text = std::fs::read_to_string(&path).expect("utf-8");
        let index = journeys::span::LineIndex::new(&text);
        let docs = journeys::span::parse_documents(&text, &index)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
        for (i, doc) in docs.iter().enumerate() {
            if !doc.value.is_null() {
                out.push((
                    format!("{} #{}", path.display(), i + 1),
                    doc.value.to_json(),
                ));
            }
        }
    }
    out
}

fn sluice_validate(dir: &Path) -> i32 {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "--format", "json"])
        .arg(dir)
        .output()
        .expect("run sluice")
        .status
        .code()
        .unwrap_or(-1)
}

/// The problems the bundle and the document's kind file find.
fn problems(bundle: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    let mut out: Vec<String> = bundle
        .iter_errors(doc)
        .map(|e| format!("sluice.schema.json: {} at {}", e, e.instance_path()))
        .collect();
    if let Some(kind) = doc["kind"]
        .as_str()
        .filter(|k| journeys::model::KINDS.contains(k))
    {
        let file = format!("{kind}.schema.json");
        let own = schema(&file);
        out.extend(
            own.iter_errors(doc)
                .map(|e| format!("{file}: {} at {}", e, e.instance_path())),
        );
    }
    out
}

fn valid_repositories() -> Vec<PathBuf> {
    let mut dirs = vec![
        root().join("examples/shop"),
        root().join("tests/schema/valid"),
    ];
    let fixtures = root().join("tests/fixtures");
    let mut more: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            // `diagnostics/<case>` are invalid on purpose (tests/validate.rs).
            p.is_dir()
                && !p.ends_with("plan")
                && !p.ends_with("deploy")
                && !p.ends_with("diagnostics")
        })
        .collect();
    // `plan/<case>/{base,head}` are pairs of repositories.
    let plan = fixtures.join("plan");
    if let Ok(cases) = std::fs::read_dir(&plan) {
        for case in cases {
            let case = case.expect("entry").path();
            for side in ["base", "head"] {
                let dir = case.join(side);
                if dir.is_dir() {
                    more.push(dir);
                }
            }
        }
    }
    // `deploy/<version>` are checkouts of one repository.
    if let Ok(versions) = std::fs::read_dir(fixtures.join("deploy")) {
        for v in versions {
            let v = v.expect("entry").path();
            if v.is_dir() {
                more.push(v);
            }
        }
    }
    more.sort();
    dirs.extend(more);
    dirs
}

#[test]
fn every_valid_document_is_accepted_by_the_schemas() {
    let bundle = schema("sluice.schema.json");
    let mut checked = 0;
    let mut failures = Vec::new();
    for dir in valid_repositories() {
        assert_eq!(sluice_validate(&dir), 0, "{} must be valid", dir.display());
        for (name, doc) in documents(&dir) {
            for p in problems(&bundle, &doc) {
                failures.push(format!("{name}: {p}"));
            }
            checked += 1;
        }
    }
    // Everything under examples/, not only the shop.
    for (name, doc) in documents(&root().join("examples")) {
        for p in problems(&bundle, &doc) {
            failures.push(format!("{name}: {p}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 50, "only {checked} documents checked");
}

/// Error fixtures of `journeys/tests/errors` whose problem is one of shape
/// (a key, a type, an enum, a scalar syntax): the schema must see it too.
/// Problems of references, graphs, templates and types against a Catalog
/// are beyond a JSON Schema.
const SHAPE_ERRORS: &[&str] = &[
    "unknown_field",
    "unknown_field-nested",
    "missing_field",
    "unknown_kind",
    "unknown_api_version",
    "invalid_value",
    "invalid_duration",
    "invalid_time_of_day",
    "unknown_reference-channel",
];

#[test]
fn every_invalid_case_is_rejected_by_the_schema_and_by_validate() {
    let bundle = schema("sluice.schema.json");
    let mut cases: Vec<PathBuf> = SHAPE_ERRORS
        .iter()
        .map(|c| root().join("journeys/tests/errors").join(c))
        .collect();
    let own = root().join("tests/schema/invalid");
    let mut more: Vec<PathBuf> = std::fs::read_dir(&own)
        .expect("tests/schema/invalid")
        .map(|e| e.expect("entry").path())
        .collect();
    more.sort();
    assert!(more.len() >= 5, "{more:?}");
    cases.extend(more);
    for case in cases {
        // A case is a repository (a directory) or a single file.
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = if case.is_dir() {
            case.clone()
        } else {
            std::fs::copy(&case, tmp.path().join("case.yaml")).expect("copy");
            tmp.path().to_path_buf()
        };
        let docs = documents(&dir);
        assert_eq!(
            sluice_validate(&dir),
            1,
            "sluice validate accepts {}",
            case.display()
        );
        let rejected = docs.iter().any(|(_, d)| !problems(&bundle, d).is_empty());
        assert!(rejected, "the schemas accept {}", case.display());
    }
}

#[test]
fn every_field_has_a_description() {
    let mut missing = Vec::new();
    for file in std::fs::read_dir(root().join("schemas")).expect("schemas") {
        let path = file.expect("entry").path();
        let value: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        undescribed(&value, &path.display().to_string(), &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description:\n{}",
        missing.join("\n")
    );
}

/// Every entry of every `properties` map has a `description` (but the
/// `if` of the bundle's choice of kind, which describes nothing).
fn undescribed(value: &Value, at: &str, out: &mut Vec<String>) {
    if at.ends_with("/if") {
        return;
    }
    match value {
        Value::Object(obj) => {
            if let Some(Value::Object(props)) = obj.get("properties") {
                for (key, prop) in props {
                    if prop.get("description").is_none() {
                        out.push(format!("{at}/properties/{key}"));
                    }
                }
            }
            for (k, v) in obj {
                undescribed(v, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                undescribed(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}
