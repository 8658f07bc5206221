//! The engine's lock-free maps: papaya, with removals deferred so that a key removed
//! and inserted again in a loop costs O(1) amortised, in time and in memory.
//!
//! papaya never reuses a removed entry's place: a key removed and inserted again is
//! placed past its own tombstone, and after `5 log2(capacity)` such cycles the probe
//! limit forces a resize of the whole table. Under incremental resizing those resizes
//! start faster than writers finish them, so a chain of full-size tables grows (24 KB a
//! cycle at 100k profiles, writes 8x slower after 100k cycles), and an iteration, which
//! first finishes every resize under way, need never end. Deleting a profile and
//! creating it again is what a platform does all the time (unsubscribe and subscribe,
//! re-imports), and it removes and re-inserts the same keys of the id map, the
//! published counters and the indexes.
//!
//! So a removal here only marks its entry vacant (an update in place: no tombstone),
//! and its key joins a queue of vacated keys; once the queue holds more than
//! [`VACANT_MIN`] or an eighth of the map, the oldest is removed for real if it is
//! still vacant. A key inserted again within that window takes its entry back in place.
//! A key's probe path then gains at most one tombstone per `len / 8` removals, so a
//! forced resize (O(len)) comes at most once per `5 log2(capacity) * len / 8`
//! removals: O(1) amortised whatever the pattern of deletes. Vacant entries are at
//! most an eighth of the live ones, or [`VACANT_MIN`] (1024) in a small map; a tag's
//! set of holders keeps at most [`VACANT_MIN_ITERABLE`] (8), since an engine holds one
//! per popular tag.

use std::collections::VecDeque;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hashbrown::{DefaultHashBuilder, HashSet};
use papaya::{Compute, Operation, ResizeMode};

/// Vacant entries kept at least, whatever the map's size, in the engine's maps (a few
/// an engine).
pub(crate) const VACANT_MIN: usize = 1024;

/// The same for maps made [`iterable`](LockFreeMap::iterable): a tag's set of
/// holders, of which an engine may hold one per popular tag.
pub(crate) const VACANT_MIN_ITERABLE: usize = 8;

/// A lock-free map (see the module docs). Reads are papaya's: lock-free, guarded by
/// the collector the map was made with.
pub(crate) struct LockFreeMap<K, V> {
    map: papaya::HashMap<K, Option<V>, DefaultHashBuilder>,
    /// Keys vacated, oldest first.
    vacated: Mutex<Vacated<K>>,
    /// Entries holding a value.
    occupied: AtomicUsize,
    /// Vacant entries kept at least (see [`VACANT_MIN`]).
    vacant_min: usize,
}

/// The queue of vacated keys, each in it once.
struct Vacated<K> {
    order: VecDeque<K>,
    queued: HashSet<K>,
}

