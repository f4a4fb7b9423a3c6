//! Reading a received frame in place, without decoding it.
//!
//! Why: almost every response Kong reads is `[1, msgid, nil, {EventId, Data}]` in one common
//! encoding. Looking up a key or comparing a string straight in the read buffer lets the
//! emulator answer such frames without building a `Value` tree first; anything unusual falls
//! back to full decoding, so these readers only have to be right about what they accept
//! (each returns `None` for anything else).

use super::decode::object_len;

/// [`map_get`](super::map_get) on raw bytes: `None` when `map` does not start with a msgpack map (or is
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

/// The length of the object at the start of `b`: strings and scalars from their header,
/// tables by walking them.
pub(super) fn raw_len(b: &[u8]) -> Option<usize> {
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
pub(super) fn array_header(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        m @ 0x90..=0x9F => Some(((m & 0x0F) as usize, 1)),
        0xDC => Some((u16::from_be_bytes([*b.get(1)?, *b.get(2)?]) as usize, 3)),
        0xDD => Some((u32::from_be_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, *b.get(4)?]) as usize, 5)),
        _ => None,
    }
}

/// (entry count, header length) of a map.
pub(super) fn map_header(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        m @ 0x80..=0x8F => Some(((m & 0x0F) as usize, 1)),
        0xDE => Some((u16::from_be_bytes([*b.get(1)?, *b.get(2)?]) as usize, 3)),
        0xDF => Some((u32::from_be_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, *b.get(4)?]) as usize, 5)),
        _ => None,
    }
}

/// The bytes of the msgpack *string* at the start of `b` (what decodes to `Value::String`;
/// not `bin`).
pub(super) fn raw_str(b: &[u8]) -> Option<&[u8]> {
    let (len, head) = match *b.first()? {
        m @ 0xA0..=0xBF => ((m & 0x1F) as usize, 1),
        0xD9 => (*b.get(1)? as usize, 2),
        0xDA => (u16::from_be_bytes([*b.get(1)?, *b.get(2)?]) as usize, 3),
        0xDB => (u32::from_be_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, *b.get(4)?]) as usize, 5),
        _ => return None,
    };
    b.get(head..head + len)
}

/// The integer at the start of `b` as the Lua number [`lua_number`](super::lua_number) makes of it, and its
/// encoded length; `None` for anything that is not an integer.
pub(super) fn raw_integer_as_lua(b: &[u8]) -> Option<(f64, usize)> {
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
