//! `ghasi-api-key-lookup`: resolves a customer API key against auth-service
//! (docs/design.md#ghasi-api-key-lookup).
//!
//! One request, in PDK calls (docs/design.md#round-trips-are-the-cost):
//!
//! | path | calls |
//! |---|---|
//! | valid key | read, `set_headers` (identity + remove key and reserved headers), `ctx.shared.set` = 3 (+1 `set_kong_consumer`) |
//! | any denial (401/400/503) | read, `response.exit` = 2 (+1 `ctx.shared.get` for a 400 in reject mode) |
//! | no key, `credential_optional` | read, `ctx.shared.get`, `set_headers` (remove reserved headers) = 3; 2 when an earlier plugin authenticated |
//! | `key_in_query` | +1 read (`get_raw_query`); +1 `set_raw_query` when the query named a key and `hide_credentials` |
//!
//! "read" is always `kong.request.get_headers()`: see [`credential`] for why not `get_header`.
//!
//! Modules: [`config`] (the field table), [`credential`] (reading the key), [`client`]
//! (auth-service), [`cache`] (keyed-hash single-flight cache). Nothing here logs or keeps the
//! key itself: logs carry a short prefix of its keyed hash.

pub mod cache;
pub mod client;
pub mod config;
pub mod credential;
pub mod query;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::RngExt;

use self::cache::{CacheStatus, KeyCache, KeyIdentity, Lifetimes, Verdict};
use self::client::AuthClient;
use self::credential::{Found, Reader};
use super::identity::{self, Admission, Identity, Reserved, SpoofPolicy};
use super::outcome::{self, AuthError, Scheme};
use super::{Phase, Plugin, PluginSpec, StartError};
use crate::keyed_hash::KeyedHash;
use crate::metrics;
use crate::pdk::Pdk;
use crate::services::Services;

pub const NAME: &str = "ghasi-api-key-lookup";

/// `Retry-After` of a 503 is drawn from this range (seconds): short, because the outage may
/// be a blip, and jittered so that clients do not come back in lockstep.
pub const RETRY_AFTER_SECS: std::ops::RangeInclusive<u64> = 1..=3;

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: 1250,
    version: "0.1.0",
    phases: &[Phase::Access],
    fields: config::FIELDS,
    start,
};

/// One configured instance; everything computable from the config is computed here, once.
pub struct ApiKeyLookup {
    reader: Reader,
    credential_optional: bool,
    spoof: SpoofPolicy,
    hide_credentials: bool,
    admission: Admission,
    group: String,
    lifetimes: Lifetimes,
    client: Arc<AuthClient>,
    cache: Arc<KeyCache>,
    /// The services' keyed hash: the cache key of a presented API key.
    keyed: KeyedHash,
}

fn start(json: &[u8], services: &Services) -> Result<Plugin, StartError> {
    let config = config::Config::parse(json)?;
    Ok(Plugin::ApiKey(Arc::new(ApiKeyLookup::new(&config, services)?)))
}

impl ApiKeyLookup {
    /// Builds an instance, sharing the services' cache and pool of its auth-service.
    pub fn new(config: &config::Config, services: &Services) -> Result<ApiKeyLookup, StartError> {
        credential::check_names(&config.key_names)?;
        let spoof = SpoofPolicy::parse(&config.on_spoofed_identity_header);
        let reader = Reader::new(&config.key_names, config.key_in_query);
        let credentials: Vec<&str> = reader.names().iter().map(String::as_str).collect();
        let reserved = Reserved::new(&config.extra_reserved_headers, &credentials)?;
        // An empty token (e.g. a vault reference resolving to "") means "none".
        let token = config.service_token.as_deref().filter(|t| !t.is_empty());
        let client = AuthClient::new(
            &config.auth_service_url,
            &config.lookup_path,
            token,
            Duration::from_millis(config.timeout_ms),
            services,
        )?;
        let hide = if config.hide_credentials { reader.names().to_vec() } else { Vec::new() };
        Ok(ApiKeyLookup {
            credential_optional: config.credential_optional,
            spoof,
            hide_credentials: config.hide_credentials,
            admission: Admission { set_kong_consumer: config.set_kong_consumer, hide, reserved },
            group: config.authenticated_group.clone(),
            lifetimes: Lifetimes {
                positive: Duration::from_secs(config.cache_ttl),
                negative: Duration::from_secs(config.negative_cache_ttl),
                stale_if_error: Duration::from_secs(config.stale_if_error),
                refresh_ahead: Duration::from_secs(config.refresh_ahead),
            },
            client: Arc::new(client),
            cache: services.api_key_cache(&cache::cache_id(
                &services.keyed,
                &config.auth_service_url,
                &config.lookup_path,
                token,
            )),
            keyed: services.keyed.clone(),
            reader,
        })
    }

