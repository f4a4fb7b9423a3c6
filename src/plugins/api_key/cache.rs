//! The verdict cache of `ghasi-api-key-lookup` (design.md §3): process-wide, keyed by a keyed
//! hash of the API key, with single-flight lookups and separate budgets for valid and invalid
//! keys.
//!
//! * **Keyed hash, never the key.** Entries are keyed by `HMAC-SHA256(pepper, key)` (its first
//!   128 bits) with a random pepper drawn once per process, so neither the cache nor a memory
//!   dump nor a log line holds a plaintext key, and the digests cannot be precomputed offline.
//! * **Single flight.** Concurrent misses for one key wait on the one lookup in flight. The
//!   lookup runs in its own task, so it completes (and fills the cache) even if the request
//!   that started it goes away.
//! * **Separate budgets.** Valid and invalid verdicts live in two bounded maps, each evicting
//!   (approximately) the least recently used entry: a flood of random keys fills and churns
//!   the negative map only and cannot evict valid keys.
//! * **Per-instance lifetimes.** Entries record *when* they were learnt; each instance applies
//!   its own `cache_ttl`, `negative_cache_ttl` and `stale_if_error` when reading, so instances
//!   with different settings can share one cache. A key's own `expires_at` caps every use.
//! * **Transient failures are never cached.** "Unavailable" leaves the cache as it was; a
//!   valid entry may then be served stale, within `stale_if_error`, but never after
//!   auth-service answered "invalid" (that answer removes the valid entry).
//!
//! **Memory.** The valid budget is `--api-key-cache-entries` (default 1,000,000) per
//! auth-service; it holds only keys auth-service confirmed, so clients cannot fill it with
//! made-up keys, and it takes memory only as it fills. No entry has an allocation of its
//! own (a million small long-lived allocations amid the requests' short-lived ones cost
//! glibc ≈ 200 bytes of fragmentation each, more than the entries themselves):
//!
//! * an 88-byte slot in one `Vec` (digest, last use, learnt, expiry, identity handle);
//! * ≈ 10 bytes of index: a `hashbrown` table of `u32` slot numbers, hashed by the digest's
//!   own first 8 bytes (already a keyed hash: nobody without the pepper can aim at a bucket);
//! * the identity's text (its four values concatenated) in shared append-only blocks of
//!   64 KiB (`Texts`); a [`KeyIdentity`] is a reference-counted view into a block, so a hit
//!   costs one reference-count increment. Blocks whose entries are mostly gone are emptied
//!   by moving the survivors (a few slots checked per change), so dead text stays bounded.
//!
//! Measured (`scripts/bench --only memory`, 42-byte identities): 146 bytes of RSS per
//! cached key, 145 MiB with 1,000,000 keys cached.
//!
//! Eviction samples [`SAMPLE`] slots (one from each of as many equal stretches of the `Vec`)
//! and removes the least recently used of them, like Redis's `allkeys-lru`; with at most
//! [`SAMPLE`] entries that is exact LRU. A hit is one table probe under the mutex.
//!
//! All times come from [`crate::clock`], so tests move the process clock instead of sleeping.
//! The registry holds one cache per auth-service (URL, lookup path and service token), for
//! the life of the process: a Kong reconfiguration replaces instances, and the cache should
//! survive that.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hashbrown::HashTable;
use hmac::{Hmac, KeyInit, Mac};
use parking_lot::{Mutex, MutexGuard};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sha2::Sha256;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::client::{Answer, KeyInfo, MAX_IDENTITY_LEN};
use crate::{clock, metrics};

/// `HMAC-SHA256(pepper, key)`, its first 128 bits: still keyed, and a collision among even
/// billions of keys is out of reach (birthday bound ≈ 2⁶⁴).
pub type Digest = [u8; 16];

/// Valid keys kept at most per auth-service unless `--api-key-cache-entries` says otherwise.
pub const DEFAULT_POSITIVE_CAPACITY: usize = 1_000_000;
/// Invalid keys kept at most. Deliberately small: negative entries protect auth-service from
/// repeated bad keys, and a flood of distinct ones should churn here, not grow memory.
pub const NEGATIVE_CAPACITY: usize = 4_096;
/// Entries compared per eviction.
pub const SAMPLE: usize = 16;

static POSITIVE_CAPACITY: AtomicUsize = AtomicUsize::new(DEFAULT_POSITIVE_CAPACITY);

/// Sets the valid-key budget of caches created from now on (`--api-key-cache-entries`; the
/// server calls it at startup, before any instance exists). At least 1.
pub fn set_positive_capacity(entries: usize) {
    POSITIVE_CAPACITY.store(entries.max(1), Ordering::Relaxed);
}

/// The valid-key budget new caches get.
pub fn positive_capacity() -> usize {
    POSITIVE_CAPACITY.load(Ordering::Relaxed)
}

/// The keyed hash of an API key, with this process's pepper.
pub fn digest(key: &[u8]) -> Digest {
    static KEYED: OnceLock<Hmac<Sha256>> = OnceLock::new();
    let keyed = KEYED.get_or_init(|| {
        let pepper: [u8; 32] = rand::random();
        Hmac::<Sha256>::new_from_slice(&pepper).expect("HMAC accepts any key length")
    });
    let mut mac = keyed.clone();
    mac.update(key);
    let full = mac.finalize().into_bytes();
    let mut digest = [0; 16];
    digest.copy_from_slice(&full[..16]);
    digest
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
    /// `refresh_ahead`: a hit this close to the end of `positive` starts one background
    /// revalidation (capped at half of `positive`; zero: never).
    pub refresh_ahead: Duration,
}

/// The identity of a valid key as the cache keeps it and a request reads it: a view into
/// the shared text of its block (`Texts`), so a clone is one reference-count increment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    /// `account_id`, `key_id`, `user_id`, `consumer_username`, concatenated; an absent
    /// optional value is empty (auth-service's empty string means absent too).
    text: Bytes,
    /// Where the first three values end in `text`; the last one runs to its end.
    ends: [u16; 3],
}

