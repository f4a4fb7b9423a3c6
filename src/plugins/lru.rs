//! The bounded map under both credential caches (the API-key verdicts and the JWT
//! verified tokens): keyed by a [`Digest`] of the services' keyed hash, holding its entries
//! in one `Vec` with an index of slot numbers, so no entry costs an allocation of its own,
//! and evicting like Redis's `allkeys-lru` (the least recently used of [`SAMPLE`] sampled
//! entries). Measured against `moka` at 1,000,000 keys: see `ghasi-bench cache-memory`.

use hashbrown::HashTable;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::keyed_hash::Digest;
use crate::metrics;

/// Entries compared per eviction.
pub const SAMPLE: usize = 16;

/// One entry of an [`Lru`].
pub(crate) struct Slot<V> {
    pub(crate) digest: Digest,
    /// The map's use counter at the entry's last read or write.
    used: u64,
    pub(crate) value: V,
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
pub(crate) struct Lru<V> {
    /// The entries, in no particular order: removing one moves the last into its place.
    pub(crate) slots: Vec<Slot<V>>,
    /// Slot numbers, found by [`table_hash`] of their digest.
    index: HashTable<u32>,
    tick: u64,
    capacity: usize,
    /// xorshift state, for sampling.
    rng: u64,
    pub(crate) entries_gauge: Gauge,
    evictions: Counter,
}

impl<V> Lru<V> {
    /// An empty map of at most `capacity` entries (at least 1), its metrics labelled
    /// `plugin` and `cache`.
    pub(crate) fn new(plugin: &'static str, cache: &'static str, capacity: usize) -> Self {
        Lru::with_seed(plugin, cache, capacity, rand::random())
    }

    fn with_seed(plugin: &'static str, cache: &'static str, capacity: usize, seed: u64) -> Self {
        let labels = metrics::CacheNameLabels { plugin, cache };
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

    pub(crate) fn position(&self, digest: &Digest) -> Option<usize> {
        let slots = &self.slots;
        self.index.find(table_hash(digest), |&i| slots[i as usize].digest == *digest).map(|&i| i as usize)
    }

    pub(crate) fn get(&mut self, digest: &Digest) -> Option<&V> {
        self.get_mut(digest).map(|v| &*v)
    }

    pub(crate) fn get_mut(&mut self, digest: &Digest) -> Option<&mut V> {
        let i = self.position(digest)?;
        self.tick += 1;
        let slot = &mut self.slots[i];
        slot.used = self.tick;
        Some(&mut slot.value)
    }

    /// The value in slot `i` (`i < len`), without counting a use.
    pub(crate) fn value_at_mut(&mut self, i: usize) -> &mut V {
        &mut self.slots[i].value
    }

    /// Inserts or replaces; `dropped` gets the value replaced and those evicted.
    pub(crate) fn insert(&mut self, digest: Digest, value: V, mut dropped: impl FnMut(V)) {
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
    pub(crate) fn remove_at(&mut self, i: usize) -> V {
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
    pub(crate) fn take_all(&mut self) -> (Vec<Slot<V>>, HashTable<u32>) {
        self.entries_gauge.dec_by(self.slots.len() as i64);
        (std::mem::take(&mut self.slots), std::mem::take(&mut self.index))
    }

    /// Removes `digest`'s entry, if any, handing its value to `dropped`.
    pub(crate) fn remove(&mut self, digest: &Digest, dropped: impl FnOnce(V)) -> bool {
        let Some(i) = self.position(digest) else {
            return false;
        };
        dropped(self.remove_at(i));
        self.entries_gauge.dec();
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
impl<V> Lru<V> {
    /// Every entry is found at its slot, and nothing else is indexed.
    pub(crate) fn assert_consistent(&self) {
        assert_eq!(self.index.len(), self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            assert_eq!(self.position(&slot.digest), Some(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digests `0..n` of a test set (any distinct digests do: the map does not hash them).
    fn digests(set: &str, n: usize) -> Vec<Digest> {
        use sha2::Digest as _;
        (0..n)
            .map(|i| {
                let full: [u8; 32] = sha2::Sha256::digest(format!("{set}-{i}")).into();
                full[..16].try_into().unwrap()
            })
            .collect()
    }

    fn assert_consistent<V>(lru: &Lru<V>) {
        lru.assert_consistent();
    }

    #[test]
    fn removal_and_eviction_keep_the_index_consistent() {
        let mut lru = Lru::with_seed("test", "test-index", 50, 7);
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
        let mut lru = Lru::with_seed("test", "test-hot", 64, 1);
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
        let mut lru = Lru::with_seed("test", "test-sampled", 1_000, 42);
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
}
