//! ④ MessagePack-RPC envelopes (docs/protocol.md#message-envelopes).
//!
//! Kong only sends requests `[0, msgid, method, [param]]`; we only send responses
//! `[1, msgid, error, result]` and, optionally, the `serverPid` notification. A value that is
//! not a request is a [`ProtocolError`]: answered with an error when its msgid can be read,
//! otherwise the connection is closed.

pub mod error;
pub mod method;
pub mod value;

use std::borrow::Cow;

use rmpv::Value;

pub use error::RpcError;
pub use method::{Method, MethodError};

/// A request as it came off the wire, before its method is interpreted.
#[derive(Debug)]
pub struct Request {
    pub msgid: u64,
    pub method: String,
    /// `params[0]`: Kong always sends exactly one argument (docs/protocol.md#message-envelopes).
    /// `Nil` if absent.
    pub param: Value,
}

/// An envelope we cannot serve. `msgid` is known when the envelope was a 4-array whose second
/// element is an integer, in which case the peer gets an error response.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ProtocolError {
    pub msgid: Option<u64>,
    pub error: EnvelopeError,
}

/// What is wrong with an envelope. The texts are what Kong (or whoever sent it) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("RPC message is not an array")]
    NotAnArray,
    #[error("RPC request must be a 4-element array")]
    NotFourElements,
    #[error("RPC msgid is not an unsigned integer")]
    BadMsgid,
    #[error("only RPC requests (type 0) are accepted")]
    NotARequest,
    #[error("RPC method is not UTF-8")]
    MethodNotUtf8,
    #[error("RPC method is not a string")]
    MethodNotAString,
    #[error("RPC params are not an array")]
    ParamsNotAnArray,
}

impl Request {
    pub fn from_value(value: Value) -> Result<Self, ProtocolError> {
        let fail = |msgid, error| ProtocolError { msgid, error };
        let Value::Array(items) = value else {
            return Err(fail(None, EnvelopeError::NotAnArray));
        };
        let msgid = items.get(1).and_then(Value::as_u64);
        if items.len() != 4 {
            return Err(fail(msgid, EnvelopeError::NotFourElements));
        }
        let mut items = items.into_iter();
        let kind = items.next().and_then(|v| v.as_u64());
        let msgid = msgid.ok_or_else(|| fail(None, EnvelopeError::BadMsgid))?;
        items.next();
        if kind != Some(0) {
            return Err(fail(Some(msgid), EnvelopeError::NotARequest));
        }
        let method = match items.next() {
            Some(Value::String(s)) => s.into_str().ok_or_else(|| fail(Some(msgid), EnvelopeError::MethodNotUtf8))?,
            Some(Value::Binary(b)) => {
                String::from_utf8(b).map_err(|_| fail(Some(msgid), EnvelopeError::MethodNotUtf8))?
            }
            _ => return Err(fail(Some(msgid), EnvelopeError::MethodNotAString)),
        };
        let param = match items.next() {
            Some(Value::Array(params)) => params.into_iter().next().unwrap_or(Value::Nil),
            Some(Value::Nil) | None => Value::Nil,
            Some(_) => return Err(fail(Some(msgid), EnvelopeError::ParamsNotAnArray)),
        };
        Ok(Request { msgid, method, param })
    }
}