// The client refuses identity values longer than MAX_IDENTITY_LEN, so the ends fit a u16.
const _: () = assert!(4 * MAX_IDENTITY_LEN <= u16::MAX as usize);

/// The text and ends of a [`KeyIdentity`], before it is stored.
fn concatenate(info: &KeyInfo) -> (String, [u16; 3]) {
    let parts = [
        info.account_id.as_str(),
        info.key_id.as_str(),
        info.user_id.as_deref().unwrap_or(""),
        info.consumer_username.as_deref().unwrap_or(""),
    ];
    let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    let mut ends = [0; 3];
    for (i, part) in parts.into_iter().enumerate() {
        text.push_str(part);
        if let Some(end) = ends.get_mut(i) {
            *end =
                u16::try_from(text.len()).expect("identity values are at most MAX_IDENTITY_LEN bytes (client checks)");
        }
    }
    (text, ends)
}

impl KeyIdentity {
    /// An identity with a buffer of its own (one not kept in the cache).
    pub fn new(info: &KeyInfo) -> KeyIdentity {
        let (text, ends) = concatenate(info);
        KeyIdentity { text: Bytes::from(text), ends }
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { usize::from(self.ends[i - 1]) };
        let end = self.ends.get(i).map_or(self.text.len(), |&e| usize::from(e));
        std::str::from_utf8(&self.text[start..end]).expect("built from whole strings")
    }

    pub fn account_id(&self) -> &str {
        self.part(0)
    }

    /// Public identifier of the key (never the key).
    pub fn key_id(&self) -> &str {
        self.part(1)
    }

    pub fn user_id(&self) -> Option<&str> {
        Some(self.part(2)).filter(|s| !s.is_empty())
    }

    pub fn consumer_username(&self) -> Option<&str> {
        Some(self.part(3)).filter(|s| !s.is_empty())
    }

    fn is(&self, text: &str, ends: [u16; 3]) -> bool {
        self.ends == ends && self.text == text.as_bytes()
    }
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid(KeyIdentity),
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

/// Milliseconds on the [`clock::now`] scale (entries store times as `u64` milliseconds).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A valid verdict and when it was learnt.
struct Positive {
    identity: KeyIdentity,
    /// The [`Texts`] block holding `identity`'s text.
    block: u32,
    /// When it was learnt, ms.
    learnt: u64,
    /// The key's own expiry, ms; `u64::MAX` when it has none.
    expires: u64,
    /// A background revalidation was started for this `learnt` (at most one per lifetime;
    /// fits the slot's padding, so it costs no memory).
    revalidating: bool,
}

impl Positive {
    fn usable_until(&self, lifetime: Duration) -> u64 {
        self.learnt.saturating_add(millis(lifetime)).min(self.expires)
    }

    /// Whether a hit at `now` should start the background revalidation of this lifetime.
    fn revalidation_due(&self, lifetimes: Lifetimes, now: u64) -> bool {
        let window = lifetimes.refresh_ahead.min(lifetimes.positive / 2);
        !self.revalidating
            && !window.is_zero()
            && now >= self.learnt.saturating_add(millis(lifetimes.positive - window))
    }
}

/// The result of one lookup, as handed to every request waiting on it.
#[derive(Debug, Clone)]
enum Fetched {
    Valid(KeyIdentity),
    Invalid,
    Unavailable,
}

type Flight = watch::Receiver<Option<Fetched>>;

/// Background revalidations in flight at most, per cache: hot keys are refreshed without
/// letting a burst of them become a burst of auth-service calls.
pub const MAX_REVALIDATIONS: usize = 32;
/// Valid entries checked per lock acquisition when evicting by key or account id (a scan of
/// 1,000,000 entries thus never holds the lock for more than one chunk; see `evict_where`).
const EVICT_CHUNK: usize = 16_384;

/// One auth-service's verdicts.
pub struct KeyCache {
    state: Mutex<State>,
    /// Permits for background revalidations ([`MAX_REVALIDATIONS`]).
    revalidations: Arc<Semaphore>,
}

struct State {
    positive: Lru<Positive>,
    /// The text of the positive entries' identities.
    texts: Texts,
    /// When each invalid verdict was learnt, ms.
    negative: Lru<u64>,
    flights: HashMap<Digest, Flight>,
    /// Bumped by every revocation; a lookup started under an older epoch may answer its
    /// waiters but cannot store a valid verdict (it may predate the revocation).
    epoch: u64,
}

impl KeyCache {
    pub fn new(positive_capacity: usize, negative_capacity: usize) -> KeyCache {
        KeyCache {
            state: Mutex::new(State::new(positive_capacity, negative_capacity)),
            revalidations: Arc::new(Semaphore::new(MAX_REVALIDATIONS)),
        }
    }

    /// Decides about the key whose digest is `digest`: from the cache when a fresh entry
    /// exists, else by joining the lookup in flight, else by starting `lookup` (once).
    pub async fn resolve<L, F>(
        self: &Arc<Self>,
        digest: Digest,
        lifetimes: Lifetimes,
        lookup: L,
    ) -> (Verdict, CacheStatus)
    where
        L: FnOnce() -> F,
        F: Future<Output = Answer> + Send + 'static,
    {
        let (mut flight, status) = {
            let mut state = self.state.lock();
            if let Some((cached, due)) = state.fresh(&digest, lifetimes, clock::now()) {
                if due {
                    self.revalidate(&mut state, digest, lookup);
                }
                return cached;
            }
            // A flight whose task died without an answer (a panic) is replaced.
            match state.flights.get(&digest).filter(|f| f.has_changed().is_ok()) {
                Some(flight) => (flight.clone(), CacheStatus::Coalesced),
                None => (self.start_flight(&mut state, digest, lookup(), None), CacheStatus::Miss),
            }
        };
        let fetched = match flight.wait_for(Option::is_some).await {
            Ok(value) => value.clone().unwrap_or(Fetched::Unavailable),
            Err(_) => Fetched::Unavailable,
        };
        match fetched {
            Fetched::Valid(identity) => (Verdict::Valid(identity), status),
            Fetched::Invalid => (Verdict::Invalid, status),
            Fetched::Unavailable => match self.state.lock().stale(&digest, lifetimes, clock::now()) {
                Some(identity) => (Verdict::Valid(identity), CacheStatus::Stale),
                None => (Verdict::Unavailable, status),
            },
        }
    }

