//! ③ Framing: exactly one MessagePack value ↔ bytes.
//!
//! Kong's stream has no length prefix: it is a plain concatenation of MessagePack objects
//! (docs/protocol.md#socket-and-framing). To know whether a whole object has arrived we walk its
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
/// needed. Errors as soon as the object is known to be larger than `max` bytes. Walks from
/// byte 0: a connection that receives a frame piece by piece uses a [`FrameScanner`].
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    FrameScanner::new().scan(buf, max)
}

/// [`frame_len`] that resumes where it stopped: it keeps the walk (open containers and the
/// offset of the next item) between calls, so a frame arriving in n pieces costs one walk
/// of its items in total, not n walks from byte 0 (an 8 MB frame in 4 KiB pieces would
/// otherwise be walked 2,000 times). Valid as long as the buffer only grows at its end;
/// [`reset`](FrameScanner::reset) after the measured frame is consumed.
#[derive(Debug)]
pub struct FrameScanner {
    /// Items still to read per open container; the root counts as one item. Empty once the
    /// object's end is known.
    stack: Vec<u64>,
    /// Offset of the next item (or of the object's end once `stack` is empty). May lie past
    /// the bytes received so far while a string/binary payload is still arriving.
    pos: usize,
    /// Items walked since creation (for tests and benchmarks: proves the walk is linear).
    walked: u64,
}

impl Default for FrameScanner {
    fn default() -> Self {
        FrameScanner::new()
    }
}

impl FrameScanner {
    pub fn new() -> FrameScanner {
        let mut stack = Vec::with_capacity(8);
        stack.push(1);
        FrameScanner { stack, pos: 0, walked: 0 }
    }

    /// Starts over for the next frame (its first byte is at offset 0 again).
    pub fn reset(&mut self) {
        self.stack.clear();
        self.stack.push(1);
        self.pos = 0;
    }

    /// Items walked so far.
    pub fn walked(&self) -> u64 {
        self.walked
    }

    /// The length of the object starting at `buf[0]`, `Ok(None)` if more bytes are needed.
    /// `buf` must start with the bytes seen by the previous calls since the last reset.
    pub fn scan(&mut self, buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
        while let Some(top) = self.stack.last_mut() {
            if *top == 0 {
                self.stack.pop();
                continue;
            }
            let pos = self.pos;
            let Some(&marker) = buf.get(pos) else {
                return Ok(None);
            };
            let (header, payload, children): (usize, u64, u64) = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (1, 0, 0),
                0x80..=0x8f => (1, 0, 2 * u64::from(marker & 0x0f)),
                0x90..=0x9f => (1, 0, u64::from(marker & 0x0f)),
                0xa0..=0xbf => (1, u64::from(marker & 0x1f), 0),
                0xc1 => return Err(FrameError::InvalidMarker(marker)),
                0xc4 | 0xd9 => sized(buf, pos, 1).map_or((0, 0, 0), |n| (2, n, 0)),
                0xc5 | 0xda => sized(buf, pos, 2).map_or((0, 0, 0), |n| (3, n, 0)),
                0xc6 | 0xdb => sized(buf, pos, 4).map_or((0, 0, 0), |n| (5, n, 0)),
                0xc7 => sized(buf, pos, 1).map_or((0, 0, 0), |n| (3, n, 0)),
                0xc8 => sized(buf, pos, 2).map_or((0, 0, 0), |n| (4, n, 0)),
                0xc9 => sized(buf, pos, 4).map_or((0, 0, 0), |n| (6, n, 0)),
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
                0xdc => sized(buf, pos, 2).map_or((0, 0, 0), |n| (3, 0, n)),
                0xdd => sized(buf, pos, 4).map_or((0, 0, 0), |n| (5, 0, n)),
                0xde => sized(buf, pos, 2).map_or((0, 0, 0), |n| (3, 0, 2 * n)),
                0xdf => sized(buf, pos, 4).map_or((0, 0, 0), |n| (5, 0, 2 * n)),
            };
            if header == 0 {
                // The length field itself has not fully arrived: resume at this marker.
                return if pos > max { Err(FrameError::TooLarge { max }) } else { Ok(None) };
            }
            let end = pos as u64 + header as u64 + payload;
            if end > max as u64 {
                return Err(FrameError::TooLarge { max });
            }
            // The item is walked: only now is it taken off its container.
            *top -= 1;
            self.walked += 1;
            self.pos = end as usize;
            if children > 0 {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(FrameError::TooDeep);
                }
                self.stack.push(children);
            }
        }
        Ok((self.pos <= buf.len()).then_some(self.pos))
    }
}

