//! Test generators shared by the wire tests and the event-loop tests: a deterministic random
//! [`Value`] source and an encoder that picks any valid msgpack form (wider integers, `str8`,
//! float32…), i.e. bytes a plugin server may send but Kong's encoder never writes.

use rmpv::Value;

use super::lua_string;

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

    pub(crate) fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max + 1) as usize;
        (0..n).map(|_| [b'a', b'Z', b'-', b'_', 0xC3, 0xA9, 0xFF, b'0'][self.below(8) as usize]).collect()
    }

    fn text(&mut self) -> String {
        ["Data", "Method", "Args", "EventId", "ret", "x", "", "kong.request.get_header", "é"][self.below(9) as usize]
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

/// Value equality that treats NaN as equal to NaN.
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    rmpv::encode::write_value(&mut x, a).unwrap();
    rmpv::encode::write_value(&mut y, b).unwrap();
    x == y
}
