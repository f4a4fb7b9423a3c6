//! The process's shared services, built once from the settings by [`crate::run`], owned by
//! the [`Registry`](crate::registry::Registry) and handed to every plugin at StartInstance
//! (`PluginSpec::start(config, &services)`), to the revocation subscriber and to the ops
//! endpoints. Nothing of it lives in a static: a test builds its own [`Services`] and is
//! isolated from every other test.
//!
//! Kong starts one instance per plugin config per nginx worker, so the upstream-facing parts
//! are kept per *upstream*, not per instance: one API-key cache per auth-service (URL, lookup
//! path, service token), one connection pool per auth-service base URL, one JWKS cache per
//! JWKS URL. Every instance (and Kong worker) naming the same upstream shares them, so
//! auth-service sees the load of one client, not N. They are created on first use (the
//! URLs come from Kong's plugin configs, not from our settings) and live as long as the
//! services: a Kong reconfiguration replaces instances, and the caches should survive that.
//!
//! Metrics are the one exception: see [`crate::metrics::global`] for why they stay a static.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::config::Settings;
use crate::health::Health;
use crate::keyed_hash::KeyedHash;
use crate::plugins::api_key::cache::{KeyCache, NEGATIVE_CAPACITY};
use crate::plugins::api_key::client::Pool;
use crate::plugins::jwt::config::JwksTiming;
use crate::plugins::jwt::jwks::JwksCache;
use crate::plugins::jwt::verified_cache::{self, VerifiedCache};
use crate::upstream::DateSkew;

pub struct Services {
    /// Every lifetime and token-time check reads this clock.
    pub clock: Clock,
    /// What `/health` and `/ready` report.
    pub health: Health,
    /// The one keyed hash (one pepper) of both credential caches.
    pub keyed: KeyedHash,
    /// The `Date`-header check of every upstream response.
    pub skew: DateSkew,
    /// Tokens whose signature was checked (shared by every `ghasi-jwt` instance).
    pub verified_tokens: Arc<VerifiedCache>,
    /// Signature checks performed (logged with each, so tests can see the verified-token
    /// cache spare them).
    pub signature_checks: Arc<AtomicU64>,
    /// Valid keys each API-key cache keeps at most (`--api-key-cache-entries`).
    api_key_cache_entries: usize,
    api_key_caches: Mutex<HashMap<String, Arc<KeyCache>>>,
    auth_service_pools: Mutex<HashMap<String, Arc<Pool>>>,
    jwks: Mutex<HashMap<String, Arc<JwksCache>>>,
}

impl Services {
    /// The services `settings` ask for, with the clock `GHASI_TEST_CLOCK` selects.
    pub fn from_settings(settings: &Settings) -> Arc<Services> {
        Services::new(Clock::from_env(), settings.api_key_cache_entries)
    }

    /// Services around `clock`, each API-key cache keeping at most `api_key_cache_entries`
    /// valid keys (at least 1).
    pub fn new(clock: Clock, api_key_cache_entries: usize) -> Arc<Services> {
        Arc::new(Services {
            health: Health::default(),
            keyed: KeyedHash::random(),
            skew: DateSkew::new(clock.clone()),
            verified_tokens: Arc::new(VerifiedCache::new(verified_cache::CAPACITY)),
            signature_checks: Arc::new(AtomicU64::new(0)),
            api_key_cache_entries: api_key_cache_entries.max(1),
            api_key_caches: Mutex::default(),
            auth_service_pools: Mutex::default(),
            jwks: Mutex::default(),
            clock,
        })
    }

