//! Record encoding: bincode for the records, JSON text for the free-form
//! JSON values inside them (profiles, event properties), which bincode
//! cannot describe.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Error;

pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, Error> {
    // `serialize_into` skips bincode's size pass, which would render every
    // embedded JSON value twice.
    let mut out = Vec::with_capacity(512);
    bincode::serialize_into(&mut out, value).map_err(|e| Error::Encode {
        what,
        message: e.to_string(),
    })?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    bincode::deserialize(bytes).map_err(|e| Error::Decode {
        what,
        message: e.to_string(),
    })
}

/// `#[serde(with = "codec::json")]` for a `serde_json::Value` field.
pub mod json {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    pub fn serialize<S: Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
        if v.is_null() {
            return s.serialize_str("");
        }
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

/// Big-endian, order-preserving encoding of a signed millisecond time.
pub fn time_bytes(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn time_from_bytes(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}
