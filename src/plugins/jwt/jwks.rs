//! The JWKS cache: one per `jwks_url` in the services, shared by every instance (Kong starts
//! one per config per nginx worker, and auth-service must not see N× the load), each with its
//! connection pool from [`crate::upstream`] (the transport the API-key client uses too).
//!
//! States, measured from the last successful fetch with the requesting instance's timings:
//!
//! ```text
//! age < ttl - refresh_ahead          fresh       use the set
//! age < ttl + max_stale              refreshing  use the set; one background refresh at a time,
//!                                                retried with exponential backoff
//! older, or never fetched            expired     fetch inline (single flight); if that fails
//!                                                or backoff forbids it: 503 + Retry-After
//! ```
//!
//! A `kid` missing from a usable set (reached only after the cheap checks) may trigger one
//! inline refresh: globally at most one per `jwks_kid_refresh_interval`, single flight, so a
//! flood of forged kids costs auth-service at most one call per window. A kid still missing
//! afterwards is remembered as unknown only until the next refresh is allowed anyway, and the
//! memory is dropped by any fetch that changes the set's kids: it must never outlive the
//! evidence it rests on. (Remembering it for a whole JWKS lifetime let one unauthenticated
//! request carrying the *next* key's guessable kid lock every real token out for minutes
//! after auth-service rotated to that key.)
//!
//! A refresh that fails, returns non-JSON, or a set without one usable key never replaces the
//! last good set (docs/design.md#jwks-refresh-rules). Keys identical to the previous set's are kept
//! as the same `Arc`, so verified-token cache entries survive a refresh that does not change their
//! key.
//!
//! All times come from the services' [`Clock`] so tests can move them without sleeping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::{Mutex, RwLock};
use rand::RngExt;
use serde_json::Value;

use super::config::JwksTiming;
use crate::clock::Clock;
use crate::health::{Health, JwksHealth};
use crate::metrics::{self, JwksLabels, JwksRefreshLabels, JwksStateLabels};
use crate::services::Services;
use crate::upstream::{self, DateSkew, Failure};

/// A JWKS document larger than this is refused (a real one is a few KiB).
const MAX_BODY_BYTES: usize = 1 << 20;
/// Backoff after the n-th consecutive failure: 1, 2, 4, … s, capped here.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// At most one warning per URL per this interval; the rest go to debug.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Bound on remembered unknown kids per URL.
const MAX_NEGATIVE_KIDS: usize = 4096;

// ---- keys ---------------------------------------------------------------------------------

/// One usable verification key of the set, bound to the algorithms its type allows.
pub struct JwkKey {
    pub kid: String,
    algorithms: Vec<Algorithm>,
    pub decoding: DecodingKey,
    jwk: Jwk,
}

impl JwkKey {
    /// Whether a token with header `alg` may be verified with this key (key type binding:
    /// an RSA key never verifies ES256, and no JWKS key ever verifies HS*).
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// Builds a key from one JWK, or says why it is unusable.
    pub fn from_jwk(jwk: Jwk) -> Result<JwkKey, String> {
        let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty()).ok_or("no kid")?;
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            return Err(format!("kid {kid:?}: not a signature key"));
        }
        if matches!(&jwk.common.key_operations, Some(ops) if !ops.contains(&KeyOperations::Verify)) {
            return Err(format!("kid {kid:?}: key_ops without verify"));
        }
        let by_type: &[Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => &[],
            },
            AlgorithmParameters::OctetKeyPair(p) => match p.curve {
                EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
                _ => &[],
            },
            // A symmetric key in a public key set is how algorithm confusion starts.
            AlgorithmParameters::OctetKey(_) => &[],
            // A key type jsonwebtoken does not know (`Other`, or one added later): unusable.
            _ => &[],
        };
        // A declared `alg` narrows the key to that one algorithm.
        let declared = jwk.common.key_algorithm.map(|a| a.to_string().parse::<Algorithm>());
        let algorithms: Vec<Algorithm> = match declared {
            None => by_type.to_vec(),
            Some(Ok(alg)) => by_type.iter().copied().filter(|a| *a == alg).collect(),
            Some(Err(_)) => Vec::new(),
        };
        if algorithms.is_empty() {
            return Err(format!("kid {kid:?}: key type, curve and alg allow no supported signature algorithm"));
        }
        let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("kid {kid:?}: {e}"))?;
        Ok(JwkKey { kid, algorithms, decoding, jwk })
    }
}

