//! MessagePack exactly as Kong's Lua side writes and reads it.
//!
//! Kong packs with lua-MessagePack (library defaults: `string_compat`, `unsigned` integers,
//! `double` numbers, `without_hole` arrays), so a faithful emulator cannot use a generic
//! msgpack encoder: strings never use `str8`, every number is a Lua double (integral ones go
//! out in the smallest integer format, the rest as float64), and an empty Lua table is an
//! empty *array*. The plugin server under test must cope with exactly these bytes
//! (docs/protocol.md#encoding, byte examples in docs/protocol.md#byte-level-example).
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
            rmpv::decode::read_value(&mut buf.as_slice()).expect("a str header followed by its bytes always decodes")
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
    let mut out = Vec::with_capacity(64);
    write_request(msgid, method, param, &mut out);
    out
}

/// [`encode_request`] appending to `out`.
pub fn write_request(msgid: u64, method: &str, param: &Value, out: &mut Vec<u8>) {
    write_request_head(msgid, method, out);
    encode(param, out);
}

/// `plugin.HandleEvent`'s request, `[0, msgid, "plugin.HandleEvent", [{InstanceId, EventName}]]`,
/// appended to `out`: the bytes of [`encode_request`] with that two-entry map, written without
/// building the map.
pub fn write_handle_event(msgid: u64, instance_id: &Value, event_name: &str, out: &mut Vec<u8>) {
    write_request_head(msgid, "plugin.HandleEvent", out);
    out.push(0x82);
    write_str(b"InstanceId", out);
    encode(instance_id, out);
    write_str(b"EventName", out);
    write_str(event_name.as_bytes(), out);
}

/// Encodes `[0, msgid, method, [{EventId: event_id, Data?: data}]]`, the Step family.
pub fn encode_step(msgid: u64, method: &str, event_id: &Value, data: &StepData) -> Vec<u8> {
    let mut id = Vec::with_capacity(16);
    encode(event_id, &mut id);
    let mut out = Vec::with_capacity(64);
    write_step(msgid, method, &id, data, &mut out);
    out
}

/// [`encode_step`] appending to `out`, with the EventId already packed (`encode`d once per
/// event: Kong sends back the Lua value it read from the `HandleEvent` answer).
pub fn write_step(msgid: u64, method: &str, packed_event_id: &[u8], data: &StepData, out: &mut Vec<u8>) {
    write_request_head(msgid, method, out);
    let pairs = if matches!(data, StepData::Absent) { 1 } else { 2 };
    out.push(0x80 | pairs);
    write_str(b"EventId", out);
    out.extend_from_slice(packed_event_id);
    match data {
        StepData::Absent => {}
        StepData::EmptyMap => {
            write_str(b"Data", out);
            out.push(0x80);
        }
        StepData::Value(v) => {
            write_str(b"Data", out);
            encode(v, out);
        }
        StepData::Raw(bytes) => {
            write_str(b"Data", out);
            encode_bin(bytes, out);
        }
    }
}

/// `[0, msgid, method, [` — everything before the single parameter.
fn write_request_head(msgid: u64, method: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x94, 0x00]);
    write_uint(msgid, out);
    write_str(method.as_bytes(), out);
    out.push(0x91);
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
    let mut deepest = depth;
    measure(buf, depth, &mut deepest)
}

/// The length of the first object in `buf` and its nesting depth (0 for a scalar, 1 for a
/// table of scalars, …), as [`object_len`] measures and validates it.
pub(crate) fn object_len_and_depth(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut deepest = 0;
    Ok(measure(buf, 0, &mut deepest)?.map(|len| (len, deepest)))
}

fn measure(buf: &[u8], depth: usize, deepest: &mut usize) -> Result<Option<usize>, String> {
    *deepest = (*deepest).max(depth);
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
                // Scalars and strings (most children) are measured from their header.
                let len = match rest.first() {
                    Some(&m) if depth < MAX_DEPTH => match scalar_len(m, rest) {
                        Some(len) => {
                            *deepest = (*deepest).max(depth + 1);
                            Some(len)
                        }
                        None => measure(rest, depth + 1, deepest)?,
                    },
                    _ => measure(rest, depth + 1, deepest)?,
                };
                match len {
                    Some(len) if len <= rest.len() => pos += len,
                    _ => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
    }
}

