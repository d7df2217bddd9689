//! Record encoding: a layout version byte ([`RECORD_VERSION`]), then
//! bincode for the records, JSON text for the free-form
//! JSON values inside them (profiles, event properties), which bincode
//! cannot describe.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Error;

/// The layout version in front of every record. A record layout that
/// changes gets the next number, and [`decode`] keeps reading the old ones
/// (upgrading them as it reads).
pub const RECORD_VERSION: u8 = 1;

pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, Error> {
    // `serialize_into` skips bincode's size pass, which would render every
    // embedded JSON value twice.
    let mut out = Vec::with_capacity(512);
    out.push(RECORD_VERSION);
    bincode::serialize_into(&mut out, value).map_err(|e| Error::Encode {
        what,
        message: e.to_string(),
    })?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    let body = match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => body,
        Some((v, _)) => {
            return Err(Error::Decode {
                what,
                message: format!(
                    "record layout version {v} is unknown (this sluice reads {RECORD_VERSION})"
                ),
            })
        }
        None => {
            return Err(Error::Decode {
                what,
                message: "empty record".into(),
            })
        }
    };
    bincode::deserialize(body).map_err(|e| Error::Decode {
        what,
        message: e.to_string(),
    })
}

/// `#[serde(with = "codec::json")]` for a `serde_json::Value` field: the
/// value as a compact tagged tree (bincode cannot describe JSON values
/// itself), about twice as fast as embedding JSON text.
pub mod json {
    use serde::de::{self, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
    use serde::ser::{SerializeMap, SerializeSeq};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::{Map, Number, Value};

    const NAME: &str = "Json";
    const VARIANTS: &[&str] = &["N", "B", "I", "U", "F", "S", "A", "O"];

    struct Ref<'a>(&'a Value);
    struct Seq<'a>(&'a [Value]);
    struct Obj<'a>(&'a Map<String, Value>);

    impl Serialize for Ref<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                Value::Null => s.serialize_unit_variant(NAME, 0, "N"),
                Value::Bool(b) => s.serialize_newtype_variant(NAME, 1, "B", b),
                Value::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        s.serialize_newtype_variant(NAME, 2, "I", &i)
                    } else if let Some(u) = n.as_u64() {
                        s.serialize_newtype_variant(NAME, 3, "U", &u)
                    } else {
                        s.serialize_newtype_variant(NAME, 4, "F", &n.as_f64().unwrap_or(0.0))
                    }
                }
                Value::String(x) => s.serialize_newtype_variant(NAME, 5, "S", x),
                Value::Array(a) => s.serialize_newtype_variant(NAME, 6, "A", &Seq(a)),
                Value::Object(m) => s.serialize_newtype_variant(NAME, 7, "O", &Obj(m)),
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

    impl Serialize for Obj<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0 {
                map.serialize_entry(k, &Ref(v))?;
            }
            map.end()
        }
    }

    struct Owned(Value);
    struct SeqOwned(Vec<Value>);
    struct ObjOwned(Map<String, Value>);

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
                            Value::Null
                        }
                        1 => Value::Bool(variant.newtype_variant()?),
                        2 => Value::Number(variant.newtype_variant::<i64>()?.into()),
                        3 => Value::Number(variant.newtype_variant::<u64>()?.into()),
                        4 => Number::from_f64(variant.newtype_variant()?)
                            .map_or(Value::Null, Value::Number),
                        5 => Value::String(variant.newtype_variant()?),
                        6 => Value::Array(variant.newtype_variant::<SeqOwned>()?.0),
                        7 => Value::Object(variant.newtype_variant::<ObjOwned>()?.0),
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
                    Ok(SeqOwned(out))
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
                    let mut out = Map::new();
                    while let Some((k, Owned(v))) = map.next_entry::<String, Owned>()? {
                        out.insert(k, v);
                    }
                    Ok(ObjOwned(out))
                }
            }
            d.deserialize_map(V)
        }
    }

    pub fn serialize<S: Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
        Ref(v).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        Owned::deserialize(d).map(|o| o.0)
    }
}

/// Big-endian, order-preserving encoding of a signed millisecond time.
pub fn time_bytes(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn time_from_bytes(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        #[serde(with = "super::json")]
        v: serde_json::Value,
        n: u32,
    }

    #[test]
    fn json_values_roundtrip_through_bincode() {
        let v = serde_json::json!({"a": [1, -2, 3.5, u64::MAX, null, true, "x"], "b": {"c": "ü"}, "d": {}});
        let r = R { v, n: 7 };
        let bytes = super::encode("r", &r).expect("encode");
        let back: R = super::decode("r", &bytes).expect("decode");
        assert_eq!(back, r);
    }
}
