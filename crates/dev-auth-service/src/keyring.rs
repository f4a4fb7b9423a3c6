//! The service's key ring: which keys exist, which one is current per algorithm, which are
//! published in the JWKS.
//!
//! Why keys are kept after they leave the JWKS: a test of "token signed by a key that was rotated
//! out" must still be able to sign with that key, by `kid`. Only published keys appear in
//! `/.well-known/jwks.json`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::keys::{Alg, SigningKey};

struct Entry {
    key: Arc<SigningKey>,
    published: bool,
}

/// Every key the service has generated, in generation order.
pub struct KeyRing {
    entries: Vec<Entry>,
    current: HashMap<Alg, Arc<SigningKey>>,
}

impl KeyRing {
    /// A ring with one fresh, published, current key per algorithm. Blocking (RSA keygen).
    pub fn generate() -> anyhow::Result<Self> {
        let mut ring = KeyRing { entries: Vec::new(), current: HashMap::new() };
        for alg in Alg::ALL {
            ring.install(SigningKey::generate(alg)?, true);
        }
        Ok(ring)
    }

    /// The key that signs new tokens of `alg`.
    pub fn current(&self, alg: Alg) -> Arc<SigningKey> {
        self.current[&alg].clone()
    }

    /// Any key this ring has ever held, published or not.
    pub fn get(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.entries.iter().find(|e| e.key.kid() == kid).map(|e| e.key.clone())
    }

    /// Whether `kid` is in the served JWKS.
    pub fn is_published(&self, kid: &str) -> bool {
        self.entries.iter().any(|e| e.published && e.key.kid() == kid)
    }

    /// Kids of the served JWKS, in JWKS order.
    pub fn published_kids(&self) -> Vec<String> {
        self.entries.iter().filter(|e| e.published).map(|e| e.key.kid().to_owned()).collect()
    }

    /// The JWKS document: `{"keys": [...]}` with every published key.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self.entries.iter().filter(|e| e.published).map(|e| e.key.jwk().clone()).collect();
        json!({ "keys": keys })
    }

    /// Makes `new` the current key of its algorithm and publishes it. The previous current key of
    /// that algorithm stays published when `keep_old`, else it leaves the JWKS (but stays
    /// available for signing by kid). Returns the new kid.
    pub fn rotate(&mut self, new: SigningKey, keep_old: bool) -> String {
        let alg = new.alg();
        let old = self.current.get(&alg).map(|k| k.kid().to_owned());
        let kid = self.install(new, true);
        if let (Some(old), false) = (old, keep_old) {
            self.set_published(&old, false);
        }
        kid
    }

    /// Adds or removes a key from the JWKS without changing which key is current. Returns false
    /// for an unknown kid.
    pub fn set_published(&mut self, kid: &str, published: bool) -> bool {
        match self.entries.iter_mut().find(|e| e.key.kid() == kid) {
            Some(e) => {
                e.published = published;
                true
            }
            None => false,
        }
    }

    fn install(&mut self, key: SigningKey, published: bool) -> String {
        let key = Arc::new(key);
        let kid = key.kid().to_owned();
        self.current.insert(key.alg(), key.clone());
        self.entries.push(Entry { key, published });
        kid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_with_one_published_key_per_alg() {
        let ring = KeyRing::generate().unwrap();
        let jwks = ring.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 3);
        for alg in Alg::ALL {
            let cur = ring.current(alg);
            assert!(ring.is_published(cur.kid()));
            assert!(keys.iter().any(|k| k["kid"] == cur.kid() && k["alg"] == alg.as_str()));
        }
    }

    #[test]
    fn rotation_keeps_or_drops_the_old_key() {
        let mut ring = KeyRing::generate().unwrap();
        let first = ring.current(Alg::ES256).kid().to_owned();
        let second = ring.rotate(SigningKey::generate(Alg::ES256).unwrap(), true);
        assert_eq!(ring.current(Alg::ES256).kid(), second);
        assert!(ring.is_published(&first) && ring.is_published(&second));
        let third = ring.rotate(SigningKey::generate(Alg::ES256).unwrap(), false);
        assert!(!ring.is_published(&second), "old key must leave the JWKS without keep_old");
        assert!(ring.is_published(&first), "only the previous current key leaves");
        assert!(ring.is_published(&third));
        assert!(ring.get(&second).is_some(), "rotated-out keys stay usable for forging");
        assert_eq!(ring.published_kids().len(), 4);
        // Other algorithms are untouched.
        assert!(ring.is_published(ring.current(Alg::RS256).kid()));
    }
}
