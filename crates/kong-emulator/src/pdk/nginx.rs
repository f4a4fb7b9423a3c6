//! `kong.nginx.get_var`: `ngx.var[name]` for the variables a plugin may reasonably read.
//!
//! Built in: `remote_addr`, `request_method`, `uri`, `args`,
//! `request_uri`, `scheme`, `host`, `http_<header>`, plus anything the test registered with
//! [`crate::Request::with_var`]. Unknown variables are nil, like an undefined nginx
//! variable read through `ngx.var`.

use super::lua::{as_bytes, throw, Args, PdkContext, PdkOutcome};
use crate::wire::{lua_string, StepData};
use rmpv::Value;

pub(super) fn get_var(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    let Some(name) = as_bytes(args.get(0)) else {
        return throw("bad variable name");
    };
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let req = &*ctx.req;
    let value: Option<Value> = if let Some(v) = req.var(&name) {
        Some(Value::from(v))
    } else if let Some(header) = name.strip_prefix("http_") {
        let values: Vec<&[u8]> = req
            .upstream_headers()
            .lines()
            .iter()
            .filter(|l| l.name.to_ascii_lowercase().replace('-', "_") == header)
            .map(|l| l.value.as_slice())
            .collect();
        (!values.is_empty()).then(|| lua_string(&values.join(&b", "[..])))
    } else {
        match name.as_str() {
            "remote_addr" | "realip_remote_addr" => Some(Value::from(req.client_ip())),
            "request_method" => Some(Value::from(req.method())),
            "uri" => Some(Value::from(req.path())),
            "args" => (!req.raw_query().is_empty()).then(|| Value::from(req.raw_query())),
            "is_args" => Some(Value::from(if req.raw_query().is_empty() { "" } else { "?" })),
            "request_uri" => Some(Value::from(if req.raw_query().is_empty() {
                req.path().to_string()
            } else {
                format!("{}?{}", req.path(), req.raw_query())
            })),
            "scheme" => Some(Value::from(req.scheme())),
            "host" => req.upstream_headers().get_str("host").map(Value::from),
            _ => None,
        }
    };
    Some(PdkOutcome::Return(value.map(StepData::from).unwrap_or(StepData::Absent)))
}