    pub async fn access(&self, pdk: &mut Pdk) -> anyhow::Result<()> {
        let presented = self.reader.read(pdk, &self.admission.reserved).await.context("reading the API key")?;
        // Identity headers seen now were either sent by the client or set by a plugin that
        // ran earlier (ghasi-jwt, on "JWT or API key" routes): Kong's request headers are the
        // rewritten ones. Only in that rare case does telling them apart cost a call.
        let mut earlier_identity = false;
        if presented.spoofed && self.spoof == SpoofPolicy::Reject {
            earlier_identity = already_authenticated(pdk).await?;
            if !earlier_identity {
                return deny(pdk, AuthError::SpoofedIdentityHeader, None).await;
            }
        }
        let key = match presented.key {
            Found::One(key) => key,
            Found::None if self.credential_optional && earlier_identity => {
                // The earlier plugin's identity stands (what pass_anonymous would decide too).
                pdk.record_outcome("already_authenticated");
                return Ok(());
            }
            Found::None if self.credential_optional => {
                identity::pass_anonymous(pdk, &self.admission.reserved)
                    .await
                    .context("passing an anonymous request")?;
                tracing::trace!(plugin = NAME, "no API key; credential_optional lets it through");
                return Ok(());
            }
            Found::None => return deny(pdk, AuthError::CredentialMissing, None).await,
            Found::Ambiguous => return deny(pdk, AuthError::CredentialAmbiguous, None).await,
            Found::Unusable => return deny(pdk, AuthError::CredentialInvalid, None).await,
        };
        let digest = self.keyed.digest(key.as_bytes());
        let client = self.client.clone();
        let lookup = move || async move { client.lookup(&key).await };
        let (verdict, status) = self.cache.resolve(digest, self.lifetimes, lookup).await;
        pdk.note_cache(status.as_str());
        metrics::global().cache(NAME, status.metric_label());
        let decided = Some((status, &digest));
        match verdict {
            Verdict::Valid(info) => {
                self.admit(pdk, &info, presented.query_without_keys.as_deref()).await?;
                tracing::trace!(
                    plugin = NAME,
                    outcome = "ok",
                    cache = status.as_str(),
                    key_hash = %short_hash(&digest),
                    account_id = %info.account_id(),
                    key_id = %info.key_id(),
                    "API key accepted"
                );
                Ok(())
            }
            Verdict::Invalid => deny(pdk, AuthError::CredentialInvalid, decided).await,
            Verdict::Unavailable => {
                let retry_after_secs = rand::rng().random_range(RETRY_AFTER_SECS);
                deny(pdk, AuthError::AuthorityUnavailable { retry_after_secs }, decided).await
            }
        }
    }

    /// The success batch, plus removing every key-named argument from the upstream query.
    async fn admit(&self, pdk: &mut Pdk, info: &KeyIdentity, query_without_keys: Option<&[u8]>) -> anyhow::Result<()> {
        let identity = Identity {
            account_id: info.account_id().to_owned(),
            user_id: info.user_id().map(str::to_owned),
            consumer_username: info.consumer_username().unwrap_or(info.account_id()).to_owned(),
            credential_identifier: Some(info.key_id().to_owned()),
            groups: vec![self.group.clone()],
        };
        identity::admit(pdk, &identity, &self.admission).await.context("admitting the request")?;
        if let Some(query) = query_without_keys.filter(|_| self.hide_credentials) {
            pdk.service_request().set_raw_query(query).await.context("removing the API key from the upstream query")?;
        }
        Ok(())
    }
}

