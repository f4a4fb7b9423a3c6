//! Bytes to values: measuring one object in a read buffer and decoding it.
//!
//! Why measuring is its own step: the connection reads a stream, so it must tell "need more
//! bytes" from garbage before anything is decoded, must never trust a length prefix before the
//! bytes are there, and must reject what lua-MessagePack rejects (the reserved marker 0xC1,
//! which rmpv would silently read as nil). [`object_len`] does that; decoding then runs on a
//! complete object only. [`decode_raw`] is the allocation-light decoder for parts of a frame
//! that took the borrowed fast path ([`super::raw`]).

use rmpv::Value;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;
    use crate::wire::testgen::{encode_any, same, Rng};

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
}