/// Frames nested no deeper than this take the borrowed fast path: rmpv (whose depth budget
/// is 1024, about two per level) decodes any part of them without error.
pub(crate) const FAST_PATH_DEPTH: usize = 64;

/// The result element of `[1, msgid, nil, result]` when `frame` is exactly such a
/// successful response to `msgid` in its common encoding (type `1` as a positive fixint, a
/// nil error): what [`classify`] and Kong's msgid/error checks accept without further ado.
/// `None` means "take the general path" (notifications, errors, other encodings, violations).
///
/// `frame` must be one complete object measured by [`object_len`]; the returned slice starts
/// with the result and may run on past it (to the end of the frame).
pub(crate) fn ok_response_result(frame: &[u8], msgid: u64) -> Option<&[u8]> {
    static NIL: [u8; 1] = [0xC0];
    let (n, head) = array_header(frame)?;
    let rest = frame.get(head..)?;
    if n < 3 || rest.first() != Some(&0x01) {
        return None;
    }
    let rest = &rest[1..];
    let (got, len) = raw_integer_as_lua(rest)?;
    if got != msgid as f64 || rest.get(len) != Some(&0xC0) {
        return None;
    }
    if n == 3 {
        return Some(&NIL);
    }
    rest.get(len + 1..)
}

/// A step result (`{EventId, Data}`) read in place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RawStep<'a> {
    /// `Data == "ret"`.
    Ret,
    /// `Data == {Method, Args}` with a valid UTF-8 method name; `args` starts with the raw
    /// `Args` value (and may run on past it), if the key is present.
    Call { method: &'a str, args: Option<&'a [u8]> },
}

/// Reads a step result the way `parse_step` does on decoded values, for the cases that
/// continue the event: `None` when the result is anything else (to be decoded and
/// reported by the general path). `result` is a slice of a complete frame starting with
/// the result.
pub(crate) fn raw_step(result: &[u8]) -> Option<RawStep<'_>> {
    let data = raw_map_get(result, b"Data")??;
    if raw_str(data) == Some(b"ret") {
        return Some(RawStep::Ret);
    }
    let method = raw_map_get(data, b"Method")??;
    let method = std::str::from_utf8(raw_str(method)?).ok()?;
    let args = raw_map_get(data, b"Args")?;
    Some(RawStep::Call { method, args })
}

/// [`map_get`] on raw bytes: `None` when `map` does not start with a msgpack map (or is
/// malformed), `Some(None)` when no string key equals `key`, else the value of the first
/// matching entry — a slice starting with it and running on to the end of `map`.
pub(crate) fn raw_map_get<'a>(map: &'a [u8], key: &[u8]) -> Option<Option<&'a [u8]>> {
    let (n, head) = map_header(map)?;
    let mut rest = map.get(head..)?;
    for _ in 0..n {
        let klen = raw_len(rest)?;
        let (k, tail) = rest.split_at(klen);
        if raw_str(k) == Some(key) {
            return Some(Some(tail));
        }
        rest = tail.get(raw_len(tail)?..)?;
    }
    Some(None)
}

/// Decodes the object at the start of `raw` (a part of a frame that took the fast path)
/// into the value `rmpv::decode::read_value` would return, without rmpv's `io::Read`
/// machinery (strings and binaries are copied once, straight from the slice).
pub(crate) fn decode_raw(raw: &[u8]) -> Value {
    let mut rest = raw;
    read_raw(&mut rest).unwrap_or_else(|| rmpv::decode::read_value(&mut &raw[..]).unwrap_or(Value::Nil))
}