    /// Starts the lookup of `digest` on its own task and registers it as the key's flight.
    /// `permit` marks a background revalidation (counted, and bounded by the semaphore).
    fn start_flight<F>(
        self: &Arc<Self>,
        state: &mut State,
        digest: Digest,
        lookup: F,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Flight
    where
        F: Future<Output = Answer> + Send + 'static,
    {
        let (tx, rx) = watch::channel(None);
        state.flights.insert(digest, rx.clone());
        let cache = Arc::clone(self);
        let epoch = state.epoch;
        tokio::spawn(async move {
            let answer = lookup.await;
            // Recording the answer and ending the flight happen under one lock,
            // so a request arriving meanwhile sees either the flight or the entry.
            let fetched = cache.state.lock().settle_since(digest, answer, clock::now(), clock::unix_now(), epoch);
            if let Some(permit) = permit {
                drop(permit);
                let result = match fetched {
                    Fetched::Valid(_) => "valid",
                    Fetched::Invalid => "invalid",
                    Fetched::Unavailable => "unavailable",
                };
                metrics::global()
                    .api_key_revalidations
                    .get_or_create(&metrics::CacheLabels { plugin: super::NAME, result })
                    .inc();
            }
            // Nobody waiting any more is fine: the cache is filled already.
            let _ = tx.send(Some(fetched));
        });
        rx
    }

    /// A hit near the end of its lifetime: looks the key up again in the background (with
    /// the key this request presented; the cache never holds it), once per lifetime, unless
    /// a lookup of it is already in flight or [`MAX_REVALIDATIONS`] are. The request itself
    /// goes on with the cached verdict.
    fn revalidate<L, F>(self: &Arc<Self>, state: &mut State, digest: Digest, lookup: L)
    where
        L: FnOnce() -> F,
        F: Future<Output = Answer> + Send + 'static,
    {
        if state.flights.get(&digest).is_some_and(|f| f.has_changed().is_ok()) {
            return;
        }
        let Ok(permit) = self.revalidations.clone().try_acquire_owned() else {
            return; // busy: a later hit of this lifetime tries again
        };
        if let Some(p) = state.positive.get_mut(&digest) {
            p.revalidating = true;
        }
        self.start_flight(state, digest, lookup(), Some(permit));
    }

    /// Drops the valid verdict of every key whose id is `key_id` (revocation message
    /// `api_key`); returns how many were dropped.
    pub fn evict_key_id(&self, key_id: &str) -> usize {
        self.evict_where(|identity| identity.key_id() == key_id)
    }

    /// Drops the valid verdict of every key of `account_id` (revocation message `account`).
    pub fn evict_account(&self, account_id: &str) -> usize {
        self.evict_where(|identity| identity.account_id() == account_id)
    }

    /// Drops every verdict, valid and invalid (revocation message `flush`, and every
    /// (re)subscription: messages published while unsubscribed are lost). The entries are
    /// taken out under the lock and freed after it.
    pub fn flush(&self) -> usize {
        let taken = {
            let mut state = self.state.lock();
            state.epoch += 1;
            let positive = state.positive.take_all();
            let negative = state.negative.take_all();
            let texts = std::mem::replace(&mut state.texts, Texts::new());
            (positive, negative, texts)
        };
        taken.0 .0.len() + taken.1 .0.len()
    }

    /// Removes the valid entries whose identity matches, scanning the slots from the last to
    /// the first, [`EVICT_CHUNK`] per lock acquisition so that requests wait at most one
    /// chunk. Why from the end: a removal moves the *last* slot into the hole, so between
    /// chunks entries only move from already scanned (higher) positions to lower ones and no
    /// entry present at the start is skipped; entries added meanwhile come from lookups
    /// started after the epoch bump, i.e. after the revocation. No per-account index: it
    /// would cost every cached key memory for a rare event (measured: see the report in
    /// `crates/bench`, `revocation` scenario).
    fn evict_where(&self, matches: impl Fn(&KeyIdentity) -> bool) -> usize {
        let mut removed = 0;
        let mut cursor = {
            let mut state = self.state.lock();
            state.epoch += 1;
            state.positive.len()
        };
        while cursor > 0 {
            let mut state = self.state.lock();
            cursor = cursor.min(state.positive.len());
            let stop = cursor.saturating_sub(EVICT_CHUNK);
            while cursor > stop {
                cursor -= 1;
                if matches(&state.positive.slots[cursor].value.identity) {
                    state.remove_positive_at(cursor);
                    removed += 1;
                }
            }
            // Hand the lock to a waiting request rather than taking it straight back (a
            // plain unlock lets this loop win again and again: requests would wait for the
            // whole scan).
            MutexGuard::unlock_fair(state);
        }
        removed
    }

    /// Entries held: (valid, invalid).
    pub fn len(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.positive.len(), state.negative.len())
    }
}

impl State {
    fn new(positive_capacity: usize, negative_capacity: usize) -> State {
        State {
            positive: Lru::new("positive", positive_capacity),
            texts: Texts::new(),
            negative: Lru::new("negative", negative_capacity),
            flights: HashMap::new(),
            epoch: 0,
        }
    }

    /// A fresh entry's decision, if there is one.
    #[cfg(test)]
    fn cached(&mut self, digest: &Digest, lifetimes: Lifetimes, now: Duration) -> Option<(Verdict, CacheStatus)> {
        self.fresh(digest, lifetimes, now).map(|(decision, _)| decision)
    }

