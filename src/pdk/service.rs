//! `kong.service.request.*`: shaping the request Kong sends upstream.

use rmpv::Value;

use super::{Pdk, PdkError};

pub struct ServiceRequest<'a>(pub(super) &'a mut Pdk);

/// A batch of header changes applied with one `kong.service.request.set_headers` round trip.
/// Removing is setting an empty array (`ngx.req.set_header(name, {})`), which works on Kong
/// 3.4 and 3.9 alike (docs/protocol.md#pdk-calls), so one call both writes and deletes.
/// Names are compared case-insensitively: the last change to a header wins.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderChanges(Vec<(String, Option<String>)>);

impl HeaderChanges {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.put(name, Some(value.to_owned()))
    }
    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.put(name, None)
    }
    fn put(&mut self, name: &str, value: Option<String>) -> &mut Self {
        match self.0.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
        self
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Names (as first given) with their new value, `None` for a removal. For tests and logs
    /// (values are identity data, never secrets).
    pub fn entries(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value.as_deref()))
    }

    /// The argument of `set_headers`: `{name: value}`, `{name: {}}` to remove.
    fn into_value(self) -> Value {
        let entry = |(name, value): (String, Option<String>)| {
            (Value::from(name), value.map_or_else(|| Value::Array(Vec::new()), Value::from))
        };
        Value::Map(self.0.into_iter().map(entry).collect())
    }
}

impl ServiceRequest<'_> {
    /// `kong.service.request.set_headers(map)`: one round trip for any number of changes.
    pub async fn set_headers(&mut self, changes: HeaderChanges) -> Result<(), PdkError> {
        self.0.call("kong.service.request.set_headers", vec![changes.into_value()]).await?;
        Ok(())
    }

    /// `kong.service.request.set_raw_query(query)`: the query string sent upstream (every
    /// Kong 3.x has it; `clear_query_arg` only 3.9+).
    pub async fn set_raw_query(&mut self, query: &[u8]) -> Result<(), PdkError> {
        let query = match std::str::from_utf8(query) {
            Ok(text) => Value::from(text),
            // A Lua string either way; bin keeps bytes that are not UTF-8 intact.
            Err(_) => Value::from(query),
        };
        self.0.call("kong.service.request.set_raw_query", vec![query]).await?;
        Ok(())
    }
}
