//! `kong.request.*`: reads of the current request.
//!
//! `get_header` goes through `ngx.var.http_<name>` (dashes and underscores equivalent, case
//! ignored). For a repeated header nginx ≥1.23 (Kong 3.9's OpenResty) joins all values with
//! `", "`, and Kong 3.9 undoes that (`kong.tools.http.get_header`): when the variable holds
//! `", "` it answers the first value of `ngx.req.get_headers()` instead. Older nginx (Kong
//! 3.4) returns the first line itself. So on both, a repeated header reads as its first
//! value, except `Cookie` (joined with `"; "`) and, on 3.4, `X-Forwarded-For` (joined with
//! `", "`). The multi-map getters return what `ngx.req.get_headers`/`get_uri_args` build,
//! then Kong's `fix_mmap` shaping.

use super::lua::{as_bytes, lua_type, nil, throw, Args, PdkContext, PdkOutcome};
use crate::version::KongVersion;
use crate::wire::{lua_number, lua_string, StepData};
use rmpv::Value;

/// Default and bounds of the `max` argument of `get_headers`/`get_query`.
const DEFAULT_MAX: f64 = 100.0;
const MAX_MAX: f64 = 1000.0;

pub(super) fn get_header(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    let Some(name) = as_bytes(args.get(0)) else {
        return throw("header name must be a string");
    };
    // `ngx.var.http_<name>`: case and `-`/`_` do not matter. (An invalid UTF-8 name is
    // compared after lossy conversion, as text.)
    let lossy;
    let wanted: &[u8] = match std::str::from_utf8(name) {
        Ok(_) => name,
        Err(_) => {
            lossy = String::from_utf8_lossy(name).into_owned();
            lossy.as_bytes()
        }
    };
    let mut values = ctx
        .req
        .upstream_headers()
        .lines()
        .iter()
        .filter(|l| same_variable(l.name.as_bytes(), wanted))
        .map(|l| l.value.as_slice());
    let Some(first) = values.next() else {
        return nil();
    };
    let separator: &[u8] = if same_variable(wanted, b"cookie") {
        b"; "
    } else if same_variable(wanted, b"x_forwarded_for") || ctx.version >= KongVersion::V3_9 {
        b", "
    } else {
        // Kong 3.4: the first value.
        return Some(PdkOutcome::Return(StepData::Value(lua_string(first))));
    };
    let mut joined = first.to_vec();
    for value in values {
        joined.extend_from_slice(separator);
        joined.extend_from_slice(value);
    }
    if ctx.version >= KongVersion::V3_9 && joined.windows(2).any(|w| w == b", ") {
        // `kong.tools.http.get_header`: `ngx.req.get_headers()[name]`, first value if several.
        return Some(PdkOutcome::Return(StepData::Value(lua_string(first))));
    }
    Some(PdkOutcome::Return(StepData::Value(lua_string(&joined))))
}

/// Whether two header names are the same nginx variable `http_<name>` (ASCII case folded,
/// `-` and `_` equivalent).
fn same_variable(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| if c == b'-' { b'_' } else { c.to_ascii_lowercase() };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| fold(x) == fold(y))
}

/// Validates the optional `max` argument (`max_headers`/`max_args`).
fn max_arg(v: &Value, what: &str) -> Result<usize, String> {
    if v.is_nil() {
        return Ok(DEFAULT_MAX as usize);
    }
    let Some(n) = lua_number(v) else {
        return Err(format!("{what} must be a number"));
    };
    if n < 1.0 {
        return Err(format!("{what} must be >= 1"));
    }
    if n > MAX_MAX {
        return Err(format!("{what} must be <= {MAX_MAX}"));
    }
    Ok(n as usize)
}

pub(super) fn get_headers(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    let max = match max_arg(args.get(0), "max_headers") {
        Ok(m) => m,
        Err(e) => return throw(e),
    };
    let grouped = ctx.req.upstream_headers().grouped_lowercase(max);
    let entries: Vec<(Value, Value)> = grouped
        .into_iter()
        .map(|(name, values)| (Value::from(name), Value::Array(values.into_iter().map(lua_string).collect())))
        .collect();
    Some(PdkOutcome::Return(multimap(entries)))
}

