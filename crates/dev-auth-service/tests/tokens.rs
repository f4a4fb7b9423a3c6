//! Minted tokens verify against the served JWKS for every algorithm; rotation; every forged
//! token fails the strict verifier (and, where it matters, would pass a naive one).

mod common;

use common::{fetch_jwks, service, verify};
use dev_auth_service::{fixtures::*, forge, Alg, TokenSpec, DEFAULT_ISSUER};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

#[tokio::test]
async fn minted_tokens_verify_for_all_three_algs() {
    let svc = service().await;
    let jwks = fetch_jwks(&svc).await;
    for alg in Alg::ALL {
        let token = svc.mint(&TokenSpec::for_user(USER_ALICE).alg(alg));
        let claims = verify(&token, &jwks, DEFAULT_ISSUER).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(claims["sub"], USER_ALICE);
        assert_eq!(claims["account_id"], ACCOUNT_ACME);
        assert_eq!(claims["email"], EMAIL_ALICE);
        assert_eq!(claims["roles"], serde_json::json!(["admin", "billing"]));
        assert!(claims["jti"].is_string());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(svc.current_kid(alg).as_str()));
    }
}

#[tokio::test]
async fn claim_faults_are_caught_by_standard_validation() {
    let svc = service().await;
    let jwks = fetch_jwks(&svc).await;
    let ok = |spec: TokenSpec| verify(&svc.mint(&spec), &jwks, DEFAULT_ISSUER);
    assert!(ok(TokenSpec::for_user(USER_BOB)).is_ok());
    assert!(ok(TokenSpec::for_user(USER_BOB).ttl_secs(-120)).unwrap_err().contains("Expired"));
    assert!(ok(TokenSpec::for_user(USER_BOB).not_before_in(600)).unwrap_err().contains("Immature"));
    assert!(ok(TokenSpec::for_user(USER_BOB).iss("https://evil.test")).unwrap_err().contains("Issuer"));
    assert!(ok(TokenSpec::for_user(USER_BOB).without("exp")).is_err());
    // Signature-valid tokens with claim problems the plugin must catch itself.
    let claims = ok(TokenSpec::for_user(USER_BOB).without("sub").without("account_id")).unwrap();
    assert!(claims.get("sub").is_none() && claims.get("account_id").is_none());
    let ten_years = 10 * 365 * 86_400;
    let claims = ok(TokenSpec::for_user(USER_BOB).ttl_secs(ten_years)).unwrap();
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), ten_years);
    // jsonwebtoken rejects an `aud` when the validation expects none.
    assert!(ok(TokenSpec::for_user(USER_BOB).aud("other")).unwrap_err().contains("Audience"));
    let anon = ok(TokenSpec::default()).unwrap();
    assert!(anon.get("sub").is_none());
}

#[tokio::test]
async fn rotation_with_and_without_keeping_the_old_key() {
    let svc = service().await;
    let old_kid = svc.current_kid(Alg::ES256);
    let old_token = svc.mint(&TokenSpec::for_user(USER_ALICE).alg(Alg::ES256));

    let new_kid = svc.rotate(Alg::ES256, true).await;
    assert_ne!(new_kid, old_kid);
    assert_eq!(svc.current_kid(Alg::ES256), new_kid);
    let jwks = fetch_jwks(&svc).await;
    assert_eq!(jwks.keys.len(), 4);
    assert!(verify(&old_token, &jwks, DEFAULT_ISSUER).is_ok(), "old kid kept");
    let new_token = svc.mint(&TokenSpec::for_user(USER_ALICE).alg(Alg::ES256));
    assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().kid.unwrap(), new_kid);
    assert!(verify(&new_token, &jwks, DEFAULT_ISSUER).is_ok());

    let newest = svc.rotate(Alg::ES256, false).await;
    let jwks = fetch_jwks(&svc).await;
    assert!(jwks.find(&new_kid).is_none(), "previous key dropped");
    assert!(jwks.find(&newest).is_some());
    assert!(verify(&new_token, &jwks, DEFAULT_ISSUER).unwrap_err().contains("not in JWKS"));
    // A rotated-out key can still sign by kid (for "token of a retired key" tests).
    let retired = svc.mint(&TokenSpec::for_user(USER_ALICE).kid(new_kid.clone()));
    assert!(verify(&retired, &jwks, DEFAULT_ISSUER).is_err());
    assert!(svc.set_published(&new_kid, true));
    assert!(verify(&retired, &fetch_jwks(&svc).await, DEFAULT_ISSUER).is_ok());

    // RSA rotation (slow keygen runs off the runtime).
    let rs = svc.rotate(Alg::RS256, false).await;
    assert!(svc.is_published(&rs));
}