/// Why a fetched document cannot replace the cached set.
#[derive(Debug)]
pub enum Unusable {
    /// Not JSON, or no `keys` array.
    NotJwks(String),
    /// A JWKS, but without one key we could use (empty, symmetric, unsupported, no kid).
    NoUsableKey(String),
}

/// The usable keys of one fetched JWKS, by kid.
pub struct KeySet {
    keys: HashMap<String, Arc<JwkKey>>,
}

impl KeySet {
    /// Parses a JWKS document, skipping unusable keys; an error if none is usable. Keys equal
    /// to one in `previous` are taken from it (same `Arc`).
    pub fn parse(body: &[u8], previous: Option<&KeySet>) -> Result<KeySet, Unusable> {
        let doc: Value = serde_json::from_slice(body).map_err(|e| Unusable::NotJwks(format!("not JSON: {e}")))?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(Unusable::NotJwks("no \"keys\" array".into()));
        };
        let mut keys = HashMap::new();
        let mut skipped = Vec::new();
        for entry in entries {
            let key = serde_json::from_value::<Jwk>(entry.clone()).map_err(|e| format!("unparsable JWK: {e}"));
            match key.and_then(JwkKey::from_jwk) {
                Ok(key) => {
                    let reused = previous.and_then(|p| p.keys.get(&key.kid)).filter(|old| old.jwk == key.jwk);
                    let key = reused.cloned().unwrap_or_else(|| Arc::new(key));
                    if keys.contains_key(&key.kid) {
                        // Two keys under one kid: which one signed is unknowable, use neither.
                        skipped.push(format!("kid {:?}: duplicate", key.kid));
                        keys.insert(key.kid.clone(), None);
                    } else {
                        keys.insert(key.kid.clone(), Some(key));
                    }
                }
                Err(why) => skipped.push(why),
            }
        }
        if !skipped.is_empty() {
            tracing::debug!(plugin = "ghasi-jwt", skipped = ?skipped, "JWKS keys skipped");
        }
        let keys: HashMap<_, _> = keys.into_iter().filter_map(|(kid, k)| Some((kid, k?))).collect();
        if keys.is_empty() {
            return Err(Unusable::NoUsableKey(format!("no usable key among {} entries", entries.len())));
        }
        Ok(KeySet { keys })
    }

    pub fn get(&self, kid: &str) -> Option<&Arc<JwkKey>> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

// ---- the cache ----------------------------------------------------------------------------

/// What a key lookup found.
pub enum Lookup {
    Found(Arc<JwkKey>),
    /// Not in the set (after a refresh, or while refreshes for unknown kids are throttled).
    UnknownKid,
    /// No usable set and none could be fetched.
    Unavailable {
        retry_after_secs: u64,
    },
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    /// The clock's `now()` at the last successful fetch.
    fetched_at: Option<Duration>,
    /// Completed fetch attempts (success or not): lets a waiter see that someone else fetched.
    attempts: u64,
    /// Consecutive failures.
    failures: u32,
    /// No fetch before this (backoff).
    retry_at: Duration,
    last_kid_refresh: Option<Duration>,
    last_warn: Option<Duration>,
}

/// Names of the states, as `/health` and the `jwks_state` metric show them.
const STATES: [&str; 5] = ["empty", "fresh", "refreshing", "stale", "expired"];

/// Why a fetch happens (`jwks_refreshes{reason}`).
#[derive(Debug, Clone, Copy)]
enum Reason {
    /// No usable set: never fetched, or expired.
    Initial,
    /// Refresh-ahead in the background.
    Ahead,
    /// An unknown kid.
    KidMiss,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Initial => "initial",
            Reason::Ahead => "ahead",
            Reason::KidMiss => "kid_miss",
        }
    }
}

