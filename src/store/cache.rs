//! [`ObjectCache`]: the in-process LRU of what queries read from the store, bounded in bytes.
//!
//! It holds two kinds of entries, both keyed by object path:
//!
//! - decoded object indexes (`Arc<ObjectIndex>`), charged [`ObjectIndex::heap_bytes`];
//! - chunk byte ranges (`Bytes`), keyed by path, offset and length, charged their length.
//!
//! Every entry is also charged its key and a fixed overhead for the map and list nodes, so
//! many tiny entries cannot grow the cache far past its bound. Objects are immutable (each
//! flush writes a new key), so an entry never goes stale and nothing invalidates it.
//!
//! The `lru` crate's unbounded map gives the recency order; the byte accounting is ours:
//! after an insert, least-recent entries are evicted until the total is at or under the
//! bound. An entry larger than the whole bound is not cached at all (it would evict
//! everything and then itself). With a bound of 0 nothing is cached.
//!
//! The bound can change while the cache is in use ([`ObjectCache::set_max_bytes`]): the
//! memory accounting (`pressure::Memory`) gives the cache what the rest of the process
//! leaves, and lowers the bound at once, evicting down to it, when the rest grows.
//!
//! **Invariant:** `stats().bytes <= max_bytes()` after every call.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;
use object_store::path::Path;
use parking_lot::Mutex;

use super::object::ObjectIndex;

/// What every entry is charged on top of its key and value: the hash map slot, the list
/// node with its two pointers, and the enum tags, rounded up.
pub const ENTRY_OVERHEAD_BYTES: u64 = 96;

/// The two kinds of entry, for per-kind counters (`weft_cache_hits_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKind {
    /// A decoded object index.
    Index,
    /// A chunk's bytes.
    Chunk,
}

impl CacheKind {
    /// The metric label value: `index` or `chunk`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::Index => "index",
            CacheKind::Chunk => "chunk",
        }
    }
}

/// Counters of one cache, for metrics: `weft_cache_bytes`, `weft_cache_hits_total{kind}`,
/// `weft_cache_misses_total{kind}`, `weft_cache_evictions_total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes charged for the entries held now.
    pub bytes: u64,
    /// Entries held now.
    pub entries: u64,
    /// The bound.
    pub max_bytes: u64,
    /// Index lookups that found the index.
    pub index_hits: u64,
    /// Index lookups that did not.
    pub index_misses: u64,
    /// Chunk lookups that found the chunk.
    pub chunk_hits: u64,
    /// Chunk lookups that did not.
    pub chunk_misses: u64,
    /// Entries evicted to stay under the bound (replacements and refusals not counted).
    pub evictions: u64,
    /// Inserts refused because the entry alone is larger than the bound.
    pub oversize_refused: u64,
}

impl CacheStats {
    /// Hits of one kind.
    pub fn hits(&self, kind: CacheKind) -> u64 {
        match kind {
            CacheKind::Index => self.index_hits,
            CacheKind::Chunk => self.chunk_hits,
        }
    }