/// `fix_mmap` result: an explicit empty map when empty.
fn multimap(entries: Vec<(Value, Value)>) -> StepData {
    if entries.is_empty() {
        StepData::EmptyMap
    } else {
        StepData::Value(Value::Map(entries))
    }
}

/// One query argument as `ngx.req.get_uri_args` sees it: `None` for a valueless flag.
type QueryArg = (Vec<u8>, Option<Vec<u8>>);

/// Parses a raw query like `ngx.req.get_uri_args(max)`: `&`-separated, `+` is a space,
/// percent-decoded, empty keys skipped, `a` alone is the flag `true`.
fn parse_query(raw: &str, max: usize) -> Vec<QueryArg> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .take(max)
        .filter_map(|part| {
            let (k, v) = match part.split_once('=') {
                Some((k, v)) => (unescape(k), Some(unescape(v))),
                None => (unescape(part), None),
            };
            (!k.is_empty()).then_some((k, v))
        })
        .collect()
}

pub(super) fn unescape(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && hex_val(bytes[i + 1]).is_some() && hex_val(bytes[i + 2]).is_some() => {
                out.push(hex_val(bytes[i + 1]).unwrap_or(0) * 16 + hex_val(bytes[i + 2]).unwrap_or(0));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Groups parsed arguments into the Lua table `get_uri_args` returns:
/// name → string | true | array of those.
fn query_table(args: Vec<QueryArg>) -> Vec<(Vec<u8>, Vec<Value>)> {
    let mut out: Vec<(Vec<u8>, Vec<Value>)> = Vec::new();
    for (k, v) in args {
        let value = match v {
            Some(v) => lua_string(&v),
            None => Value::Boolean(true),
        };
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some((_, values)) => values.push(value),
            None => out.push((k, vec![value])),
        }
    }
    out
}

pub(super) fn get_query(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    let max = match max_arg(args.get(0), "max_args") {
        Ok(m) => m,
        Err(e) => return throw(e),
    };
    let table = query_table(parse_query(ctx.req.raw_query(), max));
    let entries = table
        .into_iter()
        .map(|(k, mut values)| {
            let shaped = if values.len() > 1 {
                // A repeated argument is already a Lua array; fix_mmap leaves it alone.
                Value::Array(values)
            } else {
                match values.remove(0) {
                    Value::Boolean(true) => Value::Array(Vec::new()),
                    single => Value::Array(vec![single]),
                }
            };
            (lua_string(&k), shaped)
        })
        .collect();
    Some(PdkOutcome::Return(multimap(entries)))
}

pub(super) fn get_query_arg(ctx: &mut PdkContext<'_>, args: &Args) -> Option<PdkOutcome> {
    let Some(name) = as_bytes(args.get(0)) else {
        return throw(format!("query argument name must be a string (got {})", lua_type(args.get(0))));
    };
    let table = query_table(parse_query(ctx.req.raw_query(), DEFAULT_MAX as usize));
    match table.into_iter().find(|(k, _)| k.as_slice() == name) {
        Some((_, mut values)) => Some(PdkOutcome::Return(StepData::Value(values.remove(0)))),
        None => nil(),
    }
}

/// `ngx.var.host`: the Host header without port, lower-cased.
pub(super) fn get_host(ctx: &mut PdkContext<'_>) -> Option<PdkOutcome> {
    let host = ctx
        .req
        .upstream_headers()
        .get_str("host")
        .map(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('[') {
                Some(rest) => format!("[{}", rest.split_inclusive(']').next().unwrap_or(rest)),
                None => h.split(':').next().unwrap_or_default().to_string(),
            }
        })
        .unwrap_or_else(|| "localhost".into());
    Some(PdkOutcome::Return(StepData::Value(Value::from(host))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_follows_get_uri_args() {
        let parsed = query_table(parse_query("a=1&b&a=2&c=&=x&d=%41+b&&", 100));
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0].0, b"a");
        assert_eq!(parsed[0].1, vec![Value::from("1"), Value::from("2")]);
        assert_eq!(parsed[1].1, vec![Value::Boolean(true)]);
        assert_eq!(parsed[2].1, vec![Value::from("")]);
        assert_eq!(parsed[3].1, vec![Value::from("A b")]);
    }
}
