//! ③ Framing: exactly one MessagePack value ↔ bytes.
//!
//! Kong's stream has no length prefix: it is a plain concatenation of MessagePack objects
//! (`kong-protocol.md` §2.1). To know whether a whole object has arrived we walk its
//! structure without allocating ([`frame_len`]); only a complete object is decoded. "Not
//! enough bytes yet" is `Ok(None)`, not an error. The walk also enforces the two limits that
//! keep a hostile or broken peer from hurting the process: a maximum object size and a
//! maximum nesting depth.

use rmpv::Value;

/// Deepest nesting we accept. Kong's deepest values (route entities) are ~5 levels deep.
pub const MAX_DEPTH: usize = 64;

/// Why a frame could not be read. Each of these closes the connection it came from.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame exceeds the {max}-byte limit")]
    TooLarge { max: usize },
    #[error("frame nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("invalid MessagePack marker 0x{0:02x}")]
    InvalidMarker(u8),
    #[error("invalid MessagePack: {0}")]
    Invalid(#[from] rmpv::decode::Error),
}

/// Length of the first complete MessagePack object in `buf`, `Ok(None)` if more bytes are
/// needed. Errors as soon as the object is known to be larger than `max` bytes.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    // Stack of "items still to read" per open container; the root counts as one item.
    let mut stack: Vec<u64> = Vec::with_capacity(8);
    stack.push(1);
    let mut pos: usize = 0;
    while let Some(top) = stack.last_mut() {
        if *top == 0 {
            stack.pop();
            continue;
        }
        *top -= 1;
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        let (header, payload, children): (usize, u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
            0x80..=0x8f => (1, 0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (1, 0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (1, u64::from(marker & 0x1f), 0),
            0xc1 => return Err(FrameError::InvalidMarker(marker)),
            0xc4 | 0xd9 => sized(buf, pos, 1)?.map_or((0, 0, 0), |n| (2, n, 0)),
            0xc5 | 0xda => sized(buf, pos, 2)?.map_or((0, 0, 0), |n| (3, n, 0)),
            0xc6 | 0xdb => sized(buf, pos, 4)?.map_or((0, 0, 0), |n| (5, n, 0)),
            0xc7 => sized(buf, pos, 1)?.map_or((0, 0, 0), |n| (3, n, 0)),
            0xc8 => sized(buf, pos, 2)?.map_or((0, 0, 0), |n| (4, n, 0)),
            0xc9 => sized(buf, pos, 4)?.map_or((0, 0, 0), |n| (6, n, 0)),
            0xca => (5, 0, 0),
            0xcb => (9, 0, 0),
            0xcc | 0xd0 => (2, 0, 0),
            0xcd | 0xd1 => (3, 0, 0),
            0xce | 0xd2 => (5, 0, 0),
            0xcf | 0xd3 => (9, 0, 0),
            0xd4 => (3, 0, 0),
            0xd5 => (4, 0, 0),
            0xd6 => (6, 0, 0),
            0xd7 => (10, 0, 0),
            0xd8 => (18, 0, 0),
            0xdc => sized(buf, pos, 2)?.map_or((0, 0, 0), |n| (3, 0, n)),
            0xdd => sized(buf, pos, 4)?.map_or((0, 0, 0), |n| (5, 0, n)),
            0xde => sized(buf, pos, 2)?.map_or((0, 0, 0), |n| (3, 0, 2 * n)),
            0xdf => sized(buf, pos, 4)?.map_or((0, 0, 0), |n| (5, 0, 2 * n)),
        };
        if header == 0 {
            // The length field itself has not fully arrived.
            return if pos > max { Err(FrameError::TooLarge { max }) } else { Ok(None) };
        }
        let end = pos as u64 + header as u64 + payload;
        if end > max as u64 {
            return Err(FrameError::TooLarge { max });
        }
        pos = end as usize;
        if children > 0 {
            if stack.len() >= MAX_DEPTH {
                return Err(FrameError::TooDeep);
            }
            stack.push(children);
        }
    }
    Ok(if pos <= buf.len() { Some(pos) } else { None })
}

/// Reads the big-endian length field of `width` bytes that follows the marker at `pos`.
fn sized(buf: &[u8], pos: usize, width: usize) -> Result<Option<u64>, FrameError> {
    let Some(bytes) = buf.get(pos + 1..pos + 1 + width) else {
        return Ok(None);
    };
    Ok(Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))))
}

/// Decodes one complete object (as measured by [`frame_len`]) into a value tree.
pub fn decode(frame: &[u8]) -> Result<Value, FrameError> {
    let mut slice = frame;
    Ok(rmpv::decode::read_value_with_max_depth(&mut slice, MAX_DEPTH + 1)?)
}

/// Serialises one value (infallible for in-memory writes).
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    rmpv::encode::write_value(out, value).expect("writing MessagePack to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    #[test]
    fn complete_object_is_measured_exactly_and_prefixes_are_incomplete() {
        let v = Value::Array(vec![
            0.into(),
            7.into(),
            "plugin.Step".into(),
            Value::Array(vec![Value::Map(vec![
                ("EventId".into(), 5.into()),
                ("Data".into(), Value::Binary(vec![0xff, 0, 0xcf])),
            ])]),
        ]);
        let bytes = enc(&v);
        assert_eq!(frame_len(&bytes, 1 << 20).unwrap(), Some(bytes.len()));
        for cut in 0..bytes.len() {
            assert_eq!(frame_len(&bytes[..cut], 1 << 20).unwrap(), None, "prefix {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        // Two objects back to back: the first is measured alone and decodes to the value.
        assert_eq!(frame_len(&two, 1 << 20).unwrap(), Some(bytes.len()));
        assert_eq!(decode(&two[..bytes.len()]).unwrap(), v);
        assert_eq!(decode(&two[bytes.len()..]).unwrap(), v);
    }

    #[test]
    fn kong_str16_config_example_is_one_frame() {
        // kong-protocol.md §12, request 1 (fixstr config).
        let hex = "9400 01B4 706C7567696E2E5374617274496E7374616E6365 9182 A44E616D65 A972757374 2D64656D6F A6436F6E666967 BC7B226D657373616765223A226869222C225F5F7365715F5F223A377D";
        let bytes: Vec<u8> = (0..hex.replace(' ', "").len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex.replace(' ', "")[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(frame_len(&bytes, 1 << 20).unwrap(), Some(bytes.len()));
    }

    #[test]
    fn oversized_declared_length_is_rejected_before_it_arrives() {
        // str32 claiming 100 MB: rejected from the 5-byte header alone.
        let bytes = [0xdb, 0x05, 0xf5, 0xe1, 0x00];
        assert!(matches!(frame_len(&bytes, 1 << 20), Err(FrameError::TooLarge { .. })));
        // array32 of 4 billion nils: each item needs a byte, so the limit trips while walking.
        let mut arr = vec![0xdd, 0xff, 0xff, 0xff, 0xff];
        arr.extend(std::iter::repeat_n(0xc0, 2000));
        assert!(matches!(frame_len(&arr, 1000), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn deep_nesting_and_reserved_marker_are_invalid() {
        let deep = vec![0x91; MAX_DEPTH + 2];
        assert!(matches!(frame_len(&deep, 1 << 20), Err(FrameError::TooDeep)));
        assert!(matches!(frame_len(&[0xc1], 1 << 20), Err(FrameError::InvalidMarker(0xc1))));
    }
}
