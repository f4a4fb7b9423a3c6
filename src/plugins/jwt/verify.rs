//! The proof: the signature check (jsonwebtoken, aws-lc-rs backend) and the claims that make an
//! identity. No I/O, no clock, no cache (a first RSA/EC check runs on the blocking pool).
//!
//! Why jsonwebtoken's own time checks are off: it reads the system clock, and every time
//! check must read `clock::unix_now()` (tests move that clock); `token.rs` does exp/nbf/iat
//! before any key lookup anyway. Here jsonwebtoken only checks that the header's `alg` is the
//! one we pinned, that the key's family matches it, and the signature.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::de::IgnoredAny;
use serde_json::Value;

use super::config::Policy;
use super::jwks::JwkKey;
use super::token::Token;
use super::Denial;
use crate::plugins::identity::Identity;
use crate::plugins::outcome::AuthError;

/// Identity values go into upstream headers: longer ones are refused, not truncated.
const MAX_CLAIM_BYTES: usize = 512;

/// [`verify_signature`] off the event loop for RSA and EC keys: a first RS256/ES256
/// verification costs tens to hundreds of µs, which on a shard would hold up every other
/// connection of that shard; the blocking pool's thread takes it instead. HMAC is cheaper
/// than the hand-off and stays inline. Only first verifications get here (the
/// verified-token cache answers the rest).
pub async fn verify_signature_aside(raw: &str, alg: Algorithm, key: &Arc<JwkKey>) -> Result<(), Denial> {
    let cheap = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    if cheap || tokio::runtime::Handle::try_current().is_err() {
        return verify_signature(raw, alg, key);
    }
    let (raw, key) = (raw.to_owned(), Arc::clone(key));
    tokio::task::spawn_blocking(move || verify_signature(&raw, alg, &key))
        .await
        .unwrap_or_else(|_| Err(Denial::new(AuthError::CredentialInvalid, "signature not verifiable")))
}

/// Checks `raw`'s signature with `key` under the pinned `alg`.
pub fn verify_signature(raw: &str, alg: Algorithm, key: &JwkKey) -> Result<(), Denial> {
    if !key.allows(alg) {
        return Err(Denial::new(AuthError::CredentialInvalid, "key type does not match alg"));
    }
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    match jsonwebtoken::decode::<IgnoredAny>(raw, &key.decoding, &validation) {
        Ok(_) => Ok(()),
        Err(e) => Err(Denial::new(
            AuthError::CredentialInvalid,
            match e.kind() {
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm => "key family does not match alg",
                _ => "signature not verifiable",
            },
        )),
    }
}

/// Non-empty, bounded, and free of control characters (no header injection upstream).
fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_CLAIM_BYTES && !s.chars().any(char::is_control)
}

fn required_string<'a>(token: &'a Token, name: &str, reason: &'static str) -> Result<&'a str, Denial> {
    match token.claims.get(name) {
        Some(Value::String(s)) if header_safe(s) => Ok(s),
        _ => Err(Denial::new(AuthError::TokenInvalid, reason)),
    }
}

/// An optional string claim: absent (or null) is fine, anything but a usable string is not.
fn optional_string<'a>(token: &'a Token, name: &str, reason: &'static str) -> Result<Option<&'a str>, Denial> {
    match token.claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if header_safe(s) => Ok(Some(s)),
        _ => Err(Denial::new(AuthError::TokenInvalid, reason)),
    }
}

