//! The profile section of a user record: a JSON object of attributes,
//! with the user's id under `id` (so conditions and templates can read
//! `user.id`).

use serde_json::{Map, Value};

/// A fresh profile for `user`.
pub fn new(user: &str) -> Value {
    let mut m = Map::new();
    m.insert("id".to_owned(), Value::String(user.to_owned()));
    Value::Object(m)
}

/// Merges `identify` traits: a `null` removes the trait; `id` cannot be
/// changed. Returns whether anything changed.
pub fn merge(profile: &mut Value, traits: &Map<String, Value>) -> bool {
    let Some(p) = profile.as_object_mut() else {
        return false;
    };
    let mut changed = false;
    for (k, v) in traits {
        if k == "id" {
            continue;
        }
        if v.is_null() {
            changed |= p.remove(k).is_some();
        } else if p.get(k) != Some(v) {
            p.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

/// Sets one attribute by dotted path (`onboarding_stage`, `prefs.lang`),
/// creating objects on the way. Returns whether anything changed.
pub fn set(profile: &mut Value, path: &str, value: Value) -> bool {
    let path = path.strip_prefix("user.").unwrap_or(path);
    if path == "id" || path.is_empty() {
        return false;
    }
    let mut keys = path.split('.').peekable();
    let mut cur = profile;
    while let Some(k) = keys.next() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Some(obj) = cur.as_object_mut() else {
            return false;
        };
        if keys.peek().is_none() {
            if obj.get(k) == Some(&value) {
                return false;
            }
            obj.insert(k.to_owned(), value);
            return true;
        }
        cur = obj
            .entry(k.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_set() {
        let mut p = new("u1");
        let traits = json!({"email": "a@x.io", "plan": "pro", "id": "evil"});
        assert!(merge(&mut p, traits.as_object().expect("obj")));
        assert_eq!(p["id"], "u1");
        let rm = json!({"plan": null});
        assert!(merge(&mut p, rm.as_object().expect("obj")));
        assert!(p.get("plan").is_none());
        assert!(!merge(&mut p, rm.as_object().expect("obj")));
        assert!(set(&mut p, "user.prefs.lang", json!("de")));
        assert_eq!(p["prefs"]["lang"], "de");
        assert!(!set(&mut p, "prefs.lang", json!("de")));
    }
}
