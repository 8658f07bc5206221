//! The sharded writer state: per shard, the targets (recipients' accumulators) and the
//! reverse index (which targets each initiator points at), behind one lock a shard.
//! Private to the store: its fields are only touched by `store/mod.rs`.
//!
//! A profile lives in the shard chosen by the **high** bits of its hash (moka's
//! `segment.rs`); the tables inside use their own seeded hasher over the full key, so the
//! shard bits and the table bits never correlate, and a hash collision between two ids
//! only puts them in the same shard.

use std::collections::BTreeSet;

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use crate::accum::target::Target;
use crate::sync::{Mutex, MutexGuard};

use super::{Frozen, TargetKey};

/// Keeps a value on its own cache lines, so two cores locking two neighbouring shards
/// never share a line (crossbeam's `CachePadded`; 128 bytes covers the adjacent-line
/// prefetcher of x86-64).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct CachePadded<T>(pub(super) T);

/// The reverse index of one shard: `(initiator slot, rel_id, recipient slot)` for every
/// relation whose initiator lives in the shard. Ordered, so one initiator's relations are
/// a contiguous range (a delete cascade takes them in O(k log n)), and compact: 12 bytes
/// a relation in B-tree nodes, where a map of per-initiator sets cost several times
/// that for the many initiators with one relation.
#[derive(Debug, Default)]
pub(super) struct Initiated(BTreeSet<(u32, u32, u32)>);

impl Initiated {
    pub(super) fn insert(&mut self, initiator: u32, (rel_id, recipient): TargetKey) {
        self.0.insert((initiator, rel_id, recipient));
    }

    pub(super) fn remove(&mut self, initiator: u32, (rel_id, recipient): TargetKey) {
        self.0.remove(&(initiator, rel_id, recipient));
    }

    /// Inserts many `(initiator, rel_id, recipient)` entries: merged as one sorted run
    /// when they are many beside the index, one by one when they are few.
    pub(super) fn extend(&mut self, mut entries: Vec<(u32, u32, u32)>) {
        if entries.len() * 8 < self.0.len() {
            self.0.extend(entries);
            return;
        }
        entries.sort_unstable();
        let mut more: BTreeSet<(u32, u32, u32)> = entries.into_iter().collect();
        self.0.append(&mut more);
    }

    /// Removes and returns every target `initiator` points at.
    pub(super) fn take(&mut self, initiator: u32) -> Vec<TargetKey> {
        let keys: Vec<TargetKey> = self
            .0
            .range((initiator, 0, 0)..=(initiator, u32::MAX, u32::MAX))
            .map(|&(_, rel_id, recipient)| (rel_id, recipient))
            .collect();
        for &(rel_id, recipient) in &keys {
            self.0.remove(&(initiator, rel_id, recipient));
        }
        keys
    }
}

/// The state one shard lock guards.
#[derive(Default)]
pub(crate) struct Shard {
    /// A counter the loom models write under the locks (see `loom_tests`).
    #[cfg(all(test, relcount_loom))]
    writes: u64,
    /// Targets whose recipient lives in this shard.
    pub(super) targets: hashbrown::HashMap<TargetKey, Target>,
    /// For each initiator slot living in this shard, the targets it points at.
    pub(super) initiated: Initiated,
    /// The snapshot point whose state of this shard was captured (see
    /// [`Shards::lock`]), and that capture until the snapshot takes it.
    captured: u32,
    capture: Option<Vec<Frozen>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// Every target's counters and relations as they are: reference counts, no
    /// copying (the first write to a target after this copies its relations).
    fn frozen(&self) -> Vec<Frozen> {
        self.targets
            .values()
            .map(|t| Frozen {
                block: Arc::clone(t.block()),
                rels: Arc::clone(t.relations()),
            })
            .collect()
    }
}

/// A power-of-two number of shards.
#[derive(Debug)]
pub(super) struct Shards {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    /// `64 - log2(count)`; the shard of a hash is `hash >> shift` (0 for one shard).
    shift: u32,
    /// The snapshot point being taken, 0 when none (see [`lock`](Self::lock)).
    point: AtomicU32,
}

/// The locks one write holds: one shard, or two taken in ascending shard order.
pub(crate) struct Locked<'a> {
    first: (usize, MutexGuard<'a, Shard>),
    second: Option<(usize, MutexGuard<'a, Shard>)>,
}

impl Locked<'_> {
    /// The guard of shard `index`, which must be one of the locked ones.
    pub(super) fn shard(&mut self, index: usize) -> &mut Shard {
        match &mut self.second {
            Some((i, guard)) if *i == index => guard,
            _ => {
                debug_assert_eq!(self.first.0, index);
                &mut self.first.1
            }
        }
    }
}

