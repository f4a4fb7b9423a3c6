//! `kong.request.*`: reading the client's request.

use std::collections::HashMap;

use rmpv::Value;

use super::{type_name, Pdk, PdkError};
use crate::rpc::value;

pub struct Request<'a>(pub(super) &'a mut Pdk);

/// Request headers as Kong's multi-map (docs/protocol.md#pdk-results): lower-case names, every
/// value an array of raw byte strings (header values need not be UTF-8).
#[derive(Debug, Default, Clone)]
pub struct Headers(HashMap<String, Vec<Vec<u8>>>);

impl Headers {
    /// All values of a header; `name` must be lower-case.
    pub fn get_all(&self, name: &str) -> &[Vec<u8>] {
        self.0.get(name).map(Vec::as_slice).unwrap_or(&[])
    }
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn from_multimap(method: &'static str, data: Option<Value>) -> Result<Headers, PdkError> {
        let entries = match data {
            None => return Ok(Headers::default()),
            Some(Value::Map(entries)) => entries,
            Some(Value::Array(a)) if a.is_empty() => return Ok(Headers::default()),
            Some(other) => return Err(PdkError::UnexpectedType { method, expected: "map", found: type_name(&other) }),
        };
        let mut map = HashMap::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(name) = value::bytes(&k) else { continue };
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            let values = match v {
                Value::Array(items) => items.into_iter().filter_map(value::into_bytes).collect(),
                other => value::into_bytes(other).into_iter().collect(),
            };
            map.entry(name).or_insert_with(Vec::new).extend::<Vec<Vec<u8>>>(values);
        }
        Ok(Headers(map))
    }
}

impl Request<'_> {
    /// `kong.request.get_header(name)`: the first value, or `None`.
    pub async fn get_header(&mut self, name: &str) -> Result<Option<Vec<u8>>, PdkError> {
        let v = self.0.call("kong.request.get_header", vec![Value::from(name)]).await?;
        string_or_nil("kong.request.get_header", v)
    }

    /// `kong.request.get_headers()`: every header (Kong's default cap of 100 applies).
    pub async fn get_headers(&mut self) -> Result<Headers, PdkError> {
        let v = self.0.call("kong.request.get_headers", vec![]).await?;
        Headers::from_multimap("kong.request.get_headers", v)
    }

    /// `kong.request.get_raw_query()`: the query string as the client sent it (`""` if none).
    /// Bytes, not text: nginx passes raw non-UTF-8 bytes of a URL on as they are.
    pub async fn get_raw_query(&mut self) -> Result<Vec<u8>, PdkError> {
        let v = self.0.call("kong.request.get_raw_query", vec![]).await?;
        Ok(string_or_nil("kong.request.get_raw_query", v)?.unwrap_or_default())
    }
}

fn string_or_nil(method: &'static str, v: Option<Value>) -> Result<Option<Vec<u8>>, PdkError> {
    match v {
        None => Ok(None),
        Some(v) => {
            let found = type_name(&v);
            value::into_bytes(v).map(Some).ok_or(PdkError::UnexpectedType { method, expected: "string", found })
        }
    }
}
