//! `kong.response.exit` / `error` (terminal) and `set_header` / `add_header`.
//!
//! In the access phase exit/error record the response and yield the plugin's coroutine, so
//! Kong never answers the pending PDK call (docs/protocol.md#terminal-calls). Invalid arguments
//! raise instead. A table body is JSON-encoded by cjson with
//! `Content-Type: application/json; charset=utf-8`; `error` builds `{"message": …}` with
//! Kong's default message for the status when none is given. Headers set earlier with
//! `kong.response.set_header` are part of the exit response.

use super::lua::{as_bytes, lua_type, nil, throw, Args, Exit, PdkContext, PdkOutcome};
use super::service::{header_name, header_table, header_values};
use crate::headers::HeaderMap;
use crate::wire::lua_number;
use rmpv::Value;

const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// `code` must be an integral Lua number within `range`.
fn status_arg(v: &Value, lo: f64, hi: f64) -> Result<u16, String> {
    match lua_number(v) {
        Some(n) if n.floor() == n && (lo..=hi).contains(&n) => Ok(n as u16),
        Some(_) => Err(format!("code must be a number between {lo} and {hi}")),
        None => Err(format!("code must be a number (got {})", lua_type(v))),
    }
}

/// Response headers: those set before with `kong.response.set_header`, then the exit's own.
fn exit_headers(ctx: &PdkContext<'_>, v: &Value) -> Result<HeaderMap, String> {
    let mut headers = ctx.req.response_headers().clone();
    if v.is_nil() {
        return Ok(headers);
    }
    if !matches!(v, Value::Map(_) | Value::Array(_)) {
        return Err(format!("headers must be a nil or table (got {})", lua_type(v)));
    }
    for (name, values) in header_table(v)? {
        headers.set(&name, values);
    }
    Ok(headers)
}

pub(super) fn exit(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    let result = (|| {
        let status = status_arg(args.get(0), 100.0, 599.0)?;
        let mut headers = exit_headers(ctx, args.get(2))?;
        let body = match args.get(1) {
            Value::Nil => Vec::new(),
            v @ (Value::String(_) | Value::Binary(_)) => as_bytes(v).unwrap_or_default().to_vec(),
            v @ (Value::Map(_) | Value::Array(_)) => {
                if !headers.contains("content-type") {
                    headers.set("Content-Type", vec![JSON_CONTENT_TYPE.into()]);
                }
                crate::json::to_json_bytes(v)
            }
            other => return Err(format!("body must be a nil, string or table (got {})", lua_type(other))),
        };
        Ok(Exit { status, body, headers })
    })();
    Some(match result {
        Ok(exit) => PdkOutcome::Exit(exit),
        Err(e) => PdkOutcome::Throw(e),
    })
}

pub(super) fn error(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    let result = (|| {
        let status = status_arg(args.get(0), 400.0, 599.0)?;
        let mut headers = exit_headers(ctx, args.get(2))?;
        let message = match args.get(1) {
            Value::Nil => Value::from(default_message(status)),
            v @ (Value::String(_) | Value::Binary(_) | Value::Map(_) | Value::Array(_)) => v.clone(),
            other => return Err(format!("message must be a nil, a string or a table (got {})", lua_type(other))),
        };
        let body = Value::Map(vec![(Value::from("message"), message)]);
        headers.set("Content-Type", vec![JSON_CONTENT_TYPE.into()]);
        Ok(Exit { status, body: crate::json::to_json_bytes(&body), headers })
    })();
    Some(match result {
        Ok(exit) => PdkOutcome::Exit(exit),
        Err(e) => PdkOutcome::Throw(e),
    })
}

/// Kong's `HTTP_MESSAGES` defaults for `kong.response.error`.
pub fn default_message(status: u16) -> &'static str {
    match status {
        400 => "Bad request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        406 => "Not acceptable",
        408 => "Request timeout",
        409 => "Conflict",
        413 => "Payload too large",
        415 => "Unsupported media type",
        429 => "Too many requests",
        500 => "An unexpected error occurred",
        502 => "An invalid response was received from the upstream server",
        503 => "The upstream server is currently unavailable",
        504 => "The upstream server is timing out",
        s if s < 500 => "Bad request",
        _ => "An unexpected error occurred",
    }
}

fn header_args(args: &Args) -> Result<super::service::HeaderValues, String> {
    let name = header_name(args.get(0))?;
    let values = header_values(&name, args.get(1), true)?;
    Ok((name, values))
}

pub(super) fn set_header(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    match header_args(args) {
        Ok((name, values)) => {
            ctx.req.response_headers_mut().set(&name, values);
            nil()
        }
        Err(e) => throw(e),
    }
}

pub(super) fn add_header(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    match header_args(args) {
        Ok((name, values)) => {
            for value in values {
                ctx.req.response_headers_mut().append(name.clone(), value);
            }
            nil()
        }
        Err(e) => throw(e),
    }
}