    /// A fresh entry's decision, if there is one, and whether it is a hit due for its
    /// background revalidation.
    fn fresh(
        &mut self,
        digest: &Digest,
        lifetimes: Lifetimes,
        now: Duration,
    ) -> Option<((Verdict, CacheStatus), bool)> {
        let now = millis(now);
        if let Some(p) = self.positive.get(digest) {
            if now < p.usable_until(lifetimes.positive) {
                let due = p.revalidation_due(lifetimes, now);
                return Some(((Verdict::Valid(p.identity.clone()), CacheStatus::Hit), due));
            }
        }
        if let Some(&denied) = self.negative.get(digest) {
            if now < denied.saturating_add(millis(lifetimes.negative)) {
                return Some(((Verdict::Invalid, CacheStatus::Negative), false));
            }
        }
        None
    }

    /// Records a lookup's answer and ends its flight. `unix_now` is the wall clock in
    /// seconds, to turn the key's `expires_at` into a deadline on the `now` scale.
    #[cfg(test)]
    fn settle(&mut self, digest: Digest, answer: Answer, now: Duration, unix_now: u64) -> Fetched {
        self.settle_since(digest, answer, now, unix_now, self.epoch)
    }

    /// [`State::settle`] for a lookup started in `epoch`: a valid answer of a lookup that
    /// started before a revocation is handed to its waiters but not cached.
    fn settle_since(&mut self, digest: Digest, answer: Answer, now: Duration, unix_now: u64, epoch: u64) -> Fetched {
        self.flights.remove(&digest);
        let now = millis(now);
        match answer {
            Answer::Valid(info) if epoch != self.epoch => Fetched::Valid(KeyIdentity::new(&info)),
            Answer::Valid(info) => {
                self.negative.remove(&digest, drop);
                let expires = info.expires_at.map_or(u64::MAX, |at| {
                    let left_secs = at.saturating_sub(unix_now as i64).max(0) as u64;
                    now.saturating_add(left_secs.saturating_mul(1000))
                });
                let (text, ends) = concatenate(&info);
                if now >= expires {
                    // Valid by auth-service's clock, expired by ours: honour it once, keep nothing.
                    self.remove_positive(&digest);
                    return Fetched::Valid(KeyIdentity { text: Bytes::from(text), ends });
                }
                // A refresh of an unchanged identity keeps its text where it is.
                if let Some(p) = self.positive.get_mut(&digest).filter(|p| p.identity.is(&text, ends)) {
                    (p.learnt, p.expires, p.revalidating) = (now, expires, false);
                    return Fetched::Valid(p.identity.clone());
                }
                let (bytes, block) = self.texts.store(text.as_bytes());
                let identity = KeyIdentity { text: bytes, ends };
                let texts = &mut self.texts;
                let positive =
                    Positive { identity: identity.clone(), block, learnt: now, expires, revalidating: false };
                self.positive.insert(digest, positive, |old| texts.release(old.block, old.identity.text.len()));
                self.sweep();
                Fetched::Valid(identity)
            }
            Answer::Invalid { .. } => {
                self.remove_positive(&digest);
                self.negative.insert(digest, now, drop);
                Fetched::Invalid
            }
            Answer::Unavailable(_) => Fetched::Unavailable,
        }
    }

    fn remove_positive(&mut self, digest: &Digest) {
        let texts = &mut self.texts;
        if self.positive.remove(digest, |old| texts.release(old.block, old.identity.text.len())) {
            self.sweep();
        }
    }

    /// Removes the valid entry in slot `i`.
    fn remove_positive_at(&mut self, i: usize) {
        let old = self.positive.remove_at(i);
        self.positive.entries_gauge.dec();
        self.texts.release(old.block, old.identity.text.len());
        self.sweep();
    }

    /// Checks the next [`SWEEP`] valid entries and moves the text of those in a mostly
    /// empty block to the newest one, so that the block is freed once its last entry left.
    /// Called after each change of the valid entries: the changes that leave text behind
    /// also pay for a pass over all entries, in `len / SWEEP` changes.
    fn sweep(&mut self) {
        for _ in 0..SWEEP {
            let len = self.positive.len();
            if len == 0 {
                return;
            }
            let i = self.texts.cursor % len;
            self.texts.cursor = i + 1;
            let p = self.positive.value_at_mut(i);
            if self.texts.sparse(p.block) {
                let (bytes, block) = self.texts.store(&p.identity.text);
                self.texts.release(p.block, bytes.len());
                (p.identity.text, p.block) = (bytes, block);
            }
        }
    }

    /// auth-service is unavailable: a valid entry within `stale_if_error` may still serve.
    fn stale(&mut self, digest: &Digest, lifetimes: Lifetimes, now: Duration) -> Option<KeyIdentity> {
        let p = self.positive.get(digest)?;
        (millis(now) < p.usable_until(lifetimes.positive + lifetimes.stale_if_error)).then(|| p.identity.clone())
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

fn caches() -> &'static Mutex<HashMap<String, Arc<KeyCache>>> {
    static CACHES: OnceLock<Mutex<HashMap<String, Arc<KeyCache>>>> = OnceLock::new();
    CACHES.get_or_init(Default::default)
}

/// The process-wide cache of one auth-service, shared by every instance and Kong worker.
pub fn shared(id: &str) -> Arc<KeyCache> {
    caches()
        .lock()
        .entry(id.to_owned())
        .or_insert_with(|| Arc::new(KeyCache::new(positive_capacity(), NEGATIVE_CAPACITY)))
        .clone()
}

/// Every cache created so far (for revocation messages, which name a key, not a service).
pub fn all() -> Vec<Arc<KeyCache>> {
    caches().lock().values().cloned().collect()
}

/// Bytes per text block.
const BLOCK: usize = 64 * 1024;
/// Valid entries checked for a sparse block per change (see [`State::sweep`]).
const SWEEP: usize = 4;
/// The block of an empty text (none).
const NO_BLOCK: u32 = u32::MAX;

/// Where the identities of the valid entries live: append-only blocks of [`BLOCK`] bytes,
/// each handed out in slices that share its allocation by reference count
/// ([`bytes::BytesMut::split`]), so an entry's text costs its length and no allocation. A
/// block is freed when the last slice of it is dropped, by the cache or a request; the
/// counts here (per block: bytes handed out, bytes still used by an entry) tell
/// [`State::sweep`] which blocks to empty.
struct Texts {
    /// The unused rest of the newest block.
    open: BytesMut,
    open_id: u32,
    blocks: Vec<BlockUse>,
    /// Ids of freed blocks, for reuse.
    free_ids: Vec<u32>,
    /// The next valid entry [`State::sweep`] checks.
    cursor: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct BlockUse {
    filled: u32,
    live: u32,
}

impl Texts {
    fn new() -> Texts {
        Texts { open: BytesMut::new(), open_id: 0, blocks: vec![BlockUse::default()], free_ids: Vec::new(), cursor: 0 }
    }

