//! The verified-token cache: a token whose signature was checked is not checked again.
//!
//! Why: an RSA or ECDSA verification costs tens of microseconds of CPU on the node that also
//! runs nginx, while clients repeat the same token for its whole lifetime. The services hold
//! one (every instance, every Kong worker); it holds the *parsed* token plus the key that
//! verified it, never the token text: entries are keyed by the services' keyed hash of
//! (jwks_url, token).
//!
//! What a hit skips is only parsing and the signature. Every request still runs the cheap
//! checks (so expiry, issuer and the instance's own rules apply on every use) and still asks
//! the JWKS cache for the kid: a hit counts only if the JWKS still serves the very key that
//! verified it. So an entry stops working as soon as its kid leaves the JWKS or the JWKS itself
//! expires, and never outlives the token's `exp` (expired entries are dropped on sight).
//!
//! **Storage: the API-key cache's map (`plugins::lru`), not one of its own, and not
//! `moka`.** Bounded by [`CAPACITY`] entries, evicting the least recently used of a sample.
//! It replaced a second hand-written map (a `HashMap` plus an insertion-order queue,
//! evicting the oldest), so that both credential caches share one storage, one eviction rule
//! and one keyed hash. Why not `moka`, which the design card names: measured with
//! `ghasi-bench cache-memory` (bench/results.md), moka holds an entry for about three times
//! the memory of this storage (142 against 466 bytes per key at 1,000,000 keys: an allocation
//! and its own bookkeeping per entry), for a cache whose hit is one table probe under a lock
//! held for nanoseconds either way. An entry here is a 48-byte slot (digest, use counter, two
//! `Arc`s and `exp`) in one `Vec`: no allocation per entry beyond the parsed token the
//! request made anyway.

use std::sync::Arc;

use parking_lot::Mutex;

use super::jwks::JwkKey;
use super::token::Token;
use crate::keyed_hash::{Digest, KeyedHash};
use crate::plugins::lru::Lru;

/// Entries kept at most (a parsed token is well under 2 KiB).
pub const CAPACITY: usize = 10_000;

pub type CacheKey = Digest;

struct Entry {
    token: Arc<Token>,
    key: Arc<JwkKey>,
    /// The token's `exp`: the entry is useless afterwards.
    exp: i64,
}

pub struct VerifiedCache {
    map: Mutex<Lru<Entry>>,
}

/// The cache key of `token` as verified against `jwks_url`, under the services' keyed hash.
pub fn cache_key(keyed: &KeyedHash, jwks_url: &str, token: &str) -> CacheKey {
    keyed.digest_parts(&[jwks_url.as_bytes(), token.as_bytes()])
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> VerifiedCache {
        VerifiedCache { map: Mutex::new(Lru::new(super::NAME, "verified_tokens", capacity)) }
    }

    /// The parsed token and the key that verified it, unless absent or expired at `now`.
    pub fn get(&self, key: &CacheKey, now: i64) -> Option<(Arc<Token>, Arc<JwkKey>)> {
        let mut map = self.map.lock();
        match map.get(key) {
            Some(e) if now < e.exp => Some((e.token.clone(), e.key.clone())),
            Some(_) => {
                map.remove(key, drop);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token (not one that is already expired or has no `exp`).
    pub fn insert(&self, key: CacheKey, token: Arc<Token>, verified_by: Arc<JwkKey>, now: i64) {
        let Some(exp) = token.exp().filter(|exp| now < *exp) else { return };
        // Entries replaced or evicted are dropped after the lock (their `Arc`s may be last).
        let mut dropped = Vec::new();
        self.map.lock().insert(key, Entry { token, key: verified_by, exp }, |old| dropped.push(old));
        drop(dropped);
    }

    /// Forgets an entry (its kid left the JWKS).
    pub fn remove(&self, key: &CacheKey) {
        self.map.lock().remove(key, drop);
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::jwk::Jwk;

    fn key() -> Arc<JwkKey> {
        let jwk: Jwk = serde_json::from_value(serde_json::json!(
            {"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ))
        .unwrap();
        Arc::new(JwkKey::from_jwk(jwk).unwrap())
    }

    fn token(exp: i64) -> Arc<Token> {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","kid":"d1"}"#);
        let p = URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        Arc::new(Token::parse(&format!("{h}.{p}.c2ln")).unwrap())
    }

    /// The tests' keys, under one keyed hash.
    struct Keys(KeyedHash);

    impl Keys {
        fn new() -> Keys {
            Keys(KeyedHash::random())
        }
        fn key(&self, url: &str, token: &str) -> CacheKey {
            cache_key(&self.0, url, token)
        }
    }

    #[test]
    fn keys_depend_on_url_and_token_and_hide_the_token() {
        let c = Keys::new();
        assert_eq!(c.key("u", "t"), c.key("u", "t"));
        assert_ne!(c.key("u", "t"), c.key("u", "t2"));
        assert_ne!(c.key("u", "t"), c.key("u2", "t"));
        assert_ne!(c.key("u", "t"), c.key("u\0t", ""), "the parts are delimited");
        assert_ne!(c.key("u", "t"), Keys::new().key("u", "t"), "per-process random key");
    }

    #[test]
    fn an_entry_is_a_48_byte_slot() {
        // The module doc's figure (64-bit).
        assert_eq!(std::mem::size_of::<crate::plugins::lru::Slot<Entry>>(), 48);
    }

    #[test]
    fn entries_expire_with_the_token() {
        let c = VerifiedCache::new(4);
        let k = Keys::new().key("u", "t");
        c.insert(k, token(100), key(), 50);
        assert!(c.get(&k, 99).is_some());
        assert!(c.get(&k, 100).is_none());
        assert!(c.is_empty(), "dropped on sight");
        c.insert(k, token(100), key(), 100);
        assert!(c.is_empty(), "already expired: not stored");
    }

    #[test]
    fn capacity_evicts_the_least_recently_used() {
        let (c, k) = (VerifiedCache::new(3), Keys::new());
        let keys: Vec<_> = (0..5).map(|i| k.key("u", &i.to_string())).collect();
        for k in &keys {
            c.insert(*k, token(100), key(), 0);
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&keys[0], 0).is_none() && c.get(&keys[1], 0).is_none());
        assert!(c.get(&keys[4], 0).is_some());
        c.remove(&keys[4]);
        assert!(c.get(&keys[4], 0).is_none());
        for i in 0..20 {
            c.insert(k.key("v", &i.to_string()), token(100), key(), 0);
        }
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn a_token_removed_and_verified_again_is_not_evicted_for_its_old_place() {
        let (c, k) = (VerifiedCache::new(3), Keys::new());
        let keys: Vec<_> = (0..4).map(|i| k.key("u", &i.to_string())).collect();
        c.insert(keys[0], token(100), key(), 0);
        c.remove(&keys[0]); // its kid left the JWKS …
        c.insert(keys[1], token(100), key(), 0);
        c.insert(keys[0], token(100), key(), 0); // … and came back: now the newest
        c.insert(keys[2], token(100), key(), 0);
        c.insert(keys[3], token(100), key(), 0); // full: evicts the oldest, keys[1]
        assert!(c.get(&keys[0], 0).is_some(), "re-inserted entry must keep its new place");
        assert!(c.get(&keys[1], 0).is_none());
        assert_eq!(c.len(), 3);
    }
}