/// One object off the front of `rest`; `None` for what only rmpv itself should decode
/// (invalid UTF-8 in a string, whose `Utf8String` only rmpv can build) or malformed bytes.
fn read_raw(rest: &mut &[u8]) -> Option<Value> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head)
    }
    fn be(rest: &mut &[u8], n: usize) -> Option<u64> {
        Some(take(rest, n)?.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }
    fn string(rest: &mut &[u8], n: usize) -> Option<Value> {
        let bytes = take(rest, n)?;
        Some(Value::String(std::str::from_utf8(bytes).ok()?.into()))
    }
    fn array(rest: &mut &[u8], n: usize) -> Option<Value> {
        let mut items = Vec::with_capacity(n.min(rest.len()));
        for _ in 0..n {
            items.push(read_raw(rest)?);
        }
        Some(Value::Array(items))
    }
    fn map(rest: &mut &[u8], n: usize) -> Option<Value> {
        let mut entries = Vec::with_capacity(n.min(rest.len() / 2));
        for _ in 0..n {
            let k = read_raw(rest)?;
            entries.push((k, read_raw(rest)?));
        }
        Some(Value::Map(entries))
    }
    fn ext(rest: &mut &[u8], n: usize) -> Option<Value> {
        let kind = take(rest, 1)?[0] as i8;
        Some(Value::Ext(kind, take(rest, n)?.to_vec()))
    }
    let marker = take(rest, 1)?[0];
    Some(match marker {
        0x00..=0x7F => Value::from(marker),
        0x80..=0x8F => map(rest, (marker & 0x0F) as usize)?,
        0x90..=0x9F => array(rest, (marker & 0x0F) as usize)?,
        0xA0..=0xBF => string(rest, (marker & 0x1F) as usize)?,
        0xC0 => Value::Nil,
        0xC1 => return None,
        0xC2 => Value::Boolean(false),
        0xC3 => Value::Boolean(true),
        0xC4..=0xC6 => {
            let n = be(rest, 1 << (marker - 0xC4))? as usize;
            Value::Binary(take(rest, n)?.to_vec())
        }
        0xC7..=0xC9 => {
            let n = be(rest, 1 << (marker - 0xC7))? as usize;
            ext(rest, n)?
        }
        0xCA => Value::F32(f32::from_bits(be(rest, 4)? as u32)),
        0xCB => Value::F64(f64::from_bits(be(rest, 8)?)),
        0xCC..=0xCF => Value::from(be(rest, 1 << (marker - 0xCC))?),
        0xD0 => Value::from(be(rest, 1)? as u8 as i8),
        0xD1 => Value::from(be(rest, 2)? as u16 as i16),
        0xD2 => Value::from(be(rest, 4)? as u32 as i32),
        0xD3 => Value::from(be(rest, 8)? as i64),
        0xD4..=0xD8 => ext(rest, 1 << (marker - 0xD4))?,
        0xD9..=0xDB => {
            let n = be(rest, 1 << (marker - 0xD9))? as usize;
            string(rest, n)?
        }
        0xDC | 0xDD => {
            let n = be(rest, 2 << (marker - 0xDC))? as usize;
            array(rest, n)?
        }
        0xDE | 0xDF => {
            let n = be(rest, 2 << (marker - 0xDE))? as usize;
            map(rest, n)?
        }
        0xE0..=0xFF => Value::from(marker as i8),
    })
}

/// The length of the object at the start of `b`: strings and scalars from their header,
/// tables by walking them.
fn raw_len(b: &[u8]) -> Option<usize> {
    let be = |n: usize| -> Option<usize> {
        b.get(1..1 + n).map(|x| x.iter().fold(0usize, |acc, &y| (acc << 8) | y as usize))
    };
    let len = match *b.first()? {
        0x00..=0x7F | 0xE0..=0xFF | 0xC0 | 0xC2 | 0xC3 => 1,
        m @ 0xA0..=0xBF => 1 + (m & 0x1F) as usize,
        0xD9 => 2 + be(1)?,
        0xDA => 3 + be(2)?,
        0xDB => 5 + be(4)?,
        0xCC | 0xD0 => 2,
        0xCD | 0xD1 => 3,
        0xCA | 0xCE | 0xD2 => 5,
        0xCB | 0xCF | 0xD3 => 9,
        _ => return object_len(b, 0).ok()?,
    };
    (len <= b.len()).then_some(len)
}