impl Shards {
    /// `count` must be a power of two (checked by the builder).
    pub(super) fn new(count: usize) -> Self {
        debug_assert!(count.is_power_of_two());
        Shards {
            shards: (0..count)
                .map(|_| CachePadded(Mutex::new(Shard::default())))
                .collect(),
            shift: 64 - count.trailing_zeros(),
            point: AtomicU32::new(0),
        }
    }

    pub(super) fn count(&self) -> usize {
        self.shards.len()
    }

    /// The shard of a profile hash: its high bits.
    pub(super) fn of(&self, hash: u64) -> usize {
        // A shift by 64 (one shard) is not defined; checked_shr makes it 0.
        hash.checked_shr(self.shift).unwrap_or(0) as usize
    }

    /// Locks one shard. A poisoned lock is taken as is: no engine code panics while it
    /// holds a lock, and a host's panic cannot reach inside it.
    ///
    /// While a snapshot point is being taken, the first lock of each shard after the
    /// point captures the shard's state first (O(its targets), reference counts
    /// only), so whoever holds it may change it: every shard's state at the point is
    /// kept, while no writer ever waits for more than one shard's capture.
    pub(super) fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        let mut shard = self.shards[index]
            .0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let point = self.point.load(std::sync::atomic::Ordering::Acquire);
        if point != 0 && shard.captured != point {
            shard.capture = Some(shard.frozen());
            shard.captured = point;
        }
        shard
    }

    /// Starts a snapshot point (`point`, never 0): the state every shard has now is
    /// what [`take_point`](Self::take_point) returns. The caller holds every shard
    /// lock, and takes one point at a time.
    pub(super) fn begin_point(&self, point: u32) {
        debug_assert_ne!(point, 0);
        self.point
            .store(point, std::sync::atomic::Ordering::Release);
    }

    /// Every shard's targets at the point `begin_point` started (captured by the first
    /// lock of each since, or now), and ends the point.
    pub(super) fn take_point(&self) -> Vec<Frozen> {
        let mut all = Vec::new();
        for index in 0..self.count() {
            all.extend(self.lock(index).capture.take().unwrap_or_default());
        }
        self.point.store(0, std::sync::atomic::Ordering::Release);
        all
    }

    /// Locks the shards of two profiles, the lower index first, so two writers locking
    /// the same pair can never deadlock.
    pub(super) fn lock_pair(&self, a: usize, b: usize) -> Locked<'_> {
        let (lo, hi) = (a.min(b), a.max(b));
        let first = (lo, self.lock(lo));
        let second = (hi != lo).then(|| (hi, self.lock(hi)));
        Locked { first, second }
    }
}

/// Model checks of the lock protocol (built with `--cfg relcount_loom`, see `sync.rs`).
#[cfg(all(test, relcount_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two writers locking the same two shards in opposite argument order (attach a->b
    /// and b->a) never deadlock, and each sees the other's write or none of it.
    #[test]
    fn pair_locks_never_deadlock() {
        loom::model(|| {
            let shards = Arc::new(Shards::new(2));
            let other = Arc::clone(&shards);
            let t = loom::thread::spawn(move || {
                let mut locked = other.lock_pair(1, 0);
                locked.shard(1).writes += 1;
                locked.shard(0).writes += 1;
            });
            {
                let mut locked = shards.lock_pair(0, 1);
                let (w0, w1) = (locked.shard(0).writes, locked.shard(1).writes);
                assert_eq!(w0, w1, "a pair write is seen whole or not at all");
                locked.shard(0).writes += 1;
                locked.shard(1).writes += 1;
            }
            t.join().expect("writer");
            assert_eq!(shards.lock(0).writes, 2);
            assert_eq!(shards.lock(1).writes, 2);
        });
    }

    /// A delete cascade (one lock at a time, in any order) beside a pair write and a
    /// same-shard write never deadlocks.
    #[test]
    fn cascade_beside_pair_writes() {
        loom::model(|| {
            let shards = Arc::new(Shards::new(2));
            let a = Arc::clone(&shards);
            let b = Arc::clone(&shards);
            let t1 = loom::thread::spawn(move || {
                for i in [1, 0] {
                    a.lock(i).writes += 1;
                }
            });
            let t2 = loom::thread::spawn(move || {
                let mut locked = b.lock_pair(1, 1);
                locked.shard(1).writes += 1;
            });
            {
                let mut locked = shards.lock_pair(1, 0);
                locked.shard(0).writes += 1;
            }
            t1.join().expect("cascade");
            t2.join().expect("same-shard writer");
            assert_eq!(shards.lock(0).writes + shards.lock(1).writes, 4);
        });
    }
}
