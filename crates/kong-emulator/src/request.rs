//! The in-memory HTTP request the emulated PDK functions read and modify.
//!
//! In nginx, `kong.service.request.set_header` rewrites the request's own header list
//! (`ngx.req.set_header`), which is what is proxied upstream *and* what later
//! `kong.request.get_header` calls see. The model therefore keeps one mutable header list
//! (starting as the client's headers) plus an untouched copy of what the client sent, and
//! everything else a plugin can leave behind on the request: `kong.ctx.shared`, the
//! authenticated consumer/credential, response headers and log lines.

use crate::headers::HeaderMap;
use rmpv::Value;
use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

/// Who wrote a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The plugin, through `kong.log.*`.
    Plugin,
    /// The emulated Kong itself (RPC errors, "could not find pdk method", …).
    Kong,
}

/// One line of Kong's error log produced while handling this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub source: LogSource,
    /// nginx level name: `emerg`, `alert`, `crit`, `err`, `warn`, `notice`, `info`, `debug`.
    pub level: String,
    pub message: String,
}

/// A client request as Kong sees it in the access phase.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    scheme: Cow<'static, str>,
    path: String,
    raw_query: String,
    client_headers: HeaderMap,
    headers: HeaderMap,
    client_ip: Cow<'static, str>,
    forwarded_ip: Option<String>,
    body: Vec<u8>,
    start_time: f64,
    route: Option<Value>,
    service: Option<Value>,
    vars: Vec<(String, String)>,
    ctx_shared: Vec<(Value, Value)>,
    ngx_ctx: Vec<(Value, Value)>,
    consumer: Option<Value>,
    credential: Option<Value>,
    response_headers: HeaderMap,
    logs: Vec<LogLine>,
}

