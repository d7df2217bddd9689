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

/// The attribute recording the email address's deliverability
/// (`bounced`), and the address it is about.
const EMAIL: &str = "email";
const EMAIL_STATUS: &str = crate::policy::EMAIL_STATUS;

/// Whether `new` is another mailbox than `old` (addresses compared without
/// regard to ASCII case, as the bounce check compares them).
fn other_address(old: Option<&Value>, new: Option<&Value>) -> bool {
    match (old.and_then(Value::as_str), new.and_then(Value::as_str)) {
        (Some(a), Some(b)) => !a.trim().eq_ignore_ascii_case(b.trim()),
        (None, None) => false,
        _ => old != new,
    }
}

/// A new `email` clears `email_status` (a bounce was about the old
/// address, RUN.md §3); the same address again keeps it. Returns whether
/// the status was removed.
fn clear_status_on_new_email(p: &mut Map<String, Value>, old_email: Option<&Value>) -> bool {
    if other_address(old_email, p.get(EMAIL)) {
        return p.remove(EMAIL_STATUS).is_some();
    }
    false
}

/// Merges `identify` traits: a `null` removes the trait; `id` cannot be
/// changed. A different `email` clears `email_status` (unless the traits
/// set it themselves). Returns whether anything changed.
pub fn merge(profile: &mut Value, traits: &Map<String, Value>) -> bool {
    let Some(p) = profile.as_object_mut() else {
        return false;
    };
    let old_email = traits
        .contains_key(EMAIL)
        .then(|| p.get(EMAIL).cloned())
        .flatten();
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
    if traits.contains_key(EMAIL) && !traits.contains_key(EMAIL_STATUS) {
        clear_status_on_new_email(p, old_email.as_ref());
    }
    changed
}

/// Sets one attribute by dotted path (`onboarding_stage`, `prefs.lang`),
/// creating objects on the way. Setting a different `email` clears
/// `email_status`. Returns whether anything changed.
pub fn set(profile: &mut Value, path: &str, value: Value) -> bool {
    let path = path.strip_prefix("user.").unwrap_or(path);
    if path == "id" || path.is_empty() {
        return false;
    }
    if path == EMAIL {
        let old = profile.get(EMAIL).cloned();
        let changed = set_path(profile, path, value);
        if let Some(p) = profile.as_object_mut() {
            clear_status_on_new_email(p, old.as_ref());
        }
        return changed;
    }
    set_path(profile, path, value)
}

fn set_path(profile: &mut Value, path: &str, value: Value) -> bool {
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

    #[test]
    fn a_different_email_clears_the_bounce_and_the_same_keeps_it() {
        let mut p = new("u1");
        let t = |v: Value| v.as_object().expect("obj").clone();
        merge(&mut p, &t(json!({"email": "a@x.io"})));
        set(&mut p, "email_status", json!("bounced"));
        // The same address again (any case), or other traits: still bounced.
        merge(&mut p, &t(json!({"email": "A@X.io", "plan": "pro"})));
        assert_eq!(p["email_status"], "bounced");
        merge(&mut p, &t(json!({"plan": "max"})));
        assert_eq!(p["email_status"], "bounced");
        // A new address: mail flows again.
        assert!(merge(&mut p, &t(json!({"email": "b@x.io"}))));
        assert!(p.get("email_status").is_none());
        // Traits that set both keep what they say.
        set(&mut p, "email_status", json!("bounced"));
        merge(
            &mut p,
            &t(json!({"email": "c@x.io", "email_status": "bounced"})),
        );
        assert_eq!(p["email_status"], "bounced");
        // Through a profile update (an `update` step) too.
        assert!(!set(&mut p, "email", json!("c@x.io")));
        assert_eq!(p["email_status"], "bounced");
        assert!(set(&mut p, "user.email", json!("d@x.io")));
        assert!(p.get("email_status").is_none());
        // Removing the address clears it as well (a new one starts clean).
        set(&mut p, "email_status", json!("bounced"));
        merge(&mut p, &t(json!({"email": null})));
        assert!(p.get("email_status").is_none());
    }
}