/// The identity a verified token carries (docs/design.md#identity-contract), after `sub`,
/// `account_id`, the username claim, `jti` and roles are checked, and `required_roles` (403).
pub fn identity(token: &Token, policy: &Policy) -> Result<Identity, Denial> {
    let sub = required_string(token, "sub", "sub missing or not a string")?;
    let account_id = required_string(token, "account_id", "account_id missing or not a string")?;
    let username = optional_string(token, &policy.consumer_username_claim, "username claim not a string")?;
    let jti = optional_string(token, "jti", "jti not a string")?;
    let roles: Vec<&str> = match token.claims.get(&policy.roles_claim) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| r.as_str().filter(|r| header_safe(r)))
            .collect::<Option<_>>()
            .ok_or(Denial::new(AuthError::TokenInvalid, "roles not an array of strings"))?,
        Some(_) => return Err(Denial::new(AuthError::TokenInvalid, "roles not an array of strings")),
    };
    if !policy.required_roles.is_empty() {
        let has = |r: &String| roles.contains(&r.as_str());
        let ok = if policy.roles_all {
            policy.required_roles.iter().all(has)
        } else {
            policy.required_roles.iter().any(has)
        };
        if !ok {
            return Err(Denial::new(AuthError::InsufficientRole, "required role missing"));
        }
    }
    let mut groups = Vec::with_capacity(roles.len() + 1);
    groups.push(policy.authenticated_group.clone());
    for role in roles {
        if !groups.iter().any(|g| g == role) {
            groups.push(role.to_owned());
        }
    }
    Ok(Identity {
        account_id: account_id.to_owned(),
        user_id: Some(sub.to_owned()),
        consumer_username: username.unwrap_or(account_id).to_owned(),
        credential_identifier: jti.map(str::to_owned),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::jwt::config::Config;
    use crate::plugins::jwt::jwks::KeySet;
    use dev_auth_service::{Alg, SigningKey};
    use serde_json::json;

    fn policy(extra: &str) -> Policy {
        let json = format!(r#"{{"jwks_url":"http://a/j","issuer":"https://iss"{extra}}}"#);
        Config::parse(json.as_bytes()).unwrap().policy().unwrap()
    }

    fn claims() -> Value {
        json!({"iss": "https://iss", "sub": "usr_1", "account_id": "acc_1", "email": "a@b.test",
               "roles": ["admin", "billing"], "jti": "j-1", "iat": 1, "exp": 4_000_000_000u64})
    }

    struct Keys {
        keys: Vec<SigningKey>,
        set: KeySet,
    }

    fn keys() -> Keys {
        let keys: Vec<SigningKey> = Alg::ALL.iter().map(|a| SigningKey::generate(*a).unwrap()).collect();
        let doc = json!({"keys": keys.iter().map(|k| k.jwk().clone()).collect::<Vec<_>>()});
        let set = KeySet::parse(doc.to_string().as_bytes(), None).unwrap();
        Keys { keys, set }
    }

    fn alg(a: Alg) -> Algorithm {
        a.jwt_algorithm()
    }

    #[test]
    fn signatures_of_every_algorithm_verify_and_tampering_fails() {
        let k = keys();
        for key in &k.keys {
            let token = key.sign(Some(key.kid()), &claims()).unwrap();
            let jwk = k.set.get(key.kid()).unwrap();
            assert_eq!(verify_signature(&token, alg(key.alg()), jwk), Ok(()), "{}", key.alg());
            // Another key of the set does not verify it.
            let other = k.keys.iter().find(|o| o.alg() != key.alg()).unwrap();
            let wrong = verify_signature(&token, alg(key.alg()), k.set.get(other.kid()).unwrap());
            assert_eq!(wrong.unwrap_err().error, AuthError::CredentialInvalid);
            // A flipped payload byte breaks the signature.
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let mut c = claims();
            c["account_id"] = json!("acc_attacker");
            parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, c.to_string());
            let tampered = parts.join(".");
            assert_eq!(verify_signature(&tampered, alg(key.alg()), jwk).unwrap_err().reason, "bad signature");
        }
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        let k = keys();
        let rsa = &k.keys[0];
        let jwk = k.set.get(rsa.kid()).unwrap();
        let pem = rsa.public_key_pem().unwrap();
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some(rsa.kid().to_owned());
        let forged =
            jsonwebtoken::encode(&header, &claims(), &jsonwebtoken::EncodingKey::from_secret(pem.as_bytes()).unwrap())
                .unwrap();
        let r = verify_signature(&forged, Algorithm::HS256, jwk);
        assert_eq!(r.unwrap_err().reason, "key type does not match alg");
        // Even if the caller pinned RS256, the HS256 header does not match the pin.
        assert_eq!(verify_signature(&forged, Algorithm::RS256, jwk).unwrap_err().error, AuthError::CredentialInvalid);
    }

    fn token(c: Value) -> Token {
        let b = |v: &Value| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string());
        Token::parse(&format!("{}.{}.c2ln", b(&json!({"alg": "RS256", "kid": "k"})), b(&c))).unwrap()
    }

    #[test]
    fn identity_follows_the_contract() {
        let id = identity(&token(claims()), &policy("")).unwrap();
        assert_eq!(id.account_id, "acc_1");
        assert_eq!(id.user_id.as_deref(), Some("usr_1"));
        assert_eq!(id.consumer_username, "a@b.test");
        assert_eq!(id.credential_identifier.as_deref(), Some("j-1"));
        assert_eq!(id.groups, ["ghasi-authenticated", "admin", "billing"]);

        let mut c = claims();
        let o = c.as_object_mut().unwrap();
        o.remove("email");
        o.remove("jti");
        o.remove("roles");
        let id = identity(&token(c), &policy("")).unwrap();
        assert_eq!(id.consumer_username, "acc_1", "falls back to account_id");
        assert_eq!(id.credential_identifier, None);
        assert_eq!(id.groups, ["ghasi-authenticated"]);

        let id = identity(&token(claims()), &policy(r#","consumer_username_claim":"sub""#)).unwrap();
        assert_eq!(id.consumer_username, "usr_1");
    }

    #[test]
    fn bad_claims_are_token_invalid() {
        let p = policy("");
        for (name, value) in [
            ("sub", Value::Null),
            ("sub", json!(5)),
            ("sub", json!("")),
            ("account_id", json!(["a"])),
            ("account_id", json!("acc\r\nX-Evil: 1")),
            ("email", json!(1)),
            ("jti", json!(7)),
            ("roles", json!("admin")),
            ("roles", json!(["admin", 1])),
        ] {
            let mut c = claims();
            c[name] = value.clone();
            if value.is_null() {
                c.as_object_mut().unwrap().remove(name);
            }
            let r = identity(&token(c), &p);
            assert_eq!(r.unwrap_err().error, AuthError::TokenInvalid, "{name} = {value}");
        }
    }

    #[test]
    fn required_roles_any_and_all() {
        let any = policy(r#","required_roles":["owner","billing"]"#);
        assert!(identity(&token(claims()), &any).is_ok());
        let all = policy(r#","required_roles":["admin","owner"],"roles_match":"all""#);
        assert_eq!(identity(&token(claims()), &all).unwrap_err().error, AuthError::InsufficientRole);
        let all_ok = policy(r#","required_roles":["admin","billing"],"roles_match":"all""#);
        assert!(identity(&token(claims()), &all_ok).is_ok());
        let none = policy(r#","required_roles":["owner"]"#);
        let mut c = claims();
        c.as_object_mut().unwrap().remove("roles");
        assert_eq!(identity(&token(c), &none).unwrap_err().error, AuthError::InsufficientRole);
    }
}
