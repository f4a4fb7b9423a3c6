//! `ghasi-jwt` config: the field table (source of the `--dump` schema and of validation), the
//! typed struct built from it, and the [`Policy`] derived from it once per instance.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::plugins::identity::{self, SpoofPolicy};

use crate::plugins::schema::{self, Default as D, Field};
use crate::plugins::StartError;

pub const FIELDS: &[Field] = &[
    Field::string("jwks_url")
        .required()
        .url()
        .describe("auth-service's JWKS URL, e.g. http://auth-service:8080/.well-known/jwks.json."),
    Field::string("issuer")
        .required()
        .len_min(1)
        .describe("Exact value the token's iss claim must have, e.g. https://api.ghasi.io."),
    Field::strings("audiences")
        .default(D::Strs(&[]))
        .describe("When not empty, the token's aud must contain one of these."),
    Field::strings("algorithms")
        .default(D::Strs(&["RS256", "ES256", "EdDSA"]))
        .len_min(1)
        .one_of(&["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"])
        .describe("Accepted signature algorithms; none and HS* are never accepted with JWKS keys."),
    Field::integer("leeway")
        .default(D::Int(30))
        .between(0, 300)
        .describe("Seconds of clock skew tolerated on exp and nbf."),
    Field::integer("max_token_lifetime")
        .default(D::Int(86400))
        .between(0, 31536000)
        .describe("Reject tokens whose exp - iat (or exp - now without iat) exceeds this many seconds; 0 disables."),
    Field::strings("cookie_names")
        .default(D::Strs(&[]))
        .items_max(8)
        .token()
        .describe("Cookies that may carry the token when there is no Authorization header."),
    Field::boolean("credential_optional")
        .default(D::Bool(false))
        .describe("Let a request without a token through unauthenticated (identity headers still stripped)."),
    Field::string("consumer_username_claim")
        .default(D::Str("email"))
        .len_min(1)
        .describe("Claim copied into X-Consumer-Username."),
    Field::string("roles_claim")
        .default(D::Str("roles"))
        .len_min(1)
        .describe("Claim holding the token's roles (array of strings)."),
    Field::strings("required_roles")
        .default(D::Strs(&[]))
        .describe("Roles the token must carry (see roles_match); missing → 403 insufficient_role."),
    Field::string("roles_match")
        .default(D::Str("any"))
        .one_of(&["any", "all"])
        .describe("any: one of required_roles suffices; all: every one is needed."),
    Field::integer("jwks_cache_ttl")
        .default(D::Int(300))
        .between(10, 86400)
        .describe("Seconds a fetched JWKS stays valid after its last successful fetch."),
    Field::integer("jwks_refresh_ahead").default(D::Int(60)).between(0, 86400).describe(
        "Seconds before jwks_cache_ttl runs out at which a background refresh starts (at most half of jwks_cache_ttl).",
    ),
    Field::integer("jwks_max_stale")
        .default(D::Int(0))
        .between(0, 86400)
        .describe("Extra seconds the last-known JWKS is used while auth-service is down; then 503."),
    Field::integer("jwks_kid_refresh_interval")
        .default(D::Int(10))
        .between(1, 3600)
        .describe("Minimum seconds between two refreshes caused by unknown kids (flood protection)."),
    Field::integer("timeout_ms")
        .default(D::Int(500))
        .between(1, 60000)
        .describe("Connect + total timeout of one JWKS fetch, in milliseconds."),
    identity::SET_KONG_CONSUMER_FIELD,
    Field::boolean("hide_credentials")
        .default(D::Bool(false))
        .describe("Remove the Authorization header (or token cookie header) before proxying."),
    identity::SPOOF_POLICY_FIELD,
    identity::EXTRA_RESERVED_FIELD,
    Field::string("authenticated_group").default(D::Str("ghasi-authenticated")).len_min(1).describe(
        "Group published (with the token's roles) in kong.ctx.shared.authenticated_groups, for the acl guard.",
    ),
];

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub jwks_url: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub leeway: u64,
    pub max_token_lifetime: u64,
    pub cookie_names: Vec<String>,
    pub credential_optional: bool,
    pub consumer_username_claim: String,
    pub roles_claim: String,
    pub required_roles: Vec<String>,
    pub roles_match: String,
    pub jwks_cache_ttl: u64,
    pub jwks_refresh_ahead: u64,
    pub jwks_max_stale: u64,
    pub jwks_kid_refresh_interval: u64,
    pub timeout_ms: u64,
    pub set_kong_consumer: bool,
    pub hide_credentials: bool,
    pub on_spoofed_identity_header: String,
    pub extra_reserved_headers: Vec<String>,
    pub authenticated_group: String,
}

impl Config {
    pub fn parse(json: &[u8]) -> Result<Config, StartError> {
        let map = schema::validate(FIELDS, json)?;
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| StartError::Shape(e.to_string()))
    }
}

/// What the access flow needs, computed once at StartInstance
/// (docs/design.md#round-trips-are-the-cost): parsed algorithms, signed leeway arithmetic,
/// lower-case header names, the JWKS timings.
#[derive(Debug, Clone)]
pub struct Policy {
    pub algorithms: Vec<Algorithm>,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub leeway: i64,
    /// 0 disables the check.
    pub max_token_lifetime: i64,
    pub cookie_names: Vec<String>,
    pub credential_optional: bool,
    pub consumer_username_claim: String,
    pub roles_claim: String,
    pub required_roles: Vec<String>,
    /// `roles_match: all`.
    pub roles_all: bool,
    pub spoof: SpoofPolicy,
    pub authenticated_group: String,
    pub jwks: JwksTiming,
}