    /// A copy of `text` in the newest block, and that block's id.
    fn store(&mut self, text: &[u8]) -> (Bytes, u32) {
        if text.is_empty() {
            return (Bytes::new(), NO_BLOCK);
        }
        if self.open.capacity() < text.len() {
            let retired = self.open_id;
            self.open = BytesMut::with_capacity(BLOCK.max(text.len()));
            self.open_id = self.free_ids.pop().unwrap_or_else(|| {
                self.blocks.push(BlockUse::default());
                (self.blocks.len() - 1) as u32
            });
            if self.blocks[retired as usize].live == 0 {
                self.free(retired);
            }
        }
        self.open.extend_from_slice(text);
        let used = &mut self.blocks[self.open_id as usize];
        used.filled += text.len() as u32;
        used.live += text.len() as u32;
        (self.open.split().freeze(), self.open_id)
    }

    /// An entry's text of `len` bytes in `block` is no longer used by the cache.
    fn release(&mut self, block: u32, len: usize) {
        if block == NO_BLOCK || len == 0 {
            return;
        }
        let used = &mut self.blocks[block as usize];
        used.live -= len as u32;
        if used.live == 0 && block != self.open_id {
            self.free(block);
        }
    }

    fn free(&mut self, block: u32) {
        self.blocks[block as usize] = BlockUse::default();
        self.free_ids.push(block);
    }

    /// A full block of which less than half is still used.
    fn sparse(&self, block: u32) -> bool {
        block != NO_BLOCK && block != self.open_id && {
            let used = self.blocks[block as usize];
            used.live < used.filled / 2
        }
    }
}

/// One entry of an [`Lru`].
struct Slot<V> {
    digest: Digest,
    /// The map's use counter at the entry's last read or write.
    used: u64,
    value: V,
}

/// The table hash of a digest: its first 8 bytes. The digest is already a keyed hash, so
/// nobody without the pepper can aim keys at one bucket.
fn table_hash(digest: &Digest) -> u64 {
    u64::from_le_bytes(digest[..8].try_into().expect("a digest has 16 bytes"))
}

/// A bounded map that, when full, evicts the least recently used of [`SAMPLE`] sampled
/// entries (of all of them while it holds at most [`SAMPLE`]), and reports its size and
/// evictions as metrics (`cache` label = its name). The entries live in one `Vec`; the index
/// maps a digest to its slot, so there is no allocation per entry.
struct Lru<V> {
    /// The entries, in no particular order: removing one moves the last into its place.
    slots: Vec<Slot<V>>,
    /// Slot numbers, found by [`table_hash`] of their digest.
    index: HashTable<u32>,
    tick: u64,
    capacity: usize,
    /// xorshift state, for sampling.
    rng: u64,
    entries_gauge: Gauge,
    evictions: Counter,
}

impl<V> Lru<V> {
    fn new(name: &'static str, capacity: usize) -> Self {
        Lru::with_seed(name, capacity, rand::random())
    }

    fn with_seed(name: &'static str, capacity: usize, seed: u64) -> Self {
        let labels = metrics::CacheNameLabels { plugin: super::NAME, cache: name };
        let m = metrics::global();
        Lru {
            slots: Vec::new(),
            index: HashTable::new(),
            tick: 0,
            capacity: capacity.clamp(1, u32::MAX as usize),
            rng: seed | 1,
            entries_gauge: m.cache_entries.get_or_create(&labels).clone(),
            evictions: m.cache_evictions.get_or_create(&labels).clone(),
        }
    }

    fn position(&self, digest: &Digest) -> Option<usize> {
        let slots = &self.slots;
        self.index.find(table_hash(digest), |&i| slots[i as usize].digest == *digest).map(|&i| i as usize)
    }

    fn get(&mut self, digest: &Digest) -> Option<&V> {
        self.get_mut(digest).map(|v| &*v)
    }

    fn get_mut(&mut self, digest: &Digest) -> Option<&mut V> {
        let i = self.position(digest)?;
        self.tick += 1;
        let slot = &mut self.slots[i];
        slot.used = self.tick;
        Some(&mut slot.value)
    }

    /// The value in slot `i` (`i < len`), without counting a use.
    fn value_at_mut(&mut self, i: usize) -> &mut V {
        &mut self.slots[i].value
    }

    /// Inserts or replaces; `dropped` gets the value replaced and those evicted.
    fn insert(&mut self, digest: Digest, value: V, mut dropped: impl FnMut(V)) {
        self.tick += 1;
        if let Some(i) = self.position(&digest) {
            let old = std::mem::replace(&mut self.slots[i], Slot { digest, used: self.tick, value });
            dropped(old.value);
            return;
        }
        let mut evicted = 0;
        while self.slots.len() >= self.capacity {
            let victim = self.victim();
            dropped(self.remove_at(victim));
            evicted += 1;
        }
        let i = u32::try_from(self.slots.len()).expect("capacity fits a u32");
        self.slots.push(Slot { digest, used: self.tick, value });
        let slots = &self.slots;
        self.index.insert_unique(table_hash(&digest), i, |&j| table_hash(&slots[j as usize].digest));
        if evicted > 0 {
            self.evictions.inc_by(evicted);
        }
        self.entries_gauge.inc_by(1 - evicted as i64);
    }

