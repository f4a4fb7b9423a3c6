//! ④ MessagePack-RPC envelopes (`kong-protocol.md` §2.2).
//!
//! Kong only sends requests `[0, msgid, method, [param]]`; we only send responses
//! `[1, msgid, error, result]` and, optionally, the `serverPid` notification. A value that is
//! not a request is a [`ProtocolError`]: answered with an error when its msgid can be read,
//! otherwise the connection is closed.

pub mod method;
pub mod value;

use rmpv::Value;

pub use method::Method;

/// A request as it came off the wire, before its method is interpreted.
#[derive(Debug)]
pub struct Request {
    pub msgid: u64,
    pub method: String,
    /// `params[0]`: Kong always sends exactly one argument (§2.2). `Nil` if absent.
    pub param: Value,
}

/// An envelope we cannot serve. `msgid` is known when the envelope was a 4-array whose second
/// element is an integer, in which case the peer gets an error response.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct ProtocolError {
    pub msgid: Option<u64>,
    pub reason: String,
}

impl Request {
    pub fn from_value(value: Value) -> Result<Self, ProtocolError> {
        let fail = |msgid, reason: &str| ProtocolError { msgid, reason: reason.to_owned() };
        let Value::Array(items) = value else {
            return Err(fail(None, "RPC message is not an array"));
        };
        let msgid = items.get(1).and_then(Value::as_u64);
        if items.len() != 4 {
            return Err(fail(msgid, "RPC request must be a 4-element array"));
        }
        let mut items = items.into_iter();
        let kind = items.next().and_then(|v| v.as_u64());
        let msgid = msgid.ok_or_else(|| fail(None, "RPC msgid is not an unsigned integer"))?;
        items.next();
        if kind != Some(0) {
            return Err(fail(Some(msgid), "only RPC requests (type 0) are accepted"));
        }
        let method = match items.next() {
            Some(Value::String(s)) => s.into_str().ok_or_else(|| fail(Some(msgid), "RPC method is not UTF-8"))?,
            Some(Value::Binary(b)) => {
                String::from_utf8(b).map_err(|_| fail(Some(msgid), "RPC method is not UTF-8"))?
            }
            _ => return Err(fail(Some(msgid), "RPC method is not a string")),
        };
        let param = match items.next() {
            Some(Value::Array(params)) => params.into_iter().next().unwrap_or(Value::Nil),
            Some(Value::Nil) | None => Value::Nil,
            Some(_) => return Err(fail(Some(msgid), "RPC params are not an array")),
        };
        Ok(Request { msgid, method, param })
    }
}

/// `[1, msgid, nil, result]` or `[1, msgid, "error text", nil]`. Kong treats any non-nil error
/// element as failure and calls `:lower()` on it, so errors are always strings.
pub fn response(msgid: u64, result: Result<Value, String>) -> Value {
    let (error, result) = match result {
        Ok(v) => (Value::Nil, v),
        Err(e) => (Value::from(e), Value::Nil),
    };
    Value::Array(vec![Value::from(1), Value::from(msgid), error, result])
}

/// `[2, "serverPid", pid]`: lets Kong drop instance ids cached from a previous process (§4.7).
pub fn server_pid_notification(pid: u32) -> Value {
    Value::Array(vec![Value::from(2), Value::from("serverPid"), Value::from(pid)])
}