    /// Misses of one kind.
    pub fn misses(&self, kind: CacheKind) -> u64 {
        match kind {
            CacheKind::Index => self.index_misses,
            CacheKind::Chunk => self.chunk_misses,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Index(Path),
    Chunk { path: Path, offset: u64, len: u32 },
}

impl Key {
    fn path(&self) -> &Path {
        match self {
            Key::Index(p) | Key::Chunk { path: p, .. } => p,
        }
    }
}

#[derive(Debug)]
enum Value {
    Index(Arc<ObjectIndex>),
    Chunk(Bytes),
}

#[derive(Debug)]
struct Entry {
    value: Value,
    /// What the entry was charged when inserted, so removal subtracts exactly that.
    charge: u64,
}

struct Inner {
    lru: LruCache<Key, Entry>,
    stats: CacheStats,
}

/// A byte-bounded LRU of object indexes and chunk bytes. Share it as part of the catalog;
/// every method takes one short lock and never does I/O.
pub struct ObjectCache {
    /// The bound lives in `inner.stats.max_bytes`, under the same lock as the entries, so
    /// that an insert and a lowering of the bound cannot interleave.
    inner: Mutex<Inner>,
}

impl fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ObjectCache {
    /// An empty cache that holds at most `max_bytes` (charged as the module docs say).
    pub fn new(max_bytes: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                stats: CacheStats {
                    max_bytes,
                    ..CacheStats::default()
                },
            }),
        }
    }

    /// The bound.
    pub fn max_bytes(&self) -> u64 {
        self.inner.lock().stats.max_bytes
    }

    /// Changes the bound. A lower bound evicts least-recent entries at once, before this
    /// returns, so the memory is given back now rather than at the next insert.
    pub fn set_max_bytes(&self, max_bytes: u64) {
        let mut inner = self.inner.lock();
        inner.stats.max_bytes = max_bytes;
        Self::evict_to_bound(&mut inner);
    }

    /// Evicts least-recent entries until the total is within the bound.
    fn evict_to_bound(inner: &mut Inner) {
        while inner.stats.bytes > inner.stats.max_bytes {
            let Some((_, evicted)) = inner.lru.pop_lru() else {
                break;
            };
            inner.stats.bytes -= evicted.charge;
            inner.stats.entries -= 1;
            inner.stats.evictions += 1;
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.lock().stats
    }

    /// The decoded index of the object at `path`, if cached; marks it most recent.
    pub fn get_index(&self, path: &Path) -> Option<Arc<ObjectIndex>> {
        let key = Key::Index(path.clone());
        let mut inner = self.inner.lock();
        let found = match inner.lru.get(&key) {
            Some(Entry {
                value: Value::Index(ix),
                ..
            }) => Some(Arc::clone(ix)),
            _ => None,
        };
        match found {
            Some(_) => inner.stats.index_hits += 1,
            None => inner.stats.index_misses += 1,
        }
        found
    }

    /// Caches the decoded index of the object at `path`. Returns whether it was kept (it is
    /// not when it alone is larger than the bound).
    pub fn put_index(&self, path: &Path, index: Arc<ObjectIndex>) -> bool {
        let charge = index.heap_bytes() as u64;
        self.insert(Key::Index(path.clone()), Value::Index(index), charge)
    }

    /// The bytes of the chunk at `offset..offset + len` of the object at `path`, if cached;
    /// marks them most recent.
    pub fn get_chunk(&self, path: &Path, offset: u64, len: u32) -> Option<Bytes> {
        let key = Key::Chunk {
            path: path.clone(),
            offset,
            len,
        };
        let mut inner = self.inner.lock();
        let found = match inner.lru.get(&key) {
            Some(Entry {
                value: Value::Chunk(b),
                ..
            }) => Some(b.clone()),
            _ => None,
        };
        match found {
            Some(_) => inner.stats.chunk_hits += 1,
            None => inner.stats.chunk_misses += 1,
        }
        found
    }

    /// Caches a chunk's bytes (already verified by the caller). Returns whether they were
    /// kept.
    ///
    /// The bytes are copied into their own allocation first: a range read may hand back a
    /// slice of a larger buffer (the in-memory store slices the whole object), and holding
    /// that slice would pin the whole buffer while charging only the chunk.
    pub fn put_chunk(&self, path: &Path, offset: u64, bytes: &Bytes) -> bool {
        let Ok(len) = u32::try_from(bytes.len()) else {
            return false;
        };
        let key = Key::Chunk {
            path: path.clone(),
            offset,
            len,
        };
        let charge = u64::from(len);
        if Self::total_charge(&key, charge) > self.max_bytes() {
            // Refuse before copying.
            self.inner.lock().stats.oversize_refused += 1;
            return false;
        }
        self.insert(key, Value::Chunk(Bytes::copy_from_slice(bytes)), charge)
    }

    fn total_charge(key: &Key, value_bytes: u64) -> u64 {
        value_bytes
            .saturating_add(key.path().as_ref().len() as u64)
            .saturating_add(ENTRY_OVERHEAD_BYTES)
    }

    fn insert(&self, key: Key, value: Value, value_bytes: u64) -> bool {
        let charge = Self::total_charge(&key, value_bytes);
        let mut inner = self.inner.lock();
        if charge > inner.stats.max_bytes {
            inner.stats.oversize_refused += 1;
            return false;
        }
        if let Some(old) = inner.lru.put(key, Entry { value, charge }) {
            // The same key again (two queries fetched it at once): the old charge goes.
            inner.stats.bytes -= old.charge;
            inner.stats.entries -= 1;
        }
        inner.stats.bytes += charge;
        inner.stats.entries += 1;
        // The new entry is the most recent and fits on its own, so this stops before it.
        Self::evict_to_bound(&mut inner);
        debug_assert!(inner.stats.bytes <= inner.stats.max_bytes);
        debug_assert_eq!(inner.stats.entries, inner.lru.len() as u64);
        true
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::model::Labels;
    use crate::store::object::{ChunkMeta, SeriesIndex, ENCODING_XOR};

    fn seed() -> u64 {
        let seed = std::env::var("CACHE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("cache test seed: CACHE_TEST_SEED={seed}");
        seed
    }

    fn index(series: usize) -> Arc<ObjectIndex> {
        let chunk = ChunkMeta {
            encoding: ENCODING_XOR,
            min_t: 0,
            max_t: 1,
            offset: 16,
            len: 10,
            crc32: 0,
        };
        let series = (0..series)
            .map(|i| SeriesIndex {
                labels: Labels::from_strs([("__name__", "m"), ("i", &i.to_string())]).unwrap(),
                chunks: vec![chunk],
            })
            .collect();
        Arc::new(ObjectIndex {
            series,
            min_t: 0,
            max_t: 1,
            chunk_count: 1,
        })
    }

    fn path(i: u32) -> Path {
        Path::from(format!("t/chunks/{i:04}"))
    }

    /// What a chunk entry of `len` bytes under `path(i)` is charged.
    fn chunk_charge(len: u64) -> u64 {
        len + path(0).as_ref().len() as u64 + ENTRY_OVERHEAD_BYTES
    }

    #[test]
    fn the_byte_bound_holds_under_a_random_workload_and_counts_add_up() {
        let seed = seed();
        let mut rng = SmallRng::seed_from_u64(seed);
        let max = 64 << 10;
        let cache = ObjectCache::new(max);
        let (mut gets, mut puts) = (0u64, 0u64);
        for step in 0..20_000 {
            let p = path(rng.random_range(0..200));
            match rng.random_range(0..4) {
                0 => {
                    // Lengths from a small set, so gets can hit.
                    let len = rng.random_range(1..=8) * 2048;
                    cache.put_chunk(&p, 16, &Bytes::from(vec![step as u8; len]));
                    puts += 1;
                }
                1 => {
                    cache.put_index(&p, index(rng.random_range(1..40)));
                    puts += 1;
                }
                2 => {
                    let len = rng.random_range(1..=8) * 2048;
                    if let Some(b) = cache.get_chunk(&p, 16, len) {
                        // A hit is exactly the length asked for: the length is in the key.
                        assert_eq!(b.len(), len as usize, "seed {seed}");
                    }
                    gets += 1;
                }
                _ => {
                    cache.get_index(&p);
                    gets += 1;
                }
            }
            let s = cache.stats();
            assert!(s.bytes <= max, "seed {seed} step {step}: {s:?}");
        }
        let s = cache.stats();
        assert_eq!(
            s.index_hits + s.index_misses + s.chunk_hits + s.chunk_misses,
            gets
        );
        assert!(s.evictions > 0, "seed {seed}: the workload must overflow");
        assert!(s.entries <= puts);
        assert!(s.chunk_hits > 0 && s.index_hits > 0, "seed {seed}: {s:?}");
        // The recorded total is the sum of what the held entries were charged.
        let inner = cache.inner.lock();
        let sum: u64 = inner.lru.iter().map(|(_, e)| e.charge).sum();
        assert_eq!(sum, s.bytes, "seed {seed}");
    }

    #[test]
    fn the_least_recently_used_entry_is_evicted_first() {
        // Room for exactly three 100-byte chunks.
        let cache = ObjectCache::new(3 * chunk_charge(100));
        let b = Bytes::from(vec![1u8; 100]);
        for i in 0..3 {
            assert!(cache.put_chunk(&path(i), 0, &b));
        }
        // Touch 0, so 1 is now the least recent.
        assert!(cache.get_chunk(&path(0), 0, 100).is_some());
        assert!(cache.put_chunk(&path(3), 0, &b));
        assert!(cache.get_chunk(&path(1), 0, 100).is_none(), "1 was evicted");
        for i in [0, 2, 3] {
            assert!(cache.get_chunk(&path(i), 0, 100).is_some(), "{i} kept");
        }
        let s = cache.stats();
        assert_eq!(
            (s.entries, s.evictions, s.bytes),
            (3, 1, 3 * chunk_charge(100))
        );
        assert_eq!((s.chunk_hits, s.chunk_misses), (4, 1));
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_refused_and_evicts_nothing() {
        // Room for one 100-byte chunk and a little more, not for a 200-byte one.
        let cache = ObjectCache::new(chunk_charge(100) + 10);
        assert!(cache.put_chunk(&path(0), 0, &Bytes::from(vec![0u8; 100])));
        let before = cache.stats();
        assert!(!cache.put_chunk(&path(1), 0, &Bytes::from(vec![0u8; 200])));
        assert!(!cache.put_index(&path(2), index(10_000)));
        let after = cache.stats();
        assert_eq!(
            (after.bytes, after.entries, after.evictions),
            (before.bytes, 1, 0)
        );
        assert_eq!(after.oversize_refused, 2);
        assert!(cache.get_chunk(&path(0), 0, 100).is_some());
        assert!(cache.get_chunk(&path(1), 0, 200).is_none());
        assert!(cache.get_index(&path(2)).is_none());
    }

    #[test]
    fn a_zero_bound_caches_nothing() {
        let cache = ObjectCache::new(0);
        assert!(!cache.put_chunk(&path(0), 0, &Bytes::from_static(b"x")));
        assert!(!cache.put_index(&path(0), index(1)));
        assert_eq!(cache.stats().bytes, 0);
    }

    #[test]
    fn putting_the_same_key_twice_charges_it_once() {
        let cache = ObjectCache::new(1 << 20);
        let ix = index(3);
        cache.put_index(&path(0), ix.clone());
        let once = cache.stats().bytes;
        cache.put_index(&path(0), ix);
        assert_eq!(cache.stats().bytes, once);
        assert_eq!(cache.stats().entries, 1);
        // Index and chunk entries of the same path are different keys.
        cache.put_chunk(&path(0), 16, &Bytes::from_static(b"0123456789"));
        assert_eq!(cache.stats().entries, 2);
        assert!(cache.get_index(&path(0)).is_some());
        assert_eq!(
            cache.get_chunk(&path(0), 16, 10).unwrap(),
            Bytes::from_static(b"0123456789")
        );
        assert!(cache.get_chunk(&path(0), 17, 10).is_none());
    }

    #[test]
    fn lowering_the_bound_evicts_least_recent_entries_at_once_and_raising_it_keeps_them() {
        let cache = ObjectCache::new(4 * chunk_charge(100));
        let b = Bytes::from(vec![1u8; 100]);
        for i in 0..4 {
            assert!(cache.put_chunk(&path(i), 0, &b));
        }
        // Touch 0: 1 and 2 are now the least recent.
        assert!(cache.get_chunk(&path(0), 0, 100).is_some());
        cache.set_max_bytes(2 * chunk_charge(100));
        let s = cache.stats();
        assert_eq!(
            (s.bytes, s.entries, s.evictions, s.max_bytes),
            (2 * chunk_charge(100), 2, 2, 2 * chunk_charge(100))
        );
        assert!(cache.get_chunk(&path(1), 0, 100).is_none());
        assert!(cache.get_chunk(&path(2), 0, 100).is_none());
        assert!(cache.get_chunk(&path(0), 0, 100).is_some());
        assert!(cache.get_chunk(&path(3), 0, 100).is_some());
        // Inserts respect the lower bound.
        assert!(cache.put_chunk(&path(4), 0, &b));
        assert!(cache.stats().bytes <= 2 * chunk_charge(100));
        // A zero bound empties the cache; raising it again evicts nothing more.
        cache.set_max_bytes(0);
        assert_eq!(cache.stats().bytes, 0);
        assert!(!cache.put_chunk(&path(5), 0, &b));
        cache.set_max_bytes(1 << 20);
        assert!(cache.put_chunk(&path(5), 0, &b));
        assert_eq!(cache.stats().entries, 1);
    }

    #[test]
    fn a_cached_chunk_does_not_pin_the_buffer_it_was_sliced_from() {
        let cache = ObjectCache::new(1 << 20);
        let object = Bytes::from(vec![7u8; 4096]);
        cache.put_chunk(&path(0), 100, &object.slice(100..110));
        let held = cache.get_chunk(&path(0), 100, 10).unwrap();
        assert_eq!(held, object.slice(100..110));
        // A copy: its memory is not inside the object's buffer.
        let range = object.as_ptr_range();
        assert!(!range.contains(&held.as_ptr()));
    }
}