/// Whether a plugin that ran earlier authenticated the request (it published groups).
async fn already_authenticated(pdk: &mut Pdk) -> anyhow::Result<bool> {
    identity::already_authenticated(pdk).await.context("reading authenticated_groups")
}

/// Answers with `error`. The event's debug line carries the outcome and cache status; this
/// trace line adds which key (a prefix of its keyed hash, never the key).
async fn deny(pdk: &mut Pdk, error: AuthError, decided: Option<(CacheStatus, &cache::Digest)>) -> anyhow::Result<()> {
    let (cache, key_hash) = match decided {
        Some((status, digest)) => (status.as_str(), short_hash(digest)),
        None => ("none", String::new()),
    };
    tracing::trace!(plugin = NAME, outcome = error.code(), status = error.status(), cache, key_hash = %key_hash, "request denied");
    outcome::reject(pdk, Scheme::ApiKey, error).await.with_context(|| format!("answering {}", error.code()))
}

/// The first 6 bytes of the keyed hash, hex: correlates log lines of one key within this
/// process (the pepper changes at restart) without revealing anything about the key.
fn short_hash(digest: &cache::Digest) -> String {
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(json: &str) -> Result<ApiKeyLookup, StartError> {
        lookup_in(&Services::for_tests(), json)
    }

    fn lookup_in(services: &Services, json: &str) -> Result<ApiKeyLookup, StartError> {
        ApiKeyLookup::new(&config::Config::parse(json.as_bytes())?, services)
    }

    #[test]
    fn start_derives_the_instance_from_the_config() {
        let p = lookup(
            r#"{"auth_service_url":"http://auth.invalid","key_names":["X-API-Key","apikey"],"hide_credentials":true}"#,
        )
        .unwrap();
        assert_eq!(p.admission.hide, ["x-api-key", "apikey"]);
        assert_eq!(p.lifetimes.positive, Duration::from_secs(60));
        assert_eq!(p.lifetimes.negative, Duration::from_secs(15));
        assert!(!p.admission.set_kong_consumer && p.spoof == SpoofPolicy::Strip);
        let p = lookup(r#"{"auth_service_url":"http://auth.invalid","hide_credentials":false}"#).unwrap();
        assert!(p.admission.hide.is_empty());
    }

    #[test]
    fn instances_of_one_auth_service_share_the_cache() {
        let services = Services::for_tests();
        let a = lookup_in(&services, r#"{"auth_service_url":"http://auth","cache_ttl":10}"#).unwrap();
        let b = lookup_in(&services, r#"{"auth_service_url":"http://auth/","cache_ttl":60,"__seq__":4}"#).unwrap();
        let c = lookup_in(&services, r#"{"auth_service_url":"http://auth","service_token":"t"}"#).unwrap();
        assert!(Arc::ptr_eq(&a.cache, &b.cache));
        assert!(!Arc::ptr_eq(&a.cache, &c.cache));
        let elsewhere = lookup(r#"{"auth_service_url":"http://auth","cache_ttl":10}"#).unwrap();
        assert!(!Arc::ptr_eq(&a.cache, &elsewhere.cache), "other services, another cache");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |json| lookup(json).err().unwrap().to_string();
        let e = err(r#"{"auth_service_url":"http://a","key_names":["X-User-Id"]}"#);
        assert!(e.contains("field 'key_names'"), "{e}");
        let e = err(r#"{"auth_service_url":"http://a","service_token":"a\u0000b"}"#);
        assert!(e.contains("field 'service_token'"), "{e}");
        let e = err(r#"{"auth_service_url":"http://a","extra_reserved_headers":["X-API-Key"]}"#);
        assert!(e.contains("field 'extra_reserved_headers'"), "{e}");
    }
}