    /// The slot to evict: the least recently used of one random slot from each of
    /// [`SAMPLE`] equal stretches of `slots`. The sampled slots are distinct, so the victim
    /// is never one of the `SAMPLE - 1` most recently used entries.
    fn victim(&mut self) -> usize {
        let len = self.slots.len();
        if len <= SAMPLE {
            return (0..len).min_by_key(|&i| self.slots[i].used).unwrap_or(0);
        }
        let mut best = (u64::MAX, 0);
        for k in 0..SAMPLE {
            let (lo, hi) = (k * len / SAMPLE, (k + 1) * len / SAMPLE);
            let i = lo + (self.next_random() % (hi - lo) as u64) as usize;
            best = best.min((self.slots[i].used, i));
        }
        best.1
    }

    /// xorshift64*: fast, and good enough to spread samples.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Removes slot `i` (the last slot moves into its place) without touching the metrics.
    fn remove_at(&mut self, i: usize) -> V {
        let digest = self.slots[i].digest;
        if let Ok(entry) = self.index.find_entry(table_hash(&digest), |&j| j as usize == i) {
            entry.remove();
        } else {
            debug_assert!(false, "slot {i} is not indexed");
        }
        let removed = self.slots.swap_remove(i);
        if let Some(moved) = self.slots.get(i) {
            let from = self.slots.len() as u32;
            if let Some(j) = self.index.find_mut(table_hash(&moved.digest), |&j| j == from) {
                *j = i as u32;
            } else {
                debug_assert!(false, "slot {from} is not indexed");
            }
        }
        removed.value
    }

    /// Takes every entry out (the caller frees them, after its lock): the slots and the
    /// index.
    fn take_all(&mut self) -> (Vec<Slot<V>>, HashTable<u32>) {
        self.entries_gauge.dec_by(self.slots.len() as i64);
        (std::mem::take(&mut self.slots), std::mem::take(&mut self.index))
    }

    /// Removes `digest`'s entry, if any, handing its value to `dropped`.
    fn remove(&mut self, digest: &Digest, dropped: impl FnOnce(V)) -> bool {
        let Some(i) = self.position(digest) else {
            return false;
        };
        dropped(self.remove_at(i));
        self.entries_gauge.dec();
        true
    }

    fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::api_key::client::{self, Trouble};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LIFETIMES: Lifetimes = Lifetimes {
        positive: Duration::from_secs(60),
        negative: Duration::from_secs(15),
        stale_if_error: Duration::ZERO,
        refresh_ahead: Duration::ZERO,
    };

    fn info(account: &str) -> KeyInfo {
        KeyInfo {
            account_id: account.into(),
            key_id: "k".into(),
            user_id: None,
            consumer_username: None,
            expires_at: None,
        }
    }

    /// A lookup that counts its calls and answers `answer` after yielding a few times.
    fn counted(
        calls: &Arc<AtomicUsize>,
        answer: Answer,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Answer> + Send>> {
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
        assert_ne!(digest(b"key-1")[..], plain[..16]);
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
            assert!(matches!(verdict, Verdict::Valid(ref i) if i.account_id() == "acc"));
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
        let (_, s) =
            cache.resolve(digest(b"bad-49"), LIFETIMES, counted(&calls, Answer::Invalid { status: 404 })).await;
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
        assert_eq!(
            cache.resolve(a, LIFETIMES, counted(&calls, Answer::Invalid { status: 404 })).await.1,
            CacheStatus::Hit
        );
        assert_eq!(cache.resolve(b, LIFETIMES, counted(&calls, Answer::Valid(info("acc")))).await.1, CacheStatus::Miss);
    }

    #[tokio::test]
    async fn unavailable_is_never_cached() {
        let cache = Arc::new(KeyCache::new(2, 2));
        let calls = Arc::new(AtomicUsize::new(0));
        let d = digest(b"k");
        let down = Answer::Unavailable(Trouble::Status(503));
        assert_eq!(
            cache.resolve(d, LIFETIMES, counted(&calls, down.clone())).await,
            (Verdict::Unavailable, CacheStatus::Miss)
        );
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
        State::new(4, 4)
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
        let fetched =
            st.settle(a, Answer::Valid(KeyInfo { expires_at: Some(999_999), ..info("acc") }), S(0), 1_000_000);
        assert!(matches!(fetched, Fetched::Valid(_)));
        assert_eq!(st.positive.len(), 0);
    }

    #[test]
    fn key_identities_hold_the_four_values_in_one_string() {
        let full = KeyInfo {
            account_id: "acc_1".into(),
            key_id: "key_1".into(),
            user_id: Some("usr_é".into()),
            consumer_username: Some("shop".into()),
            expires_at: None,
        };
        let id = KeyIdentity::new(&full);
        assert_eq!(
            (id.account_id(), id.key_id(), id.user_id(), id.consumer_username()),
            ("acc_1", "key_1", Some("usr_é"), Some("shop"))
        );
        let bare = KeyIdentity::new(&info("acc"));
        assert_eq!(
            (bare.account_id(), bare.key_id(), bare.user_id(), bare.consumer_username()),
            ("acc", "k", None, None)
        );
        let empty = KeyIdentity::new(&KeyInfo { user_id: Some(String::new()), ..info("acc") });
        assert_eq!(empty.user_id(), None, "an empty value is absent, as auth-service's empty string");
        let longest = "x".repeat(client::MAX_IDENTITY_LEN);
        let long = KeyIdentity::new(&KeyInfo {
            account_id: longest.clone(),
            key_id: longest.clone(),
            user_id: Some(longest.clone()),
            consumer_username: Some(longest.clone()),
            expires_at: None,
        });
        assert_eq!(long.consumer_username(), Some(longest.as_str()));
        assert_eq!(id.clone().text.as_ptr(), id.text.as_ptr(), "a clone shares the text");
    }

    fn keyed(account: &str, key_id: &str) -> Answer {
        Answer::Valid(KeyInfo { key_id: key_id.into(), ..info(account) })
    }

    #[tokio::test]
    async fn revocations_evict_by_key_id_by_account_and_all() {
        let cache = Arc::new(KeyCache::new(100, 10));
        let calls = Arc::new(AtomicUsize::new(0));
        let keys = [("acc_a", "key_1"), ("acc_a", "key_2"), ("acc_b", "key_3"), ("acc_c", "key_4")];
        for (account, key_id) in keys {
            cache.resolve(digest(key_id.as_bytes()), LIFETIMES, counted(&calls, keyed(account, key_id))).await;
        }
        cache.resolve(digest(b"bad"), LIFETIMES, counted(&calls, Answer::Invalid { status: 404 })).await;
        let status = |key_id: &'static str| {
            let (cache, calls) = (cache.clone(), calls.clone());
            async move {
                cache.resolve(digest(key_id.as_bytes()), LIFETIMES, counted(&calls, keyed("acc_x", key_id))).await.1
            }
        };
        assert_eq!(cache.evict_key_id("key_1"), 1);
        assert_eq!(cache.evict_key_id("key_1"), 0);
        assert_eq!(cache.evict_account("acc_a"), 1, "key_2; key_1 is gone already");
        assert_eq!(cache.len(), (2, 1));
        assert_eq!(status("key_3").await, CacheStatus::Hit, "other accounts keep their verdicts");
        assert_eq!(status("key_1").await, CacheStatus::Miss, "a revoked key is looked up again");
        assert_eq!(status("key_2").await, CacheStatus::Miss);
        assert_eq!(cache.flush(), 5, "four valid, one invalid");
        assert_eq!(cache.len(), (0, 0));
        assert_eq!(status("key_4").await, CacheStatus::Miss);
    }

