//! The PDK functions Kong executes on behalf of the plugin server.
//!
//! Kong resolves the `Method` of a step result to a Lua function, calls it with the
//! unpacked `Args` and sends the first return value back (docs/protocol.md#step-methods,
//! docs/protocol.md#pdk-results). This module mirrors that bridge: argument spreading, dispatch by
//! name, the Lua outcomes (a value, `nil`, a thrown error, or a terminal
//! `kong.response.exit/error`) and the choice of the `plugin.Step*` method, which depends on the
//! method *name* only.

mod client;
mod ctx;
mod log;
mod nginx;
mod request;
mod response;
mod service;

use crate::kong::KongVersion;
use crate::request::{LogSource, Request};
use crate::wire::{self, StepData};
use rmpv::Value;

pub use response::Exit;

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

/// Everything a PDK function can see.
pub(crate) struct PdkContext<'a> {
    pub req: &'a mut Request,
    pub version: KongVersion,
    pub node_id: &'a str,
}

/// PDK functions that appeared after Kong 3.4, with the first release line that has them
/// (from the `@function` tags of Kong's `kong/pdk` sources). On an older Kong the function
/// does not exist, so the name does not resolve: Kong logs "could not find pdk method" and
/// answers the Step with nil, exactly as for a misspelt name. A plugin that relies on one of
/// these silently does nothing there, which is the class of bug this table makes visible.
const ADDED_AFTER_3_4: &[(&str, KongVersion)] = &[("kong.service.request.clear_query_arg", KongVersion::V3_9)];

/// Whether the emulated Kong has `method` at all.
fn exists_in(method: &str, version: KongVersion) -> bool {
    ADDED_AFTER_3_4.iter().all(|(name, since)| *name != method || version >= *since)
}

/// Executes `method` with the step result's raw `Args`.
pub(crate) fn call(ctx: &mut PdkContext<'_>, method: &str, args: Option<Value>) -> PdkOutcome {
    let mut args = Args::spread(args);
    let requested = method;
    let method = if exists_in(method, ctx.version) { method } else { "" };
    let outcome = match method {
        "kong.request.get_header" => request::get_header(ctx, &args),
        "kong.request.get_headers" => request::get_headers(ctx, &args),
        "kong.request.get_query_arg" => request::get_query_arg(ctx, &args),
        "kong.request.get_query" => request::get_query(ctx, &args),
        "kong.request.get_method" => ret_str(ctx.req.method()),
        "kong.request.get_path" => ret_str(ctx.req.path()),
        "kong.request.get_raw_query" => ret_str(ctx.req.raw_query()),
        "kong.request.get_scheme" => ret_str(ctx.req.scheme()),
        "kong.request.get_host" => request::get_host(ctx),
        "kong.request.get_raw_body" => Some(PdkOutcome::Return(StepData::Raw(ctx.req.body().to_vec()))),
        "kong.client.get_ip" => ret_str(ctx.req.client_ip()),
        "kong.client.get_forwarded_ip" => ret_str(ctx.req.forwarded_ip()),
        "kong.client.authenticate" => client::authenticate(ctx, &mut args),
        "kong.client.get_consumer" => ret_opt(ctx.req.consumer().cloned()),
        "kong.client.get_credential" => ret_opt(ctx.req.credential().cloned()),
        "kong.service.request.set_header" => service::set_header(ctx, &mut args),
        "kong.service.request.set_headers" => service::set_headers(ctx, &mut args),
        "kong.service.request.add_header" => service::add_header(ctx, &mut args),
        "kong.service.request.clear_header" => service::clear_header(ctx, &args),
        "kong.service.request.clear_query_arg" => service::clear_query_arg(ctx, &args),
        "kong.service.request.set_raw_query" => service::set_raw_query(ctx, &args),
        "kong.response.exit" => response::exit(ctx, &args),
        "kong.response.error" => response::error(ctx, &args),
        "kong.response.set_header" => response::set_header(ctx, &args),
        "kong.response.add_header" => response::add_header(ctx, &args),
        "kong.ctx.shared.get" => ctx::shared_get(ctx, &args),
        "kong.ctx.shared.set" => ctx::shared_set(ctx, &mut args),
        "kong.nginx.get_ctx" => ctx::ngx_get(ctx, &args),
        "kong.nginx.set_ctx" => ctx::ngx_set(ctx, &mut args),
        "kong.nginx.get_var" => nginx::get_var(ctx, &args),
        "kong.nginx.req_start_time" => Some(PdkOutcome::Return(Value::F64(ctx.req.start_time()).into())),
        "kong.router.get_route" => ret_opt(ctx.req.route().cloned()),
        "kong.router.get_service" => ret_opt(ctx.req.service().cloned()),
        "kong.node.get_id" => ret_str(ctx.node_id),
        m if m.starts_with("kong.log.") => log::write(ctx, &m["kong.log.".len()..], &args),
        _ => None,
    };
    outcome.unwrap_or_else(|| {
        // `call_pdk_method`: an unresolvable name is logged and answered with nil.
        ctx.req.log(LogSource::Kong, "err", format!("could not find pdk method: {requested}"));
        PdkOutcome::Return(StepData::Absent)
    })
}

