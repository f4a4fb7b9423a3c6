//! Finding the token in the request, parsing it without trusting it, and the cheap checks on
//! its header and claims.
//!
//! Why the cheap checks come before any key lookup: every check here is pure CPU on data the
//! client sent, while a key lookup may cost an auth-service round trip (an unknown `kid`
//! triggers a JWKS refresh). Running them first means a forged token that is expired, from the
//! wrong issuer or with a disallowed `alg` never reaches the network
//! (docs/design.md#checks-cheapest-first). Nothing here proves anything about the token; only
//! `verify.rs` does.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::config::Policy;
use super::Denial;
use crate::plugins::outcome::AuthError;

/// Longer tokens are refused unparsed (nginx's default header buffer is 8 KiB anyway).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A `kid` is an opaque map key; anything longer or non-printable is refused
/// (docs/design.md#checks-cheapest-first).
pub const MAX_KID_BYTES: usize = 128;

// ---- extraction -------------------------------------------------------------------------

/// Where the token came from, so `hide_credentials` removes the right header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Authorization,
    Cookie,
}

/// What the request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    Nothing,
    One {
        token: String,
        source: Source,
    },
    /// Several different tokens: which one the upstream would use is anyone's guess, so none
    /// is accepted (docs/design.md#checks-cheapest-first). Identical repeats count as one.
    Ambiguous,
}

/// Bearer tokens in `Authorization` values. A value may hold several comma-separated
/// credentials (`Bearer a, Bearer b`): a proxy folding repeated lines produces exactly that.
/// Other schemes (Basic, ApiKey) are not ours and are ignored.
pub fn bearer_tokens<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    let mut tokens = Vec::new();
    for value in values {
        let value = String::from_utf8_lossy(value);
        for part in value.split(',') {
            let part = part.trim_matches(|c: char| c.is_ascii_whitespace());
            let (scheme, rest) = match part.find(|c: char| c.is_ascii_whitespace()) {
                Some(i) => (&part[..i], part[i..].trim_matches(|c: char| c.is_ascii_whitespace())),
                None => (part, ""),
            };
            if scheme.eq_ignore_ascii_case("bearer") {
                // An empty `Bearer` is a presented-but-broken credential, not an absent one.
                tokens.push(rest.to_owned());
            }
        }
    }
    tokens
}

/// Values of the configured token cookies in `Cookie` header values (RFC 6265 §5.4 syntax;
/// names are case-sensitive; a quoted value is unquoted).
pub fn cookie_tokens<'a>(values: impl IntoIterator<Item = &'a [u8]>, names: &[String]) -> Vec<String> {
    let mut tokens = Vec::new();
    for value in values {
        let value = String::from_utf8_lossy(value);
        for pair in value.split(';') {
            let Some((name, v)) = pair.split_once('=') else { continue };
            if names.iter().any(|n| n == name.trim()) {
                let v = v.trim();
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                tokens.push(v.to_owned());
            }
        }
    }
    tokens
}

/// The `Cookie` header with the token cookies taken out (for `hide_credentials`); `None` when
/// nothing else is left, which removes the header.
pub fn cookie_header_without<'a>(values: impl IntoIterator<Item = &'a [u8]>, names: &[String]) -> Option<String> {
    let mut kept = Vec::new();
    for value in values {
        let value = String::from_utf8_lossy(value);
        for pair in value.split(';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
            if !names.iter().any(|n| n == name) {
                kept.push(pair.to_owned());
            }
        }
    }
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Collapses the candidates: the `Authorization` header wins; cookies are read only without
/// one (`cookie_names` documents this).
pub fn choose(header_tokens: Vec<String>, cookie_tokens: Vec<String>) -> Presented {
    let (tokens, source) =
        if header_tokens.is_empty() { (cookie_tokens, Source::Cookie) } else { (header_tokens, Source::Authorization) };
    let mut tokens = tokens.into_iter();
    let Some(first) = tokens.next() else { return Presented::Nothing };
    if tokens.any(|t| t != first) {
        return Presented::Ambiguous;
    }
    Presented::One { token: first, source }
}

// ---- unverified parse ---------------------------------------------------------------------

/// A NumericDate claim as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Time {
    Absent,
    /// Present but not a number.
    Invalid,
    At(i64),
}

