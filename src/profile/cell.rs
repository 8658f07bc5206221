//! A profile held in its slot (store v3 step 2's slab): four atomic words, no
//! allocation and no reference count of its own.
//!
//! A cell holds the profile that took its slot: its birth number and life in one
//! state word, its database and snapshot stamp in another, and its id in two (a
//! 24-hex id's 12 packed bytes, or a flag saying the text lives beside the cell).
//! Everything else names a profile by slot and birth number, and checks the birth
//! number on use: a slot given back and taken again holds a profile born later.
//!
//! **Writers** come one at a time per cell: a slot is taken under the directory's
//! slot lock (or, for a batch, by the one thread given it), a profile's life and stamp
//! change under its shard's lock.
//!
//! **Readers** take no lock. The id words change only while the cell is free, so they
//! are read as a sequence lock reads: the state word (acquire), then the words
//! (relaxed), then a fence (acquire) and the state word again; the same birth number
//! both times, not free, means the words are that profile's. A writer taking a slot
//! publishes the words with a release fence before them and the state word (release)
//! after, so a reader that saw a word of the new profile sees, on its second read,
//! that the slot changed hands. Model-checked with loom (`loom_tests` below).

use crate::sync::{AtomicU64, Ordering, fence};

/// The life of a cell's profile, in the state word's two low bits: none (a slot
/// never taken or given back), pending, live, deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    Free = 0,
    Pending = 1,
    Live = 2,
    Deleted = 3,
}

impl Life {
    fn of(state: u64) -> Life {
        match state & 3 {
            0 => Life::Free,
            1 => Life::Pending,
            2 => Life::Live,
            _ => Life::Deleted,
        }
    }
}

/// The two id words of a cell: a 24-hex id's first 8 packed bytes, then its last 4
/// above [`HEX`]; or [`TEXT`] alone for any other id (its text kept beside the cell).
pub(crate) type IdWords = [u64; 2];

/// Set in the second id word of a packed 24-hex id.
pub(crate) const HEX: u64 = 1;
/// The second id word of an id kept as text.
pub(crate) const TEXT: u64 = 2;

/// What a reader saw of a cell, all of one profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) born: u64,
    pub(crate) life: Life,
    pub(crate) db: u32,
    pub(crate) id: IdWords,
}

/// One slot's profile (see the module docs). Aligned to its size, so a cell never
/// straddles two cache lines: a lookup by id reads the id table's line and the cell's.
#[derive(Debug)]
#[repr(align(32))]
pub(crate) struct Cell {
    /// Birth number << 2 | life.
    state: AtomicU64,
    /// Database << 32 | snapshot stamp.
    meta: AtomicU64,
    id: [AtomicU64; 2],
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            state: AtomicU64::new(0),
            meta: AtomicU64::new(0),
            id: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }
}

impl Cell {
    /// Takes the free cell for the profile born `born`, pending: its database, id
    /// words and snapshot stamp. The caller is the cell's one writer.
    pub(crate) fn take(&self, born: u64, db: u32, id: IdWords, point: u32) {
        debug_assert_eq!(Life::of(self.state.load(Ordering::Relaxed)), Life::Free);
        // Whoever reads a word written below reads, after its fence, the state the
        // cell had before (free, stored with release when it was given back) or
        // later: never the state of the profile it held before.
        fence(Ordering::Release);
        self.meta
            .store(u64::from(db) << 32 | u64::from(point), Ordering::Relaxed);
        self.id[0].store(id[0], Ordering::Relaxed);
        self.id[1].store(id[1], Ordering::Relaxed);
        self.state
            .store(born << 2 | Life::Pending as u64, Ordering::Release);
    }

    /// Moves the profile born `born` to `life` (live or deleted): everything written
    /// before is seen by a reader that then sees the new life. The caller holds the
    /// profile's shard lock.
    pub(crate) fn set_life(&self, born: u64, life: Life) {
        debug_assert!(matches!(life, Life::Live | Life::Deleted));
        // A stale copy never changes a later holder of the slot.
        if self.state.load(Ordering::Relaxed) >> 2 != born {
            debug_assert!(false, "the life of a profile no longer in its slot");
            return;
        }
        self.state.store(born << 2 | life as u64, Ordering::Release);
    }

