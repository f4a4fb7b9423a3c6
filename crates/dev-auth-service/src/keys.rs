//! Signing keys for the three JWT algorithms `ghasi-jwt` accepts (RS256, ES256, EdDSA) and their
//! public JWKs.
//!
//! Why keys are generated at start instead of shipped: no private key, not even a dev one, ever
//! lands in the repository, and every run gets fresh `kid`s, which is what a test of "unknown kid"
//! or "rotation" needs anyway. All three kinds come from `aws-lc-rs`, the library `jsonwebtoken`
//! signs and verifies with (its `aws_lc_rs` backend), so no second crypto library, and no
//! RustCrypto `rsa` (RUSTSEC-2023-0071), is needed; RSA keys are 2048 bits, the smallest size
//! the verifier accepts.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngExt;
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
    let bytes: [u8; 6] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", alg.as_str().to_ascii_lowercase())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa_key(kid: String) -> anyhow::Result<SigningKey> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::KeyPair as _;

    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|e| anyhow!("RSA keygen: {e}"))?;
    let pkcs8: Pkcs8V1Der = pair.as_der().map_err(|e| anyhow!("RSA key to PKCS#8: {e}"))?;
    let public = pair.public_key();
    let spki: PublicKeyX509Der = public.as_der().map_err(|e| anyhow!("RSA public key to SPKI: {e}"))?;
    let jwk = json!({
        "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": b64(public.modulus().big_endian_without_leading_zero()),
        "e": b64(public.exponent().big_endian_without_leading_zero()),
    });
    Ok(SigningKey {
        kid,
        alg: Alg::RS256,
        encoding: EncodingKey::from_rsa_der(pkcs1_of_pkcs8(pkcs8.as_ref())?),
        jwk,
        public_pem: Some(pem("PUBLIC KEY", spki.as_ref())),
    })
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (RFC 5208): aws-lc-rs exports
/// RSA private keys as PKCS#8 only, and jsonwebtoken's `from_rsa_der` takes PKCS#1.
/// `PrivateKeyInfo ::= SEQUENCE { version INTEGER, algorithm SEQUENCE, privateKey OCTET STRING, … }`.
fn pkcs1_of_pkcs8(der: &[u8]) -> anyhow::Result<&[u8]> {
    let (info, _) = der_field(der, 0x30)?;
    let (_version, rest) = der_field(info, 0x02)?;
    let (_algorithm, rest) = der_field(rest, 0x30)?;
    let (private_key, _attributes) = der_field(rest, 0x04)?;
    Ok(private_key)
}

/// One DER field with tag `tag` at the start of `der`: its contents and what follows it.
fn der_field(der: &[u8], tag: u8) -> anyhow::Result<(&[u8], &[u8])> {
    let [found, first, rest @ ..] = der else { anyhow::bail!("PKCS#8: truncated") };
    anyhow::ensure!(*found == tag, "PKCS#8: tag {found:#04x} where {tag:#04x} belongs");
    let (len, rest) = match *first {
        short @ 0..=0x7f => (usize::from(short), rest),
        long => {
            let n = usize::from(long & 0x7f);
            anyhow::ensure!((1..=4).contains(&n) && rest.len() >= n, "PKCS#8: bad length");
            (rest[..n].iter().fold(0usize, |len, b| len << 8 | usize::from(*b)), &rest[n..])
        }
    };
    anyhow::ensure!(rest.len() >= len, "PKCS#8: truncated");
    Ok(rest.split_at(len))
}

/// PEM armour (RFC 7468): base64 in lines of 64 characters.
fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn ec_key(kid: String) -> anyhow::Result<SigningKey> {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING as P256};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&P256, &rng).map_err(|e| anyhow!("P-256 keygen: {e}"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&P256, pkcs8.as_ref()).map_err(|e| anyhow!("P-256 key: {e}"))?;
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
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
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
    fn the_rsa_public_pem_is_the_jwks_key() {
        let key = SigningKey::generate(Alg::RS256).unwrap();
        let pem = key.public_key_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let spki = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
        let public = aws_lc_rs::rsa::PublicKey::from_der(&spki).unwrap();
        assert_eq!(b64(public.modulus().big_endian_without_leading_zero()), key.jwk()["n"]);
        assert_eq!(b64(public.exponent().big_endian_without_leading_zero()), key.jwk()["e"]);
        assert!(SigningKey::generate(Alg::ES256).unwrap().public_key_pem().is_none());
    }

    #[test]
    fn a_broken_pkcs8_document_is_an_error_not_a_panic() {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der: Pkcs8V1Der = pair.as_der().unwrap();
        let pkcs1 = pkcs1_of_pkcs8(der.as_ref()).unwrap();
        assert!(aws_lc_rs::rsa::KeyPair::from_der(pkcs1).is_ok());
        for cut in [0, 1, 2, 10, der.as_ref().len() - 1] {
            assert!(pkcs1_of_pkcs8(&der.as_ref()[..cut]).is_err(), "cut at {cut}");
        }
        assert!(pkcs1_of_pkcs8(&[0x04, 0x00]).is_err());
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