/// A structurally valid JWS in compact form, decoded but **not verified**. Owned, so that the
/// verified-token cache can keep it (without the token text).
#[derive(Debug, Clone)]
pub struct Token {
    /// `None` for an algorithm jsonwebtoken does not know (`none`, `None`, `XYZ`).
    pub alg: Option<Algorithm>,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    pub exp: Time,
    pub nbf: Time,
    pub iat: Time,
}

fn malformed(reason: &'static str) -> Denial {
    Denial::new(AuthError::TokenInvalid, reason)
}

fn decode_json_object(segment: &str, what: &'static str) -> Result<Map<String, Value>, Denial> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(malformed(what)),
    }
}

fn numeric(claims: &Map<String, Value>, name: &str) -> Time {
    match claims.get(name) {
        None => Time::Absent,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Time::At(i),
            // RFC 7519 NumericDate may carry a fraction; whole seconds are enough here.
            None => n
                .as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map_or(Time::Invalid, |f| Time::At(f.floor() as i64)),
        },
        Some(_) => Time::Invalid,
    }
}

impl Token {
    /// Parses `header.payload.signature` (base64url without padding, JSON objects). The
    /// signature segment may be empty here (`alg: none`); the allow-list refuses it next.
    pub fn parse(raw: &str) -> Result<Token, Denial> {
        if raw.is_empty() {
            return Err(malformed("empty token"));
        }
        if raw.len() > MAX_TOKEN_BYTES {
            return Err(malformed("token too long"));
        }
        let mut parts = raw.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three segments"));
        };
        let b64url = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if header.is_empty() || payload.is_empty() || !b64url(header) || !b64url(payload) || !b64url(signature) {
            return Err(malformed("segment not base64url"));
        }
        let header = decode_json_object(header, "header not a JSON object")?;
        let claims = decode_json_object(payload, "payload not a JSON object")?;
        let alg = match header.get("alg") {
            Some(Value::String(name)) => name.parse::<Algorithm>().ok(),
            _ => return Err(malformed("alg missing")),
        };
        // RFC 7515 §4.1.11: extensions we do not understand must not be ignored.
        if header.contains_key("crit") {
            return Err(malformed("crit header"));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(malformed("kid not a string")),
        };
        // `jku`, `x5u`, `jwk`, `x5c` are ignored on purpose: keys come from the configured
        // JWKS URL only (docs/design.md#security-rules).
        Ok(Token {
            alg,
            exp: numeric(&claims, "exp"),
            nbf: numeric(&claims, "nbf"),
            iat: numeric(&claims, "iat"),
            kid,
            claims,
        })
    }

    /// The cheap checks, in the order the design fixes: alg allow-list, kid present, iss
    /// exact, exp/nbf/iat with leeway, lifetime, aud. Returns the algorithm and kid to verify
    /// with.
    pub fn check_unverified(&self, policy: &Policy, now: i64) -> Result<(Algorithm, &str), Denial> {
        let alg = self
            .alg
            .filter(|a| policy.algorithms.contains(a))
            .ok_or(Denial::new(AuthError::TokenInvalid, "alg not allowed"))?;
        let kid = self.kid.as_deref().ok_or(Denial::new(AuthError::TokenInvalid, "kid missing"))?;
        if kid.is_empty() || kid.len() > MAX_KID_BYTES || !kid.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Denial::new(AuthError::TokenInvalid, "kid not acceptable"));
        }
        match self.claims.get("iss") {
            Some(Value::String(iss)) if *iss == policy.issuer => {}
            _ => return Err(Denial::new(AuthError::TokenInvalid, "iss mismatch")),
        }
        self.check_times(policy, now)?;
        if !policy.audiences.is_empty() && !self.audience_matches(&policy.audiences) {
            return Err(Denial::new(AuthError::TokenInvalid, "aud mismatch"));
        }
        Ok((alg, kid))
    }

    /// `exp` required; `nbf` and a future `iat` refused beyond the leeway; `exp - iat` (or
    /// `exp - now` without `iat`) at most `max_token_lifetime`.
    pub fn check_times(&self, policy: &Policy, now: i64) -> Result<(), Denial> {
        let exp = match self.exp {
            Time::At(exp) => exp,
            Time::Absent => return Err(Denial::new(AuthError::TokenInvalid, "exp missing")),
            Time::Invalid => return Err(Denial::new(AuthError::TokenInvalid, "exp not a number")),
        };
        if now >= exp.saturating_add(policy.leeway) {
            return Err(Denial::new(AuthError::TokenExpired, "expired"));
        }
        match self.nbf {
            Time::At(nbf) if nbf > now.saturating_add(policy.leeway) => {
                return Err(Denial::new(AuthError::TokenNotYetValid, "nbf in the future"))
            }
            Time::Invalid => return Err(Denial::new(AuthError::TokenInvalid, "nbf not a number")),
            _ => {}
        }
        match self.iat {
            Time::At(iat) if iat > now.saturating_add(policy.leeway) => {
                return Err(Denial::new(AuthError::TokenNotYetValid, "iat in the future"))
            }
            Time::Invalid => return Err(Denial::new(AuthError::TokenInvalid, "iat not a number")),
            _ => {}
        }
        if policy.max_token_lifetime > 0 {
            let start = match self.iat {
                Time::At(iat) => iat,
                _ => now,
            };
            if exp.saturating_sub(start) > policy.max_token_lifetime {
                return Err(Denial::new(AuthError::TokenInvalid, "lifetime over max_token_lifetime"));
            }
        }
        Ok(())
    }

    fn audience_matches(&self, audiences: &[String]) -> bool {
        match self.claims.get("aud") {
            Some(Value::String(aud)) => audiences.contains(aud),
            Some(Value::Array(auds)) => {
                auds.iter().any(|a| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a)))
            }
            _ => false,
        }
    }

    /// Seconds since the epoch at which the token expires (for cache lifetimes).
    pub fn exp(&self) -> Option<i64> {
        match self.exp {
            Time::At(exp) => Some(exp),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::jwt::config::Config;
    use serde_json::json;

    fn policy() -> Policy {
        Config::parse(br#"{"jwks_url":"http://a/j","issuer":"https://iss","audiences":["api"]}"#)
            .unwrap()
            .policy()
            .unwrap()
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    fn token(header: Value, claims: Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&claims))
    }

    const NOW: i64 = 1_700_000_000;

    fn good_claims() -> Value {
        json!({"iss": "https://iss", "aud": "api", "sub": "u", "account_id": "a", "iat": NOW, "exp": NOW + 300})
    }

    fn check(header: Value, claims: Value) -> Result<(), Denial> {
        Token::parse(&token(header, claims))?.check_unverified(&policy(), NOW).map(drop)
    }

    fn code(r: Result<(), Denial>) -> &'static str {
        r.err().map_or("ok", |d| d.error.code())
    }

    #[test]
    fn bearer_values_are_split_and_other_schemes_ignored() {
        assert_eq!(bearer_tokens([&b"Bearer abc"[..]]), ["abc"]);
        assert_eq!(bearer_tokens([&b"bearer   abc  "[..]]), ["abc"]);
        assert_eq!(bearer_tokens([&b"Bearer a, Bearer b"[..]]), ["a", "b"]);
        assert_eq!(bearer_tokens([&b"Basic dXNlcg=="[..]]), Vec::<String>::new());
        assert_eq!(bearer_tokens([&b"Bearer"[..]]), [""]);
        assert_eq!(bearer_tokens([&b"Bearer a"[..], &b"Bearer a"[..]]), ["a", "a"]);
    }

    #[test]
    fn choice_prefers_the_header_and_flags_different_tokens() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(choose(s(&[]), s(&[])), Presented::Nothing);
        assert_eq!(
            choose(s(&["a", "a"]), s(&["b"])),
            Presented::One { token: "a".into(), source: Source::Authorization }
        );
        assert_eq!(choose(s(&[]), s(&["b"])), Presented::One { token: "b".into(), source: Source::Cookie });
        assert_eq!(choose(s(&["a", "b"]), s(&[])), Presented::Ambiguous);
        assert_eq!(choose(s(&[]), s(&["a", "c"])), Presented::Ambiguous);
    }

    #[test]
    fn cookies_are_found_and_hidden() {
        let names = vec!["jwt".to_owned()];
        let v = [&b"a=1; jwt=\"tok\"; b=2"[..], &b"jwt2=x"[..]];
        assert_eq!(cookie_tokens(v, &names), ["tok"]);
        assert_eq!(cookie_header_without(v, &names).as_deref(), Some("a=1; b=2; jwt2=x"));
        assert_eq!(cookie_header_without([&b"jwt=t"[..]], &names), None);
    }

    #[test]
    fn structure_is_checked_before_anything_else() {
        for bad in ["", "a", "a.b", "a.b.c.d", "..", "%%.e30.c2ln", "e30.e30.!!", "é.é.é"] {
            assert_eq!(Token::parse(bad).unwrap_err().error, AuthError::TokenInvalid, "{bad:?}");
        }
        let not_json = format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode("x"), b64(&good_claims()));
        assert!(Token::parse(&not_json).is_err());
        let array = format!("{}.{}.c2ln", b64(&json!({"alg": "RS256"})), b64(&json!([1])));
        assert!(Token::parse(&array).is_err());
        assert!(Token::parse(&"A".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        assert!(Token::parse(&token(json!({"kid": "k"}), good_claims())).is_err(), "no alg");
        assert!(Token::parse(&token(json!({"alg": 256}), good_claims())).is_err());
        assert!(Token::parse(&token(json!({"alg": "RS256", "kid": 5}), good_claims())).is_err());
        assert!(Token::parse(&token(json!({"alg": "RS256", "kid": "k", "crit": ["b64"]}), good_claims())).is_err());
    }

    #[test]
    fn cheap_checks_follow_the_design_order_and_codes() {
        let h = json!({"alg": "RS256", "kid": "k1"});
        assert_eq!(code(check(h.clone(), good_claims())), "ok");
        assert_eq!(code(check(json!({"alg": "none", "kid": "k1"}), good_claims())), "token_invalid");
        assert_eq!(code(check(json!({"alg": "HS256", "kid": "k1"}), good_claims())), "token_invalid");
        assert_eq!(
            code(check(json!({"alg": "RS384", "kid": "k1"}), good_claims())),
            "token_invalid",
            "not in the list"
        );
        assert_eq!(code(check(json!({"alg": "RS256"}), good_claims())), "token_invalid");
        assert_eq!(code(check(json!({"alg": "RS256", "kid": "a b"}), good_claims())), "token_invalid");
        assert_eq!(code(check(json!({"alg": "RS256", "kid": "k".repeat(129)}), good_claims())), "token_invalid");
        let with = |k: &str, v: Value| {
            let mut c = good_claims();
            c[k] = v;
            c
        };
        let without = |k: &str| {
            let mut c = good_claims();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        assert_eq!(code(check(h.clone(), with("iss", json!("https://iss/")))), "token_invalid");
        assert_eq!(code(check(h.clone(), without("iss"))), "token_invalid");
        assert_eq!(code(check(h.clone(), without("exp"))), "token_invalid");
        assert_eq!(code(check(h.clone(), with("exp", json!("soon")))), "token_invalid");
        // exp with the 30 s leeway.
        assert_eq!(code(check(h.clone(), with("exp", json!(NOW - 10)))), "ok", "within leeway");
        assert_eq!(code(check(h.clone(), with("exp", json!(NOW - 31)))), "token_expired");
        assert_eq!(code(check(h.clone(), with("nbf", json!(NOW + 20)))), "ok", "within leeway");
        assert_eq!(code(check(h.clone(), with("nbf", json!(NOW + 31)))), "token_not_yet_valid");
        assert_eq!(code(check(h.clone(), with("iat", json!(NOW + 31)))), "token_not_yet_valid");
        assert_eq!(code(check(h.clone(), with("exp", json!(NOW + 86_401)))), "token_invalid", "lifetime");
        let no_iat_long = {
            let mut c = without("iat");
            c["exp"] = json!(NOW + 86_401);
            c
        };
        assert_eq!(code(check(h.clone(), no_iat_long)), "token_invalid", "exp - now without iat");
        assert_eq!(code(check(h.clone(), with("aud", json!("other")))), "token_invalid");
        assert_eq!(code(check(h.clone(), with("aud", json!(["other", "api"])))), "ok");
        assert_eq!(code(check(h.clone(), without("aud"))), "token_invalid");
        // Order: an expired token with a bad alg reports the alg (checked first).
        let t = Token::parse(&token(json!({"alg": "none"}), with("exp", json!(1)))).unwrap();
        assert_eq!(t.check_unverified(&policy(), NOW).unwrap_err().reason, "alg not allowed");
    }

    #[test]
    fn fractional_times_are_floored() {
        let t = Token::parse(&token(json!({"alg": "RS256", "kid": "k"}), json!({"exp": 10.9}))).unwrap();
        assert_eq!(t.exp, Time::At(10));
    }
}