    /// Gives the cell back (its profile's delete ended, or its creation was
    /// abandoned): the profile born `born` is gone for every reader. False (and
    /// nothing changed) if the cell holds another profile.
    pub(crate) fn free(&self, born: u64) -> bool {
        // A stale copy never frees a later holder of the slot.
        if self.state.load(Ordering::Relaxed) >> 2 != born {
            debug_assert!(false, "freeing a profile no longer in its slot");
            return false;
        }
        self.state.store(born << 2, Ordering::Release);
        true
    }

    /// The life of the profile born `born`: [`Life::Free`] once its slot is given
    /// back (whoever holds it since). Acquire: a reader that sees it live sees what
    /// was published before.
    pub(crate) fn life(&self, born: u64) -> Life {
        let state = self.state.load(Ordering::Acquire);
        if state >> 2 == born {
            Life::of(state)
        } else {
            Life::Free
        }
    }

    /// The profile the cell holds, if any, read whole (see the module docs); `None`
    /// when free. Retries while the slot changes hands under it.
    pub(crate) fn read(&self) -> Option<Seen> {
        loop {
            let before = self.state.load(Ordering::Acquire);
            if Life::of(before) == Life::Free {
                return None;
            }
            let meta = self.meta.load(Ordering::Relaxed);
            let id = [
                self.id[0].load(Ordering::Relaxed),
                self.id[1].load(Ordering::Relaxed),
            ];
            fence(Ordering::Acquire);
            let after = self.state.load(Ordering::Relaxed);
            // Its life may move on meanwhile (pending, live, deleted): the words are
            // the same profile's as long as its birth number is, and its life the one
            // read first (acquire: what was published before it is seen).
            if after >> 2 == before >> 2 && Life::of(after) != Life::Free {
                return Some(Seen {
                    born: before >> 2,
                    life: Life::of(before),
                    db: (meta >> 32) as u32,
                    id,
                });
            }
        }
    }

    /// The snapshot stamp of the cell's profile (read under its shard lock, or
    /// checked after by its birth number).
    pub(crate) fn point(&self) -> u32 {
        self.meta.load(Ordering::Relaxed) as u32
    }

    /// Stamps the cell's profile with `point`. The caller holds its shard lock.
    pub(crate) fn set_point(&self, point: u32) {
        let meta = self.meta.load(Ordering::Relaxed);
        self.meta.store(
            meta & !u64::from(u32::MAX) | u64::from(point),
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Cell, HEX, Life, TEXT};

    /// A cell is 32 bytes, aligned to them (DESIGN.md, *How big is a profile?*).
    #[test]
    fn a_cell_is_32_bytes_in_one_line() {
        assert_eq!(std::mem::size_of::<Cell>(), 32);
        assert_eq!(std::mem::align_of::<Cell>(), 32);
    }

    /// A cell taken, made live, deleted and given back answers each state, and a
    /// reader holding an older birth number sees its profile gone.
    #[test]
    fn a_cell_goes_through_a_life_and_is_taken_again() {
        let cell = Cell::default();
        assert_eq!(cell.read(), None);
        cell.take(7, 3, [0xdead, 0xbeef << 32 | HEX], 0);
        let seen = cell.read().expect("taken");
        assert_eq!((seen.born, seen.life, seen.db), (7, Life::Pending, 3));
        assert_eq!(seen.id, [0xdead, 0xbeef << 32 | HEX]);
        cell.set_life(7, Life::Live);
        assert_eq!(cell.life(7), Life::Live);
        cell.set_point(9);
        assert_eq!((cell.point(), cell.read().expect("live").db), (9, 3));
        cell.set_life(7, Life::Deleted);
        assert_eq!(cell.life(7), Life::Deleted);
        cell.free(7);
        assert_eq!((cell.life(7), cell.read()), (Life::Free, None));
        cell.take(12, 4, [0, TEXT], 0);
        assert_eq!(cell.life(7), Life::Free, "the old profile stays gone");
        assert_eq!(cell.life(12), Life::Pending);
        assert_eq!(cell.read().expect("taken again").id, [0, TEXT]);
    }

    /// Readers racing a writer that gives the slot back and takes it again, each time
    /// for a profile whose words all equal its birth number, never see a mix. The
    /// writer waits (a while) for the reader to see each profile, so the reads race
    /// the give-back and retaking that follow.
    #[test]
    fn readers_never_see_two_profiles_mixed() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let cell = Cell::default();
        let done = AtomicBool::new(false);
        let seen = AtomicU64::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for born in 1..20_000u64 {
                    cell.take(born, born as u32, [born, born << 2 | HEX], 0);
                    cell.set_life(born, Life::Live);
                    let before = seen.load(Ordering::Acquire);
                    for _ in 0..10_000 {
                        if seen.load(Ordering::Acquire) != before {
                            break;
                        }
                        std::hint::spin_loop();
                    }
                    cell.set_life(born, Life::Deleted);
                    cell.free(born);
                }
                done.store(true, Ordering::Release);
            });
            while !done.load(Ordering::Acquire) {
                if let Some(p) = cell.read() {
                    assert_eq!(u64::from(p.db), p.born & 0xffff_ffff, "{p:?}");
                    assert_eq!(p.id, [p.born, p.born << 2 | HEX], "{p:?}");
                    seen.fetch_add(1, Ordering::Release);
                }
            }
        });
        assert!(seen.into_inner() > 0);
    }
}

