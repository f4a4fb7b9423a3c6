//! Lua values as text: JSON as Kong's lua-cjson writes it, Lua's `tostring`, and JSON ↔ msgpack
//! value conversion.
//!
//! Kong serialises plugin configs (`StartInstance`'s `Config`) and `kong.response.exit`
//! table bodies with cjson, whose output differs from serde_json in ways a server might
//! trip over: `/` is escaped as `\/`, an empty Lua table is `{}`, and strings are raw bytes.
//! Why `tostring` lives here too: the two are one recursion (a non-string key's JSON is its
//! `tostring`, a table's `tostring` is its JSON) and both print numbers as `%.14g`, so keeping
//! them apart would make this module and the PDK depend on each other.

use crate::wire;
use rmpv::Value;

/// cjson-style JSON text of a msgpack value (invalid UTF-8 replaced).
pub fn to_json(value: &Value) -> String {
    let mut out = Vec::new();
    write(value, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// cjson-style JSON bytes of a msgpack value (string bytes copied verbatim).
pub fn to_json_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

/// cjson-style JSON text of a serde_json value (`/` escaped as `\/`).
pub fn cjson_encode(value: &serde_json::Value) -> String {
    to_json(&from_json(value))
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil | Value::Ext(..) => out.extend_from_slice(b"null"),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::F32(_) | Value::F64(_) => {
            let n = wire::lua_number(value).unwrap_or(0.0);
            out.extend_from_slice(number_to_string(n).as_bytes())
        }
        Value::String(s) => write_string(s.as_bytes(), out),
        Value::Binary(b) => write_string(b, out),
        Value::Array(items) if items.is_empty() => out.extend_from_slice(b"{}"),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Map(entries) => {
            out.push(b'{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match k {
                    Value::String(_) | Value::Binary(_) => write(k, out),
                    other => write_string(&tostring(other), out),
                }
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            c if c < 0x20 || c == 0x7F => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// A JSON value as the Lua table cjson would decode it into, as msgpack (null → nil,
/// as Kong ≥3.0 packs `cjson.null`).
pub fn from_json(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => {
            Value::Map(map.iter().map(|(k, v)| (Value::from(k.as_str()), from_json(v))).collect())
        }
    }
}

/// A msgpack value as serde_json (for assertions and HTTP bodies): bytes become lossy
/// strings, non-string keys are stringified.
pub fn to_serde(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil | Value::Ext(..) => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(i) => i
            .as_i64()
            .map(serde_json::Value::from)
            .or_else(|| i.as_u64().map(serde_json::Value::from))
            .unwrap_or(serde_json::Value::Null),
        Value::F32(f) => serde_json::Value::from(f64::from(*f)),
        Value::F64(f) => serde_json::Value::from(*f),
        Value::String(s) => serde_json::Value::String(String::from_utf8_lossy(s.as_bytes()).into()),
        Value::Binary(b) => serde_json::Value::String(String::from_utf8_lossy(b).into()),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_serde).collect()),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                        other => String::from_utf8_lossy(&tostring(other)).into_owned(),
                    };
                    (key, to_serde(v))
                })
                .collect(),
        ),
    }
}

/// Lua `tostring` (what header setters and log functions apply). A table prints as
/// `table: ` and its JSON, where Lua would print an address: readable, and stable across runs.
pub(crate) fn tostring(v: &Value) -> Vec<u8> {
    match v {
        Value::Nil | Value::Ext(..) => b"nil".to_vec(),
        Value::Boolean(b) => b.to_string().into_bytes(),
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Binary(b) => b.clone(),
        Value::Array(_) | Value::Map(_) => format!("table: {}", to_json(v)).into_bytes(),
        _ => number_to_string(wire::lua_number(v).unwrap_or(0.0)).into_bytes(),
    }
}

/// Lua's `tostring` for numbers: C's `%.14g`.
pub(crate) fn number_to_string(n: f64) -> String {
    if n.is_nan() {
        return if n.is_sign_negative() { "-nan".into() } else { "nan".into() };
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if n == 0.0 {
        return if n.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    const PRECISION: i32 = 14;
    // Round to 14 significant digits first; the exponent decides fixed vs scientific.
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, n);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..PRECISION).contains(&exp) {
        let mantissa = strip_zeros(mantissa);
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (PRECISION - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{n:.decimals$}")).to_string()
    }
}

/// `%g` drops trailing zeros of the fraction (and a bare trailing point).
fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::number_to_string;

    #[test]
    fn numbers_print_like_lua() {
        assert_eq!(number_to_string(3.0), "3");
        assert_eq!(number_to_string(-12.5), "-12.5");
        assert_eq!(number_to_string(0.1), "0.1");
        assert_eq!(number_to_string(1.0 / 3.0), "0.33333333333333");
        assert_eq!(number_to_string(1_700_000_000.25), "1700000000.25");
        assert_eq!(number_to_string(1e15), "1e+15");
        assert_eq!(number_to_string(1e-5), "1e-05");
        assert_eq!(number_to_string(123_456_789_012_345.0), "1.2345678901234e+14");
    }
}
