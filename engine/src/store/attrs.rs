//! The compact in-memory form of the free-form JSON a user record keeps:
//! profile attributes, the properties of the events an instance holds
//! (`entry.*`, `event.*`), of goal watches and of remembered history.
//!
//! A `serde_json::Value` (with `preserve_order`) is 80 bytes, and an object
//! adds a hash index and a heap string per key. Here a value is 24 bytes,
//! an object is one boxed slice of (name, value) pairs in insertion order,
//! and names are shared ([`Name`], interned up to a bound), so a cached user
//! takes a fraction of the memory and decoding one allocates far less.
//!
//! Objects behave exactly as `serde_json::Map` does with `preserve_order`
//! (an insert keeps an existing key's place, a removal moves the last entry
//! into the gap, equality ignores order), so whatever is rendered from a
//! value (templates, `inspect`, dead letters) reads as before. Its bincode
//! form ([`tagged`]) is byte for byte [`super::codec::json`]'s: records
//! written before this type existed read unchanged.
//!
//! It knows nothing of conditions, templates or the engine: readers convert
//! what they need ([`Val::to_json`]) or read it in place ([`Val::lookup`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// An attribute or property name, shared between all the values that use
/// it.
pub type Name = Arc<str>;

/// How many distinct names are shared at most (further names are
/// allocated per use): names come from users' traits and events, so the
/// table must not grow without bound in a long-running service.
const MAX_SHARED_NAMES: usize = 16_384;
/// Longer names are not shared.
const MAX_SHARED_LEN: usize = 64;

