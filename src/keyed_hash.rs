//! The keyed hash both credential caches are keyed by: `HMAC-SHA256(pepper, input)`, its first
//! 128 bits, with a random pepper drawn once per process (held by the services).
//!
//! Why keyed: neither a cache, nor a memory dump, nor a log line then holds an API key or a
//! token in plaintext, and the digests cannot be precomputed offline. Why 128 bits: still
//! keyed, and a collision among even billions of entries is out of reach (birthday bound
//! ≈ 2⁶⁴). The digest's own first 8 bytes serve as the hash-table hash (see
//! [`Digest`] users): nobody without the pepper can aim inputs at one bucket.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The first 128 bits of the keyed hash.
pub type Digest = [u8; 16];

/// The keyed hash of one process. A clone has the same pepper (hashing copies the prepared
/// HMAC state on the stack: no allocation, no lock).
#[derive(Clone)]
pub struct KeyedHash {
    mac: Hmac<Sha256>,
}

impl KeyedHash {
    /// A keyed hash with a fresh random pepper.
    pub fn random() -> KeyedHash {
        let pepper: [u8; 32] = rand::random();
        KeyedHash { mac: Hmac::new_from_slice(&pepper).expect("HMAC accepts any key length") }
    }

    /// The digest of `input`.
    pub fn digest(&self, input: &[u8]) -> Digest {
        self.digest_parts(&[input])
    }

    /// The digest of several inputs, each followed by a 0 byte (so that `("ab", "c")` and
    /// `("a", "bc")` differ).
    pub fn digest_parts(&self, parts: &[&[u8]]) -> Digest {
        let mut mac = self.mac.clone();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(&[0]);
            }
            mac.update(part);
        }
        let full = mac.finalize().into_bytes();
        let mut digest = [0; 16];
        digest.copy_from_slice(&full[..16]);
        digest
    }
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash(<pepper>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_keyed_per_value_and_distinct() {
        let h = KeyedHash::random();
        assert_eq!(h.digest(b"key-1"), h.clone().digest(b"key-1"), "a clone keeps the pepper");
        assert_ne!(h.digest(b"key-1"), h.digest(b"key-2"));
        assert_ne!(h.digest(b"key-1"), KeyedHash::random().digest(b"key-1"), "another pepper");
        // Not the plain SHA-256: the pepper is mixed in.
        use sha2::Digest as _;
        let plain: [u8; 32] = Sha256::digest(b"key-1").into();
        assert_ne!(h.digest(b"key-1")[..], plain[..16]);
        assert_eq!(h.digest_parts(&[b"key-1"]), h.digest(b"key-1"));
        assert_ne!(h.digest_parts(&[b"ab", b"c"]), h.digest_parts(&[b"a", b"bc"]));
    }
}
