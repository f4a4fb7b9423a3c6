//! MessagePack exactly as Kong's Lua side writes and reads it (docs/protocol.md#encoding, byte
//! examples in docs/protocol.md#byte-level-example).
//!
//! One file per concept, in the order a message travels:
//! * `encode.rs`: values to bytes, as lua-MessagePack packs them ([`encode`], [`write_str`]);
//! * `envelope.rs`: the RPC envelopes, requests out ([`encode_request`], [`write_step`],
//!   [`StepData`]) and messages in ([`classify`], the in-place fast path for plain successes);
//! * `decode.rs`: measuring one object in a read buffer ([`object_len`]) and decoding it;
//! * `raw.rs`: reading a frame in place (map keys, strings, integers) for that fast path;
//! * `lua.rs`: what a received value becomes in Lua ([`to_lua`], [`lua_number`], [`lua_string`]).
//!
//! Why the re-exports are flat: `wire::encode`, `wire::classify`, … are the crate's public wire
//! API (the tests and the benchmarks use them); which file implements them is not part of it.

mod decode;
mod encode;
mod envelope;
mod lua;
mod raw;
#[cfg(test)]
pub(crate) mod testgen;

use rmpv::Value;

pub use decode::{decode_prefix, object_len, Decoded};
pub(crate) use decode::{decode_raw, object_len_and_depth};
pub use encode::{encode, encode_bin, write_str};
pub use envelope::{
    classify, encode_request, encode_step, write_handle_event, write_request, write_step, Incoming, StepData,
};
pub(crate) use envelope::{ok_response_result, raw_step, RawStep, FAST_PATH_DEPTH};
pub use lua::{lua_number, lua_string, to_lua};
pub(crate) use raw::raw_map_get;

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