/// Reads the two requests that make up nearly all of Kong's traffic, `plugin.Step*` and
/// `plugin.HandleEvent`, straight from their frame, without first building a value tree
/// for the envelope and parameter map. `None` means "not in the usual shape" (another
/// method, a float id, an empty map sent as an array, …): the caller then
/// takes the general path ([`Request::from_value`] and [`Method::parse`]), which accepts
/// every form Kong may send and words the errors. Both paths give the same result.
pub fn read_common(frame: &[u8]) -> Option<(u64, Method)> {
    use rmp::decode as r;
    let mut rd = frame;
    if r::read_array_len(&mut rd).ok()? != 4 || r::read_int::<u64, _>(&mut rd).ok()? != 0 {
        return None;
    }
    let msgid: u64 = r::read_int(&mut rd).ok()?;
    let (method, rest) = r::read_str_from_slice(rd).ok()?;
    rd = rest;
    let step = method.starts_with("plugin.Step") && method != "plugin.StepError";
    if !step && method != "plugin.HandleEvent" {
        return None;
    }
    if r::read_array_len(&mut rd).ok()? != 1 {
        return None;
    }
    let (mut id, mut data, mut event_name) = (None, None, None);
    for _ in 0..r::read_map_len(&mut rd).ok()? {
        let (key, rest) = r::read_str_from_slice(rd).ok()?;
        rd = rest;
        match (step, key) {
            (true, "EventId") | (false, "InstanceId") => id = Some(r::read_int::<u64, _>(&mut rd).ok()?),
            (true, "Data") => {
                data = Some(rmpv::decode::read_value_with_max_depth(&mut rd, crate::codec::MAX_DEPTH + 1).ok()?)
            }
            (false, "EventName") => {
                let (name, rest) = r::read_str_from_slice(rd).ok()?;
                rd = rest;
                event_name = Some(name.to_owned());
            }
            _ => return None,
        }
    }
    if !rd.is_empty() {
        return None;
    }
    let method = if step {
        Method::Step { event_id: id?, data: data.filter(|v| !v.is_nil()) }
    } else {
        Method::HandleEvent { instance_id: Some(id?), event_name: event_name? }
    };
    Some((msgid, method))
}

/// What HandleEvent and every Step answer (docs/protocol.md#methods): `{EventId, Data}`, where
/// `Data` is the event's next PDK call `{Method, Args}` or the string `"ret"` once the handler
/// returned.
#[derive(Debug)]
pub struct StepResult {
    pub event_id: u64,
    pub data: StepData,
}

