//! The verdict cache of `ghasi-api-key-lookup` (design.md §3): process-wide, keyed by a keyed
//! hash of the API key, with single-flight lookups and separate budgets for valid and invalid
//! keys.
//!
//! * **Keyed hash, never the key.** Entries are keyed by `HMAC-SHA256(pepper, key)` with a
//!   random pepper drawn once per process, so neither the cache nor a memory dump nor a log
//!   line holds a plaintext key, and the digests cannot be precomputed offline.
//! * **Single flight.** Concurrent misses for one key wait on the one lookup in flight. The
//!   lookup runs in its own task, so it completes (and fills the cache) even if the request
//!   that started it goes away.
//! * **Separate budgets.** Valid and invalid verdicts live in two bounded LRU maps: a flood of
//!   random keys fills and churns the negative map only and cannot evict valid keys.
//! * **Per-instance lifetimes.** Entries record *when* they were learnt; each instance applies
//!   its own `cache_ttl`, `negative_cache_ttl` and `stale_if_error` when reading, so instances
//!   with different settings can share one cache. A key's own `expires_at` caps every use.
//! * **Transient failures are never cached.** "Unavailable" leaves the cache as it was; a
//!   valid entry may then be served stale, within `stale_if_error`, but never after
//!   auth-service answered "invalid" (that answer removes the valid entry).
//!
//! All times come from [`crate::clock`], so tests move the process clock instead of sleeping.
//! The registry holds one cache per auth-service (URL, lookup path and service token), for
//! the life of the process: a Kong reconfiguration replaces instances, and the cache should
//! survive that.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use tokio::sync::watch;

use super::client::{Answer, KeyInfo};
use crate::{clock, metrics};

/// `HMAC-SHA256(pepper, key)`.
pub type Digest = [u8; 32];

/// Valid keys kept at most (≈ 200 bytes each).
pub const POSITIVE_CAPACITY: usize = 65_536;
/// Invalid keys kept at most. Deliberately small: negative entries protect auth-service from
/// repeated bad keys, and a flood of distinct ones should churn here, not grow memory.
pub const NEGATIVE_CAPACITY: usize = 4_096;

/// The keyed hash of an API key, with this process's pepper.
pub fn digest(key: &[u8]) -> Digest {
    static KEYED: OnceLock<Hmac<Sha256>> = OnceLock::new();
    let keyed = KEYED.get_or_init(|| {
        let pepper: [u8; 32] = rand::random();
        Hmac::<Sha256>::new_from_slice(&pepper).expect("HMAC accepts any key length")
    });
    let mut mac = keyed.clone();
    mac.update(key);
    mac.finalize().into_bytes().into()
}

/// The lifetimes one instance applies when reading the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// `cache_ttl`.
    pub positive: Duration,
    /// `negative_cache_ttl`.
    pub negative: Duration,
    /// `stale_if_error`: how long past `positive` a valid verdict may serve during an outage.
    pub stale_if_error: Duration,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(Arc<KeyInfo>),
    Invalid,
    Unavailable,
}

/// Where the decision came from (logged with every decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// A fresh valid entry.
    Hit,
    /// A fresh invalid entry.
    Negative,
    /// This request's own lookup.
    Miss,
    /// Another request's lookup, already in flight.
    Coalesced,
    /// A valid entry past its TTL, served because auth-service is unavailable.
    Stale,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Negative => "negative",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Stale => "stale",
        }
    }

    /// The `result` label of the cache metric.
    pub fn metric_label(self) -> &'static str {
        match self {
            CacheStatus::Negative => "negative_hit",
            other => other.as_str(),
        }
    }
}

/// A valid verdict and when it was learnt.
struct Positive {
    info: Arc<KeyInfo>,
    learnt: Duration,
    /// The key's own expiry on the [`clock::now`] scale.
    expires: Option<Duration>,
}

impl Positive {
    fn usable_until(&self, lifetime: Duration) -> Duration {
        let until = self.learnt + lifetime;
        self.expires.map_or(until, |e| until.min(e))
    }
}

/// The result of one lookup, as handed to every request waiting on it.
#[derive(Debug, Clone)]
enum Fetched {
    Valid(Arc<KeyInfo>),
    Invalid,
    Unavailable,
}

type Flight = watch::Receiver<Option<Fetched>>;

