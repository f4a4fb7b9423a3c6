//! `ghasi-api-key-lookup` config: the field table (source of the `--dump` schema and of
//! validation) and the typed struct built from it.

use serde::Deserialize;

use crate::plugins::identity;
use crate::plugins::schema::{self, Default as D, Field};
use crate::plugins::StartError;

pub const FIELDS: &[Field] = &[
    Field::string("auth_service_url").required().url()
        .describe("Base URL of auth-service, e.g. http://auth-service:8080; the lookup is POSTed to auth_service_url + lookup_path."),
    Field::string("lookup_path").default(D::Str("/internal/v1/api-keys/verify")).path()
        .describe("Path of auth-service's API-key verification endpoint."),
    Field::string("service_token").secret().len_max(4096)
        .describe("Sent as 'Authorization: Bearer <token>' to auth-service. Use a Kong vault reference, never a literal."),
    Field::strings("key_names").default(D::Strs(&["x-api-key"])).len_min(1).items_max(8).token()
        .describe("Request headers (and query parameters when key_in_query) that may carry the API key."),
    Field::boolean("key_in_query").default(D::Bool(false))
        .describe("Also accept the key as a query parameter. Off by default: URLs end up in logs."),
    Field::boolean("hide_credentials").default(D::Bool(true))
        .describe("Remove the API key from the request before it is proxied upstream."),
    Field::boolean("credential_optional").default(D::Bool(false))
        .describe("Let a request without a key through unauthenticated (identity headers still stripped), so another plugin can decide."),
    Field::integer("cache_ttl").default(D::Int(60)).between(0, 3600)
        .describe("Seconds a valid key's lookup is cached (0 = no caching); a key's own expiry shortens it."),
    Field::integer("negative_cache_ttl").default(D::Int(15)).between(0, 3600)
        .describe("Seconds a definitive 'invalid key' answer is cached; transient failures are never cached."),
    Field::integer("stale_if_error").default(D::Int(0)).between(0, 86400)
        .describe("Seconds past cache_ttl a valid verdict may still be served while auth-service is unreachable."),
    Field::integer("refresh_ahead").default(D::Int(10)).between(0, 3600)
        .describe("Seconds before cache_ttl ends in which a request for a cached key starts one background revalidation (at most half of cache_ttl; 0 = off), so busy keys never wait for a lookup."),
    Field::integer("timeout_ms").default(D::Int(500)).between(1, 60000)
        .describe("Connect + total timeout of one auth-service call, in milliseconds; then 503."),
    identity::SET_KONG_CONSUMER_FIELD,
    identity::SPOOF_POLICY_FIELD,
    identity::EXTRA_RESERVED_FIELD,
    Field::string("authenticated_group").default(D::Str("ghasi-authenticated")).len_min(1)
        .describe("Group published in kong.ctx.shared.authenticated_groups on success, for the acl guard."),
];

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub auth_service_url: String,
    pub lookup_path: String,
    pub service_token: Option<String>,
    pub key_names: Vec<String>,
    pub key_in_query: bool,
    pub hide_credentials: bool,
    pub credential_optional: bool,
    pub cache_ttl: u64,
    pub negative_cache_ttl: u64,
    pub stale_if_error: u64,
    pub refresh_ahead: u64,
    pub timeout_ms: u64,
    pub set_kong_consumer: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_struct_field_is_in_the_table() {
        let c = Config::parse(br#"{"auth_service_url":"http://a"}"#).unwrap();
        assert_eq!(c.key_names, ["x-api-key"]);
        assert_eq!((c.cache_ttl, c.negative_cache_ttl, c.timeout_ms), (60, 15, 500));
        assert!(c.hide_credentials && !c.credential_optional && c.service_token.is_none());
    }
}
