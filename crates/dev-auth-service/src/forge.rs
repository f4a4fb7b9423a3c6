//! Attack tokens: what an attacker sends at `ghasi-jwt`, so that tests can prove each is refused.
//!
//! Why a separate module from token minting ([`crate::TokenSpec`]): minted tokens are *correctly signed* with
//! whatever claims a test wants; these are wrong at the header, key or signature level (`alg:
//! none`, HS256 keyed with the RSA public key, a signature by a key outside the JWKS, a forged kid,
//! a tampered payload, malformed structure). Every function takes a [`TokenSpec`] for the claims,
//! so the forgery is the only thing wrong with the token.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

use crate::keys::{random_kid, Alg, SigningKey};
use crate::state::Shared;
use crate::tokens::{build_claims, select_key, TokenSpec};

/// Forgery against one running service (see [`crate::DevAuthService::forge`]). Functions panic on
/// an invalid spec (unknown user), like [`crate::DevAuthService::mint`].
pub struct Forge {
    state: Arc<Shared>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn b64_json(v: &Value) -> String {
    b64(&serde_json::to_vec(v).expect("JSON"))
}

/// A key generated once per process per algorithm and never published by any service: signatures
/// by it are well-formed but verify against no JWKS.
fn throwaway(alg: Alg) -> &'static SigningKey {
    static KEYS: [OnceLock<SigningKey>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = &KEYS[Alg::ALL.iter().position(|a| *a == alg).expect("known alg")];
    slot.get_or_init(|| SigningKey::generate_with_kid(alg, format!("throwaway-{alg}")).expect("keygen"))
}

impl Forge {
    pub(crate) fn new(state: Arc<Shared>) -> Self {
        Forge { state }
    }

    fn claims(&self, spec: &TokenSpec) -> Value {
        build_claims(&self.state, spec).unwrap_or_else(|e| panic!("forge: {e:#}"))
    }

    fn current(&self, alg: Alg) -> Arc<SigningKey> {
        self.state.keys.read().current(alg)
    }

    /// `{"alg":"none"}` header (with the current RS256 kid), the spec's claims and an empty
    /// signature: `header.payload.`.
    pub fn alg_none(&self, spec: &TokenSpec) -> String {
        self.alg_none_spelled(spec, "none")
    }

    /// Like [`Forge::alg_none`] with another spelling of the algorithm (`"None"`, `"NONE"`, …).
    pub fn alg_none_spelled(&self, spec: &TokenSpec, alg: &str) -> String {
        let header = json!({"alg": alg, "typ": "JWT", "kid": self.current(Alg::RS256).kid()});
        format!("{}.{}.", b64_json(&header), b64_json(&self.claims(spec)))
    }

    /// Algorithm confusion: `alg: HS256`, `kid` of the current RS256 key, HMAC-SHA256 keyed with
    /// that key's public SPKI PEM bytes (what a verifier that feeds "the key for this kid" to
    /// whatever algorithm the header names would accept).
    pub fn hs256_with_public_key_pem(&self, spec: &TokenSpec) -> String {
        let key = self.current(Alg::RS256);
        let pem = key.public_key_pem().expect("RSA keys have a PEM");
        self.hs256_with_secret(spec, pem.as_bytes(), Some(key.kid()))
    }

    /// `alg: HS256` keyed with any non-empty `secret` (e.g. the JWK JSON), with the given header
    /// kid (jsonwebtoken refuses an empty HMAC key).
    pub fn hs256_with_secret(&self, spec: &TokenSpec, secret: &[u8], kid: Option<&str>) -> String {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        let key = EncodingKey::from_secret(secret).expect("a non-empty HS256 secret");
        jsonwebtoken::encode(&header, &self.claims(spec), &key).expect("HS256")
    }

    /// Bad signature: the kid of the current published key of the spec's alg (default RS256), but
    /// signed by a key that is in no JWKS.
    pub fn wrong_key(&self, spec: &TokenSpec) -> String {
        let alg = spec.alg.unwrap_or_default();
        let kid = self.current(alg).kid().to_owned();
        throwaway(alg).sign(Some(&kid), &self.claims(spec)).expect("sign")
    }