/// Model checks of the cell protocol (built with `--cfg relcount_loom`, see
/// `sync.rs`).
#[cfg(all(test, relcount_loom))]
mod loom_tests {
    use super::{Cell, HEX, Life};
    use loom::sync::Arc;

    /// A reader racing the slot's release and retaking sees the old profile whole,
    /// the new one whole, or none: never the old birth number with the new words.
    #[test]
    fn loom_a_read_is_one_profile() {
        loom::model(|| {
            let cell = Arc::new(Cell::default());
            cell.take(1, 1, [1, 1 << 2 | HEX], 0);
            cell.set_life(1, Life::Live);
            let c = Arc::clone(&cell);
            let writer = loom::thread::spawn(move || {
                c.set_life(1, Life::Deleted);
                c.free(1);
                c.take(2, 2, [2, 2 << 2 | HEX], 0);
            });
            if let Some(p) = cell.read() {
                assert_eq!(u64::from(p.db), p.born);
                assert_eq!(p.id, [p.born, p.born << 2 | HEX]);
            }
            writer.join().expect("writer");
        });
    }

    /// A profile made live after its counters were published: a reader that sees it
    /// live sees them (the life protocol, as `Profile`'s life had it).
    #[test]
    fn loom_a_live_profile_has_what_was_published_before() {
        loom::model(|| {
            let cell = Arc::new(Cell::default());
            cell.take(1, 1, [1, HEX], 0);
            let counters = Arc::new(loom::sync::atomic::AtomicU64::new(0));
            let (c, n) = (Arc::clone(&cell), Arc::clone(&counters));
            let writer = loom::thread::spawn(move || {
                n.store(1, loom::sync::atomic::Ordering::Release);
                c.set_life(1, Life::Live);
            });
            if cell.life(1) == Life::Live {
                assert_eq!(counters.load(loom::sync::atomic::Ordering::Acquire), 1);
            }
            writer.join().expect("writer");
        });
    }

    /// A delete marks the profile, then removes its counters: a reader that found it
    /// live and then finds the counters gone sees the mark ("not found"), never an
    /// empty counter.
    #[test]
    fn loom_removed_counters_come_with_the_mark() {
        loom::model(|| {
            let cell = Arc::new(Cell::default());
            cell.take(1, 1, [1, HEX], 0);
            cell.set_life(1, Life::Live);
            let counters = Arc::new(loom::sync::atomic::AtomicU64::new(1));
            let (c, n) = (Arc::clone(&cell), Arc::clone(&counters));
            let deleter = loom::thread::spawn(move || {
                c.set_life(1, Life::Deleted);
                n.store(0, loom::sync::atomic::Ordering::Release);
            });
            if cell.life(1) == Life::Live
                && counters.load(loom::sync::atomic::Ordering::Acquire) == 0
            {
                assert_eq!(
                    cell.life(1),
                    Life::Deleted,
                    "counters removed without the mark"
                );
            }
            deleter.join().expect("deleter");
        });
    }
}