#[derive(Debug)]
pub enum StepData {
    Call { method: Cow<'static, str>, args: Vec<Value> },
    Ret,
}

/// The result of a served RPC. Step results, the bulk of the traffic, are written straight
/// to the wire without building a [`Value`] tree first.
#[derive(Debug)]
pub enum Reply {
    Value(Value),
    Step(StepResult),
}

/// Writes `[1, msgid, nil, result]` or `[1, msgid, "error text", nil]`. Kong treats any
/// non-nil error element as failure and calls `:lower()` on it, so errors are always strings:
/// [`RpcError::wire_text`].
pub fn encode_response(msgid: u64, result: &Result<Reply, RpcError>, out: &mut Vec<u8>) {
    use rmp::encode as w;
    const INFALLIBLE: &str = "writing MessagePack to a Vec cannot fail";
    w::write_array_len(out, 4).expect(INFALLIBLE);
    w::write_uint(out, 1).expect(INFALLIBLE);
    w::write_uint(out, msgid).expect(INFALLIBLE);
    match result {
        Err(e) => {
            w::write_str(out, &e.wire_text()).expect(INFALLIBLE);
            w::write_nil(out).expect(INFALLIBLE);
        }
        Ok(reply) => {
            w::write_nil(out).expect(INFALLIBLE);
            match reply {
                Reply::Value(v) => rmpv::encode::write_value(out, v).expect(INFALLIBLE),
                Reply::Step(StepResult { event_id, data }) => {
                    w::write_map_len(out, 2).expect(INFALLIBLE);
                    w::write_str(out, "EventId").expect(INFALLIBLE);
                    w::write_uint(out, *event_id).expect(INFALLIBLE);
                    w::write_str(out, "Data").expect(INFALLIBLE);
                    match data {
                        StepData::Ret => w::write_str(out, "ret").expect(INFALLIBLE),
                        StepData::Call { method, args } => {
                            w::write_map_len(out, 2).expect(INFALLIBLE);
                            w::write_str(out, "Method").expect(INFALLIBLE);
                            w::write_str(out, method).expect(INFALLIBLE);
                            w::write_str(out, "Args").expect(INFALLIBLE);
                            w::write_array_len(out, args.len() as u32).expect(INFALLIBLE);
                            for arg in args {
                                rmpv::encode::write_value(out, arg).expect(INFALLIBLE);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `[2, "serverPid", pid]`: lets Kong drop instance ids cached from a previous process
/// (docs/protocol.md#serverpid).
pub fn server_pid_notification(pid: u32) -> Value {
    Value::Array(vec![Value::from(2), Value::from("serverPid"), Value::from(pid)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(method: &str, param: Value) -> Vec<u8> {
        let mut out = Vec::new();
        let v = Value::Array(vec![0.into(), 42.into(), method.into(), Value::Array(vec![param])]);
        rmpv::encode::write_value(&mut out, &v).unwrap();
        out
    }

    fn general(bytes: &[u8]) -> String {
        let request = Request::from_value(crate::codec::decode(bytes).unwrap()).unwrap();
        format!("{:?}", (request.msgid, Method::parse(&request.method, request.param).unwrap()))
    }

    fn kv(entries: Vec<(Value, Value)>) -> Value {
        Value::Map(entries)
    }

    #[test]
    fn the_fast_path_reads_steps_and_events_exactly_as_the_general_path() {
        let headers = kv(vec![("x-api-key".into(), Value::Array(vec!["a".into(), "b".into()]))]);
        let usual = [
            frame("plugin.Step", kv(vec![("EventId".into(), 7.into()), ("Data".into(), "v".into())])),
            frame("plugin.StepMultiMap", kv(vec![("Data".into(), headers), ("EventId".into(), 1u64.into())])),
            frame("plugin.Step", kv(vec![("EventId".into(), 7.into())])),
            frame("plugin.Step", kv(vec![("EventId".into(), 7.into()), ("Data".into(), Value::Nil)])),
            frame(
                "plugin.StepCredential",
                kv(vec![("EventId".into(), u64::MAX.into()), ("Data".into(), Value::Binary(vec![0xff]))]),
            ),
            frame(
                "plugin.HandleEvent",
                kv(vec![("InstanceId".into(), 3.into()), ("EventName".into(), "access".into())]),
            ),
        ];
        for bytes in &usual {
            let fast = read_common(bytes).expect("usual shape takes the fast path");
            assert_eq!(format!("{fast:?}"), general(bytes));
        }
        // Unusual but valid shapes fall back to the general path, which accepts them.
        let unusual = [
            frame("plugin.Step", kv(vec![("EventId".into(), Value::F64(7.0))])),
            frame("plugin.StepError", kv(vec![("EventId".into(), 7.into()), ("Data".into(), "boom".into())])),
            frame(
                "plugin.HandleEvent",
                kv(vec![
                    ("InstanceId".into(), 3.into()),
                    ("EventName".into(), "access".into()),
                    ("Extra".into(), 1.into()),
                ]),
            ),
            frame("plugin.GetStatus", Value::Nil),
        ];
        for bytes in &unusual {
            assert!(read_common(bytes).is_none());
            general(bytes);
        }
        // Malformed Steps are left to the general path to word the error.
        let missing_id = frame("plugin.Step", kv(vec![("Data".into(), "v".into())]));
        assert!(read_common(&missing_id).is_none());
        let request = Request::from_value(crate::codec::decode(&missing_id).unwrap()).unwrap();
        assert_eq!(
            Method::parse(&request.method, request.param).unwrap_err(),
            MethodError::MissingField {
                method: "plugin.Step".into(),
                field: "EventId",
                expected: method::FieldType::Integer
            }
        );
    }

    #[test]
    fn step_results_are_written_as_kong_reads_them() {
        let mut out = Vec::new();
        let step = StepResult {
            event_id: 9,
            data: StepData::Call { method: "kong.request.get_headers".into(), args: vec![100.into()] },
        };
        encode_response(5, &Ok(Reply::Step(step)), &mut out);
        let call = kv(vec![
            ("Method".into(), "kong.request.get_headers".into()),
            ("Args".into(), Value::Array(vec![100.into()])),
        ]);
        let expected = Value::Array(vec![
            1.into(),
            5.into(),
            Value::Nil,
            kv(vec![("EventId".into(), 9.into()), ("Data".into(), call)]),
        ]);
        assert_eq!(crate::codec::decode(&out).unwrap(), expected);

        out.clear();
        encode_response(6, &Ok(Reply::Step(StepResult { event_id: 9, data: StepData::Ret })), &mut out);
        let expected = Value::Array(vec![
            1.into(),
            6.into(),
            Value::Nil,
            kv(vec![("EventId".into(), 9.into()), ("Data".into(), "ret".into())]),
        ]);
        assert_eq!(crate::codec::decode(&out).unwrap(), expected);

        out.clear();
        let error = RpcError::from(crate::dispatch::DispatchError::NoInstance { id: 3 });
        encode_response(7, &Err(error), &mut out);
        assert_eq!(
            crate::codec::decode(&out).unwrap(),
            Value::Array(vec![1.into(), 7.into(), "no plugin instance 3".into(), Value::Nil])
        );
    }
}
