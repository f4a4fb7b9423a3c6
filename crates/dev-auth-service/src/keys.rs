//! Signing keys for the three JWT algorithms `ghasi-jwt` accepts (RS256, ES256, EdDSA) and their
//! public JWKs.
//!
//! Why keys are generated at start instead of shipped: no private key, not even a dev one, ever
//! lands in the repository, and every run gets fresh `kid`s, which is what a test of "unknown kid"
//! or "rotation" needs anyway. P-256 and Ed25519 keys come from `ring` (already in the tree through
//! `jsonwebtoken`, which signs with it); `ring` cannot generate RSA keys, so RustCrypto's `rsa`
//! does that (2048 bits: the smallest size `ring` verifies).

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// RSA modulus size of generated keys.
pub const RSA_BITS: usize = 2048;

/// A JWS algorithm the dev auth-service signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit key, JWK `kty: RSA`.
    #[default]
    RS256,
    /// ECDSA P-256 with SHA-256, JWK `kty: EC`, `crv: P-256`.
    ES256,
    /// Ed25519, JWK `kty: OKP`, `crv: Ed25519`.
    EdDSA,
}

impl Alg {
    /// Every supported algorithm, in JWKS order.
    pub const ALL: [Alg; 3] = [Alg::RS256, Alg::ES256, Alg::EdDSA];

    /// The JOSE name (`"RS256"`, `"ES256"`, `"EdDSA"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The `jsonwebtoken` algorithm.
    pub fn jwt_algorithm(self) -> Algorithm {
        match self {
            Alg::RS256 => Algorithm::RS256,
            Alg::ES256 => Algorithm::ES256,
            Alg::EdDSA => Algorithm::EdDSA,
        }
    }

    /// The JWK `kty` of keys for this algorithm.
    pub fn kty(self) -> &'static str {
        match self {
            Alg::RS256 => "RSA",
            Alg::ES256 => "EC",
            Alg::EdDSA => "OKP",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Alg::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| anyhow!("unsupported alg {s:?} (expected RS256, ES256 or EdDSA)"))
    }
}

/// A private signing key with its `kid` and public JWK.
pub struct SigningKey {
    kid: String,
    alg: Alg,
    encoding: EncodingKey,
    jwk: Value,
    public_pem: Option<String>,
}

impl fmt::Debug for SigningKey {
    // Never prints private material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

impl SigningKey {
    /// Generates a fresh key for `alg` under a random `kid` (see [`random_kid`]).
    /// RSA generation takes some hundred milliseconds: call it off the async runtime.
    pub fn generate(alg: Alg) -> anyhow::Result<Self> {
        Self::generate_with_kid(alg, random_kid(alg))
    }

    /// Generates a fresh key for `alg` under the given `kid`.
    pub fn generate_with_kid(alg: Alg, kid: String) -> anyhow::Result<Self> {
        match alg {
            Alg::RS256 => rsa_key(kid),
            Alg::ES256 => ec_key(kid),
            Alg::EdDSA => ed_key(kid),
        }
    }

    /// The key id published in the JWKS and put in token headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The public JWK: `kid`, `kty`, `alg`, `use: "sig"` plus the key parameters.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), RSA keys only; the bytes an
    /// algorithm-confusion attacker uses as an HS256 secret.
    pub fn public_key_pem(&self) -> Option<&str> {
        self.public_pem.as_deref()
    }

    /// Signs `claims` as a compact JWS with this key's algorithm; `kid` goes into the header
    /// unless `None` (the key's own `kid` is *not* implied, so callers can lie about it).
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(self.alg.jwt_algorithm());
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).context("signing token")
    }
}