    /// Services with an adjustable clock and the default capacities: what a unit test
    /// isolates itself with.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn for_tests() -> Arc<Services> {
        Services::new(Clock::adjustable(), crate::plugins::api_key::cache::DEFAULT_POSITIVE_CAPACITY)
    }

    /// The API-key cache of one auth-service (`id`: see `api_key::cache::cache_id`).
    pub fn api_key_cache(&self, id: &str) -> Arc<KeyCache> {
        let Ok(cache) = shared::<_, Infallible>(&self.api_key_caches, id, || {
            Ok(KeyCache::new(self.api_key_cache_entries, NEGATIVE_CAPACITY, self.clock.clone()))
        });
        cache
    }

    /// Every API-key cache created so far (revocation messages name a key, not a service).
    pub fn api_key_caches(&self) -> Vec<Arc<KeyCache>> {
        self.api_key_caches.lock().values().cloned().collect()
    }

    /// The connection pool of one auth-service base URL. The connect timeout of the first
    /// instance bounds connecting for all; every call is also bounded as a whole by its own
    /// instance's `timeout_ms`.
    pub fn auth_service_pool(&self, base_url: &str, connect_timeout: Duration) -> Result<Arc<Pool>, reqwest::Error> {
        shared(&self.auth_service_pools, base_url, || Pool::new(base_url, connect_timeout))
    }

    /// The JWKS cache of `url`, created on first use.
    pub fn jwks(&self, url: &str) -> Result<Arc<JwksCache>, reqwest::Error> {
        shared(&self.jwks, url, || JwksCache::new(url, self))
    }

    /// Starts loading the JWKS of `url` in the background (`--warm-jwks`), so `/ready` can
    /// wait for it and the first requests do not pay for the fetch.
    pub fn warm_jwks(&self, url: &str) -> Result<(), reqwest::Error> {
        let cache = self.jwks(url)?;
        tokio::spawn(async move { cache.warm(JwksTiming::defaults()).await });
        Ok(())
    }

    /// Every JWKS cache created so far, with its URL (revocation messages of type `jwks`).
    pub fn jwks_caches(&self) -> Vec<(String, Arc<JwksCache>)> {
        self.jwks.lock().iter().map(|(url, cache)| (url.clone(), Arc::clone(cache))).collect()
    }
}

/// The entry of `key` in one of the per-upstream maps, made by `make` on first use. The lock is
/// held while making it, so instances starting together on several shards share one entry.
fn shared<T, E>(
    map: &Mutex<HashMap<String, Arc<T>>>,
    key: &str,
    make: impl FnOnce() -> Result<T, E>,
) -> Result<Arc<T>, E> {
    let mut map = map.lock();
    if let Some(found) = map.get(key) {
        return Ok(Arc::clone(found));
    }
    let made = Arc::new(make()?);
    map.insert(key.to_owned(), Arc::clone(&made));
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cache_per_upstream_within_services_and_none_across_them() {
        let services = Services::for_tests();
        assert!(Arc::ptr_eq(&services.api_key_cache("a"), &services.api_key_cache("a")));
        assert!(!Arc::ptr_eq(&services.api_key_cache("a"), &services.api_key_cache("b")));
        assert!(Arc::ptr_eq(&services.jwks("http://j").unwrap(), &services.jwks("http://j").unwrap()));
        let t = Duration::from_secs(1);
        let pool = services.auth_service_pool("http://a.invalid", t).unwrap();
        assert!(Arc::ptr_eq(&pool, &services.auth_service_pool("http://a.invalid", t).unwrap()));
        assert_eq!((services.api_key_caches().len(), services.jwks_caches().len()), (2, 1));
        let other = Services::for_tests();
        assert!(!Arc::ptr_eq(&services.api_key_cache("a"), &other.api_key_cache("a")), "isolated services");
        assert!(other.jwks_caches().is_empty());
    }

    #[tokio::test]
    async fn the_api_key_budget_comes_from_the_settings() {
        use crate::plugins::api_key::cache::Lifetimes;
        use crate::plugins::api_key::client::{Answer, KeyInfo};
        let lifetimes = Lifetimes {
            positive: Duration::from_secs(60),
            negative: Duration::from_secs(15),
            stale_if_error: Duration::ZERO,
            refresh_ahead: Duration::ZERO,
        };
        let services = Services::new(Clock::system(), 2);
        let cache = services.api_key_cache("http://auth/lookup#");
        for key in ["a", "b", "c"] {
            let info = KeyInfo {
                account_id: "acc".into(),
                key_id: key.into(),
                user_id: None,
                consumer_username: None,
                expires_at: None,
            };
            cache
                .resolve(services.keyed.digest(key.as_bytes()), lifetimes, move || async move { Answer::Valid(info) })
                .await;
        }
        assert_eq!(cache.len(), (2, 0), "--api-key-cache-entries 2");
        assert_eq!(Services::new(Clock::system(), 0).api_key_cache_entries, 1, "at least one");
    }
}
