//! The profile section of a user record: an object of attributes (in the
//! record's compact form, [`super::attrs`]), with the user's id under `id`
//! (so conditions and templates can read `user.id`).

use serde_json::{Map, Value};

use super::attrs::{Obj, Val};

/// A fresh profile for `user`.
pub fn new(user: &str) -> Val {
    let mut m = Obj::default();
    m.insert("id", Val::Str(user.into()));
    Val::Obj(m)
}

/// The attribute recording the email address's deliverability
/// (`bounced`), and the address it is about.
const EMAIL: &str = "email";
const EMAIL_STATUS: &str = crate::policy::EMAIL_STATUS;

/// Whether `new` is another mailbox than `old` (addresses compared without
/// regard to ASCII case, as the bounce check compares them).
fn other_address(old: Option<&Val>, new: Option<&Val>) -> bool {
    match (old.and_then(Val::as_str), new.and_then(Val::as_str)) {
        (Some(a), Some(b)) => !a.trim().eq_ignore_ascii_case(b.trim()),
        (None, None) => false,
        _ => old != new,
    }
}

/// A new `email` clears `email_status` (a bounce was about the old
/// address, RUN.md §3); the same address again keeps it. Returns whether
/// the status was removed.
fn clear_status_on_new_email(p: &mut Obj, old_email: Option<&Val>) -> bool {
    if other_address(old_email, p.get(EMAIL)) {
        return p.remove(EMAIL_STATUS).is_some();
    }
    false
}

/// Whether the compact `a` is the JSON `b`, without converting either.
pub fn same(a: &Val, b: &Value) -> bool {
    match (a, b) {
        (Val::Null, Value::Null) => true,
        (Val::Bool(x), Value::Bool(y)) => x == y,
        (Val::Num(x), Value::Number(y)) => x == y,
        (Val::Str(x), Value::String(y)) => x.as_ref() == y.as_str(),
        (Val::Arr(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Val::Obj(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => false,
    }
}

/// Merges `identify` traits: a `null` removes the trait; `id` cannot be
/// changed. A different `email` clears `email_status` (unless the traits
/// set it themselves). Returns whether anything changed.
pub fn merge(profile: &mut Val, traits: &Map<String, Value>) -> bool {
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
        } else if !p.get(k).is_some_and(|old| same(old, v)) {
            p.insert(k, Val::from_json(v));
            changed = true;
        }
    }
    if traits.contains_key(EMAIL) && !traits.contains_key(EMAIL_STATUS) {
        clear_status_on_new_email(p, old_email.as_ref());
    }
    changed
}

/// Sets one attribute by dotted path (`onboarding_stage`, `prefs.lang`),
/// creating objects on the way; a `null` removes it, as in `identify`.
/// Setting a different `email` clears `email_status`. Returns whether
/// anything changed.
pub fn set(profile: &mut Val, path: &str, value: Value) -> bool {
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

fn set_path(profile: &mut Val, path: &str, value: Value) -> bool {
    if value.is_null() {
        return remove_path(profile, path);
    }
    let mut keys = path.split('.').peekable();
    let mut cur = profile;
    while let Some(k) = keys.next() {
        if !cur.is_object() {
            *cur = Val::object();
        }
        let Some(obj) = cur.as_object_mut() else {
            return false;
        };
        if keys.peek().is_none() {
            if obj.get(k).is_some_and(|old| same(old, &value)) {
                return false;
            }
            obj.insert(k, Val::from(value));
            return true;
        }
        cur = obj.entry_or_insert_with(k, Val::object);
    }
    false
}

/// Removes the attribute at a dotted path; creates nothing on the way.
fn remove_path(profile: &mut Val, path: &str) -> bool {
    let mut keys = path.split('.').peekable();
    let mut cur = profile;
    while let Some(k) = keys.next() {
        let Some(obj) = cur.as_object_mut() else {
            return false;
        };
        if keys.peek().is_none() {
            return obj.remove(k).is_some();
        }
        let Some(next) = obj.get_mut(k) else {
            return false;
        };
        cur = next;
    }
    false
}

/// What the engine and the policies read of a profile's reserved
/// attributes, whichever form it is in.
pub trait Profile: std::fmt::Debug {
    /// A string attribute.
    fn text(&self, key: &str) -> Option<&str>;
    /// `subscriptions.<key>`, when it is a boolean.
    fn subscription(&self, key: &str) -> Option<bool>;
    /// Whether `push_tokens` holds a non-empty string.
    fn has_push_token(&self) -> bool;
}

impl Profile for Map<String, Value> {
    fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
    fn subscription(&self, key: &str) -> Option<bool> {
        self.get("subscriptions")
            .and_then(|s| s.get(key))
            .and_then(Value::as_bool)
    }
    fn has_push_token(&self) -> bool {
        self.get("push_tokens")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|v| v.as_str().is_some_and(|s| !s.is_empty())))
    }
}

impl Profile for Value {
    fn text(&self, key: &str) -> Option<&str> {
        self.as_object().and_then(|m| m.text(key))
    }
    fn subscription(&self, key: &str) -> Option<bool> {
        self.as_object().and_then(|m| m.subscription(key))
    }
    fn has_push_token(&self) -> bool {
        self.as_object().is_some_and(Profile::has_push_token)
    }
}

impl Profile for Val {
    fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Val::as_str)
    }
    fn subscription(&self, key: &str) -> Option<bool> {
        self.get("subscriptions")
            .and_then(|s| s.get(key))
            .and_then(Val::as_bool)
    }
    fn has_push_token(&self) -> bool {
        self.get("push_tokens")
            .and_then(Val::as_array)
            .is_some_and(|t| t.iter().any(|v| v.as_str().is_some_and(|s| !s.is_empty())))
    }
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
        // A null removes, as in `identify`, and creates nothing on the way.
        assert!(set(&mut p, "user.prefs.lang", Value::Null));
        assert!(p["prefs"].get("lang").is_none());
        assert!(!set(&mut p, "prefs.lang", Value::Null));
        assert!(!set(&mut p, "other.deep", Value::Null));
        assert!(p.get("other").is_none());
        assert!(set(&mut p, "prefs", Value::Null));
        assert!(p.get("prefs").is_none());
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