/// The shared [`Name`] for `s`.
pub fn name(s: &str) -> Name {
    // A randomly seeded aHash: names come from the network, and SipHash
    // showed in profiles (a lookup per attribute decoded or merged).
    static NAMES: OnceLock<Mutex<HashSet<Name, ahash::RandomState>>> = OnceLock::new();
    if s.len() > MAX_SHARED_LEN {
        return Arc::from(s);
    }
    let mut names = NAMES
        .get_or_init(|| Mutex::new(HashSet::default()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(n) = names.get(s) {
        return n.clone();
    }
    let n: Name = Arc::from(s);
    if names.len() < MAX_SHARED_NAMES {
        names.insert(n.clone());
    }
    n
}

/// A JSON value, compactly.
#[derive(Debug, Clone, Default)]
pub enum Val {
    #[default]
    Null,
    Bool(bool),
    Num(Number),
    Str(Box<str>),
    Arr(Box<[Val]>),
    Obj(Obj),
}

/// A JSON object: its entries in insertion order.
#[derive(Debug, Clone, Default)]
pub struct Obj(Box<[(Name, Val)]>);

impl PartialEq for Val {
    fn eq(&self, other: &Val) -> bool {
        match (self, other) {
            (Val::Null, Val::Null) => true,
            (Val::Bool(a), Val::Bool(b)) => a == b,
            (Val::Num(a), Val::Num(b)) => a == b,
            (Val::Str(a), Val::Str(b)) => a == b,
            (Val::Arr(a), Val::Arr(b)) => a == b,
            (Val::Obj(a), Val::Obj(b)) => a == b,
            _ => false,
        }
    }
}

/// As `serde_json::Map`'s: the same entries, in any order.
impl PartialEq for Obj {
    fn eq(&self, other: &Obj) -> bool {
        self.0.len() == other.0.len() && self.0.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl Val {
    /// An empty object.
    pub fn object() -> Val {
        Val::Obj(Obj::default())
    }

    pub fn from_json(v: &Value) -> Val {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.clone()),
            Value::String(s) => Val::Str(s.as_str().into()),
            Value::Array(a) => Val::Arr(a.iter().map(Val::from_json).collect()),
            Value::Object(m) => Val::Obj(Obj::from_json(m)),
        }
    }

    /// The same value as a `serde_json::Value` (entries in the same order).
    pub fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => Value::Number(n.clone()),
            Val::Str(s) => Value::String(s.as_ref().to_owned()),
            Val::Arr(a) => Value::Array(a.iter().map(Val::to_json).collect()),
            Val::Obj(o) => Value::Object(o.to_json()),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Val::Obj(_))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Val]> {
        match self {
            Val::Arr(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Obj> {
        match self {
            Val::Obj(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Obj> {
        match self {
            Val::Obj(o) => Some(o),
            _ => None,
        }
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Val> {
        self.as_object().and_then(|o| o.get(key))
    }

    /// Follows `keys` into nested objects.
    pub fn lookup<'v, K: AsRef<str>>(&'v self, keys: &[K]) -> Option<&'v Val> {
        let mut v = self;
        for k in keys {
            v = v.get(k.as_ref())?;
        }
        Some(v)
    }
}

impl From<Value> for Val {
    /// Takes the strings over (no copy when they have no spare capacity).
    fn from(v: Value) -> Val {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(b),
            Value::Number(n) => Val::Num(n),
            Value::String(s) => Val::Str(s.into_boxed_str()),
            Value::Array(a) => Val::Arr(a.into_iter().map(Val::from).collect()),
            Value::Object(m) => Val::Obj(Obj(m
                .into_iter()
                .map(|(k, v)| (name(&k), v.into()))
                .collect())),
        }
    }
}

/// `value["key"]`: the member, or `null` (as `serde_json::Value` indexes).
impl std::ops::Index<&str> for Val {
    type Output = Val;
    fn index(&self, key: &str) -> &Val {
        static NULL: Val = Val::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl PartialEq<str> for Val {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for Val {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl From<Obj> for Val {
    fn from(o: Obj) -> Val {
        Val::Obj(o)
    }
}

impl Obj {
    pub fn from_json(m: &Map<String, Value>) -> Obj {
        // A map's keys are unique already.
        Obj(m
            .iter()
            .map(|(k, v)| (name(k), Val::from_json(v)))
            .collect())
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::with_capacity(self.0.len());
        for (k, v) in self.0.iter() {
            m.insert(k.as_ref().to_owned(), v.to_json());
        }
        m
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Val)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.0.iter().position(|(k, _)| k.as_ref() == key)
    }

    pub fn get(&self, key: &str) -> Option<&Val> {
        self.0
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Val> {
        self.0
            .iter_mut()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key` (in its place when present, else last); returns the
    /// value it had.
    pub fn insert(&mut self, key: &str, value: Val) -> Option<Val> {
        if let Some(v) = self.get_mut(key) {
            return Some(std::mem::replace(v, value));
        }
        let mut entries = std::mem::take(&mut self.0).into_vec();
        entries.reserve_exact(1);
        entries.push((name(key), value));
        self.0 = entries.into_boxed_slice();
        None
    }

    /// The member `key`, inserted (as `default()`) when missing.
    pub fn entry_or_insert_with(&mut self, key: &str, default: impl FnOnce() -> Val) -> &mut Val {
        let i = match self.position(key) {
            Some(i) => i,
            None => {
                self.insert(key, default());
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    /// Removes `key` as `serde_json::Map::remove` does with
    /// `preserve_order`: the last entry takes its place.
    pub fn remove(&mut self, key: &str) -> Option<Val> {
        let i = self.position(key)?;
        let mut entries = std::mem::take(&mut self.0).into_vec();
        let (_, v) = entries.swap_remove(i);
        self.0 = entries.into_boxed_slice();
        Some(v)
    }
}

impl FromIterator<(Name, Val)> for Obj {
    /// Later duplicates replace the value of the first (as an object
    /// parsed from JSON text keeps it).
    fn from_iter<I: IntoIterator<Item = (Name, Val)>>(iter: I) -> Obj {
        let iter = iter.into_iter();
        let mut entries: Vec<(Name, Val)> = Vec::with_capacity(iter.size_hint().0);
        for (k, v) in iter {
            match entries.iter_mut().find(|(e, _)| *e == k) {
                Some(e) => e.1 = v,
                None => entries.push((k, v)),
            }
        }
        Obj(entries.into_boxed_slice())
    }
}

/// The value's JSON shape (as `serde_json::Value` serializes).
impl Serialize for Val {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Null => s.serialize_unit(),
            Val::Bool(b) => s.serialize_bool(*b),
            Val::Num(n) => n.serialize(s),
            Val::Str(x) => s.serialize_str(x),
            Val::Arr(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a.iter() {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Val::Obj(o) => o.serialize(s),
        }
    }
}

impl Serialize for Obj {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0.iter() {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

/// `#[serde(with = "attrs::tagged")]` for a [`Val`] field in a record: the
/// tagged tree of [`super::codec::json`] (the same bytes), read straight
/// into the compact form.
pub mod tagged {
    use serde::de::{self, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
    use serde::ser::{SerializeMap, SerializeSeq};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Number;

    use super::{name, Obj, Val};

    const NAME: &str = "Json";
    const VARIANTS: &[&str] = &["N", "B", "I", "U", "F", "S", "A", "O"];

    struct Ref<'a>(&'a Val);
    struct Seq<'a>(&'a [Val]);
    struct Entries<'a>(&'a Obj);

    impl Serialize for Ref<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                Val::Null => s.serialize_unit_variant(NAME, 0, "N"),
                Val::Bool(b) => s.serialize_newtype_variant(NAME, 1, "B", b),
                Val::Num(n) => {
                    if let Some(i) = n.as_i64() {
                        s.serialize_newtype_variant(NAME, 2, "I", &i)
                    } else if let Some(u) = n.as_u64() {
                        s.serialize_newtype_variant(NAME, 3, "U", &u)
                    } else {
                        s.serialize_newtype_variant(NAME, 4, "F", &n.as_f64().unwrap_or(0.0))
                    }
                }
                Val::Str(x) => s.serialize_newtype_variant(NAME, 5, "S", x.as_ref()),
                Val::Arr(a) => s.serialize_newtype_variant(NAME, 6, "A", &Seq(a)),
                Val::Obj(o) => s.serialize_newtype_variant(NAME, 7, "O", &Entries(o)),
            }
        }
    }

    impl Serialize for Seq<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for v in self.0 {
                seq.serialize_element(&Ref(v))?;
            }
            seq.end()
        }
    }

    impl Serialize for Entries<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0.iter() {
                map.serialize_entry(k, &Ref(v))?;
            }
            map.end()
        }
    }

    struct Owned(Val);
    struct SeqOwned(Box<[Val]>);
    struct ObjOwned(Obj);
    /// A name read without an owned `String` on the way.
    struct Key(super::Name);

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Key;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a name")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                    Ok(Key(name(v)))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// A string straight into its box.
    struct Text(Box<str>);

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Text;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                    Ok(Text(v.into()))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                    Ok(Text(v.into_boxed_str()))
                }
            }
            d.deserialize_str(V)
        }
    }

    impl<'de> Deserialize<'de> for Owned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Owned;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON value")
                }
                fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Owned, A::Error> {
                    let (tag, variant): (u32, _) = data.variant()?;
                    Ok(Owned(match tag {
                        0 => {
                            variant.unit_variant()?;
                            Val::Null
                        }
                        1 => Val::Bool(variant.newtype_variant()?),
                        2 => Val::Num(variant.newtype_variant::<i64>()?.into()),
                        3 => Val::Num(variant.newtype_variant::<u64>()?.into()),
                        4 => {
                            Number::from_f64(variant.newtype_variant()?).map_or(Val::Null, Val::Num)
                        }
                        5 => Val::Str(variant.newtype_variant::<Text>()?.0),
                        6 => Val::Arr(variant.newtype_variant::<SeqOwned>()?.0),
                        7 => Val::Obj(variant.newtype_variant::<ObjOwned>()?.0),
                        other => {
                            return Err(de::Error::custom(format!("unknown JSON tag {other}")))
                        }
                    }))
                }
            }
            d.deserialize_enum(NAME, VARIANTS, V)
        }
    }

    impl<'de> Deserialize<'de> for SeqOwned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = SeqOwned;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON array")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SeqOwned, A::Error> {
                    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                    while let Some(Owned(v)) = seq.next_element()? {
                        out.push(v);
                    }
                    Ok(SeqOwned(out.into_boxed_slice()))
                }
            }
            d.deserialize_seq(V)
        }
    }

    impl<'de> Deserialize<'de> for ObjOwned {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = ObjOwned;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObjOwned, A::Error> {
                    let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                    while let Some((Key(k), Owned(v))) = map.next_entry::<Key, Owned>()? {
                        out.push((k, v));
                    }
                    Ok(ObjOwned(Obj(out.into_boxed_slice())))
                }
            }
            d.deserialize_map(V)
        }
    }

    pub fn serialize<S: Serializer>(v: &Val, s: S) -> Result<S::Ok, S::Error> {
        Ref(v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Val, D::Error> {
        Owned::deserialize(d).map(|o| o.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};
    use serde_json::{json, Value};

    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Old {
        #[serde(with = "crate::store::codec::json")]
        v: Value,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct New {
        #[serde(with = "super::tagged")]
        v: Val,
    }

    fn sample() -> Value {
        json!({"id": "u1", "a": [1, -2, 3.5, u64::MAX, null, true, "x"], "b": {"c": "ü", "d": {}}, "e": []})
    }

    #[test]
    fn the_bincode_form_is_the_json_codec_s() {
        let v = sample();
        let old = crate::store::codec::encode("t", &Old { v: v.clone() }).expect("old");
        let new = crate::store::codec::encode(
            "t",
            &New {
                v: Val::from_json(&v),
            },
        )
        .expect("new");
        assert_eq!(old, new);
        let back: New = crate::store::codec::decode("t", &old).expect("decode");
        assert_eq!(back.v.to_json(), v);
        // Same order of members, same text.
        assert_eq!(back.v.to_json().to_string(), v.to_string());
        assert_eq!(serde_json::to_string(&back.v).expect("json"), v.to_string());
    }

    #[test]
    fn objects_behave_as_preserve_order_maps() {
        let mut json = serde_json::Map::new();
        let mut obj = Obj::default();
        for (k, v) in [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("b", 5)] {
            json.insert(k.to_owned(), json!(v));
            obj.insert(k, Val::from_json(&json!(v)));
        }
        assert_eq!(obj.to_json(), json);
        json.remove("a");
        obj.remove("a");
        assert_eq!(
            Value::Object(obj.to_json()).to_string(),
            Value::Object(json.clone()).to_string()
        );
        assert_eq!(Value::Object(json).to_string(), r#"{"d":4,"b":5,"c":3}"#);
        // Equality ignores order, as `Map`'s does.
        let x = Val::from_json(&json!({"a": 1, "b": 2}));
        let y = Val::from_json(&json!({"b": 2, "a": 1}));
        assert_eq!(x, y);
        assert_ne!(x, Val::from_json(&json!({"a": 1})));
        assert_eq!(x["a"], Val::from_json(&json!(1)));
        assert!(x["zz"].is_null());
    }

    #[test]
    fn values_stay_small() {
        // What a cached user's memory rests on: a value in three words, an
        // object in two (`serde_json::Value` is 80 bytes with
        // `preserve_order`).
        assert_eq!(std::mem::size_of::<Val>(), 24);
        assert_eq!(std::mem::size_of::<Obj>(), 16);
        assert_eq!(std::mem::size_of::<(Name, Val)>(), 40);
    }

    #[test]
    fn names_are_shared() {
        let a = Val::from_json(&json!({"first_name": "x"}));
        let b: Val = json!({"first_name": "y"}).into();
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            panic!("objects")
        };
        assert!(Arc::ptr_eq(&a.0[0].0, &b.0[0].0));
        let long = "n".repeat(MAX_SHARED_LEN + 1);
        assert!(!Arc::ptr_eq(&name(&long), &name(&long)));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            "[a-zé]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec(("[a-e]{1,2}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_converts_and_encodes_as_json_does(v in json_value()) {
            let c = Val::from_json(&v);
            prop_assert_eq!(c.to_json().to_string(), v.to_string());
            prop_assert_eq!(Val::from(v.clone()).to_json().to_string(), v.to_string());
            prop_assert!(crate::store::profile::same(&c, &v));
            let old = crate::store::codec::encode("t", &Old { v: v.clone() }).expect("old");
            let new = crate::store::codec::encode("t", &New { v: c }).expect("new");
            prop_assert_eq!(&old, &new);
            let back: New = crate::store::codec::decode("t", &new).expect("decode");
            prop_assert_eq!(back.v.to_json().to_string(), v.to_string());
        }
    }
}