#[tokio::test]
async fn kid_choices() {
    let svc = service().await;
    let jwks = fetch_jwks(&svc).await;
    let unknown = svc.mint(&TokenSpec::for_user(USER_ALICE).kid("kid-from-nowhere"));
    assert!(verify(&unknown, &jwks, DEFAULT_ISSUER).unwrap_err().contains("not in JWKS"));
    let no_kid = svc.mint(&TokenSpec::for_user(USER_ALICE).omit_kid());
    assert_eq!(verify(&no_kid, &jwks, DEFAULT_ISSUER).unwrap_err(), "no kid");
    let ed = svc.mint(&TokenSpec::for_user(USER_ALICE).kid(svc.current_kid(Alg::EdDSA)));
    assert_eq!(jsonwebtoken::decode_header(&ed).unwrap().alg, Algorithm::EdDSA);
    assert!(verify(&ed, &jwks, DEFAULT_ISSUER).is_ok());
    assert!(svc.try_mint(&TokenSpec::for_user("usr_nobody")).is_err());
}

#[tokio::test]
async fn forged_tokens_fail_strict_verification() {
    let svc = service().await;
    let jwks = fetch_jwks(&svc).await;
    let spec = TokenSpec::for_user(USER_ALICE);
    let f = svc.forge();
    let cases = [
        ("alg_none", f.alg_none(&spec)),
        ("alg_None", f.alg_none_spelled(&spec, "None")),
        ("hs256_pem", f.hs256_with_public_key_pem(&spec)),
        ("wrong_key_rs", f.wrong_key(&spec)),
        ("wrong_key_es", f.wrong_key(&spec.clone().alg(Alg::ES256))),
        ("wrong_key_ed", f.wrong_key(&spec.clone().alg(Alg::EdDSA))),
        ("unknown_kid", f.unknown_kid(&spec)),
        ("without_kid", f.without_kid(&spec)),
        ("tampered", f.tampered_payload(&spec)),
        ("alg_kid_mismatch", f.alg_kid_mismatch(&spec)),
    ];
    for (name, token) in &cases {
        assert!(verify(token, &jwks, DEFAULT_ISSUER).is_err(), "{name} verified");
    }
    for (name, token) in forge::malformed() {
        assert!(verify(&token, &jwks, DEFAULT_ISSUER).is_err(), "{name} verified");
    }
    // The control: the same spec minted normally verifies.
    assert!(verify(&svc.mint(&spec), &jwks, DEFAULT_ISSUER).is_ok());
}

#[tokio::test]
async fn forgeries_are_real_attacks() {
    let svc = service().await;
    let jwks = fetch_jwks(&svc).await;
    let spec = TokenSpec::for_user(USER_ALICE);
    let f = svc.forge();

    // Algorithm confusion: a naive verifier that feeds "the key for this kid" (its PEM) to the
    // algorithm the header names accepts it.
    let confused = f.hs256_with_public_key_pem(&spec);
    let header = jsonwebtoken::decode_header(&confused).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(header.kid.as_deref(), Some(svc.current_kid(Alg::RS256).as_str()));
    let pem = svc.public_key_pem(&header.kid.unwrap()).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let naive = jsonwebtoken::decode::<Value>(
        &confused,
        &DecodingKey::from_secret(pem.as_bytes()).unwrap(),
        &Validation::new(Algorithm::HS256),
    );
    assert!(naive.is_ok(), "{naive:?}");
    assert!(svc.public_key_pem(&svc.current_kid(Alg::ES256)).is_none());

    // alg none: header says none, signature empty.
    let none = f.alg_none(&spec);
    assert!(none.ends_with('.'));
    assert!(jsonwebtoken::decode_header(&none).is_err(), "jsonwebtoken has no 'none'");

    // Unknown kid is a different kid every time, and signed properly (non-empty signature).
    let (a, b) = (f.unknown_kid(&spec), f.unknown_kid(&spec));
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_ne!(kid(&a), kid(&b));
    assert!(jwks.find(&kid(&a)).is_none());

    // Key-type confusion carries a genuine ES256 signature by the published EC key.
    let mismatch = f.alg_kid_mismatch(&spec);
    let ec = jwks.find(&svc.current_kid(Alg::ES256)).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[DEFAULT_ISSUER]);
    assert!(jsonwebtoken::decode::<Value>(&mismatch, &DecodingKey::from_jwk(ec).unwrap(), &v).is_ok());
    assert_eq!(kid(&mismatch), svc.current_kid(Alg::RS256));

    // Tampered payload: only the payload differs from a valid token's structure.
    let tampered = f.tampered_payload(&spec);
    let err = verify(&tampered, &jwks, DEFAULT_ISSUER).unwrap_err();
    assert!(err.contains("InvalidSignature"), "{err}");
}
