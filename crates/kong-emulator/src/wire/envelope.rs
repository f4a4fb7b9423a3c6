//! The RPC envelopes of MsgPack:1: the requests Kong writes and the messages it reads back.
//!
//! Out: `[0, msgid, method, [param]]` (Kong always sends exactly one parameter), with direct
//! writers for the two requests of the hot path (`plugin.HandleEvent` and the `plugin.Step*`
//! family) that produce the same bytes without building the param map. In: [`classify`]
//! sorts a decoded message the way Kong's `Rpc:call` does, and [`ok_response_result`] /
//! [`raw_step`] recognise the common successful response in place (the fast path).

use rmpv::Value;

use super::encode::{encode, encode_bin, write_str, write_uint};
use super::lua::lua_number;
use super::raw::{array_header, raw_integer_as_lua, raw_map_get, raw_str};

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

/// Frames nested no deeper than this take the borrowed fast path: rmpv (whose depth budget
/// is 1024, about two per level) decodes any part of them without error.
pub(crate) const FAST_PATH_DEPTH: usize = 64;

/// The result element of `[1, msgid, nil, result]` when `frame` is exactly such a
/// successful response to `msgid` in its common encoding (type `1` as a positive fixint, a
/// nil error): what [`classify`] and Kong's msgid/error checks accept without further ado.
/// `None` means "take the general path" (notifications, errors, other encodings, violations).
///
/// `frame` must be one complete object measured by [`object_len`](super::object_len); the returned slice starts
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testgen::Rng;
    use crate::wire::{decode_raw, hex};

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
