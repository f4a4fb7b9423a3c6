//! Helpers to read Kong's loosely typed MessagePack (docs/protocol.md#encoding): strings may arrive
//! as `str` or `bin` and need not be UTF-8, numbers as ints or floats, maps as arrays when empty.

use rmpv::Value;

/// Looks a key up in a msgpack map (keys compared as strings).
pub fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    match map {
        Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v),
        _ => None,
    }
}

/// Removes and returns a key from a msgpack map.
pub fn take(map: &mut Value, key: &str) -> Option<Value> {
    match map {
        Value::Map(entries) => {
            let i = entries.iter().position(|(k, _)| k.as_str() == Some(key))?;
            Some(entries.swap_remove(i).1)
        }
        _ => None,
    }
}

/// The raw bytes of a `str` (valid UTF-8 or not) or `bin` value.
pub fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::String(s) => Some(s.as_bytes()),
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

/// Owned bytes of a `str`/`bin` value, without copying.
pub fn into_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::String(s) => Some(s.into_bytes()),
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

/// A number that Lua may have sent as an int or as a float (only integral floats accepted).
pub fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Integer(i) => i.as_u64(),
        Value::F64(f) if f.fract() == 0.0 && *f >= 0.0 && *f < 9.007_199_254_740_992e15 => Some(*f as u64),
        Value::F32(f) if f.fract() == 0.0 && *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}

/// Converts a JSON value into msgpack (for results such as StartInstance's `Config`).
pub fn from_json(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (_, Some(i)) => Value::from(i),
            _ => Value::F64(n.as_f64().unwrap_or_default()),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        serde_json::Value::Object(o) => {
            Value::Map(o.iter().map(|(k, v)| (Value::from(k.as_str()), from_json(v))).collect())
        }
    }
}

/// Builds a msgpack map from string keys.
pub fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
}
