//! Token minting for dev and tests: a [`TokenSpec`] says which user, algorithm, key id, lifetime
//! and claim overrides; the service turns it into a JWT signed by its own key ring.
//!
//! Why everything is overridable: the plugin's validation order (structure, alg, kid, iss, exp,
//! nbf, aud, lifetime, signature, then claims) is only testable with tokens that are wrong in
//! exactly one way and right in every other. Tokens wrong at the signature or structure level
//! come from [`crate::forge`].

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::keys::{Alg, SigningKey};
use crate::state::Shared;

/// What to mint. `Default` is a token without user claims (no `sub`, `account_id`, `email`,
/// `roles`) signed RS256 by the current key; start from [`TokenSpec::for_user`] for a normal one.
///
/// The same struct is the JSON body of `POST /dev/tokens` (all fields optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSpec {
    /// User whose `sub`, `account_id`, `email` and `roles` the token carries (must exist).
    pub user_id: Option<String>,
    /// Signing algorithm; default RS256 (or the algorithm of the key named by `kid`).
    pub alg: Option<Alg>,
    /// `exp - iat` in seconds; negative gives a token that is already expired. Default: the
    /// config's `token_ttl_secs`.
    pub ttl_secs: Option<i64>,
    /// Claims set or replaced after the defaults (`iss`, `aud`, `sub`, `account_id`, `email`,
    /// `roles`, `iat`, `nbf`, `exp`, `jti`); any JSON value, so wrong types are possible too.
    pub claims: Map<String, Value>,
    /// Claims removed after the overrides (e.g. `"sub"`, `"exp"`).
    pub remove_claims: Vec<String>,
    /// Header `kid`. A kid the service holds (published or rotated out) selects that key for
    /// signing; any other kid is put in the header of a token signed by the current key of `alg`
    /// (an "unknown kid" that no JWKS will ever contain). Default: the current key's kid.
    pub kid: Option<String>,
    /// Leave `kid` out of the header (the token is still signed by the selected key).
    pub omit_kid: bool,
}

impl TokenSpec {
    /// A normal token for `user_id`.
    pub fn for_user(user_id: impl Into<String>) -> Self {
        TokenSpec { user_id: Some(user_id.into()), ..Default::default() }
    }

    /// Signs with `alg`.
    pub fn alg(mut self, alg: Alg) -> Self {
        self.alg = Some(alg);
        self
    }

    /// `exp = iat + secs` (negative: already expired).
    pub fn ttl_secs(mut self, secs: i64) -> Self {
        self.ttl_secs = Some(secs);
        self
    }

