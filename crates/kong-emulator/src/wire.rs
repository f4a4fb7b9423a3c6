//! MessagePack exactly as Kong's Lua side writes and reads it.
//!
//! Kong packs with lua-MessagePack (library defaults: `string_compat`, `unsigned` integers,
//! `double` numbers, `without_hole` arrays), so a faithful emulator cannot use a generic
//! msgpack encoder: strings never use `str8`, every number is a Lua double (integral ones go
//! out in the smallest integer format, the rest as float64), and an empty Lua table is an
//! empty *array*. The plugin server under test must cope with exactly these bytes
//! (`kong-protocol.md` §2.5, byte examples in §12).
//!
//! Values travel as [`rmpv::Value`]. Before a value that came *from* the server is used on the
//! Kong side it goes through [`to_lua`], which applies what decoding into a Lua table loses
//! (nil map entries, holes, ext types, the str/bin distinction, integer precision).

use rmpv::Value;

/// Largest integer a Lua double represents exactly (2^53).
const EXACT_DOUBLE_LIMIT: u64 = 1 << 53;

/// A PDK result about to be sent back in a `plugin.Step*` param map.
///
/// Kong's `must_fix` table turns a few results into something a plain Lua value cannot be:
/// an empty multi-map becomes an explicit empty msgpack *map* (0x80); everything else is a
/// normal Lua value, and a Lua `nil` means the `Data` key is left out entirely.
#[derive(Debug, Clone, PartialEq)]
pub enum StepData {
    /// Lua `nil`: the `Data` key is absent from the param map.
    Absent,
    /// Kong's `mp_empty_map` packer (empty multi-map result): `0x80`.
    EmptyMap,
    /// Any other value, packed by the Lua rules.
    Value(Value),
    /// Kong's `fix_raw` packer (raw-body getters, 3.0+): msgpack `bin`.
    Raw(Vec<u8>),
}

impl From<Value> for StepData {
    fn from(value: Value) -> Self {
        match value {
            Value::Nil => StepData::Absent,
            other => StepData::Value(other),
        }
    }
}

/// Builds a msgpack string value from raw bytes (which may be invalid UTF-8, as Lua strings
/// can be). rmpv keeps such bytes, but only constructs them while decoding.
pub fn lua_string(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.into()),
        Err(_) => {
            let mut buf = Vec::with_capacity(bytes.len() + 5);
            write_str(bytes, &mut buf);
            rmpv::decode::read_value(&mut buf.as_slice())
                .expect("a str header followed by its bytes always decodes")
        }
    }
}

/// Encodes `value` as lua-MessagePack would after Kong read it into Lua.
///
/// Empty maps come out as empty arrays (0x90), like every empty Lua table.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.push(0xC0),
        Value::Boolean(b) => out.push(if *b { 0xC3 } else { 0xC2 }),
        Value::Integer(i) => {
            if let Some(n) = i.as_i64() {
                write_int(n, out)
            } else if let Some(n) = i.as_u64() {
                write_uint(n, out)
            }
        }
        Value::F32(f) => write_number(f64::from(*f), out),
        Value::F64(f) => write_number(*f, out),
        Value::String(s) => write_str(s.as_bytes(), out),
        Value::Binary(b) => write_str(b, out),
        Value::Array(items) => {
            write_len(items.len(), 0x90, 0xDC, out);
            for item in items {
                encode(item, out);
            }
        }
        Value::Map(entries) => {
            if entries.is_empty() {
                out.push(0x90);
                return;
            }
            write_len(entries.len(), 0x80, 0xDE, out);
            for (k, v) in entries {
                encode(k, out);
                encode(v, out);
            }
        }
        // lua-MessagePack decodes ext types to nil; Kong cannot hold one.
        Value::Ext(..) => out.push(0xC0),
    }
}

