//! The id table: which slot holds the profile of each `(database, id)`, found in one
//! probe and without a lock.
//!
//! An open-addressing table of 64-bit entries, probed linearly. An entry is a key's
//! tag (32 bits of its hash) beside its slot plus one (so zero is an empty entry); the
//! key itself lives in the profile, so an entry is 8 bytes, and a lookup reads entries
//! until an empty one, checking each whose tag matches against the profile in its
//! slot (a closure the directory passes: the slot table). In the common case a lookup
//! reads one line of the table, then the profile. A tag places its entry by its high
//! bits (`tag * capacity >> 32`), so a table of twice the size places it from the
//! tag alone, near twice its old place.
//!
//! **Readers** take no lock: they load the tables through an `ArcSwap` and read
//! entries with acquire loads. An entry they read may be stale (removed, its slot
//! since given to another profile): the check against the slot table rejects it, so a
//! stale entry costs a probe, never a wrong answer.
//!
//! **Writers** come one at a time, under the directory's slot lock, which an
//! [`IdWriter`] stands for: every change takes `&mut IdWriter`.
//!
//! **Removal** leaves a tombstone; an insert takes the first tombstone on its probe
//! path, so a profile deleted and created again in a loop takes its own entry back,
//! and tombstones are counted as used, so a table of them is rebuilt like a full one.
//!
//! **Growth** is a step a write: when entries and tombstones fill seven eighths of
//! the table, a new table is made (twice the live entries, rounded up to a power of
//! two, and at least an eighth of the old one) and every later insert or removal
//! copies a few of the old table's entries over (at most 64), enough to finish before
//! the new table is an eighth fuller. Meanwhile readers look in the new table, then
//! the old; inserts go to the new one, removals to both. A table's memory comes in
//! pieces of [`PIECE`] entries, each allocated (and zeroed) by the first write that
//! places an entry in it, so making a table of millions costs a write no more than
//! its list of pieces. No write pays for a whole resize; a table holds the live
//! entries and at most as many again in tombstones. A removal that leaves fewer live
//! entries than a sixteenth of the table starts a copy into a smaller one (up to
//! eight times smaller a copy), so a mass delete gives the memory back by itself.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use hashbrown::DefaultHashBuilder;

use crate::profile::id::ProfileId;

/// An empty entry: ends a probe.
const EMPTY: u64 = 0;
/// A removed entry: a probe goes past it; an insert may take it.
const TOMB: u64 = u64::MAX;
/// The smallest table made.
const MIN_CAPACITY: usize = 16;
/// Entries in a piece of a table (64 KiB), allocated when first written.
const PIECE_BITS: u32 = 13;
/// See [`PIECE_BITS`].
const PIECE: usize = 1 << PIECE_BITS;

/// The entry of `slot` under `tag`. Slots are below 2^31, so `slot + 1` is neither
/// zero nor `TOMB`'s low half.
fn entry(tag: u32, slot: u32) -> u64 {
    debug_assert!(slot < u32::MAX - 1);
    (u64::from(tag) << 32) | u64::from(slot + 1)
}

fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// One table: a power-of-two number of entries, in pieces of [`PIECE`] made when
/// first written (a piece not made yet reads as empty).
#[derive(Debug)]
struct Raw {
    pieces: Box<[OnceLock<Box<[AtomicU64]>>]>,
    capacity: usize,
}