    #[test]
    fn chunked_eviction_finds_every_match_in_a_large_cache() {
        let mut st = State::new(100_000, 4);
        let keys = digests("many", 3 * EVICT_CHUNK + 7);
        for (i, d) in keys.iter().enumerate() {
            let account = if i % 10 == 0 { "acc_hit" } else { "acc_other" };
            st.settle(*d, keyed(account, &format!("key_{i}")), S(0), 1_000_000);
        }
        let cache = KeyCache { state: Mutex::new(st), revalidations: Arc::new(Semaphore::new(1)) };
        let want = keys.len().div_ceil(10);
        assert_eq!(cache.evict_account("acc_hit"), want);
        let st = cache.state.lock();
        assert_eq!(st.positive.len(), keys.len() - want);
        assert!(st.positive.slots.iter().all(|s| s.value.identity.account_id() == "acc_other"));
        assert_consistent(&st.positive);
    }

    #[test]
    fn a_lookup_started_before_a_revocation_does_not_cache_its_answer() {
        let mut st = state();
        let a = digest(b"a");
        let before = st.epoch;
        st.epoch += 1; // a revocation arrived while the lookup was in flight
        let fetched = st.settle_since(a, keyed("acc", "key_a"), S(0), 1_000_000, before);
        assert!(matches!(fetched, Fetched::Valid(ref i) if i.key_id() == "key_a"), "its waiters get the answer");
        assert_eq!(st.positive.len(), 0, "but it is not cached");
        st.settle(a, keyed("acc", "key_a"), S(1), 1_000_001);
        assert_eq!(st.positive.len(), 1, "a lookup started after the revocation is");
    }

    #[test]
    fn a_hit_near_the_end_of_its_lifetime_is_due_for_one_revalidation() {
        let mut st = state();
        let a = digest(b"a");
        let hot = Lifetimes { refresh_ahead: S(10), ..LIFETIMES };
        st.settle(a, keyed("acc", "k"), S(100), 1_000_000);
        let due = |st: &mut State, at: u64, l: Lifetimes| st.fresh(&a, l, S(at)).map(|(_, due)| due);
        assert_eq!(due(&mut st, 149, hot), Some(false), "before the window");
        assert_eq!(due(&mut st, 150, hot), Some(true), "the last 10 s of 60");
        assert_eq!(due(&mut st, 150, LIFETIMES), Some(false), "refresh_ahead 0: never");
        let greedy = Lifetimes { refresh_ahead: S(3600), ..LIFETIMES };
        assert_eq!(due(&mut st, 129, greedy), Some(false), "the window is at most half the lifetime");
        assert_eq!(due(&mut st, 130, greedy), Some(true));
        st.positive.get_mut(&a).unwrap().revalidating = true; // what `revalidate` does
        assert_eq!(due(&mut st, 155, hot), Some(false), "once per lifetime");
        st.settle(a, keyed("acc", "k"), S(156), 1_000_056);
        assert_eq!(due(&mut st, 157, hot), Some(false), "a new lifetime");
        assert_eq!(due(&mut st, 206, hot), Some(true), "with its own window");
    }

    /// Digests `0..n` of a test set.
    fn digests(set: &str, n: usize) -> Vec<Digest> {
        (0..n).map(|i| digest(format!("{set}-{i}").as_bytes())).collect()
    }

    /// Every entry is found at its slot, and nothing else is indexed.
    fn assert_consistent<V>(lru: &Lru<V>) {
        assert_eq!(lru.index.len(), lru.slots.len());
        for (i, slot) in lru.slots.iter().enumerate() {
            assert_eq!(lru.position(&slot.digest), Some(i));
        }
    }

    #[test]
    fn removal_and_eviction_keep_the_index_consistent() {
        let mut lru = Lru::with_seed("test-index", 50, 7);
        let keys = digests("index", 200);
        for (n, d) in keys.iter().enumerate() {
            lru.insert(*d, n, drop);
            if n % 3 == 0 {
                lru.remove(&keys[n / 2], drop);
            }
            assert_consistent(&lru);
        }
        assert_eq!(lru.len(), 50);
        for d in &keys {
            if let Some(i) = lru.position(d) {
                assert_eq!(lru.slots[i].digest, *d);
            }
        }
        // Replacing a value neither grows nor evicts.
        let present = lru.slots[10].digest;
        lru.insert(present, 999, drop);
        assert_eq!((lru.len(), lru.get(&present).copied()), (50, Some(999)));
        assert_consistent(&lru);
    }

