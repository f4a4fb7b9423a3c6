//! Finding the presented API key with as few PDK calls as possible.
//!
//! The headers are read with one `kong.request.get_headers()`, never `get_header(name)`:
//! Kong's `get_header` answers only the *first* value of a repeated header, so
//! `x-api-key: <valid>` followed by `x-api-key: <other>` would authenticate with the first
//! and pass the second upstream unseen. `get_headers` costs the same one round trip and shows
//! every value (and every reserved header, for `reject` mode). With `key_in_query` one more
//! call reads `kong.request.get_raw_query()`, parsed by [`super::query`], the same parser
//! that removes the key afterwards.
//!
//! Several *different* keys (several headers, repeated headers, a comma-separated list,
//! header and query, a repeated query argument) are ambiguous; identical duplicates are one
//! key. Values are split on commas because a proxy in front may join repeated headers into
//! one `a, b` value; API keys never contain a comma.

use super::super::identity::{Reserved, RESERVED_HEADERS};
use super::query;
use crate::pdk::{Pdk, PdkError};
use crate::plugins::StartError;

/// Longest key sent to auth-service; longer values are invalid without a lookup.
pub const MAX_KEY_LEN: usize = 1024;

/// How this instance reads the request.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Lower-case header (and query parameter) names, deduplicated, in configured order.
    names: Vec<String>,
    key_in_query: bool,
}

/// What the request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub key: Found,
    /// A reserved header is present.
    pub spoofed: bool,
    /// The upstream query without any argument named like a key, when the query had one
    /// (to send back with `hide_credentials`); `None` when there is nothing to remove.
    pub query_without_keys: Option<Vec<u8>>,
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
    pub fn new(names: &[String], key_in_query: bool) -> Reader {
        let mut lower: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            let name = name.to_ascii_lowercase();
            if !lower.contains(&name) {
                lower.push(name);
            }
        }
        Reader { names: lower, key_in_query }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// PDK calls a read costs.
    pub fn calls(&self) -> usize {
        1 + usize::from(self.key_in_query)
    }

    pub async fn read(&self, pdk: &mut Pdk, reserved: &Reserved) -> Result<Presented, PdkError> {
        let mut keys = Keys::default();
        let headers = pdk.request().get_headers().await?;
        for name in &self.names {
            for value in headers.get_all(name) {
                keys.add(value);
            }
        }
        let spoofed = reserved.any_in(&headers);
        let mut query_without_keys = None;
        if self.key_in_query {
            let raw = pdk.request().get_raw_query().await?;
            for value in query::values(&raw, &self.names) {
                keys.add(&value);
            }
            query_without_keys = query::without(&raw, &self.names);
        }
        Ok(Presented { key: keys.finish(), spoofed, query_without_keys })
    }
}

/// The distinct keys seen so far.
#[derive(Default)]
struct Keys {
    distinct: Vec<Vec<u8>>,
}

impl Keys {
    /// Adds every comma-separated, trimmed, non-empty part of a raw value.
    fn add(&mut self, raw: &[u8]) {
        for part in raw.split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() {
                continue;
            }
            if !self.distinct.iter().any(|k| k == part) {
                self.distinct.push(part.to_vec());
            }
        }
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

/// Checks `key_names` at StartInstance (their characters are checked by the schema): none may
/// be a reserved header, which the plugin removes or writes itself.
pub fn check_names(names: &[String]) -> Result<(), StartError> {
    for name in names {
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(StartError::field("key_names", format!("{name:?} is a reserved identity header")));
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
    fn names_are_lower_cased_and_deduplicated_and_the_query_costs_one_read() {
        let dup = vec!["X-API-Key".to_string(), "x-api-key".to_string(), "ApiKey".to_string()];
        assert_eq!(Reader::new(&dup, false).names(), ["x-api-key", "apikey"]);
        assert_eq!(Reader::new(&dup, false).calls(), 1);
        assert_eq!(Reader::new(&dup, true).calls(), 2);
    }

    #[test]
    fn key_names_must_not_be_reserved_headers() {
        assert!(check_names(&["x-api-key".into(), "apikey".into()]).is_ok());
        for name in ["X-Account-Id", "X-Consumer-ID"] {
            let err = check_names(&[name.into()]).unwrap_err().to_string();
            assert!(err.contains("field 'key_names'") && err.contains("reserved identity header"), "{err}");
        }
    }
}