    /// A fresh random kid that no JWKS contains, properly signed by a key that is in no JWKS.
    /// Every call gives a new kid (for "flood of forged kids" tests).
    pub fn unknown_kid(&self, spec: &TokenSpec) -> String {
        let alg = spec.alg.unwrap_or_default();
        throwaway(alg).sign(Some(&random_kid(alg)), &self.claims(spec)).expect("sign")
    }

    /// Correctly signed by the current key of the spec's alg, but without `kid` in the header.
    pub fn without_kid(&self, spec: &TokenSpec) -> String {
        let (key, _) = select_key(&self.state, spec).unwrap_or_else(|e| panic!("forge: {e:#}"));
        key.sign(None, &self.claims(spec)).expect("sign")
    }

    /// A correctly signed token whose payload was then replaced (claim `account_id` set to
    /// `"acc_attacker"`), keeping the original header and signature.
    pub fn tampered_payload(&self, spec: &TokenSpec) -> String {
        let (key, kid) = select_key(&self.state, spec).unwrap_or_else(|e| panic!("forge: {e:#}"));
        let mut claims = self.claims(spec);
        let token = key.sign(kid.as_deref(), &claims).expect("sign");
        claims["account_id"] = "acc_attacker".into();
        let mut parts = token.split('.');
        let (header, _, sig) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
        format!("{header}.{}.{sig}", b64_json(&claims))
    }

    /// Key type confusion: header `alg: ES256` with the kid of the current RS256 key, signed by
    /// the current ES256 key (a valid ES256 signature, by a published key, under the wrong kid).
    pub fn alg_kid_mismatch(&self, spec: &TokenSpec) -> String {
        let rsa_kid = self.current(Alg::RS256).kid().to_owned();
        self.current(Alg::ES256).sign(Some(&rsa_kid), &self.claims(spec)).expect("sign")
    }
}

/// Structurally broken tokens, named: none of them is a JWS a verifier may accept.
pub fn malformed() -> Vec<(&'static str, String)> {
    let header = b64_json(&json!({"alg": "RS256", "typ": "JWT", "kid": "k"}));
    let payload = b64_json(&json!({"sub": "u", "account_id": "a", "exp": 4_000_000_000u64}));
    let sig = b64(&[7u8; 256]);
    vec![
        ("empty", String::new()),
        ("one_segment", "abcdef".into()),
        ("two_segments", format!("{header}.{payload}")),
        ("four_segments", format!("{header}.{payload}.{sig}.{sig}")),
        ("empty_segments", "..".into()),
        ("bad_base64", format!("{header}.{payload}.!!not*base64!!")),
        ("header_bad_base64", format!("%%%.{payload}.{sig}")),
        ("header_not_json", format!("{}.{payload}.{sig}", b64(b"not json"))),
        ("payload_not_json", format!("{header}.{}.{sig}", b64(b"not json"))),
        ("header_is_array", format!("{}.{payload}.{sig}", b64(b"[]"))),
        ("payload_is_string", format!("{header}.{}.{sig}", b64(b"\"claims\""))),
        ("alg_not_a_string", format!("{}.{payload}.{sig}", b64_json(&json!({"alg": 256, "kid": "k"})))),
        ("header_without_alg", format!("{}.{payload}.{sig}", b64_json(&json!({"kid": "k"})))),
        ("non_ascii", "é.é.é".into()),
        ("oversized", format!("{header}.{}.{sig}", "A".repeat(64 * 1024))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_tokens_are_rejected_by_jsonwebtoken() {
        let key = SigningKey::generate(Alg::RS256).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk().clone()).unwrap();
        let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let names: Vec<_> = malformed().into_iter().map(|(n, _)| n).collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names, unique);
        for (name, token) in malformed() {
            let res = jsonwebtoken::decode::<Value>(&token, &dk, &jsonwebtoken::Validation::default());
            assert!(res.is_err(), "{name} decoded");
        }
    }

    #[test]
    fn throwaway_keys_are_per_alg_and_stable() {
        assert_eq!(throwaway(Alg::ES256).alg(), Alg::ES256);
        assert!(std::ptr::eq(throwaway(Alg::EdDSA), throwaway(Alg::EdDSA)));
    }
}