impl<K, V> std::fmt::Debug for LockFreeMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockFreeMap")
            .field("len", &self.occupied.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<K, V> LockFreeMap<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A map reclaiming through `collector`: every map of an engine shares one, so one
    /// guard serves all the lookups of a read.
    pub(crate) fn new(collector: &Arc<seize::Collector>) -> Self {
        Self::build(
            papaya::HashMap::builder()
                .hasher(DefaultHashBuilder::default())
                .shared_collector(Arc::clone(collector))
                .build(),
            VACANT_MIN,
        )
    }

    /// A map with a collector of its own that resizes blocking: the write that starts a
    /// resize finishes it, so an [`each`](Self::each) never waits for one (for sets
    /// that are iterated, and whose writers are serialised anyway).
    pub(crate) fn iterable() -> Self {
        Self::build(
            papaya::HashMap::builder()
                .hasher(DefaultHashBuilder::default())
                .resize_mode(ResizeMode::Blocking)
                .build(),
            VACANT_MIN_ITERABLE,
        )
    }

    fn build(map: papaya::HashMap<K, Option<V>, DefaultHashBuilder>, vacant_min: usize) -> Self {
        LockFreeMap {
            vacant_min,
            map,
            vacated: Mutex::new(Vacated {
                order: VecDeque::new(),
                queued: HashSet::default(),
            }),
            occupied: AtomicUsize::new(0),
        }
    }

    /// Entries holding a value.
    pub(crate) fn len(&self) -> usize {
        self.occupied.load(Ordering::Relaxed)
    }

    /// Whether no entry holds a value.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`, for as long as `guard` lives (it must come from the map's
    /// collector).
    pub(crate) fn get<'g>(&self, key: &K, guard: &'g impl seize::Guard) -> Option<&'g V> {
        self.map.get(key, guard)?.as_ref()
    }

    /// Runs `f` on the value of `key`, under a guard of its own.
    pub(crate) fn with<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> R {
        let map = self.map.pin();
        f(map.get(key).and_then(Option::as_ref))
    }

    /// Sets the value of `key`.
    pub(crate) fn insert(&self, key: K, value: V) {
        let map = self.map.pin();
        if !matches!(map.insert(key, Some(value)), Some(Some(_))) {
            self.occupied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sets the value of `key` to `update` of its value, or to `insert()` where it has
    /// none. Either may be called more than once (papaya retries on a race).
    pub(crate) fn update_or_insert_with(
        &self,
        key: K,
        update: impl Fn(&V) -> V,
        insert: impl Fn() -> V,
    ) {
        let map = self.map.pin();
        let result = map.compute(key, |entry| match entry {
            Some((_, Some(v))) => Operation::Insert::<_, ()>(Some(update(v))),
            _ => Operation::Insert(Some(insert())),
        });
        let was_occupied = match result {
            Compute::Updated { old: (_, old), .. } => old.is_some(),
            _ => false,
        };
        if !was_occupied {
            self.occupied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes `key`'s value: its entry is vacated in place, and removed for real
    /// once enough other keys were vacated since (see the module docs). Writes of one
    /// key must be ordered by the caller (every map here is written under the lock of
    /// the key's shard or index stripe), so that `len` counts exactly.
    pub(crate) fn remove(&self, key: &K) {
        let map = self.map.pin();
        let vacated = map.compute(key.clone(), |entry| match entry {
            Some((_, Some(_))) => Operation::Insert(None),
            _ => Operation::Abort(()),
        });
        if !matches!(vacated, Compute::Updated { .. }) {
            return;
        }
        let occupied = self.occupied.fetch_sub(1, Ordering::Relaxed) - 1;
        let mut vacated = self.vacated.lock().unwrap_or_else(|e| e.into_inner());
        // A key vacated again while queued keeps its place: so the window counts
        // distinct keys, and one key churned alone is never removed for real.
        if vacated.queued.insert(key.clone()) {
            vacated.order.push_back(key.clone());
        }
        while vacated.order.len() > self.vacant_min.max(occupied / 8) {
            if let Some(old) = vacated.order.pop_front() {
                vacated.queued.remove(&old);
                // Removed only if still vacant: a key inserted again keeps its entry.
                let _ = map.remove_if(&old, |_, v| v.is_none());
            }
        }
    }

    /// Calls `f` on each value until it returns `false`. Ends after one pass over the
    /// table for a map made [`iterable`](Self::iterable) (no resize to finish first).
    pub(crate) fn each(&self, mut f: impl FnMut(&V) -> bool) {
        for v in self.map.pin().values().flatten() {
            if !f(v) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys removed and inserted again, one over and over and others in turn, keep
    /// their values right, and the vacant entries within the window.
    #[test]
    fn churn_keeps_values_and_vacancies_bounded() {
        let collector = Arc::new(seize::Collector::new());
        let map = LockFreeMap::<u64, u64>::new(&collector);
        for k in 0..50_000 {
            map.insert(k, k);
        }
        for round in 0..100_000u64 {
            map.insert(1_000_000, round);
            map.remove(&1_000_000);
            map.remove(&(round % 50_000));
            map.insert(round % 50_000, round);
        }
        assert_eq!(map.len(), 50_000);
        map.with(&1_000_000, |v| assert_eq!(v, None));
        map.with(&7, |v| assert!(v.is_some()));
        let queue = map.vacated.lock().expect("queue").order.len();
        assert!(queue <= VACANT_MIN.max(50_000 / 8), "{queue} keys vacated");
    }

    /// Vacant keys past the window are removed for real; occupied ones stay.
    #[test]
    fn vacated_keys_past_the_window_are_removed() {
        let map = LockFreeMap::<u64, u64>::iterable();
        let n = 3_000;
        for k in 0..n {
            map.insert(k, k);
        }
        for k in 0..n {
            map.remove(&k);
        }
        assert_eq!(map.len(), 0);
        let entries = map.map.pin().len();
        assert!(
            entries <= VACANT_MIN_ITERABLE,
            "{entries} entries left for 0 values"
        );
        let mut seen = 0;
        map.each(|_| {
            seen += 1;
            true
        });
        assert_eq!(seen, 0);
        map.update_or_insert_with(5, |v| v + 1, || 100);
        map.update_or_insert_with(5, |v| v + 1, || 100);
        map.with(&5, |v| assert_eq!(v, Some(&101)));
        assert_eq!(map.len(), 1);
    }
}