    /// Sets or replaces one claim.
    pub fn claim(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// Removes one claim.
    pub fn without(mut self, name: impl Into<String>) -> Self {
        self.remove_claims.push(name.into());
        self
    }

    /// Sets `aud`.
    pub fn aud(self, aud: impl Into<Value>) -> Self {
        self.claim("aud", aud)
    }

    /// Sets `iss`.
    pub fn iss(self, iss: impl Into<String>) -> Self {
        self.claim("iss", iss.into())
    }

    /// Sets `nbf` to `secs` from now (positive: not yet valid).
    pub fn not_before_in(self, secs: i64) -> Self {
        self.claim("nbf", unix_now() + secs)
    }

    /// Puts `kid` in the header (see the field doc).
    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Leaves `kid` out of the header.
    pub fn omit_kid(mut self) -> Self {
        self.omit_kid = true;
        self
    }
}

/// A minted token and what went into it.
#[derive(Debug, Clone, Serialize)]
pub struct Minted {
    /// The compact JWS.
    pub token: String,
    /// The header `kid`, if any.
    pub kid: Option<String>,
    /// The header `alg`.
    pub alg: Alg,
    /// The claims.
    pub claims: Value,
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs() as i64
}

/// 128 random bits, hex.
pub(crate) fn random_jti() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The claims `spec` asks for: defaults, then overrides, then removals.
pub(crate) fn build_claims(state: &Shared, spec: &TokenSpec) -> anyhow::Result<Value> {
    let mut c = Map::new();
    c.insert("iss".into(), state.issuer.clone().into());
    if let Some(aud) = &state.audience {
        c.insert("aud".into(), aud.clone().into());
    }
    if let Some(uid) = &spec.user_id {
        let dir = state.directory.read();
        let user = dir.user(uid).ok_or_else(|| anyhow!("unknown user_id {uid:?}"))?;
        c.insert("sub".into(), user.id.clone().into());
        c.insert("account_id".into(), user.account_id.clone().into());
        c.insert("email".into(), user.email.clone().into());
        c.insert("roles".into(), user.roles.clone().into());
    }
    let now = unix_now();
    let ttl = spec.ttl_secs.unwrap_or(state.token_ttl_secs);
    c.insert("iat".into(), now.into());
    c.insert("nbf".into(), now.into());
    c.insert("exp".into(), now.saturating_add(ttl).into());
    c.insert("jti".into(), random_jti().into());
    for (k, v) in &spec.claims {
        c.insert(k.clone(), v.clone());
    }
    for k in &spec.remove_claims {
        c.remove(k);
    }
    Ok(Value::Object(c))
}

/// Picks the signing key and header kid for `spec`.
pub(crate) fn select_key(
    state: &Shared,
    spec: &TokenSpec,
) -> anyhow::Result<(std::sync::Arc<SigningKey>, Option<String>)> {
    let keys = state.keys.read();
    let (key, kid) = match &spec.kid {
        Some(kid) => match keys.get(kid) {
            Some(key) => {
                if let Some(alg) = spec.alg.filter(|a| *a != key.alg()) {
                    bail!("kid {kid:?} is a {} key, not {alg} (use forge for mismatches)", key.alg());
                }
                (key, kid.clone())
            }
            None => (keys.current(spec.alg.unwrap_or_default()), kid.clone()),
        },
        None => {
            let key = keys.current(spec.alg.unwrap_or_default());
            let kid = key.kid().to_owned();
            (key, kid)
        }
    };
    Ok((key, (!spec.omit_kid).then_some(kid)))
}

/// Mints `spec` with the service's keys.
pub(crate) fn mint(state: &Shared, spec: &TokenSpec) -> anyhow::Result<Minted> {
    let claims = build_claims(state, spec)?;
    let (key, kid) = select_key(state, spec)?;
    let token = key.sign(kid.as_deref(), &claims)?;
    Ok(Minted { token, kid, alg: key.alg(), claims })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DevConfig;
    use crate::fixtures::*;
    use crate::keyring::KeyRing;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn state() -> Shared {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        Shared::new(&DevConfig::for_tests(), KeyRing::generate().unwrap(), tx)
    }

    fn part(token: &str, i: usize) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn default_claims_for_a_user() {
        let st = state();
        let m = mint(&st, &TokenSpec::for_user(USER_ALICE)).unwrap();
        let c = part(&m.token, 1);
        assert_eq!(c["iss"], crate::DEFAULT_ISSUER);
        assert_eq!(c["sub"], USER_ALICE);
        assert_eq!(c["account_id"], ACCOUNT_ACME);
        assert_eq!(c["email"], EMAIL_ALICE);
        assert_eq!(c["roles"], serde_json::json!(["admin", "billing"]));
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), TEST_TOKEN_TTL_SECS);
        assert_eq!(c["nbf"], c["iat"]);
        assert_eq!(c["jti"].as_str().unwrap().len(), 32);
        assert!(c.get("aud").is_none());
        let h = part(&m.token, 0);
        assert_eq!(h["alg"], "RS256");
        assert_eq!(h["kid"], st.keys.read().current(Alg::RS256).kid());
    }

    #[test]
    fn overrides_removals_and_kid_choices() {
        let st = state();
        let spec = TokenSpec::for_user(USER_BOB)
            .alg(Alg::EdDSA)
            .ttl_secs(-60)
            .iss("https://evil.test")
            .aud("portal")
            .without("account_id")
            .claim("roles", "not-an-array");
        let m = mint(&st, &spec).unwrap();
        let c = &m.claims;
        assert!(c["exp"].as_i64().unwrap() < unix_now());
        assert_eq!(c["iss"], "https://evil.test");
        assert_eq!(c["aud"], "portal");
        assert!(c.get("account_id").is_none());
        assert_eq!(c["roles"], "not-an-array");
        assert_eq!(part(&m.token, 0)["alg"], "EdDSA");

        let anon = mint(&st, &TokenSpec::default()).unwrap();
        assert!(anon.claims.get("sub").is_none() && anon.claims.get("account_id").is_none());

        let no_kid = mint(&st, &TokenSpec::for_user(USER_ALICE).omit_kid()).unwrap();
        assert!(part(&no_kid.token, 0).get("kid").is_none());

        let unknown = mint(&st, &TokenSpec::for_user(USER_ALICE).kid("nobody-knows")).unwrap();
        assert_eq!(part(&unknown.token, 0)["kid"], "nobody-knows");

        let es_kid = st.keys.read().current(Alg::ES256).kid().to_owned();
        let by_kid = mint(&st, &TokenSpec::for_user(USER_ALICE).kid(es_kid.clone())).unwrap();
        assert_eq!(by_kid.alg, Alg::ES256, "a known kid selects its key");
        assert!(mint(&st, &TokenSpec::for_user(USER_ALICE).kid(es_kid).alg(Alg::RS256)).is_err());
        assert!(mint(&st, &TokenSpec::for_user("usr_nobody")).is_err());
    }

    #[test]
    fn spec_is_the_http_body() {
        let spec: TokenSpec = serde_json::from_str(
            r#"{"user_id":"u","alg":"ES256","ttl_secs":60,"claims":{"aud":"x"},"remove_claims":["jti"],"kid":"k","omit_kid":false}"#,
        )
        .unwrap();
        assert_eq!(spec.alg, Some(Alg::ES256));
        assert_eq!(spec.claims["aud"], "x");
        assert!(serde_json::from_str::<TokenSpec>(r#"{"alg":"HS256"}"#).is_err());
        assert!(serde_json::from_str::<TokenSpec>(r#"{"user":"u"}"#).is_err());
    }
}