impl Raw {
    fn new(capacity: usize) -> Raw {
        Raw {
            pieces: (0..capacity.div_ceil(PIECE))
                .map(|_| OnceLock::new())
                .collect(),
            capacity,
        }
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn load(&self, at: usize, order: Ordering) -> u64 {
        self.pieces[at >> PIECE_BITS]
            .get()
            .map_or(EMPTY, |piece| piece[at & (PIECE - 1)].load(order))
    }

    /// Writes entry `at`, making its piece first if need be. A writer's call.
    fn store(&self, at: usize, e: u64) {
        let piece = self.pieces[at >> PIECE_BITS].get_or_init(|| {
            (0..PIECE.min(self.capacity))
                .map(|_| AtomicU64::new(EMPTY))
                .collect()
        });
        piece[at & (PIECE - 1)].store(e, Ordering::Release);
    }

    /// Pieces made (each [`PIECE`] entries, or the whole table if smaller).
    #[cfg(test)]
    fn pieces_made(&self) -> usize {
        self.pieces.iter().filter(|p| p.get().is_some()).count()
    }

    /// Where an entry of `tag` is placed, or its probe starts.
    fn home(&self, tag: u32) -> usize {
        ((u64::from(tag) * self.capacity() as u64) >> 32) as usize
    }

    /// The entries from `tag`'s home up to the first empty one (at most all).
    fn probe(&self, tag: u32) -> impl Iterator<Item = (usize, u64)> + '_ {
        let capacity = self.capacity();
        let home = self.home(tag);
        (0..capacity)
            .map(move |step| {
                let at = (home + step) & (capacity - 1);
                (at, self.load(at, Ordering::Acquire))
            })
            .take_while(|&(_, e)| e != EMPTY)
    }

    /// The first answer `hit` gives for a slot under `tag`.
    fn find<R>(&self, tag: u32, hit: &mut impl FnMut(u32) -> Option<R>) -> Option<R> {
        self.probe(tag)
            .filter(|&(_, e)| e != TOMB && tag_of(e) == tag)
            .find_map(|(_, e)| hit((e as u32) - 1))
    }

    /// Puts `e` at the first tombstone or empty entry of its probe: whether it took
    /// an empty one (the table is one entry fuller). A writer's call.
    fn place(&self, e: u64) -> bool {
        let capacity = self.capacity();
        let home = self.home(tag_of(e));
        for step in 0..capacity {
            let at = (home + step) & (capacity - 1);
            let was = self.load(at, Ordering::Relaxed);
            if was == EMPTY || was == TOMB {
                self.store(at, e);
                return was == EMPTY;
            }
        }
        unreachable!("the id table is never full: it grows at seven eighths")
    }

    /// Makes `e` a tombstone, if it is here. A writer's call.
    fn remove(&self, e: u64) -> bool {
        match self.probe(tag_of(e)).find(|&(_, x)| x == e) {
            Some((at, _)) => {
                self.store(at, TOMB);
                true
            }
            None => false,
        }
    }
}

/// What readers load: the table, and the one it is being copied from.
#[derive(Debug)]
struct Tables {
    new: Arc<Raw>,
    old: Option<Arc<Raw>>,
}

/// `(database, id) -> slot` for every profile the directory holds (see the module
/// docs).
#[derive(Debug)]
pub(crate) struct IdTable {
    tables: ArcSwap<Tables>,
    hasher: DefaultHashBuilder,
}

/// The writer's side of an [`IdTable`]: its counts and the copy under way. Kept
/// under the directory's slot lock; holding it `&mut` is the right to change the
/// table.
#[derive(Debug, Default)]
pub(crate) struct IdWriter {
    /// Keys in the table.
    live: usize,
    /// Entries and tombstones in the new table.
    used: usize,
    /// The next entry of the old table to copy.
    cursor: usize,
    /// Entries of the old table copied by each change.
    step: usize,
}