impl Request {
    /// A request with no headers, no query, no body, from 127.0.0.1.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        let start_time =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| (d.as_millis() as f64) / 1000.0).unwrap_or(0.0);
        Request {
            method: method.into(),
            scheme: Cow::Borrowed("http"),
            path: path.into(),
            raw_query: String::new(),
            client_headers: HeaderMap::new(),
            headers: HeaderMap::new(),
            client_ip: Cow::Borrowed("127.0.0.1"),
            forwarded_ip: None,
            body: Vec::new(),
            start_time,
            route: None,
            service: None,
            vars: Vec::new(),
            ctx_shared: Vec::new(),
            ngx_ctx: Vec::new(),
            consumer: None,
            credential: None,
            response_headers: HeaderMap::new(),
            logs: Vec::new(),
        }
    }

    /// Sets the raw query string (without `?`).
    pub fn with_query(mut self, raw_query: impl Into<String>) -> Self {
        self.raw_query = raw_query.into();
        self
    }

    /// Adds a client header line (the value may be any bytes).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let (name, value) = (name.into(), value.into());
        self.client_headers.append(name.clone(), value.clone());
        self.headers.append(name, value);
        self
    }

    pub fn with_client_ip(mut self, ip: impl Into<String>) -> Self {
        self.client_ip = Cow::Owned(ip.into());
        self
    }

    /// What `kong.client.get_forwarded_ip` returns (defaults to the client ip).
    pub fn with_forwarded_ip(mut self, ip: impl Into<String>) -> Self {
        self.forwarded_ip = Some(ip.into());
        self
    }

    pub fn with_scheme(mut self, scheme: impl Into<String>) -> Self {
        self.scheme = Cow::Owned(scheme.into());
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// `ngx.req.start_time()` in seconds.
    pub fn with_start_time(mut self, seconds: f64) -> Self {
        self.start_time = seconds;
        self
    }

    /// The route entity `kong.router.get_route` returns.
    pub fn with_route(mut self, route: Value) -> Self {
        self.route = Some(route);
        self
    }

    /// The service entity `kong.router.get_service` returns.
    pub fn with_service(mut self, service: Value) -> Self {
        self.service = Some(service);
        self
    }

    /// An nginx variable for `kong.nginx.get_var` (besides the built-in ones).
    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.push((name.into(), value.into()));
        self
    }

    // ---- read accessors -----------------------------------------------------------------

    pub fn method(&self) -> &str {
        &self.method
    }
    pub fn scheme(&self) -> &str {
        &self.scheme
    }
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn raw_query(&self) -> &str {
        &self.raw_query
    }
    pub fn body(&self) -> &[u8] {
        &self.body
    }
    pub fn client_ip(&self) -> &str {
        &self.client_ip
    }
    pub fn forwarded_ip(&self) -> &str {
        self.forwarded_ip.as_deref().unwrap_or(&self.client_ip)
    }
    pub fn start_time(&self) -> f64 {
        self.start_time
    }
    pub fn route(&self) -> Option<&Value> {
        self.route.as_ref()
    }
    pub fn service(&self) -> Option<&Value> {
        self.service.as_ref()
    }

    /// The headers exactly as the client sent them.
    pub fn client_headers(&self) -> &HeaderMap {
        &self.client_headers
    }

    /// The current request headers: the client's, modified by `kong.service.request.*`.
    /// This is what goes upstream.
    pub fn upstream_headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// First upstream value of `name` as text.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.headers.get_str(name)
    }

    /// `kong.ctx.shared` as (key, value) pairs in insertion order.
    pub fn ctx_shared(&self) -> &[(Value, Value)] {
        &self.ctx_shared
    }

    /// `kong.ctx.shared[key]` for a string key.
    pub fn ctx_shared_get(&self, key: &str) -> Option<&Value> {
        lookup(&self.ctx_shared, &Value::from(key))
    }

    /// Sets `kong.ctx.shared[key]` from outside (e.g. a Lua plugin that ran earlier).
    pub fn ctx_shared_set(&mut self, key: impl Into<Value>, value: Value) {
        store(&mut self.ctx_shared, key.into(), value);
    }

    /// The consumer passed to `kong.client.authenticate`.
    pub fn consumer(&self) -> Option<&Value> {
        self.consumer.as_ref()
    }

    /// The credential passed to `kong.client.authenticate`.
    pub fn credential(&self) -> Option<&Value> {
        self.credential.as_ref()
    }

    /// Headers set with `kong.response.set_header`/`add_header` for the client response.
    pub fn response_headers(&self) -> &HeaderMap {
        &self.response_headers
    }

    /// Everything logged while handling this request.
    pub fn logs(&self) -> &[LogLine] {
        &self.logs
    }

    /// Log lines written by the plugin at `level`.
    pub fn plugin_logs(&self, level: &str) -> Vec<&str> {
        self.logs
            .iter()
            .filter(|l| l.source == LogSource::Plugin && l.level == level)
            .map(|l| l.message.as_str())
            .collect()
    }

    // ---- mutation by the PDK (crate-internal) --------------------------------------------

    pub(crate) fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }
    /// The query proxied upstream (`ngx.var.args`), which `kong.request.get_query*` also read.
    pub(crate) fn set_raw_query(&mut self, raw_query: String) {
        self.raw_query = raw_query;
    }
    pub(crate) fn response_headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.response_headers
    }
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    pub(crate) fn ctx_shared_raw_get(&self, key: &Value) -> Option<&Value> {
        lookup(&self.ctx_shared, key)
    }
    pub(crate) fn ctx_shared_raw_set(&mut self, key: Value, value: Value) {
        store(&mut self.ctx_shared, key, value);
    }
    pub(crate) fn ngx_ctx_get(&self, key: &Value) -> Option<&Value> {
        lookup(&self.ngx_ctx, key)
    }
    pub(crate) fn ngx_ctx_set(&mut self, key: Value, value: Value) {
        store(&mut self.ngx_ctx, key, value);
    }
    pub(crate) fn authenticate(&mut self, consumer: Option<Value>, credential: Option<Value>) {
        self.consumer = consumer;
        self.credential = credential;
    }
    pub(crate) fn log(&mut self, source: LogSource, level: &str, message: impl Into<String>) {
        self.logs.push(LogLine { source, level: level.into(), message: message.into() });
    }
}

fn lookup<'a>(table: &'a [(Value, Value)], key: &Value) -> Option<&'a Value> {
    table.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Lua assignment: nil deletes the key.
fn store(table: &mut Vec<(Value, Value)>, key: Value, value: Value) {
    let pos = table.iter().position(|(k, _)| *k == key);
    match (pos, value.is_nil()) {
        (Some(i), true) => {
            table.remove(i);
        }
        (Some(i), false) => table[i].1 = value,
        (None, true) => {}
        (None, false) => table.push((key, value)),
    }
}
