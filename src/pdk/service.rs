//! `kong.service.request.*`: shaping the request Kong sends upstream.

use rmpv::Value;

use super::{Pdk, PdkError};

pub struct ServiceRequest<'a>(pub(super) &'a mut Pdk);

/// A batch of header changes applied with one `kong.service.request.set_headers` round trip.
/// Removing is setting an empty array (`ngx.req.set_header(name, {})`), which works on Kong
/// 3.4 and 3.9 alike (docs/protocol.md#pdk-calls), so one call both writes and deletes.
#[derive(Debug, Default, Clone)]
pub struct HeaderChanges(Vec<(Value, Value)>);

impl HeaderChanges {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        self.put(name, Value::from(value))
    }
    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.put(name, Value::Array(Vec::new()))
    }
    fn put(&mut self, name: &str, value: Value) -> &mut Self {
        match self.0.iter_mut().find(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(name))) {
            Some(entry) => entry.1 = value,
            None => self.0.push((Value::from(name), value)),
        }
        self
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Names and values, for tests and logs (values are identity data, never secrets).
    pub fn entries(&self) -> &[(Value, Value)] {
        &self.0
    }
}

impl ServiceRequest<'_> {
    /// `kong.service.request.set_headers(map)`: one round trip for any number of changes.
    pub async fn set_headers(&mut self, changes: &HeaderChanges) -> Result<(), PdkError> {
        self.0.call("kong.service.request.set_headers", vec![Value::Map(changes.0.clone())]).await?;
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

    /// `kong.service.request.set_header(name, value)`.
    pub async fn set_header(&mut self, name: &str, value: &str) -> Result<(), PdkError> {
        self.0.call("kong.service.request.set_header", vec![Value::from(name), Value::from(value)]).await?;
        Ok(())
    }

    /// `kong.service.request.clear_header(name)`.
    pub async fn clear_header(&mut self, name: &str) -> Result<(), PdkError> {
        self.0.call("kong.service.request.clear_header", vec![Value::from(name)]).await?;
        Ok(())
    }
}
