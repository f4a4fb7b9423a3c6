//! Values as Lua holds them: what a received value becomes once Kong has unpacked it into a
//! Lua table, and Lua's view of numbers and strings.
//!
//! Why the emulator needs this: Kong never re-sends the bytes it read, it re-packs the Lua
//! value. Decoding into a Lua table loses nil map entries and holes, ext types, the str/bin
//! distinction and integer precision beyond 2^53; [`to_lua`] applies exactly those losses before
//! a value from the server is used on the Kong side (PDK arguments, the `EventId` sent back).

use rmpv::Value;

use super::encode::write_str;

/// Largest integer a Lua double represents exactly (2^53).
const EXACT_DOUBLE_LIMIT: u64 = 1 << 53;

/// Builds a msgpack string value from raw bytes (which may be invalid UTF-8, as Lua strings
/// can be). rmpv keeps such bytes, but only constructs them while decoding.
pub fn lua_string(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.into()),
        Err(_) => {
            let mut buf = Vec::with_capacity(bytes.len() + 5);
            write_str(bytes, &mut buf);
            rmpv::decode::read_value(&mut buf.as_slice()).expect("a str header followed by its bytes always decodes")
        }
    }
}

/// A msgpack number as the Lua number it becomes.
pub fn lua_number(value: &Value) -> Option<f64> {
    match value {
        Value::Integer(i) => i.as_i64().map(|n| n as f64).or_else(|| i.as_u64().map(|n| n as f64)),
        Value::F32(f) => Some(f64::from(*f)),
        Value::F64(f) => Some(*f),
        _ => None,
    }
}

/// Converts a value received from the server into what the Lua table holding it would be
/// packed as later: `bin` becomes a string, ext becomes nil, nil map entries disappear,
/// integers beyond 2^53 round to doubles, tables whose keys are exactly `1..n` are arrays and
/// arrays with holes are maps with integer keys.
pub fn to_lua(value: Value) -> Value {
    match value {
        Value::Binary(b) => match String::from_utf8(b) {
            Ok(s) => Value::String(s.into()),
            Err(e) => lua_string(e.as_bytes()),
        },
        Value::Ext(..) => Value::Nil,
        Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) if n.unsigned_abs() <= EXACT_DOUBLE_LIMIT => Value::Integer(i),
            (Some(n), _) => Value::F64(n as f64),
            (None, Some(n)) => Value::F64(n as f64),
            (None, None) => Value::Nil,
        },
        Value::F32(f) => Value::F64(f64::from(f)),
        Value::Array(mut items) => {
            for item in items.iter_mut() {
                *item = to_lua(std::mem::replace(item, Value::Nil));
            }
            if items.iter().any(Value::is_nil) {
                // Holes: a Lua table with integer keys, shaped by the general rule.
                let pairs = items
                    .into_iter()
                    .enumerate()
                    .filter(|(_, v)| !v.is_nil())
                    .map(|(i, v)| (Value::from(i as u64 + 1), v))
                    .collect();
                table_from_pairs(pairs)
            } else {
                // Keys 1..n, all present: the array itself (an empty one included).
                Value::Array(items)
            }
        }
        Value::Map(mut entries) => {
            entries.retain_mut(|(k, v)| {
                let key = to_lua(std::mem::replace(k, Value::Nil));
                // lua-MessagePack drops nil and NaN keys.
                if key.is_nil() || lua_number(&key).is_some_and(f64::is_nan) {
                    return false;
                }
                *k = normalize_key(key);
                *v = to_lua(std::mem::replace(v, Value::Nil));
                // A nil value is an absent entry.
                !v.is_nil()
            });
            table_from_pairs(entries)
        }
        other => other,
    }
}

/// Integral float keys are the same Lua key as the integer.
fn normalize_key(k: Value) -> Value {
    match k {
        Value::F64(f) if f.is_finite() && f.floor() == f && f.abs() < EXACT_DOUBLE_LIMIT as f64 => {
            Value::from(f as i64)
        }
        other => other,
    }
}

/// Lua table semantics for a list of (key, value) pairs without nil values: positive
/// integer keys forming `1..n` pack as an array, anything else as a map.
fn table_from_pairs(pairs: Vec<(Value, Value)>) -> Value {
    let n = pairs.len() as u64;
    let is_array = pairs.iter().all(|(k, _)| k.as_u64().is_some_and(|i| (1..=n).contains(&i)));
    if is_array && !pairs.is_empty() {
        let mut sorted = pairs;
        sorted.sort_by_key(|(k, _)| k.as_u64());
        // 1..n with n distinct keys in range: no duplicates possible in a Lua table.
        Value::Array(sorted.into_iter().map(|(_, v)| v).collect())
    } else if pairs.is_empty() {
        Value::Array(Vec::new())
    } else {
        Value::Map(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testgen::{same, Rng};

    /// The `to_lua` this crate had before it converted in place (the reference semantics).
    fn to_lua_reference(value: Value) -> Value {
        fn pairs_table(pairs: Vec<(Value, Value)>) -> Value {
            let pairs: Vec<(Value, Value)> = pairs.into_iter().filter(|(_, v)| !v.is_nil()).collect();
            let n = pairs.len() as u64;
            let is_array = pairs.iter().all(|(k, _)| k.as_u64().is_some_and(|i| (1..=n).contains(&i)));
            if is_array && !pairs.is_empty() {
                let mut sorted = pairs;
                sorted.sort_by_key(|(k, _)| k.as_u64());
                Value::Array(sorted.into_iter().map(|(_, v)| v).collect())
            } else if pairs.is_empty() {
                Value::Array(Vec::new())
            } else {
                Value::Map(pairs)
            }
        }
        match value {
            Value::Binary(b) => lua_string(&b),
            Value::Ext(..) => Value::Nil,
            Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
                (Some(n), _) if n.unsigned_abs() <= EXACT_DOUBLE_LIMIT => Value::Integer(i),
                (Some(n), _) => Value::F64(n as f64),
                (None, Some(n)) => Value::F64(n as f64),
                (None, None) => Value::Nil,
            },
            Value::F32(f) => Value::F64(f64::from(f)),
            Value::Array(items) => pairs_table(
                items.into_iter().enumerate().map(|(i, v)| (Value::from(i as u64 + 1), to_lua_reference(v))).collect(),
            ),
            Value::Map(entries) => pairs_table(
                entries
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let k = to_lua_reference(k);
                        if k.is_nil() || lua_number(&k).is_some_and(f64::is_nan) {
                            return None;
                        }
                        Some((normalize_key(k), to_lua_reference(v)))
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    #[test]
    fn to_lua_matches_the_reference() {
        let mut rng = Rng::new(11);
        for _ in 0..20_000 {
            let v = rng.value(3);
            assert!(same(&to_lua(v.clone()), &to_lua_reference(v.clone())), "{v:?}");
        }
        // Arrays that become maps, maps that become arrays.
        let holes = Value::Array(vec![Value::Nil, 1.into(), Value::Nil]);
        assert_eq!(to_lua(holes), Value::Map(vec![(2.into(), 1.into())]));
        let keys = Value::Map(vec![(Value::F64(2.0), "b".into()), (1.into(), "a".into())]);
        assert_eq!(to_lua(keys), Value::Array(vec!["a".into(), "b".into()]));
    }
}