/// Encodes a raw body the way Kong's `fix_raw` does: msgpack `bin` (3.0+).
pub fn encode_bin(bytes: &[u8], out: &mut Vec<u8>) {
    let n = bytes.len();
    if n <= 0xFF {
        out.extend_from_slice(&[0xC4, n as u8]);
    } else if n <= 0xFFFF {
        out.push(0xC5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xC6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// `string_compat`: fixstr, str16 or str32, never str8.
pub fn write_str(bytes: &[u8], out: &mut Vec<u8>) {
    let n = bytes.len();
    if n <= 0x1F {
        out.push(0xA0 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0xDA);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xDB);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// Array/map header: fix form, then the 16-bit form (`base16`), then the 32-bit one.
fn write_len(n: usize, fix: u8, base16: u8, out: &mut Vec<u8>) {
    if n <= 0x0F {
        out.push(fix | n as u8);
    } else if n <= 0xFFFF {
        out.push(base16);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(base16 + 1);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// A Lua number (`set_number'double'`): integral finite values use the integer packer,
/// everything else float64. lua-MessagePack's own NaN pattern is `CB FF F8 00…`.
fn write_number(f: f64, out: &mut Vec<u8>) {
    if f.is_nan() {
        out.extend_from_slice(&[0xCB, 0xFF, 0xF8, 0, 0, 0, 0, 0, 0]);
    } else if f.is_finite() && f.floor() == f && f.abs() < 9.223_372_036_854_776e18 {
        // Beyond i64 the Lua packer writes a uint64/int64 keeping only 56 bits; such values
        // never occur in the PDK results this emulator produces.
        write_int(f as i64, out);
    } else {
        out.push(0xCB);
        out.extend_from_slice(&f.to_bits().to_be_bytes());
    }
}

/// `set_integer'unsigned'`: the smallest format, unsigned formats for non-negative values.
fn write_int(n: i64, out: &mut Vec<u8>) {
    if n >= 0 {
        write_uint(n as u64, out);
    } else if n >= -0x20 {
        out.push(n as i8 as u8);
    } else if n >= -0x80 {
        out.extend_from_slice(&[0xD0, n as i8 as u8]);
    } else if n >= -0x8000 {
        out.push(0xD1);
        out.extend_from_slice(&(n as i16).to_be_bytes());
    } else if n >= -0x8000_0000 {
        out.push(0xD2);
        out.extend_from_slice(&(n as i32).to_be_bytes());
    } else {
        out.push(0xD3);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn write_uint(n: u64, out: &mut Vec<u8>) {
    if n <= 0x7F {
        out.push(n as u8);
    } else if n <= 0xFF {
        out.extend_from_slice(&[0xCC, n as u8]);
    } else if n <= 0xFFFF {
        out.push(0xCD);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= 0xFFFF_FFFF {
        out.push(0xCE);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0xCF);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Encodes a request envelope `[0, msgid, method, [param]]` (Kong always sends exactly one
/// parameter).
pub fn encode_request(msgid: u64, method: &str, param: &Value) -> Vec<u8> {
    let mut out = request_head(msgid, method);
    encode(param, &mut out);
    out
}

/// Encodes `[0, msgid, method, [{EventId: event_id, Data?: data}]]`, the Step family.
pub fn encode_step(msgid: u64, method: &str, event_id: &Value, data: &StepData) -> Vec<u8> {
    let mut out = request_head(msgid, method);
    let pairs = if matches!(data, StepData::Absent) { 1 } else { 2 };
    out.push(0x80 | pairs);
    write_str(b"EventId", &mut out);
    encode(event_id, &mut out);
    match data {
        StepData::Absent => {}
        StepData::EmptyMap => {
            write_str(b"Data", &mut out);
            out.push(0x80);
        }
        StepData::Value(v) => {
            write_str(b"Data", &mut out);
            encode(v, &mut out);
        }
        StepData::Raw(bytes) => {
            write_str(b"Data", &mut out);
            encode_bin(bytes, &mut out);
        }
    }
    out
}

fn request_head(msgid: u64, method: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0x94, 0x00]);
    write_uint(msgid, &mut out);
    write_str(method.as_bytes(), &mut out);
    out.push(0x91);
    out
}

/// Outcome of trying to decode one object from the front of a buffer.
#[derive(Debug)]
pub enum Decoded {
    /// A complete value and how many bytes it used.
    Complete(Value, usize),
    /// The buffer holds only the beginning of an object.
    Incomplete,
    /// The bytes are not msgpack.
    Invalid(String),
}

/// Decodes the first msgpack object in `buf`, telling "need more bytes" apart from garbage.
///
/// The object is first measured by [`object_len`], which rejects the reserved marker 0xC1
/// (lua-MessagePack raises on it, rmpv would silently read nil) and never trusts a length
/// prefix before the bytes are there.
pub fn decode_prefix(buf: &[u8]) -> Decoded {
    let len = match object_len(buf, 0) {
        Ok(Some(len)) => len,
        Ok(None) => return Decoded::Incomplete,
        Err(e) => return Decoded::Invalid(e),
    };
    let mut cursor = &buf[..len];
    match rmpv::decode::read_value(&mut cursor) {
        Ok(value) => Decoded::Complete(value, len),
        Err(e) => Decoded::Invalid(e.to_string()),
    }
}

/// Nesting bound for [`object_len`] (rmpv's own limit is similar).
const MAX_DEPTH: usize = 1024;

/// The byte length of the msgpack object at the start of `buf`: `Ok(None)` when `buf` ends
/// before the object does, `Err` for bytes lua-MessagePack cannot unpack.
pub fn object_len(buf: &[u8], depth: usize) -> Result<Option<usize>, String> {
    if depth > MAX_DEPTH {
        return Err("msgpack nesting too deep".into());
    }
    let Some(&marker) = buf.first() else { return Ok(None) };
    let be = |n: usize| -> Option<usize> {
        buf.get(1..1 + n).map(|b| b.iter().fold(0usize, |acc, &x| (acc << 8) | x as usize))
    };
    // (header length, payload bytes) or (header length, child objects).
    enum Shape {
        Bytes(usize, Option<usize>),
        Children(usize, Option<usize>),
    }
    let shape = match marker {
        0x00..=0x7F | 0xE0..=0xFF | 0xC0 | 0xC2 | 0xC3 => Shape::Bytes(1, Some(0)),
        0x80..=0x8F => Shape::Children(1, Some(2 * (marker & 0x0F) as usize)),
        0x90..=0x9F => Shape::Children(1, Some((marker & 0x0F) as usize)),
        0xA0..=0xBF => Shape::Bytes(1, Some((marker & 0x1F) as usize)),
        0xC1 => return Err("reserved marker 0xC1 (unpack 'reserved193' is unimplemented)".into()),
        0xC4 | 0xD9 => Shape::Bytes(2, be(1)),
        0xC5 | 0xDA => Shape::Bytes(3, be(2)),
        0xC6 | 0xDB => Shape::Bytes(5, be(4)),
        0xC7 => Shape::Bytes(3, be(1)),
        0xC8 => Shape::Bytes(4, be(2)),
        0xC9 => Shape::Bytes(6, be(4)),
        0xCA => Shape::Bytes(1, Some(4)),
        0xCB => Shape::Bytes(1, Some(8)),
        0xCC | 0xD0 => Shape::Bytes(1, Some(1)),
        0xCD | 0xD1 => Shape::Bytes(1, Some(2)),
        0xCE | 0xD2 => Shape::Bytes(1, Some(4)),
        0xCF | 0xD3 => Shape::Bytes(1, Some(8)),
        0xD4 => Shape::Bytes(2, Some(1)),
        0xD5 => Shape::Bytes(2, Some(2)),
        0xD6 => Shape::Bytes(2, Some(4)),
        0xD7 => Shape::Bytes(2, Some(8)),
        0xD8 => Shape::Bytes(2, Some(16)),
        0xDC => Shape::Children(3, be(2)),
        0xDD => Shape::Children(5, be(4)),
        0xDE => Shape::Children(3, be(2).map(|n| 2 * n)),
        0xDF => Shape::Children(5, be(4).map(|n| 2 * n)),
    };
    match shape {
        Shape::Bytes(_, None) | Shape::Children(_, None) => Ok(None),
        Shape::Bytes(head, Some(n)) => Ok((buf.len() >= head + n).then_some(head + n)),
        Shape::Children(head, Some(n)) => {
            let mut pos = head;
            for _ in 0..n {
                let Some(rest) = buf.get(pos..) else { return Ok(None) };
                match object_len(rest, depth + 1)? {
                    Some(len) => pos += len,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
    }
}

/// A message the server sent, classified as Kong's `Rpc:call` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// `[2, label, args]`.
    Notification { label: Value, args: Value },
    /// `[1, msgid, error, result]` (shape checked, values not yet validated).
    Response { msgid: Value, error: Value, result: Value },
}

/// Classifies a decoded object. Kong only looks at `data[1]`: 2 is a notification, anything
/// else must be a response (`assert(data[1] == 1, …)`).
pub fn classify(value: Value) -> Result<Incoming, String> {
    let items = match value {
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "RPC response expected from Go plugin server (got a non-array {other})"
            ))
        }
    };
    let kind = items.first().and_then(lua_number);
    let mut it = items.into_iter().skip(1);
    let mut next = || it.next().unwrap_or(Value::Nil);
    match kind {
        Some(2.0) => Ok(Incoming::Notification { label: next(), args: next() }),
        Some(1.0) => Ok(Incoming::Response { msgid: next(), error: next(), result: next() }),
        _ => Err("RPC response expected from Go plugin server (message type is not 1)".into()),
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
        Value::Binary(b) => lua_string(&b),
        Value::Ext(..) => Value::Nil,
        Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) if n.unsigned_abs() <= EXACT_DOUBLE_LIMIT => Value::Integer(i),
            (Some(n), _) => Value::F64(n as f64),
            (None, Some(n)) => Value::F64(n as f64),
            (None, None) => Value::Nil,
        },
        Value::F32(f) => Value::F64(f64::from(f)),
        Value::Array(items) => table_from_pairs(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::from(i as u64 + 1), to_lua(v)))
                .collect(),
        ),
        Value::Map(entries) => table_from_pairs(
            entries
                .into_iter()
                .filter_map(|(k, v)| {
                    let k = to_lua(k);
                    // lua-MessagePack drops nil and NaN keys.
                    if k.is_nil() || lua_number(&k).is_some_and(f64::is_nan) {
                        return None;
                    }
                    Some((normalize_key(k), to_lua(v)))
                })
                .collect(),
        ),
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

/// Lua table semantics for a list of (key, value) pairs, nil values already meaning "absent":
/// positive integer keys forming `1..n` pack as an array, anything else as a map.
fn table_from_pairs(pairs: Vec<(Value, Value)>) -> Value {
    let pairs: Vec<(Value, Value)> = pairs.into_iter().filter(|(_, v)| !v.is_nil()).collect();
    let n = pairs.len() as u64;
    let is_array = pairs
        .iter()
        .all(|(k, _)| k.as_u64().is_some_and(|i| (1..=n).contains(&i)));
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

/// Looks up a string key in a msgpack map.
pub fn map_get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    match map {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| matches!(k, Value::String(s) if s.as_bytes() == key.as_bytes()))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Renders bytes from the wire as hex (`"94 00 01 …"`) for error messages and tests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ")
}
