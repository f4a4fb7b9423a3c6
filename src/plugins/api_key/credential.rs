//! Finding the presented API key with as few PDK calls as possible (design.md §6).
//!
//! The read plan is fixed at StartInstance:
//! * one key name and `on_spoofed_identity_header: strip` → `kong.request.get_header(name)`
//!   (the cheapest call; spoofed identity headers are overwritten or removed by the success
//!   batch anyway);
//! * several key names, or `reject` (which must *see* the reserved headers) →
//!   `kong.request.get_headers()`, one call for everything;
//! * `key_in_query` adds exactly one call: `kong.request.get_query_arg(name)` for one name,
//!   `kong.request.get_query()` for several.
//!
//! Several *different* keys (several headers, repeated headers, a comma-separated list, header
//! and query) are ambiguous; identical duplicates are one key. Values are split on commas
//! because nginx may join repeated headers into one `a, b` value; API keys never contain a
//! comma. `get_header` returns a single value, so with one key name a repeated header is
//! detected only where nginx joins repeated headers (Kong 3.9's nginx does; 3.4's returns the
//! first). Configure `reject` or a second key name to always see every value.

use rmpv::Value;

use super::super::identity::{SpoofPolicy, RESERVED_HEADERS};
use crate::pdk::{Pdk, PdkError};

/// Longest key sent to auth-service; longer values are invalid without a lookup.
pub const MAX_KEY_LEN: usize = 1024;

/// How this instance reads the request.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Lower-case header (and query parameter) names, deduplicated, in configured order.
    names: Vec<String>,
    all_headers: bool,
    key_in_query: bool,
}

/// What the request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub key: Found,
    /// A reserved identity header is present (known only when all headers were read).
    pub spoofed: bool,
    /// Query parameters that carried the key (to remove upstream with `hide_credentials`).
    pub query_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    None,
    One(String),
    /// Several different keys.
    Ambiguous,
    /// A key that cannot be valid (not UTF-8, or longer than [`MAX_KEY_LEN`]).
    Unusable,
}

impl Reader {
    /// `names` must already be validated header names.
    pub fn new(names: &[String], key_in_query: bool, spoof: SpoofPolicy) -> Reader {
        let mut lower: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            let name = name.to_ascii_lowercase();
            if !lower.contains(&name) {
                lower.push(name);
            }
        }
        let all_headers = lower.len() > 1 || spoof == SpoofPolicy::Reject;
        Reader { names: lower, all_headers, key_in_query }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// PDK calls a read costs.
    pub fn calls(&self) -> usize {
        1 + usize::from(self.key_in_query)
    }

    pub async fn read(&self, pdk: &mut Pdk) -> Result<Presented, PdkError> {
        let mut keys = Keys::default();
        let mut spoofed = false;
        if self.all_headers {
            let headers = pdk.request().get_headers().await?;
            for name in &self.names {
                for value in headers.get_all(name) {
                    keys.add(value);
                }
            }
            spoofed = RESERVED_HEADERS.iter().any(|r| headers.contains(r));
        } else if let Some(value) = pdk.request().get_header(&self.names[0]).await? {
            keys.add(&value);
        }
        let mut query_names = Vec::new();
        if self.key_in_query {
            for (name, values) in self.read_query(pdk).await? {
                let before = keys.seen();
                for value in &values {
                    keys.add(value);
                }
                if keys.seen() > before {
                    query_names.push(name);
                }
            }
        }
        Ok(Presented { key: keys.finish(), spoofed, query_names })
    }

    /// The key names' query values, with one PDK call.
    async fn read_query(&self, pdk: &mut Pdk) -> Result<Vec<(String, Vec<Vec<u8>>)>, PdkError> {
        if let [name] = self.names.as_slice() {
            let value = pdk.request().get_query_arg(name).await?;
            return Ok(value.map(|v| vec![(name.clone(), vec![v])]).unwrap_or_default());
        }
        let query = pdk.call("kong.request.get_query", vec![]).await?;
        Ok(query_values(query, &self.names))
    }
}

/// Picks `names` out of `kong.request.get_query()`'s multi-map (`kong-protocol.md` §5.3:
/// every value an array of strings; a valueless flag an empty array). Query names are
/// case-sensitive in Kong; ours are matched case-insensitively, like headers.
fn query_values(query: Option<Value>, names: &[String]) -> Vec<(String, Vec<Vec<u8>>)> {
    let Some(Value::Map(entries)) = query else { return Vec::new() };
    let bytes = |v: &Value| -> Option<Vec<u8>> {
        match v {
            Value::String(s) => Some(s.as_bytes().to_vec()),
            Value::Binary(b) => Some(b.clone()),
            _ => None,
        }
    };
    let mut out: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for (k, v) in &entries {
        let Some(key) = bytes(k) else { continue };
        let Some(name) = names.iter().find(|n| n.as_bytes().eq_ignore_ascii_case(&key)) else { continue };
        let values: Vec<Vec<u8>> = match v {
            Value::Array(items) => items.iter().filter_map(bytes).collect(),
            other => bytes(other).into_iter().collect(),
        };
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, existing)) => existing.extend(values),
            None => out.push((name.clone(), values)),
        }
    }
    out
}