/// (element count, header length) of an array.
fn array_header(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        m @ 0x90..=0x9F => Some(((m & 0x0F) as usize, 1)),
        0xDC => Some((u16::from_be_bytes([*b.get(1)?, *b.get(2)?]) as usize, 3)),
        0xDD => Some((u32::from_be_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, *b.get(4)?]) as usize, 5)),
        _ => None,
    }
}

/// (entry count, header length) of a map.
fn map_header(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        m @ 0x80..=0x8F => Some(((m & 0x0F) as usize, 1)),
        0xDE => Some((u16::from_be_bytes([*b.get(1)?, *b.get(2)?]) as usize, 3)),
        0xDF => Some((u32::from_be_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, *b.get(4)?]) as usize, 5)),
        _ => None,
    }
}

/// The bytes of the msgpack *string* at the start of `b` (what decodes to `Value::String`;
/// not `bin`).
fn raw_str(b: &[u8]) -> Option<&[u8]> {
    let (len, head) = match *b.first()? {
        m @ 0xA0..=0xBF => ((m & 0x1F) as usize, 1),
        0xD9 => (*b.get(1)? as usize, 2),
        0xDA => (u16::from_be_bytes([*b.get(1)?, *b.get(2)?]) as usize, 3),
        0xDB => (u32::from_be_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, *b.get(4)?]) as usize, 5),
        _ => return None,
    };
    b.get(head..head + len)
}

/// The integer at the start of `b` as the Lua number [`lua_number`] makes of it, and its
/// encoded length; `None` for anything that is not an integer.
fn raw_integer_as_lua(b: &[u8]) -> Option<(f64, usize)> {
    let be =
        |n: usize| -> Option<u64> { b.get(1..1 + n).map(|x| x.iter().fold(0u64, |acc, &y| (acc << 8) | y as u64)) };
    Some(match *b.first()? {
        m @ 0x00..=0x7F => (m as f64, 1),
        m @ 0xE0..=0xFF => ((m as i8) as f64, 1),
        0xCC => (be(1)? as f64, 2),
        0xCD => (be(2)? as f64, 3),
        0xCE => (be(4)? as f64, 5),
        0xCF => (be(8)? as f64, 9),
        0xD0 => ((be(1)? as u8 as i8) as f64, 2),
        0xD1 => ((be(2)? as u16 as i16) as f64, 3),
        0xD2 => ((be(4)? as u32 as i32) as f64, 5),
        0xD3 => ((be(8)? as i64) as f64, 9),
        _ => return None,
    })
}