/// One auth-service's verdicts.
pub struct KeyCache {
    state: Mutex<State>,
}

struct State {
    positive: Lru<Positive>,
    /// When each invalid verdict was learnt.
    negative: Lru<Duration>,
    flights: HashMap<Digest, Flight>,
}

impl KeyCache {
    pub fn new(positive_capacity: usize, negative_capacity: usize) -> KeyCache {
        KeyCache {
            state: Mutex::new(State {
                positive: Lru::new("positive", positive_capacity),
                negative: Lru::new("negative", negative_capacity),
                flights: HashMap::new(),
            }),
        }
    }

    /// Decides about the key whose digest is `digest`: from the cache when a fresh entry
    /// exists, else by joining the lookup in flight, else by starting `lookup` (once).
    pub async fn resolve<L, F>(self: &Arc<Self>, digest: Digest, lifetimes: Lifetimes, lookup: L) -> (Verdict, CacheStatus)
    where
        L: FnOnce() -> F,
        F: Future<Output = Answer> + Send + 'static,
    {
        let (mut flight, status) = {
            let mut state = self.state.lock();
            if let Some(cached) = state.cached(&digest, lifetimes, clock::now()) {
                return cached;
            }
            // A flight whose task died without an answer (a panic) is replaced.
            match state.flights.get(&digest).filter(|f| f.has_changed().is_ok()) {
                Some(flight) => (flight.clone(), CacheStatus::Coalesced),
                None => {
                    let (tx, rx) = watch::channel(None);
                    state.flights.insert(digest, rx.clone());
                    let cache = Arc::clone(self);
                    let lookup = lookup();
                    tokio::spawn(async move {
                        let answer = lookup.await;
                        // Recording the answer and ending the flight happen under one lock,
                        // so a request arriving meanwhile sees either the flight or the entry.
                        let fetched = cache.state.lock().settle(digest, answer, clock::now(), clock::unix_now());
                        // Nobody waiting any more is fine: the cache is filled already.
                        let _ = tx.send(Some(fetched));
                    });
                    (rx, CacheStatus::Miss)
                }
            }
        };
        let fetched = match flight.wait_for(Option::is_some).await {
            Ok(value) => value.clone().unwrap_or(Fetched::Unavailable),
            Err(_) => Fetched::Unavailable,
        };
        match fetched {
            Fetched::Valid(info) => (Verdict::Valid(info), status),
            Fetched::Invalid => (Verdict::Invalid, status),
            Fetched::Unavailable => match self.state.lock().stale(&digest, lifetimes, clock::now()) {
                Some(info) => (Verdict::Valid(info), CacheStatus::Stale),
                None => (Verdict::Unavailable, status),
            },
        }
    }

    /// Entries held: (valid, invalid).
    pub fn len(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.positive.len(), state.negative.len())
    }
}

impl State {
    /// A fresh entry's decision, if there is one.
    fn cached(&mut self, digest: &Digest, lifetimes: Lifetimes, now: Duration) -> Option<(Verdict, CacheStatus)> {
        if let Some(p) = self.positive.get(digest) {
            if now < p.usable_until(lifetimes.positive) {
                return Some((Verdict::Valid(p.info.clone()), CacheStatus::Hit));
            }
        }
        if let Some(&denied) = self.negative.get(digest) {
            if now < denied + lifetimes.negative {
                return Some((Verdict::Invalid, CacheStatus::Negative));
            }
        }
        None
    }

    /// Records a lookup's answer and ends its flight. `unix_now` is the wall clock in
    /// seconds, to turn the key's `expires_at` into a deadline on the `now` scale.
    fn settle(&mut self, digest: Digest, answer: Answer, now: Duration, unix_now: u64) -> Fetched {
        self.flights.remove(&digest);
        match answer {
            Answer::Valid(info) => {
                self.negative.remove(&digest);
                let expires = info.expires_at.map(|at| now + Duration::from_secs(at.saturating_sub(unix_now as i64).max(0) as u64));
                let info = Arc::new(info);
                if expires.is_none_or(|e| now < e) {
                    self.positive.insert(digest, Positive { info: info.clone(), learnt: now, expires });
                } else {
                    // Valid by auth-service's clock, expired by ours: honour it once, keep nothing.
                    self.positive.remove(&digest);
                }
                Fetched::Valid(info)
            }
            Answer::Invalid { .. } => {
                self.positive.remove(&digest);
                self.negative.insert(digest, now);
                Fetched::Invalid
            }
            Answer::Unavailable(_) => Fetched::Unavailable,
        }
    }