/// The distinct keys seen so far.
#[derive(Default)]
struct Keys {
    distinct: Vec<Vec<u8>>,
    /// Non-empty values seen (duplicates included).
    seen: usize,
}

impl Keys {
    /// Adds every comma-separated, trimmed, non-empty part of a raw value.
    fn add(&mut self, raw: &[u8]) {
        for part in raw.split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() {
                continue;
            }
            self.seen += 1;
            if !self.distinct.iter().any(|k| k == part) {
                self.distinct.push(part.to_vec());
            }
        }
    }

    fn seen(&self) -> usize {
        self.seen
    }

    fn finish(mut self) -> Found {
        match self.distinct.len() {
            0 => Found::None,
            1 => {
                let key = self.distinct.pop().unwrap_or_default();
                if key.len() > MAX_KEY_LEN {
                    return Found::Unusable;
                }
                String::from_utf8(key).map(Found::One).unwrap_or(Found::Unusable)
            }
            _ => Found::Ambiguous,
        }
    }
}

/// Checks `key_names` at StartInstance: header-name characters, and not an identity header
/// (the plugin writes those itself).
pub fn check_names(names: &[String]) -> Result<(), String> {
    for name in names {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if !name.chars().all(token) {
            return Err(format!("field 'key_names': {name:?} is not a valid header name"));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("field 'key_names': {name:?} is a reserved identity header"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(values: &[&str]) -> Found {
        let mut keys = Keys::default();
        for v in values {
            keys.add(v.as_bytes());
        }
        keys.finish()
    }

    #[test]
    fn identical_duplicates_are_one_key_and_different_keys_are_ambiguous() {
        assert_eq!(found(&[]), Found::None);
        assert_eq!(found(&["", " , "]), Found::None);
        assert_eq!(found(&["k1"]), Found::One("k1".into()));
        assert_eq!(found(&["k1", "k1"]), Found::One("k1".into()));
        assert_eq!(found(&["k1, k1"]), Found::One("k1".into()));
        assert_eq!(found(&[" k1 "]), Found::One("k1".into()));
        assert_eq!(found(&["k1", "k2"]), Found::Ambiguous);
        assert_eq!(found(&["k1, k2"]), Found::Ambiguous);
        assert_eq!(found(&[&"x".repeat(MAX_KEY_LEN + 1)]), Found::Unusable);
        let mut keys = Keys::default();
        keys.add(b"\xff\xfe");
        assert_eq!(keys.finish(), Found::Unusable);
    }

    #[test]
    fn the_plan_uses_one_header_read_only_when_that_is_enough() {
        let one = vec!["X-API-Key".to_string()];
        let two = vec!["x-api-key".to_string(), "X-Key".to_string()];
        assert!(!Reader::new(&one, false, SpoofPolicy::Strip).all_headers);
        assert!(Reader::new(&one, false, SpoofPolicy::Reject).all_headers);
        assert!(Reader::new(&two, false, SpoofPolicy::Strip).all_headers);
        assert_eq!(Reader::new(&two, true, SpoofPolicy::Strip).names(), ["x-api-key", "x-key"]);
        assert_eq!(Reader::new(&one, true, SpoofPolicy::Strip).calls(), 2);
        let dup = vec!["X-API-Key".to_string(), "x-api-key".to_string()];
        assert!(!Reader::new(&dup, false, SpoofPolicy::Strip).all_headers, "duplicates collapse");
    }

    #[test]
    fn query_values_are_picked_from_the_multimap() {
        let q = Value::Map(vec![
            (Value::from("ApiKey"), Value::Array(vec![Value::from("a"), Value::from("b")])),
            (Value::from("other"), Value::Array(vec![Value::from("x")])),
            (Value::from("flag"), Value::Array(vec![])),
        ]);
        let names = vec!["apikey".to_string(), "flag".to_string()];
        let got = query_values(Some(q), &names);
        assert_eq!(got, vec![("apikey".to_string(), vec![b"a".to_vec(), b"b".to_vec()]), ("flag".to_string(), vec![])]);
        assert!(query_values(None, &names).is_empty());
    }

    #[test]
    fn key_names_must_be_header_names_and_not_identity_headers() {
        assert!(check_names(&["x-api-key".into(), "apikey".into()]).is_ok());
        let err = check_names(&["x api key".into()]).unwrap_err();
        assert!(err.contains("field 'key_names'"), "{err}");
        let err = check_names(&["X-Account-Id".into()]).unwrap_err();
        assert!(err.contains("reserved identity header"), "{err}");
    }
}