/// The Step method Kong answers a PDK call with (`get_step_method`, 3.x).
pub fn step_method(pdk_method: &str) -> &'static str {
    match pdk_method {
        "kong.client.get_credential" | "kong.client.authenticate" => "plugin.StepCredential",
        "kong.client.load_consumer" | "kong.client.get_consumer" => "plugin.StepConsumer",
        "kong.node.get_memory_stats" => "plugin.StepMemoryStats",
        "kong.router.get_route" => "plugin.StepRoute",
        "kong.router.get_service" => "plugin.StepService",
        "kong.request.get_query"
        | "kong.request.get_headers"
        | "kong.response.get_headers"
        | "kong.service.response.get_headers" => "plugin.StepMultiMap",
        _ => "plugin.Step",
    }
}

/// PDK function arguments after Kong's `unpack(args)`.
pub(crate) struct Args(Vec<Value>);

impl Args {
    /// `Args` array → positional arguments; a map spreads to none; a scalar is the single
    /// argument; a missing `Args` means one nil argument.
    fn spread(raw: Option<Value>) -> Self {
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

/// Lua `tostring` for scalars (what header setters and log functions apply).
pub(crate) fn tostring(v: &Value) -> Vec<u8> {
    match v {
        Value::Nil | Value::Ext(..) => b"nil".to_vec(),
        Value::Boolean(b) => b.to_string().into_bytes(),
        Value::String(_) | Value::Binary(_) => as_bytes(v).unwrap_or_default().to_vec(),
        Value::Array(_) | Value::Map(_) => format!("table: {}", crate::json::to_json(v)).into_bytes(),
        _ => number_to_string(wire::lua_number(v).unwrap_or(0.0)).into_bytes(),
    }
}

/// Lua's `tostring` for numbers: C's `%.14g`.
pub(crate) fn number_to_string(n: f64) -> String {
    if n.is_nan() {
        return if n.is_sign_negative() { "-nan".into() } else { "nan".into() };
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if n == 0.0 {
        return if n.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    const PRECISION: i32 = 14;
    // Round to 14 significant digits first; the exponent decides fixed vs scientific.
    let sci = format!("{:.*e}", (PRECISION - 1) as usize, n);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..PRECISION).contains(&exp) {
        let mantissa = strip_zeros(mantissa);
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (PRECISION - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{n:.decimals$}")).to_string()
    }
}

/// `%g` drops trailing zeros of the fraction (and a bare trailing point).
fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn ret_str(s: &str) -> Option<PdkOutcome> {
    Some(PdkOutcome::Return(StepData::Value(Value::from(s))))
}

fn ret_opt(v: Option<Value>) -> Option<PdkOutcome> {
    Some(PdkOutcome::Return(v.map(StepData::from).unwrap_or(StepData::Absent)))
}

/// Shorthand for a thrown Lua error.
pub(crate) fn throw(msg: impl Into<String>) -> Option<PdkOutcome> {
    Some(PdkOutcome::Throw(msg.into()))
}

/// Shorthand for a nil return.
pub(crate) fn nil() -> Option<PdkOutcome> {
    Some(PdkOutcome::Return(StepData::Absent))
}

#[cfg(test)]
mod tests {
    use super::number_to_string;

    #[test]
    fn numbers_print_like_lua() {
        assert_eq!(number_to_string(3.0), "3");
        assert_eq!(number_to_string(-12.5), "-12.5");
        assert_eq!(number_to_string(0.1), "0.1");
        assert_eq!(number_to_string(1.0 / 3.0), "0.33333333333333");
        assert_eq!(number_to_string(1_700_000_000.25), "1700000000.25");
        assert_eq!(number_to_string(1e15), "1e+15");
        assert_eq!(number_to_string(1e-5), "1e-05");
        assert_eq!(number_to_string(123_456_789_012_345.0), "1.2345678901234e+14");
    }
}