    /// auth-service is unavailable: a valid entry within `stale_if_error` may still serve.
    fn stale(&mut self, digest: &Digest, lifetimes: Lifetimes, now: Duration) -> Option<Arc<KeyInfo>> {
        let p = self.positive.get(digest)?;
        (now < p.usable_until(lifetimes.positive + lifetimes.stale_if_error)).then(|| p.info.clone())
    }
}

/// Identifies one auth-service for the registry: URL, lookup path and a hash of the token
/// (two tokens may see different answers; the token itself is not kept here).
pub fn cache_id(auth_service_url: &str, lookup_path: &str, service_token: Option<&str>) -> String {
    let token = service_token.map(|t| hex(&digest(t.as_bytes())[..8])).unwrap_or_default();
    format!("{}{lookup_path}#{token}", auth_service_url.trim_end_matches('/'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The process-wide cache of one auth-service, shared by every instance and Kong worker.
pub fn shared(id: &str) -> Arc<KeyCache> {
    static CACHES: OnceLock<Mutex<HashMap<String, Arc<KeyCache>>>> = OnceLock::new();
    CACHES
        .get_or_init(Default::default)
        .lock()
        .entry(id.to_owned())
        .or_insert_with(|| Arc::new(KeyCache::new(POSITIVE_CAPACITY, NEGATIVE_CAPACITY)))
        .clone()
}

/// A bounded map that evicts the least recently used entry when full, and reports its size
/// and evictions as metrics (`cache` label = its name).
struct Lru<V> {
    entries: HashMap<Digest, (V, u64)>,
    /// Use tick → digest, oldest first.
    order: BTreeMap<u64, Digest>,
    tick: u64,
    capacity: usize,
    name: &'static str,
}

impl<V> Lru<V> {
    fn new(name: &'static str, capacity: usize) -> Self {
        Lru { entries: HashMap::new(), order: BTreeMap::new(), tick: 0, capacity: capacity.max(1), name }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn labels(&self) -> metrics::CacheNameLabels {
        metrics::CacheNameLabels { plugin: super::NAME, cache: self.name }
    }

    fn get(&mut self, digest: &Digest) -> Option<&V> {
        let tick = self.next_tick();
        let (_, used) = self.entries.get_mut(digest)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, *digest);
        self.entries.get(digest).map(|(v, _)| v)
    }

    fn insert(&mut self, digest: Digest, value: V) {
        self.remove(&digest);
        let mut evicted = 0;
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.entries.remove(&oldest);
            evicted += 1;
        }
        let tick = self.next_tick();
        self.order.insert(tick, digest);
        self.entries.insert(digest, (value, tick));
        let m = metrics::global();
        let labels = self.labels();
        if evicted > 0 {
            m.cache_evictions.get_or_create(&labels).inc_by(evicted);
        }
        m.cache_entries.get_or_create(&labels).inc_by(1 - evicted as i64);
    }

    fn remove(&mut self, digest: &Digest) {
        if let Some((_, used)) = self.entries.remove(digest) {
            self.order.remove(&used);
            metrics::global().cache_entries.get_or_create(&self.labels()).dec();
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::api_key::client::Trouble;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LIFETIMES: Lifetimes =
        Lifetimes { positive: Duration::from_secs(60), negative: Duration::from_secs(15), stale_if_error: Duration::ZERO };

    fn info(account: &str) -> KeyInfo {
        KeyInfo { account_id: account.into(), key_id: "k".into(), user_id: None, consumer_username: None, expires_at: None }
    }

    /// A lookup that counts its calls and answers `answer` after yielding a few times.
    fn counted(calls: &Arc<AtomicUsize>, answer: Answer) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Answer> + Send>> {
        let calls = calls.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                answer
            })
        }
    }

    #[test]
    fn digests_are_keyed_and_distinct() {
        assert_eq!(digest(b"key-1"), digest(b"key-1"));
        assert_ne!(digest(b"key-1"), digest(b"key-2"));
        // Not the plain SHA-256: the pepper is mixed in.
        use sha2::Digest as _;
        let plain: [u8; 32] = Sha256::digest(b"key-1").into();
        assert_ne!(digest(b"key-1"), plain);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_misses_make_one_lookup() {
        let cache = Arc::new(KeyCache::new(10, 10));
        let calls = Arc::new(AtomicUsize::new(0));
        let d = digest(b"one-key");
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache.resolve(d, LIFETIMES, counted(&calls, Answer::Valid(info("acc")))).await
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            let (verdict, status) = t.await.unwrap();
            assert!(matches!(verdict, Verdict::Valid(ref i) if i.account_id == "acc"));
            statuses.push(status);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(statuses.iter().filter(|s| **s == CacheStatus::Miss).count(), 1);
        let (v, s) = cache.resolve(d, LIFETIMES, counted(&calls, Answer::Invalid { status: 404 })).await;
        assert_eq!((matches!(v, Verdict::Valid(_)), s), (true, CacheStatus::Hit));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn invalid_floods_do_not_evict_valid_keys() {
        let cache = Arc::new(KeyCache::new(2, 3));
        let calls = Arc::new(AtomicUsize::new(0));
        let good = digest(b"good");
        cache.resolve(good, LIFETIMES, counted(&calls, Answer::Valid(info("acc")))).await;
        for i in 0..50 {
            let d = digest(format!("bad-{i}").as_bytes());
            let (v, _) = cache.resolve(d, LIFETIMES, counted(&calls, Answer::Invalid { status: 404 })).await;
            assert_eq!(v, Verdict::Invalid);
        }
        assert_eq!(cache.len(), (1, 3), "the negative budget is bounded");
        let (v, s) = cache.resolve(good, LIFETIMES, counted(&calls, Answer::Invalid { status: 404 })).await;
        assert!(matches!(v, Verdict::Valid(_)));
        assert_eq!(s, CacheStatus::Hit);
        // The oldest invalid key was evicted, the newest is still cached.
        let (_, s) = cache.resolve(digest(b"bad-49"), LIFETIMES, counted(&calls, Answer::Invalid { status: 404 })).await;
        assert_eq!(s, CacheStatus::Negative);
        let (_, s) = cache.resolve(digest(b"bad-0"), LIFETIMES, counted(&calls, Answer::Invalid { status: 404 })).await;
        assert_eq!(s, CacheStatus::Miss);
    }

    #[tokio::test]
    async fn lru_evicts_the_least_recently_used_valid_key() {
        let cache = Arc::new(KeyCache::new(2, 2));
        let calls = Arc::new(AtomicUsize::new(0));
        let [a, b, c] = [digest(b"a"), digest(b"b"), digest(b"c")];
        for d in [a, b] {
            cache.resolve(d, LIFETIMES, counted(&calls, Answer::Valid(info("acc")))).await;
        }
        cache.resolve(a, LIFETIMES, counted(&calls, Answer::Valid(info("acc")))).await; // touch a
        cache.resolve(c, LIFETIMES, counted(&calls, Answer::Valid(info("acc")))).await; // evicts b
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(cache.resolve(a, LIFETIMES, counted(&calls, Answer::Invalid { status: 404 })).await.1, CacheStatus::Hit);
        assert_eq!(cache.resolve(b, LIFETIMES, counted(&calls, Answer::Valid(info("acc")))).await.1, CacheStatus::Miss);
    }

    #[tokio::test]
    async fn unavailable_is_never_cached() {
        let cache = Arc::new(KeyCache::new(2, 2));
        let calls = Arc::new(AtomicUsize::new(0));
        let d = digest(b"k");
        let down = Answer::Unavailable(Trouble::Status(503));
        assert_eq!(cache.resolve(d, LIFETIMES, counted(&calls, down.clone())).await, (Verdict::Unavailable, CacheStatus::Miss));
        assert_eq!(cache.len(), (0, 0));
        let (v, s) = cache.resolve(d, LIFETIMES, counted(&calls, Answer::Valid(info("acc")))).await;
        assert_eq!((matches!(v, Verdict::Valid(_)), s), (true, CacheStatus::Miss));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cache_ids_separate_services_and_tokens_without_holding_the_token() {
        let a = cache_id("http://a/", "/v", Some("secret-token"));
        assert_eq!(a, cache_id("http://a", "/v", Some("secret-token")));
        assert_ne!(a, cache_id("http://a", "/v", Some("other")));
        assert_ne!(a, cache_id("http://a", "/w", Some("secret-token")));
        assert_ne!(a, cache_id("http://a", "/v", None));
        assert!(!a.contains("secret-token"));
        assert!(Arc::ptr_eq(&shared(&a), &shared(&a)));
        assert!(!Arc::ptr_eq(&shared(&a), &shared(&cache_id("http://a", "/v", None))));
    }

    fn state() -> State {
        State { positive: Lru::new("positive", 4), negative: Lru::new("negative", 4), flights: HashMap::new() }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn valid_entries_live_cache_ttl_and_a_key_expiry_shortens_it() {
        let mut st = state();
        let (a, b) = (digest(b"a"), digest(b"b"));
        st.settle(a, Answer::Valid(info("acc")), S(100), 1_000_000);
        let expiring = KeyInfo { expires_at: Some(1_000_010), ..info("acc") };
        st.settle(b, Answer::Valid(expiring), S(100), 1_000_000);
        assert!(matches!(st.cached(&a, LIFETIMES, S(159)), Some((Verdict::Valid(_), CacheStatus::Hit))));
        assert!(st.cached(&a, LIFETIMES, S(160)).is_none(), "60 s after it was learnt");
        assert!(st.cached(&b, LIFETIMES, S(109)).is_some());
        assert!(st.cached(&b, LIFETIMES, S(110)).is_none(), "expires_at caps the TTL");
        let no_ttl = Lifetimes { positive: Duration::ZERO, ..LIFETIMES };
        assert!(st.cached(&a, no_ttl, S(100)).is_none(), "cache_ttl 0 never serves from the cache");
    }

    #[test]
    fn stale_serving_is_bounded_by_stale_if_error_and_the_key_expiry() {
        let mut st = state();
        let (a, b) = (digest(b"a"), digest(b"b"));
        st.settle(a, Answer::Valid(info("acc")), S(0), 1_000_000);
        st.settle(b, Answer::Valid(KeyInfo { expires_at: Some(1_000_070), ..info("acc") }), S(0), 1_000_000);
        let stale = Lifetimes { stale_if_error: S(30), ..LIFETIMES };
        assert!(st.stale(&a, LIFETIMES, S(61)).is_none(), "stale_if_error 0 serves nothing stale");
        assert!(st.stale(&a, stale, S(89)).is_some());
        assert!(st.stale(&a, stale, S(90)).is_none());
        assert!(st.stale(&b, stale, S(69)).is_some());
        assert!(st.stale(&b, stale, S(70)).is_none(), "never past the key's own expiry");
    }

    #[test]
    fn an_invalid_answer_ends_a_valid_entry_and_stale_serving() {
        let mut st = state();
        let a = digest(b"a");
        let stale = Lifetimes { stale_if_error: S(3600), ..LIFETIMES };
        st.settle(a, Answer::Valid(info("acc")), S(0), 1_000_000);
        st.settle(a, Answer::Invalid { status: 403 }, S(61), 1_000_061);
        assert!(matches!(st.cached(&a, stale, S(62)), Some((Verdict::Invalid, CacheStatus::Negative))));
        assert!(st.stale(&a, stale, S(62)).is_none(), "revoked keys are never served stale");
        assert!(st.cached(&a, stale, S(61 + 15)).is_none(), "negative entries live negative_cache_ttl");
        st.settle(a, Answer::Unavailable(Trouble::Timeout(500)), S(80), 1_000_080);
        assert_eq!((st.positive.len(), st.negative.len()), (0, 1), "unavailable changes nothing");
        st.settle(a, Answer::Valid(info("acc")), S(90), 1_000_090);
        assert_eq!((st.positive.len(), st.negative.len()), (1, 0), "a valid answer replaces the negative entry");
    }

    #[test]
    fn a_key_already_expired_by_our_clock_is_not_cached() {
        let mut st = state();
        let a = digest(b"a");
        let fetched = st.settle(a, Answer::Valid(KeyInfo { expires_at: Some(999_999), ..info("acc") }), S(0), 1_000_000);
        assert!(matches!(fetched, Fetched::Valid(_)));
        assert_eq!(st.positive.len(), 0);
    }
}
