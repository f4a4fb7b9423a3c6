//! Values to bytes, exactly as lua-MessagePack packs what Kong holds in Lua.
//!
//! Why not a generic msgpack encoder: Kong packs with lua-MessagePack's defaults
//! (`string_compat`, `unsigned` integers, `double` numbers), so strings never use `str8`,
//! every number is a Lua double (integral ones go out in the smallest integer format, the rest
//! as float64) and an empty Lua table is an empty *array*. The plugin server under test must
//! cope with exactly these bytes; rmpv's encoder would write others.

use rmpv::Value;

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

/// The smallest unsigned format for `n` (also the msgid of every request envelope).
pub(super) fn write_uint(n: u64, out: &mut Vec<u8>) {
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