/// A fresh random key id, e.g. `es256-5f0c9a1be27d`.
pub fn random_kid(alg: Alg) -> String {
    let bytes: [u8; 6] = rand::thread_rng().gen();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", alg.as_str().to_ascii_lowercase())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_key(kid: String) -> anyhow::Result<SigningKey> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::traits::PublicKeyParts;

    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS).context("RSA keygen")?;
    let der = private.to_pkcs1_der().context("RSA key to PKCS#1")?;
    let public = private.to_public_key();
    let pem = public.to_public_key_pem(LineEnding::LF).context("RSA public key to PEM")?;
    let jwk = json!({
        "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": b64(&public.n().to_bytes_be()),
        "e": b64(&public.e().to_bytes_be()),
    });
    Ok(SigningKey {
        kid,
        alg: Alg::RS256,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk,
        public_pem: Some(pem),
    })
}

fn ec_key(kid: String) -> anyhow::Result<SigningKey> {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING as P256};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&P256, &rng).map_err(|e| anyhow!("P-256 keygen: {e}"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&P256, pkcs8.as_ref(), &rng).map_err(|e| anyhow!("P-256 key: {e}"))?;
    // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
    let point = pair.public_key().as_ref();
    anyhow::ensure!(point.len() == 65 && point[0] == 4, "unexpected P-256 public key encoding");
    let jwk = json!({
        "kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
        "x": b64(&point[1..33]),
        "y": b64(&point[33..65]),
    });
    Ok(SigningKey { kid, alg: Alg::ES256, encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk, public_pem: None })
}

fn ed_key(kid: String) -> anyhow::Result<SigningKey> {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| anyhow!("Ed25519 keygen: {e}"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| anyhow!("Ed25519 key: {e}"))?;
    let jwk = json!({
        "kty": "OKP", "kid": kid, "alg": "EdDSA", "use": "sig", "crv": "Ed25519",
        "x": b64(pair.public_key().as_ref()),
    });
    Ok(SigningKey { kid, alg: Alg::EdDSA, encoding: EncodingKey::from_ed_der(pkcs8.as_ref()), jwk, public_pem: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{jwk::Jwk, DecodingKey, Validation};

    #[test]
    fn every_alg_signs_a_token_its_own_jwk_verifies() {
        for alg in Alg::ALL {
            let key = SigningKey::generate(alg).unwrap();
            assert_eq!(key.jwk()["kty"], alg.kty());
            assert_eq!(key.jwk()["alg"], alg.as_str());
            assert_eq!(key.jwk()["use"], "sig");
            assert_eq!(key.jwk()["kid"], key.kid());
            let token = key.sign(Some(key.kid()), &json!({"sub": "x", "exp": 4_000_000_000u64})).unwrap();
            let jwk: Jwk = serde_json::from_value(key.jwk().clone()).unwrap();
            let decoding = DecodingKey::from_jwk(&jwk).unwrap();
            let data = jsonwebtoken::decode::<Value>(&token, &decoding, &Validation::new(alg.jwt_algorithm()))
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(data.claims["sub"], "x");
            assert_eq!(data.header.kid.as_deref(), Some(key.kid()));
        }
    }

    #[test]
    fn another_key_of_the_same_alg_does_not_verify() {
        let a = SigningKey::generate(Alg::ES256).unwrap();
        let b = SigningKey::generate(Alg::ES256).unwrap();
        let token = a.sign(Some(b.kid()), &json!({"exp": 4_000_000_000u64})).unwrap();
        let jwk: Jwk = serde_json::from_value(b.jwk().clone()).unwrap();
        let res = jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &Validation::new(Algorithm::ES256),
        );
        assert!(res.is_err());
    }

    #[test]
    fn alg_names_round_trip() {
        for alg in Alg::ALL {
            assert_eq!(alg.as_str().parse::<Alg>().unwrap(), alg);
            assert_eq!(serde_json::to_value(alg).unwrap(), alg.as_str());
        }
        assert!("HS256".parse::<Alg>().is_err());
        assert!("none".parse::<Alg>().is_err());
    }

    #[test]
    fn random_kids_differ() {
        assert_ne!(random_kid(Alg::RS256), random_kid(Alg::RS256));
        assert!(random_kid(Alg::EdDSA).starts_with("eddsa-"));
    }
}