/// The JWKS cache is shared per URL, but each instance judges freshness with its own timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksTiming {
    pub ttl: Duration,
    pub refresh_ahead: Duration,
    pub max_stale: Duration,
    pub kid_refresh_interval: Duration,
    pub timeout: Duration,
}

impl JwksTiming {
    /// The timings of a config that leaves every JWKS field at its default (`--warm-jwks`).
    pub fn defaults() -> JwksTiming {
        JwksTiming {
            ttl: Duration::from_secs(300),
            refresh_ahead: Duration::from_secs(60),
            max_stale: Duration::ZERO,
            kid_refresh_interval: Duration::from_secs(10),
            timeout: Duration::from_millis(500),
        }
    }
}

impl Config {
    /// The per-instance policy. Fails only on an algorithm name jsonwebtoken does not know
    /// (the table's `one_of` already excludes that).
    pub fn policy(&self) -> Result<Policy, StartError> {
        let algorithms = self
            .algorithms
            .iter()
            .map(|name| {
                name.parse::<Algorithm>()
                    .map_err(|_| StartError::field("algorithms", format!("unsupported algorithm {name:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Kong's schema cannot relate two fields, so a refresh-ahead at or beyond the TTL is
        // capped rather than refused (refusing at StartInstance would disable the route's
        // plugin); uncapped, every request would start a refresh.
        let refresh_ahead = self.jwks_refresh_ahead.min(self.jwks_cache_ttl / 2);
        let secs = Duration::from_secs;
        Ok(Policy {
            algorithms,
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            leeway: self.leeway as i64,
            max_token_lifetime: self.max_token_lifetime as i64,
            cookie_names: self.cookie_names.clone(),
            credential_optional: self.credential_optional,
            consumer_username_claim: self.consumer_username_claim.clone(),
            roles_claim: self.roles_claim.clone(),
            required_roles: self.required_roles.clone(),
            roles_all: self.roles_match == "all",
            spoof: SpoofPolicy::parse(&self.on_spoofed_identity_header),
            authenticated_group: self.authenticated_group.clone(),
            jwks: JwksTiming {
                ttl: secs(self.jwks_cache_ttl),
                refresh_ahead: secs(refresh_ahead),
                max_stale: secs(self.jwks_max_stale),
                kid_refresh_interval: secs(self.jwks_kid_refresh_interval),
                timeout: Duration::from_millis(self.timeout_ms),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_timings_are_the_config_defaults() {
        let c = Config::parse(br#"{"jwks_url":"http://a/j","issuer":"https://api.ghasi.io"}"#).unwrap();
        assert_eq!(c.policy().unwrap().jwks, JwksTiming::defaults());
    }

    #[test]
    fn every_struct_field_is_in_the_table() {
        let c = Config::parse(br#"{"jwks_url":"http://a/j","issuer":"https://api.ghasi.io"}"#).unwrap();
        assert_eq!(c.algorithms, ["RS256", "ES256", "EdDSA"]);
        assert_eq!((c.leeway, c.jwks_cache_ttl, c.jwks_refresh_ahead), (30, 300, 60));
        assert_eq!(c.roles_match, "any");
        let p = c.policy().unwrap();
        assert_eq!(p.algorithms, [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]);
        assert_eq!(p.jwks.ttl, Duration::from_secs(300));
        assert!(!p.roles_all);
        assert_eq!(p.spoof, SpoofPolicy::Strip);
    }

    #[test]
    fn every_field_is_validated() {
        let base = r#""jwks_url":"http://a/j","issuer":"i""#;
        let bad = [
            r#""jwks_url":"ftp://a""#,
            r#""issuer":"""#,
            r#""audiences":[1]"#,
            r#""algorithms":["HS256"]"#,
            r#""algorithms":["none"]"#,
            r#""algorithms":[]"#,
            r#""leeway":-1"#,
            r#""leeway":301"#,
            r#""max_token_lifetime":-5"#,
            r#""cookie_names":"x""#,
            r#""credential_optional":"yes""#,
            r#""consumer_username_claim":"""#,
            r#""roles_claim":"""#,
            r#""required_roles":[""]"#,
            r#""roles_match":"some""#,
            r#""jwks_cache_ttl":5"#,
            r#""jwks_refresh_ahead":-1"#,
            r#""jwks_max_stale":86401"#,
            r#""jwks_kid_refresh_interval":0"#,
            r#""timeout_ms":0"#,
            r#""set_kong_consumer":1"#,
            r#""hide_credentials":"true""#,
            r#""on_spoofed_identity_header":"log""#,
            r#""extra_reserved_headers":["x y"]"#,
            r#""authenticated_group":"""#,
            // Hostile values: control characters, separators in names.
            r#""issuer":"a\r\nb""#,
            r#""cookie_names":["session;x"]"#,
            r#""roles_claim":"\u0000""#,
        ];
        let mut named = std::collections::HashSet::new();
        for field in bad {
            let json = if field.starts_with(r#""jwks_url""#) {
                format!(r#"{{{field},"issuer":"i"}}"#)
            } else if field.starts_with(r#""issuer""#) {
                format!(r#"{{"jwks_url":"http://a/j",{field}}}"#)
            } else {
                format!("{{{base},{field}}}")
            };
            let err = Config::parse(json.as_bytes()).expect_err(&json).to_string();
            let name = field.split('"').nth(1).unwrap();
            assert!(err.contains(&format!("field '{name}'")), "{json}: {err}");
            named.insert(name.to_owned());
        }
        assert_eq!(named.len(), FIELDS.len(), "a bad value for every field of the table");
        let capped = Config::parse(br#"{"jwks_url":"http://a/j","issuer":"i","jwks_refresh_ahead":300}"#)
            .unwrap()
            .policy()
            .unwrap();
        assert_eq!(capped.jwks.refresh_ahead, Duration::from_secs(150), "capped at half the TTL");
    }
}
