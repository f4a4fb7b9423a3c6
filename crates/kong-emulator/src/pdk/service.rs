//! `kong.service.request.*` setters: they rewrite the request's header list
//! (`ngx.req.set_header`) and query (`ngx.var.args`), which is what nginx proxies upstream.
//!
//! Validation follows Kong's `checks.validate_header(s)`: names must be strings; values may
//! be strings, numbers or booleans (converted with `tostring`) or, where accepted, arrays of
//! those; an empty array removes the header. `set_header` with an array value raises on
//! Kong 3.4 and is accepted on 3.9 (observed, docs/protocol.md#pdk-calls).

use super::lua::{as_bytes, lua_type, nil, throw, Args, PdkContext, PdkOutcome};
use crate::json::tostring;
use crate::version::KongVersion;
use rmpv::Value;

/// Header name with the values it is set to.
pub(super) type HeaderValues = (String, Vec<Vec<u8>>);

/// A header name argument, or the error Kong raises for it.
pub(super) fn header_name(v: &Value) -> Result<String, String> {
    as_bytes(v)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| format!("invalid header name \"{}\": got {}, expected string", show(v), lua_type(v)))
}

fn show(v: &Value) -> String {
    String::from_utf8_lossy(&tostring(v)).into_owned()
}

/// Header values after `normalize_(multi_)header`; `allow_array` says whether a table is
/// accepted.
pub(super) fn header_values(name: &str, v: &Value, allow_array: bool) -> Result<Vec<Vec<u8>>, String> {
    match v {
        Value::String(_) | Value::Binary(_) | Value::Boolean(_) | Value::Integer(_) | Value::F32(_) | Value::F64(_) => {
            Ok(vec![tostring(v)])
        }
        Value::Array(items) if allow_array => items
            .iter()
            .map(|item| match item {
                Value::Array(_) | Value::Map(_) | Value::Nil | Value::Ext(..) => {
                    Err(format!("invalid header value in array \"{name}\": got {}, expected string", lua_type(item)))
                }
                scalar => Ok(tostring(scalar)),
            })
            .collect(),
        // An empty Lua table arrives as an empty array; a non-empty map is not a header list.
        Value::Map(entries) if allow_array && entries.is_empty() => Ok(Vec::new()),
        other => Err(format!(
            "invalid header value for \"{name}\": got {}, expected string, number or boolean",
            lua_type(other)
        )),
    }
}

pub(super) fn set_header(ctx: &mut PdkContext<'_>, args: &mut Args) -> Option<PdkOutcome> {
    let allow_array = ctx.version != KongVersion::V3_4;
    let result = header_name_owned(args.take(0))
        .and_then(|name| header_values_owned(&name, args.take(1), allow_array).map(|values| (name, values)));
    match result {
        Ok((name, values)) => {
            ctx.req.headers_mut().set_owned(name, values);
            nil()
        }
        Err(e) => throw(e),
    }
}

/// [`header_name`] consuming the value (a valid string moves instead of being copied).
fn header_name_owned(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) if s.is_str() => Ok(s.into_str().unwrap_or_default()),
        Value::Binary(b) => {
            Ok(String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
        }
        other => header_name(&other),
    }
}

/// [`header_values`] consuming the value (strings move instead of being copied).
fn header_values_owned(name: &str, v: Value, allow_array: bool) -> Result<Vec<Vec<u8>>, String> {
    let scalar = |item: Value| match item {
        Value::String(s) => Ok(s.into_bytes()),
        Value::Binary(b) => Ok(b),
        Value::Boolean(_) | Value::Integer(_) | Value::F32(_) | Value::F64(_) => Ok(tostring(&item)),
        other => Err(other),
    };
    match v {
        Value::Array(items) if allow_array => items
            .into_iter()
            .map(|item| {
                scalar(item).map_err(|bad| {
                    format!("invalid header value in array \"{name}\": got {}, expected string", lua_type(&bad))
                })
            })
            .collect(),
        v @ (Value::String(_)
        | Value::Binary(_)
        | Value::Boolean(_)
        | Value::Integer(_)
        | Value::F32(_)
        | Value::F64(_)) => Ok(vec![scalar(v).unwrap_or_default()]),
        other => header_values(name, &other, allow_array),
    }
}

