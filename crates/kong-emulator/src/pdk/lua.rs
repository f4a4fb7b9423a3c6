//! The Lua side of one PDK call, shared by every PDK function: the context it runs in, its
//! arguments after Kong's `unpack(args)`, and its Lua outcomes (a value, `nil`, a thrown error,
//! or a terminal `kong.response.exit/error`).
//!
//! Why a leaf module: the dispatcher ([`super`]) calls the function modules, and they all need
//! these types; with the types here, the function modules never depend on the dispatcher.

use crate::headers::HeaderMap;
use crate::request::Request;
use crate::version::KongVersion;
use crate::wire::{self, StepData};
use rmpv::Value;

/// What a PDK call did, in Lua terms.
#[derive(Debug)]
pub(crate) enum PdkOutcome {
    /// Returned; the value goes back with a Step (absent when nil).
    Return(StepData),
    /// `kong.response.exit`/`error`: Kong sends nothing more for the event.
    Exit(Exit),
    /// The function raised a Lua error: the bridge loop dies (500 in access).
    Throw(String),
}

/// A response produced by `kong.response.exit`/`error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: HeaderMap,
}

impl Exit {
    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// First value of a response header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get_str(name)
    }
}

/// Everything a PDK function can see.
pub(crate) struct PdkContext<'a> {
    pub req: &'a mut Request,
    pub version: KongVersion,
    pub node_id: &'a str,
}

/// PDK function arguments after Kong's `unpack(args)`.
pub(crate) struct Args(Vec<Value>);

impl Args {
    /// `Args` array → positional arguments; a map spreads to none; a scalar is the single
    /// argument; a missing `Args` means one nil argument.
    pub(crate) fn spread(raw: Option<Value>) -> Self {
        Args(match raw {
            None => vec![Value::Nil],
            Some(Value::Array(items)) => items.into_iter().map(wire::to_lua).collect(),
            Some(Value::Map(_)) => Vec::new(),
            Some(other) => vec![wire::to_lua(other)],
        })
    }

    /// Argument `i` (0-based); missing ones are nil.
    pub(crate) fn get(&self, i: usize) -> &Value {
        static NIL: Value = Value::Nil;
        self.0.get(i).unwrap_or(&NIL)
    }

    pub(crate) fn all(&self) -> &[Value] {
        &self.0
    }

    /// Moves argument `i` out (leaving nil), for functions that keep or consume it.
    pub(crate) fn take(&mut self, i: usize) -> Value {
        self.0.get_mut(i).map(|v| std::mem::replace(v, Value::Nil)).unwrap_or(Value::Nil)
    }
}

/// The Lua type name of a value (for error messages).
pub(crate) fn lua_type(v: &Value) -> &'static str {
    match v {
        Value::Nil | Value::Ext(..) => "nil",
        Value::Boolean(_) => "boolean",
        Value::Integer(_) | Value::F32(_) | Value::F64(_) => "number",
        Value::String(_) | Value::Binary(_) => "string",
        Value::Array(_) | Value::Map(_) => "table",
    }
}

/// The bytes of a Lua string value.
pub(crate) fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::String(s) => Some(s.as_bytes()),
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

/// Shorthand for a thrown Lua error.
pub(crate) fn throw(msg: impl Into<String>) -> Option<PdkOutcome> {
    Some(PdkOutcome::Throw(msg.into()))
}

/// Shorthand for a nil return.
pub(crate) fn nil() -> Option<PdkOutcome> {
    Some(PdkOutcome::Return(StepData::Absent))
}
