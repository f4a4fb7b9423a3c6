//! The verified-token cache: a token whose signature was checked is not checked again.
//!
//! Why: an RSA or ECDSA verification costs tens of microseconds of CPU on the node that also
//! runs nginx, while clients repeat the same token for its whole lifetime. The cache is
//! process-wide (every instance, every Kong worker) and holds the *parsed* token plus the key
//! that verified it, never the token text: entries are keyed by HMAC-SHA256 under a random
//! per-process key of (jwks_url, token).
//!
//! What a hit skips is only parsing and the signature. Every request still runs the cheap
//! checks (so expiry, issuer and the instance's own rules apply on every use) and still asks
//! the JWKS cache for the kid: a hit counts only if the JWKS still serves the very key that
//! verified it. So an entry stops working as soon as its kid leaves the JWKS or the JWKS itself
//! expires, and never outlives the token's `exp` (expired entries are dropped on sight).
//! Bounded by [`CAPACITY`] entries, evicting the oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock};

use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use rand::Rng;
use sha2::Sha256;

use super::jwks::JwkKey;
use super::token::Token;

/// Entries kept at most (a parsed token is well under 2 KiB).
pub const CAPACITY: usize = 10_000;

pub type CacheKey = [u8; 32];

struct Entry {
    token: Arc<Token>,
    key: Arc<JwkKey>,
    /// The token's `exp`: the entry is useless afterwards.
    exp: i64,
    /// When it was inserted (a counter), to tell its place in `order` from a stale one.
    seq: u64,
}

pub struct VerifiedCache {
    hash_key: [u8; 32],
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<CacheKey, Entry>,
    /// Insertion order, for eviction. May hold keys already removed, or removed and inserted
    /// again: a position counts only if its `seq` is the entry's current one.
    order: VecDeque<(CacheKey, u64)>,
    next_seq: u64,
}

/// The process-wide cache.
pub fn global() -> &'static VerifiedCache {
    static CACHE: LazyLock<VerifiedCache> = LazyLock::new(|| VerifiedCache::new(CAPACITY));
    &CACHE
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> VerifiedCache {
        let mut hash_key = [0u8; 32];
        rand::rng().fill_bytes(&mut hash_key);
        VerifiedCache { hash_key, capacity: capacity.max(1), inner: Mutex::new(Inner::default()) }
    }

    /// The cache key of `token` as verified against `jwks_url`.
    pub fn key(&self, jwks_url: &str, token: &str) -> CacheKey {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.hash_key).expect("HMAC takes any key length");
        mac.update(jwks_url.as_bytes());
        mac.update(&[0]);
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The parsed token and the key that verified it, unless absent or expired at `now`.
    pub fn get(&self, key: &CacheKey, now: i64) -> Option<(Arc<Token>, Arc<JwkKey>)> {
        let mut inner = self.inner.lock();
        match inner.map.get(key) {
            Some(e) if now < e.exp => Some((e.token.clone(), e.key.clone())),
            Some(_) => {
                inner.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token (not one that is already expired or has no `exp`).
    pub fn insert(&self, key: CacheKey, token: Arc<Token>, verified_by: Arc<JwkKey>, now: i64) {
        let Some(exp) = token.exp().filter(|exp| now < *exp) else { return };
        let mut inner = self.inner.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.map.insert(key, Entry { token, key: verified_by, exp, seq });
        inner.order.push_back((key, seq));
        let mut evicted = 0;
        while inner.map.len() > self.capacity {
            let Some((oldest, seq)) = inner.order.pop_front() else { break };
            if inner.map.get(&oldest).is_some_and(|e| e.seq == seq) {
                inner.map.remove(&oldest);
                evicted += 1;
            }
        }
        let m = crate::metrics::global();
        let labels = crate::metrics::CacheNameLabels { plugin: super::NAME, cache: "verified_tokens" };
        if evicted > 0 {
            m.cache_evictions.get_or_create(&labels).inc_by(evicted);
        }
        m.cache_entries.get_or_create(&labels).set(inner.map.len() as i64);
        // Keys removed by `remove`/`get` linger in `order`; compact now and then.
        if inner.order.len() > 2 * self.capacity {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(k, seq)| map.get(k).is_some_and(|e| e.seq == *seq));
        }
    }

    /// Forgets an entry (its kid left the JWKS).
    pub fn remove(&self, key: &CacheKey) {
        let mut inner = self.inner.lock();
        inner.map.remove(key);
        let labels = crate::metrics::CacheNameLabels { plugin: super::NAME, cache: "verified_tokens" };
        crate::metrics::global().cache_entries.get_or_create(&labels).set(inner.map.len() as i64);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
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

    #[test]
    fn keys_depend_on_url_and_token_and_hide_the_token() {
        let c = VerifiedCache::new(4);
        assert_eq!(c.key("u", "t"), c.key("u", "t"));
        assert_ne!(c.key("u", "t"), c.key("u", "t2"));
        assert_ne!(c.key("u", "t"), c.key("u2", "t"));
        assert_ne!(c.key("u", "t"), VerifiedCache::new(4).key("u", "t"), "per-process random key");
    }

    #[test]
    fn entries_expire_with_the_token() {
        let c = VerifiedCache::new(4);
        let k = c.key("u", "t");
        c.insert(k, token(100), key(), 50);
        assert!(c.get(&k, 99).is_some());
        assert!(c.get(&k, 100).is_none());
        assert!(c.is_empty(), "dropped on sight");
        c.insert(k, token(100), key(), 100);
        assert!(c.is_empty(), "already expired: not stored");
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let c = VerifiedCache::new(3);
        let keys: Vec<_> = (0..5).map(|i| c.key("u", &i.to_string())).collect();
        for k in &keys {
            c.insert(*k, token(100), key(), 0);
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&keys[0], 0).is_none() && c.get(&keys[1], 0).is_none());
        assert!(c.get(&keys[4], 0).is_some());
        c.remove(&keys[4]);
        assert!(c.get(&keys[4], 0).is_none());
        for i in 0..20 {
            c.insert(c.key("v", &i.to_string()), token(100), key(), 0);
        }
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn a_token_removed_and_verified_again_is_not_evicted_for_its_old_place() {
        let c = VerifiedCache::new(3);
        let keys: Vec<_> = (0..4).map(|i| c.key("u", &i.to_string())).collect();
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