    #[test]
    fn sampled_eviction_never_takes_one_of_the_most_recently_used() {
        let mut lru = Lru::with_seed("test-hot", 64, 1);
        let keys = digests("hot", 64);
        for d in &keys {
            lru.insert(*d, (), drop);
        }
        let hot = &keys[..SAMPLE - 1];
        for (n, d) in digests("new", 1_000).into_iter().enumerate() {
            for h in hot {
                assert!(lru.get(h).is_some(), "hot key evicted before insert {n}");
            }
            lru.insert(d, (), drop);
        }
        assert_eq!(lru.len(), 64);
        assert_eq!(lru.evictions.get(), 1_000);
        assert_eq!(lru.entries_gauge.get(), 64);
        assert_consistent(&lru);
    }

    #[test]
    fn sampled_eviction_evicts_the_least_recently_used_among_the_sample() {
        let mut lru = Lru::with_seed("test-sampled", 1_000, 42);
        let keys = digests("old", 1_000);
        for d in &keys {
            lru.insert(*d, (), drop);
        }
        // The first half is read again: the second half is now the least recently used.
        for d in &keys[..500] {
            lru.get(d);
        }
        for d in digests("fresh", 100) {
            lru.insert(d, (), drop);
        }
        let kept = |range: std::ops::Range<usize>| keys[range].iter().filter(|d| lru.position(d).is_some()).count();
        // A recently read key goes only if all 16 samples are recent (≤ 0.6¹⁶ per eviction).
        assert_eq!(kept(0..500), 500, "no recently read key was evicted");
        assert_eq!(kept(500..1_000), 400, "100 of the unread ones were");
        // The victim is the oldest of its sample: the earliest inserted of the unread half
        // go first.
        assert!(kept(500..600) + 30 < kept(900..1_000), "{} vs {}", kept(500..600), kept(900..1_000));
        assert_eq!(lru.evictions.get(), 100);
    }

    /// Bytes of text held by the blocks the cache still uses, and bytes its entries use.
    fn text_use(st: &State) -> (usize, usize) {
        let held = st.texts.blocks.iter().map(|b| b.filled as usize).sum();
        let live: usize = st.positive.slots.iter().map(|s| s.value.identity.text.len()).sum();
        let counted: usize = st.texts.blocks.iter().map(|b| b.live as usize).sum();
        assert_eq!(live, counted, "the block counts match the entries");
        (held, live)
    }

    #[test]
    fn a_valid_entry_is_an_88_byte_slot() {
        // The module doc's memory figures assume this layout (64-bit).
        assert_eq!(std::mem::size_of::<KeyIdentity>(), 40);
        assert_eq!(std::mem::size_of::<Slot<Positive>>(), 88);
        assert_eq!(std::mem::size_of::<Slot<u64>>(), 32);
    }

    #[test]
    fn identities_share_blocks_and_a_refresh_keeps_its_text() {
        let mut st = State::new(100, 4);
        let (a, b) = (digest(b"a"), digest(b"b"));
        let Fetched::Valid(ia) = st.settle(a, Answer::Valid(info("acc_a")), S(0), 1_000_000) else { panic!() };
        let Fetched::Valid(ib) = st.settle(b, Answer::Valid(info("acc_b")), S(0), 1_000_000) else { panic!() };
        assert_eq!(ia.text.as_ptr().wrapping_add(ia.text.len()), ib.text.as_ptr(), "one block, back to back");
        let Fetched::Valid(again) = st.settle(a, Answer::Valid(info("acc_a")), S(70), 1_000_070) else { panic!() };
        assert_eq!(again.text.as_ptr(), ia.text.as_ptr(), "an unchanged identity is not copied again");
        assert!(
            matches!(st.cached(&a, LIFETIMES, S(129)), Some((Verdict::Valid(_), CacheStatus::Hit))),
            "but learnt anew"
        );
        let Fetched::Valid(moved) = st.settle(a, Answer::Valid(info("acc_c")), S(80), 1_000_080) else { panic!() };
        assert_eq!(moved.account_id(), "acc_c");
        assert_eq!(text_use(&st), (3 * "acc_ak".len(), 2 * "acc_ak".len()));
        // A request may hold an identity longer than the cache does.
        st.settle(b, Answer::Invalid { status: 403 }, S(90), 1_000_090);
        assert_eq!(ib.account_id(), "acc_b");
    }

    #[test]
    fn dead_text_is_reclaimed_as_entries_come_and_go() {
        let mut st = State::new(20_000, 4);
        let valid = |i: usize| {
            Answer::Valid(KeyInfo {
                key_id: format!("key_{i:06}"),
                user_id: Some("usr_0001".into()),
                ..info("acc_0001")
            })
        };
        let keys = digests("churn", 100_000);
        for (i, d) in keys[..20_000].iter().enumerate() {
            st.settle(*d, valid(i), S(0), 1_000_000);
        }
        let (held, live) = text_use(&st);
        assert!(held <= live + BLOCK, "filled in order: {held} held for {live}");
        // Turn the cache over four times: evictions and revocations scattered everywhere.
        for (i, d) in keys.iter().enumerate().skip(20_000) {
            st.settle(*d, valid(i), S(0), 1_000_000);
            if i % 7 == 0 {
                st.settle(keys[i / 2], Answer::Invalid { status: 403 }, S(0), 1_000_000);
            }
            if i % 1_000 == 0 {
                let (held, live) = text_use(&st);
                assert!(held <= 2 * live + 2 * BLOCK, "after {i}: {held} bytes held for {live}");
            }
        }
        let (held, live) = text_use(&st);
        assert!(live > 0 && held <= 2 * live + 2 * BLOCK, "{held} bytes held for {live}");
    }
}