pub struct JwksCache {
    url: String,
    state: RwLock<State>,
    /// Held for the duration of a fetch: single flight.
    fetching: Arc<tokio::sync::Mutex<()>>,
    /// Kids not found after a refresh, and when that refresh was. Each instance judges the
    /// memory with its own `jwks_kid_refresh_interval`: one with a long interval must not
    /// make another with a short one refuse a kid for longer than its own interval.
    unknown_kids: Mutex<HashMap<String, Duration>>,
    /// Index into [`STATES`] last reported to `/health` and metrics (`u8::MAX`: none yet).
    reported: AtomicU8,
    age_gauge: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    http: reqwest::Client,
    clock: Clock,
    health: Health,
    skew: DateSkew,
}

fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(MAX_BACKOFF);
    // Up to 20 % earlier, so that many servers do not retry in lock step.
    base.mul_f64(1.0 - rand::rng().random_range(0.0..0.2))
}

fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl JwksCache {
    /// The cache of `url`, reporting to the services' health and reading their clock. Its
    /// client follows no redirect and uses no proxy from the environment: the JWKS URL is
    /// fixed in config and names an internal service (docs/design.md#security-rules).
    pub fn new(url: &str, services: &Services) -> Result<JwksCache, reqwest::Error> {
        let age_gauge = metrics::global().jwks_age.get_or_create(&JwksLabels { jwks_url: url.to_owned() }).clone();
        Ok(JwksCache {
            url: url.to_owned(),
            state: RwLock::new(State::default()),
            fetching: Arc::new(tokio::sync::Mutex::new(())),
            unknown_kids: Mutex::new(HashMap::new()),
            reported: AtomicU8::new(u8::MAX),
            age_gauge,
            http: upstream::build_client(None)?,
            clock: services.clock.clone(),
            health: services.health.clone(),
            skew: services.skew.clone(),
        })
    }

    /// The set if it is still usable at `now`, and whether it is due for a refresh.
    fn usable(&self, now: Duration, t: &JwksTiming) -> Option<(Arc<KeySet>, bool)> {
        let (keys, age) = {
            let st = self.state.read();
            (st.keys.clone(), st.fetched_at.map(|at| now.saturating_sub(at)))
        };
        let state = match age {
            None => 0,
            Some(age) if age < t.ttl - t.refresh_ahead => 1,
            Some(age) if age < t.ttl => 2,
            Some(age) if age < t.ttl + t.max_stale => 3,
            Some(_) => 4,
        };
        if let Some(age) = age {
            self.age_gauge.set(age.as_secs_f64());
        }
        if self.reported.swap(state, Ordering::Relaxed) != state {
            self.report(state, age, keys.as_deref());
        }
        match (keys, state) {
            (Some(keys), 1..=3) => Some((keys, state >= 2)),
            _ => None,
        }
    }

    /// Publishes a state change to `/health` and the `jwks_state` metric.
    fn report(&self, state: u8, age: Option<Duration>, keys: Option<&KeySet>) {
        let name = STATES[usize::from(state)];
        for s in STATES {
            let labels = JwksStateLabels { jwks_url: self.url.clone(), state: s };
            metrics::global().jwks_state.get_or_create(&labels).set(i64::from(s == name));
        }
        self.health.report_jwks(
            &self.url,
            JwksHealth {
                state: name,
                age_seconds: age.map(|a| a.as_secs()),
                keys: keys.map_or(0, KeySet::len),
                loaded: keys.is_some(),
            },
        );
    }

    fn retry_after(&self, now: Duration) -> u64 {
        ceil_secs(self.state.read().retry_at.saturating_sub(now))
    }

    /// The key for `kid`, fetching or refreshing the set as its state requires.
    pub async fn key_for(self: &Arc<Self>, kid: &str, t: &JwksTiming) -> Lookup {
        let now = self.clock.now();
        let keys = match self.usable(now, t) {
            Some((keys, due)) => {
                if due {
                    self.refresh_in_background(*t);
                }
                keys
            }
            None => {
                self.refresh_inline(t, Reason::Initial).await;
                let now = self.clock.now();
                match self.usable(now, t) {
                    Some((keys, _)) => keys,
                    None => return Lookup::Unavailable { retry_after_secs: self.retry_after(now) },
                }
            }
        };
        if let Some(key) = keys.get(kid) {
            return Lookup::Found(key.clone());
        }
        self.unknown_kid(kid, t).await
    }

    /// A kid missing from a usable set: negative cache, then a throttled refresh.
    async fn unknown_kid(self: &Arc<Self>, kid: &str, t: &JwksTiming) -> Lookup {
        let now = self.clock.now();
        if self.unknown_kids.lock().get(kid).is_some_and(|since| now < *since + t.kid_refresh_interval) {
            return Lookup::UnknownKid;
        }
        let (allowed, seen) = {
            let mut st = self.state.write();
            let allowed =
                now >= st.retry_at && st.last_kid_refresh.is_none_or(|last| now >= last + t.kid_refresh_interval);
            if allowed {
                st.last_kid_refresh = Some(now);
            }
            (allowed, st.attempts)
        };
        if !allowed {
            metrics::global().jwks_refresh_throttled.get_or_create(&JwksLabels { jwks_url: self.url.clone() }).inc();
        }
        let waited = if allowed {
            let _flight = self.fetching.lock().await;
            if self.state.read().attempts == seen {
                self.fetch_now(t, Reason::KidMiss).await;
            }
            true
        } else if self.fetching.try_lock().is_err() {
            // A refresh is in flight (maybe for this very kid after a rotation): its result is
            // free, so wait for it instead of failing a legitimate new kid.
            drop(self.fetching.lock().await);
            true
        } else {
            tracing::debug!(plugin = "ghasi-jwt", url = %self.url, "unknown-kid refresh throttled");
            false
        };
        let now = self.clock.now();
        if let Some((keys, _)) = self.usable(now, t) {
            if let Some(key) = keys.get(kid) {
                return Lookup::Found(key.clone());
            }
        }
        if !waited {
            // Throttled: nothing was learnt about this kid, so it is not negatively cached (a
            // legitimate new kid must not be locked out by a forged one that used the slot).
            return Lookup::UnknownKid;
        }
        if self.state.read().failures > 0 {
            // We could not ask auth-service: say so rather than calling a new kid invalid, and
            // never negatively cache a transient failure (docs/design.md#failure-means-503).
            return Lookup::Unavailable { retry_after_secs: self.retry_after(now) };
        }
        let mut unknown = self.unknown_kids.lock();
        if unknown.len() >= MAX_NEGATIVE_KIDS {
            unknown.retain(|_, since| now < *since + t.kid_refresh_interval);
            if unknown.len() >= MAX_NEGATIVE_KIDS {
                // Still full of live entries: forget them; the refresh throttle still holds.
                unknown.clear();
            }
        }
        // Remembered until the next kid refresh may run: asking before then could not learn more.
        unknown.insert(kid.to_owned(), now);
        Lookup::UnknownKid
    }

    /// Loads a first set at startup (`--warm-jwks`) so `/ready` can wait for it and the first
    /// requests do not pay for the fetch. Retries with the usual backoff until it succeeds.
    pub async fn warm(self: &Arc<Self>, t: JwksTiming) {
        self.report(0, None, None);
        while self.state.read().keys.is_none() {
            self.refresh_inline(&t, Reason::Initial).await;
            let wait = self.state.read().retry_at.saturating_sub(self.clock.now());
            tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
        self.usable(self.clock.now(), &t);
    }

    /// Fetches now unless backoff forbids it; concurrent callers share one fetch.
    async fn refresh_inline(&self, t: &JwksTiming, reason: Reason) {
        let seen = {
            let st = self.state.read();
            if self.clock.now() < st.retry_at {
                return;
            }
            st.attempts
        };
        let _flight = self.fetching.lock().await;
        if self.state.read().attempts == seen {
            self.fetch_now(t, reason).await;
        }
    }

    /// Starts a refresh on its own task unless one is running or backoff forbids it.
    fn refresh_in_background(self: &Arc<Self>, t: JwksTiming) {
        if self.clock.now() < self.state.read().retry_at {
            return;
        }
        let Ok(flight) = self.fetching.clone().try_lock_owned() else { return };
        let seen = self.state.read().attempts;
        let this = self.clone();
        tokio::spawn(async move {
            let _flight = flight;
            if this.state.read().attempts == seen {
                this.fetch_now(&t, Reason::Ahead).await;
            }
        });
    }

    /// One fetch; the caller holds `fetching`.
    async fn fetch_now(&self, t: &JwksTiming, reason: Reason) {
        let previous = self.state.read().keys.clone();
        let started = self.clock.now();
        let result = self.fetch(t.timeout, previous.as_deref()).await;
        let now = self.clock.now();
        let m = metrics::global();
        m.upstream("jwks", now.saturating_sub(started).as_secs_f64());
        let labels = JwksRefreshLabels {
            jwks_url: self.url.clone(),
            reason: reason.label(),
            result: if result.is_ok() { "ok" } else { "error" },
        };
        m.jwks_refreshes.get_or_create(&labels).inc();
        if let Err(failure) = &result {
            m.upstream_failure("jwks", failure.kind());
        }
        let mut st = self.state.write();
        st.attempts += 1;
        match result {
            Ok(set) => {
                let same_kids = previous.as_deref().is_some_and(|prev| {
                    prev.keys.len() == set.keys.len() && prev.keys.keys().all(|kid| set.keys.contains_key(kid))
                });
                if !same_kids {
                    // New evidence: every "unknown kid" verdict was about the old set.
                    self.unknown_kids.lock().clear();
                }
                if let Some(prev) = previous.as_deref() {
                    if !prev.keys.keys().any(|kid| set.keys.contains_key(kid)) {
                        tracing::warn!(
                            plugin = "ghasi-jwt",
                            url = %self.url,
                            "JWKS refresh replaced every previously known kid (rotation of all keys, or a wrong endpoint?)"
                        );
                    }
                }
                tracing::debug!(
                    plugin = "ghasi-jwt",
                    url = %self.url,
                    keys = set.len(),
                    reason = reason.label(),
                    elapsed_ms = now.saturating_sub(started).as_millis() as u64,
                    "JWKS fetched"
                );
                st.keys = Some(Arc::new(set));
                st.fetched_at = Some(now);
                st.failures = 0;
                st.retry_at = Duration::ZERO;
            }
            Err(why) => {
                st.failures = st.failures.saturating_add(1);
                st.retry_at = now + backoff(st.failures);
                let kept = if st.keys.is_some() { "keeping the last good set" } else { "no set yet" };
                if st.last_warn.is_none_or(|last| now >= last + WARN_INTERVAL) {
                    st.last_warn = Some(now);
                    tracing::warn!(plugin = "ghasi-jwt", url = %self.url, failures = st.failures, reason = reason.label(), "JWKS fetch failed ({kept}): {why}");
                } else {
                    tracing::debug!(plugin = "ghasi-jwt", url = %self.url, failures = st.failures, reason = reason.label(), "JWKS fetch failed ({kept}): {why}");
                }
            }
        }
        drop(st);
        // Force a state report: keys, age and state may all have changed.
        self.reported.store(u8::MAX, Ordering::Relaxed);
        self.usable(self.clock.now(), t);
    }

    /// Fetches the set now, whatever its age or backoff (auth-service announced a key
    /// rotation: revocation message `jwks`), then forgets the unknown kids, so a kid seen
    /// before the rotation is looked up again. Waits for a fetch already in flight, then
    /// fetches anew: that one may have started before the rotation.
    pub async fn refresh_now(&self, t: &JwksTiming) {
        let _flight = self.fetching.lock().await;
        self.fetch_now(t, Reason::Ahead).await;
        self.unknown_kids.lock().clear();
    }

    /// GET the JWKS and parse it; any problem is a failure that leaves the cached set alone.
    async fn fetch(&self, timeout: Duration, previous: Option<&KeySet>) -> Result<KeySet, Failure> {
        let mut response = self
            .http
            .get(&self.url)
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| upstream::classify(&e))?;
        self.skew.observe("jwks", &response);
        if !response.status().is_success() {
            return Err(Failure::Status(response.status().as_u16()));
        }
        let body = upstream::read_capped(&mut response, MAX_BODY_BYTES).await?;
        KeySet::parse(&body, previous).map_err(|why| match why {
            Unusable::NotJwks(why) => Failure::Body(why),
            Unusable::NoUsableKey(why) => Failure::EmptySet(why),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa_jwk(kid: &str) -> Value {
        // A syntactically valid RSA public JWK (the RFC 7517 appendix A.1 example modulus).
        json!({"kty": "RSA", "kid": kid, "use": "sig", "e": "AQAB",
               "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"})
    }

    #[test]
    fn usable_keys_are_kept_and_the_rest_skipped() {
        let doc = json!({"keys": [
            rsa_jwk("r1"),
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "e2", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "e": "AQAB", "n": "AQAB"},
            {"kty": "XYZ", "kid": "x"},
            "not an object"
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes(), None).unwrap();
        let mut kids: Vec<_> = set.keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["d1", "e2", "r1"]);
        let r1 = set.get("r1").unwrap();
        assert!(r1.allows(Algorithm::RS256) && r1.allows(Algorithm::PS256));
        assert!(!r1.allows(Algorithm::ES256) && !r1.allows(Algorithm::HS256) && !r1.allows(Algorithm::EdDSA));
        assert!(set.get("e2").unwrap().allows(Algorithm::ES256));
        assert!(!set.get("e2").unwrap().allows(Algorithm::ES384));
        assert!(set.get("d1").unwrap().allows(Algorithm::EdDSA));
    }

    #[test]
    fn declared_alg_narrows_the_key() {
        let mut jwk = rsa_jwk("r");
        jwk["alg"] = json!("PS256");
        let set = KeySet::parse(json!({"keys": [jwk]}).to_string().as_bytes(), None).unwrap();
        assert!(set.get("r").unwrap().allows(Algorithm::PS256));
        assert!(!set.get("r").unwrap().allows(Algorithm::RS256));
        let mut enc = rsa_jwk("r");
        enc["alg"] = json!("RSA-OAEP");
        assert!(KeySet::parse(json!({"keys": [enc]}).to_string().as_bytes(), None).is_err());
    }

    #[test]
    fn empty_garbage_and_duplicate_sets_are_unusable() {
        for body in [&b"{\"keys\": []}"[..], b"<html>502</html>", b"{}", b"{\"keys\": {}}", b"[]"] {
            assert!(KeySet::parse(body, None).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let dup = json!({"keys": [rsa_jwk("r"), rsa_jwk("r")]});
        assert!(KeySet::parse(dup.to_string().as_bytes(), None).is_err(), "the only kid is ambiguous");
    }

    #[test]
    fn unchanged_keys_keep_their_identity_across_refreshes() {
        let body = json!({"keys": [rsa_jwk("r1")]}).to_string();
        let first = KeySet::parse(body.as_bytes(), None).unwrap();
        let second = KeySet::parse(body.as_bytes(), Some(&first)).unwrap();
        assert!(Arc::ptr_eq(first.get("r1").unwrap(), second.get("r1").unwrap()));
        let mut changed = rsa_jwk("r1");
        changed["e"] = json!("AQAC");
        let third = KeySet::parse(json!({"keys": [changed]}).to_string().as_bytes(), Some(&second)).unwrap();
        assert!(!Arc::ptr_eq(second.get("r1").unwrap(), third.get("r1").unwrap()));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_secs(1) && backoff(1) >= Duration::from_millis(800));
        assert!(backoff(3) <= Duration::from_secs(4) && backoff(3) >= Duration::from_millis(3200));
        assert!(backoff(40) <= MAX_BACKOFF);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(2500)), 3);
        assert_eq!(ceil_secs(Duration::ZERO), 1);
    }
}