/// Reads the big-endian length field of `width` bytes that follows the marker at `pos`.
fn sized(buf: &[u8], pos: usize, width: usize) -> Option<u64> {
    let bytes = buf.get(pos + 1..pos + 1 + width)?;
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
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
        // docs/protocol.md#byte-level-example, request 1 (fixstr config).
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

    /// A frame of `items` small strings in one array32 (like a big header table).
    fn many_items(items: usize) -> Vec<u8> {
        enc(&Value::Array((0..items).map(|i| Value::from(format!("h{:06}", i % 1_000_000))).collect()))
    }

    #[test]
    fn a_resumed_scan_agrees_with_a_full_walk_at_every_cut() {
        let v = Value::Array(vec![
            0.into(),
            7.into(),
            "plugin.Step".into(),
            Value::Array(vec![Value::Map(vec![
                ("EventId".into(), 5.into()),
                ("Data".into(), Value::Binary(vec![7; 300])),
                ("Big".into(), Value::String("x".repeat(70_000).into())),
            ])]),
        ]);
        let bytes = enc(&v);
        // Byte by byte: None until the last byte, then the exact length.
        let mut scanner = FrameScanner::new();
        for cut in 0..bytes.len() {
            assert_eq!(scanner.scan(&bytes[..cut], 1 << 20).unwrap(), None, "prefix {cut}");
        }
        assert_eq!(scanner.scan(&bytes, 1 << 20).unwrap(), Some(bytes.len()));
        // After reset the next frame (at offset 0 again) is measured from scratch.
        scanner.reset();
        assert_eq!(scanner.scan(&bytes[..10], 1 << 20).unwrap(), None);
        assert_eq!(scanner.scan(&bytes, 1 << 20).unwrap(), Some(bytes.len()));
        // The limits still hold when resuming.
        let mut scanner = FrameScanner::new();
        assert_eq!(scanner.scan(&bytes[..100], 1000).unwrap(), None);
        assert!(matches!(scanner.scan(&bytes, 1000), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn a_trickled_frame_is_walked_once_not_once_per_piece() {
        // 256 KiB of small items arriving in 4 KiB pieces (the 8 MB case of the figure
        // below, scaled down for a debug build).
        let items = 32 * 1024;
        let bytes = many_items(items);
        let mut scanner = FrameScanner::new();
        let mut rescans = 0u64;
        for end in (4096..bytes.len()).step_by(4096) {
            assert_eq!(scanner.scan(&bytes[..end], 16 << 20).unwrap(), None);
            let mut fresh = FrameScanner::new();
            assert_eq!(fresh.scan(&bytes[..end], 16 << 20).unwrap(), None);
            rescans += fresh.walked();
        }
        assert_eq!(scanner.scan(&bytes, 16 << 20).unwrap(), Some(bytes.len()));
        // Every item (plus the array itself) exactly once; rescanning walks each prefix again.
        assert_eq!(scanner.walked(), items as u64 + 1);
        assert!(rescans > 10 * scanner.walked(), "rescanning walked {rescans} items");
    }

    /// The CPU figure behind the resumable scanner (printed, not asserted): run with
    /// `cargo test --release --lib codec::tests::trickle_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "prints a measurement; slow in debug builds"]
    fn trickle_cost() {
        let bytes = many_items(1_000_000); // ≈ 8 MB
        let piece = 4096;
        let time = |resume: bool| {
            let started = std::time::Instant::now();
            let mut scanner = FrameScanner::new();
            for end in (piece..bytes.len()).step_by(piece) {
                if !resume {
                    scanner = FrameScanner::new();
                }
                assert_eq!(scanner.scan(&bytes[..end], 16 << 20).unwrap(), None);
            }
            assert_eq!(scanner.scan(&bytes, 16 << 20).unwrap(), Some(bytes.len()));
            started.elapsed()
        };
        let (resumed, rescanned) = (time(true), time(false));
        println!(
            "{} byte frame in {piece}-byte pieces: resumable scan {:.3} ms, rescanning from byte 0 {:.1} ms ({:.0}× more CPU)",
            bytes.len(),
            resumed.as_secs_f64() * 1e3,
            rescanned.as_secs_f64() * 1e3,
            rescanned.as_secs_f64() / resumed.as_secs_f64()
        );
    }
}