impl Default for IdTable {
    fn default() -> Self {
        IdTable {
            tables: ArcSwap::from_pointee(Tables {
                new: Arc::new(Raw::new(MIN_CAPACITY)),
                old: None,
            }),
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl IdTable {
    /// The hash that places `key` (randomly seeded per engine: no client can choose
    /// ids that share one probe path).
    pub(crate) fn hash(&self, db: u32, id: &ProfileId) -> u64 {
        let mut h = self.hasher.build_hasher();
        db.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    }

    /// The first answer `hit` gives for a slot whose entry matches `hash`: `hit`
    /// checks that slot's profile against the key. Lock-free.
    pub(crate) fn find<R>(&self, hash: u64, mut hit: impl FnMut(u32) -> Option<R>) -> Option<R> {
        let tag = tag_of(hash);
        let tables = self.tables.load();
        if let Some(r) = tables.new.find(tag, &mut hit) {
            return Some(r);
        }
        tables.old.as_ref()?.find(tag, &mut hit)
    }

    /// Adds `slot` under `hash`: its key is not in the table.
    pub(crate) fn insert(&self, w: &mut IdWriter, hash: u64, slot: u32) {
        self.help(w);
        let tables = self.tables.load();
        let tables = if (w.used + 1) * 8 > tables.new.capacity() * 7 {
            drop(tables);
            self.grow(w, (w.live + 1) * 2);
            self.tables.load()
        } else {
            tables
        };
        if tables.new.place(entry(tag_of(hash), slot)) {
            w.used += 1;
        }
        w.live += 1;
    }

    /// Removes `slot`'s entry under `hash`, which is in the table.
    pub(crate) fn remove(&self, w: &mut IdWriter, hash: u64, slot: u32) {
        self.help(w);
        let e = entry(tag_of(hash), slot);
        let tables = self.tables.load();
        let in_new = tables.new.remove(e);
        let in_old = tables.old.as_ref().is_some_and(|old| old.remove(e));
        debug_assert!(
            in_new || in_old,
            "removing an entry the table does not hold"
        );
        if in_new || in_old {
            w.live -= 1;
        }
        let capacity = tables.new.capacity();
        if tables.old.is_none() && capacity > MIN_CAPACITY && w.live * 16 < capacity {
            drop(tables);
            self.grow(w, (w.live + 1) * 2);
        }
    }

    /// Makes room for `n` more keys at once (a bulk create): finishes the copy under
    /// way, and grows to hold them if they would fill the table past seven eighths.
    pub(crate) fn reserve(&self, w: &mut IdWriter, n: usize) {
        self.finish(w);
        let capacity = self.tables.load().new.capacity();
        if (w.used + n) * 8 > capacity * 7 {
            self.grow(w, (w.live + n) * 8 / 7 + 1);
            self.finish(w);
            debug_assert!((w.used + n) * 8 <= self.tables.load().new.capacity() * 7);
        }
    }

    /// Starts copying into a new table of at least `room` entries (finishing any
    /// copy under way first).
    fn grow(&self, w: &mut IdWriter, room: usize) {
        self.finish(w);
        let current = Arc::clone(&self.tables.load().new);
        // At least an eighth of the old table: a copy then takes at most 64 entries a
        // change, and a table emptied by a mass delete shrinks over a few copies.
        let capacity = room
            .max(current.capacity() / 8)
            .max(MIN_CAPACITY)
            .next_power_of_two();
        // Copy the old table within capacity / 8 changes: the new one holds at most
        // half its capacity from the copy and an eighth from changes meanwhile.
        w.step = (current.capacity() * 8).div_ceil(capacity).max(8);
        w.cursor = 0;
        w.used = 0;
        self.tables.store(Arc::new(Tables {
            new: Arc::new(Raw::new(capacity)),
            old: Some(current),
        }));
    }

    /// Copies the next [`step`](IdWriter::step) entries of the old table, if a copy
    /// is under way (a change's share of the work).
    fn help(&self, w: &mut IdWriter) {
        self.copy(w, w.step);
    }

    /// Copies the next `step` entries of the old table, if a copy is under way; drops
    /// the old table once all are copied.
    fn copy(&self, w: &mut IdWriter, step: usize) {
        let tables = self.tables.load();
        let Some(old) = &tables.old else {
            return;
        };
        let end = w.cursor.saturating_add(step).min(old.capacity());
        for at in w.cursor..end {
            let e = old.load(at, Ordering::Relaxed);
            if e != EMPTY && e != TOMB && tables.new.place(e) {
                w.used += 1;
            }
        }
        w.cursor = end;
        if end == old.capacity() {
            let new = Arc::clone(&tables.new);
            drop(tables);
            self.tables.store(Arc::new(Tables { new, old: None }));
        }
    }

    /// Finishes the copy under way, if any.
    fn finish(&self, w: &mut IdWriter) {
        self.copy(w, usize::MAX);
        debug_assert!(self.tables.load().old.is_none());
    }

    /// Entries the tables hold room for (both, during a copy): their memory is 8
    /// bytes each.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        let tables = self.tables.load();
        tables.new.capacity() + tables.old.as_ref().map_or(0, |old| old.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::{IdTable, IdWriter};
    use crate::profile::id::ProfileId;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn key(n: u32) -> (u32, ProfileId) {
        (n % 3, ProfileId::new(&format!("p{n}")).expect("an id"))
    }

    /// The oracle: key -> slot. `hit` checks a slot against the key as the directory
    /// does through the slot table (`holder[slot]`).
    struct Model {
        table: IdTable,
        writer: IdWriter,
        by_key: HashMap<u32, u32>,
        holder: HashMap<u32, u32>,
        next_slot: u32,
        free: Vec<u32>,
    }

    impl Model {
        fn new() -> Self {
            Model {
                table: IdTable::default(),
                writer: IdWriter::default(),
                by_key: HashMap::new(),
                holder: HashMap::new(),
                next_slot: 0,
                free: Vec::new(),
            }
        }

        fn find(&self, n: u32) -> Option<u32> {
            let (db, id) = key(n);
            let hash = self.table.hash(db, &id);
            self.table.find(hash, |slot| {
                (self.holder.get(&slot) == Some(&n)).then_some(slot)
            })
        }

        fn insert(&mut self, n: u32) {
            if self.by_key.contains_key(&n) {
                return;
            }
            let slot = self.free.pop().unwrap_or_else(|| {
                self.next_slot += 1;
                self.next_slot - 1
            });
            let (db, id) = key(n);
            let hash = self.table.hash(db, &id);
            self.table.insert(&mut self.writer, hash, slot);
            self.by_key.insert(n, slot);
            self.holder.insert(slot, n);
        }

        fn remove(&mut self, n: u32) {
            if let Some(slot) = self.by_key.remove(&n) {
                let (db, id) = key(n);
                let hash = self.table.hash(db, &id);
                self.table.remove(&mut self.writer, hash, slot);
                self.holder.remove(&slot);
                self.free.push(slot);
            }
        }

        fn check(&self, n: u32) {
            assert_eq!(self.find(n), self.by_key.get(&n).copied(), "key {n}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32),
        Remove(u32),
        Reserve(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..300).prop_map(Op::Insert),
            3 => (0u32..300).prop_map(Op::Remove),
            1 => (0u16..100).prop_map(Op::Reserve),
        ]
    }

    proptest! {
        /// Any sequence of inserts, removals and reservations finds exactly the
        /// oracle's keys, during copies and after.
        #[test]
        fn finds_what_the_oracle_holds(ops in prop::collection::vec(op(), 0..600)) {
            let mut m = Model::new();
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(n) => m.insert(n),
                    Op::Remove(n) => m.remove(n),
                    Op::Reserve(n) => m.table.reserve(&mut m.writer, usize::from(n)),
                }
                m.check(i as u32 % 300);
            }
            for n in 0..300 {
                m.check(n);
            }
        }
    }

    /// Readers racing a writer that grows the table, copies it and churns keys
    /// always find the keys that stay, and only ever the slot that holds them.
    #[test]
    fn readers_find_steady_keys_while_the_table_grows_and_churns() {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        const STEADY: u32 = 500;
        const SLOTS: usize = 100_000;
        let table = IdTable::default();
        // holder[slot] = key + 1, as the slot table says which profile holds a slot.
        let holder: Vec<AtomicU32> = (0..SLOTS).map(|_| AtomicU32::new(0)).collect();
        let hashes: Vec<u64> = (0..SLOTS as u32)
            .map(|n| {
                let (db, id) = key(n);
                table.hash(db, &id)
            })
            .collect();
        let mut writer = IdWriter::default();
        for n in 0..STEADY {
            holder[n as usize].store(n + 1, Ordering::Release);
            table.insert(&mut writer, hashes[n as usize], n);
        }
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let mut rounds = 0u32;
                    while !done.load(Ordering::Acquire) || rounds < 3 {
                        for n in 0..STEADY {
                            let found = table.find(hashes[n as usize], |slot| {
                                (holder[slot as usize].load(Ordering::Acquire) == n + 1)
                                    .then_some(slot)
                            });
                            assert_eq!(found, Some(n), "steady key {n} lost");
                        }
                        rounds += 1;
                    }
                });
            }
            // Keys come and go in their own slots: the table grows through several
            // copies and rebuilds its tombstones while the readers probe it.
            let mut present = Vec::new();
            for n in STEADY..SLOTS as u32 {
                holder[n as usize].store(n + 1, Ordering::Release);
                table.insert(&mut writer, hashes[n as usize], n);
                present.push(n);
                if n % 3 == 0 {
                    let gone = present.swap_remove(present.len() / 2);
                    table.remove(&mut writer, hashes[gone as usize], gone);
                    holder[gone as usize].store(0, Ordering::Release);
                }
            }
            done.store(true, Ordering::Release);
        });
    }

    /// A table's memory is made as it is written: the write that starts a copy into
    /// a table of millions makes only the few pieces its copy step writes to.
    #[test]
    fn a_new_table_is_made_piece_by_piece() {
        let raw = super::Raw::new(1 << 24);
        assert_eq!(raw.pieces_made(), 0);
        assert_eq!(raw.find(7, &mut |_| Some(())), None);
        let mut m = Model::new();
        let mut big_copies = 0;
        for n in 0..300_000 {
            m.insert(n);
            let tables = m.table.tables.load();
            // The insert that started a copy: its step wrote at most `step` entries,
            // and the insert one more.
            let started = tables.old.is_some() && m.writer.cursor <= m.writer.step;
            if started && tables.new.capacity() > 4 * super::PIECE {
                assert!(
                    tables.new.pieces_made() <= m.writer.step + 1,
                    "{} pieces made at once",
                    tables.new.pieces_made()
                );
                big_copies += 1;
            }
        }
        assert!(big_copies >= 2, "{big_copies} copies of a big table");
        let n = 300_000;
        for k in (0..n).step_by(97) {
            m.check(k);
        }
    }

    /// Deletes alone give a table's memory back: emptied, it shrinks to its least
    /// size, a copy of at most 64 entries a change at a time, finding what is left
    /// all along; churn after keeps it small.
    #[test]
    fn a_table_emptied_by_removals_alone_shrinks() {
        let mut m = Model::new();
        for n in 0..100_000 {
            m.insert(n);
        }
        let peak = m.table.capacity();
        for n in 0..100_000 {
            m.remove(n);
            assert!(m.writer.step <= 64, "a copy of {} entries", m.writer.step);
            if n % 4_999 == 0 {
                m.check(n + 1);
                m.check(n);
            }
        }
        assert!(
            m.table.capacity() <= 64,
            "{} entries left of {peak}",
            m.table.capacity()
        );
        for n in 100_000..400_000 {
            m.insert(n);
            m.remove(n);
            assert!(m.writer.step <= 64, "a copy of {} entries", m.writer.step);
        }
        assert!(m.table.capacity() <= 64, "{}", m.table.capacity());
        m.insert(7);
        m.check(7);
        m.check(8);
    }

    /// A key removed and inserted again in a loop takes its entry back: the table
    /// does not grow.
    #[test]
    fn churn_of_one_key_keeps_the_table_small() {
        let mut m = Model::new();
        for n in 0..100 {
            m.insert(n);
        }
        let capacity = m.table.capacity();
        for _ in 0..100_000 {
            m.remove(7);
            m.insert(7);
        }
        assert_eq!(m.table.capacity(), capacity);
        for n in 0..100 {
            m.check(n);
        }
    }

    /// Churn over ever new keys leaves tombstones: the table is rebuilt, not grown,
    /// and holds a bounded multiple of its live keys.
    #[test]
    fn churn_of_new_keys_keeps_the_table_bounded() {
        let mut m = Model::new();
        for n in 0..1000 {
            m.insert(n);
        }
        for n in 1000..200_000 {
            m.remove(n - 1000);
            m.insert(n);
            assert!(
                m.table.capacity() <= 8 * 1000,
                "{} entries",
                m.table.capacity()
            );
        }
        for n in 199_000..200_000 {
            m.check(n);
        }
        m.check(5);
    }
}