/// The encoded length of a fixed-size scalar or a fixstr/str16/str32/str8 whose header is
/// complete; `None` for everything else (tables, bin, ext, reserved, short headers).
#[inline]
fn scalar_len(marker: u8, b: &[u8]) -> Option<usize> {
    Some(match marker {
        0x00..=0x7F | 0xE0..=0xFF | 0xC0 | 0xC2 | 0xC3 => 1,
        0xA0..=0xBF => 1 + (marker & 0x1F) as usize,
        0xCC | 0xD0 => 2,
        0xCD | 0xD1 => 3,
        0xCA | 0xCE | 0xD2 => 5,
        0xCB | 0xCF | 0xD3 => 9,
        0xD9 => 2 + *b.get(1)? as usize,
        0xDA => 3 + u16::from_be_bytes([*b.get(1)?, *b.get(2)?]) as usize,
        _ => return None,
    })
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
        other => return Err(format!("RPC response expected from Go plugin server (got a non-array {other})")),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64*).
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed | 1)
        }

        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn bytes(&mut self, max: u64) -> Vec<u8> {
            let n = self.below(max + 1) as usize;
            (0..n).map(|_| [b'a', b'Z', b'-', b'_', 0xC3, 0xA9, 0xFF, b'0'][self.below(8) as usize]).collect()
        }

        fn text(&mut self) -> String {
            ["Data", "Method", "Args", "EventId", "ret", "x", "", "kong.request.get_header", "é"]
                [self.below(9) as usize]
                .to_string()
        }

        /// Any value, nested at most `depth` deep.
        pub(crate) fn value(&mut self, depth: u32) -> Value {
            let kinds = if depth == 0 { 12 } else { 14 };
            match self.below(kinds) {
                0 => Value::Nil,
                1 => Value::Boolean(self.below(2) == 0),
                2 => Value::from(self.below(300) as i64 - 150),
                3 => Value::from(self.next() >> self.below(64)),
                4 => Value::from(-((self.next() >> (1 + self.below(63))) as i64)),
                5 => Value::F32(f32::from_bits(self.next() as u32)),
                6 => Value::F64(
                    [0.5, -0.0, 3.0, 1e300, f64::NAN, f64::INFINITY, 2f64.powi(60), 7.25][self.below(8) as usize],
                ),
                7 | 8 => Value::from(self.text()),
                9 => lua_string(&self.bytes(40)),
                10 => Value::Binary(self.bytes(40)),
                11 => Value::Ext(self.below(256) as u8 as i8, self.bytes(20)),
                12 => Value::Array((0..self.below(5)).map(|_| self.value(depth - 1)).collect()),
                _ => Value::Map(
                    (0..self.below(5))
                        .map(|_| {
                            let k = if self.below(3) == 0 { self.value(0) } else { Value::from(self.text()) };
                            (k, self.value(depth - 1))
                        })
                        .collect(),
                ),
            }
        }
    }

    /// Writes `v` in a randomly chosen valid msgpack encoding (wider integer and length
    /// forms, str8, float32 for exactly representable values…).
    pub(crate) fn encode_any(v: &Value, rng: &mut Rng, out: &mut Vec<u8>) {
        let len =
            |n: usize, fix: Option<(u8, usize)>, w8: Option<u8>, w16: u8, w32: u8, rng: &mut Rng, out: &mut Vec<u8>| {
                let mut choices = Vec::new();
                if let Some((_, max)) = fix {
                    if n <= max {
                        choices.push(0);
                    }
                }
                if w8.is_some() && n <= 0xFF {
                    choices.push(1);
                }
                if n <= 0xFFFF {
                    choices.push(2);
                }
                choices.push(3);
                match choices[rng.below(choices.len() as u64) as usize] {
                    0 => out.push(fix.unwrap().0 | n as u8),
                    1 => out.extend_from_slice(&[w8.unwrap(), n as u8]),
                    2 => {
                        out.push(w16);
                        out.extend_from_slice(&(n as u16).to_be_bytes());
                    }
                    _ => {
                        out.push(w32);
                        out.extend_from_slice(&(n as u32).to_be_bytes());
                    }
                }
            };
        match v {
            Value::Integer(i) => {
                let n = i.as_i64().map(i128::from).or(i.as_u64().map(i128::from)).unwrap_or_default();
                // (marker, payload width); no marker: a positive or negative fixint.
                let mut forms: Vec<(Option<u8>, usize)> = Vec::new();
                if (-32..=0x7F).contains(&n) {
                    forms.push((None, 0));
                }
                for (m, w) in [(0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)] {
                    if n >= 0 && n < 1i128 << (8 * w) {
                        forms.push((Some(m), w));
                    }
                }
                for (m, w) in [(0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)] {
                    let half = 1i128 << (8 * w - 1);
                    if (-half..half).contains(&n) {
                        forms.push((Some(m), w));
                    }
                }
                match forms[rng.below(forms.len() as u64) as usize] {
                    (None, _) => out.push(n as i8 as u8),
                    (Some(m), w) => {
                        out.push(m);
                        out.extend_from_slice(&(n as u64).to_be_bytes()[8 - w..]);
                    }
                }
            }
            Value::String(s) => {
                len(s.as_bytes().len(), Some((0xA0, 31)), Some(0xD9), 0xDA, 0xDB, rng, out);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Binary(b) => {
                len(b.len(), None, Some(0xC4), 0xC5, 0xC6, rng, out);
                out.extend_from_slice(b);
            }
            Value::Array(items) => {
                len(items.len(), Some((0x90, 15)), None, 0xDC, 0xDD, rng, out);
                for item in items {
                    encode_any(item, rng, out);
                }
            }
            Value::Map(entries) => {
                len(entries.len(), Some((0x80, 15)), None, 0xDE, 0xDF, rng, out);
                for (k, v) in entries {
                    encode_any(k, rng, out);
                    encode_any(v, rng, out);
                }
            }
            Value::F64(f) if (*f as f32) as f64 == *f && rng.below(2) == 0 => {
                out.push(0xCA);
                out.extend_from_slice(&(*f as f32).to_bits().to_be_bytes());
            }
            other => rmpv::encode::write_value(out, other).unwrap(),
        }
    }

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

    /// Value equality that treats NaN as equal to NaN.
    fn same(a: &Value, b: &Value) -> bool {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        rmpv::encode::write_value(&mut x, a).unwrap();
        rmpv::encode::write_value(&mut y, b).unwrap();
        x == y
    }

    #[test]
    fn decode_raw_and_object_len_agree_with_rmpv() {
        let mut rng = Rng::new(7);
        for _ in 0..20_000 {
            let v = rng.value(3);
            let mut bytes = Vec::new();
            encode_any(&v, &mut rng, &mut bytes);
            let expected = rmpv::decode::read_value(&mut bytes.as_slice()).unwrap();
            assert!(same(&decode_raw(&bytes), &expected), "{}", hex(&bytes));
            let (len, _) = object_len_and_depth(&bytes).unwrap().unwrap();
            assert_eq!(len, bytes.len(), "{}", hex(&bytes));
            let cut = rng.below(bytes.len() as u64) as usize;
            assert_eq!(object_len(&bytes[..cut], 0), Ok(None), "{}", hex(&bytes[..cut]));
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

    #[test]
    fn direct_writers_match_the_value_encoders() {
        let mut rng = Rng::new(3);
        for _ in 0..5_000 {
            let (id, msgid) = (rng.value(2), rng.next() >> rng.below(64));
            let param = Value::Map(vec![("InstanceId".into(), id.clone()), ("EventName".into(), "access".into())]);
            let mut out = Vec::new();
            write_handle_event(msgid, &id, "access", &mut out);
            assert_eq!(out, encode_request(msgid, "plugin.HandleEvent", &param));

            let data = match rng.below(4) {
                0 => StepData::Absent,
                1 => StepData::EmptyMap,
                2 => StepData::Raw(rng.bytes(300)),
                _ => StepData::Value(rng.value(2)),
            };
            let mut packed = Vec::new();
            encode(&id, &mut packed);
            let mut out = vec![0xAA];
            write_step(msgid, "plugin.StepMultiMap", &packed, &data, &mut out);
            assert_eq!(out[1..], encode_step(msgid, "plugin.StepMultiMap", &id, &data)[..]);
        }
    }

    #[test]
    fn ok_response_result_accepts_only_plain_successes() {
        let result = Value::Map(vec![("Data".into(), "ret".into())]);
        let frame = |items: Vec<Value>| {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &Value::Array(items)).unwrap();
            out
        };
        let ok = frame(vec![1.into(), 300.into(), Value::Nil, result.clone(), "extra".into()]);
        let got = ok_response_result(&ok, 300).expect("plain success");
        assert_eq!(decode_raw(got), result);
        assert_eq!(ok_response_result(&frame(vec![1.into(), 7.into(), Value::Nil]), 7), Some(&[0xC0][..]));
        for other in [
            frame(vec![1.into(), 301.into(), Value::Nil, result.clone()]),
            frame(vec![1.into(), 300.into(), "err".into(), Value::Nil]),
            frame(vec![2.into(), "serverPid".into(), 300.into()]),
            frame(vec![1.into(), 300.into()]),
            frame(vec![Value::F64(1.0), 300.into(), Value::Nil, result.clone()]),
            frame(vec![1.into(), Value::F64(300.0), Value::Nil, result]),
        ] {
            assert_eq!(ok_response_result(&other, 300), None, "{}", hex(&other));
        }
    }
}