/// Validates a `{name = value, …}` table as `validate_headers` does.
pub(super) fn header_table(v: &Value) -> Result<Vec<HeaderValues>, String> {
    let entries = match v {
        Value::Map(entries) => entries.as_slice(),
        Value::Array(items) if items.is_empty() => &[],
        Value::Array(items) => {
            return Err(format!(
                "invalid header name \"1\": got number, expected string (array of {} values)",
                items.len()
            ))
        }
        other => return Err(format!("headers must be a table (got {})", lua_type(other))),
    };
    entries
        .iter()
        .map(|(k, v)| {
            let name = header_name(k)?;
            let values = header_values(&name, v, true)?;
            Ok((name, values))
        })
        .collect()
}

pub(super) fn set_headers(ctx: &mut PdkContext<'_>, args: &mut Args) -> Option<PdkOutcome> {
    match header_table_owned(args.take(0)) {
        Ok(headers) => {
            for (name, values) in headers {
                ctx.req.headers_mut().set_owned(name, values);
            }
            nil()
        }
        Err(e) => throw(e),
    }
}

/// [`header_table`] consuming the table.
fn header_table_owned(v: Value) -> Result<Vec<HeaderValues>, String> {
    let entries = match v {
        Value::Map(entries) => entries,
        Value::Array(items) if items.is_empty() => Vec::new(),
        other => return header_table(&other),
    };
    entries
        .into_iter()
        .map(|(k, v)| {
            let name = header_name_owned(k)?;
            let values = header_values_owned(&name, v, true)?;
            Ok((name, values))
        })
        .collect()
}

pub(super) fn add_header(ctx: &mut PdkContext<'_>, args: &mut Args) -> Option<PdkOutcome> {
    let allow_array = ctx.version != KongVersion::V3_4;
    let result = header_name_owned(args.take(0))
        .and_then(|name| header_values_owned(&name, args.take(1), allow_array).map(|values| (name, values)));
    match result {
        Ok((name, values)) => {
            for value in values {
                ctx.req.headers_mut().append(name.clone(), value);
            }
            nil()
        }
        Err(e) => throw(e),
    }
}

pub(super) fn clear_header(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    match as_bytes(args.get(0)) {
        Some(name) => {
            let name = String::from_utf8_lossy(name).into_owned();
            ctx.req.headers_mut().remove(&name);
            nil()
        }
        None => throw(format!("header name must be a string (got {})", lua_type(args.get(0)))),
    }
}

/// `kong.service.request.clear_query_arg(name)`: removes every occurrence of the argument
/// (its name compared after percent-decoding) from the query proxied upstream and keeps the
/// others in order. Later `kong.request.get_query*` calls see the change too (both read
/// `ngx.var.args`).
pub(super) fn clear_query_arg(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    let Some(name) = as_bytes(args.get(0)) else {
        return throw(format!("query argument name must be a string (got {})", lua_type(args.get(0))));
    };
    let kept: Vec<&str> = ctx
        .req
        .raw_query()
        .split('&')
        .filter(|part| {
            let key = part.split_once('=').map_or(*part, |(k, _)| k);
            super::request::unescape(key) != name
        })
        .collect();
    let query = kept.join("&");
    ctx.req.set_raw_query(query);
    nil()
}

/// `kong.service.request.set_raw_query(query)`: the upstream query string, as given (Kong
/// hands it to `ngx.req.set_uri_args`). Exists on every Kong 3.x.
pub(super) fn set_raw_query(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    match args.get(0) {
        v @ (Value::String(_) | Value::Binary(_)) => {
            let query = String::from_utf8_lossy(as_bytes(v).unwrap_or_default()).into_owned();
            ctx.req.set_raw_query(query);
            nil()
        }
        other => throw(format!("query must be a string (got {})", lua_type(other))),
    }
}
