//! Helpers shared by the integration tests: an HTTP client and a strict reference verifier that
//! checks a token against the JWKS the service serves over HTTP (the way `ghasi-jwt` will).

#![allow(dead_code)]

use dev_auth_service::{fixtures, DevAuthService, DevConfig};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

pub async fn service() -> DevAuthService {
    DevAuthService::start(DevConfig::for_tests()).await.expect("start")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap()
}

/// POSTs a lookup with the test service token.
pub async fn lookup(svc: &DevAuthService, key: &str) -> reqwest::Response {
    client()
        .post(svc.lookup_url())
        .bearer_auth(fixtures::SERVICE_TOKEN)
        .json(&json!({ "api_key": key }))
        .send()
        .await
        .expect("lookup request")
}

pub async fn fetch_jwks(svc: &DevAuthService) -> JwkSet {
    let resp = client().get(svc.jwks_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Strict verification: header must parse, name a kid that is in `jwks`, and an alg equal to
/// that JWK's alg; then signature, `exp`/`nbf` and `iss`.
pub fn verify(token: &str, jwks: &JwkSet, issuer: &str) -> Result<Value, String> {
    let header = decode_header(token).map_err(|e| format!("header: {e}"))?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk: &Jwk = jwks.find(&kid).ok_or(format!("kid {kid} not in JWKS"))?;
    let jwk_alg = jwk.common.key_algorithm.ok_or("jwk without alg")?;
    let alg: Algorithm = format!("{jwk_alg:?}").parse().map_err(|_| "jwk alg")?;
    if header.alg != alg {
        return Err(format!("header alg {:?} != jwk alg {alg:?}", header.alg));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("jwk: {e}"))?;
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.validate_nbf = true;
    validation.leeway = 0;
    decode::<Value>(token, &key, &validation).map(|d| d.claims).map_err(|e| format!("{e}"))
}
